// Reads a request trace (TIMESTAMP,ContextTokens,GeneratedTokens; the Azure LLM inference trace format).
import { readFileSync } from 'node:fs';

export interface TraceRequest {
  /** Seconds from the first request. */
  t: number;
  context: number;
  generated: number;
}

export function loadTrace(file: string): TraceRequest[] {
  const lines = readFileSync(file, 'utf8').split(/\r?\n/);
  const header = lines[0]?.trim();
  if (header !== 'TIMESTAMP,ContextTokens,GeneratedTokens') {
    throw new Error(`${file}: expected header TIMESTAMP,ContextTokens,GeneratedTokens, got ${JSON.stringify(header)}`);
  }
  const out: TraceRequest[] = [];
  let t0: number | undefined;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (!line) continue;
    const [ts, ctx, gen] = line.split(',');
    // "2023-11-16 18:17:03.9799600": 7 fractional digits; Date takes 3.
    const m = /^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})(\.\d+)?$/.exec(ts ?? '');
    const context = Number(ctx);
    const generated = Number(gen);
    if (!m || !Number.isFinite(context) || !Number.isFinite(generated)) {
      throw new Error(`${file}:${i + 1}: malformed line ${JSON.stringify(line)}`);
    }
    const ms = Date.parse(`${m[1]}T${m[2]}Z`) + Number(m[3] ?? 0) * 1000;
    t0 ??= ms;
    out.push({ t: (ms - t0) / 1000, context: Math.max(1, context), generated: Math.max(1, generated) });
  }
  out.sort((a, b) => a.t - b.t);
  return out;
}

/** Replays `speed` times faster: arrival times divided by speed. */
export function scaleTrace(trace: TraceRequest[], speed: number): TraceRequest[] {
  return trace.map((r) => ({ ...r, t: r.t / speed }));
}

/**
 * The same trace with every arrival moved by a uniform offset in ±spreadS/2 (a seeded generator, so runs repeat):
 * how much a result owes to the exact arrival times, i.e. the replay's noise.
 */
export function jitterTrace(trace: TraceRequest[], seed: number, spreadS = 0.5): TraceRequest[] {
  const next = seededRandom(seed);
  return trace.map((r) => ({ ...r, t: Math.max(0, r.t + (next() - 0.5) * spreadS) })).sort((a, b) => a.t - b.t);
}

/**
 * A synthetic load of short prompts and long answers (`--synthetic decode-heavy`): 15 minutes of Poisson arrivals,
 * 0.5 requests/s, then 4/s from 2 to 12 minutes, then 0.5/s again; prompts of 50-150 tokens, answers of 1,500-2,500.
 * Its prefill work is a few hundred tokens a second, a sliver of one replica; its decodes hold a gateway slot for
 * about 45 s each on a replica with 64 in flight (less on a lighter one), so at 4/s about 180 are in flight: three
 * replicas of 64 slots. Seeded, so runs repeat.
 */
export function decodeHeavyTrace(seed = 1): TraceRequest[] {
  const next = seededRandom(seed);
  const rateAt = (t: number) => (t >= 120 && t < 720 ? 4 : 0.5);
  const out: TraceRequest[] = [];
  for (let t = 0; t < 900;) {
    t += -Math.log(1 - next()) / rateAt(t);
    if (t >= 900) break;
    out.push({ t, context: 50 + Math.floor(next() * 101), generated: 1500 + Math.floor(next() * 1001) });
  }
  return out;
}

/** Uniform numbers in [0, 1) from a linear congruential generator: the same sequence for the same seed. */
function seededRandom(seed: number): () => number {
  let x = (seed * 2654435761) % 2147483648;
  return () => (x = (x * 1103515245 + 12345) % 2147483648) / 2147483648;
}
