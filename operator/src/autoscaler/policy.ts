// The autoscaling policy: a pure function from (signals, limits, remembered state, time) to a replica count and a
// reason. Everything with a clock or a network lives in loop.ts; this file is what the unit/property tests and the
// simulator (hack/sim) drive, so the simulated policy is the deployed one.
//
// Per tick:
//   demand      = gateway queue + workers' waiting + running requests
//   queue rec   = ceil(max(demand now, mean demand over the stable window) / queueDepthPerReplica), capped by
//   rate rec    = arrival / mu + backlog / (mu x drainSeconds), mu = measured per-replica service rate (when known)
//   panic rec   = ceil(mean demand over the panic window / queueDepthPerReplica); panic starts when it is at least
//                 panicThreshold x the ready replicas and lasts a stable window after the last trigger; while in
//                 panic the count only goes up
//   token rec   = (prompt tokens/s arriving + queued prompt tokens / the TTFT target) / P, P = one replica's prefill
//                 tokens/s (configured, else measured); when the prompt-token signals are there it replaces the two
//                 views above
//                 (request counts say little when prompts range from 100 to 30,000 tokens), and a queue whose
//                 predicted wait (queued tokens / (ready x P)) already exceeds the TTFT target starts panic at once,
//                 before any late first token shows in the p95
//   slot rec    = ceil(demand / S), S = requests one replica holds while requests wait in the gateway queue (the
//                 gateway's per-worker in-flight cap, as measured); with the token view the count is at least this,
//                 since prompt tokens do not see decodes, which hold their slot until the answer ends; and while
//                 requests wait in the gateway queue and the slots ask for more than the prompt tokens (a
//                 decode-bound queue), at least the queue rec capped by the rate rec as well
//   SLO rec     = ready x min(observed p95 / target, maxSloFactor) (at least ready + 1) when a target is missed,
//                 counted only once the ready count has been unchanged for sloSettleSeconds (the p95 must describe
//                 the current capacity, or it would raise the count again for latencies the last step already fixed)
//   floor       = max(minReplicas, active schedule floor, 1 while not idle for scaleToZeroAfterSeconds)
//   cap         = min(maxReplicas, floor(maxGPUs / gpusPerReplica))
// then HPA-style stabilization (up: min of the recommendations over the up window; down: the peak of the last
// holdStartupMultiple x the measured start-up time, and at least peak / maxScaleDownRate of the whole down window —
// a warm floor that decays after a burst, sooner where replicas start fast, instead of holding its peak for the
// whole window; capacity that loaded standbys give back within a second is not held; nothing is released while
// requests wait in the gateway queue),
// scale from zero at once, scale to zero after idleness, no further scale-up while pods are Pending, and while
// replicas are starting only a demand of panicThreshold x the count asked for adds more.
import type { Reason } from './reasons.js';

export interface PolicyConfig {
  minReplicas: number;
  maxReplicas: number;
  /** Unset: no GPU budget beyond maxReplicas. */
  maxGPUs?: number;
  gpusPerReplica: number;
  queueDepthPerReplica: number;
  slo?: { ttftP95Ms?: number; itlP95Ms?: number };
  scaleUpStabilizationSeconds: number;
  scaleDownStabilizationSeconds: number;
  scaleToZeroAfterSeconds: number;
  /** Averaging window of the stable recommendation; also how long panic lasts after its last trigger. */
  stableWindowSeconds: number;
  panicWindowSeconds: number;
  /** Panic when the panic-window recommendation reaches this multiple of the ready replicas. */
  panicThreshold: number;
  /** Largest multiple of the ready replicas one SLO-driven step asks for. */
  maxSloFactor: number;
  /** Ready count unchanged this long before a latency percentile is trusted to describe it. */
  sloSettleSeconds: number;
  /** How long scale-up waits for Pending pods before it adds more anyway. */
  pendingTimeoutSeconds: number;
  /** One scale-down step keeps at least current / maxScaleDownRate (scale to zero after idleness excepted). */
  maxScaleDownRate: number;
  /** The backlog should drain within this many seconds (with the measured service rate). */
  drainSeconds: number;
  /**
   * A scale-down keeps the highest recommendation of holdStartupMultiple x the measured start-up time (at least
   * burstHoldSeconds, at most the down window; the whole window until a start-up was measured), then
   * peak / maxScaleDownRate until the window ends.
   */
  burstHoldSeconds: number;
  holdStartupMultiple: number;
  /** Prefill tokens/s of one replica (from the engine's benchmark); wins over the measured figure. */
  prefillTokensPerSecond?: number;
}

