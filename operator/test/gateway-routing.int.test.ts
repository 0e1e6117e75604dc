// The gateway against a real control plane, real Redis and real worker processes (tiny-harmony checkpoint): routing
// by model, /v1/models, SSE through the official openai client, prefix affinity, a request for a model with no ready
// worker that waits and is served when a worker appears (wake message and queue length in Redis), tokens-per-minute
// limits from the worker's usage, terminating endpoints, and retry when a worker dies before the first byte.
import { Redis } from 'ioredis';
import OpenAI from 'openai';
import { HashRing, hash32 } from '../src/gateway/hashRing.js';
import { requestFacts } from '../src/gateway/requestBody.js';
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
  setWorkerSlice,
  startGateway,
  closeWorkerNetwork,
  startWorker,
  type GatewayProcess,
  type Worker,
} from './gateway-support.js';

const NS = 'gw';
let cp: ControlPlane;
let redis: RedisServer;
let w1: Worker;
let w2: Worker;
let wb: Worker;
let gw: GatewayProcess;
let authed: GatewayProcess;
const CAROL = 'sk-carol-tokens-0123456789';
const extraWorkers: Worker[] = [];
let common: string[] = [];

const workerAddr = (w: Worker) => `${w.host}:${w.port}`;
const streamParams = (body: Record<string, unknown>): OpenAI.Chat.ChatCompletionCreateParamsStreaming => ({
  ...(body as unknown as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming),
  stream: true,
});

beforeAll(async () => {
  [cp, redis] = await Promise.all([startControlPlane({ gpuNodes: 0 }), startRedis('gateway-routing-redis')]);
  await installCrdAndNamespace(cp, NS);
  [w1, w2, wb] = await Promise.all([
    startWorker(cp.dir, 'worker-a1', 'tiny-a'),
    startWorker(cp.dir, 'worker-a2', 'tiny-a'),
    startWorker(cp.dir, 'worker-b', 'tiny-b'),
  ]);
  for (const [name, model] of [
    ['a', 'tiny-a'],
    ['b', 'tiny-b'],
    ['late', 'tiny-late'],
    ['never', 'tiny-never'],
  ] as const) {
    await deployModel(cp, NS, name, model);
  }
  await setWorkerSlice(cp, NS, 'a', { worker: w1 });
  await setWorkerSlice(cp, NS, 'a', { worker: w2 });
  await setWorkerSlice(cp, NS, 'b', { worker: wb });
  common = ['--kubeconfig', cp.kubeconfigPath, '--namespace', NS, '--redis-url', redis.url, '--auth=false'];
  await kubectlOk(
    cp,
    ['apply', '-f', '-'],
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'carol', namespace: NS, labels: { 'serving.modelserve.dev/api-key': 'true' } },
      stringData: { key: CAROL, models: 'tiny-b', tpm: '40' },
    }),
  );
  [gw, authed] = await Promise.all([
    startGateway(cp.dir, 'gateway-main', [...common, '--gateway-id', 'gw-main', '--queue-timeout-seconds', '90']),
    startGateway(cp.dir, 'gateway-auth', [
      ...common.filter((f) => f !== '--auth=false'),
      '--keys-namespace',
      NS,
      '--gateway-id',
      'gw-auth',
    ]),
  ]);
  await waitFor(async () => (await gw.metric('modelserve_gateway_ready_endpoints', { model: 'tiny-a' })) === 2, {
    description: 'gateway sees both tiny-a workers',
  });
}, 300_000);

afterAll(async () => {
  await Promise.all([gw?.proc.stop(), authed?.proc.stop()]);
  await Promise.all([w1, w2, wb, ...extraWorkers].map((w) => w?.proc.stop()));
  closeWorkerNetwork();
  await redis?.stop();
  await cp?.stop();
});

test('/v1/models lists every deployed model with its ready workers', async () => {
  const res = await fetch(`${gw.url}/v1/models`);
  expect(res.status).toBe(200);
  const body = (await res.json()) as { object: string; data: { id: string; object: string; ready_replicas: number }[] };
  expect(body.object).toBe('list');
  expect(body.data.map((m) => [m.id, m.ready_replicas])).toEqual([
    ['tiny-a', 2],
    ['tiny-b', 1],
    ['tiny-late', 0],
    ['tiny-never', 0],
  ]);
});

