import { WorkQueue } from '../src/controller/workqueue.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('WorkQueue', () => {
  it('dedupes keys waiting in the queue', async () => {
    const q = new WorkQueue();
    q.add('a');
    q.add('b');
    q.add('a');
    expect(q.depth).toBe(2);
    expect(await q.get()).toBe('a');
    expect(await q.get()).toBe('b');
    q.shutDown();
  });

  it('holds a key added while in flight until done(), then hands it out once more', async () => {
    const q = new WorkQueue();
    q.add('a');
    const k = await q.get();
    q.add('a');
    q.add('a');
    expect(q.depth).toBe(0); // not handed to a second worker while the first holds it
    q.done(k!);
    expect(q.depth).toBe(1);
    expect(await q.get()).toBe('a');
    q.done('a');
    expect(q.depth).toBe(0);
    q.shutDown();
  });

  it('backs off exponentially per key until forget()', () => {
    const q = new WorkQueue({ baseBackoffMs: 10, maxBackoffMs: 50 });
    expect([1, 2, 3, 4].map(() => q.addRateLimited('a'))).toEqual([10, 20, 40, 50]);
    q.forget('a');
    expect(q.addRateLimited('a')).toBe(10);
    q.shutDown();
  });

  it('delivers delayed keys after the delay, keeping the earliest requested time', async () => {
    const q = new WorkQueue();
    q.addAfter('a', 500);
    q.addAfter('a', 20);
    expect(q.depth).toBe(0);
    const got = await Promise.race([q.get(), sleep(400).then(() => 'late')]);
    expect(got).toBe('a');
    q.shutDown();
  });

  it('wakes waiting workers on add and releases them on shutdown', async () => {
    const q = new WorkQueue();
    const waiting = q.get();
    q.add('x');
    expect(await waiting).toBe('x');
    const idle = q.get();
    q.shutDown();
    expect(await idle).toBeUndefined();
  });
});
