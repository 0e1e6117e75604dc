// Overload over the real engine and real HTTP: ten times the queue bound of concurrent requests gets only 200s and
// 429s (with Retry-After), never a 5xx, the server keeps serving, and the heap returns near its baseline after GC.
import type { Server } from 'node:http';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { DEFAULT_CONFIG } from '../src/context.js';
import type { Engine } from '../src/engine/types.js';
import { createApp, listen } from '../src/server.js';
import { Tokenizer } from '../src/tokenizer.js';
import { loadRealEngine, tinyCheckpoint } from './support/worker-process.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const MAX_SEQS = 2;
const MAX_QUEUE = 4;
let engine: Engine;
let server: Server;
let base: string;

beforeAll(async () => {
  engine = await loadRealEngine({ modelPath: tinyCheckpoint(1), maxContext: 512, maxSeqs: MAX_SEQS, threads: 2 });
  const { app } = createApp({
    tokenizer: new Tokenizer(),
    engine,
    config: { ...DEFAULT_CONFIG, servedModelName: 'tiny', maxQueue: MAX_QUEUE, conversationDate: null },
  });
  const bound = await listen(app, 0, '127.0.0.1');
  server = bound.server;
  base = `http://127.0.0.1:${bound.port}`;
}, 120_000);

afterAll(async () => {
  server?.closeAllConnections();
  await new Promise((r) => server?.close(r));
  await engine?.close();
});

const burst = (
  count: number,
  stream: boolean,
): Promise<{ status: number; retryAfter: string | null; body: string }[]> =>
  Promise.all(
    Array.from({ length: count }, (_, i) =>
      fetch(`${base}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          model: 'tiny',
          messages: [{ role: 'user', content: `request ${i}` }],
          max_tokens: 24,
          stream,
        }),
      }).then(async (r) => ({ status: r.status, retryAfter: r.headers.get('retry-after'), body: await r.text() })),
    ),
  );

function heapMb(): number {
  for (let i = 0; i < 3; i++) gc();
  return process.memoryUsage().heapUsed / 2 ** 20;
}

it('answers 10× the queue bound with only 200s and 429s, and memory returns near baseline', async () => {
  await burst(2, false); // warm up code paths before the baseline
  const baseline = heapMb();
  for (let round = 0; round < 3; round++) {
    const results = await burst(10 * MAX_QUEUE, round % 2 === 0);
    const statuses = new Set(results.map((r) => r.status));
    expect([...statuses].every((s) => s === 200 || s === 429)).toBe(true);
    const ok = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status === 429);
    expect(ok.length).toBeGreaterThanOrEqual(MAX_SEQS + MAX_QUEUE);
    expect(refused.length).toBeGreaterThan(0);
    for (const r of refused) {
      expect(r.retryAfter).toBeTruthy();
      expect((JSON.parse(r.body) as { error: { code: string } }).error.code).toBe('rate_limit_exceeded');
    }
  }
  // Still serving, nothing left running or queued, KV blocks freed.
  const after = await burst(1, false);
  expect(after[0]!.status).toBe(200);
  const stats = engine.stats();
  expect(stats.running + stats.waiting).toBe(0);
  // Generous bound: retained garbage from 120 requests would be far above this; the baseline is tens of MB.
  expect(heapMb()).toBeLessThan(baseline * 1.5 + 16);
}, 180_000);

it('cancels the generation and frees its KV blocks when the client disconnects', async () => {
  const before = engine.stats();
  const abort = new AbortController();
  const res = await fetch(`${base}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'tiny', prompt: [1000, 2000, 3000], max_tokens: 500, stream: true }),
    signal: abort.signal,
  });
  const reader = res.body!.getReader();
  await reader.read();
  expect(engine.stats().running).toBe(1);
  abort.abort();
  let stats = engine.stats();
  for (let i = 0; i < 200 && stats.running + stats.waiting > 0; i++) {
    await new Promise((r) => setTimeout(r, 10));
    stats = engine.stats();
  }
  expect(stats.running + stats.waiting).toBe(0);
  // Generated far fewer than 500 tokens: the engine stopped when the client left.
  expect(stats.generationTokens - before.generationTokens).toBeLessThan(500);
  expect(stats.kvBlocksUsed).toBeLessThanOrEqual(before.kvBlocksUsed + 1);
}, 60_000);
