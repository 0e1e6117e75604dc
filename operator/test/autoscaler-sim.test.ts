// The autoscaler simulator (hack/sim) on small synthetic traces whose outcome can be worked out by hand, so that the
// figures in docs/benchmarks/autoscaler.md rest on a checked model.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { burstOutcomes, findBursts } from '../../hack/sim/bursts.js';
import { OURS_CONFIG, oursPolicy, staticPolicy } from '../../hack/sim/policies.js';
import { simulate, type ClusterView, type SimOptions, type SimPolicy } from '../../hack/sim/simulator.js';
import { jitterTrace, loadTrace, scaleTrace, type TraceRequest } from '../../hack/sim/trace.js';
import { expertsTouched, GPT_OSS_120B_H100, prefillThroughput, stepSeconds } from '../../hack/sim/workerModel.js';

const options: SimOptions = {
  model: GPT_OSS_120B_H100,
  coldStartS: 30,
  gpusPerReplica: 1,
  ttftSloS: 2,
  ttftWindowS: 20,
  maxQueue: 100,
  queueTimeoutS: 60,
  maxInflightPerWorker: 16,
  sampleEveryS: 1,
};

describe('worker roofline model', () => {
  it('reads the batch-1 bytes of notes/gpt-oss.md at batch 1 and all experts for large batches', () => {
    const m = GPT_OSS_120B_H100;
    expect(expertsTouched(m, 1)).toBeCloseTo(4);
    expect(expertsTouched(m, 4096)).toBeCloseTo(128);
    const batch1 = m.denseBytes + m.layers * m.bytesPerExpert * expertsTouched(m, 1);
    expect(batch1).toBeCloseTo(5.003e9, -6);
    // A decode step at batch 1 is memory-bound: overhead + bytes / effective bandwidth.
    const t = stepSeconds(m, { decodes: 1, prefillTokens: 0, prefillAttendTokens: 0, kvTokens: 0 });
    expect(t).toBeCloseTo(m.stepOverheadS + batch1 / (m.memBandwidth * m.memEfficiency), 6);
    // A full prefill chunk is compute-bound: throughput below the FLOP ceiling, above half of it.
    const ceiling = (m.peakFlops * m.computeEfficiency) / (2 * m.activeParams);
    expect(prefillThroughput(m, 2048)).toBeLessThan(ceiling);
    expect(prefillThroughput(m, 2048)).toBeGreaterThan(ceiling / 2);
  });
});

describe('simulator', () => {
  const one: TraceRequest[] = [{ t: 0, context: 1000, generated: 3 }];

  it('serves a lone request in one prefill step then decodes, and bills the replica for the whole run', () => {
    const r = simulate(one, staticPolicy('static', 2), options);
    const prefill = stepSeconds(GPT_OSS_120B_H100, {
      decodes: 0,
      prefillTokens: 1000,
      prefillAttendTokens: 1000 * 500,
      kvTokens: 0,
    });
    expect(r.served).toBe(1);
    expect(r.ttftP50).toBeCloseTo(prefill, 9);
    expect(r.sloAttainment).toBe(1);
    expect(r.gpuHours).toBeCloseTo((2 * r.durationS) / 3600, 9);
  });

  it('makes the first request wait out the cold start when scaling from zero', () => {
    const later: TraceRequest[] = [{ t: 100, context: 1000, generated: 3 }];
    const r = simulate(later, oursPolicy({ ...OURS_CONFIG, scaleToZeroAfterSeconds: 10 }), options);
    expect(r.served).toBe(1);
    // Idle from t=0: scaled to zero after 10 s; at t=100 the request waits for the next tick (<= 2 s) + 30 s.
    expect(r.ttftP50).toBeGreaterThan(30);
    expect(r.ttftP50).toBeLessThan(33);
    expect(r.sloAttainment).toBe(0);
  });

  it('runs a request that arrives during a step in the next step, not in the one already running', () => {
    const m = GPT_OSS_120B_H100;
    const two: TraceRequest[] = [
      { t: 0, context: 1000, generated: 2 },
      { t: 0.001, context: 1000, generated: 2 },
    ];
    const r = simulate(two, staticPolicy('static', 1), options);
    const first = stepSeconds(m, { decodes: 0, prefillTokens: 1000, prefillAttendTokens: 1000 * 500, kvTokens: 0 });
    // Step 2: the first request's decode and the second's whole prefill.
    const second = stepSeconds(m, { decodes: 1, prefillTokens: 1000, prefillAttendTokens: 1000 * 500, kvTokens: 1000 });
    expect(r.ttftP50).toBeCloseTo(first, 9);
    expect(r.ttftP99).toBeCloseTo(first + second - 0.001, 9);
  });

  it("shows the policy the workers' TTFT histogram, which leaves out the time spent in the gateway queue", () => {
    // Two 8,000-token prompts on one replica with one in flight: the second waits in the gateway for the first.
    const pair: TraceRequest[] = [
      { t: 0, context: 8000, generated: 1 },
      { t: 0, context: 8000, generated: 1 },
    ];
    const seen: ClusterView[] = [];
    const watcher: SimPolicy = {
      name: 'watch',
      tickSeconds: 0.05,
      initialReplicas: 1,
      decide: (v) => (seen.push(v), 1),
    };
    const r = simulate(pair, watcher, { ...options, maxInflightPerWorker: 1, ttftWindowS: 60 });
    const prefill = stepSeconds(GPT_OSS_120B_H100, {
      decodes: 0,
      prefillTokens: 8000,
      prefillAttendTokens: 8000 * 4000,
      kvTokens: 0,
    });
    expect(r.ttftP99).toBeCloseTo(2 * prefill, 9); // end to end
    const last = seen[seen.length - 1]!;
    // Both worker-side TTFTs are one prefill (~0.3 s), in the 0.25-0.5 s bucket: the p95 interpolates inside it.
    expect(last.ttftP95Ms).toBeGreaterThan(250);
    expect(last.ttftP95Ms).toBeLessThanOrEqual(500);
    expect(seen.some((v) => v.gatewayQueue === 1 && v.queuedPromptTokens >= 8000)).toBe(true);
  });

  it('promotes a loaded standby in promoteS, tops the pool back up with a cold start, and bills standbys', () => {
    const later: TraceRequest[] = [{ t: 10, context: 1000, generated: 3 }];
    const upAt10: SimPolicy = { name: 'up', tickSeconds: 1, initialReplicas: 0, decide: (v) => (v.now >= 10 ? 1 : 0) };
    const withStandby = simulate(later, upAt10, { ...options, standbyReplicas: 1, promoteS: 1 });
    const cold = simulate(later, upAt10, options);
    const prefill = stepSeconds(GPT_OSS_120B_H100, {
      decodes: 0,
      prefillTokens: 1000,
      prefillAttendTokens: 1000 * 500,
      kvTokens: 0,
    });
    expect(withStandby.ttftP50).toBeCloseTo(1 + prefill, 6);
    expect(cold.ttftP50).toBeCloseTo(options.coldStartS + prefill, 6);
    // The standby held a GPU from t=0 until its promotion (10 s) and its replacement from then to the end.
    expect(withStandby.standbyGpuHours).toBeCloseTo(withStandby.durationS / 3600, 6);
    expect(cold.standbyGpuHours).toBe(0);
  });

  it('rejects requests past the queue bound and counts them as misses', () => {
    const burst: TraceRequest[] = Array.from({ length: 300 }, () => ({ t: 0, context: 4000, generated: 10 }));
    const r = simulate(burst, staticPolicy('static', 1), options);
    expect(r.rejected).toBe(300 - 100 - 16); // 16 on the worker, 100 queued
    expect(r.served + r.rejected).toBe(300);
    expect(r.sloAttainment).toBeLessThan(r.served / 300);
  });
});

