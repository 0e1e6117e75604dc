// Discrete-event simulation of one model behind the gateway: requests arrive from a trace, wait in the gateway queue
// (bounded, with a deadline), go to the ready serving replica with the fewest outstanding requests (the gateway's
// least-loaded pick; the trace has no prompts, so no prefix affinity), and are served by the roofline worker model
// step by step (continuous batching: decodes first, then prefill chunks under the token budget; a request that
// arrives during a step joins the next one). A scaling policy runs every tick on what a real autoscaler could observe
// at that moment — never the trace's future: the workers' TTFT histogram (from the worker's own arrival, so gateway
// queueing is not in it) and gauges, the gateway queue — and its replica count is applied with a cold start before
// new replicas take traffic. With standby replicas (spec.prewarm.standbyReplicas) a scale-up first promotes loaded
// standbys, which serve after promoteS, and the pool is topped back up with cold-starting standbys; standbys hold a
// GPU, so they count in GPU-hours.
import { histogramQuantile, type Buckets } from '../../operator/src/autoscaler/prometheus.js';
import { TTFT_BUCKETS } from '../../worker/src/metrics.js';
import type { TraceRequest } from './trace.js';
import { stepSeconds, type WorkerModel } from './workerModel.js';

export interface ClusterView {
  now: number;
  /** Serving replicas asked for (starting + ready; draining ones and standbys excluded). */
  replicas: number;
  ready: number;
  starting: number;
  /** Standby replicas loaded and ready to be promoted. */
  standbyReady: number;
  gatewayQueue: number;
  /** Admitted to a worker, prefill not started. */
  workerWaiting: number;
  /** Prefilling or decoding. */
  workerRunning: number;
  /**
   * p95 TTFT (ms) in the last ttftWindowS as the autoscaler computes it: the workers' histogram (TTFT from the
   * worker's arrival, vLLM's buckets) and histogram_quantile's interpolation; undefined without samples.
   */
  ttftP95Ms?: number;
  /**
   * Prompt tokens of the requests in the gateway queue and of those on the workers without a first token yet (the
   * gateway's queue-token entries + modelserve:num_prompt_tokens_waiting).
   */
  queuedPromptTokens: number;
  /** Mean fraction of time the ready replicas were stepping since this policy's previous tick. */
  busyFraction: number;
  /** Requests finished per second since this policy's previous tick (the workers' request counters). */
  completedPerSecond: number;
  /** Prompt tokens prefilled per second since the previous tick (vllm:prompt_tokens_total, moved at first tokens). */
  promptTokensPerSecond: number;
}

export interface SimPolicy {
  name: string;
  tickSeconds: number;
  initialReplicas: number;
  /** Replica count wanted now. */
  decide(view: ClusterView): number;
}

export interface SimOptions {
  model: WorkerModel;
  coldStartS: number;
  gpusPerReplica: number;
  ttftSloS: number;
  ttftWindowS: number;
  maxQueue: number;
  queueTimeoutS: number;
  /** The gateway sends at most this many outstanding requests to one worker; the rest wait in its queue. */
  maxInflightPerWorker: number;
  /** Standby replicas kept loaded but not routed (0: none). */
  standbyReplicas?: number;
  /** Seconds from promoting a loaded standby to its first routed request (label patch, EndpointSlice, gateway). */
  promoteS?: number;
  /** Timeline sampling period for plots. */
  sampleEveryS: number;
}

/**
 * The gateway's defaults (operator/src/gateway/config.ts: 64 in flight per worker, 256 queued, 60 s deadline), one GPU
 * a replica, the 2 s TTFT SLO and the autoscaler's 20 s latency window: what every replay shares.
 */
export const GATEWAY_DEFAULTS = {
  gpusPerReplica: 1,
  ttftSloS: 2,
  ttftWindowS: 20,
  maxQueue: 256,
  queueTimeoutS: 60,
  maxInflightPerWorker: 64,
} as const satisfies Partial<SimOptions>;

interface Seq {
  arrival: number;
  /** When the gateway sent it to a worker (the worker's TTFT clock starts here). */
  dispatched?: number;
  context: number;
  prefillLeft: number;
  decodeLeft: number;
  started: boolean;
  firstToken?: number;
}

interface Replica {
  id: number;
  createdAt: number;
  readyAt: number;
  state: 'starting' | 'ready' | 'draining' | 'gone';
  role: 'serving' | 'standby';
  /** When a standby became a serving replica. */
  promotedAt?: number;
  seqs: Seq[];
  stepping: boolean;
  busyS: number;
  goneAt?: number;
}

export interface TimelinePoint {
  t: number;
  replicas: number;
  ready: number;
  queue: number;
  demand: number;
}