/** Tuning that the CRD does not expose; the CRD's fields come from spec.autoscaling. */
export const DEFAULT_TUNING = {
  stableWindowSeconds: 30,
  panicWindowSeconds: 6,
  panicThreshold: 2,
  maxSloFactor: 2,
  sloSettleSeconds: 20,
  pendingTimeoutSeconds: 120,
  maxScaleDownRate: 2,
  drainSeconds: 20,
  burstHoldSeconds: 60,
  // 12 x a 30 s cold start is beyond the CRD's default 300 s window (so cold starts keep it); 5 s starts hold 60 s.
  holdStartupMultiple: 12,
} satisfies Partial<PolicyConfig>;

export interface PolicyInput {
  config: PolicyConfig;
  /** spec.replicas now (what the last decision, or a person, set). */
  currentReplicas: number;
  readyReplicas: number;
  /** Worker pods that exist but are not yet scheduled or started (phase Pending). */
  pendingPods: number;
  /** Requests waiting in the gateways' queues. */
  gatewayQueue: number;
  /** Requests admitted by workers but not yet started (vllm:num_requests_waiting summed). */
  workerWaiting: number;
  /** Requests being served (vllm:num_requests_running summed). */
  workerRunning: number;
  ttftP95Ms?: number;
  itlP95Ms?: number;
  /** Requests the ready workers finished per second since the previous tick; undefined when unknown. */
  completedPerSecond?: number;
  /**
   * Prompt tokens of the requests waiting for their first token (the gateways' estimate of their queues + the
   * workers' modelserve:num_prompt_tokens_waiting); undefined when unknown. With promptTokensPerSecond it turns on
   * the token view.
   */
  queuedPromptTokens?: number;
  /**
   * Prompt tokens the ready workers prefilled per second since the previous tick (vllm:prompt_tokens_total, counted
   * at each sequence's first token); 0 with no ready worker.
   */
  promptTokensPerSecond?: number;
  /** Standby replicas loaded and ready to be promoted (spec.prewarm.standbyReplicas); undefined means none. */
  standbyReady?: number;
  /** Highest minReplicas among the schedules active now (0 when none); see schedule.ts. */
  scheduleFloor: number;
  /** False when the queue could not be read (Redis down): hold the count, never scale down blind. */
  signalsAvailable: boolean;
}

export interface PolicyState {
  version: 1;
  /** [unix ms, demand] samples inside the stable window. */
  demand: [number, number][];
  /** [unix ms, recommendation] inside the longer stabilization window. */
  recs: [number, number][];
  /** Last time demand was non-zero. */
  lastBusyMs: number;
  panicUntilMs: number | null;
  /** Since when pods have been Pending without a break. */
  pendingSinceMs: number | null;
  /** Since when fewer replicas than asked for have been ready without a break (absent in older states). */
  startingSinceMs?: number | null;
  readyReplicas: number;
  readyChangedMs: number;
  lastScaleMs: number | null;
  /** Last scale down (absent in older states). */
  lastScaleDownMs?: number | null;
  /** Requests per second one replica finishes when it has a backlog (moving average; absent until measured). */
  serviceRate?: number | null;
  /** Prompt tokens per second one replica prefilled while saturated (highest sample; absent until measured). */
  prefillRate?: number | null;
  /** [unix ms, queued prompt tokens] at the previous tick, for the growth of the token queue. */
  queuedTokens?: [number, number] | null;
  /** How many ticks measured prefillRate. */
  prefillSamples?: number;
  /**
   * Requests (running + waiting) one ready replica held while requests waited in the gateway queue: the gateway's
   * per-worker in-flight cap as seen from the workers (highest sample; absent until measured).
   */
  slotsPerReplica?: number | null;
  /** How many ticks measured slotsPerReplica. */
  slotSamples?: number;
  /** Since when the gateway queue has held requests without a break (absent in older states). */
  gatewayQueuedSinceMs?: number | null;
  /** Time from a scale-up to all asked-for replicas ready (moving average; absent until measured). */
  startupMs?: number | null;
}

