// The worker process and the node-local weight cache (spec.prewarm.nodeCache): with MODELSERVE_WEIGHTS_CACHE naming a
// complete entry (the stager's marker, the listed files at their sizes) it loads the entry even though --model points
// at an empty directory (a pod whose fetch init container skipped the download), and says so in its log; with a
// damaged entry it loads --model and logs why. Real engine, generated tiny-harmony checkpoint.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { startWorker, tinyCheckpoint } from './support/worker-process.js';

const KEY = 'a1b2c3d4e5f60718';
let root: string;
let entry: string;
let checkpoint: string;

interface LoadingLog {
  msg: string;
  modelPath?: string;
  weightsFrom?: string;
  weightsReason?: string;
  cachedBytes?: number;
}

function loadingLine(logs: string[]): LoadingLog {
  for (const line of logs) {
    try {
      const entry = JSON.parse(line) as LoadingLog;
      if (entry.msg === 'loading model') return entry;
    } catch {
      // not JSON
    }
  }
  throw new Error(`no "loading model" line in:\n${logs.join('\n')}`);
}

function withCacheEnv<T>(fn: () => Promise<T>): Promise<T> {
  process.env.MODELSERVE_WEIGHTS_CACHE = entry;
  process.env.MODELSERVE_WEIGHTS_CACHE_MARKER = '.modelserve-complete.json';
  try {
    return fn(); // the child's environment is copied at spawn
  } finally {
    delete process.env.MODELSERVE_WEIGHTS_CACHE;
    delete process.env.MODELSERVE_WEIGHTS_CACHE_MARKER;
  }
}

beforeAll(() => {
  checkpoint = tinyCheckpoint(1);
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'worker-cache-'));
  entry = path.join(root, 'cache', `tiny-harmony_none_${KEY}`);
  fs.mkdirSync(entry, { recursive: true });
  const listed = fs.readdirSync(checkpoint).filter((f) => !f.startsWith('.'));
  for (const f of listed) fs.copyFileSync(path.join(checkpoint, f), path.join(entry, f));
  const sizes = listed.map((f) => ({ path: f, bytes: fs.statSync(path.join(entry, f)).size, sha256: '0'.repeat(64) }));
  fs.writeFileSync(
    path.join(entry, '.modelserve-complete.json'),
    JSON.stringify({
      key: KEY,
      source: 'hf://openai/tiny-harmony',
      bytes: sizes.reduce((s, f) => s + f.bytes, 0),
      files: sizes,
      completedAt: new Date().toISOString(),
    }),
  );
  fs.mkdirSync(path.join(root, 'models')); // the pod's emptyDir, left empty by the init container
}, 120_000);
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

describe('worker and the node-local weight cache', () => {
  it('loads the complete cache entry instead of --model, and serves', async () => {
    const worker = await withCacheEnv(() =>
      startWorker(['--model', path.join(root, 'models'), '--served-model-name', 'tiny', '--threads', '1']),
    );
    try {
      const line = loadingLine(worker.logs);
      expect(line.weightsFrom).toBe('cache');
      expect(line.modelPath).toBe(entry);
      expect(line.cachedBytes).toBeGreaterThan(1e6);
      const res = await fetch(`${worker.baseUrl}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'tiny', prompt: 'Hello', max_tokens: 2, temperature: 0 }),
      });
      expect(res.status).toBe(200);
    } finally {
      await worker.stop();
    }
  }, 120_000);

  it('loads --model and logs why when a listed file is damaged', async () => {
    const shard = fs.readdirSync(entry).find((f) => f.endsWith('.safetensors'))!;
    fs.truncateSync(path.join(entry, shard), 1024);
    const worker = await withCacheEnv(() => startWorker(['--model', checkpoint, '--threads', '1']));
    try {
      const line = loadingLine(worker.logs);
      expect(line.weightsFrom).toBe('source');
      expect(line.modelPath).toBe(checkpoint);
      expect(line.weightsReason).toMatch(new RegExp(`${shard} in .* has 1024 bytes, the marker says \\d+`));
    } finally {
      await worker.stop();
    }
  }, 120_000);
});
