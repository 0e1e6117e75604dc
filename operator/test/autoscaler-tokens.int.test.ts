// The prompt-token view end to end through Redis: the gateway's own queue (ModelQueue) and publisher (QueueSignals)
// hold two requests with long prompts and publish their estimated tokens next to the queue length; the autoscaler
// loop reads them from a real redis-server and sizes the ModelDeployment (real API server, CRD from crds/) by prompt
// tokens and spec.autoscaling.prefillTokensPerSecond, where request counts would keep one replica. The same queue
// published without tokens (a gateway from before the token key) keeps the count view. Then a real worker process
// (tiny checkpoint, one sequence at a time, slow streams) stands behind a Ready pod: the prompts waiting in its
// admission queue (modelserve:num_prompt_tokens_waiting) add to the gateway's, and vllm:prompt_tokens_total gives the
// prefill rate, so the loop sees one replica already missing the TTFT target and panics up.
import { jest } from '@jest/globals';
import { Redis } from 'ioredis';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startControlPlane, type ControlPlane } from '../../test/support/controlPlane.js';
import { startRedis, type RedisServer } from '../../test/support/redis.js';
import { waitFor } from '../../test/support/wait.js';
import type { ModelDeployment } from '../src/api/modelDeployment.js';
import { Autoscaler } from '../src/autoscaler/loop.js';
import { queueTokensKey } from '../src/autoscaler/signals-keys.js';
import { ModelQueue } from '../src/gateway/modelQueue.js';
import { QueueSignals } from '../src/gateway/queueSignals.js';
import { requestFacts } from '../src/gateway/requestBody.js';
import { WorkerPool } from '../src/gateway/workerPool.js';
import { selectorLabels } from '../src/controller/plan.js';
import { ANNOTATION_METRICS_PORT } from '../src/autoscaler/signals.js';
import { collectionPath, objectPath, resources } from '../src/k8s/resources.js';
import { startWorker, tinyCheckpoint, type WorkerProcess } from '../../worker/test/support/worker-process.js';
import { KubeClient } from '../src/k8s/rest.js';
import { createAutoscaledModel } from './autoscaled-model.js';
import { createLogger } from '../src/telemetry/logger.js';

jest.setTimeout(180_000);

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const crdFile = path.join(repoRoot, 'crds/serving.modelserve.dev_modeldeployments.yaml');
const NS = 'default';
/** One replica's prefill rate as the CRD gives it. */
const PREFILL = 10_000;

let cp: ControlPlane;
let redisServer: RedisServer;
let api: KubeClient;
let gatewayRedis: Redis;
let autoscaler: Autoscaler | undefined;
const signals: QueueSignals[] = [];
const aborts: AbortController[] = [];
const publishErrors: string[] = [];
let worker: WorkerProcess | undefined;

beforeAll(async () => {
  [cp, redisServer] = await Promise.all([startControlPlane({ gpuNodes: 0 }), startRedis('autoscaler-tokens-redis')]);
  const apply = await cp.kubectl(['apply', '--server-side', '-f', crdFile]);
  if (apply.code !== 0) throw new Error(apply.stderr);
  await cp.kubectl([
    'wait',
    '--for=condition=Established',
    '--timeout=60s',
    'crd/modeldeployments.serving.modelserve.dev',
  ]);
  api = new KubeClient(cp.kubeConfig);
  gatewayRedis = new Redis(redisServer.url, { maxRetriesPerRequest: 1 });
});

afterAll(async () => {
  for (const a of aborts) a.abort();
  await autoscaler?.stop();
  await worker?.stop();
  for (const s of signals) s.stop();
  gatewayRedis?.disconnect();
  api?.close();
  await redisServer?.stop();
  await cp?.stop();
});

const createModel = (name: string, autoscaling: Record<string, unknown>): Promise<void> =>
  createAutoscaledModel(api, NS, name, {
    minReplicas: 0,
    maxReplicas: 8,
    queueDepthPerReplica: 4,
    scaleToZeroAfterSeconds: 600,
    slo: { ttftP95Ms: 2000 },
    ...autoscaling,
  });

/**
 * A gateway replica with no worker for `model`: `prompts` chat requests wait in its queue (the queue the gateway's
 * HTTP handler uses, with the handler's estimate), and its publisher writes what the queue reports. `withTokens`
 * false publishes the length alone, as a gateway from before the token key did.
 */
