// Killing the operator leader mid-burst: two operator processes share the leader Lease; a burst of streams scales the
// model to two replicas; `kill -9` of the leader leaves the Lease to expire and the standby takes over. The replica
// count is kept through the hand-over (the autoscaler's windows live in Redis, so the new leader neither resets to
// minReplicas nor forgets the burst), the new leader goes on deciding, and once the burst is over it scales down.
import { streamChat, type StreamResult } from '../support/chatStream.js';
import { tinyModelDeployment, useLocalSystem } from '../support/localSystem.js';
import {
  leaseHolder,
  mdepField,
  operatorMetricsUrl,
  scalingHistory,
  scrapeMetric,
  waitForReadyReplicas,
} from '../support/localSystemProbes.js';
import { waitFor } from '../support/wait.js';

const suite = useLocalSystem({ name: 'e2e-operator-leader-kill', nodes: 2, gpusPerNode: 1, operators: 2 });

const manifest = tinyModelDeployment(
  'failover',
  `
  engine:
    maxContext: 1024
    maxSeqs: 8
  replicas: 1
  autoscaling:
    enabled: true
    minReplicas: 1
    maxReplicas: 2
    queueDepthPerReplica: 2
    scaleDownStabilizationSeconds: 5
  worker:
    env:
      - name: MODELSERVE_DEV_TOKEN_DELAY_MS
        value: "50"
  drain:
    maxSeconds: 20`,
);

/** Keeps `concurrency` five-second streams going until `stop()`; every result is kept. */
function burst(gatewayUrl: string, concurrency: number) {
  let stopped = false;
  const results: StreamResult[] = [];
  const loops = Array.from({ length: concurrency }, async (_, i) => {
    for (let n = 0; !stopped; n++) {
      results.push(
        await streamChat(gatewayUrl, { model: 'failover', prompt: `burst ${i}.${n}`, maxTokens: 100 }).result,
      );
    }
  });
  return {
    results,
    stop: async () => {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

test('kill -9 of the leader mid-burst: the standby takes over, keeps the replicas and goes on autoscaling', async () => {
  const { sys } = suite;
  const replicas = async () => Number(await mdepField(sys, 'failover', '{.spec.replicas}'));
  expect((await sys.cp.kubectl(['apply', '-f', '-'], { input: manifest })).code).toBe(0);
  await waitForReadyReplicas(sys, 'failover', 1);

  const load = burst(sys.gatewayUrl, 6);
  try {
    await waitFor(async () => (await replicas()) === 2, {
      timeoutMs: 120_000,
      intervalMs: 1000,
      description: 'the burst scaling mdep/failover to 2',
    });
    await waitForReadyReplicas(sys, 'failover', 2);

    const holder = await leaseHolder(sys);
    const leader = sys.operators.find((op) => op.name === holder);
    const standby = sys.operators.find((op) => op.name !== holder);
    if (!leader || !standby) throw new Error(`Lease holder '${holder}' is not one of the operators`);
    await leader.kill();

    // Watch spec.replicas from the kill until the new leader has decided a few times: it must never drop.
    const seen: number[] = [];
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        seen.push(await replicas());
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    })();
    let takeoverAt = 0;
    try {
      await waitFor(async () => (await leaseHolder(sys)) === standby.name, {
        timeoutMs: 90_000,
        intervalMs: 1000,
        description: `${standby.name} taking the Lease`,
      });
      takeoverAt = Date.now();
      const decisions = () =>
        scrapeMetric(operatorMetricsUrl(standby), 'modelserve_autoscaler_decisions_total', {
          modeldeployment: 'failover',
        });
      // The new leader decides for the model while the burst goes on (a tick every 2 s).
      await waitFor(async () => (await decisions()) >= 3, {
        timeoutMs: 60_000,
        description: 'the new leader making autoscaling decisions',
      });
    } finally {
      watching = false;
      await watcher;
    }
    expect(Math.min(...seen)).toBe(2);

    await load.stop();
    const failed = load.results.filter((r) => r.error || r.finishReason !== 'length' || !r.done);
    expect(failed).toEqual([]);
    expect(load.results.length).toBeGreaterThan(6);
    standby.assertRunning();

    // Idle now: the new leader scales down, and records it.
    await waitFor(async () => (await replicas()) === 1, {
      timeoutMs: 180_000,
      intervalMs: 1000,
      description: 'the new leader scaling mdep/failover down to 1 after the burst',
    });
    const down = (await scalingHistory(sys, 'failover')).filter((h) => h.from === 2 && h.to === 1);
    expect(down).toHaveLength(1);
    expect(Date.parse(down[0]?.time ?? '')).toBeGreaterThanOrEqual(Math.floor(takeoverAt / 1000) * 1000 - 1000);
    expect(
      await scrapeMetric(operatorMetricsUrl(standby), 'modelserve_autoscaler_decisions_total', { direction: 'down' }),
    ).toBe(1);
  } finally {
    await load.stop();
  }
}, 600_000);
