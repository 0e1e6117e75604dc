// Discrete-event simulation of one model behind the gateway: requests arrive from a trace, wait in the gateway queue
// (bounded, with a deadline), go to the ready replica with the least outstanding prefill, and are served by the
// roofline worker model step by step (continuous batching: decodes first, then prefill chunks under the token
// budget). A scaling policy runs every tick on what a real autoscaler could observe at that moment — never the
// trace's future — and its replica count is applied with a cold start before new replicas take traffic.
import type { TraceRequest } from './trace.js';
import { stepSeconds, type WorkerModel } from './workerModel.js';

export interface ClusterView {
  now: number;
  /** Replicas asked for (starting + ready; draining ones excluded). */
  replicas: number;
  ready: number;
  starting: number;
  gatewayQueue: number;
  /** Admitted to a worker, prefill not started. */
  workerWaiting: number;
  /** Prefilling or decoding. */
  workerRunning: number;
  /** p95 TTFT (ms) of first tokens in the last ttftWindowS, undefined without samples. */
  ttftP95Ms?: number;
  /** Mean fraction of time the ready replicas were stepping since this policy's previous tick. */
  busyFraction: number;
  /** Requests finished per second since this policy's previous tick (the workers' request counters). */
  completedPerSecond: number;
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
  /** Timeline sampling period for plots. */
  sampleEveryS: number;
}

interface Seq {
  arrival: number;
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

type Event = { kind: 'tick' } | { kind: 'ready'; r: Replica } | { kind: 'step'; r: Replica; seconds: number };

export function quantile(sorted: number[], q: number): number {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i]!;
}

export function simulate(trace: TraceRequest[], policy: SimPolicy, o: SimOptions): SimResult {
  const m = o.model;
  const heap = new MinHeap<Event>();
  const replicas: Replica[] = [];
  const queue: Seq[] = [];
  const ttfts: number[] = [];
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
  let now = 0;

  const live = () => replicas.filter((r) => r.state === 'starting' || r.state === 'ready');
  const addReplica = (t: number, coldStart: number) => {
    const r: Replica = {
      id: nextId++,
      createdAt: t,
      readyAt: t + coldStart,
      state: 'starting',
      seqs: [],
      stepping: false,
      busyS: 0,
    };
    replicas.push(r);
    heap.push(r.readyAt, { kind: 'ready', r });
  };
  const retire = (r: Replica, t: number) => {
    if (r.state === 'starting' || r.seqs.length === 0) {
      r.state = 'gone';
      r.goneAt = t;
    } else r.state = 'draining';
  };

  const schedule = (r: Replica, t: number) => {
    if (r.stepping || r.seqs.length === 0) return;
    const decoding = r.seqs.filter((s) => s.prefillLeft === 0);
    let budget = m.maxBatchedTokens - decoding.length;
    let prefillTokens = 0;
    let attend = 0;
    for (const s of r.seqs) {
      if (budget <= 0) break;
      if (s.prefillLeft === 0) continue;
      const chunk = Math.min(s.prefillLeft, budget);
      const done = s.context - s.prefillLeft;
      attend += chunk * (done + chunk / 2);
      prefillTokens += chunk;
      budget -= chunk;
    }
    const kvTokens = decoding.reduce((sum, s) => sum + s.context, 0);
    const seconds = stepSeconds(m, { decodes: decoding.length, prefillTokens, prefillAttendTokens: attend, kvTokens });
    r.stepping = true;
    heap.push(t + seconds, { kind: 'step', r, seconds });
  };

  const finishStep = (r: Replica, t: number, seconds: number) => {
    r.stepping = false;
    r.busyS += seconds;
    let budget = m.maxBatchedTokens - r.seqs.filter((s) => s.prefillLeft === 0).length;
    for (const s of r.seqs) {
      if (s.prefillLeft === 0) {
        s.decodeLeft -= 1;
        continue;
      }
      if (budget <= 0) continue;
      const chunk = Math.min(s.prefillLeft, budget);
      s.started = true;
      s.prefillLeft -= chunk;
      budget -= chunk;
      if (s.prefillLeft === 0) {
        // The prefill's last step samples the first token.
        s.firstToken = t;
        s.decodeLeft -= 1;
        const ttft = t - s.arrival;
        ttfts.push(ttft);
        recentFirst.push({ t, ttft });
        if (ttft > o.ttftSloS) missed.push(s.arrival);
      }
    }
    const before = r.seqs.length;
    r.seqs = r.seqs.filter((s) => s.decodeLeft > 0 || s.prefillLeft > 0);
    completed += before - r.seqs.length;
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
      let bestLoad = Infinity;
      for (const r of replicas) {
        if (r.state !== 'ready' || r.seqs.length >= Math.min(m.maxSeqs, o.maxInflightPerWorker)) continue;
        const load = r.seqs.reduce((sum, s) => sum + s.prefillLeft, 0) + r.seqs.length;
        if (load < bestLoad) {
          best = r;
          bestLoad = load;
        }
      }
      if (!best) return;
      best.seqs.push(queue.shift()!);
      schedule(best, t);
    }
  };

  const view = (t: number): ClusterView => {
    const cutoff = t - o.ttftWindowS;
    while (recentFirst.length && recentFirst[0]!.t < cutoff) recentFirst.shift();
    const recent = recentFirst.map((x) => x.ttft).sort((a, b) => a - b);
    const ready = replicas.filter((r) => r.state === 'ready');
    let waiting = 0;
    let running = 0;
    for (const r of replicas)
      for (const s of r.seqs) {
        if (s.started) running++;
        else waiting++;
      }
    const elapsed = Math.max(1e-9, t - lastTick);
    const busy = ready.length
      ? ready.reduce((sum, r) => sum + Math.min(1, (r.busyS - (lastBusy.get(r.id) ?? r.busyS)) / elapsed), 0) /
        ready.length
      : 0;
    lastBusy = new Map(replicas.map((r) => [r.id, r.busyS]));
    const completedPerSecond = (completed - completedAtLastTick) / elapsed;
    completedAtLastTick = completed;
    lastTick = t;
    return {
      now: t,
      replicas: live().length,
      ready: ready.length,
      starting: live().length - ready.length,
      gatewayQueue: queue.length,
      workerWaiting: waiting,
      workerRunning: running,
      ...(recent.length ? { ttftP95Ms: quantile(recent, 0.95) * 1000 } : {}),
      busyFraction: busy,
      completedPerSecond,
    };
  };

  // The initial replicas are up before the first request.
  for (let i = 0; i < policy.initialReplicas; i++) addReplica(0, 0);
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
    if (ev.v.kind === 'step') finishStep(ev.v.r, now, ev.v.seconds);
    else if (ev.v.kind === 'ready') {
      if (ev.v.r.state === 'starting') {
        ev.v.r.state = 'ready';
        dispatch(now);
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
      const have = live();
      if (want !== have.length) scaleEvents++;
      for (let k = have.length; k < want; k++) addReplica(now, o.coldStartS);
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
      maxReplicas = Math.max(maxReplicas, live().length);
      const idleForever = ai >= trace.length && !queue.length && !replicas.some((r) => r.seqs.length > 0);
      if (!idleForever) heap.push(now + policy.tickSeconds, { kind: 'tick' });
    }
  }

  const end = Math.max(now, endOfTrace);
  let gpuSeconds = 0;
  for (const r of replicas) gpuSeconds += ((r.goneAt ?? end) - r.createdAt) * o.gpusPerReplica;
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
    scaleEvents,
    maxReplicas,
    timeline,
    missedArrivals: missed.sort((a, b) => a - b),
    durationS: end,
  };
}