test('requests are routed by their model field; unknown models get 404 in OpenAI shape', async () => {
  const n = gw.audits().length;
  const a = await postJson(`${gw.url}/v1/chat/completions`, chatBody('tiny-a'));
  expect(a.status).toBe(200);
  expect(a.json.model).toBe('tiny-a');
  const b = await postJson(`${gw.url}/v1/completions`, {
    model: 'tiny-b',
    prompt: 'Hello',
    max_tokens: 4,
    temperature: 0,
  });
  expect(b.status).toBe(200);
  expect(b.json.model).toBe('tiny-b');
  expect((b.json.usage as { completion_tokens: number }).completion_tokens).toBeGreaterThan(0);
  const last = await gw.auditsAfter(n, 2);
  expect([workerAddr(w1), workerAddr(w2)]).toContain(last[0]?.worker);
  expect(last[1]?.worker).toBe(workerAddr(wb));
  expect(last[1]?.completion_tokens).toBe((b.json.usage as { completion_tokens: number }).completion_tokens);

  const missing = await postJson(`${gw.url}/v1/chat/completions`, chatBody('no-such-model'));
  expect(missing.status).toBe(404);
  expect(missing.json).toEqual({
    error: {
      message: "The model 'no-such-model' does not exist",
      type: 'invalid_request_error',
      param: 'model',
      code: 'model_not_found',
    },
  });
  const bad = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', body: '{not json' });
  expect(bad.status).toBe(400);
  expect(((await bad.json()) as { error: { type: string } }).error.type).toBe('invalid_request_error');
});

test('the openai client streams through the gateway; the text equals a direct call to a worker', async () => {
  const client = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  const body = chatBody('tiny-a', { user: 'Stream to me.', maxTokens: 12 });
  const n = gw.audits().length;
  const stream = await client.chat.completions.create(streamParams(body));
  let text = '';
  let chunks = 0;
  let finish: string | null = null;
  let sawUsage = false;
  for await (const chunk of stream) {
    chunks++;
    if (chunk.usage) sawUsage = true;
    for (const c of chunk.choices) {
      text += c.delta.content ?? '';
      finish = c.finish_reason ?? finish;
    }
  }
  expect(chunks).toBeGreaterThan(2);
  expect(finish).not.toBeNull();
  // The gateway asked the worker for usage on its own account and kept that chunk from the client...
  expect(sawUsage).toBe(false);
  const [audit] = await gw.auditsAfter(n, 1);
  expect(audit!.stream).toBe(true);
  expect(audit!.completion_tokens).toBeGreaterThan(0);

  // ...and the client that asks for it gets it.
  const withUsage = await client.chat.completions.create({
    ...streamParams(body),
    stream_options: { include_usage: true },
  });
  let usage: unknown;
  for await (const chunk of withUsage) if (chunk.usage) usage = chunk.usage;
  expect(usage).toMatchObject({ completion_tokens: audit!.completion_tokens });

  const direct = await postJson(`${w1.url}/v1/chat/completions`, body);
  const directText = (direct.json.choices as { message: { content: string } }[])[0]!.message.content;
  expect(text).toBe(directText);
});

test('one system prompt keeps going to one worker (prefix affinity)', async () => {
  const before = await gw.metric('modelserve_gateway_routing_decisions_total', { model: 'tiny-a', reason: 'affinity' });
  const system = 'You are the affinity test assistant. '.repeat(20);
  const n = gw.audits().length;
  for (let i = 0; i < 6; i++) {
    const r = await postJson(`${gw.url}/v1/chat/completions`, chatBody('tiny-a', { system, user: `question ${i}` }));
    expect(r.status).toBe(200);
  }
  const workers = new Set((await gw.auditsAfter(n, 6)).map((a) => a.worker));
  expect(workers.size).toBe(1);
  const after = await gw.metric('modelserve_gateway_routing_decisions_total', { model: 'tiny-a', reason: 'affinity' });
  expect(after - before).toBe(6);
});

test('a model with no ready worker: the request waits, Redis shows the queue and a wake, and it is served on scale-up', async () => {
  const sub = new Redis(redis.url);
  const wakes: unknown[] = [];
  await sub.subscribe(WAKE_CHANNEL);
  sub.on('message', (_ch, msg) => wakes.push(parseWake(msg)));
  const reader = new Redis(redis.url);
  try {
    const n = gw.audits().length;
    const pending = postJson(`${gw.url}/v1/chat/completions`, chatBody('tiny-late'));
    await waitFor(() => wakes.length > 0, { description: 'a wake message' });
    expect(wakes[0]).toMatchObject({ namespace: NS, model: 'tiny-late', waiting: 1 });
    const entry = await waitFor(async () => (await reader.hget(queueKey(NS, 'tiny-late'), 'gw-main')) ?? undefined, {
      description: 'queue length in Redis',
    });
    expect(decodeQueueEntry(entry)?.waiting).toBe(1);
    expect(await reader.pttl(queueKey(NS, 'tiny-late'))).toBeGreaterThan(0);

    // The scale-up: a worker starts and its endpoint appears.
    const late = await startWorker(cp.dir, 'worker-late', 'tiny-late');
    extraWorkers.push(late);
    await setWorkerSlice(cp, NS, 'late', { worker: late });
    const res = await pending;
    expect(res.status).toBe(200);
    expect(res.json.model).toBe('tiny-late');
    const [audit] = await gw.auditsAfter(n, 1);
    expect(audit!.worker).toBe(workerAddr(late));
    expect(audit!.queue_ms as number).toBeGreaterThan(0);
    await waitFor(
      async () => decodeQueueEntry((await reader.hget(queueKey(NS, 'tiny-late'), 'gw-main')) ?? '')?.waiting === 0,
      {
        description: 'queue length back to 0 in Redis',
      },
    );
  } finally {
    sub.disconnect();
    reader.disconnect();
  }
}, 180_000);

test('tokens per minute count the worker-reported usage (prompt + completion)', async () => {
  const auth = { Authorization: `Bearer ${CAROL}` };
  const n = authed.audits().length;
  const first = await postJson(`${authed.url}/v1/chat/completions`, chatBody('tiny-b', { maxTokens: 4 }), auth);
  expect(first.status).toBe(200);
  const usage = first.json.usage as { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  // The harmony prompt alone is longer than the 40-token budget, though the up-front estimate was far below it.
  expect(usage.total_tokens).toBeGreaterThan(40);
  expect((await authed.auditsAfter(n, 1))[0]).toMatchObject({
    key_id: `${NS}/carol`,
    prompt_tokens: usage.prompt_tokens,
    completion_tokens: usage.completion_tokens,
  });
  const limited = await waitFor(
    async () => {
      const r = await postJson(`${authed.url}/v1/chat/completions`, chatBody('tiny-b', { maxTokens: 4 }), auth);
      return r.status === 429 ? r : undefined;
    },
    { timeoutMs: 10_000, description: 'token limit reached' },
  );
  expect((limited.json.error as { message: string }).message).toContain('tokens per minute');
  expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
}, 60_000);

/** Reads an SSE response body until `until` says stop (or it ends); returns the text so far. */
async function readSse(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  text: string,
  until: (text: string) => boolean,
): Promise<{ text: string; done: boolean }> {
  const decoder = new TextDecoder();
  while (!until(text)) {
    const { value, done } = await reader.read();
    if (done) return { text, done: true };
    text += decoder.decode(value, { stream: true });
  }
  return { text, done: false };
}

const dataEvents = (text: string) => (text.match(/^data: /gm) ?? []).length;

function streamRequest(url: string, model: string, maxTokens: number): Promise<Response> {
  return fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ ...chatBody(model, { maxTokens, user: 'Tell me a very long story.' }), stream: true }),
  });
}

