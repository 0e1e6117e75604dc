// Pure parts of the autoscaler's inputs: Prometheus text parsing, p95 from histogram bucket deltas, the Redis queue
// contract, schedules, and what is written to status.
import {
  bucketDelta,
  histogramQuantile,
  LatencyWindow,
  parsePrometheusText,
  workerMetrics,
  type Buckets,
} from '../src/autoscaler/prometheus.js';
import { decide, DEFAULT_TUNING, initialState, type PolicyConfig } from '../src/autoscaler/policy.js';
import {
  appendHistory,
  autoscalerConditions,
  historyEntry,
  HISTORY_LENGTH,
  statusDiffers,
} from '../src/autoscaler/record.js';
import { activeWindowStart, scheduleFloor } from '../src/autoscaler/schedule.js';
import { countPods, metricsUrl } from '../src/autoscaler/signals.js';
import { parseStored } from '../src/autoscaler/loop.js';
import {
  decodeQueueEntry,
  encodeQueueEntry,
  encodeWake,
  parseWake,
  queueKey,
  sumQueueEntries,
} from '../src/autoscaler/signals-keys.js';
import type { ModelDeployment } from '../src/api/modelDeployment.js';

const BOUNDS = [0.1, 0.25, 0.5, 1, 2.5, 5];

/** Exposition text of one worker as prom-client writes it. */
function exposition(model: string, waiting: number, running: number, ttftCounts: number[]): string {
  let cumulative = 0;
  const lines = [
    '# HELP vllm:num_requests_waiting Requests waiting.',
    '# TYPE vllm:num_requests_waiting gauge',
    `vllm:num_requests_waiting{model_name="${model}"} ${waiting}`,
    `vllm:num_requests_running{model_name="${model}"} ${running}`,
    `vllm:num_requests_running{model_name="other"} 99`,
    '# TYPE vllm:time_to_first_token_seconds histogram',
  ];
  BOUNDS.forEach((b, i) => {
    cumulative += ttftCounts[i] ?? 0;
    lines.push(`vllm:time_to_first_token_seconds_bucket{le="${b}",model_name="${model}"} ${cumulative}`);
  });
  cumulative += ttftCounts[BOUNDS.length] ?? 0;
  lines.push(`vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="${model}"} ${cumulative}`);
  lines.push(`vllm:time_to_first_token_seconds_count{model_name="${model}"} ${cumulative}`);
  lines.push(`vllm:generation_tokens_total{model_name="${model}"} 1234`);
  return lines.join('\n') + '\n';
}

describe('Prometheus text and histograms', () => {
  it('parses samples with labels, escapes and special values, and names malformed lines', () => {
    const { samples, errors } = parsePrometheusText(
      'a{x="1",y="q\\"uote"} 3\nb +Inf\nc{le="0.5"} 2.5e1 1700000000\nnot a sample line\n# comment\n',
    );
    expect(samples).toEqual([
      { name: 'a', labels: { x: '1', y: 'q"uote' }, value: 3 },
      { name: 'b', labels: {}, value: Infinity },
      { name: 'c', labels: { le: '0.5' }, value: 25 },
    ]);
    expect(errors).toEqual(['line 4: not a sample: not a sample line']);
  });

  it("reads one model's vLLM gauges and histograms, ignoring other models", () => {
    const { samples } = parsePrometheusText(exposition('m', 3, 5, [1, 2, 3, 0, 0, 0, 0]));
    const w = workerMetrics(samples, 'm');
    expect(w.waiting).toBe(3);
    expect(w.running).toBe(5);
    expect(w.generationTokens).toBe(1234);
    expect(w.ttft.get(0.5)).toBe(6);
    expect(w.ttft.get(Infinity)).toBe(6);
  });

  it('interpolates quantiles inside buckets as histogram_quantile does', () => {
    const b: Buckets = new Map([
      [0.1, 10],
      [0.5, 90],
      [1, 100],
      [Infinity, 100],
    ]);
    expect(histogramQuantile(0.5, b)).toBeCloseTo(0.1 + (0.4 * 40) / 80);
    expect(histogramQuantile(0.95, b)).toBeCloseTo(0.5 + (0.5 * 5) / 10);
    expect(histogramQuantile(0.95, new Map([[Infinity, 0]]))).toBeUndefined();
    expect(
      histogramQuantile(
        0.99,
        new Map([
          [1, 1],
          [Infinity, 100],
        ]),
      ),
    ).toBe(1);
  });

  it('takes deltas between scrapes and treats a decrease as a worker restart', () => {
    const earlier: Buckets = new Map([
      [1, 5],
      [Infinity, 7],
    ]);
    expect([
      ...bucketDelta(
        new Map([
          [1, 8],
          [Infinity, 12],
        ]),
        earlier,
      ),
    ]).toEqual([
      [1, 3],
      [Infinity, 5],
    ]);
    expect([
      ...bucketDelta(
        new Map([
          [1, 2],
          [Infinity, 2],
        ]),
        earlier,
      ),
    ]).toEqual([
      [1, 2],
      [Infinity, 2],
    ]);
  });

  it('computes p95 over the window from per-pod deltas, not from counts older than the window', () => {
    const w = new LatencyWindow(10_000);
    const parse = (counts: number[]) => workerMetrics(parsePrometheusText(exposition('m', 0, 0, counts)).samples, 'm');
    // 100 slow requests between 0 s and 5 s, then only fast ones.
    w.record('a', 0, parse([0, 0, 0, 0, 0, 0, 0]));
    expect(w.quantiles(0.95).ttftMs).toBeUndefined(); // one scrape: nothing inside the window yet
    w.record('a', 5_000, parse([0, 0, 0, 0, 0, 100, 0]));
    expect(w.quantiles(0.95).ttftMs).toBeGreaterThan(2500);
    w.record('a', 12_000, parse([50, 0, 0, 0, 0, 100, 0]));
    w.record('a', 20_000, parse([100, 0, 0, 0, 0, 100, 0]));
    // At 20 s the baseline is the 5 s scrape (the newest at or before the window start): only the fast ones count.
    expect(w.quantiles(0.95).ttftMs).toBeLessThanOrEqual(100);
    w.record('b', 20_000, parse([0, 0, 0, 0, 0, 0, 0]));
    w.record('b', 22_000, parse([0, 0, 0, 0, 0, 0, 1000]));
    expect(w.quantiles(0.95).ttftMs).toBe(5000); // b's slow requests land in +Inf: the highest finite bound
    w.retain(new Set(['a']));
    expect(w.quantiles(0.95).ttftMs).toBeLessThanOrEqual(100);
  });
});

