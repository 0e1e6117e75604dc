// An informer: list, then watch from the list's resourceVersion, keeping a cache keyed namespace/name. A 410 Gone
// (resourceVersion compacted away) triggers a fresh list whose differences against the cache are delivered as
// add/update/delete, so handlers never miss a deletion. Other failures back off and re-watch. A periodic resync
// re-delivers every cached object so that level-based reconcilers repair anything a lost event left behind.
// Controllers write what the API server answered back into the cache (remember()) so that their next pass sees their
// own writes before the watch echoes them; a tombstone per deleted key keeps such a late answer from bringing back an
// object the watch has already deleted (it would stay in the cache, wanted by nobody and never deleted again).
import type { KubernetesObject } from '@kubernetes/client-node';
import { collectionPath, type Resource } from './resources.js';
import { isGone, type KubeClient, type WatchEvent } from './rest.js';

export type InformerEvent = 'add' | 'update' | 'delete' | 'resync';
export type InformerHandler<T> = (event: InformerEvent, obj: T, old?: T) => void;

export interface InformerOptions {
  namespace?: string;
  labelSelector?: string;
  resyncMs: number;
  /** Called when a list (initial or after 410 Gone) happens: for metrics and logs. */
  onRelist?: (reason: 'initial' | 'gone' | 'error') => void;
  onError?: (err: unknown) => void;
}

