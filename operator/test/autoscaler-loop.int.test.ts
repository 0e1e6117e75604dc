// The autoscaler loop in-process against a real API server (CRD from crds/) and a real redis-server: queue depth
// written the way the gateway writes it raises spec.replicas through /scale; a drained queue scales down after the
// window and to zero; a wake message scales from zero without waiting for a tick; a restarted loop keeps the count
// and its windows (state in Redis); a killed Redis is survived without scaling down blind.
import { jest } from '@jest/globals';
import { Redis } from 'ioredis';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startControlPlane, type ControlPlane } from '../../test/support/controlPlane.js';
import { startRedis, type RedisServer } from '../../test/support/redis.js';
import { waitFor } from '../../test/support/wait.js';
import type { ModelDeployment } from '../src/api/modelDeployment.js';
import { Autoscaler } from '../src/autoscaler/loop.js';
import type { PolicyState } from '../src/autoscaler/policy.js';
import { encodeWake, stateKey, WAKE_CHANNEL, writeQueueLength } from '../src/autoscaler/signals-keys.js';
import { collectionPath, objectPath, resources } from '../src/k8s/resources.js';
import { KubeClient } from '../src/k8s/rest.js';
import { createAutoscaledModel } from './autoscaled-model.js';
import { createLogger } from '../src/telemetry/logger.js';

jest.setTimeout(180_000);

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const crdFile = path.join(repoRoot, 'crds/serving.modelserve.dev_modeldeployments.yaml');
const NS = 'default';

let cp: ControlPlane;
let redisServer: RedisServer;
let api: KubeClient;
let gatewayRedis: Redis;
const logs: { level: string; msg: string }[] = [];
const scalers: Autoscaler[] = [];
/** Fake gateway replicas' queue lengths, rewritten every 500 ms as the gateway does. */
const queues = new Map<string, number>();
let gatewayTimer: NodeJS.Timeout | undefined;

