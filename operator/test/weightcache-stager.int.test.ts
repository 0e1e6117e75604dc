// The weight-cache stager as a process against a real HTTP server serving Hub API paths: http(s) and hf:// staging,
// a corrupted download refused, a download resumed after the stager is killed mid-file, eviction under a disk budget.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { waitFor } from '../../test/support/wait.js';
import { COMPLETE_MARKER, entryName, cacheKey, type CacheSource } from '../src/weightcache/keys.js';
import { HubServer, makeCheckpoint, sha256, type HubFile } from '../../test/support/hubServer.js';
import { repoRoot } from './harness.js';

const REV = 'a'.repeat(40);
const REV2 = 'b'.repeat(40);
let hub: HubServer;
let root: string;
const small = makeCheckpoint('small', 256 << 10);
const other = makeCheckpoint('other', 384 << 10);
const big = makeCheckpoint('big', 6 << 20, 1);

beforeAll(async () => {
  hub = new HubServer();
  hub.addRepo('openai/tiny', REV, small);
  hub.addRepo('openai/tiny', REV2, other);
  hub.addRepo('openai/big', REV, big);
  await hub.start('127.0.0.1');
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'wcache-stager-'));
});
afterAll(async () => {
  await hub.stop();
  fs.rmSync(root, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  out: string;
}

function stagerArgs(src: CacheSource, extra: string[] = []): string[] {
  return [
    `--source=${src.source}`,
    ...(src.revision ? [`--revision=${src.revision}`] : []),
    `--root=${root}`,
    `--entry=${entryName(src)}`,
    `--key=${cacheKey(src)}`,
    ...extra,
  ];
}

function startStager(src: CacheSource, extra: string[] = []) {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(repoRoot, 'operator/src/weightcache/stager.ts'), ...stagerArgs(src, extra)],
    {
      cwd: repoRoot,
      env: {
        ...process.env,
        HF_ENDPOINT: `http://127.0.0.1:${hub.port}`,
        MODELSERVE_STAGE_PROGRESS_BYTES: String(256 << 10),
        // Shards of 256 KiB and more are hashed on the worker thread, as multi-GB shards are in production.
        MODELSERVE_STAGE_PIPELINE_MIN_BYTES: String(256 << 10),
        ...(src.sha256 ? { MODELSERVE_STAGE_SHA256: JSON.stringify(src.sha256) } : {}),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
  const done = new Promise<Run>((resolve) => child.on('exit', (code) => resolve({ code, out })));
  return { child, done, output: () => out };
}

const stageOnce = (src: CacheSource, extra: string[] = []) => startStager(src, extra).done;

function expectEntry(src: CacheSource, files: HubFile[]): void {
  const dir = path.join(root, entryName(src));
  for (const f of files) expect(sha256(fs.readFileSync(path.join(dir, f.path)))).toBe(sha256(f.data));
  const marker = JSON.parse(fs.readFileSync(path.join(dir, COMPLETE_MARKER), 'utf8')) as { key: string; bytes: number };
  expect(marker.key).toBe(cacheKey(src));
  expect(marker.bytes).toBe(files.reduce((s, f) => s + f.data.length, 0));
  expect(fs.existsSync(`${dir}.staging`)).toBe(false);
}

const hfSource = (repo: string, revision = REV): CacheSource => ({ namespace: 'ns', source: `hf://${repo}`, revision });

test('hf:// source: lists files through the Hub API, fetches them, verifies LFS SHA-256 and marks the entry', async () => {
  const src = hfSource('openai/tiny');
  const run = await stageOnce(src);
  expect(run).toMatchObject({ code: 0 });
  expectEntry(src, small);
  expect(hub.requests.some((r) => r.path === `/api/models/openai/tiny/revision/${REV}`)).toBe(true);
  // Staging again finds the marker: no file is downloaded twice.
  const before = hub.requests.filter((r) => r.path.includes('/resolve/')).length;
  expect(await stageOnce(src)).toMatchObject({ code: 0 });
  expect(hub.requests.filter((r) => r.path.includes('/resolve/')).length).toBe(before);
}, 60_000);

test('http(s):// source: fetches the files spec.model.sha256 lists and checks each', async () => {
  const src: CacheSource = {
    namespace: 'ns',
    source: `http://127.0.0.1:${hub.port}/plain/openai/tiny/${REV2}`,
    sha256: Object.fromEntries(other.map((f) => [f.path, sha256(f.data)])),
  };
  expect(await stageOnce(src)).toMatchObject({ code: 0 });
  expectEntry(src, other);
}, 60_000);

test('a corrupted download is retried, then refused with the file named, and never marked complete', async () => {
  const src = hfSource('openai/tiny', REV2);
  hub.corrupt.add('model-00001-of-00002.safetensors');
  try {
    const run = await stageOnce({ ...src, namespace: 'corrupt' });
    expect(run.code).toBe(1);
    const last = run.out.trim().split('\n').pop();
    expect(last).toMatch(/^stager: sha256 mismatch for model-00001-of-00002\.safetensors: expected [0-9a-f]{64}, got/);
    expect((run.out.match(/checksum mismatch/g) ?? []).length).toBe(2);
    const dir = path.join(root, entryName({ ...src, namespace: 'corrupt' }));
    expect(fs.existsSync(dir)).toBe(false);
    expect(fs.existsSync(path.join(`${dir}.staging`, 'model-00001-of-00002.safetensors'))).toBe(false);
    expect(fs.existsSync(path.join(`${dir}.staging`, 'model-00001-of-00002.safetensors.partial'))).toBe(false);
  } finally {
    hub.corrupt.clear();
  }
}, 60_000);

test('a stager killed mid-file resumes with an HTTP Range request and ends with a verified file', async () => {
  const src = hfSource('openai/big');
  const shard = big[2]!;
  hub.slow.set(shard.path, 2 << 20); // ~2 MiB/s: 6 MiB takes ~3 s
  const partial = path.join(root, `${entryName(src)}.staging`, `${shard.path}.partial`);
  const first = startStager(src);
  await waitFor(() => fs.existsSync(partial) && fs.statSync(partial).size > 1 << 20, {
    timeoutMs: 30_000,
    description: 'a partial file over 1 MiB',
  });
  first.child.kill('SIGKILL');
  await first.done;
  const kept = fs.statSync(partial).size;
  expect(kept).toBeLessThan(shard.data.length);
  hub.slow.delete(shard.path);
  const second = await stageOnce(src);
  expect(second).toMatchObject({ code: 0 });
  const ranges = hub.requests.filter((r) => r.path.endsWith(shard.path) && r.range).map((r) => r.range);
  expect(ranges.length).toBe(1);
  expect(Number(/^bytes=(\d+)-$/.exec(ranges[0]!)?.[1])).toBeGreaterThanOrEqual(kept);
  expect(second.out).toMatch(/"resumedFrom":\d+/);
  expectEntry(src, big);
}, 90_000);

test('eviction: an entry no longer wanted on the node makes room under the budget; wanted ones never do', async () => {
  const evictRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'wcache-evict-'));
  const a = hfSource('openai/tiny', REV);
  const b = hfSource('openai/tiny', REV2);
  const bytes = (files: HubFile[]) => files.reduce((s, f) => s + f.data.length, 0);
  const budget = String(bytes(small) + bytes(other) - 1); // both do not fit
  const withRoot = (extra: string[]) => extra.map((x) => x).concat([`--budget=${budget}`]);
  const run = (src: CacheSource, keep: string[]) =>
    stageOnce(src, withRoot([`--keep=${keep.join(',')}`])).then((r) => r);
  const saved = root;
  root = evictRoot;
  try {
    expect(await run(a, [cacheKey(a)])).toMatchObject({ code: 0 });
    // a is still wanted on this node: b does not fit, and the stager says so.
    const refused = await run(b, [cacheKey(a), cacheKey(b)]);
    expect(refused.code).toBe(1);
    expect(refused.out.trim().split('\n').pop()).toMatch(/^stager: disk budget \d+ bytes is too small/);
    expect(fs.existsSync(path.join(evictRoot, entryName(a), COMPLETE_MARKER))).toBe(true);
    // a no longer wanted: it is evicted and b staged.
    const ok = await run(b, [cacheKey(b)]);
    expect(ok).toMatchObject({ code: 0 });
    expect(ok.out).toContain(`"msg":"evicted","entry":"${entryName(a)}"`);
    expect(fs.existsSync(path.join(evictRoot, entryName(a)))).toBe(false);
    expectEntry(b, other);
  } finally {
    root = saved;
    fs.rmSync(evictRoot, { recursive: true, force: true });
  }
}, 90_000);
