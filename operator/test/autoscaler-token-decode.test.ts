// Issue 6: the token view sizes prefill work only. A load of short prompts and long answers needs replicas for its
// decodes (each one holds one of the gateway's 64 slots per worker for its whole answer) while its prompt tokens say
// one replica is plenty; the policy must still scale up on such a load, and must not on a light one.
import { OURS_CONFIG, oursPolicy } from '../../hack/sim/policies.js';
import { GATEWAY_DEFAULTS, simulate } from '../../hack/sim/simulator.js';
import { decodeHeavyTrace } from '../../hack/sim/trace.js';
import { GPT_OSS_120B_H100, prefillThroughput } from '../../hack/sim/workerModel.js';
import {
  decide,
  DEFAULT_TUNING,
  initialState,
  type Decision,
  type PolicyConfig,
  type PolicyInput,
} from '../src/autoscaler/policy.js';
import { idleInput } from './policy-input.js';

const config: PolicyConfig = {
  ...DEFAULT_TUNING,
  minReplicas: 1,
  maxReplicas: 20,
  gpusPerReplica: 1,
  queueDepthPerReplica: 8,
  slo: { ttftP95Ms: 2000 },
  scaleUpStabilizationSeconds: 0,
  scaleDownStabilizationSeconds: 300,
  scaleToZeroAfterSeconds: 600,
  prefillTokensPerSecond: 20_000,
};

/** The gateway's per-worker in-flight cap (operator/src/gateway/config.ts). */
const SLOTS_PER_WORKER = 64;
const PROMPT_TOKENS = 100;
/** 2,000 output tokens at 20 ms each: how long one request holds its slot. */
const REQUEST_SECONDS = 40;

/**
 * One model's workers under a load of short prompts and long answers: the gateway hands a worker at most
 * SLOTS_PER_WORKER requests and queues the rest; a freed slot takes the next queued request at once, whose 100-token
 * prompt is prefilled within the tick (so no prompt waits on a worker). `clients` requests (closed loop: each client
 * sends its next request when its answer ends) or `arrivalsPerSecond` (open loop) come in.
 */
class Workers {
  queue = 0;
  inFlight = 0;
  constructor(private readonly load: { clients: number } | { arrivalsPerSecond: number }) {
    if ('clients' in load) this.queue = load.clients;
  }

  /** Two seconds on `ready` replicas, then what the loop would read. */
  tick(ready: number): Partial<PolicyInput> {
    const slots = SLOTS_PER_WORKER * ready;
    const finished = (Math.min(this.inFlight, slots) / REQUEST_SECONDS) * 2;
    this.inFlight -= finished;
    this.queue += 'clients' in this.load ? finished : this.load.arrivalsPerSecond * 2;
    const admitted = Math.max(0, Math.min(this.queue, slots - this.inFlight));
    this.queue -= admitted;
    this.inFlight += admitted;
    return {
      readyReplicas: ready,
      gatewayQueue: Math.round(this.queue),
      workerWaiting: 0,
      workerRunning: Math.round(this.inFlight),
      completedPerSecond: finished / 2,
      promptTokensPerSecond: (admitted / 2) * PROMPT_TOKENS,
      queuedPromptTokens: Math.round(this.queue) * PROMPT_TOKENS,
      // The worker-side TTFT: a short prompt's first token comes at once; the gateway queue is not in it.
      ttftP95Ms: 60,
    };
  }
}

/** Runs the policy every 2 s; replicas it asks for are ready at once. */
function run(ticks: number, workers: Workers): { decisions: Decision[]; queues: number[] } {
  let current = 1;
  let state = initialState(0, current);
  const decisions: Decision[] = [];
  const queues: number[] = [];
  for (let i = 0; i < ticks; i++) {
    const input: PolicyInput = idleInput(config, {
      currentReplicas: current,
      readyReplicas: current,
      ...workers.tick(current),
    });
    const d = decide(input, state, i * 2000);
    decisions.push(d);
    queues.push(input.gatewayQueue);
    state = d.newState;
    current = d.desiredReplicas;
  }
  return { decisions, queues };
}

