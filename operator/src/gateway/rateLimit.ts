// Per-key limits in requests and tokens per minute, shared by every gateway replica through Redis. Each limit is a
// sliding-window counter: the current fixed window's count plus the previous window's count weighted by how much of
// it still overlaps the last minute. One Lua script checks both limits and charges the request atomically, so two
// replicas cannot both take the last slot. Tokens are charged twice: the prompt estimate up front, then the
// difference to the worker's reported usage when the response ends. Redis trouble never fails a request: the limiter
// lets it through and reports the error (fail open).
import type { Redis } from 'ioredis';

export const WINDOW_MS = 60_000;

export interface WindowPosition {
  /** Index of the current fixed window (now / window). */
  index: number;
  /** Weight of the previous window's count: the fraction of it still inside the sliding window. */
  previousWeight: number;
  /** Milliseconds since the current window began. */
  elapsedMs: number;
}

export function windowPosition(nowMs: number, windowMs = WINDOW_MS): WindowPosition {
  const index = Math.floor(nowMs / windowMs);
  const elapsedMs = nowMs - index * windowMs;
  return { index, previousWeight: 1 - elapsedMs / windowMs, elapsedMs };
}

export const slidingCount = (previous: number, current: number, previousWeight: number): number =>
  previous * previousWeight + current;

/**
 * Milliseconds until `cost` more fits under `limit`, if nothing else is charged meanwhile: the previous window's
 * share decays linearly, and at the window's end the current count becomes the previous one.
 */
export function retryAfterMs(
  previous: number,
  current: number,
  cost: number,
  limit: number,
  elapsedMs: number,
  windowMs = WINDOW_MS,
): number {
  const room = limit - cost;
  if (room < 0) return windowMs; // never fits in one window: ask the client to come back after a full window
  const weight = 1 - elapsedMs / windowMs;
  if (slidingCount(previous, current, weight) <= room) return 0;
  const remaining = windowMs - elapsedMs;
  if (current <= room && previous > 0) {
    // previous · (1 − (elapsed + t)/W) + current ≤ room
    const t = windowMs * (1 - (room - current) / previous) - elapsedMs;
    if (t <= remaining) return Math.max(0, Math.ceil(t));
  }
  // Next window: current · (1 − t'/W) ≤ room.
  const next = current > 0 ? windowMs * (1 - room / current) : 0;
  return Math.ceil(remaining + Math.max(0, next));
}

export interface Limits {
  rpm: number;
  tpm: number;
}

export type LimitDecision =
  | { allowed: true; window: number; charged: number; failedOpen?: boolean }
  | { allowed: false; limit: 'requests' | 'tokens'; retryAfterMs: number };

// KEYS: requests current, requests previous, tokens current, tokens previous.
// ARGV: previous weight, rpm, tpm, token charge, ttl ms. 0 as a limit means none.
const CHECK_AND_CHARGE = `
local w = tonumber(ARGV[1])
local rpm = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local charge = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local rc = tonumber(redis.call('GET', KEYS[1]) or '0')
local rp = tonumber(redis.call('GET', KEYS[2]) or '0')
local tc = tonumber(redis.call('GET', KEYS[3]) or '0')
local tp = tonumber(redis.call('GET', KEYS[4]) or '0')
if rpm > 0 and rp * w + rc + 1 > rpm then return {0, 1, rp, rc} end
if tpm > 0 and tp * w + tc + 1 > tpm then return {0, 2, tp, tc} end
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ttl)
if charge ~= 0 then
  redis.call('INCRBY', KEYS[3], charge)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
return {1, 0, 0, 0}
`;

const keyOf = (keyId: string, what: 'req' | 'tok', index: number): string =>
  // The hash tag keeps one key's counters in one Redis Cluster slot, as a multi-key script needs.
  `modelserve:ratelimit:{${keyId}}:${what}:${index}`;

export class RateLimiter {
  constructor(
    private readonly redis: Redis | undefined,
    private readonly onError: (op: string, err: unknown) => void,
    private readonly now: () => number = Date.now,
  ) {
    redis?.defineCommand('modelserveRateLimit', { numberOfKeys: 4, lua: CHECK_AND_CHARGE });
  }

  /** Checks both limits and, when allowed, charges one request and `promptTokens` (the estimate). */
  async admit(keyId: string, limits: Limits, promptTokens: number): Promise<LimitDecision> {
    const pos = windowPosition(this.now());
    if (limits.rpm <= 0 && limits.tpm <= 0) return { allowed: true, window: pos.index, charged: 0 };
    if (!this.redis) return { allowed: true, window: pos.index, charged: 0, failedOpen: true };
    try {
      const run = (this.redis as unknown as Record<string, (...a: (string | number)[]) => Promise<number[]>>)
        .modelserveRateLimit as (...a: (string | number)[]) => Promise<number[]>;
      const [ok, which, previous, current] = await run.call(
        this.redis,
        keyOf(keyId, 'req', pos.index),
        keyOf(keyId, 'req', pos.index - 1),
        keyOf(keyId, 'tok', pos.index),
        keyOf(keyId, 'tok', pos.index - 1),
        pos.previousWeight,
        limits.rpm,
        limits.tpm,
        limits.tpm > 0 ? promptTokens : 0,
        2 * WINDOW_MS,
      );
      if (ok === 1) return { allowed: true, window: pos.index, charged: limits.tpm > 0 ? promptTokens : 0 };
      const limit = which === 1 ? 'requests' : 'tokens';
      const max = which === 1 ? limits.rpm : limits.tpm;
      return {
        allowed: false,
        limit,
        retryAfterMs: retryAfterMs(Number(previous), Number(current), 1, max, pos.elapsedMs),
      };
    } catch (err) {
      this.onError('ratelimit.admit', err);
      return { allowed: true, window: pos.index, charged: 0, failedOpen: true };
    }
  }

  /** Charges the difference between the worker's token usage and what admit() charged. */
  async settle(keyId: string, limits: Limits, admitted: LimitDecision, usedTokens: number): Promise<void> {
    if (!this.redis || limits.tpm <= 0 || !admitted.allowed || admitted.failedOpen) return;
    const index = windowPosition(this.now()).index;
    // In a new window the estimate stays where it was charged; only a positive difference is added here.
    const delta =
      index === admitted.window ? usedTokens - admitted.charged : Math.max(0, usedTokens - admitted.charged);
    if (delta === 0) return;
    const key = keyOf(keyId, 'tok', index);
    try {
      await this.redis
        .multi()
        .incrby(key, delta)
        .pexpire(key, 2 * WINDOW_MS)
        .exec();
    } catch (err) {
      this.onError('ratelimit.settle', err);
    }
  }
}
