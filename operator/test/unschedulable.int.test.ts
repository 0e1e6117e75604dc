// Valid but unserviceable: a replica needing more GPUs than any node has stays Pending; the operator reports
// Degraded/Unschedulable with the scheduler's message and records one Warning Event.
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
  stack = await startStack({ gpuNodes: 2, gpusPerNode: 8 });
});
afterAll(async () => {
  await stack?.stop();
});

it('reports Degraded with reason Unschedulable when no node has enough GPUs', async () => {
  const r = await applyManifest(stack.cp, modelDeploymentManifest('huge', { resources: { gpus: 16 } }));
  expect(r.code).toBe(0);
  const status = await waitForStatus(stack, 'huge', (s) => condition(s, 'Degraded')?.status === 'True', 'Degraded');
  const degraded = condition(status, 'Degraded')!;
  expect(degraded.reason).toBe('Unschedulable');
  expect(degraded.message).toMatch(
    /^pod huge-[a-z0-9]+-[a-z0-9]+: 0\/2 nodes are available: .*Insufficient nvidia\.com\/gpu/,
  );
  expect(condition(status, 'Ready')).toEqual(expect.objectContaining({ status: 'False', reason: 'NoReplicasReady' }));
  expect(status.readyReplicas).toBe(0);

  const warnings = async () =>
    (await eventsFor(stack.cp, 'huge')).filter((e) => e.type === 'Warning' && e.reason === 'Unschedulable');
  await waitFor(async () => (await warnings()).length > 0, { description: 'an Unschedulable Warning Event' });
  // Later reconciles (pod updates, requeues) see the same reason and must not repeat the Event.
  await stack.cp.kubectl(['annotate', 'mdep', 'huge', 'touched=1']);
  await new Promise((r) => setTimeout(r, 2000));
  expect(await warnings()).toHaveLength(1);
});
