// The gateway's control path against a real control plane and real Redis, with two gateway replicas sharing Redis
// and keys from real Secrets — everything decided before a worker is involved: 401/403/404/413/400, requests-per-
// minute limits across replicas, key rotation without restart, audit lines with key ids (never keys), the queue of a
// model with no ready worker (Redis queue length and wake message, 429 past the bound, 503 past the deadline,
// leaving on client disconnect), and Redis killed and restarted under it.
import { Redis } from 'ioredis';
import { WAKE_CHANNEL, decodeQueueEntry, parseWake, queueKey } from '../src/autoscaler/signals-keys.js';
import { startControlPlane, type ControlPlane } from '../../test/support/controlPlane.js';
import { startRedis, type RedisServer } from '../../test/support/redis.js';
import { waitFor } from '../../test/support/wait.js';
import {
  chatBody,
  deployModel,
  installCrdAndNamespace,
  kubectlOk,
  postJson,
  startGateway,
  type GatewayProcess,
} from './gateway-support.js';

const NS = 'gw';
let cp: ControlPlane;
let redis: RedisServer;
let g1: GatewayProcess;
let g2: GatewayProcess;

const KEYS = {
  alice: 'sk-alice-0123456789',
  aliceRotated: 'sk-alice-rotated-987654',
  bob: 'sk-bob-0123456789',
  carol: 'sk-carol-0123456789',
  dave: 'sk-dave-0123456789',
};

async function applyKeySecret(name: string, data: Record<string, string>): Promise<void> {
  await kubectlOk(
    cp,
    ['apply', '-f', '-'],
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name, namespace: NS, labels: { 'serving.modelserve.dev/api-key': 'true' } },
      stringData: data,
    }),
  );
}

const auth = (key: string) => ({ Authorization: `Bearer ${key}` });
const chat = (gw: GatewayProcess, key: string | undefined, body = chatBody('tiny-idle', { maxTokens: 2 })) =>
  postJson(`${gw.url}/v1/chat/completions`, body, key ? auth(key) : {});

beforeAll(async () => {
  [cp, redis] = await Promise.all([startControlPlane({ gpuNodes: 0 }), startRedis('gateway-control-redis')]);
  await installCrdAndNamespace(cp, NS);
  // A model scaled to zero: no EndpointSlice at all.
  await deployModel(cp, NS, 'idle', 'tiny-idle');
  await applyKeySecret('alice', { key: KEYS.alice, models: 'tiny-idle', rpm: '3' });
  await applyKeySecret('bob', { key: KEYS.bob, models: 'other-model' });
  await applyKeySecret('carol', { key: KEYS.carol, models: '*' });
  await applyKeySecret('dave', { key: KEYS.dave, models: '*', rpm: '2' });
  const flags = (id: string) => [
    '--kubeconfig',
    cp.kubeconfigPath,
    '--namespace',
    NS,
    '--keys-namespace',
    NS,
    '--redis-url',
    redis.url,
    '--gateway-id',
    id,
    '--max-body-bytes',
    '4096',
    '--queue-max',
    '1',
    '--queue-timeout-seconds',
    '1',
    '--retry-after-seconds',
    '3',
  ];
  [g1, g2] = await Promise.all([
    startGateway(cp.dir, 'gateway-1', flags('g1')),
    startGateway(cp.dir, 'gateway-2', flags('g2')),
  ]);
  await waitFor(
    async () =>
      (await g1.metric('modelserve_gateway_api_keys')) === 4 && (await g2.metric('modelserve_gateway_api_keys')) === 4,
    { description: 'both gateways loaded 4 keys' },
  );
}, 300_000);

afterAll(async () => {
  await Promise.all([g1?.proc.stop(), g2?.proc.stop()]);
  await redis?.stop();
  await cp?.stop();
});

test('a missing or wrong key gets 401 in OpenAI shape', async () => {
  const none = await chat(g1, undefined);
  expect(none.status).toBe(401);
  expect(none.json).toEqual({
    error: {
      message: expect.stringContaining('Authorization: Bearer') as unknown as string,
      type: 'invalid_request_error',
      param: null,
      code: 'missing_api_key',
    },
  });
  const wrong = await chat(g1, 'sk-not-a-key');
  expect(wrong.status).toBe(401);
  expect(wrong.json.error).toMatchObject({ code: 'invalid_api_key' });
  expect((await fetch(`${g1.url}/v1/models`)).status).toBe(401);
});

