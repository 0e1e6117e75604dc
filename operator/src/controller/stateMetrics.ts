// ModelDeployment state as Prometheus series, read from the controller's informer caches when /metrics is scraped
// (nothing to keep in step, nothing stale after a delete), and replica start-up durations observed as pods turn Ready.
import type { V1Pod } from '@kubernetes/client-node';

import { LABEL_INSTANCE, type ModelDeployment } from '../api/modelDeployment.js';
import type { Informer } from '../k8s/informer.js';
import * as metrics from '../telemetry/metrics.js';
import { standbyCounts } from './standby.js';

const CONDITIONS = ['Ready', 'Progressing', 'Degraded', 'WeightsCached', 'SLOMet', 'ScalingLimited'] as const;
const STATUSES = ['true', 'false', 'unknown'] as const;

function labels(mdep: ModelDeployment) {
  return {
    namespace: mdep.metadata.namespace ?? '',
    modeldeployment: mdep.metadata.name ?? '',
    model_name: mdep.spec?.model?.name ?? '',
  };
}

const isPending = (p: V1Pod) => p.status?.phase === 'Pending' && !p.spec?.nodeName && !p.metadata?.deletionTimestamp;
const readySince = (p: V1Pod) =>
  p.status?.conditions?.find((c) => c.type === 'Ready' && c.status === 'True')?.lastTransitionTime;

/** Refreshes the state gauges from the caches; call from the /metrics handler before serializing. */
export function collectStateMetrics(mdeps: Informer<ModelDeployment>, pods: Informer<V1Pod>): void {
  metrics.modelDeploymentCondition.reset();
  metrics.modelDeploymentReplicas.reset();
  const podsByOwner = new Map<string, V1Pod[]>();
  for (const pod of pods.list()) {
    const k = `${pod.metadata?.namespace}/${pod.metadata?.labels?.[LABEL_INSTANCE]}`;
    podsByOwner.set(k, [...(podsByOwner.get(k) ?? []), pod]);
  }
  for (const mdep of mdeps.list()) {
    const l = labels(mdep);
    for (const condition of CONDITIONS) {
      const found = mdep.status?.conditions?.find((c) => c.type === condition);
      const current = (found?.status ?? 'Unknown').toLowerCase();
      for (const status of STATUSES)
        metrics.modelDeploymentCondition.set({ ...l, condition, status }, status === current ? 1 : 0);
    }
    const owned = podsByOwner.get(`${l.namespace}/${l.modeldeployment}`) ?? [];
    metrics.modelDeploymentReplicas.set({ ...l, state: 'desired' }, mdep.spec?.replicas ?? 0);
    metrics.modelDeploymentReplicas.set({ ...l, state: 'ready' }, mdep.status?.readyReplicas ?? 0);
    metrics.modelDeploymentReplicas.set({ ...l, state: 'pending' }, owned.filter(isPending).length);
    metrics.modelDeploymentReplicas.set(
      { ...l, state: 'standby' },
      standbyCounts(owned, { count: 0, limited: 0 }).ready,
    );
  }
}

/** Observes each worker pod's creation-to-first-Ready time once (pods seen already Ready at start-up are skipped). */
export class StartupObserver {
  private readonly seen = new Set<string>();
  private synced = false;

  constructor(private readonly mdeps: Informer<ModelDeployment>) {}

  /** After the initial list: pods Ready before now were started by an earlier operator and are not observed. */
  markSynced(pods: V1Pod[]): void {
    for (const p of pods) if (readySince(p)) this.seen.add(p.metadata?.uid ?? '');
    this.synced = true;
  }

  onPod(pod: V1Pod): void {
    const uid = pod.metadata?.uid ?? '';
    const ready = readySince(pod);
    const created = pod.metadata?.creationTimestamp;
    if (!this.synced || !ready || !created || this.seen.has(uid)) return;
    this.seen.add(uid);
    const mdep = this.mdeps.get(pod.metadata?.namespace ?? '', pod.metadata?.labels?.[LABEL_INSTANCE] ?? '');
    if (!mdep) return;
    const seconds = (new Date(ready).getTime() - new Date(created).getTime()) / 1000;
    metrics.replicaStartupDuration.observe(labels(mdep), Math.max(0, seconds));
  }

  forget(pod: V1Pod): void {
    this.seen.delete(pod.metadata?.uid ?? '');
  }
}
