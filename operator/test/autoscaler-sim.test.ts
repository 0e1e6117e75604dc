// The autoscaler simulator (hack/sim) on small synthetic traces whose outcome can be worked out by hand, so that the
// figures in docs/benchmarks/autoscaler.md rest on a checked model.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { OURS_CONFIG, oursPolicy, staticPolicy } from '../../hack/sim/policies.js';
import { simulate, type SimOptions } from '../../hack/sim/simulator.js';
import { loadTrace, scaleTrace, type TraceRequest } from '../../hack/sim/trace.js';
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

  it('names the file and line of a malformed row, and a wrong header', () => {
    expect(() => loadTrace(write('TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,2\n'))).toThrow(
      /t\.csv:2: malformed/,
    );
    expect(() => loadTrace(write('a,b,c\n'))).toThrow(/expected header/);
  });
});
