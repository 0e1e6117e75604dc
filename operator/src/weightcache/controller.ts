// The weight-cache controller (leader only, beside the ModelDeployment reconciler): keeps one stager Job per cache
// entry and node, labels nodes whose entry is complete, writes each ModelDeployment's WeightsCached condition and
// status.nodeCache, and removes Jobs and labels nobody wants any more. Every pass recomputes the whole desired state
// from the informers' caches (./desired.ts) and applies only differences, so an unchanged cluster costs no API call and
// a finished or failed Job is never started again for the same entry.
import type { KubernetesObject, V1Job, V1Node, V1Pod } from '@kubernetes/client-node';

import {
  API_VERSION,
  CONTROLLER_NAME,
  KIND,
  LABEL_COMPONENT,
  type Condition,
  type ModelDeployment,
} from '../api/modelDeployment.js';
import { EventRecorder } from '../k8s/events.js';
import { Informer, type InformerOptions } from '../k8s/informer.js';
import { collectionPath, objectPath, resources, type Resource } from '../k8s/resources.js';
import { isConflict, isNotFound, type KubeClient } from '../k8s/rest.js';
import type { Logger } from '../telemetry/logger.js';
import { WorkQueue } from '../controller/workqueue.js';
import {
  cacheCondition,
  desiredState,
  failureMessage,
  jobFailed,
  labelChanges,
  retryAfterKeepChange,
  stagerJob,
  type WeightCacheConfig,
} from './desired.js';
import { ANNOTATION_CACHE_NODE, cacheLabel, CACHE_READY, stagerJobName, WEIGHT_CACHE_COMPONENT } from './keys.js';

/** Field manager of the WeightsCached condition, status.nodeCache and the node labels. */
export const WEIGHT_CACHE_MANAGER = 'modelserve-weight-cache';
export const CONDITION_WEIGHTS_CACHED = 'WeightsCached';
const SYNC = 'weight-cache';

export interface WeightCacheOptions {
  config: WeightCacheConfig;
  namespace?: string;
  resyncMs: number;
  /** Reporting instance of the Events this controller records. */
  identity: string;
}

export class WeightCacheController {
  readonly mdeps: Informer<ModelDeployment>;
  readonly nodes: Informer<V1Node>;
  readonly jobs: Informer<V1Job>;
  readonly pods: Informer<V1Pod>;
  private readonly queue = new WorkQueue({ baseBackoffMs: 500, maxBackoffMs: 30_000 });
  private worker?: Promise<void>;
  private readonly events: EventRecorder;

  constructor(
    private readonly client: KubeClient,
    private readonly options: WeightCacheOptions,
    private readonly log: Logger,
  ) {
    const opts = (resource: Resource, namespaced: boolean, labelSelector?: string): InformerOptions => ({
      namespace: namespaced ? options.namespace : undefined,
      labelSelector,
      resyncMs: options.resyncMs,
      onError: (err) => log.warn('watch failed', { resource: resource.plural, error: String(err) }),
    });
    this.events = new EventRecorder(client, CONTROLLER_NAME, options.identity, (err) =>
      log.warn('could not record event', { error: String(err) }),
    );
    const ours = `${LABEL_COMPONENT}=${WEIGHT_CACHE_COMPONENT}`;
    this.mdeps = new Informer(client, resources.modelDeployments, opts(resources.modelDeployments, true));
    this.nodes = new Informer(client, resources.nodes, opts(resources.nodes, false));
    this.jobs = new Informer(client, resources.jobs, opts(resources.jobs, true, ours));
    this.pods = new Informer(client, resources.pods, opts(resources.pods, true, ours));
    const poke = () => this.queue.add(SYNC);
    this.mdeps.on((event, obj, old) => {
      // Status writes (ours and the reconciler's) come back as updates: only spec or deletion changes matter.
      if (
        event === 'update' &&
        old &&
        old.metadata.generation === obj.metadata.generation &&
        !!old.metadata.deletionTimestamp === !!obj.metadata.deletionTimestamp
      )
        return;
      poke();
    });
    this.nodes.on((event, obj, old) => {
      if (event === 'update' && old && JSON.stringify(nodeView(old)) === JSON.stringify(nodeView(obj))) return;
      poke();
    });
    this.jobs.on(poke);
    this.pods.on(poke);
  }

