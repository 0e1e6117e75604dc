// The development token pacing (MODELSERVE_DEV_TOKEN_DELAY_MS): one token per hand-out, in order, the finish with the
// last token, the request counted as running until then, and cancel/close ending it without further events.
import { PacedEngine } from '../src/engine/paced.js';
import type { TokenEvent } from '../src/engine/types.js';
import { waitFor } from '../../test/support/wait.js';
import { ScriptedEngine } from './support/scripted-engine.js';

const SCRIPT = [11, 12, 13, 14, 15, 16];

function engines(delayMs: number): { inner: ScriptedEngine; paced: PacedEngine } {
  const inner = new ScriptedEngine(() => SCRIPT);
  return { inner, paced: new PacedEngine(inner, delayMs) };
}

function collect(engine: PacedEngine, maxTokens = SCRIPT.length) {
  const batches: TokenEvent[][] = [];
  let resolve!: () => void;
  const finished = new Promise<void>((r) => (resolve = r));
  const id = engine.submit({ prompt: [1, 2], maxTokens }, (events) => {
    batches.push(events);
    if (events.some((e) => e.finishReason)) resolve();
  });
  return { id, batches, finished };
}

test('hands out every token, one at a time and in order, and finishes with the last', async () => {
  const { paced } = engines(5);
  const run = collect(paced);
  await run.finished;
  expect(run.batches.every((b) => b.length === 1)).toBe(true);
  expect(run.batches.flat().map((e) => e.token)).toEqual(SCRIPT);
  expect(run.batches.at(-1)?.[0]?.finishReason).toBe('length');
  expect(paced.stats().running).toBe(0);
  await paced.close();
});

test('counts a request as running until its last token is out, even when the engine is done', async () => {
  const { inner, paced } = engines(300);
  const run = collect(paced);
  // The scripted engine steps every millisecond: it finishes long before the paced hand-out (6 tokens, 1.8 s).
  await waitFor(() => inner.stats().running === 0, { description: 'the scripted engine done' });
  expect(run.batches.flat().some((e) => e.finishReason)).toBe(false);
  expect(paced.stats().running).toBe(1);
  await run.finished;
  expect(paced.stats().running).toBe(0);
  await paced.close();
});

test('cancel stops the hand-out; close ends what is left as cancelled', async () => {
  const { paced } = engines(30);
  const cancelled = collect(paced);
  const open = collect(paced);
  await new Promise((resolve) => setTimeout(resolve, 10));
  paced.cancel(cancelled.id);
  const seen = cancelled.batches.length;
  await paced.close();
  await open.finished;
  expect(open.batches.at(-1)).toEqual([{ token: -1, finishReason: 'cancelled' }]);
  await new Promise((resolve) => setTimeout(resolve, 60));
  expect(cancelled.batches).toHaveLength(seen);
  expect(cancelled.batches.flat().some((e) => e.finishReason)).toBe(false);
  expect(paced.stats().running).toBe(0);
});
