// The autoscaler loop: leader-only, every tick (2 s) and on every wake message, per ModelDeployment with
// spec.autoscaling.enabled: read the gateway queue and its prompt tokens (Redis), the pods and the ready workers'
// /metrics (requests and prompt tokens waiting, counters turned into rates between ticks), evaluate the
// schedules, run the pure policy with the state kept in Redis, write spec.replicas through the /scale subresource
// (unless mode is Shadow), and record an Event, a status.scalingHistory entry, status.signals and the SLOMet and
// ScalingLimited conditions (server-side apply under its own field manager, so the reconciler's status is untouched).
// Redis down: the decision holds the count (no scale down while blind), state is not overwritten, and it is logged.
import * as metrics from '../telemetry/metrics.js';
import type { V1Pod } from '@kubernetes/client-node';
import { Redis } from 'ioredis';
import { API_VERSION, CONTROLLER_NAME, KIND, key as mdepKey, type ModelDeployment } from '../api/modelDeployment.js';
import { selectorLabels, selectorString } from '../controller/plan.js';
import { EventRecorder } from '../k8s/events.js';
import { collectionPath, objectPath, resources } from '../k8s/resources.js';
import { isNotFound, type KubeClient } from '../k8s/rest.js';
import type { Logger } from '../telemetry/logger.js';
import { decide, DEFAULT_TUNING, initialState, type Decision, type PolicyConfig, type PolicyState } from './policy.js';
import { LatencyWindow } from './prometheus.js';
import {
  appendHistory,
  AUTOSCALER_FIELD_MANAGER,
  autoscalerConditions,
  historyEntry,
  signalsOf,
  type SignalInputs,
  statusDiffers,
} from './record.js';
import { scheduleFloor } from './schedule.js';
import { countPods, metricsUrl, readGatewayQueue, scrapeWorker } from './signals.js';
import { parseWake, stateKey, WAKE_CHANNEL } from './signals-keys.js';

export interface AutoscalerOptions {
  client: KubeClient;
  redisUrl: string;
  log: Logger;
  /** This operator instance (Events' reportingInstance). */
  identity: string;
  /** Only this namespace; all when undefined. */
  namespace?: string;
  tickMs?: number;
  scrapeTimeoutMs?: number;
  /** Window of the p95 latencies (and of the policy's SLO settling). */
  latencyWindowMs?: number;
  /** Policy tuning beyond the CRD's fields. */
  tuning?: Partial<typeof DEFAULT_TUNING>;
  /** Signals alone are written to status at most this often; decisions and condition changes at once. */
  statusIntervalMs?: number;
}

/** What the loop keeps in Redis per ModelDeployment. */
export interface StoredState {
  policy: PolicyState;
  /** Last recommendation recorded in Shadow mode (recorded again only when it changes). */
  shadowRecommendation?: number;
}

const STATE_TTL_MS = 7 * 24 * 3600 * 1000;

/** The stored state, or undefined (start afresh) when there is none or it cannot be read: never a frozen model. */
export function parseStored(raw: string | null, onBad: (why: string) => void): StoredState | undefined {
  if (!raw) return undefined;
  try {
    const v = JSON.parse(raw) as StoredState;
    const p = v?.policy;
    if (p?.version !== 1 || !Array.isArray(p.demand) || !Array.isArray(p.recs) || typeof p.lastBusyMs !== 'number') {
      onBad('not a version-1 state');
      return undefined;
    }
    return v;
  } catch (err) {
    onBad(String(err));
    return undefined;
  }
}

export function policyConfig(mdep: ModelDeployment, tuning: Partial<typeof DEFAULT_TUNING> = {}): PolicyConfig {
  const a = mdep.spec.autoscaling;
  return {
    ...DEFAULT_TUNING,
    ...tuning,
    minReplicas: a.minReplicas,
    maxReplicas: a.maxReplicas,
    ...(a.maxGPUs !== undefined ? { maxGPUs: a.maxGPUs } : {}),
    gpusPerReplica: mdep.spec.resources.gpus,
    queueDepthPerReplica: a.queueDepthPerReplica,
    ...(a.prefillTokensPerSecond !== undefined ? { prefillTokensPerSecond: a.prefillTokensPerSecond } : {}),
    ...(a.slo ? { slo: a.slo } : {}),
    scaleUpStabilizationSeconds: a.scaleUpStabilizationSeconds,
    scaleDownStabilizationSeconds: a.scaleDownStabilizationSeconds,
    scaleToZeroAfterSeconds: a.scaleToZeroAfterSeconds,
  };
}