test('SIGTERM: the gateway stops taking requests and lets an in-flight stream finish', async () => {
  const draining = await startGateway(cp.dir, 'gateway-drain', [...common, '--gateway-id', 'gw-drain']);
  const res = await streamRequest(draining.url, 'tiny-a', 500);
  expect(res.status).toBe(200);
  const reader = res.body!.getReader();
  let { text } = await readSse(reader, '', (t) => dataEvents(t) >= 3);
  const stopped = draining.proc.stop(30_000);
  await waitFor(
    async () => {
      try {
        return (await fetch(`${draining.url}/readyz`)).status === 503;
      } catch {
        return true; // the listener is closed: refused
      }
    },
    { description: 'gateway stops taking requests' },
  );
  // A new request is refused (connection refused, or 503 on a connection that was still open).
  const late = await postJson(`${draining.url}/v1/chat/completions`, chatBody('tiny-a')).catch(() => undefined);
  expect(late === undefined || late.status === 503).toBe(true);
  ({ text } = await readSse(reader, text, () => false));
  expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
  expect(text).toMatch(/"finish_reason":"(length|stop)"/);
  await stopped;
  expect(await draining.proc.wait()).toBe(0);
  const shutdown = draining.lines().find((l) => l.msg === 'shutting down');
  expect(shutdown?.inflight).toBe(1);
}, 120_000);

