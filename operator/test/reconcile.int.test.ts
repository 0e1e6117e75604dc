// Apply → the operator (running as its RBAC-limited ServiceAccount) creates the ConfigMap, Deployment, Service and
// PodDisruptionBudget with owner references and GPU requests → kwok runs the pods on fake GPU nodes → status Ready.
import { jest } from '@jest/globals';
import type { V1ConfigMap, V1Deployment, V1PodDisruptionBudget, V1Service } from '@kubernetes/client-node';
import { startControlPlane, type ControlPlane } from '../../test/support/controlPlane.js';
import { waitFor } from '../../test/support/wait.js';
import type { ModelDeployment } from '../src/api/modelDeployment.js';
import { objectPath, resources } from '../src/k8s/resources.js';
import type { KubeClient } from '../src/k8s/rest.js';
import {
  adminClient,
  applyManifest,
  installCrd,
  modelDeploymentManifest,
  operatorKubeconfig,
  startOperator,
  type OperatorProcess,
} from './harness.js';

jest.setTimeout(240_000);

let cp: ControlPlane;
let op: OperatorProcess | undefined;
let api: KubeClient;
beforeAll(async () => {
  cp = await startControlPlane({ gpuNodes: 2, gpusPerNode: 8 });
  await installCrd(cp);
  api = adminClient(cp);
  op = await startOperator(cp, await operatorKubeconfig(cp));
});
afterAll(async () => {
  api?.close();
  await op?.stop();
  await cp?.stop();
});

const mdepStatus = async (name: string) =>
  (await api.get<ModelDeployment>(objectPath(resources.modelDeployments, 'default', name))).status;

describe('reconciling a ModelDeployment', () => {
  it('creates the owned objects, runs the pods on GPU nodes and reports Ready', async () => {
    const r = await applyManifest(
      cp,
      modelDeploymentManifest('chat', { replicas: 2, resources: { gpus: 2, cpu: '4', memory: '16Gi' } }),
    );
    expect(r.stderr).toBe('');
    const mdep = await api.get<ModelDeployment>(objectPath(resources.modelDeployments, 'default', 'chat'));

    const deployment = await waitFor(
      () => api.get<V1Deployment>(objectPath(resources.deployments, 'default', 'chat')),
      { timeoutMs: 60_000, description: 'Deployment chat' },
    );
    const container = deployment.spec!.template.spec!.containers[0]!;
    expect(container.resources!.limits!['nvidia.com/gpu']).toBe('2');
    expect(container.resources!.requests).toEqual({ 'nvidia.com/gpu': '2', cpu: '4', memory: '16Gi' });
    expect(container.image).toBe('modelserve/worker:test');
    expect(deployment.spec!.replicas).toBe(2);

    const service = await api.get<V1Service>(objectPath(resources.services, 'default', 'chat'));
    const pdb = await api.get<V1PodDisruptionBudget>(objectPath(resources.podDisruptionBudgets, 'default', 'chat'));
    const cm = await api.get<V1ConfigMap>(objectPath(resources.configMaps, 'default', 'chat-engine'));
    for (const obj of [deployment, service, pdb, cm]) {
      expect(obj.metadata!.ownerReferences).toEqual([
        expect.objectContaining({ kind: 'ModelDeployment', name: 'chat', uid: mdep.metadata.uid, controller: true }),
      ]);
    }
    expect(JSON.parse(cm.data!['engine.json']!).model.name).toBe('chat-model');

    const status = await waitFor(
      async () => {
        const s = await mdepStatus('chat');
        return s?.conditions?.find((c) => c.type === 'Ready' && c.status === 'True') ? s : undefined;
      },
      { timeoutMs: 90_000, description: 'chat Ready' },
    );
    expect(status).toEqual(
      expect.objectContaining({
        readyReplicas: 2,
        replicas: 2,
        desiredReplicas: 2,
        observedGeneration: 1,
        // Serving pods only (standbys, controller/standby.ts, carry role=standby).
        selector:
          'app.kubernetes.io/name=modelserve-worker,app.kubernetes.io/instance=chat,serving.modelserve.dev/role=serving',
        endpoint: 'http://chat.default.svc.cluster.local:8000',
      }),
    );

    const pods = JSON.parse((await cp.kubectl(['get', 'pods', '-l', status!.selector!, '-o', 'json'])).stdout);
    expect(pods.items).toHaveLength(2);
    for (const p of pods.items) {
      expect(p.status.phase).toBe('Running');
      expect(p.spec.nodeName).toMatch(/^gpu-node-/);
    }

    const events = JSON.parse(
      (await cp.kubectl(['get', 'events', '--field-selector', 'involvedObject.name=chat', '-o', 'json'])).stdout,
    );
    const created = events.items.filter((e: { reason: string }) => e.reason === 'Created');
    expect(created.map((e: { note?: string; message?: string }) => e.note ?? e.message).sort()).toEqual([
      'created ConfigMap chat-engine',
      'created Deployment chat',
      'created PodDisruptionBudget chat',
      'created Service chat',
    ]);
  });

  it('exports its metrics and stays quiet when nothing changes', async () => {
    const text = await op!.metrics();
    expect(text).toMatch(/modelserve_operator_reconcile_total\{result="(success|requeue)"\} \d+/);
    expect(text).toMatch(/modelserve_operator_leader 1/);
    expect(text).toMatch(/modelserve_operator_reconcile_duration_seconds_bucket/);
    expect((await fetch(`http://127.0.0.1:${op!.port}/healthz`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${op!.port}/readyz`)).status).toBe(200);
    const applies = () => (text.match(/modelserve_operator_applied_objects_total\{[^}]*\} \d+/g) ?? []).join();
    const before = applies();
    // Touch the object without changing its spec: a reconcile runs, but must not write anything.
    await cp.kubectl(['annotate', 'mdep', 'chat', 'touched=1']);
    await cp.kubectl(['get', 'mdep', 'chat']);
    await new Promise((r) => setTimeout(r, 2000));
    const after = (await op!.metrics()).match(/modelserve_operator_applied_objects_total\{[^}]*\} \d+/g)?.join();
    expect(after).toBe(before);
  });
});