export interface SimResult {
  policy: string;
  requests: number;
  served: number;
  rejected: number;
  sloAttainment: number;
  ttftP50: number;
  ttftP95: number;
  ttftP99: number;
  gpuHours: number;
  scaleEvents: number;
  maxReplicas: number;
  timeline: TimelinePoint[];
  /** Arrival times of requests that missed the SLO (served late or rejected), for burst analysis. */
  missedArrivals: number[];
  /** GPU-hours of standby replicas (included in gpuHours). */
  standbyGpuHours: number;
  durationS: number;
}

class MinHeap<T> {
  private items: { t: number; v: T }[] = [];
  get size(): number {
    return this.items.length;
  }
  peekTime(): number {
    return this.items.length ? this.items[0]!.t : Infinity;
  }
  push(t: number, v: T): void {
    const a = this.items;
    a.push({ t, v });
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p]!.t <= a[i]!.t) break;
      [a[p], a[i]] = [a[i]!, a[p]!];
      i = p;
    }
  }
  pop(): { t: number; v: T } | undefined {
    const a = this.items;
    if (!a.length) return undefined;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && a[l]!.t < a[m]!.t) m = l;
        if (r < a.length && a[r]!.t < a[m]!.t) m = r;
        if (m === i) break;
        [a[m], a[i]] = [a[i]!, a[m]!];
        i = m;
      }
    }
    return top;
  }
}

/** One engine step: the prefill tokens it runs per sequence (0 = that sequence decodes one token). */
type StepPlan = { seq: Seq; prefill: number }[];
type Event =
  { kind: 'tick' } | { kind: 'ready'; r: Replica } | { kind: 'step'; r: Replica; seconds: number; plan: StepPlan };

export function quantile(sorted: number[], q: number): number {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i]!;
}

