// The ModelDeployment controller: informers feed a keyed work queue; each reconcile is a checklist —
// plan → apply the ConfigMap, Service, PodDisruptionBudget and Deployment (server-side apply, owner references)
// → mark scale-down victims → write status → record Events. Level-based: it reads only the informers' caches and
// the ModelDeployment, so running it again on unchanged input does nothing (no API calls, no Events).
import type { KubernetesObject, V1Deployment, V1Pod } from '@kubernetes/client-node';
import {
  ANNOTATION_DELETION_COST,
  ANNOTATION_SPEC_HASH,
  API_VERSION,
  CONTROLLER_NAME,
  FIELD_MANAGER,
  KIND,
  LABEL_INSTANCE,
  LABEL_MANAGED_BY,
  MANAGED_BY,
  key,
  splitKey,
  type ModelDeployment,
} from '../api/modelDeployment.js';
import { EventRecorder } from '../k8s/events.js';
import { Informer, type InformerEvent } from '../k8s/informer.js';
import { objectPath, resources, type Resource } from '../k8s/resources.js';
import type { KubeClient } from '../k8s/rest.js';
import type { Logger } from '../telemetry/logger.js';
import * as metrics from '../telemetry/metrics.js';
import { withSpan } from '../telemetry/tracing.js';
import { plan, selectorString, type PlanConfig } from './plan.js';
import { deletionCostChanges, VICTIM_COST } from './scaleDown.js';
import {
  ANNOTATION_TEMPLATE_HASH,
  LABEL_ROLE,
  planRoles,
  ROLE_SERVING,
  ROLE_STANDBY,
  scaleDownVictims,
  servingCostChanges,
  standbyCounts,
  standbyReplicas,
} from './standby.js';
import { collectStateMetrics, StartupObserver } from './stateMetrics.js';
import { computeStatus, newlyDegraded, statusChanged } from './status.js';
import { WorkQueue } from './workqueue.js';

export interface ControllerOptions {
  plan: PlanConfig;
  /** Only this namespace; all namespaces when undefined. */
  namespace?: string;
  concurrency: number;
  resyncMs: number;
  /** Re-check a ModelDeployment that is not yet settled after this long even without events. */
  unsettledRequeueMs: number;
  identity: string;
}

type Owned = 'configMap' | 'service' | 'podDisruptionBudget' | 'deployment';
const ownedResources: Record<Owned, Resource> = {
  configMap: resources.configMaps,
  service: resources.services,
  podDisruptionBudget: resources.podDisruptionBudgets,
  deployment: resources.deployments,
};

export interface ReconcileResult {
  requeueAfterMs?: number;
}

export class Controller {
  readonly queue: WorkQueue;
  readonly mdeps: Informer<ModelDeployment>;
  readonly pods: Informer<V1Pod>;
  private readonly startups: StartupObserver;
  readonly owned: Record<Owned, Informer<KubernetesObject>>;
  private readonly events: EventRecorder;
  private workers: Promise<void>[] = [];

