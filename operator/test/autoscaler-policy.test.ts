// The autoscaling policy as a pure function: examples of each rule, then properties over random signal sequences.
import fc from 'fast-check';
import {
  decide,
  DEFAULT_TUNING,
  initialState,
  replicaCap,
  type Decision,
  type PolicyConfig,
  type PolicyInput,
  type PolicyState,
} from '../src/autoscaler/policy.js';
import { idleInput } from './policy-input.js';

const config = (over: Partial<PolicyConfig> = {}): PolicyConfig => ({
  ...DEFAULT_TUNING,
  minReplicas: 1,
  maxReplicas: 10,
  gpusPerReplica: 1,
  queueDepthPerReplica: 8,
  scaleUpStabilizationSeconds: 0,
  scaleDownStabilizationSeconds: 300,
  scaleToZeroAfterSeconds: 600,
  ...over,
});

const input = idleInput;

/** Runs the policy every 2 s with a fresh input per tick, applying each decision (pods become ready at once). */
function run(
  c: PolicyConfig,
  ticks: number,
  signal: (i: number, current: number) => Partial<PolicyInput>,
  start = { current: 1, state: undefined as PolicyState | undefined, t0: 1_000_000 },
): { decisions: Decision[]; inputs: PolicyInput[]; times: number[]; state: PolicyState; current: number } {
  let current = start.current;
  let state = start.state ?? initialState(start.t0, current);
  const decisions: Decision[] = [];
  const inputs: PolicyInput[] = [];
  const times: number[] = [];
  for (let i = 0; i < ticks; i++) {
    const now = start.t0 + i * 2000;
    const inp = input(c, { currentReplicas: current, readyReplicas: current, ...signal(i, current) });
    const d = decide(inp, state, now);
    decisions.push(d);
    inputs.push(inp);
    times.push(now);
    state = d.newState;
    current = d.desiredReplicas;
  }
  return { decisions, inputs, times, state, current };
}

