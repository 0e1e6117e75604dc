// Standby replicas on a real control plane (kwok runs the pods): the operator keeps spec.prewarm.standbyReplicas extra
// pods labelled role=standby, the gateway's discovery (the real KubeDiscovery, watching EndpointSlices) never lists
// them, a scale-up promotes the ready standby by relabelling it (same pod UID, no restart) so discovery lists it, and
// the Deployment refills the standby pool with a new pod.
import { jest } from '@jest/globals';
import type { V1Pod } from '@kubernetes/client-node';
import { waitFor } from '../../test/support/wait.js';
import { LABEL_ROLE } from '../src/controller/standby.js';
import { KubeDiscovery } from '../src/gateway/discovery.js';
import { collectionPath, resources } from '../src/k8s/resources.js';
import { applyManifest, eventsFor, modelDeploymentManifest, startStack, waitForStatus, type Stack } from './harness.js';

jest.setTimeout(300_000);

let stack: Stack;
let discovery: KubeDiscovery;
beforeAll(async () => {
  stack = await startStack({ gpuNodes: 2, gpusPerNode: 4 });
  discovery = new KubeDiscovery(stack.api, {
    namespace: 'default',
    resyncMs: 300_000,
    onError: (err) => console.warn('discovery', err),
  });
  await discovery.start();
}, 180_000);
afterAll(async () => {
  await discovery?.stop();
  await stack?.stop();
});

const PORT = 8000;
const live = async (instance: string): Promise<V1Pod[]> =>
  (
    await stack.api.get<{ items: V1Pod[] }>(collectionPath(resources.pods, 'default'), {
      labelSelector: `app.kubernetes.io/instance=${instance}`,
    })
  ).items.filter((p) => !p.metadata?.deletionTimestamp);
const withRole = (pods: V1Pod[], role: string) => pods.filter((p) => p.metadata?.labels?.[LABEL_ROLE] === role);
const ready = (p: V1Pod) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;
const address = (p: V1Pod) => `${p.status?.podIP}:${PORT}`;
const routed = (model: string) => discovery.target(model)?.endpoints ?? [];

it('keeps a ready standby out of the gateway, promotes it on scale-up without a restart, and refills the pool', async () => {
  const manifest = modelDeploymentManifest('sb', {
    replicas: 1,
    resources: { gpus: 1 },
    prewarm: { standbyReplicas: 1 },
  });
  expect((await applyManifest(stack.cp, manifest)).code).toBe(0);
  await waitForStatus(
    stack,
    'sb',
    (s) =>
      s.readyReplicas === 1 &&
      s.standbyReplicas === 1 &&
      s.readyStandbyReplicas === 1 &&
      s.conditions?.find((c) => c.type === 'Ready')?.message === '1/1 ready; 1/1 standby ready',
    '1 serving + 1 ready standby',
  );
  const before = await live('sb');
  expect(before).toHaveLength(2);
  const [serving] = withRole(before, 'serving');
  const [standby] = withRole(before, 'standby');
  expect(serving && standby && ready(serving) && ready(standby)).toBe(true);

  // The gateway sees the serving pod only — and keeps not seeing the standby (it is Ready the whole time).
  await waitFor(() => routed('sb-model').join() === address(serving!), {
    description: `discovery lists only ${address(serving!)}`,
  });
  expect(routed('sb-model')).not.toContain(address(standby!));
  expect((await waitForStatus(stack, 'sb', () => true, 'status')).selector).toBe(
    'app.kubernetes.io/name=modelserve-worker,app.kubernetes.io/instance=sb,serving.modelserve.dev/role=serving',
  );

  const scaled = await stack.cp.kubectl(['scale', 'mdep/sb', '--replicas=2']);
  expect(scaled.code).toBe(0);
  // The former standby serves: same UID, never restarted, and the gateway routes to it.
  await waitFor(() => routed('sb-model').includes(address(standby!)), {
    description: `discovery lists the promoted ${standby!.metadata!.name}`,
  });
  const promoted = (await live('sb')).find((p) => p.metadata?.uid === standby!.metadata?.uid);
  expect(promoted?.metadata?.labels?.[LABEL_ROLE]).toBe('serving');
  expect(promoted?.status?.containerStatuses?.every((c) => c.restartCount === 0) ?? true).toBe(true);
  // kwok makes the refill pod Ready at once, so it can show up for the moment before the operator demotes it (a
  // real worker is still loading then); what must hold is that the routed set settles on exactly the two serving pods.
  const servingSet = [address(serving!), address(standby!)].sort().join();
  await waitFor(() => routed('sb-model').sort().join() === servingSet, {
    description: `discovery settles on ${servingSet}`,
  });

  // The pool is topped up with a new pod, which stays out of the gateway once ready.
  const after = await waitFor(
    async () => {
      const pods = await live('sb');
      const fresh = withRole(pods, 'standby').filter((p) => ready(p));
      return pods.length === 3 && fresh.length === 1 ? { pods, fresh: fresh[0]! } : undefined;
    },
    { description: '2 serving + 1 new ready standby' },
  );
  expect([serving!.metadata!.uid, standby!.metadata!.uid]).not.toContain(after.fresh.metadata!.uid);
  await waitForStatus(stack, 'sb', (s) => s.readyReplicas === 2 && s.replicas === 2, '2 serving replicas');
  expect(routed('sb-model')).not.toContain(address(after.fresh));
  expect(routed('sb-model')).toHaveLength(2);

  const promotions = (await eventsFor(stack.cp, 'sb')).filter((e) => e.reason === 'PromotedStandby');
  expect(promotions.map((e) => e.note ?? e.message)).toContainEqual(
    `promoted standby ${standby!.metadata!.name} to serving (2 serving wanted)`,
  );

  // Scaling back down leaves one serving pod and one standby; the gateway routes to exactly the serving one.
  expect((await stack.cp.kubectl(['scale', 'mdep/sb', '--replicas=1'])).code).toBe(0);
  const down = await waitFor(
    async () => {
      const pods = await live('sb');
      const s = withRole(pods, 'serving');
      const b = withRole(pods, 'standby');
      return pods.length === 2 && s.length === 1 && b.length === 1 && routed('sb-model').join() === address(s[0]!)
        ? { serving: s[0]!, standby: b[0]! }
        : undefined;
    },
    { description: '1 serving + 1 standby after scaling down, discovery on the serving pod only' },
  );
  expect(routed('sb-model')).not.toContain(address(down.standby));
});

