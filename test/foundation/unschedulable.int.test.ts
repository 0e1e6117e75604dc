// A pod that asks for more GPUs than any node has stays Pending, and the scheduler says why.
import { CoreV1Api } from '@kubernetes/client-node';

import { startControlPlane, type ControlPlane } from '../support/controlPlane.js';
import { waitFor } from '../support/wait.js';

let cp: ControlPlane;

beforeAll(async () => {
  cp = await startControlPlane({ gpuNodes: 2, gpusPerNode: 4 });
}, 180_000);

afterAll(async () => {
  await cp?.stop();
});

test('a pod asking for 16 GPUs on nodes of 4 stays Pending with the scheduler reason', async () => {
  const core = cp.kubeConfig.makeApiClient(CoreV1Api);
  await core.createNamespacedPod({
    namespace: 'default',
    body: {
      metadata: { name: 'too-big' },
      spec: {
        containers: [
          { name: 'main', image: 'example.invalid/probe:1', resources: { limits: { 'nvidia.com/gpu': '16' } } },
        ],
      },
    },
  });

  const condition = await waitFor(
    async () => {
      const pod = await core.readNamespacedPod({ name: 'too-big', namespace: 'default' });
      return pod.status?.conditions?.find((c) => c.type === 'PodScheduled' && c.status === 'False');
    },
    { timeoutMs: 60_000, description: 'PodScheduled=False on too-big' },
  );
  expect(condition.reason).toBe('Unschedulable');
  expect(condition.message).toContain('Insufficient nvidia.com/gpu');

  const pod = await core.readNamespacedPod({ name: 'too-big', namespace: 'default' });
  expect(pod.status?.phase).toBe('Pending');
  expect(pod.spec?.nodeName).toBeUndefined();

  // The scheduler also records a FailedScheduling Event, which `kubectl describe` shows users.
  const events = await waitFor(
    async () => {
      const list = await core.listNamespacedEvent({
        namespace: 'default',
        fieldSelector: 'involvedObject.name=too-big',
      });
      return list.items.find((e) => e.reason === 'FailedScheduling');
    },
    { timeoutMs: 30_000, description: 'FailedScheduling event' },
  );
  expect(events.message).toContain('nvidia.com/gpu');
}, 120_000);