function gatewayWithQueued(model: string, gatewayId: string, prompts: string[], withTokens: boolean): ModelQueue {
  const publisher = new QueueSignals(gatewayRedis, gatewayId, (op, err) => publishErrors.push(`${op}: ${String(err)}`));
  publisher.start();
  signals.push(publisher);
  const pool = new WorkerPool({ maxInflightPerWorker: 4, loadFactor: 1.25 });
  const queue = new ModelQueue(model, pool, { maxLength: 16 }, (m, length, promptTokens) =>
    publisher.set({ namespace: NS, model: m }, length, withTokens ? promptTokens : undefined),
  );
  for (const content of prompts) {
    const facts = requestFacts('chat', { model, messages: [{ role: 'user', content }] }, 512);
    const abort = new AbortController();
    aborts.push(abort);
    queue.acquire(facts.prefixKey, { timeoutMs: 120_000, signal: abort.signal, promptTokens: facts.promptTokens }).then(
      (lease) => lease.release(),
      () => undefined,
    );
  }
  return queue;
}

/** A pod of `mdep` that the API server reports Ready at 127.0.0.1 with /metrics on `port` (no kubelet runs it). */
async function readyPodAt(mdep: ModelDeployment, port: number): Promise<void> {
  const name = `${mdep.metadata.name}-worker-0`;
  await api.request('POST', collectionPath(resources.pods, NS), {
    body: {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name,
        namespace: NS,
        labels: selectorLabels(mdep),
        annotations: { [ANNOTATION_METRICS_PORT]: String(port) },
      },
      spec: {
        containers: [{ name: 'worker', image: 'modelserve/worker', ports: [{ name: 'http', containerPort: port }] }],
      },
    },
  });
  const now = new Date().toISOString();
  await api.mergePatch(objectPath(resources.pods, NS, name, 'status'), {
    status: {
      phase: 'Running',
      podIP: '127.0.0.1',
      podIPs: [{ ip: '127.0.0.1' }],
      conditions: [{ type: 'Ready', status: 'True', lastTransitionTime: now }],
    },
  });
}

/** A completion request of `promptTokens` token ids; resolves at its first streamed bytes. */
async function completion(model: string, promptTokens: number, maxTokens: number, signal: AbortSignal): Promise<void> {
  const res = await fetch(`${worker!.baseUrl}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      model,
      prompt: Array.from({ length: promptTokens }, (_, i) => 1000 + i),
      max_tokens: maxTokens,
      stream: true,
      temperature: 0,
    }),
    signal,
  });
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  await res.body!.getReader().read();
}

async function workerGauge(name: string): Promise<number> {
  const text = await (await fetch(`${worker!.baseUrl}/metrics`)).text();
  return Number(new RegExp(`^${name}\\{[^}]*\\} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
}

const get = (name: string) => api.get<ModelDeployment>(objectPath(resources.modelDeployments, NS, name));
const decisions = (name: string) => autoscaler?.decisions.get(`${NS}/${name}`) ?? 0;

