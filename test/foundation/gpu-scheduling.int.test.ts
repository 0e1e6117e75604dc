// The control plane schedules a Deployment that asks for a GPU onto the fake GPU nodes, and kwok runs its pods.
import { AppsV1Api, CoreV1Api, VersionApi } from '@kubernetes/client-node';

import { startControlPlane, type ControlPlane } from '../support/controlPlane.js';
import { waitFor } from '../support/wait.js';

let cp: ControlPlane;

beforeAll(async () => {
  cp = await startControlPlane({ gpuNodes: 2, gpusPerNode: 1 });
  const version = await cp.kubeConfig.makeApiClient(VersionApi).getCode();
  process.stdout.write(`real kube-apiserver ${version.gitVersion} at ${cp.server}, logs in ${cp.dir}\n`);
}, 180_000);

afterAll(async () => {
  await cp?.stop();
});

test('a Deployment asking for nvidia.com/gpu: 1 gets its pods Running on the fake GPU nodes', async () => {
  const apps = cp.kubeConfig.makeApiClient(AppsV1Api);
  const core = cp.kubeConfig.makeApiClient(CoreV1Api);
  const labels = { app: 'gpu-probe' };
  await apps.createNamespacedDeployment({
    namespace: 'default',
    body: {
      metadata: { name: 'gpu-probe' },
      spec: {
        replicas: 2,
        selector: { matchLabels: labels },
        template: {
          metadata: { labels },
          spec: {
            containers: [
              { name: 'main', image: 'example.invalid/probe:1', resources: { limits: { 'nvidia.com/gpu': '1' } } },
            ],
          },
        },
      },
    },
  });

  const pods = await waitFor(
    async () => {
      const list = await core.listNamespacedPod({ namespace: 'default', labelSelector: 'app=gpu-probe' });
      const running = list.items.filter((p) => p.status?.phase === 'Running');
      return running.length === 2 ? running : undefined;
    },
    { timeoutMs: 60_000, description: 'two gpu-probe pods Running' },
  );

  // One GPU per node and two pods: the scheduler must have spread them, one per fake GPU node.
  const nodes = pods.map((p) => p.spec?.nodeName).sort();
  expect(nodes).toEqual(['gpu-node-0', 'gpu-node-1']);
  for (const pod of pods) {
    expect(pod.spec?.containers[0]?.resources?.limits?.['nvidia.com/gpu']).toBe('1');
    expect(pod.status?.podIP).toMatch(/^10\.244\./);
  }
  const deployment = await apps.readNamespacedDeployment({ name: 'gpu-probe', namespace: 'default' });
  await waitFor(
    async () =>
      (await apps.readNamespacedDeployment({ name: 'gpu-probe', namespace: 'default' })).status?.readyReplicas === 2,
    {
      timeoutMs: 30_000,
      description: 'Deployment readyReplicas = 2',
    },
  );
  expect(deployment.spec?.replicas).toBe(2);
}, 120_000);
