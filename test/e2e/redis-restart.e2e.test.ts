// Redis restarted (kill -9, then a fresh redis-server on the same port with empty state) while requests flow: the
// gateway keeps serving (rate limits fail open while Redis is away), the autoscaler keeps deciding (holding the count
// while blind), and afterwards queue publication, the autoscaler's state in Redis, its wake subscription and per-key
// rate limits all resume; no process crashed and no worker restarted.
import { Redis } from 'ioredis';

import { decodeQueueEntry, queueKey, stateKey, WAKE_CHANNEL } from '../../operator/src/autoscaler/signals-keys.js';
import { tinyModelDeployment, useLocalSystem } from '../support/localSystem.js';
import { mdepField, operatorMetricsUrl, scrapeMetric, waitForReadyReplicas } from '../support/localSystemProbes.js';
import { waitFor } from '../support/wait.js';

// Two requests per worker at a time: the flow of four clients keeps the gateway's queue of the model in use, so the
// gateway publishes its length to Redis (it does so for models whose queue it has used).
const suite = useLocalSystem({
  name: 'e2e-redis-restart',
  nodes: 1,
  gpusPerNode: 1,
  gatewayAuth: true,
  gatewayFlags: ['--max-inflight-per-worker=2'],
});

const KEYS = { flow: 'sk-e2e-flow-0123456789', limited: 'sk-e2e-limited-0123456789' };

const manifest = tinyModelDeployment(
  'steady',
  `
  replicas: 1
  autoscaling:
    enabled: true
    maxReplicas: 1
  engine:
    maxContext: 1024
  drain:
    maxSeconds: 10`,
);

const keySecret = (name: string, key: string, rpm: number) =>
  JSON.stringify({
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name, namespace: 'default', labels: { 'serving.modelserve.dev/api-key': 'true' } },
    stringData: { key, models: 'steady', rpm: String(rpm) },
  });