describe('autoscaling policy: rules', () => {
  it('scales up on queue depth at once', () => {
    const c = config();
    const inp = input(c, {
      currentReplicas: 3,
      readyReplicas: 3,
      gatewayQueue: 30,
      workerRunning: 8,
      workerWaiting: 2,
    });
    const d = decide(inp, initialState(0, 3), 0);
    expect(d.desiredReplicas).toBe(5); // 40 / 8
    expect(d.reason).toBe('QueueDepth');
  });

  it('scales from zero at once when requests wait', () => {
    const c = config({ minReplicas: 0 });
    const d = decide(input(c, { currentReplicas: 0, readyReplicas: 0, gatewayQueue: 1 }), initialState(0, 0), 0);
    expect(d.desiredReplicas).toBe(1);
    expect(d.reason).toBe('ScaleFromZero');
  });

  it('stays at zero without demand', () => {
    const c = config({ minReplicas: 0 });
    const d = decide(input(c, { currentReplicas: 0, readyReplicas: 0 }), initialState(0, 0), 0);
    expect(d.desiredReplicas).toBe(0);
  });

  it('raises the count when the TTFT p95 misses its target, proportionally and bounded', () => {
    const c = config({ slo: { ttftP95Ms: 1000 } });
    const st = initialState(0, 4);
    const inp = input(c, { currentReplicas: 4, readyReplicas: 4, workerRunning: 8, ttftP95Ms: 1500 });
    const d = decide(inp, st, 60_000);
    expect(d.desiredReplicas).toBe(6); // 4 x 1.5
    expect(d.reason).toBe('SLOViolation');
    expect(d.sloMet).toBe(false);
    const far = decide({ ...inp, ttftP95Ms: 10_000 }, st, 60_000);
    expect(far.desiredReplicas).toBe(8); // bounded by maxSloFactor 2
  });

  it('ignores the latency percentile until the ready count has settled', () => {
    const c = config({ slo: { ttftP95Ms: 1000 } });
    const inp = input(c, { currentReplicas: 4, readyReplicas: 4, workerRunning: 8, ttftP95Ms: 3000 });
    const d = decide(inp, initialState(0, 4, 2), 5_000); // ready went 2 -> 4 just now
    expect(d.desiredReplicas).toBe(4);
    expect(d.reason).not.toBe('SLOViolation');
  });

  it('panics on a burst: scales up at once and does not scale down while in panic', () => {
    const c = config({ scaleDownStabilizationSeconds: 0 });
    const r = run(c, 40, (i) => ({ gatewayQueue: i >= 5 && i < 8 ? 100 : 0 }));
    const burst = r.decisions[5]!;
    expect(burst.panic).toBe(true);
    expect(burst.desiredReplicas).toBeGreaterThanOrEqual(10);
    // The trigger at tick 5 (10 ready now, so no later tick reaches 2x): panic lasts the 30 s stable window.
    for (let i = 6; i < 5 + 15; i++) {
      expect(r.decisions[i]!.desiredReplicas).toBe(10);
      expect(r.decisions[i]!.panic).toBe(true);
    }
    expect(r.decisions[20]!.panic).toBe(false);
    expect(r.decisions[20]!.desiredReplicas).toBeLessThan(10);
  });

  it('scales down only after the stabilization window, to the max recommendation in it', () => {
    const c = config({ scaleDownStabilizationSeconds: 60, stableWindowSeconds: 2, panicThreshold: 1000 });
    const r = run(c, 60, (i) => ({ gatewayQueue: i < 10 ? 40 : i < 20 ? 20 : 0 }));
    expect(r.decisions[9]!.desiredReplicas).toBe(5);
    // Demand halves at tick 10 (t=20 s): the 5 persists until t = 18 s + 60 s.
    for (let i = 10; i < 39; i++) expect(r.decisions[i]!.desiredReplicas).toBe(5);
    expect(r.decisions[10]!.reason).toBe('Stabilizing');
    expect(r.decisions[39]!.desiredReplicas).toBe(3);
    // The last 3 was recommended at tick 19 (t = 38 s): the count falls to the floor one window later.
    expect(r.decisions[48]!.desiredReplicas).toBe(3);
    // At most half per step (3 -> 2), one step per stable window (2 s here).
    expect(r.decisions[49]!.desiredReplicas).toBe(2);
    expect(r.decisions[50]!.desiredReplicas).toBe(1);
  });

  it('releases capacity gradually: at most half per step, one step per stable window', () => {
    const c = config({ scaleDownStabilizationSeconds: 0, stableWindowSeconds: 30, maxReplicas: 10 });
    const r = run(c, 60, () => ({}), { current: 8, state: undefined, t0: 0 });
    const counts = r.decisions.map((d) => d.desiredReplicas);
    expect(counts[0]).toBe(8); // the first observation: the current count counts as a recommendation
    expect(counts[1]).toBe(4); // t = 2 s
    expect(counts.slice(2, 16).every((n) => n === 4)).toBe(true); // until 30 s after the first step
    expect(counts[16]).toBe(2); // t = 32 s
    expect(counts[31]).toBe(1); // t = 62 s
  });

  it('scales to zero only after scaleToZeroAfterSeconds idle with minReplicas 0', () => {
    const c = config({ minReplicas: 0, scaleToZeroAfterSeconds: 60, scaleDownStabilizationSeconds: 10 });
    const r = run(c, 50, (i) => ({ workerRunning: i < 5 ? 3 : 0 }));
    const firstZero = r.decisions.findIndex((d) => d.desiredReplicas === 0);
    // Last busy tick 4 (t = 8 s); idle 60 s at t = 68 s = tick 34.
    expect(firstZero).toBe(34);
    expect(r.decisions[firstZero]!.reason).toBe('ScaleToZero');
    expect(r.decisions[33]!.desiredReplicas).toBe(1);
    expect(r.decisions[33]!.reason).toBe('IdleGrace');
  });

  it('never scales to zero when minReplicas is above zero or a schedule is active', () => {
    const c = config({ minReplicas: 0, scaleToZeroAfterSeconds: 0 });
    const d = decide(input(c, { scheduleFloor: 2 }), initialState(0, 1), 1_000_000);
    expect(d.desiredReplicas).toBe(2);
    expect(d.reason).toBe('ScheduleFloor');
    expect(run(config({ minReplicas: 1, scaleToZeroAfterSeconds: 0 }), 100, () => ({})).current).toBe(1);
  });

  it('caps at the GPU budget and says so', () => {
    const c = config({ gpusPerReplica: 2, maxGPUs: 7, maxReplicas: 10 });
    expect(replicaCap(c)).toEqual({ cap: 3, by: 'BudgetLimited' });
    const d = decide(input(c, { gatewayQueue: 1000 }), initialState(0, 1), 0);
    expect(d.desiredReplicas).toBe(3);
    expect(d.limitedBy).toBe('BudgetLimited');
    const over = decide(input(c, { currentReplicas: 5, readyReplicas: 5 }), initialState(0, 5), 0);
    expect(over.desiredReplicas).toBe(3);
  });

  it('holds while pods are Pending, then adds more after the timeout', () => {
    const c = config({ pendingTimeoutSeconds: 30 });
    const st = initialState(0, 2);
    const inp = input(c, { currentReplicas: 3, readyReplicas: 2, pendingPods: 1, gatewayQueue: 80 });
    const held = decide(inp, st, 0);
    expect(held.desiredReplicas).toBe(3);
    expect(held.reason).toBe('PendingPods');
    const later = decide(inp, held.newState, 31_000);
    expect(later.desiredReplicas).toBe(10);
  });

  it('does not wind up while replicas start: more only when demand reaches the panic threshold of the count', () => {
    const c = config({ pendingTimeoutSeconds: 60 });
    const st = initialState(0, 4, 1); // 4 asked for, 1 ready: 3 starting
    const inp = input(c, { currentReplicas: 4, readyReplicas: 1, gatewayQueue: 56 }); // asks for 7 < 2 x 4
    const held = decide(inp, st, 1000);
    expect(held.desiredReplicas).toBe(4);
    expect(held.reason).toBe('StartingPods');
    expect(decide({ ...inp, gatewayQueue: 64 }, st, 1000).desiredReplicas).toBe(8); // 8 >= 2 x 4
    expect(decide(inp, held.newState, 62_000).desiredReplicas).toBe(7); // pods that never start: timeout
  });

  it('caps the queue view with the measured service rate: a backlog is drained, not matched replica for replica', () => {
    const c = config({ queueDepthPerReplica: 4, maxReplicas: 50, drainSeconds: 20, panicThreshold: 1000 });
    // Saturated: 4 ready replicas finish 40 requests/s with a backlog, so mu = 10/s per replica.
    const base = input(c, { currentReplicas: 4, readyReplicas: 4, gatewayQueue: 200, workerRunning: 16 });
    const measured = decide({ ...base, completedPerSecond: 40 }, initialState(0, 4), 0);
    expect(measured.newState.serviceRate).toBeCloseTo(10);
    // Arrival 40/s -> 4 replicas, plus 200 waiting / (10/s x 20 s) = 1: 5, not 216 / 4 = 54.
    expect(measured.desiredReplicas).toBe(5);
    const blind = decide(base, initialState(0, 4), 0);
    expect(blind.desiredReplicas).toBe(50); // without the counter, the queue view alone (54, capped at max)
  });

  it('treats non-finite or negative signals as nothing, never producing NaN', () => {
    const c = config({ slo: { ttftP95Ms: 500 } });
    const inp = input(c, {
      currentReplicas: 2,
      readyReplicas: 2,
      gatewayQueue: NaN,
      workerWaiting: -5,
      workerRunning: Infinity,
      ttftP95Ms: NaN,
      completedPerSecond: NaN,
    });
    const d = decide(inp, initialState(0, 2), 1000);
    expect(Number.isInteger(d.desiredReplicas)).toBe(true);
    expect(d.demand).toBe(0);
  });

  it('holds the count without signals (Redis down), never scaling down blind', () => {
    const c = config();
    const d = decide(
      input(c, { currentReplicas: 6, readyReplicas: 6, signalsAvailable: false }),
      initialState(0, 6),
      0,
    );
    expect(d.desiredReplicas).toBe(6);
    expect(d.reason).toBe('SignalsUnavailable');
  });

  it('delays scale-up by the up-stabilization window when one is set', () => {
    const c = config({ scaleUpStabilizationSeconds: 10 });
    // 24 waiting on 2 ready replicas asks for 3, below the panic threshold (4).
    const r = run(c, 10, () => ({ gatewayQueue: 24 }), { current: 2, state: undefined, t0: 1_000_000 });
    expect(r.decisions[0]!.desiredReplicas).toBe(2);
    expect(r.decisions[0]!.reason).toBe('Stabilizing');
    expect(r.decisions[4]!.desiredReplicas).toBe(2);
    expect(r.decisions[5]!.desiredReplicas).toBe(3);
  });

  it('survives a JSON round trip of its state (kept in Redis)', () => {
    const c = config();
    const r = run(c, 20, (i) => ({ gatewayQueue: (i * 7) % 50 }));
    const copy = JSON.parse(JSON.stringify(r.state)) as PolicyState;
    const inp = input(c, { currentReplicas: r.current, readyReplicas: r.current, gatewayQueue: 3 });
    expect(decide(inp, copy, 1_000_000 + 40_000)).toEqual(decide(inp, r.state, 1_000_000 + 40_000));
  });
});

