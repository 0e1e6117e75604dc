// Bad input the schema cannot catch: a Service of the ModelDeployment's name already exists under another controller.
// The operator must not fight over it; the failed write shows up as Degraded/ApplyFailed naming the object, once.
import { jest } from '@jest/globals';
import { waitFor } from '../../test/support/wait.js';
import {
  applyManifest,
  condition,
  eventsFor,
  modelDeploymentManifest,
  startStack,
  waitForStatus,
  type Stack,
} from './harness.js';

jest.setTimeout(240_000);

let stack: Stack;
beforeAll(async () => {
  stack = await startStack({ gpuNodes: 1, gpusPerNode: 8 });
});
afterAll(async () => {
  await stack?.stop();
});

it('reports a Service owned by another controller as Degraded/ApplyFailed and creates no Deployment', async () => {
  expect((await stack.cp.kubectl(['create', 'configmap', 'someone-else'])).code).toBe(0);
  const uid = (await stack.cp.kubectl(['get', 'configmap', 'someone-else', '-o', 'jsonpath={.metadata.uid}'])).stdout;
  const foreign = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name: 'clash',
      namespace: 'default',
      ownerReferences: [{ apiVersion: 'v1', kind: 'ConfigMap', name: 'someone-else', uid, controller: true }],
    },
    spec: { ports: [{ port: 80 }] },
  };
  expect((await applyManifest(stack.cp, foreign)).code).toBe(0);

  expect((await applyManifest(stack.cp, modelDeploymentManifest('clash', {}))).code).toBe(0);
  const status = await waitForStatus(stack, 'clash', (s) => condition(s, 'Degraded')?.status === 'True', 'Degraded');
  const degraded = condition(status, 'Degraded')!;
  expect(degraded.reason).toBe('ApplyFailed');
  expect(degraded.message).toMatch(/^service: PATCH \/api\/v1\/namespaces\/default\/services\/clash: 422/);
  expect(degraded.message).toMatch(/Only one reference can have Controller set to true/);
  expect((await stack.cp.kubectl(['get', 'deploy', 'clash'])).code).not.toBe(0);

  const warnings = async () => (await eventsFor(stack.cp, 'clash')).filter((e) => e.reason === 'ApplyFailed');
  await waitFor(async () => (await warnings()).length > 0, { description: 'an ApplyFailed Warning Event' });
  // The reconcile keeps retrying with backoff; the Event is not repeated for the same failure.
  await new Promise((r) => setTimeout(r, 3000));
  expect(await warnings()).toHaveLength(1);
});
