// Which bursts of a trace no reactive autoscaler can serve within the TTFT SLO, and why: for each burst (a run of
// 2-second bins whose prompt-token rate exceeds what the replicas warranted by the previous minute can prefill), what
// one replica could do with it, how many replicas it needed, and how many of its requests miss the SLO even for an
// ideal reactive policy — one that held the warranted replicas and asked for every replica needed the instant the
// burst began (no detection delay), which then serve after the start-up delay. Those misses are the floor any policy
// that does not hold spare capacity ahead of time pays; with a shorter start-up (node-local weights, standby
// promotion) the floor falls.
import { simulate, type SimOptions } from './simulator.js';
import type { TraceRequest } from './trace.js';

export interface Burst {
  start: number;
  end: number;
  requests: number;
  promptTokens: number;
  /** Highest prompt-token rate of a 2-second bin in it. */
  peakTokensPerS: number;
  /** Seconds since the previous burst ended (or since the trace began). */
  quietBeforeS: number;
  /** Replicas the previous minute's mean prompt-token rate warranted (at least 1). */
  warranted: number;
  /** Replicas whose prefill rate covers the peak bin. */
  needed: number;
  /** Seconds one replica needs to prefill the whole burst. */
  oneReplicaS: number;
}

const BIN_S = 2;
const LOOKBACK_S = 60;

/** Bursts of `trace`, given one replica's prefill rate (tokens/s). Bins closer than mergeGapS join one burst. */
export function findBursts(trace: TraceRequest[], perReplica: number, mergeGapS = 10): Burst[] {
  if (!trace.length) return [];
  const bins = new Map<number, { tokens: number; requests: number }>();
  for (const r of trace) {
    const b = Math.floor(r.t / BIN_S);
    const bin = bins.get(b) ?? { tokens: 0, requests: 0 };
    bin.tokens += r.context;
    bin.requests++;
    bins.set(b, bin);
  }
  const last = Math.floor(trace[trace.length - 1]!.t / BIN_S);
  const tokensIn = (fromBin: number, toBin: number) => {
    let sum = 0;
    for (let b = Math.max(0, fromBin); b < toBin; b++) sum += bins.get(b)?.tokens ?? 0;
    return sum;
  };
  const bursts: Burst[] = [];
  let open: (Burst & { lastBin: number }) | undefined;
  let prevEnd = 0;
  for (let b = 0; b <= last; b++) {
    const bin = bins.get(b);
    const rate = (bin?.tokens ?? 0) / BIN_S;
    if (open && b - open.lastBin > mergeGapS / BIN_S) {
      prevEnd = open.end;
      const { lastBin: _, ...done } = open;
      bursts.push(done);
      open = undefined;
    }
    const lookback = LOOKBACK_S / BIN_S;
    const warranted = Math.max(1, Math.ceil(tokensIn(b - lookback, b) / LOOKBACK_S / perReplica - 1e-9));
    if (!bin || rate <= (open?.warranted ?? warranted) * perReplica) {
      continue;
    }
    if (!open) {
      open = {
        start: b * BIN_S,
        end: (b + 1) * BIN_S,
        requests: 0,
        promptTokens: 0,
        peakTokensPerS: 0,
        quietBeforeS: b * BIN_S - prevEnd,
        warranted,
        needed: 0,
        oneReplicaS: 0,
        lastBin: b,
      };
    }
    open.end = (b + 1) * BIN_S;
    open.lastBin = b;
    open.peakTokensPerS = Math.max(open.peakTokensPerS, rate);
    open.needed = Math.ceil(open.peakTokensPerS / perReplica - 1e-9);
  }
  if (open) {
    const { lastBin: _, ...done } = open;
    bursts.push(done);
  }
  // Every request inside [start, end) belongs to the burst, including those of cooler bins between hot ones.
  for (const burst of bursts) {
    for (const r of trace) {
      if (r.t < burst.start || r.t >= burst.end) continue;
      burst.requests++;
      burst.promptTokens += r.context;
    }
    burst.oneReplicaS = burst.promptTokens / perReplica;
  }
  return bursts;
}