describe('the Redis queue contract', () => {
  it('names keys per namespace and model, and round-trips entries', () => {
    expect(queueKey('team-a', 'gpt-oss-20b')).toBe('modelserve:queue:team-a/gpt-oss-20b');
    expect(decodeQueueEntry(encodeQueueEntry(7, 1_700_000_000_000))).toEqual({ waiting: 7, unixMs: 1_700_000_000_000 });
    expect(decodeQueueEntry('seven')).toBeUndefined();
  });

  it('sums fresh entries and lists stale or malformed ones for deletion', () => {
    const now = 1_000_000;
    const r = sumQueueEntries(
      { a: encodeQueueEntry(3, now - 1000), b: encodeQueueEntry(4, now - 60_000), c: 'x' },
      now,
    );
    expect(r).toEqual({ waiting: 3, gateways: 1, stale: ['b', 'c'] });
  });

  it('parses wake messages and refuses malformed ones without throwing', () => {
    const msg = { namespace: 'ns', model: 'm', waiting: 2, at: 5 };
    expect(parseWake(encodeWake(msg))).toEqual(msg);
    expect(parseWake('{')).toBeUndefined();
    expect(parseWake('{"namespace":"ns"}')).toBeUndefined();
    expect(parseWake('{"namespace":"ns","model":"m"}')).toEqual({ namespace: 'ns', model: 'm', waiting: 0, at: 0 });
  });

  it('builds the /metrics URL from the annotation, the http container port, or the fallback', () => {
    const pod = (annotations?: Record<string, string>, port?: number) => ({
      metadata: { name: 'p', ...(annotations ? { annotations } : {}) },
      spec: { containers: [{ name: 'worker', ...(port ? { ports: [{ name: 'http', containerPort: port }] } : {}) }] },
      status: { podIP: '10.0.0.7' },
    });
    expect(metricsUrl(pod(undefined, 8000), 9000)).toBe('http://10.0.0.7:8000/metrics');
    expect(metricsUrl(pod({ 'serving.modelserve.dev/metrics-port': '9100' }, 8000), 9000)).toBe(
      'http://10.0.0.7:9100/metrics',
    );
    expect(metricsUrl(pod(), 9000)).toBe('http://10.0.0.7:9000/metrics');
    expect(metricsUrl({ metadata: {}, spec: { containers: [] }, status: {} }, 9000)).toBeUndefined();
  });

  it('counts serving pods as capacity and loaded standbys apart; a pending standby does not hold back scale-up', () => {
    const pod = (name: string, role: string | undefined, phase: string, ready: boolean, terminating = false) => ({
      metadata: {
        name,
        ...(role ? { labels: { 'serving.modelserve.dev/role': role } } : {}),
        ...(terminating ? { deletionTimestamp: new Date() } : {}),
      },
      status: { phase, conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] },
    });
    const counts = countPods([
      pod('serving-ready', 'serving', 'Running', true),
      pod('unlabelled-ready', undefined, 'Running', true),
      pod('serving-pending', 'serving', 'Pending', false),
      pod('standby-ready', 'standby', 'Running', true),
      pod('standby-pending', 'standby', 'Pending', false),
      pod('serving-terminating', 'serving', 'Running', true, true),
    ]);
    expect(counts.ready.map((p) => p.metadata!.name)).toEqual(['serving-ready', 'unlabelled-ready']);
    expect(counts.pending).toBe(1);
    expect(counts.live).toBe(3);
    expect(counts.standbyReady).toBe(1);
  });
});