async function kubectl(args: string[]): Promise<string> {
  const r = await cp.kubectl(args);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

beforeAll(async () => {
  [cp, redisServer] = await Promise.all([startControlPlane({ gpuNodes: 0 }), startRedis('autoscaler-redis')]);
  await kubectl(['apply', '--server-side', '-f', crdFile]);
  await kubectl([
    'wait',
    '--for=condition=Established',
    '--timeout=60s',
    'crd/modeldeployments.serving.modelserve.dev',
  ]);
  api = new KubeClient(cp.kubeConfig);
  gatewayRedis = new Redis(redisServer.url, { maxRetriesPerRequest: 1, retryStrategy: () => 200 });
  gatewayRedis.on('error', () => undefined);
  const publish = () => {
    for (const [k, waiting] of queues) {
      const [model, gatewayId] = k.split('|') as [string, string];
      void writeQueueLength(gatewayRedis, { namespace: NS, model, gatewayId, waiting }).catch(() => undefined);
    }
  };
  gatewayTimer = setInterval(publish, 500);
});

afterAll(async () => {
  if (gatewayTimer) clearInterval(gatewayTimer);
  for (const s of scalers) await s.stop();
  gatewayRedis?.disconnect();
  api?.close();
  await redisServer?.stop();
  await cp?.stop();
});

function newAutoscaler(tickMs = 1000): Autoscaler {
  const log = createLogger('info', {}, (line) => logs.push(JSON.parse(line) as { level: string; msg: string }));
  // A 6 s stable window (30 s by default) keeps the drain and scale-to-zero steps short.
  const a = new Autoscaler({
    client: api,
    redisUrl: redisServer.url,
    log,
    identity: 'test',
    tickMs,
    statusIntervalMs: 1000,
    tuning: { stableWindowSeconds: 6 },
  });
  scalers.push(a);
  return a;
}

const createModel = (name: string, autoscaling: Record<string, unknown>, replicas: number): Promise<void> =>
  createAutoscaledModel(api, NS, name, autoscaling, replicas);

const get = (name: string) => api.get<ModelDeployment>(objectPath(resources.modelDeployments, NS, name));
const replicasOf = async (name: string) => (await get(name)).spec.replicas;
/** spec.replicas is written before the status: wait for both, the count and its history entry. */
async function waitForScale(name: string, to: number, timeoutMs = 30_000): Promise<ModelDeployment> {
  return waitFor(
    async () => {
      const m = await get(name);
      return m.spec.replicas === to && m.status?.scalingHistory?.at(-1)?.to === to ? m : undefined;
    },
    { timeoutMs, description: `${name} at ${to} with its history entry` },
  );
}
const decisions = (a: Autoscaler, name: string) => a.decisions.get(`${NS}/${name}`) ?? 0;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('autoscaler loop', () => {
  it('scales on the gateway queue through /scale, down after the window, then to zero; records history and Events', async () => {
    await createModel(
      'chat',
      {
        minReplicas: 0,
        maxReplicas: 8,
        queueDepthPerReplica: 4,
        scaleDownStabilizationSeconds: 4,
        scaleToZeroAfterSeconds: 6,
      },
      1,
    );
    const a = newAutoscaler();
    await a.start();
    await waitFor(() => decisions(a, 'chat') > 0, { timeoutMs: 20_000, description: 'first decision' });

    // Two gateway replicas queue 10 + 6 = 16 requests: 16 / 4 per replica = 4 replicas, within two ticks.
    const before = decisions(a, 'chat');
    queues.set('chat-model|gw-a', 10);
    queues.set('chat-model|gw-b', 6);
    let mdep = await waitForScale('chat', 4);
    expect(decisions(a, 'chat') - before).toBeLessThanOrEqual(3); // the tick in flight + two
    const up = mdep.status!.scalingHistory!.at(-1)!;
    expect(up).toMatchObject({ from: 1, to: 4, reason: 'QueueDepth', applied: true });
    expect(mdep.status!.signals!.queueDepth).toBe(16);
    expect(mdep.status!.conditions!.find((c) => c.type === 'ScalingLimited')?.status).toBe('False');
    const events = await api.get<{ items: { reason: string; regarding: { name: string } }[] }>(
      collectionPath(resources.events, NS),
    );
    expect(events.items.some((e) => e.regarding.name === 'chat' && e.reason === 'QueueDepth')).toBe(true);

    // The queue drains: no scale down before the 4 s window has passed, then to 1, then to 0 after 6 s idle.
    queues.set('chat-model|gw-a', 0);
    queues.set('chat-model|gw-b', 0);
    const drainedAt = Date.now();
    mdep = await waitForScale('chat', 0, 40_000);
    const history = mdep.status!.scalingHistory!;
    const down = history.find((h) => h.from === 4)!;
    expect(down.to).toBeLessThan(4);
    expect(Date.parse(down.time)).toBeGreaterThanOrEqual(Math.floor(drainedAt / 1000) * 1000 + 3000);
    expect(history.at(-1)).toMatchObject({ to: 0, reason: 'ScaleToZero', applied: true });
    await a.stop();
  });

  it('scales from zero on a wake message without waiting for the next tick', async () => {
    await createModel(
      'wake',
      { minReplicas: 0, maxReplicas: 4, queueDepthPerReplica: 4, scaleToZeroAfterSeconds: 600 },
      0,
    );
    const a = newAutoscaler(600_000); // one tick at start, the next in 10 minutes
    await a.start();
    await waitFor(() => decisions(a, 'wake') > 0, { timeoutMs: 20_000, description: 'first decision' });
    expect(await replicasOf('wake')).toBe(0);
    queues.set('wake-model|gw-a', 2);
    await sleep(600);
    await gatewayRedis.publish(
      WAKE_CHANNEL,
      encodeWake({ namespace: NS, model: 'wake-model', waiting: 2, at: Date.now() }),
    );
    const woken = await waitForScale('wake', 1, 10_000);
    expect(woken.status!.scalingHistory!.at(-1)).toMatchObject({ from: 0, reason: 'ScaleFromZero' });
    expect(decisions(a, 'wake')).toBe(2);
    queues.delete('wake-model|gw-a');
    await a.stop();
  });

  it('in Shadow mode records the recommendation without applying it', async () => {
    await createModel('shadow', { mode: 'Shadow', minReplicas: 1, maxReplicas: 8, queueDepthPerReplica: 4 }, 2);
    const a = newAutoscaler();
    await a.start();
    queues.set('shadow-model|gw-a', 24);
    const mdep = await waitFor(
      async () => {
        const m = await get('shadow');
        return m.status?.scalingHistory?.length ? m : undefined;
      },
      { timeoutMs: 20_000, description: 'a shadow history entry' },
    );
    expect(mdep.status!.scalingHistory!.at(-1)).toMatchObject({ from: 2, to: 6, reason: 'QueueDepth', applied: false });
    await waitFor(() => decisions(a, 'shadow') >= 4, { timeoutMs: 20_000, description: 'more decisions' });
    const after = await get('shadow');
    expect(after.spec.replicas).toBe(2);
    expect(after.status!.scalingHistory).toHaveLength(1); // an unchanged recommendation is not recorded again
    const events = await api.get<{ items: { reason: string; regarding: { name: string } }[] }>(
      collectionPath(resources.events, NS),
    );
    expect(events.items.some((e) => e.regarding.name === 'shadow' && e.reason === 'ShadowQueueDepth')).toBe(true);
    queues.delete('shadow-model|gw-a');
    await a.stop();
  });

  it('keeps the count and its windows across a loop restart (state in Redis)', async () => {
    await createModel(
      'restart',
      { minReplicas: 1, maxReplicas: 8, queueDepthPerReplica: 4, scaleDownStabilizationSeconds: 30 },
      1,
    );
    const first = newAutoscaler();
    await first.start();
    queues.set('restart-model|gw-a', 20);
    await waitFor(async () => (await replicasOf('restart')) === 5, { timeoutMs: 20_000, description: 'restart at 5' });
    await first.stop();
    queues.set('restart-model|gw-a', 0);
    const restartedAt = Date.now();

    const second = newAutoscaler();
    await second.start();
    await waitFor(() => decisions(second, 'restart') >= 3, { timeoutMs: 20_000, description: 'three decisions' });
    expect(await replicasOf('restart')).toBe(5);
    const raw = await gatewayRedis.get(stateKey(NS, 'restart'));
    const state = (JSON.parse(raw!) as { policy: PolicyState }).policy;
    // The recommendations of the first loop (5, before the restart) are still in the window the second one uses.
    expect(state.recs.some(([t, r]) => t < restartedAt && r === 5)).toBe(true);
    expect((await get('restart')).status!.conditions!.find((c) => c.type === 'ScalingLimited')).toBeDefined();
    await second.stop();
  });

  it('survives Redis being killed: no crash, no scale down while blind, scales again once Redis is back', async () => {
    await createModel(
      'blind',
      { minReplicas: 1, maxReplicas: 8, queueDepthPerReplica: 4, scaleDownStabilizationSeconds: 2 },
      1,
    );
    const a = newAutoscaler();
    await a.start();
    queues.set('blind-model|gw-a', 12);
    await waitFor(async () => (await replicasOf('blind')) === 3, { timeoutMs: 20_000, description: 'blind at 3' });

    await redisServer.kill();
    const atKill = decisions(a, 'blind');
    // Blind for longer than the stabilization window, with the (unreadable) queue gone.
    queues.set('blind-model|gw-a', 0);
    await waitFor(() => decisions(a, 'blind') >= atKill + 5, {
      timeoutMs: 30_000,
      description: 'five blind decisions',
    });
    expect(await replicasOf('blind')).toBe(3);
    expect(logs.some((l) => l.msg === 'gateway queue unavailable; holding replicas')).toBe(true);

    await redisServer.start(); // empty: the state is gone too; the loop starts a fresh window at the current count
    queues.set('blind-model|gw-a', 30);
    await waitFor(async () => (await replicasOf('blind')) === 8, { timeoutMs: 30_000, description: 'blind at 8' });
    queues.set('blind-model|gw-a', 0);
    // Down by at most half per step once the (fresh) 2 s window has passed.
    await waitFor(async () => (await replicasOf('blind')) === 4, { timeoutMs: 30_000, description: 'blind down to 4' });
    await a.stop();
  });
});