export function simulate(trace: TraceRequest[], policy: SimPolicy, o: SimOptions): SimResult {
  const m = o.model;
  const standbys = o.standbyReplicas ?? 0;
  const promoteS = o.promoteS ?? 1;
  const heap = new MinHeap<Event>();
  const replicas: Replica[] = [];
  const queue: Seq[] = [];
  const ttfts: number[] = [];
  /** Worker-side TTFTs by the time of the first token: what the workers' histograms hold. */
  const recentFirst: { t: number; ttft: number }[] = [];
  const missed: number[] = [];
  const timeline: TimelinePoint[] = [];
  let rejected = 0;
  let nextId = 0;
  let scaleEvents = 0;
  let maxReplicas = 0;
  let lastTick = 0;
  let lastBusy = new Map<number, number>();
  let completed = 0;
  let completedAtLastTick = 0;
  let promptTokensDone = 0;
  let promptTokensAtLastTick = 0;
  let now = 0;

  const isLive = (r: Replica) => r.state === 'starting' || r.state === 'ready';
  const serving = () => replicas.filter((r) => r.role === 'serving' && isLive(r));
  const standbyPool = () => replicas.filter((r) => r.role === 'standby' && isLive(r));
  const addReplica = (t: number, coldStart: number, role: Replica['role'] = 'serving') => {
    const r: Replica = {
      id: nextId++,
      createdAt: t,
      readyAt: t + coldStart,
      state: 'starting',
      role,
      seqs: [],
      stepping: false,
      busyS: 0,
    };
    replicas.push(r);
    heap.push(r.readyAt, { kind: 'ready', r });
    return r;
  };
  const retire = (r: Replica, t: number) => {
    if (r.state === 'starting' || r.seqs.length === 0) {
      r.state = 'gone';
      r.goneAt = t;
    } else r.state = 'draining';
  };
  /** k more serving replicas: loaded standbys first (promoteS), then loading standbys, then cold starts. */
  const scaleUp = (t: number, k: number) => {
    const pool = standbyPool().sort((a, b) => a.readyAt - b.readyAt);
    for (const r of pool.slice(0, k)) {
      r.role = 'serving';
      r.promotedAt = t;
      if (r.state === 'ready') {
        r.state = 'starting';
        r.readyAt = t + promoteS;
        heap.push(r.readyAt, { kind: 'ready', r });
      }
    }
    for (let i = pool.length; i < k; i++) addReplica(t, o.coldStartS);
    for (let i = standbyPool().length; i < standbys; i++) addReplica(t, o.coldStartS, 'standby');
  };

  const schedule = (r: Replica, t: number) => {
    if (r.stepping || r.seqs.length === 0) return;
    const plan: StepPlan = [];
    let budget = m.maxBatchedTokens;
    let decodes = 0;
    let kvTokens = 0;
    // Decodes first (at most maxSeqs sequences in the batch), then prefill chunks in arrival order.
    for (const s of r.seqs) {
      if (s.prefillLeft > 0 || plan.length >= m.maxSeqs) continue;
      plan.push({ seq: s, prefill: 0 });
      decodes++;
      budget--;
      kvTokens += s.context;
    }
    let prefillTokens = 0;
    let attend = 0;
    for (const s of r.seqs) {
      if (budget <= 0 || plan.length >= m.maxSeqs) break;
      if (s.prefillLeft === 0) continue;
      const chunk = Math.min(s.prefillLeft, budget);
      const done = s.context - s.prefillLeft;
      attend += chunk * (done + chunk / 2);
      prefillTokens += chunk;
      budget -= chunk;
      plan.push({ seq: s, prefill: chunk });
    }
    const seconds = stepSeconds(m, { decodes, prefillTokens, prefillAttendTokens: attend, kvTokens });
    r.stepping = true;
    heap.push(t + seconds, { kind: 'step', r, seconds, plan });
  };

  const finishStep = (r: Replica, t: number, seconds: number, plan: StepPlan) => {
    r.stepping = false;
    r.busyS += seconds;
    // The loop scrapes ready pods only, so a draining replica's counters are not seen.
    const scraped = r.state !== 'draining';
    for (const { seq: s, prefill } of plan) {
      if (prefill === 0) {
        s.decodeLeft -= 1;
        continue;
      }
      s.started = true;
      s.prefillLeft -= prefill;
      if (s.prefillLeft === 0) {
        // The prefill's last step samples the first token.
        s.firstToken = t;
        s.decodeLeft -= 1;
        // The worker counts a prompt's tokens at its first token (worker/src/sequences.ts).
        if (scraped) promptTokensDone += s.context;
        const ttft = t - s.arrival;
        ttfts.push(ttft);
        recentFirst.push({ t, ttft: t - (s.dispatched ?? s.arrival) });
        if (ttft > o.ttftSloS) missed.push(s.arrival);
      }
    }
    const before = r.seqs.length;
    r.seqs = r.seqs.filter((s) => s.decodeLeft > 0 || s.prefillLeft > 0);
    if (scraped) completed += before - r.seqs.length;
    if (r.state === 'draining' && r.seqs.length === 0) {
      r.state = 'gone';
      r.goneAt = t;
    }
    dispatch(t);
    schedule(r, t);
  };

  const dispatch = (t: number) => {
    while (queue.length && t - queue[0]!.arrival > o.queueTimeoutS) {
      missed.push(queue.shift()!.arrival);
      rejected++;
    }
    while (queue.length) {
      let best: Replica | undefined;
      for (const r of replicas) {
        if (r.state !== 'ready' || r.role !== 'serving' || r.seqs.length >= o.maxInflightPerWorker) continue;
        if (!best || r.seqs.length < best.seqs.length) best = r;
      }
      if (!best) return;
      const s = queue.shift()!;
      s.dispatched = t;
      best.seqs.push(s);
      schedule(best, t);
    }
  };

  const ttftHistogramP95 = (t: number): number | undefined => {
    const cutoff = t - o.ttftWindowS;
    while (recentFirst.length && recentFirst[0]!.t < cutoff) recentFirst.shift();
    if (!recentFirst.length) return undefined;
    const buckets: Buckets = new Map([...TTFT_BUCKETS, Infinity].map((b) => [b, 0]));
    for (const { ttft } of recentFirst) {
      for (const b of buckets.keys()) if (ttft <= b) buckets.set(b, buckets.get(b)! + 1);
    }
    return histogramQuantile(0.95, buckets);
  };

  const view = (t: number): ClusterView => {
    const p95 = ttftHistogramP95(t);
    const ready = replicas.filter((r) => r.state === 'ready' && r.role === 'serving');
    let waiting = 0;
    let running = 0;
    let queuedPromptTokens = queue.reduce((sum, s) => sum + s.context, 0);
    // The workers' gauges, from the pods the loop scrapes: ready ones (a draining pod is terminating).
    for (const r of ready)
      for (const s of r.seqs) {
        if (s.started) running++;
        else waiting++;
        // The worker's gauge holds a prompt until its first token, a chunked prefill in progress included.
        if (s.firstToken === undefined) queuedPromptTokens += s.context;
      }
    const elapsed = Math.max(1e-9, t - lastTick);
    const busy = ready.length
      ? ready.reduce((sum, r) => sum + Math.min(1, (r.busyS - (lastBusy.get(r.id) ?? r.busyS)) / elapsed), 0) /
        ready.length
      : 0;
    lastBusy = new Map(replicas.map((r) => [r.id, r.busyS]));
    const completedPerSecond = (completed - completedAtLastTick) / elapsed;
    completedAtLastTick = completed;
    const promptTokensPerSecond = (promptTokensDone - promptTokensAtLastTick) / elapsed;
    promptTokensAtLastTick = promptTokensDone;
    lastTick = t;
    const live = serving();
    return {
      now: t,
      replicas: live.length,
      ready: ready.length,
      starting: live.length - ready.length,
      standbyReady: standbyPool().filter((r) => r.state === 'ready').length,
      gatewayQueue: queue.length,
      workerWaiting: waiting,
      workerRunning: running,
      ...(p95 !== undefined ? { ttftP95Ms: p95 * 1000 } : {}),
      queuedPromptTokens,
      busyFraction: busy,
      completedPerSecond,
      promptTokensPerSecond,
    };
  };

  // The initial replicas (and standbys) are up before the first request.
  for (let i = 0; i < policy.initialReplicas; i++) addReplica(0, 0);
  for (let i = 0; i < standbys; i++) addReplica(0, 0, 'standby');
  for (const r of replicas) r.state = 'ready';
  const endOfTrace = trace.length ? trace[trace.length - 1]!.t : 0;
  heap.push(0, { kind: 'tick' });
  let nextSample = 0;
  let ai = 0;
  for (;;) {
    const nextArrival = ai < trace.length ? trace[ai]!.t : Infinity;
    const busyLeft = queue.length > 0 || replicas.some((r) => r.seqs.length > 0);
    if (nextArrival === Infinity && !busyLeft && heap.peekTime() > now && now > endOfTrace) break;
    if (nextArrival <= heap.peekTime()) {
      now = nextArrival;
      const req = trace[ai++]!;
      if (queue.length >= o.maxQueue) {
        rejected++;
        missed.push(now);
      } else {
        queue.push({
          arrival: now,
          context: req.context,
          prefillLeft: req.context,
          decodeLeft: req.generated,
          started: false,
        });
      }
      dispatch(now);
      continue;
    }
    const ev = heap.pop();
    if (!ev) break;
    now = ev.t;
    if (ev.v.kind === 'step') finishStep(ev.v.r, now, ev.v.seconds, ev.v.plan);
    else if (ev.v.kind === 'ready') {
      const r = ev.v.r;
      // A promoted standby re-arms its ready time; only the event that matches it counts.
      if (r.state === 'starting' && r.readyAt <= now) {
        r.state = 'ready';
        if (r.role === 'serving') dispatch(now);
      }
    } else {
      const v = view(now);
      while (nextSample <= now) {
        timeline.push({
          t: nextSample,
          replicas: v.replicas,
          ready: v.ready,
          queue: v.gatewayQueue,
          demand: v.gatewayQueue + v.workerWaiting + v.workerRunning,
        });
        nextSample += o.sampleEveryS;
      }
      const want = Math.max(0, Math.round(policy.decide(v)));
      const have = serving();
      if (want !== have.length) scaleEvents++;
      if (want > have.length) scaleUp(now, want - have.length);
      if (want < have.length) {
        // Starting replicas first (newest first), then the ready ones with the least work.
        const order = [...have].sort((a, b) =>
          a.state !== b.state
            ? a.state === 'starting'
              ? -1
              : 1
            : a.state === 'starting'
              ? b.createdAt - a.createdAt
              : a.seqs.length - b.seqs.length,
        );
        for (const r of order.slice(0, have.length - want)) retire(r, now);
        dispatch(now);
      }
      maxReplicas = Math.max(maxReplicas, serving().length);
      const idleForever = ai >= trace.length && !queue.length && !replicas.some((r) => r.seqs.length > 0);
      if (!idleForever) heap.push(now + policy.tickSeconds, { kind: 'tick' });
    }
  }

  const end = Math.max(now, endOfTrace);
  let gpuSeconds = 0;
  let standbySeconds = 0;
  for (const r of replicas) {
    const s = ((r.goneAt ?? end) - r.createdAt) * o.gpusPerReplica;
    gpuSeconds += s;
    if (r.role === 'standby') standbySeconds += s;
    else if (r.promotedAt !== undefined) standbySeconds += (r.promotedAt - r.createdAt) * o.gpusPerReplica;
  }
  const sorted = [...ttfts].sort((a, b) => a - b);
  const served = ttfts.length;
  const good = ttfts.filter((x) => x <= o.ttftSloS).length;
  return {
    policy: policy.name,
    requests: trace.length,
    served,
    rejected,
    sloAttainment: trace.length ? good / trace.length : 1,
    ttftP50: quantile(sorted, 0.5),
    ttftP95: quantile(sorted, 0.95),
    ttftP99: quantile(sorted, 0.99),
    gpuHours: gpuSeconds / 3600,
    standbyGpuHours: standbySeconds / 3600,
    scaleEvents,
    maxReplicas,
    timeline,
    missedArrivals: missed.sort((a, b) => a - b),
    durationS: end,
  };
}