  constructor(
    private readonly client: KubeClient,
    private readonly options: ControllerOptions,
    private readonly log: Logger,
  ) {
    this.queue = new WorkQueue({
      baseBackoffMs: 200,
      maxBackoffMs: 60_000,
      onDepth: (d) => metrics.workQueueDepth.set(d),
    });
    const informerOptions = (resource: Resource, labelSelector?: string) => ({
      namespace: options.namespace,
      labelSelector,
      resyncMs: options.resyncMs,
      onRelist: (reason: 'initial' | 'gone' | 'error') => {
        metrics.informerRelists.inc({ resource: resource.plural, reason });
        if (reason !== 'initial') log.info('informer relisting', { resource: resource.plural, reason });
      },
      onError: (err: unknown) => log.warn('watch failed', { resource: resource.plural, error: String(err) }),
    });
    const managed = `${LABEL_MANAGED_BY}=${MANAGED_BY}`;
    this.mdeps = new Informer(client, resources.modelDeployments, informerOptions(resources.modelDeployments));
    this.pods = new Informer(client, resources.pods, informerOptions(resources.pods, managed));
    this.startups = new StartupObserver(this.mdeps);
    this.owned = {
      configMap: new Informer(client, resources.configMaps, informerOptions(resources.configMaps, managed)),
      service: new Informer(client, resources.services, informerOptions(resources.services, managed)),
      podDisruptionBudget: new Informer(
        client,
        resources.podDisruptionBudgets,
        informerOptions(resources.podDisruptionBudgets, managed),
      ),
      deployment: new Informer(client, resources.deployments, informerOptions(resources.deployments, managed)),
    };
    this.events = new EventRecorder(client, CONTROLLER_NAME, options.identity, (err) =>
      log.warn('could not record event', { error: String(err) }),
    );

    this.mdeps.on((event: InformerEvent, obj, old) => {
      // Our own status writes come back as updates; only spec (generation) changes need a reconcile.
      if (event === 'update' && old && old.metadata.generation === obj.metadata.generation) return;
      if (event !== 'delete') this.queue.add(key(obj.metadata.namespace ?? '', obj.metadata.name ?? ''));
    });
    for (const informer of Object.values(this.owned)) {
      informer.on((_e, obj) => {
        const owner = obj.metadata?.ownerReferences?.find((o) => o.controller && o.kind === KIND);
        if (owner) this.queue.add(key(obj.metadata?.namespace ?? '', owner.name));
      });
    }
    this.pods.on((e, pod) => {
      if (e === 'delete') this.startups.forget(pod);
      else this.startups.onPod(pod);
      const instance = pod.metadata?.labels?.[LABEL_INSTANCE];
      if (instance) this.queue.add(key(pod.metadata?.namespace ?? '', instance));
    });
  }

  private allInformers(): Informer<KubernetesObject>[] {
    return [this.mdeps, this.pods, ...Object.values(this.owned)] as Informer<KubernetesObject>[];
  }

  async start(): Promise<void> {
    const informers = this.allInformers();
    for (const i of informers) i.start();
    await Promise.all(informers.map((i) => i.waitForSync()));
    this.log.info('caches synced', { modelDeployments: this.mdeps.list().length });
    this.startups.markSynced(this.pods.list());
    metrics.setStateCollector(() => collectStateMetrics(this.mdeps, this.pods));
    for (let i = 0; i < this.options.concurrency; i++) this.workers.push(this.work());
  }

  async stop(): Promise<void> {
    metrics.setStateCollector(undefined);
    this.queue.shutDown();
    await Promise.all(this.allInformers().map((i) => i.stop()));
    await Promise.all(this.workers);
  }

  private async work(): Promise<void> {
    for (;;) {
      const k = await this.queue.get();
      if (k === undefined) return;
      const started = process.hrtime.bigint();
      try {
        const result = await withSpan('reconcile ModelDeployment', { 'modelserve.key': k }, () => this.reconcile(k));
        this.queue.forget(k);
        if (result.requeueAfterMs !== undefined) this.queue.addAfter(k, result.requeueAfterMs);
        metrics.reconcileTotal.inc({ result: result.requeueAfterMs !== undefined ? 'requeue' : 'success' });
      } catch (err) {
        const delay = this.queue.addRateLimited(k);
        metrics.reconcileTotal.inc({ result: 'error' });
        metrics.reconcileErrors.inc({ step: err instanceof StepError ? err.step : 'unknown' });
        this.log.warn('reconcile failed', { key: k, error: String(err), retryInMs: delay });
      } finally {
        metrics.reconcileDuration.observe(Number(process.hrtime.bigint() - started) / 1e9);
        this.queue.done(k);
      }
    }
  }

