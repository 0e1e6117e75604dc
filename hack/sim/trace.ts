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
  let x = (seed * 2654435761) % 2147483648;
  const next = () => (x = (x * 1103515245 + 12345) % 2147483648) / 2147483648;
  return trace.map((r) => ({ ...r, t: Math.max(0, r.t + (next() - 0.5) * spreadS) })).sort((a, b) => a.t - b.t);
}