  private informers(): Informer<KubernetesObject>[] {
    return [this.mdeps, this.nodes, this.jobs, this.pods] as Informer<KubernetesObject>[];
  }

  async start(): Promise<void> {
    for (const i of this.informers()) i.start();
    await Promise.all(this.informers().map((i) => i.waitForSync()));
    this.queue.add(SYNC);
    this.worker = this.work();
  }

  async stop(): Promise<void> {
    this.queue.shutDown();
    await Promise.all(this.informers().map((i) => i.stop()));
    await this.worker;
  }

  private async work(): Promise<void> {
    for (;;) {
      const k = await this.queue.get();
      if (k === undefined) return;
      try {
        await this.sync();
        this.queue.forget(k);
      } catch (err) {
        const delay = this.queue.addRateLimited(k);
        this.log.warn('weight cache sync failed', { error: String(err), retryInMs: delay });
      } finally {
        this.queue.done(k);
      }
    }
  }

  /** One pass: Jobs, then node labels, then status. */
  async sync(): Promise<void> {
    const mdeps = this.mdeps.list();
    const nodes = this.nodes.list();
    const desired = desiredState(mdeps, nodes);
    const jobs = new Map(this.jobs.list().map((j) => [`${j.metadata?.namespace}/${j.metadata?.name}`, j]));

    for (const [id, stage] of desired.stages) {
      if (jobs.has(id)) continue;
      const job = stagerJob(stage, desired.keysByNode.get(stage.node) ?? new Set(), this.options.config);
      try {
        const created = await this.client.request<V1Job>('POST', collectionPath(resources.jobs, stage.namespace), {
          body: job,
          query: { fieldManager: WEIGHT_CACHE_MANAGER },
        });
        this.jobs.remember(created);
        jobs.set(id, created);
        this.log.info('stager job created', { job: id, node: stage.node, entry: stage.entry });
      } catch (err) {
        if (!isConflict(err)) throw err;
      }
    }
    for (const [id, job] of jobs) {
      if (desired.stages.has(id) || job.metadata?.deletionTimestamp) continue;
      await this.deleteJob(id, job, 'no longer wanted');
      jobs.delete(id);
    }

    // Failed stagings: their reason for the condition, or one more try for a budget failure (see desired.ts).
    const failures = new Map<string, string>(); // job id → the stager's reason
    for (const [id, stage] of desired.stages) {
      const job = jobs.get(id);
      if (!job || !jobFailed(job) || job.metadata?.deletionTimestamp) continue;
      const pods = this.pods
        .list()
        .filter((p) => p.metadata?.namespace === stage.namespace && p.metadata?.labels?.['job-name'] === stage.jobName);
      const reason = failureMessage(pods) ?? "the stager Job failed (see its pods' logs)";
      if (retryAfterKeepChange(job, reason, desired.keysByNode.get(stage.node) ?? new Set())) {
        await this.deleteJob(id, job, 'failed on the disk budget; the wanted entries on its node changed');
        jobs.delete(id);
        continue;
      }
      failures.set(id, reason);
    }

    for (const [node, labels] of labelChanges(nodes, desired, jobs)) {
      const updated = await this.client.mergePatch<V1Node>(
        `${collectionPath(resources.nodes)}/${encodeURIComponent(node)}`,
        { metadata: { labels } },
        WEIGHT_CACHE_MANAGER,
      );
      this.nodes.remember(updated);
      this.log.info('node cache labels', { node, labels });
    }

    const readyOn = (node: string, key: string) =>
      this.nodes.get('', node)?.metadata?.labels?.[cacheLabel(key)] === CACHE_READY;
    for (const mdep of mdeps) {
      const id = `${mdep.metadata.namespace}/${mdep.metadata.name}`;
      const want = desired.byMdep.get(id);
      if (!want) {
        if (!mdep.metadata.deletionTimestamp && hasCacheStatus(mdep)) await this.writeStatus(mdep, undefined);
        continue;
      }
      const failed = want.nodes.flatMap((node) => {
        const message = failures.get(`${mdep.metadata.namespace}/${stagerJobName(want.key, node)}`);
        return message && !readyOn(node, want.key) ? [{ node, message }] : [];
      });
      const cond = cacheCondition(want, (n) => readyOn(n, want.key), failed);
      await this.writeStatus(mdep, { ...cond, key: want.key, entry: want.entry });
    }
  }