  /** One pass over the checklist for the ModelDeployment `k` (namespace/name). */
  async reconcile(k: string): Promise<ReconcileResult> {
    const { namespace, name } = splitKey(k);
    const mdep = this.mdeps.get(namespace, name);
    // Deleted: the garbage collector removes what we own through owner references; nothing to do here.
    if (!mdep || mdep.metadata.deletionTimestamp) return {};
    mdep.apiVersion ??= API_VERSION;
    mdep.kind ??= KIND;

    const desired = plan(mdep, this.options.plan);
    let failure: StepError | undefined;
    try {
      await step('configmap', () => this.ensure(mdep, 'configMap', desired.configMap));
      // Roles before the Service and the Deployment: a scale-up promotes a ready standby at once (./standby.ts).
      await this.assignRoles(mdep, desired.deployment);
      await step('service', () => this.ensure(mdep, 'service', desired.service));
      await step('pdb', () => this.ensure(mdep, 'podDisruptionBudget', desired.podDisruptionBudget));
      await step('deployment', () => this.ensure(mdep, 'deployment', desired.deployment));
    } catch (err) {
      // Still write the status: a user should see why nothing runs, not an object without status.
      failure = err instanceof StepError ? err : new StepError('apply', err);
    }

    const deployment = this.owned.deployment.get(namespace, name) as V1Deployment | undefined;
    const pods = this.podsOf(namespace, name);
    const status = computeStatus(
      mdep,
      deployment,
      pods,
      selectorString(desired.servingSelector),
      desired.endpoint,
      new Date(),
      failure && `${failure.step}: ${failure.cause instanceof Error ? failure.cause.message : String(failure.cause)}`,
      standbyCounts(pods, desired.standby),
    );
    const degraded = newlyDegraded(mdep, status);
    if (statusChanged(mdep, status)) {
      await step('status', async () => {
        const updated = await this.client.apply<ModelDeployment>(
          objectPath(resources.modelDeployments, namespace, name, 'status'),
          { apiVersion: API_VERSION, kind: KIND, metadata: { name, namespace }, status },
          FIELD_MANAGER,
        );
        this.mdeps.remember(updated);
      });
    }
    if (degraded) {
      await this.events.record(mdep, {
        type: 'Warning',
        reason: degraded.reason,
        action: 'Reconcile',
        note: degraded.message,
      });
    }
    if (failure) throw failure;
    const settled = status.conditions.every((c) =>
      c.type === 'Ready'
        ? c.status === 'True' || mdep.spec.replicas === 0
        : c.type === 'Progressing'
          ? c.status === 'False'
          : true,
    );
    return settled ? {} : { requeueAfterMs: this.options.unsettledRequeueMs };
  }

  podsOf(namespace: string, instance: string): V1Pod[] {
    return this.pods
      .list()
      .filter((p) => p.metadata?.namespace === namespace && p.metadata?.labels?.[LABEL_INSTANCE] === instance);
  }

  /** Apply one owned object unless the cached copy already carries the same desired content. */
  private async ensure(mdep: ModelDeployment, which: Owned, desired: KubernetesObject): Promise<void> {
    const informer = this.owned[which];
    const resource = ownedResources[which];
    const namespace = desired.metadata?.namespace ?? '';
    const name = desired.metadata?.name ?? '';
    const live = informer.get(namespace, name);
    const wantHash = desired.metadata?.annotations?.[ANNOTATION_SPEC_HASH];
    const sameSpec = live?.metadata?.annotations?.[ANNOTATION_SPEC_HASH] === wantHash;
    const liveReplicas = (live as V1Deployment | undefined)?.spec?.replicas;
    const wantReplicas = (desired as V1Deployment).spec?.replicas;
    const sameScale = which !== 'deployment' || liveReplicas === wantReplicas;
    if (live && sameSpec && sameScale) return;

    if (which === 'deployment' && live && wantReplicas !== undefined && (liveReplicas ?? 0) > wantReplicas) {
      await this.markScaleDownVictims(mdep, wantReplicas);
    }
    const applied = await this.client.apply<KubernetesObject>(
      objectPath(resource, namespace, name),
      desired,
      FIELD_MANAGER,
    );
    informer.remember(applied);

    const action = !live ? 'Create' : !sameSpec ? 'Update' : 'Scale';
    metrics.appliedObjects.inc({ kind: resource.kind, action: action.toLowerCase() });
    const note =
      action === 'Scale'
        ? `scaled ${resource.kind} ${name} from ${liveReplicas} to ${wantReplicas} replicas`
        : `${action === 'Create' ? 'created' : 'updated'} ${resource.kind} ${name}`;
    this.log.info(note, { key: key(namespace, mdep.metadata.name ?? ''), kind: resource.kind, action });
    await this.events.record(mdep, {
      type: 'Normal',
      reason: action === 'Create' ? 'Created' : action === 'Update' ? 'Updated' : 'Scaled',
      action,
      note,
    });
  }