export type LimitedBy = 'BudgetLimited' | 'MaxReplicas';

export interface Decision {
  desiredReplicas: number;
  reason: Reason;
  message: string;
  /** Set when the cap (GPU budget or maxReplicas) lowered the count. */
  limitedBy?: LimitedBy;
  newState: PolicyState;
  /** The count before stabilization, holds and bounds' clamping at the end. */
  recommendation: number;
  demand: number;
  panic: boolean;
  /** undefined when no SLO is set or no latency was observed. */
  sloMet?: boolean;
}

/**
 * State for a model seen for the first time (or whose state was lost): the current count counts as a recommendation
 * made now, so nothing scales down before a full stabilization window of observations.
 */
export function initialState(nowMs: number, currentReplicas: number, readyReplicas = currentReplicas): PolicyState {
  return {
    version: 1,
    demand: [],
    recs: [[nowMs, currentReplicas]],
    lastBusyMs: nowMs,
    panicUntilMs: null,
    pendingSinceMs: null,
    startingSinceMs: null,
    readyReplicas,
    readyChangedMs: nowMs,
    lastScaleMs: null,
  };
}

const mean = (samples: [number, number][], fromMs: number): number => {
  const inWindow = samples.filter(([t]) => t > fromMs);
  return inWindow.length === 0 ? 0 : inWindow.reduce((s, [, v]) => s + v, 0) / inWindow.length;
};

/** The cap from maxReplicas and the GPU budget, and which of them binds. */
export function replicaCap(c: PolicyConfig): { cap: number; by: LimitedBy } {
  const byBudget =
    c.maxGPUs !== undefined && c.gpusPerReplica > 0 ? Math.floor(c.maxGPUs / c.gpusPerReplica) : Infinity;
  return byBudget < c.maxReplicas ? { cap: byBudget, by: 'BudgetLimited' } : { cap: c.maxReplicas, by: 'MaxReplicas' };
}

function sloRatio(input: PolicyInput): number | undefined {
  const slo = input.config.slo;
  const ratios: number[] = [];
  const ok = (x: number | undefined): x is number => x !== undefined && Number.isFinite(x) && x >= 0;
  if (slo?.ttftP95Ms && ok(input.ttftP95Ms)) ratios.push(input.ttftP95Ms / slo.ttftP95Ms);
  if (slo?.itlP95Ms && ok(input.itlP95Ms)) ratios.push(input.itlP95Ms / slo.itlP95Ms);
  return ratios.length ? Math.max(...ratios) : undefined;
}