it('scales a zero-replica model up by promoting its standby', async () => {
  const manifest = modelDeploymentManifest('zero-sb', {
    replicas: 0,
    resources: { gpus: 1 },
    prewarm: { standbyReplicas: 1 },
  });
  expect((await applyManifest(stack.cp, manifest)).code).toBe(0);
  const standby = await waitFor(
    async () => {
      const pods = await live('zero-sb');
      return pods.length === 1 && ready(pods[0]!) && withRole(pods, 'standby').length === 1 ? pods[0] : undefined;
    },
    { description: 'one ready standby at zero replicas' },
  );
  expect(routed('zero-sb-model')).toEqual([]);
  expect((await stack.cp.kubectl(['scale', 'mdep/zero-sb', '--replicas=1'])).code).toBe(0);
  await waitFor(() => routed('zero-sb-model').join() === address(standby), {
    description: 'the standby routed after scaling from zero',
  });
  // The Deployment's new pod (the pool's refill) is created with the template's serving label and relabelled standby
  // by the operator's next pass; until then it is not ready, so nothing routes to it. Once relabelled, the promoted
  // standby is the only serving pod.
  await waitFor(
    async () => {
      const serving = withRole(await live('zero-sb'), 'serving').map((p) => p.metadata?.uid);
      return serving.length === 1 && serving[0] === standby.metadata?.uid;
    },
    { description: 'the promoted standby the only serving pod' },
  );
  expect(routed('zero-sb-model')).toEqual([address(standby)]);
});

it('keeps one serving pod routed and the standby pool full through a rolling update', async () => {
  const spec = (maxSeqs: number) =>
    modelDeploymentManifest('roll-sb', {
      replicas: 1,
      resources: { gpus: 1 },
      engine: { maxSeqs },
      prewarm: { standbyReplicas: 1 },
    });
  expect((await applyManifest(stack.cp, spec(32))).code).toBe(0);
  const settled = (s: NonNullable<Awaited<ReturnType<typeof waitForStatus>>>) =>
    s.readyReplicas === 1 &&
    s.conditions?.find((c) => c.type === 'Progressing')?.reason === 'Settled' &&
    s.conditions?.find((c) => c.type === 'Ready')?.message === '1/1 ready; 1/1 standby ready';
  await waitForStatus(stack, 'roll-sb', settled, 'settled with 1 serving + 1 standby');
  const before = new Set((await live('roll-sb')).map((p) => p.metadata?.uid));

  // An engine change rolls every pod (the ConfigMap hash is in the template). Watch the gateway's view throughout.
  await waitFor(() => routed('roll-sb-model').length === 1, { description: 'roll-sb routed' });
  const emptyAt: number[] = [];
  let watching = true;
  discovery.onChange(() => {
    if (watching && routed('roll-sb-model').length === 0) emptyAt.push(Date.now());
  });
  expect((await applyManifest(stack.cp, spec(16))).code).toBe(0);
  const after = await waitFor(
    async () => {
      const pods = await live('roll-sb');
      const fresh = pods.every((p) => !before.has(p.metadata?.uid));
      const serving = withRole(pods, 'serving').filter(ready);
      const standby = withRole(pods, 'standby').filter(ready);
      return fresh && pods.length === 2 && serving.length === 1 && standby.length === 1
        ? { serving, standby }
        : undefined;
    },
    { timeoutMs: 120_000, description: 'both pods replaced: 1 serving + 1 standby' },
  );
  await waitFor(() => routed('roll-sb-model').join() === address(after.serving[0]!), {
    description: 'discovery lists only the new serving pod',
  });
  await waitForStatus(stack, 'roll-sb', settled, 'settled again after the rollout');
  watching = false;
  // Promotion of a new ready pod comes before the old serving pod is removed: the gateway always had one.
  expect(emptyAt).toEqual([]);
});
