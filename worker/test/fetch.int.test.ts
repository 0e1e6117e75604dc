// The fetch-weights init container (worker/src/fetch.ts) against a real HTTP server serving the Hub API paths and
// plain files (test/support/hubServer.ts): hf:// and http:// sources fetched and verified, a re-run after a
// pod restart served from what is already there, a corrupted file refused, a complete node-cache entry used without a
// single request, and the program itself run as the init container runs it.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { HubServer, makeCheckpoint, sha256 } from '../../test/support/hubServer.js';
import { fetchWeights, FETCHED_MARKER, type FetchArgs } from '../src/fetch.js';

const REV = 'c'.repeat(40);
const KEY = '00112233445566ff';
const files = makeCheckpoint('fetch', 300 << 10);
const plainFiles = makeCheckpoint('plain', 200 << 10, 1);
let hub: HubServer;
let root: string;
const quiet = () => undefined;

beforeAll(async () => {
  hub = new HubServer();
  hub.addRepo('openai/tiny', REV, files);
  hub.addRepo('web/plain', 'v1', plainFiles);
  await hub.start('127.0.0.1');
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'fetch-weights-'));
});
afterAll(async () => {
  await hub.stop();
  fs.rmSync(root, { recursive: true, force: true });
});

const args = (dest: string, extra: Partial<FetchArgs> = {}): FetchArgs => ({
  source: 'hf://openai/tiny',
  revision: REV,
  dest: path.join(root, dest),
  sha256: {},
  hfEndpoint: `http://127.0.0.1:${hub.port}`,
  ...extra,
});

function expectFiles(dir: string, want: typeof files): void {
  for (const f of want) expect(sha256(fs.readFileSync(path.join(dir, f.path)))).toBe(sha256(f.data));
}

describe('fetch-weights', () => {
  it('fetches an hf:// checkpoint, verifies it, and a re-run downloads nothing', async () => {
    const before = hub.requests.length;
    const r = await fetchWeights(args('hf'), quiet);
    expect(r.from).toBe('source');
    expect(r.files).toBe(files.length);
    expectFiles(path.join(root, 'hf'), files);
    const gets = hub.requests.slice(before).filter((q) => q.method === 'GET' && q.path.includes('/resolve/'));
    expect(gets).toHaveLength(files.length);
    expect(fs.existsSync(path.join(root, 'hf', FETCHED_MARKER))).toBe(true);

    const n = hub.requests.length;
    const again = await fetchWeights(args('hf'), quiet);
    expect(again.from).toBe('already-fetched');
    expect(hub.requests.length).toBe(n);
  });

  it('fetches an http:// checkpoint listed by its sha256 map and refuses a corrupted file', async () => {
    const sums = Object.fromEntries(plainFiles.map((f) => [f.path, sha256(f.data)]));
    const source = `http://127.0.0.1:${hub.port}/plain/web/plain/v1`;
    await fetchWeights(args('plain', { source, revision: undefined, sha256: sums }), quiet);
    expectFiles(path.join(root, 'plain'), plainFiles);

    const shard = plainFiles.find((f) => f.lfs)!;
    hub.corrupt.add(shard.path);
    try {
      await expect(
        fetchWeights(args('plain-bad', { source, revision: undefined, sha256: sums }), quiet),
      ).rejects.toThrow(`sha256 mismatch for ${shard.path}: expected ${sums[shard.path]}`);
      expect(fs.existsSync(path.join(root, 'plain-bad', shard.path))).toBe(false);
      expect(fs.existsSync(path.join(root, 'plain-bad', FETCHED_MARKER))).toBe(false);
    } finally {
      hub.corrupt.delete(shard.path);
    }
  });

  it('uses a complete node-cache entry without a request, and fetches when the entry is incomplete', async () => {
    const entry = path.join(root, 'cache', `openai-tiny_cccccccccccc_${KEY}`);
    fs.mkdirSync(entry, { recursive: true });
    for (const f of files) {
      fs.mkdirSync(path.dirname(path.join(entry, f.path)), { recursive: true });
      fs.writeFileSync(path.join(entry, f.path), f.data);
    }
    const n = hub.requests.length;
    // No marker yet: the stager has not finished on this node.
    const partial = await fetchWeights(args('with-partial-cache', { cacheDir: entry }), quiet);
    expect(partial.from).toBe('source');
    expect(hub.requests.length).toBeGreaterThan(n);

    fs.writeFileSync(
      path.join(entry, '.modelserve-complete.json'),
      JSON.stringify({
        key: KEY,
        source: 'hf://openai/tiny',
        revision: REV,
        bytes: files.reduce((s, f) => s + f.data.length, 0),
        files: files.map((f) => ({ path: f.path, bytes: f.data.length, sha256: sha256(f.data) })),
        completedAt: new Date().toISOString(),
      }),
    );
    const m = hub.requests.length;
    const cached = await fetchWeights(
      args('with-cache', { cacheDir: entry, cacheMarker: '.modelserve-complete.json' }),
      quiet,
    );
    expect(cached.from).toBe('cache');
    expect(hub.requests.length).toBe(m);
    expect(fs.existsSync(path.join(root, 'with-cache'))).toBe(false);
  });

  it('runs as the init container does: exit 0 when fetched, `fetch: <reason>` and exit 1 on failure', async () => {
    const sumsFile = path.join(root, 'sha256.json');
    fs.writeFileSync(sumsFile, '{}\n');
    const run = (extra: string[]) =>
      new Promise<{ code: number | null; out: string }>((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', path.resolve('worker/src/fetch.ts'), ...extra], {
          env: { ...process.env, HF_ENDPOINT: `http://127.0.0.1:${hub.port}` },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let out = '';
        child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
        child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
        child.on('exit', (code) => resolve({ code, out }));
      });
    const dest = path.join(root, 'cli');
    const ok = await run(['--source', 'hf://openai/tiny', '--revision', REV, '--dest', dest, '--sha256', sumsFile]);
    expect(ok.code).toBe(0);
    expect(ok.out).toContain('"msg":"fetched"');
    expectFiles(dest, files);

    const missing = await run(['--source', 'hf://openai/missing', '--revision', REV, '--dest', path.join(root, 'x')]);
    expect(missing.code).toBe(1);
    expect(missing.out.trim().split('\n').pop()).toMatch(/^fetch: hub listing .*openai\/missing.*HTTP 404/);
  }, 60_000);
});