export function decide(input: PolicyInput, state: PolicyState, nowMs: number): Decision {
  const c = input.config;
  const current = input.currentReplicas;
  // Signals come from other processes: anything negative or not finite counts as nothing, never as NaN.
  const count = (x: number | undefined) => (x !== undefined && Number.isFinite(x) && x > 0 ? x : 0);
  const demand = count(input.gatewayQueue) + count(input.workerWaiting) + count(input.workerRunning);
  const { cap, by: capBy } = replicaCap(c);
  const hardFloor = Math.min(Math.max(c.minReplicas, input.scheduleFloor), cap);
  const clampBounds = (n: number) => Math.min(Math.max(n, hardFloor), cap);

  if (!input.signalsAvailable) {
    const held = clampBounds(current);
    return {
      desiredReplicas: held,
      reason: held === current ? 'SignalsUnavailable' : held > current ? 'MinReplicas' : capBy,
      message: `queue depth unavailable; holding ${held} replicas`,
      ...(held < current ? { limitedBy: capBy } : {}),
      newState: state,
      recommendation: held,
      demand,
      panic: state.panicUntilMs !== null && nowMs < state.panicUntilMs,
    };
  }

  const s: PolicyState = {
    ...state,
    demand: [...state.demand, [nowMs, demand] as [number, number]],
    recs: [...state.recs],
  };
  if (demand > 0) s.lastBusyMs = nowMs;
  if (input.readyReplicas !== s.readyReplicas) {
    s.readyReplicas = input.readyReplicas;
    s.readyChangedMs = nowMs;
  }
  if (input.pendingPods > 0) s.pendingSinceMs ??= nowMs;
  else s.pendingSinceMs = null;
  if (input.readyReplicas < current) s.startingSinceMs ??= nowMs;
  else {
    // Replicas asked for are all ready: how long that took is the start-up time the warm floor weighs.
    if (s.startingSinceMs != null && current > 0) {
      const took = nowMs - s.startingSinceMs;
      s.startupMs = s.startupMs ? 0.7 * s.startupMs + 0.3 * took : took;
    }
    s.startingSinceMs = null;
  }
  const stableMs = c.stableWindowSeconds * 1000;
  s.demand = s.demand.filter(([t]) => t > nowMs - Math.max(stableMs, c.panicWindowSeconds * 1000));

  const target = Math.max(1, c.queueDepthPerReplica);
  // Up at once on the demand seen now; the mean keeps the count while a burst's queue drains between samples.
  const stableRec = Math.max(0, Math.ceil(Math.max(demand, mean(s.demand, nowMs - stableMs)) / target - 1e-9));
  const panicValue = mean(s.demand, nowMs - c.panicWindowSeconds * 1000) / target;
  const panicRec = Math.max(0, Math.ceil(panicValue - 1e-9));

  // Rate view: a backlog is waiting work, not a rate. With the measured per-replica service rate mu, the replicas
  // needed are arrival / mu plus what drains the backlog within drainSeconds; it caps the concurrency view, which
  // over-asks while a queue that a cold start let grow is still there.
  const backlog = count(input.gatewayQueue) + count(input.workerWaiting);
  const completed = Number.isFinite(input.completedPerSecond) ? count(input.completedPerSecond) : undefined;
  let rateRec: number | undefined;
  if (completed !== undefined) {
    if (backlog > 0 && input.readyReplicas > 0 && completed > 0) {
      const mu = completed / input.readyReplicas;
      s.serviceRate = s.serviceRate ? 0.8 * s.serviceRate + 0.2 * mu : mu;
    }
    if (s.serviceRate) {
      const first = s.demand.find(([t]) => t > nowMs - c.panicWindowSeconds * 1000) ?? [nowMs, demand];
      const growth = first[0] < nowMs ? Math.max(0, (demand - first[1]) / ((nowMs - first[0]) / 1000)) : 0;
      const arrival = completed + growth;
      rateRec = Math.ceil(arrival / s.serviceRate + backlog / (s.serviceRate * c.drainSeconds) - 1e-9);
      rateRec = Math.max(rateRec, demand > 0 ? 1 : 0);
    }
  }
  const capByRate = (n: number) => (rateRec === undefined ? n : Math.min(n, rateRec));
  const slots = slotView(input, s, nowMs, demand);

  // Token view: prefill work in replica-seconds; "burning" = the queued prompts alone already miss the TTFT target.
  const tokens = tokenView(input, s, c, nowMs, demand);
  const burning = tokens !== undefined && input.readyReplicas > 0 && tokens.predictedWaitS > sloSeconds(c);
  if (input.readyReplicas > 0 && (tokens ? tokens.panicValue : panicValue) >= c.panicThreshold * input.readyReplicas) {
    s.panicUntilMs = nowMs + stableMs;
  }
  if (burning) s.panicUntilMs = nowMs + stableMs;
  const panic = s.panicUntilMs !== null && nowMs < s.panicUntilMs;
  if (!panic) s.panicUntilMs = null;

  // Decodes are not in the token view: a short prompt with a long answer costs little prefill but holds one of its
  // worker's slots until the answer ends. So with the token view the count also covers the requests in flight and
  // queued over the slots of a replica; and when the gateway queue holds requests that the slots explain and the
  // prompt tokens do not (decode-bound), the count view capped by the rate view (measured finished requests, which
  // include the decode time) counts as well: the slot view alone sizes for what is there now, one replica at a time,
  // while the queue grows during each start-up.
  const demandWhy = `demand ${demand} (gateway ${input.gatewayQueue}, waiting ${input.workerWaiting}, running ${input.workerRunning})`;
  let tokenAsk = tokens?.rec ?? 0;
  let tokenWhy = tokens
    ? `prompt tokens: ${Math.round(tokens.arrival)}/s arriving, ${input.queuedPromptTokens} queued, ${Math.round(tokens.perReplica)}/s per replica`
    : '';
  if (tokens && slots && slots.rec > tokens.rec) {
    const slotWhy = `slots: ${demandWhy} over ${Math.round(slots.perReplica)} in flight per replica ask for ${slots.rec}; prompt tokens ask for ${tokens.rec}`;
    tokenAsk = slots.rec;
    tokenWhy = slotWhy;
    const decodeRec = count(input.gatewayQueue) > 0 && rateRec !== undefined ? Math.min(rateRec, stableRec) : 0;
    if (decodeRec > tokenAsk) {
      tokenAsk = decodeRec;
      tokenWhy = `decode-bound queue: the rate view asks for ${rateRec} (${completed!.toFixed(1)} finished/s, ${s.serviceRate!.toFixed(1)}/s per replica with a backlog), the count view for ${stableRec} (${target}/replica); ${slotWhy}`;
    }
  }

  // Which signal asks for the most; ties go to the more urgent reason.
  let rec = tokens ? tokenAsk : capByRate(stableRec);
  let reason: Reason = 'QueueDepth';
  let why = tokens ? tokenWhy : `${demandWhy}, ${target}/replica`;

  const ratio = sloRatio(input);
  const sloSettled = nowMs - s.readyChangedMs >= c.sloSettleSeconds * 1000;
  if (ratio !== undefined && ratio > 1 && input.readyReplicas > 0 && demand > 0 && sloSettled) {
    const sloRec = Math.max(input.readyReplicas + 1, Math.ceil(input.readyReplicas * Math.min(ratio, c.maxSloFactor)));
    if (sloRec >= rec) {
      rec = sloRec;
      reason = 'SLOViolation';
      why = `p95 ${ratio.toFixed(2)}x the SLO target (ttft ${fmt(input.ttftP95Ms)} ms, itl ${fmt(input.itlP95Ms)} ms) on ${input.readyReplicas} ready`;
    }
  }
  const panicAsk = tokens ? tokenAsk : capByRate(panicRec);
  if (panic && Math.max(panicAsk, current) >= rec) {
    rec = Math.max(panicAsk, current);
    reason = 'Panic';
    why = burning
      ? `burst: queued prompts wait ${tokens.predictedWaitS.toFixed(1)}s on ${input.readyReplicas} ready (TTFT target ${sloSeconds(c)}s); ${why}`
      : `burst: ${(tokens ? tokens.panicValue : panicValue).toFixed(1)} replicas of demand over ${c.panicWindowSeconds}s vs ${input.readyReplicas} ready`;
  }

  const idleMs = nowMs - s.lastBusyMs;
  const mayBeZero = c.minReplicas === 0 && input.scheduleFloor === 0 && idleMs >= c.scaleToZeroAfterSeconds * 1000;
  const idleFloor = mayBeZero ? 0 : current > 0 || demand > 0 ? 1 : 0;
  const floor = Math.max(c.minReplicas, input.scheduleFloor, idleFloor);
  if (rec < floor) {
    rec = floor;
    if (input.scheduleFloor >= floor && input.scheduleFloor > c.minReplicas) {
      reason = 'ScheduleFloor';
      why = `a schedule holds at least ${input.scheduleFloor}`;
    } else if (c.minReplicas >= floor) {
      reason = 'MinReplicas';
      why = `minReplicas ${c.minReplicas}`;
    } else {
      reason = 'IdleGrace';
      why = `idle ${Math.round(idleMs / 1000)}s of ${c.scaleToZeroAfterSeconds}s before scale to zero`;
    }
  }
  let limitedBy: LimitedBy | undefined;
  if (rec > cap) {
    why += `; capped at ${cap} by ${capBy === 'BudgetLimited' ? `maxGPUs ${c.maxGPUs}` : `maxReplicas ${cap}`}`;
    rec = cap;
    limitedBy = capBy;
  }
  const recommendation = rec;
  s.recs.push([nowMs, rec]);
  const keepMs = Math.max(c.scaleUpStabilizationSeconds, c.scaleDownStabilizationSeconds) * 1000;
  s.recs = s.recs.filter(([t]) => t > nowMs - keepMs || t === nowMs);

  let desired = rec;
  if (current === 0 && demand > 0 && rec >= 1) {
    reason = 'ScaleFromZero';
    why = `${demand} requests waiting with no replica; ${why}`;
  } else if (rec > current) {
    if (!panic && c.scaleUpStabilizationSeconds > 0) {
      const fromMs = nowMs - c.scaleUpStabilizationSeconds * 1000;
      desired = Math.max(current, Math.min(...s.recs.filter(([t]) => t > fromMs || t === nowMs).map(([, r]) => r)));
      if (desired === current) {
        reason = 'Stabilizing';
        why = `recommendation ${rec} must persist ${c.scaleUpStabilizationSeconds}s before scaling up`;
      }
    }
    // Anti-windup: replicas already starting will take the backlog that asked for them; while they start, only a
    // demand that outgrows them by the panic threshold adds more (the queue keeps growing during a cold start).
    const startingFor = s.startingSinceMs == null ? 0 : nowMs - s.startingSinceMs;
    const timedOut = startingFor >= c.pendingTimeoutSeconds * 1000;
    if (desired > current && input.readyReplicas < current && desired < c.panicThreshold * current && !timedOut) {
      desired = current;
      reason = 'StartingPods';
      why = `${current - input.readyReplicas} replicas still starting; holding at ${current} (wanted ${rec})`;
    }
    const pendingFor = s.pendingSinceMs === null ? 0 : nowMs - s.pendingSinceMs;
    if (desired > current && input.pendingPods > 0 && pendingFor < c.pendingTimeoutSeconds * 1000) {
      desired = current;
      reason = 'PendingPods';
      why = `${input.pendingPods} pods Pending for ${Math.round(pendingFor / 1000)}s; holding at ${current} (wanted ${rec})`;
    }
  } else if (rec < current) {
    if (panic) {
      desired = current;
      reason = 'Panic';
      why = `in panic until ${new Date(s.panicUntilMs ?? nowMs).toISOString()}; no scale down`;
    } else if (rec === 0) {
      reason = 'ScaleToZero';
      why = `idle for ${Math.round(idleMs / 1000)}s (scaleToZeroAfterSeconds ${c.scaleToZeroAfterSeconds})`;
    } else {
      const peakSince = (seconds: number) =>
        Math.max(...s.recs.filter(([t]) => t > nowMs - seconds * 1000 || t === nowMs).map(([, r]) => r));
      const windowPeak = peakSince(c.scaleDownStabilizationSeconds);
      // Warm floor: the burst's peak for the hold, then half of it for the rest of the window, less the replicas
      // that loaded standbys give back within a second. Ski rental: a released replica costs a start-up to get back (with the requests missed meanwhile), so the peak
      // is held for a multiple of the measured start-up: the whole window for 30 s cold starts, a minute for 5 s ones.
      const holdS = s.startupMs
        ? Math.max(c.burstHoldSeconds, (c.holdStartupMultiple * s.startupMs) / 1000)
        : c.scaleDownStabilizationSeconds;
      const held = Math.max(
        peakSince(Math.min(holdS, c.scaleDownStabilizationSeconds)),
        Math.ceil(windowPeak / c.maxScaleDownRate - 1e-9),
      );
      desired = Math.min(current, Math.max(rec, held - count(input.standbyReady)));
      // Capacity is released gradually: at most half per step and one step per stable window, so a burst that
      // starts just as the window expires still finds part of it; and never while work waits for a replica.
      const sinceDown = nowMs - (s.lastScaleDownMs ?? -Infinity);
      // Requests in the gateway queue have no replica yet; with the token view, prompts that already wait on the
      // workers for more than half the TTFT target count as such.
      const waiting =
        count(input.gatewayQueue) > 0 || (tokens !== undefined && tokens.predictedWaitS > sloSeconds(c) / 2);
      if (desired < current && (sinceDown < stableMs || waiting)) desired = current;
      else desired = Math.max(desired, Math.ceil(current / c.maxScaleDownRate));
      if (desired === current) {
        reason = 'Stabilizing';
        why = waiting
          ? `recommendation ${rec} below ${current}; requests still wait for a replica`
          : `recommendation ${rec} below ${current}; holding ${held} of the last ${c.scaleDownStabilizationSeconds}s`;
      }
    }
  }

  const bounded = clampBounds(desired);
  if (bounded !== desired) {
    if (bounded < desired) {
      limitedBy = capBy;
      reason = capBy;
    } else {
      reason = input.scheduleFloor > c.minReplicas ? 'ScheduleFloor' : 'MinReplicas';
    }
    why += `; bounded to ${bounded}`;
    desired = bounded;
  }
  if (desired !== current) s.lastScaleMs = nowMs;
  if (desired < current) s.lastScaleDownMs = nowMs;
  return {
    desiredReplicas: desired,
    reason,
    message: `${current} -> ${desired}: ${why}`,
    ...(limitedBy ? { limitedBy } : {}),
    newState: s,
    recommendation,
    demand,
    panic,
    ...(ratio !== undefined ? { sloMet: ratio <= 1 } : {}),
  };
}