describe('autoscaling policy: prompt tokens, warm floor, standbys', () => {
  const slo = { ttftP95Ms: 2000 };

  it('sizes on prompt tokens when they are known: arrival / P + queued / (P x TTFT target)', () => {
    const c = config({ slo, prefillTokensPerSecond: 10_000 });
    // 3 requests would be one replica by count (8 per replica); 60,000 queued prompt tokens are 6 replica-seconds.
    const d = decide(
      input(c, {
        currentReplicas: 4,
        readyReplicas: 4,
        workerWaiting: 3,
        queuedPromptTokens: 60_000,
        promptTokensPerSecond: 20_000,
      }),
      initialState(0, 4),
      0,
    );
    // 20,000 / 10,000 + 60,000 / (10,000 x 2 s) = 5.
    expect(d.recommendation).toBe(5);
    expect(d.desiredReplicas).toBe(5);
    expect(d.message).toMatch(/prompt tokens: 20000\/s arriving, 60000 queued, 10000\/s per replica/);
  });

  it('panics at once when the queued prompts predict a TTFT over the target, before any p95 shows it', () => {
    const c = config({ slo, prefillTokensPerSecond: 10_000, panicThreshold: 1000 });
    // Two requests, 50,000 tokens: 5 s of prefill on one replica, over the 2 s target.
    const d = decide(
      input(c, { workerWaiting: 2, queuedPromptTokens: 50_000, promptTokensPerSecond: 0, ttftP95Ms: 100 }),
      initialState(0, 1),
      0,
    );
    expect(d.panic).toBe(true);
    expect(d.reason).toBe('Panic');
    expect(d.desiredReplicas).toBe(3); // 50,000 / (10,000 x 2)
    expect(d.message).toMatch(/queued prompts wait 5\.0s on 1 ready/);
  });

  it('learns the prefill rate only from ticks with waiting prompts, and uses it after a few of them', () => {
    const c = config({ slo });
    // No configured rate: the first ticks fall back to request counts.
    const r = run(c, 8, () => ({ workerWaiting: 4, queuedPromptTokens: 60_000, promptTokensPerSecond: 24_000 }));
    expect(r.decisions[0]!.message).toMatch(/demand 4/);
    expect(r.decisions[0]!.recommendation).toBe(1); // 4 requests / 8 per replica
    // From the fifth sample: 24,000 / 24,000 + 60,000 / (24,000 x 2 s) = 2.25 -> 3.
    expect(r.decisions[4]!.recommendation).toBe(1);
    expect(r.decisions[6]!.recommendation).toBe(3);
    // The first sample (tick 1) is 24,000 on 1 replica; later ones on more replicas are lower and do not lower it.
    expect(r.state.prefillRate).toBe(24_000);
    // Ticks whose backlog is smaller than the interval's finished tokens (replicas not saturated) measure nothing.
    const light = run(c, 8, () => ({ workerRunning: 4, queuedPromptTokens: 900, promptTokensPerSecond: 500 }));
    expect(light.state.prefillRate ?? null).toBeNull();
  });

  it('keeps a warm floor after a burst: its peak for 12 start-up times, then half of it until the window ends', () => {
    const c = config({ scaleDownStabilizationSeconds: 300, burstHoldSeconds: 30, stableWindowSeconds: 2 });
    // The burst asks for 10 at t = 0; ticks 1-2 see 1 ready and tick 3 (t = 6 s) all 10: measured from the first
    // tick that saw the shortfall, the start-up took 4 s, so the peak holds 48 s.
    const r = run(c, 200, (i, current) => ({
      gatewayQueue: i < 5 ? 80 : 0,
      workerRunning: 1,
      readyReplicas: i < 3 ? 1 : current,
    }));
    expect(r.decisions[0]!.desiredReplicas).toBe(10);
    expect(r.state.startupMs).toBe(4000);
    // The last peak recommendation was at tick 4 (t = 8 s): held through t = 54 s, half of it from t = 56 s.
    expect(r.decisions[27]!.desiredReplicas).toBe(10);
    expect(r.decisions[28]!.desiredReplicas).toBe(5);
    expect(r.decisions[150]!.desiredReplicas).toBe(5);
    expect(r.decisions[150]!.reason).toBe('Stabilizing');
    // After the whole window (t > 308 s) the half goes too.
    expect(r.decisions[160]!.desiredReplicas).toBeLessThan(5);
  });

  it('holds the whole window until a start-up time was measured', () => {
    const c = config({ scaleDownStabilizationSeconds: 300, burstHoldSeconds: 30, stableWindowSeconds: 2 });
    const r = run(c, 200, (i) => ({ gatewayQueue: i < 5 ? 80 : 0, workerRunning: 1 }));
    expect(r.state.startupMs ?? null).toBeNull();
    expect(r.decisions[150]!.desiredReplicas).toBe(10);
  });

  it('does not hold capacity that loaded standbys give back within a second', () => {
    const c = config({ scaleDownStabilizationSeconds: 300, burstHoldSeconds: 60, stableWindowSeconds: 2 });
    const burst = (standbyReady: number) =>
      run(c, 40, (i) => ({ gatewayQueue: i < 5 ? 80 : 0, workerRunning: 1, standbyReady }));
    expect(burst(0).decisions[20]!.desiredReplicas).toBe(10);
    // Two standbys: the hold is 10 - 2.
    expect(burst(2).decisions[20]!.desiredReplicas).toBe(8);
  });

  it('releases nothing while requests wait in the gateway queue', () => {
    const c = config({ scaleDownStabilizationSeconds: 0, stableWindowSeconds: 2, queueDepthPerReplica: 100 });
    const r = run(c, 10, () => ({ gatewayQueue: 3 }), { current: 6, state: undefined, t0: 0 });
    expect(r.decisions.every((d) => d.desiredReplicas === 6)).toBe(true);
    expect(r.decisions[5]!.message).toMatch(/still wait for a replica/);
  });
});