export class Autoscaler {
  private readonly tickMs: number;
  private readonly events: EventRecorder;
  private redis?: Redis;
  private sub?: Redis;
  private timer?: NodeJS.Timeout;
  private stopped = true;
  private ticking?: Promise<void>;
  /** Per-model serialization: a wake and a tick never decide for the same model at once. */
  private readonly chains = new Map<string, Promise<void>>();
  private readonly windows = new Map<string, LatencyWindow>();
  /** Previous counter values per "model/pod/counter", for rates between ticks. */
  private readonly counters = new Map<string, { t: number; total: number }>();
  private readonly lastStatusWrite = new Map<string, number>();
  private readonly lastWarn = new Map<string, number>();
  /** "namespace/spec.model.name" → ModelDeployment keys, for wake messages. */
  private byModel = new Map<string, string[]>();
  /** Decisions made per ModelDeployment ("namespace/name"), for tests and metrics. */
  readonly decisions = new Map<string, number>();

  constructor(private readonly o: AutoscalerOptions) {
    this.tickMs = o.tickMs ?? 2000;
    this.events = new EventRecorder(o.client, CONTROLLER_NAME, o.identity, (err) =>
      this.warnOnce('event', 'could not record an Event', { error: String(err) }),
    );
  }

  /** Connects to Redis, subscribes to wake messages and starts ticking. Never fails on a Redis outage. */
  async start(): Promise<void> {
    if (!this.stopped) return;
    this.stopped = false;
    const common = { maxRetriesPerRequest: 1, retryStrategy: (n: number) => Math.min(100 * n, 2000) };
    this.redis = new Redis(this.o.redisUrl, { ...common, enableOfflineQueue: false });
    this.sub = new Redis(this.o.redisUrl, { ...common, enableOfflineQueue: true });
    for (const [name, conn] of [
      ['redis', this.redis],
      ['redis-subscriber', this.sub],
    ] as const) {
      conn.on('error', (err: Error) =>
        this.warnOnce(name, 'redis unavailable; holding replica counts', { error: err.message }),
      );
      conn.on('ready', () => this.o.log.info('redis connected', { connection: name }));
    }
    this.sub.on('message', (channel: string, text: string) => {
      if (channel !== WAKE_CHANNEL) return;
      const msg = parseWake(text);
      if (!msg) return this.warnOnce('wake', 'ignoring a malformed wake message', { text: text.slice(0, 200) });
      void this.wake(msg.namespace, msg.model, msg.waiting);
    });
    this.sub
      .subscribe(WAKE_CHANNEL)
      .catch((err: unknown) => this.o.log.warn('subscribe failed', { error: String(err) }));
    this.o.log.info('autoscaler started', { tickMs: this.tickMs });
    this.schedule(0);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.ticking;
    await Promise.allSettled([...this.chains.values()]);
    this.sub?.disconnect();
    this.redis?.disconnect();
    this.o.log.info('autoscaler stopped');
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.ticking = this.tick()
        .catch((err: unknown) => this.warnOnce('tick', 'autoscaler tick failed', { error: String(err) }))
        .finally(() => this.schedule(this.tickMs));
    }, delayMs);
  }

  /** One pass over every autoscaled ModelDeployment. */
  async tick(): Promise<void> {
    const list = await this.o.client.get<{ items: ModelDeployment[] }>(
      collectionPath(resources.modelDeployments, this.o.namespace),
    );
    const byModel = new Map<string, string[]>();
    for (const m of list.items) {
      const k = `${m.metadata.namespace}/${m.spec.model.name}`;
      byModel.set(k, [...(byModel.get(k) ?? []), mdepKey(m.metadata.namespace ?? '', m.metadata.name ?? '')]);
    }
    this.byModel = byModel;
    for (const mdep of list.items) {
      if (this.stopped) return;
      if (!mdep.spec.autoscaling?.enabled || mdep.metadata.deletionTimestamp) continue;
      await this.serial(mdep, () => this.decideFor(mdep));
    }
  }

  /** Runs the decision of the model(s) named in a wake message now. */
  async wake(namespace: string, model: string, waiting = 0): Promise<void> {
    if (this.stopped) return;
    let keys = this.byModel.get(`${namespace}/${model}`);
    if (!keys) {
      await this.tick().catch(() => undefined);
      keys = this.byModel.get(`${namespace}/${model}`) ?? [];
    }
    for (const k of keys) {
      const [ns, name] = [k.slice(0, k.indexOf('/')), k.slice(k.indexOf('/') + 1)];
      try {
        const mdep = await this.read(ns, name);
        if (!mdep?.spec.autoscaling?.enabled) continue;
        await this.serial(mdep, () => this.decideFor(mdep, waiting));
      } catch (err) {
        if (!isNotFound(err)) this.warnOnce(`wake/${k}`, 'wake failed', { model: k, error: String(err) });
      }
    }
  }

  /** One ModelDeployment, fresh; a list by name so that the operator's role needs no get verb (list, watch only). */
  private async read(namespace: string, name: string): Promise<ModelDeployment | undefined> {
    const list = await this.o.client.get<{ items: ModelDeployment[] }>(
      collectionPath(resources.modelDeployments, namespace),
      { fieldSelector: `metadata.name=${name}` },
    );
    return list.items[0];
  }

  private serial(mdep: ModelDeployment, fn: () => Promise<void>): Promise<void> {
    const k = mdepKey(mdep.metadata.namespace ?? '', mdep.metadata.name ?? '');
    const run = (this.chains.get(k) ?? Promise.resolve())
      .then(fn)
      .catch((err: unknown) =>
        this.warnOnce(`decide/${k}`, 'autoscaling decision failed', { model: k, error: String(err) }),
      );
    this.chains.set(k, run);
    return run;
  }

  private warnOnce(key: string, msg: string, fields: Record<string, unknown>, everyMs = 30_000): void {
    const now = Date.now();
    if ((this.lastWarn.get(key) ?? 0) + everyMs > now) return;
    this.lastWarn.set(key, now);
    this.o.log.warn(msg, fields);
  }

  private async decideFor(fresh: ModelDeployment, wakeWaiting = 0): Promise<void> {
    const ns = fresh.metadata.namespace ?? 'default';
    const name = fresh.metadata.name ?? '';
    const k = mdepKey(ns, name);
    // Re-read: a wake or a previous tick may have changed spec.replicas since the list.
    const mdep = await this.read(ns, name);
    if (!mdep || mdep.metadata.deletionTimestamp) return;
    const nowMs = Date.now();
    const now = new Date(nowMs);
    const spec = mdep.spec;
    const current = spec.replicas;

    const selector = mdep.status?.selector || selectorString(selectorLabels(mdep));
    const pods = await this.o.client.get<{ items: V1Pod[] }>(collectionPath(resources.pods, ns), {
      labelSelector: selector,
    });
    const counts = countPods(pods.items);

    let signalsAvailable = true;
    let gatewayQueue = 0;
    let gatewayPromptTokens: number | undefined;
    let stored: StoredState | undefined;
    try {
      if (!this.redis) throw new Error('not started');
      const queue = await readGatewayQueue(this.redis, ns, spec.model.name, nowMs);
      gatewayQueue = queue.waiting;
      gatewayPromptTokens = queue.promptTokens;
      stored = parseStored(await this.redis.get(stateKey(ns, name)), (why) =>
        this.warnOnce(`state/${k}`, 'discarding unreadable autoscaler state', { model: k, error: why }),
      );
    } catch (err) {
      signalsAvailable = false;
      this.warnOnce(`redis/${k}`, 'gateway queue unavailable; holding replicas', { model: k, error: String(err) });
    }
    gatewayQueue = Math.max(gatewayQueue, wakeWaiting);

    const scraped = await this.scrape(k, mdep, counts.ready, nowMs);
    const window = this.windows.get(k) ?? new LatencyWindow(this.o.latencyWindowMs ?? 20_000);
    this.windows.set(k, window);
    const p95 = window.quantiles(0.95);

    const floor = scheduleFloor(spec.autoscaling.schedules, now);
    for (const err of floor.errors) {
      this.warnOnce(`schedule/${k}/${err.message}`, 'schedule skipped', { model: k, error: err.message }, 600_000);
    }
    const config = policyConfig(mdep, this.o.tuning);
    // The token view needs both: prompt tokens waiting anywhere (gateway estimate + workers' gauge) and the rate the
    // workers prefill them at. Either unknown (an older gateway or worker, a first scrape): request counts decide.
    const queuedPromptTokens =
      gatewayPromptTokens !== undefined && scraped.waitingPromptTokens !== undefined
        ? gatewayPromptTokens + scraped.waitingPromptTokens
        : undefined;
    const tokenSignals =
      queuedPromptTokens !== undefined && scraped.promptTokensPerSecond !== undefined
        ? { queuedPromptTokens, promptTokensPerSecond: scraped.promptTokensPerSecond }
        : {};
    const input = {
      config,
      currentReplicas: current,
      readyReplicas: counts.ready.length,
      pendingPods: counts.pending,
      gatewayQueue,
      workerWaiting: scraped.waiting,
      workerRunning: scraped.running,
      ...(p95.ttftMs !== undefined ? { ttftP95Ms: p95.ttftMs } : {}),
      ...(p95.itlMs !== undefined ? { itlP95Ms: p95.itlMs } : {}),
      ...(scraped.completedPerSecond !== undefined ? { completedPerSecond: scraped.completedPerSecond } : {}),
      ...tokenSignals,
      ...(counts.standbyReady > 0 ? { standbyReady: counts.standbyReady } : {}),
      scheduleFloor: floor.floor,
      signalsAvailable,
    };
    const state = stored?.policy ?? initialState(nowMs, current, counts.ready.length);
    const d = decide(input, state, nowMs);
    this.decisions.set(k, (this.decisions.get(k) ?? 0) + 1);
    metrics.autoscalerDecisions.inc({
      namespace: mdep.metadata.namespace ?? '',
      modeldeployment: mdep.metadata.name ?? '',
      model_name: spec.model.name,
      direction: d.desiredReplicas > current ? 'up' : d.desiredReplicas < current ? 'down' : 'none',
      reason: d.reason,
    });

    const active = spec.autoscaling.mode !== 'Shadow';
    const changed = d.desiredReplicas !== current;
    const record = active ? changed : changed && stored?.shadowRecommendation !== d.desiredReplicas;
    if (signalsAvailable && this.redis) {
      // Shadow: nothing was scaled, so the state must not remember a scale (it would pace the next one).
      const policy = active
        ? d.newState
        : { ...d.newState, lastScaleMs: state.lastScaleMs, lastScaleDownMs: state.lastScaleDownMs ?? null };
      const next: StoredState = {
        policy,
        ...(active ? {} : { shadowRecommendation: changed ? d.desiredReplicas : undefined }),
      };
      await this.redis
        .set(stateKey(ns, name), JSON.stringify(next), 'PX', STATE_TTL_MS)
        .catch((err: unknown) =>
          this.warnOnce(`redis/${k}`, 'could not save autoscaler state', { error: String(err) }),
        );
    }
    if (active && changed) {
      await this.o.client.mergePatch(
        objectPath(resources.modelDeployments, ns, name, 'scale'),
        { spec: { replicas: d.desiredReplicas } },
        AUTOSCALER_FIELD_MANAGER,
      );
      this.o.log.info('scaled', {
        model: k,
        from: current,
        to: d.desiredReplicas,
        reason: d.reason,
        message: d.message,
      });
    }
    if (record) {
      await this.events.record(mdep, {
        type: 'Normal',
        reason: active ? d.reason : `Shadow${d.reason}`,
        action: 'Scale',
        note: active ? d.message : `shadow mode, not applied: ${d.message}`,
      });
    }
    await this.writeStatus(
      mdep,
      d,
      input,
      scraped.tokensPerSecond,
      record ? historyEntry(current, d, active, now) : undefined,
      now,
    );
  }

  private async scrape(
    k: string,
    mdep: ModelDeployment,
    ready: V1Pod[],
    nowMs: number,
  ): Promise<{
    waiting: number;
    running: number;
    tokensPerSecond?: number;
    completedPerSecond?: number;
    /** undefined when a worker with waiting requests does not export the gauge (it predates it). */
    waitingPromptTokens?: number;
    /** 0 without ready workers; undefined until a worker's counter has been read twice. */
    promptTokensPerSecond?: number;
  }> {
    const window = this.windows.get(k) ?? new LatencyWindow(this.o.latencyWindowMs ?? 20_000);
    this.windows.set(k, window);
    let waiting = 0;
    let running = 0;
    let tokens = 0;
    let tokenSeconds = 0;
    let finished = 0;
    let finishedSeconds = 0;
    let waitingPromptTokens: number | undefined = 0;
    let prompt = 0;
    let promptSeconds = 0;
    const alive = new Set<string>();
    await Promise.all(
      ready.map(async (pod) => {
        const podName = pod.metadata?.name ?? '';
        alive.add(podName);
        const url = metricsUrl(pod, mdep.spec.worker.port);
        if (!url) return;
        try {
          const m = await scrapeWorker(url, mdep.spec.model.name, this.o.scrapeTimeoutMs ?? 1000);
          waiting += m.waiting;
          running += m.running;
          if (m.waitingPromptTokens !== undefined) {
            if (waitingPromptTokens !== undefined) waitingPromptTokens += m.waitingPromptTokens;
          } else if (m.waiting > 0) waitingPromptTokens = undefined;
          window.record(podName, nowMs, m);
          const tokenRate = this.rate(`${k}/${podName}/tokens`, m.generationTokens, nowMs);
          if (tokenRate) {
            tokens += tokenRate.delta;
            tokenSeconds = Math.max(tokenSeconds, tokenRate.seconds);
          }
          const finishedRate = this.rate(`${k}/${podName}/finished`, m.finishedRequests, nowMs);
          if (finishedRate) {
            finished += finishedRate.delta;
            finishedSeconds = Math.max(finishedSeconds, finishedRate.seconds);
          }
          const promptRate = this.rate(`${k}/${podName}/prompt`, m.promptTokens, nowMs);
          if (promptRate) {
            prompt += promptRate.delta;
            promptSeconds = Math.max(promptSeconds, promptRate.seconds);
          }
        } catch (err) {
          this.warnOnce(`scrape/${k}/${podName}`, 'worker metrics unavailable', { pod: podName, error: String(err) });
        }
      }),
    );
    window.retain(alive);
    for (const key of this.counters.keys()) {
      const [pod] = key.slice(k.length + 1).split('/');
      if (key.startsWith(`${k}/`) && !alive.has(pod ?? '')) this.counters.delete(key);
    }
    return {
      waiting,
      running,
      ...(tokenSeconds > 0 ? { tokensPerSecond: tokens / tokenSeconds } : {}),
      ...(finishedSeconds > 0 ? { completedPerSecond: finished / finishedSeconds } : {}),
      ...(waitingPromptTokens !== undefined ? { waitingPromptTokens } : {}),
      // No ready worker prefills nothing: a known 0, so a token backlog can size a scale from zero.
      ...(promptSeconds > 0
        ? { promptTokensPerSecond: prompt / promptSeconds }
        : ready.length === 0
          ? { promptTokensPerSecond: 0 }
          : {}),
    };
  }

  /** Increase of a counter since its previous scrape; undefined on the first scrape or after a reset. */
  private rate(key: string, total: number | undefined, nowMs: number): { delta: number; seconds: number } | undefined {
    if (total === undefined) return undefined;
    const prev = this.counters.get(key);
    this.counters.set(key, { t: nowMs, total });
    if (!prev || total < prev.total || nowMs <= prev.t) return undefined;
    return { delta: total - prev.total, seconds: (nowMs - prev.t) / 1000 };
  }

  private async writeStatus(
    mdep: ModelDeployment,
    d: Decision,
    input: SignalInputs,
    tokensPerSecond: number | undefined,
    entry: ReturnType<typeof historyEntry> | undefined,
    now: Date,
  ): Promise<void> {
    const ns = mdep.metadata.namespace ?? 'default';
    const name = mdep.metadata.name ?? '';
    const k = mdepKey(ns, name);
    const status = {
      signals: signalsOf(input, tokensPerSecond, now),
      conditions: autoscalerConditions(mdep, d, mdep.spec.autoscaling.slo, now),
      scalingHistory: entry ? appendHistory(mdep.status?.scalingHistory, entry) : (mdep.status?.scalingHistory ?? []),
    };
    const due = (this.lastStatusWrite.get(k) ?? 0) + (this.o.statusIntervalMs ?? 10_000) <= now.getTime();
    // Only the signals moved: they wait for the interval so that a busy model is not a status write every tick.
    const structural = statusDiffers(mdep.status, { ...status, signals: mdep.status?.signals ?? status.signals });
    if (!entry && !structural && !due) return;
    await this.o.client.apply(
      objectPath(resources.modelDeployments, ns, name, 'status'),
      { apiVersion: API_VERSION, kind: KIND, metadata: { name, namespace: ns }, status },
      AUTOSCALER_FIELD_MANAGER,
    );
    this.lastStatusWrite.set(k, now.getTime());
  }
}

/** What the operator's main calls when it becomes leader; stop() it when leadership ends or on shutdown. */
export async function startAutoscaler(options: AutoscalerOptions): Promise<Autoscaler> {
  const a = new Autoscaler(options);
  await a.start();
  return a;
}