const fmt = (v: number | undefined): string => (v === undefined ? '-' : String(Math.round(v)));

const MIN_PREFILL_SAMPLES = 5;
const MIN_SLOT_SAMPLES = 3;

/**
 * Replicas whose slots hold every request in flight and queued: undefined until the slots per replica were measured.
 * The gateway queues a request only when every ready worker holds its per-worker cap, so running + waiting per ready
 * replica while requests wait there is that cap. A sample counts only when the queue held requests at the previous
 * tick too and the ready count did not change (a worker that just became ready, or one the gateway has not routed
 * to yet, holds fewer), and the highest of them is kept, from MIN_SLOT_SAMPLES on. With several gateway replicas, a
 * worker may hold up to each one's cap, so this can run high and the view asks for less, never for more.
 * Updates s.gatewayQueuedSinceMs, s.slotsPerReplica and s.slotSamples.
 */
function slotView(
  input: PolicyInput,
  s: PolicyState,
  nowMs: number,
  demand: number,
): { rec: number; perReplica: number } | undefined {
  const finite = (x: number | undefined) => (x !== undefined && Number.isFinite(x) && x > 0 ? x : 0);
  const queuedBefore = s.gatewayQueuedSinceMs != null && s.gatewayQueuedSinceMs < nowMs;
  s.gatewayQueuedSinceMs = finite(input.gatewayQueue) > 0 ? (s.gatewayQueuedSinceMs ?? nowMs) : null;
  const inFlight = finite(input.workerRunning) + finite(input.workerWaiting);
  const stillQueued = s.gatewayQueuedSinceMs !== null;
  if (queuedBefore && stillQueued && s.readyChangedMs < nowMs && input.readyReplicas > 0 && inFlight > 0) {
    s.slotsPerReplica = Math.max(s.slotsPerReplica ?? 0, inFlight / input.readyReplicas);
    s.slotSamples = (s.slotSamples ?? 0) + 1;
  }
  const perReplica = (s.slotSamples ?? 0) >= MIN_SLOT_SAMPLES ? (s.slotsPerReplica ?? 0) : 0;
  if (!(perReplica > 0)) return undefined;
  return { rec: Math.ceil(demand / perReplica - 1e-9), perReplica };
}

