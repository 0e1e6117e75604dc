// The prompt-token signals of the autoscaler's token view, pure parts: the gateway's token estimate and its queue's
// running sum, the Redis token entries and how they are summed, the workers' token series, and the CRD's prefill rate
// reaching the policy's configuration.
import type { ModelDeployment } from '../src/api/modelDeployment.js';
import { policyConfig } from '../src/autoscaler/loop.js';
import { parsePrometheusText, workerMetrics } from '../src/autoscaler/prometheus.js';
import {
  encodeQueueEntry,
  queueKey,
  queueTokensKey,
  sumQueuedPromptTokens,
  writeQueueLength,
  type QueueWriter,
} from '../src/autoscaler/signals-keys.js';
import { ModelQueue } from '../src/gateway/modelQueue.js';
import { estimatePromptTokens, requestFacts } from '../src/gateway/requestBody.js';
import { WorkerPool } from '../src/gateway/workerPool.js';

describe('the gateway’s prompt-token estimate', () => {
  it('is UTF-8 bytes / 4 of the message contents, so non-Latin text is not under-counted', () => {
    expect(estimatePromptTokens(0)).toBe(0);
    expect(estimatePromptTokens(4)).toBe(1);
    expect(estimatePromptTokens(5)).toBe(2);
    const english = 'x'.repeat(4000);
    const chat = requestFacts(
      'chat',
      {
        model: 'm',
        messages: [
          { role: 'system', content: 'abcd' },
          { role: 'user', content: english },
        ],
      },
      64,
    );
    expect(chat.promptTokens()).toBe(1001);
    // 1,000 characters of Japanese: 3 bytes each, 750 tokens (characters / 4 would say 250).
    const japanese = requestFacts('chat', { model: 'm', messages: [{ role: 'user', content: '語'.repeat(1000) }] }, 64);
    expect(japanese.promptTokens()).toBe(750);
    // Content parts count their text.
    const parts = requestFacts(
      'chat',
      { model: 'm', messages: [{ role: 'user', content: [{ type: 'text', text: 'abcdefgh' }] }] },
      64,
    );
    expect(parts.promptTokens()).toBe(2);
  });

  it('counts token-id prompts exactly and text prompts by bytes', () => {
    expect(requestFacts('completion', { model: 'm', prompt: [1, 2, 3, 4, 5] }, 8).promptTokens()).toBe(5);
    expect(requestFacts('completion', { model: 'm', prompt: 'abcdefgh' }, 8).promptTokens()).toBe(2);
    // Two prompts joined by a newline: 4 + 1 + 4 bytes.
    expect(requestFacts('completion', { model: 'm', prompt: ['abcd', 'efgh'] }, 8).promptTokens()).toBe(3);
  });
});

describe('the gateway queue’s prompt tokens', () => {
  function setup(endpoints: string[] = []) {
    const pool = new WorkerPool({ maxInflightPerWorker: 1, loadFactor: 1.25 });
    pool.setEndpoints(endpoints);
    const reports: [number, number][] = [];
    const queue = new ModelQueue('m', pool, { maxLength: 8 }, (_m, n, tokens) => reports.push([n, tokens]));
    return { pool, queue, reports };
  }

  it('adds a request’s estimate while it waits and removes it when it leaves, however it leaves', async () => {
    const { pool, queue, reports } = setup();
    const abort = new AbortController();
    const a = queue.acquire('a', { timeoutMs: 10_000, promptTokens: () => 3000 });
    const b = queue.acquire('b', { timeoutMs: 10_000, promptTokens: () => 500, signal: abort.signal });
    const c = queue.acquire('c', { timeoutMs: 30, promptTokens: () => 20 });
    expect(queue.queuedPromptTokens).toBe(3520);
    expect(reports).toEqual([
      [1, 3000],
      [2, 3500],
      [3, 3520],
    ]);
    await expect(c).rejects.toThrow('became available'); // the deadline
    expect(reports.at(-1)).toEqual([2, 3500]);
    abort.abort(); // the client went away
    await expect(b).rejects.toThrow('went away');
    expect(reports.at(-1)).toEqual([1, 3000]);
    pool.setEndpoints(['w:1']);
    queue.dispatch(); // served
    (await a).release();
    expect(reports.at(-1)).toEqual([0, 0]);
    expect(queue.queuedPromptTokens).toBe(0);
  });

  it('does not estimate requests that take a worker at once, and clears everything on rejectAll', async () => {
    const { queue, reports } = setup(['w:1']);
    let estimated = 0;
    const promptTokens = () => {
      estimated++;
      return 100;
    };
    const lease = await queue.acquire('a', { timeoutMs: 1000, promptTokens });
    expect(estimated).toBe(0);
    const waiting = queue.acquire('b', { timeoutMs: 10_000, promptTokens });
    expect(estimated).toBe(1);
    queue.rejectAll(() => new Error('shutting down'));
    await expect(waiting).rejects.toThrow('shutting down');
    expect(reports).toEqual([
      [1, 100],
      [0, 0],
    ]);
    lease.release();
  });
});

