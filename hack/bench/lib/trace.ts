// Replay of an Azure LLM inference trace (CSV: TIMESTAMP,ContextTokens,GeneratedTokens).
import { readFileSync } from 'node:fs';

export interface TraceRequest {
  /** Seconds after the first request. */
  at: number;
  inputTokens: number;
  outputTokens: number;
}

export function readAzureTrace(path: string): TraceRequest[] {
  const lines = readFileSync(path, 'utf8').trim().split(/\r?\n/);
  const header = lines.shift()?.split(',') ?? [];
  const col = (name: string): number => {
    const i = header.indexOf(name);
    if (i === -1) throw new Error(`${path}: no column ${name} (header: ${header.join(',')})`);
    return i;
  };
  const [ts, ctx, gen] = [col('TIMESTAMP'), col('ContextTokens'), col('GeneratedTokens')];
  const rows = lines.map((line, i) => {
    const cells = line.split(',');
    // "2023-11-16 18:17:03.9799600": Date parses milliseconds; keep the rest of the fraction ourselves.
    const [date, frac = '0'] = (cells[ts] ?? '').split('.');
    const ms = Date.parse(`${date!.replace(' ', 'T')}Z`) + Number(`0.${frac}`) * 1000;
    const input = Number(cells[ctx]);
    const output = Number(cells[gen]);
    if (!Number.isFinite(ms) || !Number.isFinite(input) || !Number.isFinite(output)) {
      throw new Error(`${path}:${i + 2}: cannot parse '${line}'`);
    }
    return { ms, input, output };
  });
  const t0 = rows[0]?.ms ?? 0;
  return rows.map((r) => ({ at: (r.ms - t0) / 1000, inputTokens: r.input, outputTokens: r.output }));
}
