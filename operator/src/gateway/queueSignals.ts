// Publishes this gateway's per-model queue lengths, with the queued requests' estimated prompt tokens, to Redis for
// the autoscaler (contract:
// ../autoscaler/signals-keys.ts), on every change and at least every QUEUE_REFRESH_MS, and a wake message the moment a
// request starts waiting for a model that has no ready worker. Redis being away costs nothing but a logged warning:
// the next refresh after it comes back rewrites every length.
import type { Redis } from 'ioredis';
import { QUEUE_REFRESH_MS, WAKE_CHANNEL, encodeWake, writeQueueLength } from '../autoscaler/signals-keys.js';
import * as metrics from './metrics.js';

export interface QueueRef {
  /** Namespace of the model's ModelDeployment. */
  namespace: string;
  model: string;
}

export class QueueSignals {
  private readonly lengths = new Map<string, { ref: QueueRef; waiting: number; promptTokens?: number }>();
  private readonly dirty = new Set<string>();
  private flushScheduled = false;
  private timer?: NodeJS.Timeout;
  private readonly lastWake = new Map<string, number>();

  constructor(
    private readonly redis: Redis | undefined,
    private readonly gatewayId: string,
    private readonly onError: (op: string, err: unknown) => void,
    private readonly refreshMs = QUEUE_REFRESH_MS / 2,
  ) {}

  start(): void {
    this.timer = setInterval(() => {
      for (const k of this.lengths.keys()) this.dirty.add(k);
      void this.flush();
    }, this.refreshMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /**
   * Records a model's queue length and its requests' estimated prompt tokens (left out: not written, which the
   * autoscaler reads as unknown); written to Redis at once (coalesced within one tick).
   */
  set(ref: QueueRef, waiting: number, promptTokens?: number): void {
    const k = `${ref.namespace}/${ref.model}`;
    this.lengths.set(k, { ref, waiting, ...(promptTokens !== undefined ? { promptTokens } : {}) });
    this.dirty.add(k);
    metrics.queueLength.set({ model: ref.model }, waiting);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => {
        this.flushScheduled = false;
        void this.flush();
      });
    }
  }

  /**
   * Asks the autoscaler to scale the model up now (it has waiting requests and no ready worker). At most one message
   * per model per `minIntervalMs`, so a burst of arrivals sends one.
   */
  wake(ref: QueueRef, waiting: number, minIntervalMs = 250): void {
    const k = `${ref.namespace}/${ref.model}`;
    const now = Date.now();
    if (now - (this.lastWake.get(k) ?? 0) < minIntervalMs) return;
    this.lastWake.set(k, now);
    if (!this.redis) return;
    metrics.wakeMessages.inc({ model: ref.model });
    this.redis
      .publish(WAKE_CHANNEL, encodeWake({ namespace: ref.namespace, model: ref.model, waiting, at: now }))
      .catch((err: unknown) => {
        // Let the next waiting request try again rather than wait out the interval.
        this.lastWake.delete(k);
        this.onError('wake', err);
      });
  }

  private async flush(): Promise<void> {
    if (!this.redis || this.dirty.size === 0) return;
    const keys = [...this.dirty];
    this.dirty.clear();
    const redis = this.redis;
    await Promise.all(
      keys.map(async (k) => {
        const entry = this.lengths.get(k);
        if (!entry) return;
        try {
          await writeQueueLength(redis, {
            ...entry.ref,
            gatewayId: this.gatewayId,
            waiting: entry.waiting,
            ...(entry.promptTokens !== undefined ? { promptTokens: entry.promptTokens } : {}),
          });
          // An idle model need not be refreshed forever: once a zero is written, stop carrying it.
          if (entry.waiting === 0 && this.lengths.get(k) === entry) this.lengths.delete(k);
        } catch (err) {
          this.onError('queue.publish', err);
        }
      }),
    );
  }
}