describe('schedules', () => {
  const s = { cron: '0 8 * * MON-FRI', timezone: 'Europe/Paris', minReplicas: 3, durationMinutes: 90 };
  it('opens a window at the cron time in its time zone for durationMinutes', () => {
    // Monday 2026-11-23: 08:00 Paris = 07:00 UTC.
    expect(activeWindowStart(s, new Date('2026-11-23T06:59:00Z'))).toBeUndefined();
    expect(activeWindowStart(s, new Date('2026-11-23T07:00:00Z'))?.toISOString()).toBe('2026-11-23T07:00:00.000Z');
    expect(activeWindowStart(s, new Date('2026-11-23T08:29:00Z'))).toBeDefined();
    expect(activeWindowStart(s, new Date('2026-11-23T08:30:00Z'))).toBeUndefined();
    expect(activeWindowStart(s, new Date('2026-11-22T07:10:00Z'))).toBeUndefined(); // Sunday
  });

  it('takes the highest active floor and reports bad entries by index without failing the rest', () => {
    const r = scheduleFloor(
      [s, { ...s, cron: '*/10 * * * *', timezone: 'UTC', minReplicas: 5, durationMinutes: 2 }, { ...s, cron: 'nope' }],
      new Date('2026-11-23T07:01:00Z'),
    );
    expect(r.floor).toBe(5);
    expect(r.errors.map((e) => e.message)).toEqual([
      expect.stringContaining('spec.autoscaling.schedules[2].cron "nope"'),
    ]);
  });
});

describe('status written by the autoscaler', () => {
  const config: PolicyConfig = {
    ...DEFAULT_TUNING,
    minReplicas: 1,
    maxReplicas: 2,
    gpusPerReplica: 1,
    queueDepthPerReplica: 4,
    slo: { ttftP95Ms: 500 },
    scaleUpStabilizationSeconds: 0,
    scaleDownStabilizationSeconds: 60,
    scaleToZeroAfterSeconds: 60,
  };
  const mdep = { metadata: { name: 'm', generation: 3 }, status: { conditions: [] } } as unknown as ModelDeployment;
  const input = {
    config,
    currentReplicas: 1,
    readyReplicas: 1,
    pendingPods: 0,
    gatewayQueue: 40,
    workerWaiting: 0,
    workerRunning: 0,
    scheduleFloor: 0,
    signalsAvailable: true,
  };

  it('sets ScalingLimited when the cap binds and SLOMet from the p95', () => {
    const d = decide({ ...input, ttftP95Ms: 900 }, initialState(0, 1), 60_000);
    expect(d.limitedBy).toBe('MaxReplicas');
    const conds = autoscalerConditions(mdep, d, config.slo, new Date(60_000));
    expect(conds.find((c) => c.type === 'ScalingLimited')).toMatchObject({ status: 'True', reason: 'MaxReplicas' });
    expect(conds.find((c) => c.type === 'SLOMet')).toMatchObject({
      status: 'False',
      reason: 'ObjectiveMissed',
      observedGeneration: 3,
    });
  });

  it('keeps the last entries of the history and notices only meaningful status changes', () => {
    const d = decide(input, initialState(0, 1), 60_000);
    let h = appendHistory(undefined, historyEntry(1, d, true, new Date(0)));
    for (let i = 0; i < 20; i++) h = appendHistory(h, historyEntry(i, d, true, new Date(i * 1000)));
    expect(h).toHaveLength(HISTORY_LENGTH);
    expect(h.at(-1)!.from).toBe(19);
    const conditions = autoscalerConditions(mdep, d, config.slo, new Date(0));
    const status = { signals: { queueDepth: 4, observedAt: 'a' }, conditions, scalingHistory: h };
    expect(statusDiffers(status, { ...status, signals: { queueDepth: 4, observedAt: 'b' } })).toBe(false);
    expect(statusDiffers(status, { ...status, signals: { queueDepth: 5, observedAt: 'b' } })).toBe(true);
  });
});

describe('stored autoscaler state', () => {
  it('round-trips a policy state and starts afresh (with a reason) on anything unreadable', () => {
    const reasons: string[] = [];
    const policy = initialState(5, 3);
    expect(parseStored(JSON.stringify({ policy }), (w) => reasons.push(w))).toEqual({ policy });
    expect(parseStored(null, (w) => reasons.push(w))).toBeUndefined();
    expect(parseStored('{not json', (w) => reasons.push(w))).toBeUndefined();
    expect(parseStored('{"policy":{"version":2}}', (w) => reasons.push(w))).toBeUndefined();
    expect(reasons).toHaveLength(2);
  });
});
