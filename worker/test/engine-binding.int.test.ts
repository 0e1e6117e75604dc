// The TypeScript binding over the real native engine (addon + C++ core) on a generated `tiny` checkpoint: streamed
// tokens for concurrent requests, greedy determinism against sequential runs, cancellation freeing KV blocks,
// capacity and load errors. Needs `make native` (or MODELSERVE_ENGINE_ADDON pointing at a built addon, with
// make_checkpoint next to it).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { addonPath, loadEngine } from '../src/engine/native.js';
import {
  EngineCapacityError,
  EngineError,
  type Engine,
  type FinishReason,
  type GenerationRequest,
  type TokenEvent,
} from '../src/engine/types.js';

const makeCheckpoint = path.join(path.dirname(addonPath()), 'make_checkpoint');
let dir: string;
let checkpoint: string;

interface Result {
  tokens: number[];
  finishReason: FinishReason | undefined;
  cachedPromptTokens: number;
  batches: number;
}

/** Submits and collects the request's events; resolves when its last event arrives. */
function generate(
  engine: Engine,
  request: GenerationRequest,
): { id: number; done: Promise<Result>; firstToken: Promise<void> } {
  let signalFirst: () => void = () => {};
  const firstToken = new Promise<void>((r) => (signalFirst = r));
  const result: Result = { tokens: [], finishReason: undefined, cachedPromptTokens: 0, batches: 0 };
  let id = -1;
  const done = new Promise<Result>((resolve) => {
    id = engine.submit(request, (events: TokenEvent[]) => {
      result.batches += 1;
      for (const e of events) {
        if (e.token >= 0) {
          if (result.tokens.length === 0) {
            result.cachedPromptTokens = e.cachedPromptTokens ?? 0;
            signalFirst();
          }
          result.tokens.push(e.token);
        }
        if (e.finishReason) {
          result.finishReason = e.finishReason;
          signalFirst();
          resolve(result);
        }
      }
    });
  });
  return { id, done, firstToken };
}

const prompt = (n: number, salt: number): number[] =>
  Array.from({ length: n }, (_, i) => (i * 37 + salt * 11 + 3) % 1024);

