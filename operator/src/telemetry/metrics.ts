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
