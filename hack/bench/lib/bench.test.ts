// The load generator's pure parts: percentiles as vLLM computes them, and the Azure trace reader on the real file.
import { join } from 'node:path';
import { percentile, summarize } from './stats.js';
import { readAzureTrace } from './trace.js';

describe('stats', () => {
  it('interpolates percentiles linearly between ranks (numpy default)', () => {
    expect(percentile([1, 2, 3, 4], 50)).toBe(2.5);
    expect(percentile([0, 10], 99)).toBeCloseTo(9.9);
    expect(percentile([], 50)).toBe(0);
  });

  it('writes vLLM bench keys', () => {
    const s = summarize('ttft', [3, 1, 2]);
    expect(s).toMatchObject({ mean_ttft_ms: 2, median_ttft_ms: 2, p99_ttft_ms: 2.98 });
    expect(Object.keys(s)).toEqual([
      'mean_ttft_ms',
      'median_ttft_ms',
      'std_ttft_ms',
      'p50_ttft_ms',
      'p90_ttft_ms',
      'p99_ttft_ms',
    ]);
  });
});

// ../shared beside the checkout, here and in CI.
const TRACE = join(process.cwd(), '../shared/traces/azure-llm-2023-code.csv');
describe('readAzureTrace', () => {
  it('reads arrival offsets and token counts from the shared trace', () => {
    const rows = readAzureTrace(TRACE);
    expect(rows.length).toBeGreaterThan(8000);
    expect(rows[0]).toEqual({ at: 0, inputTokens: 4808, outputTokens: 10 });
    // 18:17:03.9799600 → 18:17:04.0319600
    expect(rows[1]!.at).toBeCloseTo(0.052, 6);
    for (let i = 1; i < rows.length; i++) expect(rows[i]!.at).toBeGreaterThanOrEqual(rows[i - 1]!.at);
  });
});