test('a key may use only its models (403); /v1/models lists only those; unknown models are 404; bad bodies 400', async () => {
  const denied = await chat(g1, KEYS.bob);
  expect(denied.status).toBe(403);
  expect(denied.json.error).toMatchObject({ type: 'permission_error', code: 'model_not_allowed', param: 'model' });
  const list = async (key: string) =>
    ((await (await fetch(`${g1.url}/v1/models`, { headers: auth(key) })).json()) as { data: { id: string }[] }).data;
  expect(await list(KEYS.bob)).toEqual([]);
  expect((await list(KEYS.carol)).map((m) => m.id)).toEqual(['tiny-idle']);
  const unknown = await chat(g1, KEYS.carol, chatBody('no-such-model'));
  expect(unknown.status).toBe(404);
  expect(unknown.json.error).toMatchObject({ code: 'model_not_found', param: 'model' });
  const bad = await postJson(`${g1.url}/v1/chat/completions`, { model: 'tiny-idle', messages: 'hi' }, auth(KEYS.carol));
  expect(bad.status).toBe(400);
  expect(bad.json.error).toMatchObject({ type: 'invalid_request_error', param: 'messages' });
});

test('a body over the limit gets 413', async () => {
  const big = await chat(g1, KEYS.carol, chatBody('tiny-idle', { user: 'x'.repeat(10_000) }));
  expect(big.status).toBe(413);
  expect(big.json.error).toMatchObject({ code: 'request_too_large' });
});

test('a model with no ready worker: the request waits, Redis gets its queue length and a wake message, and the deadline gives 503', async () => {
  const sub = new Redis(redis.url);
  const reader = new Redis(redis.url);
  const wakes: unknown[] = [];
  try {
    await sub.subscribe(WAKE_CHANNEL);
    sub.on('message', (_ch, msg: string) => wakes.push(parseWake(msg)));
    const pending = chat(g1, KEYS.carol);
    await waitFor(() => wakes.length > 0, { description: 'a wake message' });
    expect(wakes[0]).toMatchObject({ namespace: NS, model: 'tiny-idle', waiting: 1 });
    const entry = await waitFor(async () => (await reader.hget(queueKey(NS, 'tiny-idle'), 'g1')) ?? undefined, {
      description: 'queue length in Redis',
    });
    expect(decodeQueueEntry(entry)?.waiting).toBe(1);
    expect(await reader.pttl(queueKey(NS, 'tiny-idle'))).toBeGreaterThan(0);
    const timedOut = await pending;
    expect(timedOut.status).toBe(503);
    expect(timedOut.headers.get('retry-after')).toBe('3');
    expect(timedOut.json.error).toMatchObject({ type: 'service_unavailable', code: 'queue_timeout' });
    await waitFor(
      async () => decodeQueueEntry((await reader.hget(queueKey(NS, 'tiny-idle'), 'g1')) ?? '')?.waiting === 0,
      { description: 'queue length back to 0 in Redis' },
    );
  } finally {
    sub.disconnect();
    reader.disconnect();
  }
}, 120_000);

test('past the queue bound a request gets 429 with Retry-After at once', async () => {
  const first = chat(g2, KEYS.carol);
  await waitFor(async () => (await g2.metric('modelserve_gateway_queue_length', { model: 'tiny-idle' })) === 1, {
    description: 'first request queued',
  });
  const second = await chat(g2, KEYS.carol);
  expect(second.status).toBe(429);
  expect(second.headers.get('retry-after')).toBe('3');
  expect(second.json.error).toMatchObject({ type: 'rate_limit_error', code: 'queue_full' });
  expect((await first).status).toBe(503);
}, 60_000);