describe('autoscaler token view', () => {
  it('scales on the prompt tokens a gateway queues, where the request count asks for one replica', async () => {
    await createModel('tokens', { prefillTokensPerSecond: PREFILL });
    await createModel('counts', { prefillTokensPerSecond: PREFILL });
    // Two requests of 200,000 bytes of prompt each: 50,000 estimated tokens apiece.
    const long = ['a', 'b'].map((c) => c.repeat(200_000));
    const queue = gatewayWithQueued('tokens-model', 'gw-a', long, true);
    gatewayWithQueued('counts-model', 'gw-a', long, false);
    expect(queue.length).toBe(2);
    expect(queue.queuedPromptTokens).toBe(100_000);
    await waitFor(
      async () => (await gatewayRedis.hget(queueTokensKey(NS, 'tokens-model'), 'gw-a'))?.startsWith('100000 '),
      {
        timeoutMs: 10_000,
        description: 'the token entry in Redis',
      },
    );

    const log = createLogger('info', {}, () => undefined);
    autoscaler = new Autoscaler({
      client: api,
      redisUrl: redisServer.url,
      log,
      identity: 'test',
      tickMs: 1000,
      statusIntervalMs: 1000,
    });
    await autoscaler.start();

    // 100,000 queued tokens to prefill within the 2 s TTFT target at 10,000 tokens/s per replica: 5 replicas. The
    // counts (2 requests, 4 per replica) say 1.
    const scaled = await waitFor(
      async () => {
        const m = await get('tokens');
        return m.spec.replicas === 5 && m.status?.scalingHistory?.at(-1)?.to === 5 ? m : undefined;
      },
      { timeoutMs: 30_000, description: 'tokens at 5 replicas with its history entry' },
    );
    const entry = scaled.status!.scalingHistory!.at(-1)!;
    expect(entry).toMatchObject({ from: 1, to: 5, applied: true });
    expect(entry.message).toMatch(/prompt tokens: \d+\/s arriving, 100000 queued, 10000\/s per replica/);
    // status.signals carries the same token inputs as the decision.
    expect(scaled.status?.signals?.queuedPromptTokens).toBe(100_000);
    expect(scaled.status?.signals?.promptTokensPerSecond).toEqual(expect.any(Number));

    await waitFor(() => decisions('counts') >= 4, { timeoutMs: 30_000, description: 'four decisions for counts' });
    const counts = await get('counts');
    expect(counts.spec.replicas).toBe(1);
    expect(counts.status?.scalingHistory ?? []).toHaveLength(0);
    expect((await get('tokens')).spec.replicas).toBe(5);
    expect(publishErrors).toEqual([]);
  });

  it('adds the prompts waiting on a ready worker and reads its prefill rate; a missed TTFT target means panic', async () => {
    await createModel('workers', { prefillTokensPerSecond: 500, queueDepthPerReplica: 8 });
    const mdep = await get('workers');
    // Slow streams (one token per 50 ms) and one sequence at a time: the requests after the first wait in the
    // worker's admission queue with their whole prompts.
    process.env.MODELSERVE_DEV_TOKEN_DELAY_MS = '50';
    try {
      worker = await startWorker(
        ['--model', tinyCheckpoint(1), '--served-model-name', 'workers-model', '--max-context', '1024'].concat([
          '--max-seqs',
          '1',
          '--threads',
          '1',
        ]),
      );
    } finally {
      delete process.env.MODELSERVE_DEV_TOKEN_DELAY_MS;
    }
    const abort = new AbortController();
    aborts.push(abort);
    await completion('workers-model', 8, 900, abort.signal); // holds the one slot for ~45 s, its prompt prefilled
    const queued = [0, 1, 2].map(() => completion('workers-model', 900, 8, abort.signal).catch(() => undefined));
    await waitFor(async () => (await workerGauge('modelserve:num_prompt_tokens_waiting')) === 2700, {
      timeoutMs: 10_000,
      description: 'three 900-token prompts waiting on the worker',
    });
    expect(await workerGauge('vllm:prompt_tokens_total')).toBe(8);
    await readyPodAt(mdep, worker.port);
    // One more request waits at a gateway: 4,000 bytes, 1,000 estimated tokens.
    gatewayWithQueued('workers-model', 'gw-a', ['c'.repeat(4000)], true);

    // Requests: 1 at the gateway + 3 waiting + 1 running = 5, under one replica's 8. Prompt tokens: 3,700 queued at
    // 500/s per replica is 7.4 s of prefill on the one ready replica, over the 2 s TTFT target: panic, and at least
    // 3,700 / (500 x 2) = 4 replicas.
    const scaled = await waitFor(
      async () => {
        const m = await get('workers');
        const last = m.status?.scalingHistory?.at(-1);
        return m.spec.replicas > 1 && last?.to === m.spec.replicas ? m : undefined;
      },
      { timeoutMs: 30_000, description: 'workers scaled up with its history entry' },
    );
    const entry = scaled.status!.scalingHistory!.at(-1)!;
    expect(entry).toMatchObject({ from: 1, reason: 'Panic', applied: true });
    expect(entry.to).toBeGreaterThanOrEqual(4);
    expect(entry.message).toMatch(/queued prompts wait 7\.4s on 1 ready \(TTFT target 2s\)/);
    expect(entry.message).toMatch(/3700 queued, 500\/s per replica/);
    expect(scaled.status?.signals?.queuedPromptTokens).toBe(3700);
    abort.abort();
    await Promise.all(queued);
  });
});