/** One short chat completion; status 0 when the connection failed (the gateway gone or refusing). */
async function chat(key: string): Promise<{ status: number; retryAfter: string | null; at: number; error?: string }> {
  try {
    const res = await fetch(`${suite.sys.gatewayUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body: JSON.stringify({ model: 'steady', messages: [{ role: 'user', content: 'ping' }], max_tokens: 4 }),
    });
    const body = await res.text();
    return {
      status: res.status,
      retryAfter: res.headers.get('retry-after'),
      at: Date.now(),
      ...(res.status === 200 ? {} : { error: body.slice(0, 300) }),
    };
  } catch (err) {
    return { status: 0, retryAfter: null, at: Date.now(), error: String(err) };
  }
}

test('kill -9 and restart of Redis under load: gateway and autoscaler carry on and resume', async () => {
  const { sys } = suite;
  for (const [name, rpm] of [
    ['flow', 100_000],
    ['limited', 2],
  ] as const) {
    const res = await sys.cp.kubectl(['apply', '-f', '-'], { input: keySecret(`e2e-${name}`, KEYS[name], rpm) });
    expect(res.code).toBe(0);
  }
  expect((await sys.cp.kubectl(['apply', '-f', '-'], { input: manifest })).code).toBe(0);
  await waitForReadyReplicas(sys, 'steady', 1);
  await waitFor(async () => (await chat(KEYS.flow)).status === 200, { description: 'the flow key accepted' });

  const client = new Redis(sys.redis.url, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 200 });
  client.on('error', () => undefined); // it reconnects by itself after the restart
  const operator = sys.operators[0];
  if (!operator) throw new Error('no operator');
  const decisions = (reason?: string) =>
    scrapeMetric(operatorMetricsUrl(operator), 'modelserve_autoscaler_decisions_total', {
      modeldeployment: 'steady',
      ...(reason ? { reason } : {}),
    });

  // Requests flow from here to the end: four clients back to back.
  let flowing = true;
  const statuses: { status: number; at: number; error?: string }[] = [];
  const flow = Array.from({ length: 4 }, async () => {
    while (flowing) statuses.push(await chat(KEYS.flow));
  });
  try {
    // Before: the gateway publishes the queue and the autoscaler keeps its state in Redis.
    await client.connect();
    await waitFor(async () => Object.keys(await client.hgetall(queueKey('default', 'steady'))).length > 0, {
      description: 'the gateway publishing the queue of steady',
    });
    await waitFor(async () => (await client.get(stateKey('default', 'steady'))) !== null, {
      description: 'the autoscaler state of steady in Redis',
    });

    await sys.redis.kill();
    const killedAt = Date.now();
    // Blind: the autoscaler still decides each tick, and holds the count.
    const blindBefore = await decisions('SignalsUnavailable');
    await waitFor(async () => (await decisions('SignalsUnavailable')) >= blindBefore + 2, {
      timeoutMs: 30_000,
      description: 'the autoscaler deciding without Redis (SignalsUnavailable)',
    });
    const servedBlind = statuses.filter((s) => s.at > killedAt && s.status === 200).length;
    expect(servedBlind).toBeGreaterThan(0);
    // Rate limits fail open while Redis is away: the two-a-minute key gets a third request through.
    for (let i = 0; i < 3; i++) expect((await chat(KEYS.limited)).status).toBe(200);

    await sys.redis.start();
    const restartedAt = Date.now();
    const allAfter = await decisions();

    // After: queue publication, autoscaler state and decisions on real signals resume.
    await waitFor(
      async () =>
        Object.values(await client.hgetall(queueKey('default', 'steady'))).some(
          (v) => (decodeQueueEntry(v)?.unixMs ?? 0) > restartedAt,
        ),
      { timeoutMs: 60_000, description: 'the gateway publishing the queue again' },
    );
    await waitFor(async () => (await client.get(stateKey('default', 'steady'))) !== null, {
      timeoutMs: 60_000,
      description: 'the autoscaler writing its state to the new Redis',
    });
    // The autoscaler listens for wake messages (scale from zero) on the new server too.
    await waitFor(
      async () => {
        const [, subscribers] = (await client.call('PUBSUB', 'NUMSUB', WAKE_CHANNEL)) as [string, number];
        return subscribers >= 1;
      },
      { timeoutMs: 60_000, description: 'the autoscaler subscribed to wake messages again' },
    );
    await waitFor(async () => (await decisions()) >= allAfter + 3, {
      timeoutMs: 60_000,
      description: 'the autoscaler deciding after the restart',
    });
    // Once the state was written, decisions read real signals again: several ticks later, none more was blind.
    const blindSettled = await decisions('SignalsUnavailable');
    const settledAll = await decisions();
    await waitFor(async () => (await decisions()) >= settledAll + 3, { description: 'three more decisions' });
    expect(await decisions('SignalsUnavailable')).toBe(blindSettled);

    // Per-key rate limits are enforced again, counted in the new Redis: two requests a minute, then 429.
    expect((await chat(KEYS.limited)).status).toBe(200);
    expect((await chat(KEYS.limited)).status).toBe(200);
    const limited = await chat(KEYS.limited);
    expect(limited.status).toBe(429);
    expect(Number(limited.retryAfter)).toBeGreaterThan(0);
  } finally {
    flowing = false;
    await Promise.all(flow);
    client.disconnect();
  }

  // Every request of the flow succeeded, before, during and after the outage; nothing crashed or restarted.
  expect(statuses.filter((s) => s.status !== 200)).toEqual([]);
  sys.gateway.assertRunning();
  for (const op of sys.operators) op.assertRunning();
  expect(await mdepField(sys, 'steady', '{.spec.replicas}')).toBe('1');
  const restarts = await sys.cp.kubectl([
    'get',
    'pods',
    '-l',
    'serving.modelserve.dev/model=steady',
    '-o',
    'jsonpath={.items[*].status.containerStatuses[0].restartCount}',
  ]);
  expect(restarts.stdout).toBe('0');
}, 420_000);
