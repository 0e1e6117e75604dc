// The ready workers of one model and this gateway's outstanding requests on each. Picks a worker for a request:
// the prompt prefix's owner on the consistent-hash ring while it is under the load bound (affinity), else the least
// loaded worker, never one at its in-flight cap; a retry avoids the workers that already failed the request.
import { HashRing, hash32 } from './hashRing.js';

export type RouteReason = 'affinity' | 'least-loaded' | 'retry';

export interface Choice {
  endpoint: string;
  reason: RouteReason;
}

export interface PoolOptions {
  /** Outstanding requests this gateway sends to one worker at most; more wait in the model's queue. */
  maxInflightPerWorker: number;
  /** c of the bounded-load ring: a worker takes affinity traffic up to c times the average load. */
  loadFactor: number;
}

export class WorkerPool {
  private readonly ring = new HashRing();
  private ready: string[] = [];
  /** Outstanding requests by endpoint; kept for removed endpoints until their last request ends. */
  private readonly inflight = new Map<string, number>();

  constructor(readonly options: PoolOptions) {}

  /** Replaces the set of ready endpoints ("host:port"). */
  setEndpoints(endpoints: readonly string[]): void {
    this.ready = [...new Set(endpoints)].sort();
    this.ring.setMembers(this.ready);
  }

  get endpoints(): readonly string[] {
    return this.ready;
  }

  load(endpoint: string): number {
    return this.inflight.get(endpoint) ?? 0;
  }

  totalInflight(): number {
    let total = 0;
    for (const n of this.inflight.values()) total += n;
    return total;
  }

  private hasRoom = (endpoint: string): boolean => this.load(endpoint) < this.options.maxInflightPerWorker;

  /**
   * A worker with room, or undefined when every ready worker is at its cap (or there is none). `avoid` lists workers
   * that failed this request; they are skipped while another ready worker exists.
   */
  pick(prefixKey: string | undefined, avoid: ReadonlySet<string> = new Set()): Choice | undefined {
    const others = this.ready.filter((e) => !avoid.has(e));
    const candidates = (others.length > 0 ? others : this.ready).filter(this.hasRoom);
    if (candidates.length === 0) return undefined;
    if (avoid.size > 0) return { endpoint: this.leastLoaded(candidates), reason: 'retry' };
    if (prefixKey !== undefined && prefixKey !== '') {
      const load = (e: string) => this.load(e);
      const chosen = this.ring.pick(hash32(prefixKey), load, this.options.loadFactor, this.hasRoom);
      if (chosen !== undefined && chosen === this.ring.owner(hash32(prefixKey))) {
        return { endpoint: chosen, reason: 'affinity' };
      }
    }
    return { endpoint: this.leastLoaded(candidates), reason: 'least-loaded' };
  }

  private leastLoaded(candidates: string[]): string {
    let best = candidates[0] as string;
    for (const e of candidates) if (this.load(e) < this.load(best)) best = e;
    return best;
  }

  acquire(endpoint: string): void {
    this.inflight.set(endpoint, this.load(endpoint) + 1);
  }

  release(endpoint: string): void {
    const n = this.load(endpoint) - 1;
    if (n > 0) this.inflight.set(endpoint, n);
    else this.inflight.delete(endpoint);
  }
}
