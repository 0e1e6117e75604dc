// Deleting a ModelDeployment removes everything the operator created: kube-controller-manager's garbage collector
// follows the owner references (no finalizer needed).
import { jest } from '@jest/globals';
import { waitFor } from '../../test/support/wait.js';
import { applyManifest, modelDeploymentManifest, startStack, waitForStatus, type Stack } from './harness.js';

jest.setTimeout(240_000);

let stack: Stack;
beforeAll(async () => {
  stack = await startStack({ gpuNodes: 1, gpusPerNode: 8 });
});
afterAll(async () => {
  await stack?.stop();
});

const owned = async () => {
  const r = await stack.cp.kubectl([
    'get',
    'deploy,rs,pods,svc,pdb,cm',
    '-l',
    'app.kubernetes.io/instance=doomed',
    '-o',
    'name',
  ]);
  if (r.code !== 0) throw new Error(r.stderr);
  return r.stdout.split('\n').filter(Boolean).sort();
};

it('garbage-collects the Deployment, its pods, Service, PDB and ConfigMap', async () => {
  expect((await applyManifest(stack.cp, modelDeploymentManifest('doomed', { replicas: 2 }))).code).toBe(0);
  await waitForStatus(stack, 'doomed', (s) => s.readyReplicas === 2, '2 ready replicas');
  const before = await owned();
  expect(before.filter((n) => !n.startsWith('pod/') && !n.startsWith('replicaset.apps/'))).toEqual([
    'configmap/doomed-engine',
    'deployment.apps/doomed',
    'poddisruptionbudget.policy/doomed',
    'service/doomed',
  ]);
  expect(before.filter((n) => n.startsWith('pod/'))).toHaveLength(2);

  const del = await stack.cp.kubectl(['delete', 'mdep', 'doomed', '--wait=true']);
  expect(del.code).toBe(0);
  await waitFor(async () => (await owned()).length === 0, {
    timeoutMs: 120_000,
    description: 'every owned object to be garbage-collected',
  });
});