  /** Relabel pods so that spec.replicas of them serve and the rest stand by; one Event per pass that changed roles. */
  private async assignRoles(mdep: ModelDeployment, deployment: V1Deployment): Promise<void> {
    const namespace = mdep.metadata.namespace ?? '';
    const name = mdep.metadata.name ?? '';
    const pods = this.podsOf(namespace, name);
    const total = deployment.spec?.replicas ?? 0;
    const liveTotal = (this.owned.deployment.get(namespace, name) as V1Deployment | undefined)?.spec?.replicas;
    const removing = liveTotal !== undefined && liveTotal > total ? scaleDownVictims(pods, total) : undefined;
    const templateHash = deployment.spec?.template.metadata?.annotations?.[ANNOTATION_TEMPLATE_HASH];
    const changes = planRoles(pods, mdep.spec.replicas, templateHash, removing);
    const roles = new Map(changes.map((c) => [c.pod, c.to] as const));
    const costs = servingCostChanges(pods, roles, standbyReplicas(mdep).count);
    // A role change carries its pod's deletion cost in the same patch (promotions first, as planRoles orders them);
    // pods whose role stays but whose cost is stale get a patch of their own.
    const patches: [string, Record<string, unknown>][] = changes.map((c) => {
      const metadata: Record<string, unknown> = { labels: { [LABEL_ROLE]: c.to } };
      if (costs.has(c.pod)) metadata.annotations = { [ANNOTATION_DELETION_COST]: costs.get(c.pod) };
      return [c.pod, { metadata }];
    });
    for (const [pod, cost] of costs)
      if (!roles.has(pod)) patches.push([pod, { metadata: { annotations: { [ANNOTATION_DELETION_COST]: cost } } }]);
    for (const [pod, patch] of patches) {
      await step('roles', async () => {
        const updated = await this.client.mergePatch<V1Pod>(
          objectPath(resources.pods, namespace, pod),
          patch,
          FIELD_MANAGER,
        );
        this.pods.remember(updated);
      });
    }
    if (changes.length === 0) return;
    const promoted = changes.filter((c) => c.to === ROLE_SERVING && c.from === ROLE_STANDBY);
    const describe = (c: (typeof changes)[number]) => `${c.pod}${c.ready ? '' : ' (not ready)'}`;
    const parts = [
      promoted.length ? `promoted standby ${promoted.map(describe).join(', ')} to serving` : '',
      ...[ROLE_SERVING, ROLE_STANDBY].map((role) => {
        const rest = changes.filter((c) => c.to === role && !promoted.includes(c));
        return rest.length ? `set ${rest.map(describe).join(', ')} to ${role}` : '';
      }),
    ].filter(Boolean);
    const note = `${parts.join('; ')} (${mdep.spec.replicas} serving wanted)`;
    this.log.info('assigned worker roles', { key: key(namespace, mdep.metadata.name ?? ''), changes });
    await this.events.record(mdep, {
      type: 'Normal',
      reason: promoted.length ? 'PromotedStandby' : 'AssignedRoles',
      action: 'Relabel',
      note,
    });
  }

  private async markScaleDownVictims(mdep: ModelDeployment, desired: number): Promise<void> {
    const namespace = mdep.metadata.namespace ?? '';
    const changes = deletionCostChanges(this.podsOf(namespace, mdep.metadata.name ?? ''), desired);
    for (const [pod, cost] of changes) {
      await step('pods', () =>
        this.client.mergePatch(
          objectPath(resources.pods, namespace, pod),
          { metadata: { annotations: { [ANNOTATION_DELETION_COST]: cost } } },
          FIELD_MANAGER,
        ),
      );
    }
    const marked = [...changes].filter(([, cost]) => cost !== null).map(([pod]) => pod);
    if (marked.length > 0) {
      await this.events.record(mdep, {
        type: 'Normal',
        reason: 'MarkedForRemoval',
        action: 'Annotate',
        note: `set ${ANNOTATION_DELETION_COST}=${VICTIM_COST} on ${marked.sort().join(', ')} before scaling to ${desired}`,
      });
    }
  }
}

export class StepError extends Error {
  constructor(
    readonly step: string,
    override readonly cause: unknown,
  ) {
    super(`${step}: ${String(cause)}`);
    this.name = 'StepError';
  }
}

async function step<T>(name: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw new StepError(name, err);
  }
}
