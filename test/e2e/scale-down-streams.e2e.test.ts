// Scaling down during two-minute streams truncates none: four slow streams (the worker's development token pacing,
// MODELSERVE_DEV_TOKEN_DELAY_MS) run on two replicas, `kubectl scale` takes the ModelDeployment to one, and every
// stream still ends with its finish_reason, its usage and [DONE] — while the removed pod drained: it got SIGTERM with
// streams in flight, waited for them (outcome idle), and exited 0 rather than being killed.
import fs from 'node:fs';
import path from 'node:path';

import { streamChat } from '../support/chatStream.js';
import { tinyModelDeployment, useLocalSystem } from '../support/localSystem.js';
import { podLogLines, waitForReadyReplicas, workerRunning } from '../support/localSystemProbes.js';
import { waitFor } from '../support/wait.js';

const suite = useLocalSystem({ name: 'e2e-scale-down-streams', nodes: 2, gpusPerNode: 1 });

const TOKENS = 1200;
const TOKEN_DELAY_MS = 100; // 1200 tokens × 100 ms: each stream lasts at least two minutes
const STREAMS = 4;

const manifest = tinyModelDeployment(
  'longstream',
  `
  engine:
    maxContext: 2048
    maxSeqs: 8
  replicas: 2
  worker:
    env:
      - name: MODELSERVE_DEV_TOKEN_DELAY_MS
        value: "${TOKEN_DELAY_MS}"
  drain:
    maxSeconds: 300`,
);

interface PodRow {
  name: string;
  ip: string;
  deleting: boolean;
}

async function pods(): Promise<PodRow[]> {
  const res = await suite.sys.cp.kubectl([
    'get',
    'pods',
    '-l',
    'serving.modelserve.dev/model=longstream',
    '-o',
    'jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.metadata.deletionTimestamp}{"\\n"}{end}',
  ]);
  return res.stdout
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [name = '', ip = '', deletion = ''] = line.split(' ');
      return { name, ip, deleting: deletion !== '' };
    });
}

test('kubectl scale 2 → 1 during two-minute streams: all complete, the removed pod drains first', async () => {
  const { sys } = suite;
  expect((await sys.cp.kubectl(['apply', '-f', '-'], { input: manifest })).code).toBe(0);
  await waitForReadyReplicas(sys, 'longstream', 2);
  const before = await pods();
  expect(before).toHaveLength(2);

  const streams = Array.from({ length: STREAMS }, (_, i) =>
    streamChat(sys.gatewayUrl, { model: 'longstream', prompt: `Tell story number ${i}.`, maxTokens: TOKENS }),
  );
  await Promise.all(streams.map((s) => s.firstChunk));
  // Both replicas serve streams (the gateway spreads by outstanding work), so whichever goes has some to drain.
  const perPod = await waitFor(
    async () => {
      const running = await Promise.all(before.map((p) => workerRunning(p.ip)));
      return running.every((n) => n >= 1) && running.reduce((a, b) => a + b, 0) === STREAMS && running;
    },
    { timeoutMs: 30_000, description: 'both replicas serving the streams' },
  );

  const scaledAt = Date.now();
  const scaled = await sys.cp.kubectl(['scale', 'mdep', 'longstream', '--replicas=1']);
  expect(scaled.code).toBe(0);
  const victim = await waitFor(async () => (await pods()).find((p) => p.deleting), {
    timeoutMs: 60_000,
    description: 'a pod of mdep/longstream terminating',
  });
  const victimStreams = perPod[before.findIndex((p) => p.name === victim.name)] as number;

  const results = await Promise.all(streams.map((s) => s.result));
  for (const r of results) {
    expect(r).toEqual(
      expect.objectContaining({ status: 200, finishReason: 'length', completionTokens: TOKENS, done: true }),
    );
    expect(r.error).toBeUndefined();
    expect(r.contentChunks).toBeGreaterThan(0);
    expect(r.endedAt).toBeGreaterThan(scaledAt); // the streams really were running across the scale-down
  }

  // The victim's process ended only after its streams: it drained to idle and exited 0.
  await waitFor(async () => !sys.agent.podIPs().has(victim.ip) && !(await pods()).some((p) => p.name === victim.name), {
    timeoutMs: 120_000,
    intervalMs: 1000,
    description: `pod ${victim.name} gone`,
  });
  const log = podLogLines(sys, victim.name);
  const draining = log.find((l) => l.msg === 'draining');
  const drained = log.find((l) => l.msg === 'drained');
  expect(draining?.inflight).toBe(victimStreams);
  expect(drained).toEqual(expect.objectContaining({ outcome: 'idle', left: 0 }));
  const agentLog = fs
    .readFileSync(path.join(sys.cp.dir, 'node-agent.log'), 'utf8')
    .split('\n')
    .filter((l) => l.includes('"container exited"') && l.includes(victim.name));
  expect(agentLog).toHaveLength(1);
  expect(JSON.parse(agentLog[0] as string)).toEqual(expect.objectContaining({ code: 0 }));

  await waitForReadyReplicas(sys, 'longstream', 1);
}, 600_000);
