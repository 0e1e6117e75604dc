// The scale subresource: `kubectl scale mdep/x` and an autoscaling/v2 HorizontalPodAutoscaler targeting the
// ModelDeployment change spec.replicas, and the operator carries that to the Deployment (with a Scaled Event).
import { jest } from '@jest/globals';
import type { V1Deployment } from '@kubernetes/client-node';
import { waitFor } from '../../test/support/wait.js';
import { objectPath, resources } from '../src/k8s/resources.js';
import { applyManifest, eventsFor, modelDeploymentManifest, startStack, waitForStatus, type Stack } from './harness.js';

jest.setTimeout(300_000);

let stack: Stack;
beforeAll(async () => {
  stack = await startStack({ gpuNodes: 2, gpusPerNode: 8 });
});
afterAll(async () => {
  await stack?.stop();
});

const deploymentReplicas = async (name: string) =>
  (await stack.api.get<V1Deployment>(objectPath(resources.deployments, 'default', name))).spec?.replicas;

it('follows kubectl scale through the scale subresource, up and down', async () => {
  expect((await applyManifest(stack.cp, modelDeploymentManifest('scaled', {}))).code).toBe(0);
  await waitForStatus(stack, 'scaled', (s) => s.readyReplicas === 1, '1 ready replica');

  const up = await stack.cp.kubectl(['scale', 'mdep/scaled', '--replicas=3']);
  expect(up.stderr).toBe('');
  await waitFor(async () => (await deploymentReplicas('scaled')) === 3, { description: 'Deployment at 3 replicas' });
  const status = await waitForStatus(stack, 'scaled', (s) => s.readyReplicas === 3, '3 ready replicas');
  expect(status.desiredReplicas).toBe(3);

  // The scale subresource reads back what the operator published.
  const scale = JSON.parse(
    (
      await stack.cp.kubectl([
        'get',
        '--raw',
        '/apis/serving.modelserve.dev/v1alpha1/namespaces/default/modeldeployments/scaled/scale',
      ])
    ).stdout,
  );
  expect(scale.spec.replicas).toBe(3);
  expect(scale.status).toEqual({ replicas: 3, selector: status.selector });

  expect((await stack.cp.kubectl(['scale', 'mdep/scaled', '--replicas=1'])).code).toBe(0);
  await waitForStatus(stack, 'scaled', (s) => s.replicas === 1 && s.readyReplicas === 1, 'back to 1 replica');
  // Before lowering the Deployment the operator marked the two pods to remove; the ReplicaSet removed those.
  const marks = (await eventsFor(stack.cp, 'scaled')).filter((e) => e.reason === 'MarkedForRemoval');
  expect(marks).toHaveLength(1);
  const marked = /on (\S+), (\S+) before scaling to 1$/.exec(marks[0]!.note ?? marks[0]!.message ?? '');
  expect(marked).not.toBeNull();
  const survivors = await waitFor(
    async () => {
      const r = await stack.cp.kubectl(['get', 'pods', '-l', 'app.kubernetes.io/instance=scaled', '-o', 'name']);
      const names = r.stdout.split('\n').filter(Boolean);
      return names.length === 1 ? names.map((n) => n.replace('pod/', '')) : undefined;
    },
    { description: 'one pod left' },
  );
  expect([marked![1], marked![2]]).not.toContain(survivors[0]);
  const scaled = (await eventsFor(stack.cp, 'scaled'))
    .filter((e) => e.reason === 'Scaled')
    .map((e) => e.note ?? e.message);
  expect(scaled).toEqual(
    expect.arrayContaining([
      'scaled Deployment scaled from 1 to 3 replicas',
      'scaled Deployment scaled from 3 to 1 replicas',
    ]),
  );
});

it('is scaled by an autoscaling/v2 HorizontalPodAutoscaler targeting the ModelDeployment', async () => {
  expect((await applyManifest(stack.cp, modelDeploymentManifest('hpa', {}))).code).toBe(0);
  await waitForStatus(stack, 'hpa', (s) => s.readyReplicas === 1, '1 ready replica');
  const hpa = {
    apiVersion: 'autoscaling/v2',
    kind: 'HorizontalPodAutoscaler',
    metadata: { name: 'hpa', namespace: 'default' },
    spec: {
      scaleTargetRef: { apiVersion: 'serving.modelserve.dev/v1alpha1', kind: 'ModelDeployment', name: 'hpa' },
      // Below minReplicas the HPA scales up without needing any metric: it only exercises /scale.
      minReplicas: 2,
      maxReplicas: 4,
      metrics: [
        { type: 'Resource', resource: { name: 'cpu', target: { type: 'Utilization', averageUtilization: 80 } } },
      ],
    },
  };
  expect((await applyManifest(stack.cp, hpa)).code).toBe(0);
  await waitFor(async () => (await deploymentReplicas('hpa')) === 2, {
    timeoutMs: 120_000,
    description: 'the HPA to scale the Deployment to 2 through the ModelDeployment',
  });
  await waitForStatus(stack, 'hpa', (s) => s.readyReplicas === 2 && s.desiredReplicas === 2, '2 ready replicas');
});
