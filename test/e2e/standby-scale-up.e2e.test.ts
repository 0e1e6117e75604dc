// Scale-up through a standby replica: a model runs 1 serving replica + 1 standby (loaded, Ready, not routed to). With
// slow streams held open on the serving replica, `kubectl scale` to 2 promotes the standby by relabelling it: the new
// serving replica is the very pod that was standing by (same UID, started before the scale-up, never restarted), the
// gateway sends it requests, every request — held and new — completes, and the Deployment refills the standby pool
// with a fresh pod.
import { streamChat, type StreamResult } from '../support/chatStream.js';
import { tinyModelDeployment, useLocalSystem } from '../support/localSystem.js';
import { mdepField, scrapeMetric } from '../support/localSystemProbes.js';
import { waitFor } from '../support/wait.js';

const suite = useLocalSystem({ name: 'e2e-standby-scale-up', nodes: 3, gpusPerNode: 1 });

const TOKEN_DELAY_MS = 40;
const HELD_TOKENS = 200; // 200 × 40 ms: the held streams outlast the scale-up by seconds

const manifest = tinyModelDeployment(
  'standby',
  `
  engine:
    maxContext: 2048
    maxSeqs: 16
  replicas: 1
  prewarm:
    standbyReplicas: 1
  worker:
    env:
      - name: MODELSERVE_DEV_TOKEN_DELAY_MS
        value: "${TOKEN_DELAY_MS}"
  drain:
    maxSeconds: 30`,
);

interface PodRow {
  name: string;
  uid: string;
  ip: string;
  role: string;
  started: number;
  ready: boolean;
  restarts: number;
}

async function pods(): Promise<PodRow[]> {
  const res = await suite.sys.cp.kubectl([
    'get',
    'pods',
    '-l',
    'serving.modelserve.dev/model=standby',
    '-o',
    'jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.status.podIP} ' +
      '{.metadata.labels.serving\\.modelserve\\.dev/role} {.status.startTime} ' +
      '{.status.containerStatuses[0].ready} {.status.containerStatuses[0].restartCount} {.metadata.deletionTimestamp}{"\\n"}{end}',
  ]);
  return res.stdout
    .split('\n')
    .filter(Boolean)
    .map((line) => line.split(' '))
    .filter((f) => !f[7]) // terminating pods are not part of the pool
    .map(([name = '', uid = '', ip = '', role = '', started = '', ready = '', restarts = '0']) => ({
      name,
      uid,
      ip,
      role,
      started: Date.parse(started),
      ready: ready === 'true',
      restarts: Number(restarts),
    }));
}

const served = (ip: string): Promise<number> => scrapeMetric(`http://${ip}:8000/metrics`, 'vllm:request_success_total');

function expectComplete(r: StreamResult, tokens: number): void {
  expect(r.error).toBeUndefined();
  expect(r).toEqual(
    expect.objectContaining({ status: 200, finishReason: 'length', completionTokens: tokens, done: true }),
  );
}

test('scale-up to 2 promotes the standby (no cold start), serves every request, and refills the pool', async () => {
  const { sys } = suite;
  expect((await sys.cp.kubectl(['apply', '-f', '-'], { input: manifest })).code).toBe(0);
  await waitFor(
    async () =>
      (await mdepField(sys, 'standby', '{.status.conditions[?(@.type=="Ready")].message}')) ===
      '1/1 ready; 1/1 standby ready',
    { timeoutMs: 240_000, intervalMs: 1000, description: 'mdep/standby: 1 serving + 1 ready standby' },
  );
  const before = await pods();
  const serving = before.find((p) => p.role === 'serving');
  const standby = before.find((p) => p.role === 'standby');
  expect(before).toHaveLength(2);
  expect(serving?.ready && standby?.ready).toBe(true);

  // Held streams: while only one replica serves, they all run there and none on the standby.
  const held = Array.from({ length: 4 }, (_, i) =>
    streamChat(sys.gatewayUrl, { model: 'standby', prompt: `Held story ${i}.`, maxTokens: HELD_TOKENS }),
  );
  await Promise.all(held.map((s) => s.firstChunk));
  expect(await scrapeMetric(`http://${standby!.ip}:8000/metrics`, 'vllm:num_requests_running')).toBe(0);
  expect(await served(standby!.ip)).toBe(0);

  const scaledAt = Date.now();
  expect((await sys.cp.kubectl(['scale', 'mdep/standby', '--replicas=2'])).code).toBe(0);

  // Concurrent requests during and after the scale-up, until the promoted pod has answered some of them (the gateway
  // prefers the replica with less outstanding work, and the old one holds the streams).
  const during: Promise<StreamResult>[] = [];
  await waitFor(
    async () => {
      for (let i = 0; i < 4; i++) {
        during.push(
          streamChat(sys.gatewayUrl, { model: 'standby', prompt: `During ${during.length}.`, maxTokens: 8 }).result,
        );
      }
      await Promise.all(during.slice(-4));
      return (await served(standby!.ip)) > 0;
    },
    { timeoutMs: 60_000, intervalMs: 200, description: 'the promoted standby answered requests' },
  );

  const results = await Promise.all([...held.map((s) => s.result), ...during]);
  results.slice(0, held.length).forEach((r) => expectComplete(r, HELD_TOKENS));
  results.slice(held.length).forEach((r) => expectComplete(r, 8));
  // The held streams really ran across the scale-up.
  for (const r of results.slice(0, held.length)) expect(r.endedAt).toBeGreaterThan(scaledAt);

  // No cold start: the new serving replica is the former standby, started before the scale-up, never restarted.
  const now = await pods();
  const promoted = now.find((p) => p.uid === standby!.uid);
  expect(promoted).toEqual(expect.objectContaining({ role: 'serving', ready: true, restarts: 0, ip: standby!.ip }));
  expect(promoted!.started).toBeLessThan(scaledAt);
  expect(
    now
      .filter((p) => p.role === 'serving')
      .map((p) => p.uid)
      .sort(),
  ).toEqual([serving!.uid, standby!.uid].sort());

  // The pool is refilled: a new pod, loaded and Ready, standing by (and so not routed to).
  const refill = await waitFor(
    async () => (await pods()).find((p) => p.role === 'standby' && p.ready && p.uid !== standby!.uid),
    { timeoutMs: 240_000, intervalMs: 1000, description: 'a new ready standby' },
  );
  expect(refill.started).toBeGreaterThanOrEqual(Math.floor(scaledAt / 1000) * 1000);
  expect(await served(refill.ip)).toBe(0);
  await waitFor(
    async () =>
      (await mdepField(sys, 'standby', '{.status.readyReplicas}/{.status.conditions[?(@.type=="Ready")].message}')) ===
      '2/2/2 ready; 1/1 standby ready',
    { timeoutMs: 60_000, intervalMs: 1000, description: 'status: 2 ready serving + 1 ready standby' },
  );
}, 600_000);