describe('the token view and decode-bound load (issue 6)', () => {
  it('scales up for 200 streams of 100-token prompts and 2,000-token answers on one replica of 64 slots', () => {
    const r = run(30, new Workers({ clients: 200 }));
    expect(r.queues[0]).toBe(136);
    // The prompt tokens alone ask for one replica: 13,600 queued are 0.7 s of prefill, under the 2 s target.
    expect(r.decisions[0]!.message).toMatch(/13600 queued/);
    // Within 10 s every stream holds a slot (200 / 64 -> 4 replicas), and from then on nothing waits.
    expect(r.decisions[4]!.desiredReplicas).toBeGreaterThanOrEqual(4);
    expect(r.queues.slice(6).every((q) => q === 0)).toBe(true);
    // The decision says which signal asked: the slots (64 a replica, seen while requests queued), not prompt tokens.
    const up = r.decisions.find((d) => d.desiredReplicas > 1)!;
    expect(up.message).toMatch(/over 64 in flight per replica ask for 4; prompt tokens ask for 1/);
    // And not much more: 1.6 finished/s per replica and 136 waiting to drain in 20 s ask for 6.
    expect(Math.max(...r.decisions.map((d) => d.desiredReplicas))).toBeLessThanOrEqual(8);
    // Then it stays: once every stream has a slot the queue is gone, and 200 requests still need 4 replicas' slots.
    expect(r.decisions.slice(5).every((d) => d.recommendation >= 4)).toBe(true);
  });

  it('scales up while the gateway queue grows under arrivals above what one replica finishes', () => {
    // 4 requests/s arrive; one replica's 64 slots finish 1.6/s once full.
    const r = run(60, new Workers({ arrivalsPerSecond: 4 }));
    expect(Math.max(...r.queues)).toBeGreaterThan(0);
    // Little's law: 4/s x 40 s = 160 in flight, 3 replicas of 64 slots; the queue is gone at the end.
    expect(r.decisions[r.decisions.length - 1]!.desiredReplicas).toBeGreaterThanOrEqual(3);
    expect(r.queues.slice(-10).every((q) => q === 0)).toBe(true);
  });

  it('does not scale up a light load: no gateway queue, 40 long answers in one worker’s 64 slots', () => {
    const r = run(150, new Workers({ clients: 40 }));
    expect(r.queues.every((q) => q === 0)).toBe(true);
    expect(r.decisions.every((d) => d.desiredReplicas === 1)).toBe(true);
  });

  it('reads a replica’s slots only from a queue seen at two ticks on an unchanged ready count, keeping the highest', () => {
    let state = initialState(0, 2);
    const at = (ms: number, ready: number, gatewayQueue: number, workerRunning: number) => {
      const d = decide(
        {
          config,
          currentReplicas: ready,
          readyReplicas: ready,
          pendingPods: 0,
          gatewayQueue,
          workerWaiting: 0,
          workerRunning,
          queuedPromptTokens: gatewayQueue * PROMPT_TOKENS,
          promptTokensPerSecond: 0,
          scheduleFloor: 0,
          signalsAvailable: true,
        },
        state,
        ms,
      );
      state = d.newState;
      return d;
    };
    at(0, 2, 10, 128); // the queue's first tick: no sample
    at(2000, 2, 10, 100); // one worker's requests not counted yet: a low sample
    expect([state.slotSamples, state.slotsPerReplica]).toEqual([1, 50]);
    at(4000, 3, 10, 130); // a replica just became ready: no sample
    at(6000, 3, 0, 150); // no queue: no sample, and the next queue starts over
    at(8000, 3, 5, 192);
    expect(state.slotSamples).toBe(1);
    // Two samples are not enough to size on.
    expect(at(10_000, 3, 5, 192).recommendation).toBe(1);
    const d = at(12_000, 3, 5, 192);
    expect([state.slotSamples, state.slotsPerReplica]).toEqual([3, 64]);
    expect(d.message).toMatch(/demand 197 .* over 64 in flight per replica ask for 4; prompt tokens ask for 1/);
    expect(d.desiredReplicas).toBe(4);
  });

  it('serves the simulator’s decode-heavy load with the prompt-token signals on, where it used to reject most of it', () => {
    // hack/sim's `--synthetic decode-heavy`: 0.5 requests/s, then 4/s for 10 minutes; 100-token prompts, 2,000-token
    // answers; the gateway's defaults (64 in flight per worker, 256 queued, 60 s deadline), 5 s starts.
    const trace = decodeHeavyTrace();
    const meanContext = trace.reduce((sum, r) => sum + r.context, 0) / trace.length;
    const config = { ...OURS_CONFIG, prefillTokensPerSecond: prefillThroughput(GPT_OSS_120B_H100, meanContext) };
    const r = simulate(trace, oursPolicy(config), {
      ...GATEWAY_DEFAULTS,
      model: GPT_OSS_120B_H100,
      coldStartS: 5,
      sampleEveryS: 5,
    });
    // Before the slot view the token view held one replica: 1,423 of 2,476 requests were rejected, 6.5 % attained.
    expect(r.rejected).toBe(0);
    expect(r.sloAttainment).toBeGreaterThan(0.95);
    expect(r.maxReplicas).toBeGreaterThanOrEqual(3);
  });
});
