// Sliding-window rate-limit math (the Redis script that applies it is exercised in gateway-auth.int.test.ts).
import { retryAfterMs, slidingCount, windowPosition } from '../src/gateway/rateLimit.js';

const W = 60_000;

test('window position and weight of the previous window', () => {
  expect(windowPosition(0)).toEqual({ index: 0, previousWeight: 1, elapsedMs: 0 });
  expect(windowPosition(90_000)).toEqual({ index: 1, previousWeight: 0.5, elapsedMs: 30_000 });
  expect(windowPosition(179_999).index).toBe(2);
});

test('sliding count weighs the previous window by its overlap', () => {
  expect(slidingCount(10, 4, 0.5)).toBe(9);
  expect(slidingCount(10, 4, 0)).toBe(4);
});

test('no wait when the cost fits now', () => {
  expect(retryAfterMs(0, 9, 1, 10, 1000)).toBe(0);
  expect(retryAfterMs(10, 4, 1, 10, 30_000)).toBe(0); // 10·0.5 + 4 + 1 = 10
});

test('wait until the previous window has decayed enough', () => {
  // prev 10, cur 5, limit 10, cost 1 at 30 s: need 10·(1 − t/W) ≤ 4 → t = 36 s → 6 s from now.
  const t = retryAfterMs(10, 5, 1, 10, 30_000);
  expect(t).toBe(6_000);
  expect(slidingCount(10, 5, 1 - (30_000 + t) / W) + 1).toBeLessThanOrEqual(10 + 1e-9);
});

test('when the current window alone is over, wait into the next window', () => {
  // cur 10 (limit 10): at the window end it becomes the previous one: 10·(1 − t'/W) ≤ 9 → t' = 6 s.
  expect(retryAfterMs(0, 10, 1, 10, 45_000)).toBe(15_000 + 6_000);
});

test('a cost larger than the limit asks for a whole window', () => {
  expect(retryAfterMs(0, 0, 11, 10, 0)).toBe(W);
});

test('the answer is the first moment the request fits (checked by stepping through time)', () => {
  for (const [prev, cur, limit, elapsed] of [
    [30, 10, 35, 10_000],
    [100, 0, 60, 59_000],
    [5, 60, 60, 1_000],
    [60, 59, 60, 20_000],
  ] as const) {
    const t = retryAfterMs(prev, cur, 1, limit, elapsed);
    const countAt = (dt: number) => {
      const at = elapsed + dt;
      return at < W ? slidingCount(prev, cur, 1 - at / W) : slidingCount(cur, 0, 1 - (at - W) / W);
    };
    expect(countAt(t) + 1).toBeLessThanOrEqual(limit + 1e-6);
    if (t > 0) expect(countAt(t - 2) + 1).toBeGreaterThan(limit);
  }
});