/** The TTFT target in seconds, or drainSeconds without one: how fast queued prompts should get their first token. */
const sloSeconds = (c: PolicyConfig): number => (c.slo?.ttftP95Ms ? c.slo.ttftP95Ms / 1000 : c.drainSeconds);

interface TokenView {
  rec: number;
  /** Replicas of prefill work now (the token version of panicValue). */
  panicValue: number;
  /** Seconds the last queued prompt waits for its first token on the ready replicas. */
  predictedWaitS: number;
  arrival: number;
  perReplica: number;
}

/**
 * The token view, or undefined without the prompt-token signals or a per-replica rate (measured or configured).
 * Updates s.prefillRate and s.queuedTokens.
 */
function tokenView(
  input: PolicyInput,
  s: PolicyState,
  c: PolicyConfig,
  nowMs: number,
  demand: number,
): TokenView | undefined {
  const finite = (x: number | undefined) => (x !== undefined && Number.isFinite(x) && x > 0 ? x : 0);
  if (input.queuedPromptTokens === undefined || input.promptTokensPerSecond === undefined) return undefined;
  const queued = finite(input.queuedPromptTokens);
  const done = finite(input.promptTokensPerSecond);
  // Capacity is the highest rate seen while the replicas were saturated: prompts waited at both ticks, and more of
  // them than the interval's finished tokens (a backlog that kept every replica busy). A sample divides by every ready
  // replica and the counter moves when whole prefills finish, so single samples run low (hence the maximum) or, when
  // many long prompts finish together, high (hence at most 1.5x the estimate per sample). Never decreasing, it settles
  // under constant load.
  const prevQueued = s.queuedTokens;
  const intervalS = prevQueued && nowMs > prevQueued[0] ? (nowMs - prevQueued[0]) / 1000 : 0;
  const saturated = intervalS > 0 && prevQueued![1] > 0 && queued > 0 && queued >= done * intervalS;
  if (saturated && input.readyReplicas > 0 && done > 0) {
    const sample = done / input.readyReplicas;
    const warm = (s.prefillSamples ?? 0) >= MIN_PREFILL_SAMPLES && s.prefillRate;
    s.prefillRate = warm
      ? Math.max(s.prefillRate!, Math.min(sample, 1.5 * s.prefillRate!))
      : Math.max(sample, s.prefillRate ?? 0);
    s.prefillSamples = (s.prefillSamples ?? 0) + 1;
  }
  // The configured figure (the engine's benchmark) wins: the measured one is rough (in the trace replays it ranged
  // from 0.3x to 1.8x the true capacity) and is used only without it, after MIN_PREFILL_SAMPLES samples.
  const measured = (s.prefillSamples ?? 0) >= MIN_PREFILL_SAMPLES ? (s.prefillRate ?? 0) : 0;
  const perReplica = c.prefillTokensPerSecond ?? measured;
  // Tokens arriving = tokens finished + growth of the queue since the previous tick.
  const growth = prevQueued && intervalS > 0 ? Math.max(0, (queued - prevQueued[1]) / intervalS) : 0;
  s.queuedTokens = [nowMs, queued];
  if (!(perReplica > 0)) return undefined;
  const arrival = done + growth;
  const drainS = Math.max(0.5, sloSeconds(c));
  const work = arrival / perReplica + queued / (perReplica * drainS);
  const rec = Math.max(Math.ceil(work - 1e-9), demand > 0 ? 1 : 0);
  const predictedWaitS =
    input.readyReplicas > 0 ? queued / (input.readyReplicas * perReplica) : queued > 0 ? Infinity : 0;
  return { rec, panicValue: work, predictedWaitS, arrival, perReplica };
}
