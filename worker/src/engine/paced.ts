// Development only: an Engine that hands out each generated token at most once every `delayMs`, so that a tiny CPU
// checkpoint (thousands of tokens/s) streams like a large model on a busy GPU. The end-to-end tests use it for
// minutes-long streams (scale-down during streams, operator failover mid-burst). Enabled by the worker's
// MODELSERVE_DEV_TOKEN_DELAY_MS; never set in production manifests.
//
// The wrapped engine still generates at full speed; tokens wait here. A request counts as running until its last
// token is handed out (stats().running), as it would on an engine that really decodes at that pace, so the worker's
// /metrics and the autoscaler see the streams that are still open.
import type { Engine, EngineStats, EventHandler, GenerationRequest, TokenEvent } from './types.js';

interface Pending {
  events: TokenEvent[];
  onEvents: EventHandler;
  timer?: NodeJS.Timeout;
}

export class PacedEngine implements Engine {
  /** Requests whose events are not all delivered yet. */
  private readonly pending = new Map<number, Pending>();

  constructor(
    private readonly inner: Engine,
    private readonly delayMs: number,
  ) {}

  get info(): Engine['info'] {
    return this.inner.info;
  }

  get tokenizer(): Engine['tokenizer'] {
    return this.inner.tokenizer;
  }

  get options(): Engine['options'] {
    return this.inner.options;
  }

  submit(request: GenerationRequest, onEvents: EventHandler): number {
    const p: Pending = { events: [], onEvents };
    const id = this.inner.submit(request, (events) => {
      if (!this.pending.has(id)) return; // cancelled or closed here already
      p.events.push(...events);
      if (!p.timer) this.deliver(id, p);
    });
    this.pending.set(id, p);
    return id;
  }

  /** Hands out one token (with the finishing event when it is the last), then waits delayMs before the next. */
  private deliver(id: number, p: Pending): void {
    const next = p.events.shift();
    if (!next) {
      p.timer = undefined;
      return;
    }
    const batch = [next];
    // A finish-only event (token -1) right behind this token goes with it: the request must not wait a turn to end.
    const finishOnly = p.events[0];
    if (next.token >= 0 && finishOnly?.token === -1) {
      batch.push(finishOnly);
      p.events.shift();
    }
    const last = batch.some((e) => e.finishReason !== undefined);
    if (last) this.pending.delete(id);
    p.onEvents(batch);
    p.timer = last ? undefined : setTimeout(() => this.deliver(id, p), this.delayMs);
  }

  cancel(id: number): void {
    const p = this.pending.get(id);
    if (p) {
      clearTimeout(p.timer);
      this.pending.delete(id);
    }
    this.inner.cancel(id);
  }

  stats(): EngineStats {
    const s = this.inner.stats();
    return { ...s, running: Math.max(s.running, this.pending.size) };
  }

  evalLogits(tokens: number[]): Float32Array {
    return this.inner.evalLogits(tokens);
  }

  async close(): Promise<void> {
    // Requests still being handed out end as cancelled, as the inner engine ends the ones it still runs.
    const open = [...this.pending.values()];
    this.pending.clear();
    for (const p of open) {
      clearTimeout(p.timer);
      p.onEvents([{ token: -1, finishReason: 'cancelled' }]);
    }
    await this.inner.close();
  }
}
