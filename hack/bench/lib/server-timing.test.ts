// The load generator's reading of Server-Timing and the per-request added TTFT it reports.
import type { RequestResult } from './load.js';
import { addedTtftMs, formatServerTiming, parseServerTiming, serverTimingSummary } from './server-timing.js';

describe('parseServerTiming', () => {
  it("reads the worker's field", () => {
    expect(parseServerTiming('recv;dur=0.120, pre;dur=0.412, engine-ttft;dur=12.300, post;dur=0.050')).toEqual({
      recv: 0.12,
      pre: 0.412,
      'engine-ttft': 12.3,
      post: 0.05,
    });
  });

  it('takes the grammar of the spec: params in any order, quoted values, quoted commas and semicolons, case', () => {
    expect(
      parseServerTiming('db;desc="a, b; c";DUR=3, cache ; dur = "1.5" ;desc=hit,miss;desc="x\\"y,z",total;dur=7'),
    ).toEqual({ db: 3, cache: 1.5, total: 7 });
  });

  it('leaves out metrics without a usable dur and keeps the first of a repeated name', () => {
    expect(parseServerTiming('a, b;dur=, c;dur=x, d;dur=2, d;dur=9, ;dur=4')).toEqual({ d: 2 });
  });

  it('reads several field lines as one list, and nothing as nothing', () => {
    expect(parseServerTiming(['pre;dur=1', 'post;dur=2'])).toEqual({ pre: 1, post: 2 });
    expect(parseServerTiming(undefined)).toEqual({});
    expect(parseServerTiming('')).toEqual({});
  });
});

const result = (ttftMs: number, serverTiming?: Record<string, number>, ok = true): RequestResult => ({
  ok,
  inputTokens: 1,
  outputTokens: 1,
  startMs: 0,
  ttftMs,
  e2eMs: ttftMs,
  itlsMs: [],
  chunkAtMs: [],
  ...(serverTiming ? { serverTiming } : {}),
});

describe('serverTimingSummary', () => {
  it('reports client TTFT − engine-ttft per request, its parts, and counts requests without the field', () => {
    const results = [
      result(10, { recv: 0.1, pre: 0.5, 'engine-ttft': 9, post: 0.1 }),
      result(20, { recv: 0.2, pre: 1, 'engine-ttft': 17, post: 0.5 }),
      result(30, { pre: 0.2, 'engine-ttft': 29.5, post: 0.1 }),
      // No field, a field without engine-ttft (a stream that wrote nothing): counted as missing.
      result(12),
      result(12, { pre: 0.3 }),
      // Failed requests are the report's `failed`, not missing timings.
      result(0, undefined, false),
    ];
    expect(addedTtftMs(results[0]!)).toBeCloseTo(1, 9);
    expect(addedTtftMs(results[3]!)).toBeUndefined();
    const s = serverTimingSummary(results);
    expect(s.server_timing_requests).toBe(3);
    expect(s.server_timing_missing).toBe(2);
    // Added: 1, 3, 0.5.
    expect(s.p50_added_ttft_ms).toBeCloseTo(1, 9);
    expect(s.max_added_ttft_ms).toBeCloseTo(3, 9);
    expect(s.p99_added_ttft_ms).toBeCloseTo(1 + 2 * 0.98, 9);
    expect(s.mean_added_ttft_ms).toBeCloseTo(1.5, 9);
    expect(s.max_server_pre_ms).toBe(1);
    expect(s.p50_server_post_ms).toBe(0.1);
    // Unattributed: 1 − 0.7, 3 − 1.7, 0.5 − 0.3 (a missing recv counts as 0).
    expect(s.max_unattributed_ms).toBeCloseTo(1.3, 9);
    expect(s.p50_unattributed_ms).toBeCloseTo(0.3, 9);
    expect(s.max_server_recv_ms).toBe(0.2);
    expect(s.p50_engine_ttft_ms).toBe(17);
    expect(formatServerTiming(s)[0]).toBe('Server-Timing on 3 requests, missing on 2');
  });

  it('says so when no request carried the field', () => {
    const s = serverTimingSummary([result(5), result(6)]);
    expect(s).toMatchObject({ server_timing_requests: 0, server_timing_missing: 2, max_added_ttft_ms: 0 });
    expect(formatServerTiming(s)).toEqual(['Server-Timing on 0 requests, missing on 2']);
  });
});