const arbConfig = fc
  .record({
    minReplicas: fc.integer({ min: 0, max: 4 }),
    span: fc.integer({ min: 0, max: 12 }),
    gpusPerReplica: fc.integer({ min: 0, max: 8 }),
    maxGPUs: fc.option(fc.integer({ min: 1, max: 64 }), { nil: undefined }),
    queueDepthPerReplica: fc.integer({ min: 1, max: 32 }),
    ttft: fc.option(fc.integer({ min: 100, max: 5000 }), { nil: undefined }),
    up: fc.integer({ min: 0, max: 30 }),
    down: fc.integer({ min: 0, max: 300 }),
    zero: fc.integer({ min: 0, max: 300 }),
    hold: fc.integer({ min: 0, max: 120 }),
    prefill: fc.option(fc.integer({ min: 1000, max: 50_000 }), { nil: undefined }),
  })
  .map((r): PolicyConfig =>
    config({
      minReplicas: r.minReplicas,
      maxReplicas: Math.max(1, r.minReplicas + r.span),
      gpusPerReplica: r.gpusPerReplica,
      ...(r.maxGPUs !== undefined ? { maxGPUs: r.maxGPUs } : {}),
      queueDepthPerReplica: r.queueDepthPerReplica,
      ...(r.ttft !== undefined ? { slo: { ttftP95Ms: r.ttft } } : {}),
      scaleUpStabilizationSeconds: r.up,
      scaleDownStabilizationSeconds: r.down,
      scaleToZeroAfterSeconds: r.zero,
      burstHoldSeconds: r.hold,
      ...(r.prefill !== undefined ? { prefillTokensPerSecond: r.prefill } : {}),
    }),
  );

