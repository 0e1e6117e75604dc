// A spec change that alters the pod template (here the engine config) rolls the pods: the Deployment gets a new
// ReplicaSet, the old pods are replaced, the status goes Progressing and settles again, and an Updated Event says so.
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

const replicaSets = async () =>
  JSON.parse((await stack.cp.kubectl(['get', 'rs', '-l', 'app.kubernetes.io/instance=roll', '-o', 'json'])).stdout)
    .items as { metadata: { name: string }; spec: { replicas: number } }[];
const podNames = async () =>
  (
    JSON.parse((await stack.cp.kubectl(['get', 'pods', '-l', 'app.kubernetes.io/instance=roll', '-o', 'json'])).stdout)
      .items as { metadata: { name: string } }[]
  )
    .map((p) => p.metadata.name)
    .sort();

it('rolls the pods onto a new ReplicaSet when the engine configuration changes', async () => {
  expect((await applyManifest(stack.cp, modelDeploymentManifest('roll', { replicas: 2 }))).code).toBe(0);
  await waitForStatus(
    stack,
    'roll',
    (s) => s.readyReplicas === 2 && condition(s, 'Progressing')?.status === 'False',
    'settled at 2',
  );
  const [firstRs] = await replicaSets();
  const firstPods = await podNames();

  const changed = await applyManifest(
    stack.cp,
    modelDeploymentManifest('roll', { replicas: 2, engine: { maxSeqs: 32 } }),
  );
  expect(changed.code).toBe(0);
  const settled = await waitForStatus(
    stack,
    'roll',
    (s) => s.observedGeneration === 2 && s.readyReplicas === 2 && condition(s, 'Progressing')?.status === 'False',
    'rolled out generation 2',
  );
  expect(condition(settled, 'Ready')?.status).toBe('True');

  const sets = await replicaSets();
  expect(sets).toHaveLength(2);
  const active = sets.filter((rs) => rs.spec.replicas > 0);
  expect(active).toHaveLength(1);
  expect(active[0]!.metadata.name).not.toBe(firstRs!.metadata.name);
  await waitFor(async () => (await podNames()).length === 2, { description: 'old pods gone' });
  const newPods = await podNames();
  expect(newPods.filter((p) => firstPods.includes(p))).toEqual([]);

  const cm = JSON.parse((await stack.cp.kubectl(['get', 'cm', 'roll-engine', '-o', 'json'])).stdout);
  expect(JSON.parse(cm.data['engine.json']).engine.maxSeqs).toBe(32);
  const updated = (await eventsFor(stack.cp, 'roll'))
    .filter((e) => e.reason === 'Updated')
    .map((e) => e.note ?? e.message);
  expect(updated.sort()).toEqual(['updated ConfigMap roll-engine', 'updated Deployment roll']);
});