  private async deleteJob(id: string, job: V1Job, why: string): Promise<void> {
    const [namespace, name] = id.split('/') as [string, string];
    try {
      await this.client.request('DELETE', objectPath(resources.jobs, namespace, name), {
        body: { apiVersion: 'v1', kind: 'DeleteOptions', propagationPolicy: 'Background' },
      });
      this.log.info('stager job deleted', { job: id, node: job.metadata?.annotations?.[ANNOTATION_CACHE_NODE], why });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  /** Applies WeightsCached and status.nodeCache (ours alone, by field manager) when they changed; undefined removes them. */
  private async writeStatus(
    mdep: ModelDeployment,
    c: (ReturnType<typeof cacheCondition> & { key: string; entry: string }) | undefined,
  ): Promise<void> {
    const prev = mdep.status?.conditions?.find((x) => x.type === CONDITION_WEIGHTS_CACHED);
    const nodeCache = c && { key: c.key, entry: c.entry, nodes: c.nodes, readyNodes: c.readyNodes };
    if (
      c &&
      prev?.status === c.status &&
      prev.reason === c.reason &&
      prev.message === c.message &&
      prev.observedGeneration === mdep.metadata.generation &&
      JSON.stringify(mdep.status?.nodeCache) === JSON.stringify(nodeCache)
    )
      return;
    const condition: Condition | undefined = c && {
      type: CONDITION_WEIGHTS_CACHED,
      status: c.status,
      reason: c.reason,
      message: c.message,
      observedGeneration: mdep.metadata.generation,
      lastTransitionTime: prev?.status === c.status ? prev.lastTransitionTime : new Date().toISOString(),
    };
    const name = mdep.metadata.name ?? '';
    const namespace = mdep.metadata.namespace ?? '';
    try {
      const updated = await this.client.apply<ModelDeployment>(
        objectPath(resources.modelDeployments, namespace, name, 'status'),
        {
          apiVersion: API_VERSION,
          kind: KIND,
          metadata: { name, namespace },
          status: c ? { conditions: [condition], nodeCache } : {},
        },
        WEIGHT_CACHE_MANAGER,
      );
      this.mdeps.remember(updated);
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    }
    // An Event when the outcome changes: all nodes cached, or a stager failed.
    if (c && (c.reason === 'Cached' || c.reason === 'StagingFailed') && prev?.reason !== c.reason) {
      await this.events.record(mdep, {
        type: c.reason === 'Cached' ? 'Normal' : 'Warning',
        reason: c.reason === 'Cached' ? 'WeightsCached' : 'StagingFailed',
        action: 'StageWeights',
        note: c.message,
      });
    }
  }
}

function hasCacheStatus(mdep: ModelDeployment): boolean {
  return !!mdep.status?.nodeCache || !!mdep.status?.conditions?.some((c) => c.type === CONDITION_WEIGHTS_CACHED);
}

/** What of a Node the cache depends on (node status heartbeats change nothing here). */
function nodeView(n: V1Node): unknown {
  return [n.metadata?.labels, n.spec?.unschedulable, n.spec?.taints, n.status?.allocatable?.['nvidia.com/gpu']];
}
