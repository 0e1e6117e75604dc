// The policies the simulator compares. "ours" is operator/src/autoscaler/policy.ts itself; the others are
// re-statements of well-known algorithms with their documented defaults (parameters named where they are set).
import {
  decide,
  DEFAULT_TUNING,
  initialState,
  type PolicyConfig,
  type PolicyState,
} from '../../operator/src/autoscaler/policy.js';
import type { ClusterView, SimPolicy } from './simulator.js';

export function staticPolicy(name: string, replicas: number): SimPolicy {
  return { name, tickSeconds: 2, initialReplicas: replicas, decide: () => replicas };
}

export const OURS_CONFIG: PolicyConfig = {
  ...DEFAULT_TUNING,
  minReplicas: 0,
  maxReplicas: 64,
  gpusPerReplica: 1,
  maxGPUs: 64,
  queueDepthPerReplica: 16,
  slo: { ttftP95Ms: 2000 },
  scaleUpStabilizationSeconds: 0,
  scaleDownStabilizationSeconds: 300,
  scaleToZeroAfterSeconds: 300,
};

/** Which optional signals the policy gets: the finished-requests rate, the prompt-token view, the standby count. */
export interface OursSignals {
  serviceRate: boolean;
  tokens: boolean;
}

/**
 * The real policy, ticking every 2 s on the simulated signals; pods never stay Pending (an unlimited GPU pool).
 * With the defaults it sees what loop.ts feeds it: request counts, finished requests/s, TTFT p95, the prompt tokens
 * queued (gateway + workers, until their first token) and prefilled per second, and the loaded standbys (0 without
 * any). `tokens: false` leaves the prompt-token signals out (the count-only policy that ran before they were wired).
 */
export function oursPolicy(
  config: PolicyConfig = OURS_CONFIG,
  name = 'ours',
  signals: OursSignals = { serviceRate: true, tokens: true },
): SimPolicy {
  let state: PolicyState | undefined;
  let current = 1;
  return {
    name,
    tickSeconds: 2,
    initialReplicas: 1,
    decide(v: ClusterView): number {
      const nowMs = v.now * 1000;
      state ??= initialState(nowMs, current, v.ready);
      const d = decide(
        {
          config,
          currentReplicas: current,
          readyReplicas: v.ready,
          pendingPods: 0,
          gatewayQueue: v.gatewayQueue,
          workerWaiting: v.workerWaiting,
          workerRunning: v.workerRunning,
          ...(v.ttftP95Ms !== undefined ? { ttftP95Ms: v.ttftP95Ms } : {}),
          ...(signals.serviceRate ? { completedPerSecond: v.completedPerSecond } : {}),
          ...(signals.tokens
            ? { queuedPromptTokens: v.queuedPromptTokens, promptTokensPerSecond: v.promptTokensPerSecond }
            : {}),
          standbyReady: v.standbyReady,
          scheduleFloor: 0,
          signalsAvailable: true,
        },
        state,
        nowMs,
      );
      state = d.newState;
      current = d.desiredReplicas;
      return current;
    },
  };
}

/**
 * Kubernetes HPA on GPU utilisation (busy fraction of the ready replicas): desired = ceil(current x util / target)
 * outside a 10 % tolerance, 15 s sync period, scale-up limited to max(100 %, 4 pods) per 15 s, scale-down by the
 * max recommendation over 300 s; cannot scale to zero (minReplicas 1).
 */
export function hpaPolicy(targetUtil = 0.6, maxReplicas = 64): SimPolicy {
  const recs: [number, number][] = [];
  let current = 1;
  return {
    name: 'hpa-util',
    tickSeconds: 15,
    initialReplicas: 1,
    decide(v: ClusterView): number {
      const ready = Math.max(1, v.ready);
      const ratio = v.busyFraction / targetUtil;
      let rec = Math.abs(ratio - 1) <= 0.1 ? current : Math.ceil(ready * ratio);
      // Pods not yet ready count as 0 % when scaling down and are left out when scaling up (the HPA's rule).
      if (v.ready < current && rec < current) rec = current;
      rec = Math.min(maxReplicas, Math.max(1, rec));
      recs.push([v.now, rec]);
      while (recs.length && recs[0]![0] < v.now - 300) recs.shift();
      let desired = rec;
      if (rec > current) desired = Math.min(rec, Math.max(current * 2, current + 4));
      else if (rec < current) desired = Math.min(current, Math.max(...recs.map(([, r]) => r)));
      current = desired;
      return current;
    },
  };
}

/**
 * Knative Pod Autoscaler on concurrency: desired = ceil(mean in-flight requests (queued + served) over the stable
 * window / target); panic when the panic-window value reaches 2x the ready pods, and then never scale down until a
 * stable window without trigger; scale to zero after the stable window plus a 30 s grace; scale down at most halves.
 */
export function knativePolicy(target = 6, stableS = 60, panicS = 6, maxReplicas = 64): SimPolicy {
  const samples: [number, number][] = [];
  let current = 1;
  let panicUntil = -Infinity;
  let panicMax = 0;
  let lastBusy = 0;
  return {
    name: 'knative-kpa',
    tickSeconds: 2,
    initialReplicas: 1,
    decide(v: ClusterView): number {
      const conc = v.gatewayQueue + v.workerWaiting + v.workerRunning;
      if (conc > 0) lastBusy = v.now;
      samples.push([v.now, conc]);
      while (samples.length && samples[0]![0] <= v.now - stableS) samples.shift();
      const avg = (w: number) => {
        const s = samples.filter(([t]) => t > v.now - w);
        return s.length ? s.reduce((a, [, c]) => a + c, 0) / s.length : 0;
      };
      const stable = Math.ceil(avg(stableS) / target);
      const panicValue = avg(panicS) / target;
      if (v.ready > 0 && panicValue >= 2 * v.ready) {
        if (panicUntil < v.now) panicMax = current;
        panicUntil = v.now + stableS;
      }
      let desired: number;
      if (v.now < panicUntil) {
        panicMax = Math.max(panicMax, Math.ceil(panicValue));
        desired = panicMax;
      } else {
        desired = stable;
        if (desired < current) desired = Math.max(desired, Math.floor(current / 2));
      }
      if (current === 0 && conc > 0) desired = Math.max(1, desired);
      if (desired === 0 && v.now - lastBusy < stableS + 30) desired = Math.max(1, Math.min(current, 1));
      current = Math.min(maxReplicas, desired);
      return current;
    },
  };
}