const arbTick = fc.record({
  gatewayQueue: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 400 })),
  workerWaiting: fc.integer({ min: 0, max: 20 }),
  workerRunning: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 60 })),
  ttftP95Ms: fc.option(fc.integer({ min: 10, max: 20_000 }), { nil: undefined }),
  pendingPods: fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 1, max: 3 })),
  scheduleFloor: fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 0, max: 6 })),
  signalsAvailable: fc.oneof(fc.constant(true), fc.constant(true), fc.constant(true), fc.constant(false)),
  readyLag: fc.integer({ min: 0, max: 3 }),
  completedPerSecond: fc.option(fc.double({ min: 0, max: 200, noNaN: true }), { nil: undefined }),
  queuedPromptTokens: fc.option(fc.integer({ min: 0, max: 500_000 }), { nil: undefined }),
  promptTokensPerSecond: fc.option(fc.double({ min: 0, max: 200_000, noNaN: true }), { nil: undefined }),
  standbyReady: fc.option(fc.integer({ min: 0, max: 3 }), { nil: undefined }),
});

describe('autoscaling policy: properties', () => {
  it('never exceeds the GPU budget or maxReplicas, never goes below the floor the budget allows', () => {
    fc.assert(
      fc.property(
        arbConfig,
        fc.array(arbTick, { minLength: 1, maxLength: 80 }),
        fc.integer({ min: 0, max: 20 }),
        (c, ticks, start) => {
          const r = run(
            c,
            ticks.length,
            (i, current) => {
              const { readyLag, ...t } = ticks[i]!;
              return { ...t, readyReplicas: Math.max(0, current - readyLag) };
            },
            { current: start, state: undefined, t0: 5_000_000 },
          );
          const { cap } = replicaCap(c);
          r.decisions.forEach((d, i) => {
            expect(d.desiredReplicas).toBeLessThanOrEqual(cap);
            if (c.maxGPUs !== undefined) expect(d.desiredReplicas * c.gpusPerReplica).toBeLessThanOrEqual(c.maxGPUs);
            expect(d.desiredReplicas).toBeGreaterThanOrEqual(Math.min(c.minReplicas, cap));
            expect(d.desiredReplicas).toBeGreaterThanOrEqual(Math.min(r.inputs[i]!.scheduleFloor, cap));
          });
        },
      ),
      { numRuns: 300 },
    );
  });

  it('scales down only to the warm floor: the peak of burstHoldSeconds, half the peak of the whole window', () => {
    fc.assert(
      fc.property(arbConfig, fc.array(arbTick, { minLength: 1, maxLength: 120 }), (c, ticks) => {
        const r = run(c, ticks.length, (i, current) => {
          const { readyLag, ...t } = ticks[i]!;
          return { ...t, readyReplicas: Math.max(0, current - readyLag) };
        });
        const windowMs = c.scaleDownStabilizationSeconds * 1000;
        const holdMs = Math.min(c.burstHoldSeconds, c.scaleDownStabilizationSeconds) * 1000;
        r.decisions.forEach((d, i) => {
          const inp = r.inputs[i]!;
          const before = inp.currentReplicas;
          if (d.desiredReplicas >= before || d.desiredReplicas === 0 || before > replicaCap(c).cap) return;
          // Standbys stand in for the part of the floor they can give back at once.
          const floor = d.desiredReplicas + (inp.standbyReady ?? 0);
          for (let j = 0; j <= i; j++) {
            if (!(r.times[j]! > r.times[i]! - windowMs) || !r.inputs[j]!.signalsAvailable) continue;
            const rec = r.decisions[j]!.recommendation;
            expect(Math.ceil(rec / c.maxScaleDownRate)).toBeLessThanOrEqual(floor);
            if (r.times[j]! > r.times[i]! - holdMs) expect(rec).toBeLessThanOrEqual(floor);
          }
          // Nothing goes while requests wait for a replica.
          expect(inp.gatewayQueue).toBe(0);
        });
      }),
      { numRuns: 300 },
    );
  });

  it('scales to zero only after scaleToZeroAfterSeconds without demand', () => {
    fc.assert(
      fc.property(arbConfig, fc.array(arbTick, { minLength: 1, maxLength: 200 }), (c, ticks) => {
        if (replicaCap(c).cap === 0) return; // the budget forbids any replica
        const r = run(c, ticks.length, (i) => {
          const { readyLag: _lag, ...t } = ticks[i]!;
          return i % 3 === 0 ? t : { ...t, gatewayQueue: 0, workerRunning: 0, workerWaiting: 0 };
        });
        let lastBusy = r.times[0]!;
        r.decisions.forEach((d, i) => {
          const inp = r.inputs[i]!;
          if (inp.signalsAvailable && d.demand > 0) lastBusy = r.times[i]!;
          if (d.desiredReplicas === 0 && inp.currentReplicas > 0) {
            expect(c.minReplicas).toBe(0);
            expect(r.times[i]! - lastBusy).toBeGreaterThanOrEqual(c.scaleToZeroAfterSeconds * 1000);
          }
        });
      }),
      { numRuns: 300 },
    );
  });

  it('scales from zero at once when requests wait (and the budget allows a replica)', () => {
    fc.assert(
      fc.property(arbConfig, arbTick, (c, t) => {
        const { readyLag: _lag, ...tick } = t;
        const inp = input(c, { ...tick, gatewayQueue: tick.gatewayQueue + 1, currentReplicas: 0, readyReplicas: 0 });
        const d = decide(inp, initialState(0, 0), 10_000);
        if (replicaCap(c).cap >= 1 && inp.signalsAvailable) expect(d.desiredReplicas).toBeGreaterThanOrEqual(1);
      }),
      { numRuns: 500 },
    );
  });

  it('does not oscillate under constant load: after settling the count stays constant', () => {
    fc.assert(
      fc.property(
        arbConfig,
        fc.integer({ min: 0, max: 300 }),
        fc.integer({ min: 0, max: 50 }),
        fc.integer({ min: 0, max: 10 }),
        fc.option(
          fc.record({ queued: fc.integer({ min: 0, max: 200_000 }), done: fc.integer({ min: 0, max: 100_000 }) }),
          {
            nil: undefined,
          },
        ),
        (c, queue, running, start, tokens) => {
          // Settle for longer than every window, then watch 200 more ticks with the same input.
          const settle = Math.ceil((Math.max(c.scaleDownStabilizationSeconds, c.scaleToZeroAfterSeconds) + 120) / 2);
          const prompt = tokens ? { queuedPromptTokens: tokens.queued, promptTokensPerSecond: tokens.done } : {};
          const r = run(c, settle + 200, () => ({ gatewayQueue: queue, workerRunning: running, ...prompt }), {
            current: start,
            state: undefined,
            t0: 0,
          });
          const tail = r.decisions.slice(settle).map((d) => d.desiredReplicas);
          expect(new Set(tail).size).toBe(1);
        },
      ),
      { numRuns: 100 },
    );
  });
});
