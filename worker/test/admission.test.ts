import { Admission, AdmissionClosedError } from '../src/admission.js';

describe('Admission', () => {
  it('runs up to maxRunning, queues up to maxWaiting in order, refuses past that', async () => {
    const a = new Admission(2, 2);
    const s1 = await a.acquire();
    await a.acquire();
    expect(a.canAdmit(2)).toBe(true);
    const order: number[] = [];
    const w1 = a.acquire().then((s) => (order.push(1), s));
    const w2 = a.acquire().then((s) => (order.push(2), s));
    expect(a.waitingCount).toBe(2);
    expect(a.canAdmit(1)).toBe(false);
    s1.release();
    s1.release(); // idempotent
    (await w1).release();
    await w2;
    expect(order).toEqual([1, 2]);
    expect(a.runningCount).toBe(2);
  });

  it('removes an aborted waiter from the queue', async () => {
    const a = new Admission(1, 4);
    await a.acquire();
    const abort = new AbortController();
    const waiting = a.acquire(abort.signal);
    abort.abort();
    await expect(waiting).rejects.toBeInstanceOf(AdmissionClosedError);
    expect(a.waitingCount).toBe(0);
  });

  it('counts a multi-sequence request against free slots first', () => {
    const a = new Admission(4, 1);
    expect(a.canAdmit(5)).toBe(true);
    expect(a.canAdmit(6)).toBe(false);
  });
});
