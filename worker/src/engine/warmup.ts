// A short generation run before the worker reports ready (--warmup-tokens). The first step of a fresh engine pays
// one-time costs — the first touch of lazily mapped weights (the CPU backend maps the checkpoint), first allocations —
// that would otherwise land on the first real request. For a standby replica that request is the one a scale-up was
// for, so the cost belongs before readiness (docs/benchmarks/coldstart.md measures it).
import type { Engine } from './types.js';

/** Generates `maxTokens` tokens from a fixed 16-token prompt (ids 1..16, valid in any vocabulary) and waits for it. */
export function warmUp(engine: Engine, maxTokens: number): Promise<void> {
  const prompt = Array.from({ length: Math.min(16, Math.max(1, engine.info.vocabSize - 1)) }, (_, i) => i + 1);
  return new Promise((resolve, reject) => {
    engine.submit({ prompt, maxTokens, temperature: 0 }, (events) => {
      const last = events.find((e) => e.finishReason !== undefined);
      if (!last) return;
      if (last.finishReason === 'error' || last.finishReason === 'cancelled') {
        reject(new Error(`warm-up generation ended with ${last.finishReason}: ${last.message ?? ''}`.trim()));
      } else resolve();
    });
  });
}
