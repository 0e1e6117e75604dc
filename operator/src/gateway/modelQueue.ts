// The per-model admission queue. A request takes a worker at once when one has room; otherwise it waits here, in
// arrival order, until a worker frees up or appears (a scale-up, a scale from zero), until its deadline passes, or
// until its client goes away. The queue is bounded: past the bound a request is refused at once (429).
import { WorkerPool, type Choice } from './workerPool.js';

export class QueueFullError extends Error {
  constructor(readonly model: string) {
    super(`queue of model ${model} is full`);
    this.name = 'QueueFullError';
  }
}

export class QueueTimeoutError extends Error {
  constructor(
    readonly model: string,
    readonly waitedMs: number,
  ) {
    super(`no worker of model ${model} became available within ${Math.round(waitedMs)} ms`);
    this.name = 'QueueTimeoutError';
  }
}

export class QueueAbortedError extends Error {
  constructor() {
    super('the client went away while queued');
    this.name = 'QueueAbortedError';
  }
}

/** A worker held for one request: release it exactly once when the request ends. */
export interface Lease extends Choice {
  /** Milliseconds spent waiting in the queue (0 when a worker had room at once). */
  queuedMs: number;
  release(): void;
}

interface Waiter {
  prefixKey: string | undefined;
  /** Estimated prompt tokens, counted in queuedPromptTokens while it waits. */
  promptTokens: number;
  avoid: ReadonlySet<string>;
  enqueuedAt: number;
  resolve(lease: Lease): void;
  reject(err: Error): void;
  cleanup(): void;
}

export interface QueueOptions {
  /** Requests that may wait at once; more are refused. */
  maxLength: number;
}

export class ModelQueue {
  private readonly waiters: Waiter[] = [];
  private waitingTokens = 0;

  constructor(
    readonly model: string,
    readonly pool: WorkerPool,
    readonly options: QueueOptions,
    /** Called whenever the number of waiting requests changes, with their estimated prompt tokens. */
    private readonly onLengthChange: (model: string, length: number, promptTokens: number) => void = () => {},
  ) {}

  get length(): number {
    return this.waiters.length;
  }

  /** Estimated prompt tokens of the waiting requests (the autoscaler's token view). */
  get queuedPromptTokens(): number {
    return this.waitingTokens;
  }

  /**
   * A worker for one request. Waits at most `timeoutMs`; `signal` (the client's connection) cancels the wait. `avoid`
   * lists workers that already failed this request (a retry). `promptTokens` (the prompt's estimated tokens) is asked
   * for only when the request has to wait.
   */
  acquire(
    prefixKey: string | undefined,
    opts: { timeoutMs: number; signal?: AbortSignal; avoid?: ReadonlySet<string>; promptTokens?: () => number },
  ): Promise<Lease> {
    const avoid = opts.avoid ?? new Set<string>();
    if (opts.signal?.aborted) return Promise.reject(new QueueAbortedError());
    // Nobody waits ahead of us: take a worker now if one has room. (Waiting requests go first otherwise: FIFO.)
    if (this.waiters.length === 0) {
      const choice = this.pool.pick(prefixKey, avoid);
      if (choice) return Promise.resolve(this.lease(choice, 0));
    }
    if (this.waiters.length >= this.options.maxLength) return Promise.reject(new QueueFullError(this.model));
    if (opts.timeoutMs <= 0) return Promise.reject(new QueueTimeoutError(this.model, 0));
    return new Promise<Lease>((resolve, reject) => {
      const enqueuedAt = performance.now();
      const onAbort = () => this.remove(waiter, new QueueAbortedError());
      const timer = setTimeout(
        () => this.remove(waiter, new QueueTimeoutError(this.model, performance.now() - enqueuedAt)),
        opts.timeoutMs,
      );
      const waiter: Waiter = {
        prefixKey,
        promptTokens: Math.max(0, opts.promptTokens?.() ?? 0),
        avoid,
        enqueuedAt,
        resolve,
        reject,
        cleanup: () => {
          clearTimeout(timer);
          opts.signal?.removeEventListener('abort', onAbort);
        },
      };
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
      this.waitingTokens += waiter.promptTokens;
      this.changed();
    });
  }

  private changed(): void {
    this.onLengthChange(this.model, this.waiters.length, this.waitingTokens);
  }

  private remove(waiter: Waiter, err: Error): void {
    const at = this.waiters.indexOf(waiter);
    if (at === -1) return;
    this.waiters.splice(at, 1);
    this.waitingTokens -= waiter.promptTokens;
    waiter.cleanup();
    waiter.reject(err);
    this.changed();
  }

  private lease(choice: Choice, queuedMs: number): Lease {
    this.pool.acquire(choice.endpoint);
    let released = false;
    return {
      ...choice,
      queuedMs,
      release: () => {
        if (released) return;
        released = true;
        this.pool.release(choice.endpoint);
        this.dispatch();
      },
    };
  }

  /** Hands freed or new workers to waiting requests, oldest first. Call after the pool's endpoints change. */
  dispatch(): void {
    let changed = false;
    while (this.waiters.length > 0) {
      const head = this.waiters[0] as Waiter;
      const choice = this.pool.pick(head.prefixKey, head.avoid);
      if (!choice) break;
      this.waiters.shift();
      this.waitingTokens -= head.promptTokens;
      head.cleanup();
      changed = true;
      head.resolve(this.lease(choice, performance.now() - head.enqueuedAt));
    }
    if (changed) this.changed();
  }

  /** Refuses every waiting request with `err` (shutdown, model deleted). */
  rejectAll(err: () => Error): void {
    const all = this.waiters.splice(0);
    this.waitingTokens = 0;
    for (const w of all) {
      w.cleanup();
      w.reject(err());
    }
    if (all.length > 0) this.changed();
  }
}