beforeAll(() => {
  if (!existsSync(makeCheckpoint)) throw new Error(`${makeCheckpoint} is missing: run \`make native\` first`);
  dir = mkdtempSync(path.join(tmpdir(), 'engine-binding-'));
  checkpoint = path.join(dir, 'tiny');
  const made = spawnSync(makeCheckpoint, ['--preset', 'tiny', '--seed', '5', '--out', checkpoint], {
    encoding: 'utf8',
  });
  if (made.status !== 0) throw new Error(`make_checkpoint failed: ${made.stderr}`);
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('native engine binding', () => {
  let engine: Engine;
  const progress: Array<[number, number]> = [];

  beforeAll(async () => {
    engine = await loadEngine({
      modelPath: checkpoint,
      threads: 2,
      maxContext: 512,
      maxSeqs: 8,
      maxBatchedTokens: 96,
      kvBlockSize: 16,
      kvMemoryBytes: 4 * 1024 * 1024,
      kvDtype: 'float32',
      onProgress: (done, total) => progress.push([done, total]),
    });
  }, 60_000);

  afterAll(async () => {
    await engine?.close();
  });

  it('reports the model and the loading progress', () => {
    expect(engine.info.architecture).toBe('gpt_oss');
    expect(engine.info.vocabSize).toBe(1024);
    expect(engine.info.nLayers).toBe(4);
    expect(progress.length).toBeGreaterThan(0);
    const [done, total] = progress[progress.length - 1]!;
    expect(done).toBe(total);
    expect(engine.options.kvDtype).toBe('float32');
    expect(engine.stats().kvBlocksTotal).toBeGreaterThan(0);
  });

  it('streams 8 concurrent greedy requests with the same tokens as sequential runs', async () => {
    const prompts = Array.from({ length: 8 }, (_, i) => prompt(6 + 19 * i, i));
    const sequential: number[][] = [];
    for (const p of prompts) {
      const r = await generate(engine, { prompt: p, maxTokens: 20 }).done;
      sequential.push(r.tokens);
    }
    const before = engine.stats().steps;
    const results = await Promise.all(prompts.map((p) => generate(engine, { prompt: p, maxTokens: 20 }).done));
    const steps = engine.stats().steps - before;
    results.forEach((r, i) => {
      expect(r.finishReason).toBe('length');
      expect(r.tokens).toEqual(sequential[i]);
    });
    // Batched: the 8 requests shared steps (far fewer steps than 8 × 20 tokens).
    expect(steps).toBeLessThan(8 * 20);
    expect(engine.stats().kvBlocksUsed).toBe(0);
  }, 60_000);

  it('serves a repeated prompt from the prefix cache with identical tokens', async () => {
    const p = prompt(70, 42);
    const first = await generate(engine, { prompt: p, maxTokens: 8 }).done;
    const second = await generate(engine, { prompt: p, maxTokens: 8 }).done;
    expect(first.cachedPromptTokens).toBe(0);
    expect(second.cachedPromptTokens).toBe(64);
    expect(second.tokens).toEqual(first.tokens);
  });

  it('returns logprobs and honours stop tokens', async () => {
    const p = prompt(12, 7);
    const free = await generate(engine, { prompt: p, maxTokens: 6 }).done;
    const stop = free.tokens[2]!;
    const events: TokenEvent[] = [];
    await new Promise<void>((resolve) => {
      engine.submit({ prompt: p, maxTokens: 6, stopTokenIds: [stop], logprobs: 3 }, (batch) => {
        events.push(...batch);
        if (batch.some((e) => e.finishReason)) resolve();
      });
    });
    const last = events[events.length - 1]!;
    expect(last.finishReason).toBe('stop');
    expect(last.token).toBe(stop);
    expect(events.map((e) => e.token)).toEqual(free.tokens.slice(0, free.tokens.indexOf(stop) + 1));
    for (const e of events) {
      expect(e.topLogprobs).toHaveLength(3);
      expect(e.topLogprobs![0]!.token).toBe(e.token); // greedy: the sampled token is the most likely
      expect(e.logprob).toBeCloseTo(e.topLogprobs![0]!.logprob, 5);
      expect(e.logprob!).toBeLessThan(0);
    }
  });

  it('cancels under load and frees every KV block', async () => {
    const runs = Array.from({ length: 8 }, (_, i) =>
      generate(engine, { prompt: prompt(30 + i, 100 + i), maxTokens: 400 }),
    );
    await Promise.all(runs.map((r) => r.firstToken));
    expect(engine.stats().kvBlocksUsed).toBeGreaterThan(0);
    for (const r of runs) engine.cancel(r.id);
    engine.cancel(987654); // unknown ids are ignored
    const results = await Promise.all(runs.map((r) => r.done));
    for (const r of results) expect(r.finishReason).toBe('cancelled');
    const stats = engine.stats();
    expect(stats.kvBlocksUsed).toBe(0);
    expect(stats.running + stats.waiting).toBe(0);
  }, 60_000);

  it('refuses a request that can never fit with EngineCapacityError', () => {
    expect(() => engine.submit({ prompt: prompt(400, 1), maxTokens: 200 }, () => {})).toThrow(EngineCapacityError);
    expect(() => engine.submit({ prompt: [1, 2, 5000], maxTokens: 2 }, () => {})).toThrow(/prompt token 2/);
  });

  it('computes reference logits', () => {
    const logits = engine.evalLogits([1, 2, 3]);
    // (The addon's Float32Array comes from the main realm, not jest's: compare by tag.)
    expect(Object.prototype.toString.call(logits)).toBe('[object Float32Array]');
    expect(logits.length).toBe(3 * 1024);
    expect(logits.every((x) => Number.isFinite(x))).toBe(true);
  });
});

describe('native engine loading errors', () => {
  it('rejects a missing checkpoint with a message naming the file', async () => {
    const missing = path.join(dir, 'no-such-checkpoint');
    const err: unknown = await loadEngine({ modelPath: missing, threads: 1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EngineError);
    expect((err as EngineError).code).toBe('MS_ERR_IO');
    expect((err as EngineError).message).toContain(missing);
  });

  it('rejects an engine configuration whose KV budget holds no block', async () => {
    const err: unknown = await loadEngine({ modelPath: checkpoint, threads: 1, kvMemoryBytes: 100 }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(EngineError);
    expect((err as EngineError).code).toBe('MS_ERR_OUT_OF_MEMORY');
    expect((err as EngineError).message).toContain('kv_memory_bytes');
  });
});
