// Every metric the operator process exports, in one place. Names follow modelserve_<component>_<what>_<unit>.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export const registry = new Registry();
collectDefaultMetrics({ register: registry, prefix: 'modelserve_operator_process_' });

export const reconcileTotal = new Counter({
  name: 'modelserve_operator_reconcile_total',
  help: 'Reconciles of ModelDeployments, by result (success, requeue, error).',
  labelNames: ['result'] as const,
  registers: [registry],
});

export const reconcileDuration = new Histogram({
  name: 'modelserve_operator_reconcile_duration_seconds',
  help: 'Wall time of one ModelDeployment reconcile.',
  buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  registers: [registry],
});

export const reconcileErrors = new Counter({
  name: 'modelserve_operator_reconcile_errors_total',
  help: 'Failed reconciles, by the step that failed (configmap, deployment, service, pdb, pods, status).',
  labelNames: ['step'] as const,
  registers: [registry],
});

export const workQueueDepth = new Gauge({
  name: 'modelserve_operator_workqueue_depth',
  help: 'ModelDeployment keys waiting in the work queue.',
  registers: [registry],
});

export const isLeader = new Gauge({
  name: 'modelserve_operator_leader',
  help: '1 while this process holds the leader lease, else 0.',
  registers: [registry],
});

export const appliedObjects = new Counter({
  name: 'modelserve_operator_applied_objects_total',
  help: 'Owned objects written with server-side apply, by kind and action (create, update, scale).',
  labelNames: ['kind', 'action'] as const,
  registers: [registry],
});

export const informerRelists = new Counter({
  name: 'modelserve_operator_informer_relists_total',
  help: 'Full lists by an informer, by resource and reason (initial, gone, error).',
  labelNames: ['resource', 'reason'] as const,
  registers: [registry],
});

// ModelDeployment state, kube-state-metrics style: set from the leader's informer caches at each scrape (see
// controller/stateMetrics.ts), so a deleted ModelDeployment's series disappear with it. The first gauge's collect
// hook refreshes both gauges; a process that is not leading has no collector and exports no state series.
let stateCollector: (() => void) | undefined;
export function setStateCollector(fn: (() => void) | undefined): void {
  stateCollector = fn;
  if (!fn) {
    modelDeploymentCondition.reset();
    modelDeploymentReplicas.reset();
  }
}

export const modelDeploymentCondition = new Gauge({
  name: 'modelserve_operator_modeldeployment_condition',
  help: 'One series per ModelDeployment condition and status (true, false, unknown); 1 for the current status.',
  labelNames: ['namespace', 'modeldeployment', 'model_name', 'condition', 'status'] as const,
  registers: [registry],
  collect() {
    stateCollector?.();
  },
});

export const modelDeploymentReplicas = new Gauge({
  name: 'modelserve_operator_modeldeployment_replicas',
  help: 'Replicas of a ModelDeployment by state: desired (spec), ready, pending (pods not yet scheduled), standby (ready standby pods, not routed to).',
  labelNames: ['namespace', 'modeldeployment', 'model_name', 'state'] as const,
  registers: [registry],
});

export const replicaStartupDuration = new Histogram({
  name: 'modelserve_operator_replica_startup_duration_seconds',
  help: "Time from a worker pod's creation to its first Ready (scheduling, image, weights load), once per pod.",
  labelNames: ['namespace', 'modeldeployment', 'model_name'] as const,
  buckets: [1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800],
  registers: [registry],
});

export const autoscalerDecisions = new Counter({
  name: 'modelserve_autoscaler_decisions_total',
  help: 'Autoscaler decisions per ModelDeployment, by direction (up, down, none) and reason.',
  labelNames: ['namespace', 'modeldeployment', 'model_name', 'direction', 'reason'] as const,
  registers: [registry],
});