test('a client that disconnects leaves the queue', async () => {
  const gone = new AbortController();
  const pending = fetch(`${g2.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...auth(KEYS.carol) },
    body: JSON.stringify(chatBody('tiny-idle')),
    signal: gone.signal,
  }).catch((err: unknown) => err);
  await waitFor(async () => (await g2.metric('modelserve_gateway_queue_length', { model: 'tiny-idle' })) === 1, {
    description: 'request queued',
  });
  gone.abort();
  await pending;
  await waitFor(async () => (await g2.metric('modelserve_gateway_queue_length', { model: 'tiny-idle' })) === 0, {
    description: 'queue emptied by the disconnect',
  });
  await waitFor(() => g2.audits().at(-1)?.status === 499, { description: 'audit line with 499' });
}, 60_000);

test('requests per minute are counted across both gateway replicas', async () => {
  // Admitted requests wait for the idle model and time out (503); the fourth is refused by the limit first.
  expect((await chat(g1, KEYS.alice)).status).toBe(503);
  expect((await chat(g2, KEYS.alice)).status).toBe(503);
  expect((await chat(g1, KEYS.alice)).status).toBe(503);
  const limited = await chat(g2, KEYS.alice);
  expect(limited.status).toBe(429);
  expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
  expect(limited.json.error).toMatchObject({ type: 'rate_limit_error', code: 'rate_limit_exceeded' });
  expect((limited.json.error as { message: string }).message).toContain('requests per minute');
  expect((await chat(g1, KEYS.alice)).status).toBe(429);
}, 60_000);

test('a rotated key applies without restart; audit lines carry key ids and never keys', async () => {
  // (rpm stays set: kubectl apply cannot remove a stringData field, so the test sets every field.)
  await applyKeySecret('alice', { key: KEYS.aliceRotated, models: 'tiny-idle', rpm: '100' });
  await waitFor(
    async () => (await chat(g1, KEYS.alice)).status === 401 && (await chat(g2, KEYS.alice)).status === 401,
    {
      description: 'old key refused on both replicas',
    },
  );
  const n = g2.audits().length;
  expect((await chat(g2, KEYS.aliceRotated)).status).toBe(503);
  // The audit lines of the 401s above may still be on their way to the log: find this request's own line.
  const audit = await waitFor(
    () =>
      g2
        .audits()
        .slice(n)
        .find((a) => a.status === 503),
    {
      timeoutMs: 10_000,
      intervalMs: 50,
      description: 'the audit line of the rotated-key request',
    },
  );
  expect(audit).toMatchObject({ key_id: 'gw/alice', model: 'tiny-idle', status: 503 });
  expect(audit?.prompt).toBeUndefined();
  for (const gw of [g1, g2]) {
    const log = gw.logText();
    for (const key of Object.values(KEYS)) expect(log).not.toContain(key);
  }
}, 60_000);

test('Redis killed: limits fail open (logged), nothing crashes; restarted: limits and queue publication resume', async () => {
  await redis.kill();
  // dave may make 2 requests a minute; with Redis gone all four are admitted (and time out in the queue).
  for (let i = 0; i < 4; i++) expect((await chat(i % 2 ? g2 : g1, KEYS.dave)).status).toBe(503);
  expect(g1.logText()).toMatch(/redis ratelimit\.admit failed; rate limits are not enforced/);
  expect(g1.proc.running && g2.proc.running).toBe(true);

  await redis.start();
  const reader = new Redis(redis.url);
  try {
    const statuses = await waitFor(
      async () => {
        const seen: number[] = [];
        for (let i = 0; i < 3; i++) seen.push((await chat(i % 2 ? g2 : g1, KEYS.dave)).status);
        return seen.includes(429) ? seen : undefined;
      },
      { timeoutMs: 60_000, description: 'rate limit enforced again after Redis returned' },
    );
    expect(statuses).toContain(429);
    const pending = chat(g1, KEYS.carol);
    const entry = await waitFor(async () => (await reader.hget(queueKey(NS, 'tiny-idle'), 'g1')) ?? undefined, {
      description: 'queue length published to the restarted Redis',
    });
    expect(decodeQueueEntry(entry)).toBeDefined();
    expect((await pending).status).toBe(503);
  } finally {
    reader.disconnect();
  }
}, 120_000);
