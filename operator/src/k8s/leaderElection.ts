// Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics: a candidate takes the lease only
// after it has watched the same holder record stay unchanged for leaseDuration on its OWN clock (no trust in other
// machines' clocks); the leader renews every retryPeriod and steps down if it could not renew for renewDeadline; a
// leader that shuts down cleanly releases the lease so the next candidate takes over at its next retry.
import { resources, collectionPath, objectPath } from './resources.js';
import { isConflict, isNotFound, type KubeClient } from './rest.js';

export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
  onStartedLeading: () => void;
  /** Called once when leadership is lost (renew deadline passed) or released; the process should stop reconciling. */
  onStoppedLeading: () => void;
  onNewLeader?: (identity: string) => void;
  log?: (msg: string, fields?: Record<string, unknown>) => void;
}

interface LeaseSpec {
  holderIdentity?: string | null;
  leaseDurationSeconds?: number;
  acquireTime?: string | null;
  renewTime?: string | null;
  leaseTransitions?: number;
}
interface Lease {
  apiVersion: 'coordination.k8s.io/v1';
  kind: 'Lease';
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec: LeaseSpec;
}

/** RFC 3339 with microseconds, the MicroTime format Lease fields use. */
export const microTime = (d: Date): string => d.toISOString().replace(/Z$/, '000Z');

/** Whether a candidate may take the lease: free, released, or unchanged for a lease duration on our clock. */
export function canAcquire(
  spec: LeaseSpec,
  identity: string,
  observedSinceMs: number,
  nowMs: number,
  leaseDurationMs: number,
): boolean {
  if (!spec.holderIdentity || spec.holderIdentity === identity) return true;
  return nowMs - observedSinceMs > leaseDurationMs;
}

export class LeaderElector {
  private leading = false;
  private stopped = false;
  private observed?: { key: string; at: number };
  private lastRenew = 0;
  private timer?: NodeJS.Timeout;
  private currentLeader = '';

  constructor(
    private readonly client: KubeClient,
    private readonly o: LeaderElectionOptions,
  ) {}

  isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    void this.tick();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.tick(), this.o.retryPeriodMs);
  }

  private async tick(): Promise<void> {
    try {
      await this.tryAcquireOrRenew();
    } catch (err) {
      this.o.log?.('lease update failed', { error: String(err) });
    }
    if (this.leading && Date.now() - this.lastRenew > this.o.renewDeadlineMs) {
      this.o.log?.('lost leadership: could not renew within the renew deadline', { identity: this.o.identity });
      this.leading = false;
      this.o.onStoppedLeading();
    }
    this.schedule();
  }

  private path(): string {
    return objectPath(resources.leases, this.o.namespace, this.o.name);
  }

  private async tryAcquireOrRenew(): Promise<void> {
    const now = new Date();
    let lease: Lease | undefined;
    try {
      lease = await this.client.request<Lease>('GET', this.path(), { timeoutMs: this.o.retryPeriodMs * 2 });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    const mine: LeaseSpec = {
      holderIdentity: this.o.identity,
      leaseDurationSeconds: Math.ceil(this.o.leaseDurationMs / 1000),
      acquireTime: microTime(now),
      renewTime: microTime(now),
      leaseTransitions: 0,
    };
    if (!lease) {
      try {
        await this.client.request('POST', collectionPath(resources.leases, this.o.namespace), {
          body: { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: this.o.name }, spec: mine },
        });
      } catch (err) {
        if (isConflict(err)) return; // someone else created it first
        throw err;
      }
      return this.becameLeader();
    }

    const spec = lease.spec ?? {};
    const recordKey = `${spec.holderIdentity ?? ''}|${spec.renewTime ?? ''}|${spec.leaseTransitions ?? 0}`;
    if (this.observed?.key !== recordKey) this.observed = { key: recordKey, at: now.getTime() };
    if (spec.holderIdentity && spec.holderIdentity !== this.currentLeader) {
      this.currentLeader = spec.holderIdentity;
      this.o.onNewLeader?.(spec.holderIdentity);
    }
    if (!canAcquire(spec, this.o.identity, this.observed.at, now.getTime(), this.o.leaseDurationMs)) return;

    const renewing = spec.holderIdentity === this.o.identity;
    const next: LeaseSpec = renewing
      ? { ...spec, renewTime: microTime(now), leaseDurationSeconds: mine.leaseDurationSeconds }
      : { ...mine, leaseTransitions: (spec.leaseTransitions ?? 0) + 1 };
    try {
      // A full update carrying resourceVersion: if anyone else wrote the lease since our GET, this fails with 409.
      await this.client.request('PUT', this.path(), {
        body: { ...lease, spec: next },
        timeoutMs: this.o.retryPeriodMs * 2,
      });
    } catch (err) {
      if (isConflict(err)) return;
      throw err;
    }
    if (!renewing) this.o.log?.('acquired the lease', { previousHolder: spec.holderIdentity ?? null });
    this.becameLeader();
  }

  private becameLeader(): void {
    this.lastRenew = Date.now();
    if (this.leading) return;
    this.leading = true;
    this.currentLeader = this.o.identity;
    this.o.onNewLeader?.(this.o.identity);
    this.o.onStartedLeading();
  }

  /** Stop campaigning; when leading, hand the lease back so a standby takes over without waiting it out. */
  async release(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (!this.leading) return;
    this.leading = false;
    try {
      const lease = await this.client.request<Lease>('GET', this.path(), { timeoutMs: 2000 });
      if (lease.spec?.holderIdentity !== this.o.identity) return;
      const now = microTime(new Date());
      await this.client.request('PUT', this.path(), {
        body: { ...lease, spec: { ...lease.spec, holderIdentity: null, leaseDurationSeconds: 1, renewTime: now } },
        timeoutMs: 2000,
      });
      this.o.log?.('released the lease');
    } catch (err) {
      this.o.log?.('could not release the lease', { error: String(err) });
    }
  }
}
