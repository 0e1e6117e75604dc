// The same load straight into the engine (no HTTP, no JSON, no tokenizer): the peer the HTTP path is compared with.
import type { Engine } from '../../../worker/src/engine/types.js';
import type { Tokenizer } from '../../../worker/src/tokenizer.js';
import type { BenchRequest, RequestResult } from './load.js';

const FIRST_SPECIAL = 199998;

/** TTFT and ITL count visible text, as the HTTP client sees it: a token that is only part of a UTF-8 character (or
 * a special token) shows nothing until the character completes, on both paths alike. */
export async function runDirect(
  engine: Engine,
  tokenizer: Tokenizer,
  requests: BenchRequest[],
  concurrency: number,
): Promise<{ results: RequestResult[]; durationS: number }> {
  const t0 = performance.now();
  const results: RequestResult[] = new Array(requests.length);
  let next = 0;
  const one = (i: number): Promise<void> =>
    new Promise((resolve) => {
      const req = requests[i]!;
      const start = performance.now();
      const r: RequestResult = {
        ok: false,
        inputTokens: req.prompt.length,
        outputTokens: 0,
        startMs: start - t0,
        ttftMs: 0,
        e2eMs: 0,
        itlsMs: [],
        chunkAtMs: [],
      };
      let last = 0;
      const decoder = new TextDecoder();
      engine.submit(
        { prompt: req.prompt, maxTokens: req.outputTokens, temperature: 0, stopTokenIds: [200002, 200012, 199999] },
        (events) => {
          const now = performance.now();
          const tokens = events.filter((e) => e.token >= 0);
          r.outputTokens += tokens.length;
          let text = '';
          for (const e of tokens) {
            if (e.token < FIRST_SPECIAL) text += decoder.decode(tokenizer.tokenBytes(e.token), { stream: true });
          }
          if (text) {
            if (r.chunkAtMs.length === 0) r.ttftMs = now - start;
            else r.itlsMs.push(now - last);
            r.chunkAtMs.push(now - t0);
            last = now;
          }
          const end = events[events.length - 1]?.finishReason;
          if (end) {
            r.ok = end === 'stop' || end === 'length';
            if (!r.ok) r.error = events[events.length - 1]?.message ?? end;
            r.e2eMs = now - start;
            results[i] = r;
            resolve();
          }
        },
      );
    });
  const lanes = Array.from({ length: Math.min(concurrency, requests.length) }, async () => {
    while (next < requests.length) await one(next++);
  });
  await Promise.all(lanes);
  return { results, durationS: (performance.now() - t0) / 1000 };
}