export const objectKey = (o: KubernetesObject): string => `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;

/** resourceVersions are etcd revisions: opaque to clients by contract, integers from every API server we run on. */
const revision = (o: KubernetesObject | undefined): number => Number(o?.metadata?.resourceVersion ?? 0) || 0;

/** Deleted keys remembered at most (oldest forgotten first): far more than the deletions in flight at once. */
const MAX_TOMBSTONES = 4096;

/** Differences between the cache and a fresh list, as the events a watch would have delivered. */
export function diffList<T extends KubernetesObject>(
  cache: Map<string, T>,
  items: T[],
): { type: 'add' | 'update' | 'delete'; obj: T; old?: T }[] {
  const out: { type: 'add' | 'update' | 'delete'; obj: T; old?: T }[] = [];
  const seen = new Set<string>();
  for (const obj of items) {
    const k = objectKey(obj);
    seen.add(k);
    const old = cache.get(k);
    if (!old) out.push({ type: 'add', obj });
    else if (old.metadata?.resourceVersion !== obj.metadata?.resourceVersion) out.push({ type: 'update', obj, old });
  }
  for (const [k, old] of cache) if (!seen.has(k)) out.push({ type: 'delete', obj: old });
  return out;
}

export class Informer<T extends KubernetesObject> {
  readonly cache = new Map<string, T>();
  /** key → revision of its deletion, until the watch or a list adds the key again. */
  private readonly tombstones = new Map<string, number>();
  private readonly handlers: InformerHandler<T>[] = [];
  private readonly abort = new AbortController();
  private resourceVersion = '';
  private synced = false;
  private syncedWaiters: (() => void)[] = [];
  private resyncTimer?: NodeJS.Timeout;
  private loop?: Promise<void>;

  constructor(
    private readonly client: KubeClient,
    readonly resource: Resource,
    private readonly options: InformerOptions,
  ) {}

  on(handler: InformerHandler<T>): void {
    this.handlers.push(handler);
  }

  get(namespace: string, name: string): T | undefined {
    return this.cache.get(`${namespace}/${name}`);
  }

  list(): T[] {
    return [...this.cache.values()];
  }

  /**
   * Puts an object the API server returned (after a create, patch or apply) into the cache, unless the cache already
   * holds a newer revision or the watch has deleted the object since that revision: a status write answered just
   * before a deletion, whose answer arrives after the DELETED event, must not resurrect the object. Returns whether
   * the cache took it. Handlers are not called (the watch event will follow).
   */
  remember(obj: T): boolean {
    const k = objectKey(obj);
    const rev = revision(obj);
    const deletedAt = this.tombstones.get(k);
    if (deletedAt !== undefined && rev <= deletedAt) return false;
    const cached = this.cache.get(k);
    if (cached && revision(cached) > rev) return false;
    this.cache.set(k, obj);
    return true;
  }

  private bury(k: string, obj: KubernetesObject): void {
    this.tombstones.delete(k);
    this.tombstones.set(k, revision(obj));
    if (this.tombstones.size > MAX_TOMBSTONES) this.tombstones.delete(this.tombstones.keys().next().value as string);
  }

  hasSynced(): boolean {
    return this.synced;
  }

  waitForSync(): Promise<void> {
    if (this.synced) return Promise.resolve();
    return new Promise((resolve) => this.syncedWaiters.push(resolve));
  }

  start(): void {
    this.loop = this.run();
    this.resyncTimer = setInterval(() => {
      for (const obj of this.cache.values()) this.emit('resync', obj);
    }, this.options.resyncMs);
    this.resyncTimer.unref();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    await this.loop;
  }

  private emit(event: InformerEvent, obj: T, old?: T): void {
    for (const h of this.handlers) h(event, obj, old);
  }

  private async relist(reason: 'initial' | 'gone' | 'error'): Promise<void> {
    this.options.onRelist?.(reason);
    const items: T[] = [];
    let continueToken: string | undefined;
    let resourceVersion = '';
    do {
      const page = await this.client.get<{ items: T[]; metadata: { resourceVersion: string; continue?: string } }>(
        collectionPath(this.resource, this.options.namespace),
        { labelSelector: this.options.labelSelector, limit: 500, continue: continueToken },
      );
      // List responses omit kind/apiVersion on items; fill them so handlers see whole objects.
      for (const item of page.items) {
        item.apiVersion ??= this.resource.group
          ? `${this.resource.group}/${this.resource.version}`
          : this.resource.version;
        item.kind ??= this.resource.kind;
        items.push(item);
      }
      continueToken = page.metadata.continue || undefined;
      resourceVersion = page.metadata.resourceVersion;
    } while (continueToken);
    const changes = diffList(this.cache, items);
    for (const c of changes) {
      const k = objectKey(c.obj);
      if (c.type === 'delete') {
        this.cache.delete(k);
        // The object's own revision is older than its deletion; the list's revision is not.
        this.bury(k, { metadata: { resourceVersion } });
      } else {
        this.cache.set(k, c.obj);
        this.tombstones.delete(k);
      }
    }
    this.resourceVersion = resourceVersion;
    for (const c of changes) this.emit(c.type, c.obj, c.old);
    if (!this.synced) {
      this.synced = true;
      for (const w of this.syncedWaiters) w();
      this.syncedWaiters = [];
    }
  }

  private handle(event: WatchEvent<T>): void {
    const obj = event.object;
    if (obj.metadata?.resourceVersion) this.resourceVersion = obj.metadata.resourceVersion;
    if (event.type === 'BOOKMARK') return;
    const k = objectKey(obj);
    const old = this.cache.get(k);
    if (event.type === 'DELETED') {
      this.cache.delete(k);
      this.bury(k, obj);
      this.emit('delete', obj);
    } else {
      this.cache.set(k, obj);
      this.tombstones.delete(k);
      this.emit(old ? 'update' : 'add', obj, old);
    }
  }

  /** Sleeps, but returns at once when the informer is stopped. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const signal = this.abort.signal;
      function done() {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      }
      signal.addEventListener('abort', done);
    });
  }

  private async run(): Promise<void> {
    let backoffMs = 250;
    let needList: 'initial' | 'gone' | 'error' | undefined = 'initial';
    while (!this.abort.signal.aborted) {
      try {
        if (needList) await this.relist(needList);
        needList = undefined;
        await this.client.watch<T>(
          collectionPath(this.resource, this.options.namespace),
          {
            labelSelector: this.options.labelSelector,
            resourceVersion: this.resourceVersion,
            allowWatchBookmarks: true,
            // The server ends the watch after this; a fresh one continues from the last resourceVersion.
            timeoutSeconds: 240 + Math.floor(Math.random() * 120),
          },
          (e) => this.handle(e),
          this.abort.signal,
        );
        backoffMs = 250;
      } catch (err) {
        if (this.abort.signal.aborted) return;
        if (isGone(err)) {
          needList = 'gone';
          continue;
        }
        this.options.onError?.(err);
        await this.sleep(backoffMs);
        backoffMs = Math.min(backoffMs * 2, 30_000);
        // The list may have failed, or the server lost our resourceVersion; listing again is always safe.
        needList = 'error';
      }
    }
  }
}