describe('trace loader', () => {
  const write = (text: string) => {
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'trace-')), 't.csv');
    writeFileSync(file, text);
    return file;
  };

  it('reads timestamps with 7 fractional digits relative to the first request, and scales time', () => {
    const t = loadTrace(
      write(
        'TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,10,2\n2023-11-16 18:17:05.4799600,20,3\n',
      ),
    );
    expect(t).toEqual([
      { t: 0, context: 10, generated: 2 },
      { t: expect.closeTo(1.5, 6) as number, context: 20, generated: 3 },
    ]);
    expect(scaleTrace(t, 5)[1]!.t).toBeCloseTo(0.3, 6);
  });

  it('jitters arrivals by at most ±0.25 s, the same way for the same seed, and keeps them in order', () => {
    const t: TraceRequest[] = Array.from({ length: 200 }, (_, i) => ({ t: i * 0.1, context: i + 1, generated: 1 }));
    const a = jitterTrace(t, 7);
    expect(a).toEqual(jitterTrace(t, 7));
    expect(a).not.toEqual(jitterTrace(t, 8));
    expect(a.every((r, i) => i === 0 || r.t >= a[i - 1]!.t)).toBe(true);
    for (const r of a) expect(Math.abs(r.t - (r.context - 1) * 0.1)).toBeLessThanOrEqual(0.25 + 1e-9);
  });

  it('names the file and line of a malformed row, and a wrong header', () => {
    expect(() => loadTrace(write('TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,2\n'))).toThrow(
      /t\.csv:2: malformed/,
    );
    expect(() => loadTrace(write('a,b,c\n'))).toThrow(/expected header/);
  });
});

describe('burst analysis', () => {
  const perReplica = prefillThroughput(GPT_OSS_120B_H100, 2000);
  // Light load (one 2,000-token prompt every 2 s) for two minutes, then 120 such prompts in 4 s.
  const quiet: TraceRequest[] = Array.from({ length: 60 }, (_, i) => ({ t: 2 * i, context: 2000, generated: 2 }));
  const spike: TraceRequest[] = Array.from({ length: 120 }, (_, i) => ({
    t: 120 + i / 30,
    context: 2000,
    generated: 2,
  }));
  const trace = [...quiet, ...spike];

  it('finds the burst above what the previous minute warranted and sizes it', () => {
    const bursts = findBursts(trace, perReplica);
    expect(bursts).toHaveLength(1);
    const b = bursts[0]!;
    expect(b.start).toBe(120);
    expect(b.requests).toBe(120);
    expect(b.promptTokens).toBe(240_000);
    expect(b.warranted).toBe(1);
    expect(b.needed).toBe(Math.ceil(60_000 / perReplica));
    expect(b.oneReplicaS).toBeCloseTo(240_000 / perReplica, 9);
  });

  it('counts requests no reactive policy serves: many with a 30 s start, fewer with 5 s, none with enough ready', () => {
    const [o] = burstOutcomes(trace, findBursts(trace, perReplica), { ...options, maxQueue: 1000 }, [
      ['30 s', 30],
      ['5 s', 5],
    ]);
    expect(o!.unservable['30 s']).toBeGreaterThan(o!.unservable['5 s']!);
    expect(o!.unservable['5 s']).toBeGreaterThan(0);
    expect(o!.missedPreProvisioned).toBe(0);
  });
});
