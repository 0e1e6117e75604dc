// The operator's ModelDeployment state series and replica start-up histogram, from cache contents.
import type { KubernetesObject, V1Pod } from '@kubernetes/client-node';

import type { ModelDeployment } from '../src/api/modelDeployment.js';
import { collectStateMetrics, StartupObserver } from '../src/controller/stateMetrics.js';
import type { Informer } from '../src/k8s/informer.js';
import { registry, setStateCollector } from '../src/telemetry/metrics.js';
import { modelDeployment, pod } from './fixtures.js';

const cache = <T extends KubernetesObject>(items: T[]) =>
  ({ list: () => items, get: () => items[0] }) as unknown as Informer<T>;

function series(text: string, name: string): string[] {
  return text.split('\n').filter((l) => l.startsWith(`${name}{`));
}

afterEach(() => setStateCollector(undefined));

test('conditions, desired/ready/pending replicas per ModelDeployment, refreshed at scrape time', async () => {
  const mdep = modelDeployment({ replicas: 3 });
  mdep.status = {
    readyReplicas: 2,
    conditions: [{ type: 'Ready', status: 'True' } as never, { type: 'ScalingLimited', status: 'False' } as never],
  };
  const pending: V1Pod = { ...pod('gpt-c', { phase: 'Pending', ready: false }), spec: { containers: [] } };
  const pods = cache([pod('gpt-a'), pod('gpt-b'), pending]);
  const mdeps = cache([mdep]);
  setStateCollector(() => collectStateMetrics(mdeps, pods));

  const text = await registry.metrics();
  const labels = 'namespace="ml",modeldeployment="gpt",model_name="gpt-oss-20b"';
  const replicas = series(text, 'modelserve_operator_modeldeployment_replicas');
  expect(replicas).toEqual(
    expect.arrayContaining([
      `modelserve_operator_modeldeployment_replicas{${labels},state="desired"} 3`,
      `modelserve_operator_modeldeployment_replicas{${labels},state="ready"} 2`,
      `modelserve_operator_modeldeployment_replicas{${labels},state="pending"} 1`,
    ]),
  );
  const conditions = series(text, 'modelserve_operator_modeldeployment_condition');
  expect(conditions).toContain(
    `modelserve_operator_modeldeployment_condition{${labels},condition="Ready",status="true"} 1`,
  );
  expect(conditions).toContain(
    `modelserve_operator_modeldeployment_condition{${labels},condition="ScalingLimited",status="false"} 1`,
  );
  expect(conditions).toContain(
    `modelserve_operator_modeldeployment_condition{${labels},condition="Degraded",status="unknown"} 1`,
  );
  expect(conditions).toHaveLength(6 * 3);

  // Deleted from the cache: its series go at the next scrape. Not leading: no state series at all.
  setStateCollector(() => collectStateMetrics(cache<ModelDeployment>([]), pods));
  expect(series(await registry.metrics(), 'modelserve_operator_modeldeployment_replicas')).toEqual([]);
  setStateCollector(undefined);
  expect(series(await registry.metrics(), 'modelserve_operator_modeldeployment_condition')).toEqual([]);
});

test('start-up duration is observed once per pod, from creation to first Ready, not for pods Ready before sync', async () => {
  const mdep = modelDeployment();
  const observer = new StartupObserver(cache([mdep]));
  const old = pod('gpt-old');
  observer.markSynced([old]);
  observer.onPod(old);

  const fresh = pod('gpt-new', { created: '2026-01-01T00:00:00Z' });
  fresh.metadata!.uid = 'new';
  fresh.status!.conditions = [{ type: 'Ready', status: 'True', lastTransitionTime: new Date('2026-01-01T00:00:42Z') }];
  observer.onPod(fresh);
  observer.onPod(fresh);

  const text = await registry.metrics();
  const labels = 'namespace="ml",modeldeployment="gpt",model_name="gpt-oss-20b"';
  expect(text).toContain(`modelserve_operator_replica_startup_duration_seconds_count{${labels}} 1`);
  expect(text).toContain(`modelserve_operator_replica_startup_duration_seconds_sum{${labels}} 42`);
});
