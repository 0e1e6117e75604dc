// Admission: at most `maxRunning` sequences are inside the engine at once (its batch size); up to `maxWaiting` more
// wait here in arrival order. A request that would overflow the waiting queue is refused whole (429) instead of
// queueing part of it. Waiting here rather than in the engine lets the worker measure queue time exactly and lets a
// disconnected client leave the queue without touching the engine.
export interface Slot {
  release(): void;
}

interface Waiter {
  resolve(slot: Slot): void;
  reject(err: Error): void;
}

export class AdmissionClosedError extends Error {}

export class Admission {
  private running = 0;
  private readonly queue: Waiter[] = [];

  constructor(
    readonly maxRunning: number,
    readonly maxWaiting: number,
  ) {}

  get runningCount(): number {
    return this.running;
  }

  get waitingCount(): number {
    return this.queue.length;
  }

  /** Whether `count` more sequences can be taken now (running or queued) without overflowing the queue. */
  canAdmit(count: number): boolean {
    const free = Math.max(0, this.maxRunning - this.running);
    return this.queue.length + Math.max(0, count - free) <= this.maxWaiting;
  }

  /** A slot now if one is free and nobody is queued before us, else undefined (then wait with acquire()). */
  tryAcquire(): Slot | undefined {
    if (this.running >= this.maxRunning || this.queue.length > 0) return undefined;
    this.running++;
    return this.makeSlot();
  }

  /** Resolves with a slot when one is free. `signal` aborts a waiting acquisition (the client went away). */
  acquire(signal?: AbortSignal): Promise<Slot> {
    if (signal?.aborted) return Promise.reject(new AdmissionClosedError('aborted'));
    const slot = this.tryAcquire();
    if (slot) return Promise.resolve(slot);
    return new Promise<Slot>((resolve, reject) => {
      const waiter: Waiter = { resolve, reject };
      this.queue.push(waiter);
      signal?.addEventListener(
        'abort',
        () => {
          const at = this.queue.indexOf(waiter);
          if (at !== -1) {
            this.queue.splice(at, 1);
            reject(new AdmissionClosedError('aborted'));
          }
        },
        { once: true },
      );
    });
  }

  private makeSlot(): Slot {
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.running--;
        const next = this.queue.shift();
        if (next) {
          this.running++;
          next.resolve(this.makeSlot());
        }
      },
    };
  }
}
