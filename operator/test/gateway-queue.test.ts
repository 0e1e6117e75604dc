// The per-model queue: bound, deadline, FIFO, cancellation, and hand-over when workers free up or appear.
import { ModelQueue, QueueAbortedError, QueueFullError, QueueTimeoutError } from '../src/gateway/modelQueue.js';
import { WorkerPool } from '../src/gateway/workerPool.js';

function setup(opts: { endpoints?: string[]; cap?: number; maxLength?: number } = {}) {
  const pool = new WorkerPool({ maxInflightPerWorker: opts.cap ?? 1, loadFactor: 1.25 });
  pool.setEndpoints(opts.endpoints ?? []);
  const lengths: number[] = [];
  const queue = new ModelQueue('m', pool, { maxLength: opts.maxLength ?? 3 }, (_m, n) => lengths.push(n));
  return { pool, queue, lengths };
}

test('a worker with room is taken at once, without queueing', async () => {
  const { queue, lengths } = setup({ endpoints: ['a:1'] });
  const lease = await queue.acquire('p', { timeoutMs: 1000 });
  expect(lease.endpoint).toBe('a:1');
  expect(lease.queuedMs).toBe(0);
  expect(lengths).toEqual([]);
  lease.release();
});

test('with no worker, requests wait and are served in arrival order when workers appear', async () => {
  const { pool, queue, lengths } = setup();
  const order: number[] = [];
  const waits = [0, 1, 2].map((i) =>
    queue.acquire(`p${i}`, { timeoutMs: 10_000 }).then((lease) => {
      order.push(i);
      return lease;
    }),
  );
  expect(queue.length).toBe(3);
  pool.setEndpoints(['a:1']);
  queue.dispatch();
  const first = await waits[0]!;
  expect(order).toEqual([0]);
  expect(queue.length).toBe(2);
  first.release(); // frees the worker: the next in line gets it
  const second = await waits[1]!;
  expect(order).toEqual([0, 1]);
  second.release();
  (await waits[2]!).release();
  expect(order).toEqual([0, 1, 2]);
  expect(lengths).toEqual([1, 2, 3, 2, 1, 0]);
});

test('a newcomer does not overtake waiting requests', async () => {
  const { pool, queue } = setup();
  const waiting = queue.acquire('p', { timeoutMs: 10_000 });
  pool.setEndpoints(['a:1']);
  // No dispatch yet: the worker has room, but the earlier request must get it first.
  const late = queue.acquire('q', { timeoutMs: 10_000 });
  expect(queue.length).toBe(2);
  queue.dispatch();
  const lease = await waiting;
  lease.release();
  (await late).release();
});

test('past the bound a request is refused at once', async () => {
  const { queue } = setup({ maxLength: 2 });
  const a = queue.acquire('p', { timeoutMs: 10_000 });
  const b = queue.acquire('p', { timeoutMs: 10_000 });
  await expect(queue.acquire('p', { timeoutMs: 10_000 })).rejects.toBeInstanceOf(QueueFullError);
  queue.rejectAll(() => new Error('done'));
  await expect(a).rejects.toThrow('done');
  await expect(b).rejects.toThrow('done');
  expect(queue.length).toBe(0);
});

test('a request whose deadline passes leaves the queue with QueueTimeoutError', async () => {
  const { queue, lengths } = setup();
  await expect(queue.acquire('p', { timeoutMs: 20 })).rejects.toBeInstanceOf(QueueTimeoutError);
  expect(queue.length).toBe(0);
  expect(lengths).toEqual([1, 0]);
  await expect(queue.acquire('p', { timeoutMs: 0 })).rejects.toBeInstanceOf(QueueTimeoutError);
});

test('a client that disconnects leaves the queue; the others keep their places', async () => {
  const { pool, queue } = setup();
  const gone = new AbortController();
  const a = queue.acquire('p', { timeoutMs: 10_000, signal: gone.signal });
  const b = queue.acquire('p', { timeoutMs: 10_000 });
  gone.abort();
  await expect(a).rejects.toBeInstanceOf(QueueAbortedError);
  expect(queue.length).toBe(1);
  pool.setEndpoints(['a:1']);
  queue.dispatch();
  const lease = await b;
  expect(lease.endpoint).toBe('a:1');
  lease.release();
  const already = new AbortController();
  already.abort();
  await expect(queue.acquire('p', { timeoutMs: 10_000, signal: already.signal })).rejects.toBeInstanceOf(
    QueueAbortedError,
  );
});

test('a saturated pool queues, and a release hands the worker on; a lease releases once', async () => {
  const { pool, queue } = setup({ endpoints: ['a:1'], cap: 1 });
  const first = await queue.acquire('p', { timeoutMs: 10_000 });
  const second = queue.acquire('p', { timeoutMs: 10_000 });
  expect(queue.length).toBe(1);
  first.release();
  first.release();
  const lease = await second;
  expect(pool.load('a:1')).toBe(1);
  expect(lease.queuedMs).toBeGreaterThanOrEqual(0);
  lease.release();
  expect(pool.load('a:1')).toBe(0);
});