describe('queued prompt tokens in Redis', () => {
  const now = 1_700_000_000_000;
  const entry = (n: number, ageMs = 0) => encodeQueueEntry(n, now - ageMs);

  it('sums the token entries of the gateways whose queue entries are fresh', () => {
    const r = sumQueuedPromptTokens(
      { 'gw-a': entry(2), 'gw-b': entry(1), 'gw-old': entry(5, 60_000) },
      { 'gw-a': entry(40_000), 'gw-b': entry(900), 'gw-old': entry(1_000_000, 60_000), 'gw-x': 'junk' },
      now,
    );
    expect(r.promptTokens).toBe(40_900);
    expect(r.stale.sort()).toEqual(['gw-old', 'gw-x']);
  });

  it('is unknown when a gateway with waiting requests reported no tokens (a gateway from before the token key)', () => {
    expect(sumQueuedPromptTokens({ 'gw-a': entry(2), 'gw-b': entry(3) }, { 'gw-a': entry(100) }, now)).toEqual({
      promptTokens: undefined,
      stale: [],
    });
    // Its token entry too old counts as none.
    expect(
      sumQueuedPromptTokens({ 'gw-a': entry(2) }, { 'gw-a': entry(100, 20_000) }, now).promptTokens,
    ).toBeUndefined();
    // An empty queue has no tokens to report.
    expect(sumQueuedPromptTokens({ 'gw-a': entry(0), 'gw-b': entry(1) }, { 'gw-b': entry(7) }, now).promptTokens).toBe(
      7,
    );
    expect(sumQueuedPromptTokens({}, {}, now).promptTokens).toBe(0);
  });

  it('is written with the queue length in one transaction, under a key of its own, only when given', async () => {
    const calls: string[] = [];
    const writer: QueueWriter = {
      multi: () => ({
        hset: (key: string, field: string, value: string) => calls.push(`hset ${key} ${field} ${value}`),
        pexpire: (key: string, ms: number) => calls.push(`pexpire ${key} ${ms}`),
        exec: async () => calls.push('exec'),
      }),
    };
    await writeQueueLength(writer, {
      namespace: 'ns',
      model: 'm',
      gatewayId: 'g',
      waiting: 3,
      promptTokens: 9000,
      nowMs: now,
    });
    expect(queueTokensKey('ns', 'm')).not.toBe(queueKey('ns', 'm'));
    expect(calls).toEqual([
      `hset ${queueKey('ns', 'm')} g 3 ${now}`,
      `pexpire ${queueKey('ns', 'm')} 30000`,
      `hset ${queueTokensKey('ns', 'm')} g 9000 ${now}`,
      `pexpire ${queueTokensKey('ns', 'm')} 30000`,
      'exec',
    ]);
    calls.length = 0;
    await writeQueueLength(writer, { namespace: 'ns', model: 'm', gatewayId: 'g', waiting: 3, nowMs: now });
    expect(calls.some((c) => c.includes(queueTokensKey('ns', 'm')))).toBe(false);
  });
});

describe('the workers’ prompt-token series', () => {
  it('reads the prompt-token counter and the waiting gauge of one model; absent series stay absent', () => {
    const text = [
      'vllm:num_requests_waiting{model_name="m"} 2',
      'vllm:prompt_tokens_total{model_name="m"} 123456',
      'vllm:prompt_tokens_total{model_name="other"} 5',
      'modelserve:num_prompt_tokens_waiting{model_name="m"} 7000',
      'modelserve:num_prompt_tokens_waiting{model_name="other"} 99',
    ].join('\n');
    const m = workerMetrics(parsePrometheusText(text).samples, 'm');
    expect(m.promptTokens).toBe(123456);
    expect(m.waitingPromptTokens).toBe(7000);
    const old = workerMetrics(parsePrometheusText('vllm:num_requests_waiting{model_name="m"} 2\n').samples, 'm');
    expect(old.promptTokens).toBeUndefined();
    expect(old.waitingPromptTokens).toBeUndefined();
  });
});

describe('spec.autoscaling.prefillTokensPerSecond', () => {
  const mdep = (autoscaling: Record<string, unknown>) =>
    ({
      metadata: { name: 'x', namespace: 'ns' },
      spec: {
        model: { name: 'm' },
        resources: { gpus: 1 },
        autoscaling: {
          enabled: true,
          mode: 'Active',
          minReplicas: 0,
          maxReplicas: 4,
          queueDepthPerReplica: 8,
          scaleUpStabilizationSeconds: 0,
          scaleDownStabilizationSeconds: 300,
          scaleToZeroAfterSeconds: 600,
          ...autoscaling,
        },
      },
    }) as unknown as ModelDeployment;

  it('reaches the policy configuration when set, and stays unset otherwise (the policy then measures it)', () => {
    expect(policyConfig(mdep({ prefillTokensPerSecond: 27_805 })).prefillTokensPerSecond).toBe(27_805);
    expect('prefillTokensPerSecond' in policyConfig(mdep({}))).toBe(false);
  });
});