export interface BurstOutcome {
  burst: Burst;
  /** Requests of the burst missing the SLO with the ideal reactive policy, per start-up class. */
  unservable: Record<string, number>;
  /** The same with `needed` replicas ready before it began (0 means it is servable with pre-provisioning). */
  missedPreProvisioned: number;
}

/** One burst replayed alone (with the minute before it and half a minute after) under a policy of fixed steps. */
function replayBurst(trace: TraceRequest[], burst: Burst, options: SimOptions, initial: number, after: number): number {
  const from = burst.start - LOOKBACK_S;
  const slice = trace.filter((r) => r.t >= from && r.t < burst.end + 30).map((r) => ({ ...r, t: r.t - from }));
  const switchAt = burst.start - from;
  const result = simulate(
    slice,
    {
      name: 'ideal-reactive',
      tickSeconds: 0.25,
      initialReplicas: initial,
      decide: (v) => (v.now >= switchAt ? after : initial),
    },
    { ...options, standbyReplicas: 0 },
  );
  return result.missedArrivals.filter((t) => t >= switchAt && t < burst.end - from).length;
}

/** Start-up classes: a label and the seconds from the scale-up to the first routed request. */
export type StartupClasses = [label: string, seconds: number][];

export function burstOutcomes(
  trace: TraceRequest[],
  bursts: Burst[],
  options: SimOptions,
  classes: StartupClasses,
): BurstOutcome[] {
  return bursts.map((burst) => {
    const unservable: Record<string, number> = {};
    for (const [label, seconds] of classes) {
      unservable[label] = replayBurst(trace, burst, { ...options, coldStartS: seconds }, burst.warranted, burst.needed);
    }
    const missedPreProvisioned = replayBurst(trace, burst, options, burst.needed, burst.needed);
    return { burst, unservable, missedPreProvisioned };
  });
}

/** Markdown table of the bursts with unservable requests in any class, and the totals. */
export function burstTable(
  outcomes: BurstOutcome[],
  classes: StartupClasses,
  totalRequests: number,
  perReplica: number,
): string {
  const labels = classes.map(([l]) => l);
  const rows = outcomes.filter((o) => labels.some((l) => (o.unservable[l] ?? 0) > 0));
  const lines = [
    `| burst at s | length s | quiet before s | requests | prompt tokens | peak tok/s | one replica needs s | replicas warranted → needed | ${labels.map((l) => `unservable, ${l}`).join(' | ')} | missed with needed ready |`,
    `|${'---|'.repeat(9 + labels.length)}`,
  ];
  for (const { burst: b, unservable, missedPreProvisioned } of rows) {
    lines.push(
      `| ${b.start.toFixed(0)} | ${(b.end - b.start).toFixed(0)} | ${b.quietBeforeS.toFixed(0)} | ${b.requests} | ${b.promptTokens} | ${Math.round(b.peakTokensPerS)} | ${b.oneReplicaS.toFixed(1)} | ${b.warranted} → ${b.needed} | ${labels.map((l) => unservable[l]).join(' | ')} | ${missedPreProvisioned} |`,
    );
  }
  const totals = labels.map((l) => {
    const n = outcomes.reduce((s, o) => s + (o.unservable[l] ?? 0), 0);
    return `${l}: ${n} missed, attainment at most ${((100 * (totalRequests - n)) / totalRequests).toFixed(1)} %`;
  });
  return (
    `${outcomes.length} bursts above the capacity the previous minute warranted, ${rows.length} with requests no ` +
    `reactive policy serves (one replica prefills ${Math.round(perReplica)} tokens/s):\n\n${lines.join('\n')}\n\n` +
    `Ideal reactive policy (holds what the previous minute warranted, asks for what each burst needs the moment it ` +
    `begins): ${totals.join('; ')}`
  );
}