test('a worker that dies mid-stream ends the client stream with an error event', async () => {
  const before = await gw.metric('modelserve_gateway_upstream_errors_total', {
    model: 'tiny-b',
    kind: 'reset-mid-stream',
  });
  const res = await streamRequest(gw.url, 'tiny-b', 3000);
  expect(res.status).toBe(200);
  const reader = res.body!.getReader();
  let { text } = await readSse(reader, '', (t) => dataEvents(t) >= 3);
  await wb.proc.kill();
  ({ text } = await readSse(reader, text, () => false));
  const events = text.split('\n\n').filter((e) => e.trim() !== '');
  expect(JSON.parse(events.at(-1)!.slice('data: '.length))).toEqual({
    error: {
      message: expect.stringContaining('failed mid-stream') as unknown as string,
      type: 'server_error',
      param: null,
      code: 'upstream_error',
    },
  });
  expect(text).not.toContain('[DONE]');
  await waitFor(
    async () =>
      (await gw.metric('modelserve_gateway_upstream_errors_total', { model: 'tiny-b', kind: 'reset-mid-stream' })) >
      before,
    { description: 'mid-stream failure counted' },
  );
}, 60_000);

test('a terminating endpoint gets no new requests', async () => {
  await setWorkerSlice(cp, NS, 'a', { worker: w1, terminating: true });
  await waitFor(async () => (await gw.metric('modelserve_gateway_ready_endpoints', { model: 'tiny-a' })) === 1, {
    description: 'gateway drops the terminating endpoint',
  });
  const n = gw.audits().length;
  for (let i = 0; i < 6; i++) {
    const r = await postJson(
      `${gw.url}/v1/chat/completions`,
      chatBody('tiny-a', { system: `prefix ${i}`, maxTokens: 2 }),
    );
    expect(r.status).toBe(200);
  }
  expect((await gw.auditsAfter(n, 6)).map((a) => a.worker)).toEqual(new Array(6).fill(workerAddr(w2)));
  await setWorkerSlice(cp, NS, 'a', { worker: w1 });
  await waitFor(async () => (await gw.metric('modelserve_gateway_ready_endpoints', { model: 'tiny-a' })) === 2, {
    description: 'endpoint back',
  });
});

test('a worker that died is retried on another before the first byte; streams and plain requests succeed', async () => {
  // Killed, but still listed ready: the window before its EndpointSlice catches up.
  await w2.proc.kill();
  const errorsBefore = await gw.metric('modelserve_gateway_upstream_errors_total', { model: 'tiny-a' });
  const n = gw.audits().length;
  const client = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  // System prompts whose affinity owner is the dead worker (the gateway's own ring, rebuilt here), so that every
  // request first goes to it and must be retried.
  const ring = new HashRing();
  ring.setMembers([workerAddr(w1), workerAddr(w2)]);
  const systems: string[] = [];
  for (let i = 0; systems.length < 6; i++) {
    const body = chatBody('tiny-a', { system: `retry ${i}`, maxTokens: 2 });
    if (ring.owner(hash32(requestFacts('chat', body, 512).prefixKey)) === workerAddr(w2)) systems.push(`retry ${i}`);
  }
  for (const [i, system] of systems.entries()) {
    if (i % 2 === 0) {
      const r = await postJson(`${gw.url}/v1/chat/completions`, chatBody('tiny-a', { system, maxTokens: 2 }));
      expect(r.status).toBe(200);
    } else {
      const s = await client.chat.completions.create(streamParams(chatBody('tiny-a', { system, maxTokens: 2 })));
      let finished = false;
      for await (const chunk of s) if (chunk.choices[0]?.finish_reason) finished = true;
      expect(finished).toBe(true);
    }
  }
  const audits = await gw.auditsAfter(n, 6);
  expect(audits.every((a) => a.status === 200 && a.worker === workerAddr(w1))).toBe(true);
  expect(audits.map((a) => a.attempts)).toEqual([2, 2, 2, 2, 2, 2]);
  expect(await gw.metric('modelserve_gateway_upstream_errors_total', { model: 'tiny-a' })).toBeGreaterThan(
    errorsBefore,
  );
  expect(
    await gw.metric('modelserve_gateway_routing_decisions_total', { model: 'tiny-a', reason: 'retry' }),
  ).toBeGreaterThan(0);
});
