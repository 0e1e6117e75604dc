// Consistent hashing with bounded load and the worker pool built on it.
import { HashRing, hash32, loadBound } from '../src/gateway/hashRing.js';
import { WorkerPool } from '../src/gateway/workerPool.js';

const workers = (n: number, base = 0) => Array.from({ length: n }, (_, i) => `10.0.0.${base + i}:8000`);
const keys = Array.from({ length: 6_000 }, (_, i) => `system prompt #${i} / user says hello`);

test('hash32 is deterministic and spreads similar strings', () => {
  expect(hash32('abc')).toBe(hash32('abc'));
  expect(hash32('abc')).not.toBe(hash32('abd'));
  const buckets = new Array(16).fill(0);
  for (const k of keys) buckets[hash32(k) % 16]++;
  for (const b of buckets) expect(Math.abs(b - keys.length / 16)).toBeLessThan((keys.length / 16) * 0.2);
});

test('keys spread over the ring within 20% of the mean per member', () => {
  const ring = new HashRing();
  ring.setMembers(workers(8));
  const counts = new Map<string, number>();
  for (const k of keys) {
    const owner = ring.owner(hash32(k)) as string;
    counts.set(owner, (counts.get(owner) ?? 0) + 1);
  }
  expect(counts.size).toBe(8);
  for (const c of counts.values()) expect(Math.abs(c - keys.length / 8)).toBeLessThan((keys.length / 8) * 0.2);
});

test('adding a member moves only keys to it; removing one moves only its keys', () => {
  const ring = new HashRing();
  ring.setMembers(workers(8));
  const before = keys.map((k) => ring.owner(hash32(k)));
  ring.setMembers(workers(9));
  const added = workers(9)[8];
  let moved = 0;
  keys.forEach((k, i) => {
    const now = ring.owner(hash32(k));
    if (now !== before[i]) {
      moved++;
      expect(now).toBe(added);
    }
  });
  // About 1/9 of the keys move, not a reshuffle.
  expect(moved).toBeGreaterThan(keys.length / 9 / 2);
  expect(moved).toBeLessThan((keys.length / 9) * 1.5);

  const removed = workers(8)[3];
  ring.setMembers(workers(8).filter((w) => w !== removed));
  keys.forEach((k, i) => {
    if (before[i] !== removed) expect(ring.owner(hash32(k))).toBe(before[i]);
    else expect(ring.owner(hash32(k))).not.toBe(removed);
  });
});

test('member order does not change the ring', () => {
  const a = new HashRing();
  const b = new HashRing();
  a.setMembers(workers(5));
  b.setMembers([...workers(5)].reverse());
  for (const k of keys.slice(0, 1000)) expect(a.owner(hash32(k))).toBe(b.owner(hash32(k)));
});

test('walk lists every member once', () => {
  const ring = new HashRing();
  ring.setMembers(workers(6));
  expect([...ring.walk(hash32('x'))].sort()).toEqual(workers(6).sort());
});

test('bounded load: one hot key spreads, and no member ever exceeds ceil(c * (total + 1) / n)', () => {
  const ring = new HashRing();
  const members = workers(5);
  ring.setMembers(members);
  const load = new Map(members.map((m) => [m, 0]));
  const c = 1.25;
  for (let i = 0; i < 1000; i++) {
    const total = [...load.values()].reduce((a, b) => a + b, 0);
    const chosen = ring.pick(hash32('the same system prompt'), (m) => load.get(m) ?? 0, c) as string;
    expect(chosen).toBeDefined();
    load.set(chosen, (load.get(chosen) as number) + 1);
    expect(load.get(chosen)).toBeLessThanOrEqual(loadBound(total, members.length, c));
  }
  const max = Math.max(...load.values());
  expect(max).toBeLessThanOrEqual(Math.ceil((c * 1000) / 5));
  // With every member capped at 1.25 × the mean, the hot key needs at least ceil(5 / 1.25) = 4 members.
  expect([...load.values()].filter((v) => v > 0).length).toBeGreaterThanOrEqual(4);
});

test('loadBound', () => {
  expect(loadBound(0, 4, 1.25)).toBe(1);
  expect(loadBound(99, 4, 1.25)).toBe(32);
  expect(loadBound(10, 0, 1.25)).toBe(0);
});

describe('WorkerPool', () => {
  const pool = () => {
    const p = new WorkerPool({ maxInflightPerWorker: 4, loadFactor: 1.25 });
    p.setEndpoints(workers(3));
    return p;
  };

  test('the same prefix goes to the same worker while it is lightly loaded (affinity)', () => {
    const p = pool();
    const first = p.pick('sys: you are helpful');
    expect(first?.reason).toBe('affinity');
    p.acquire(first!.endpoint);
    p.release(first!.endpoint);
    expect(p.pick('sys: you are helpful')).toEqual(first);
  });

  test('an overloaded affinity target spills to the least loaded worker', () => {
    const p = pool();
    const owner = p.pick('prefix')!.endpoint;
    p.acquire(owner);
    p.acquire(owner);
    const next = p.pick('prefix')!;
    expect(next.reason).toBe('least-loaded');
    expect(next.endpoint).not.toBe(owner);
  });

  test('no prefix: least loaded', () => {
    const p = pool();
    const [a, b] = workers(3);
    p.acquire(a!);
    p.acquire(b!);
    expect(p.pick(undefined)).toEqual({ endpoint: workers(3)[2], reason: 'least-loaded' });
  });

  test('the per-worker cap is never exceeded; a full pool picks nothing', () => {
    const p = pool();
    for (let i = 0; i < 12; i++) {
      const c = p.pick(`k${i % 2}`);
      expect(c).toBeDefined();
      p.acquire(c!.endpoint);
    }
    for (const w of workers(3)) expect(p.load(w)).toBe(4);
    expect(p.pick('k0')).toBeUndefined();
    p.release(workers(3)[1]!);
    expect(p.pick('k0')?.endpoint).toBe(workers(3)[1]);
  });

  test('a retry avoids failed workers while another exists', () => {
    const p = pool();
    const avoid = new Set(workers(3).slice(0, 2));
    expect(p.pick('x', avoid)).toEqual({ endpoint: workers(3)[2], reason: 'retry' });
    p.setEndpoints(workers(3).slice(0, 1));
    expect(p.pick('x', avoid)).toEqual({ endpoint: workers(3)[0], reason: 'retry' });
  });

  test('no endpoints: nothing to pick; removed endpoints keep their counts until released', () => {
    const p = pool();
    const w = workers(3)[0]!;
    p.acquire(w);
    p.setEndpoints([]);
    expect(p.pick('x')).toBeUndefined();
    expect(p.totalInflight()).toBe(1);
    p.release(w);
    expect(p.totalInflight()).toBe(0);
  });
});
