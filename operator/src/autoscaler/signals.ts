// Reading the autoscaler's inputs: the gateways' queue lengths from Redis, the workers' /metrics over HTTP, and the
// pods' phases. Each reader reports failure instead of guessing: a missing queue means "hold", not "zero".
import type { V1Pod } from '@kubernetes/client-node';
import type { Redis } from 'ioredis';
import { ROLE_STANDBY, roleOf } from '../controller/standby.js';
import { isPodReady } from '../controller/status.js';
import { parsePrometheusText, workerMetrics, type WorkerMetrics } from './prometheus.js';
import { queueKey, queueTokensKey, sumQueuedPromptTokens, sumQueueEntries } from './signals-keys.js';

/** Pod annotation naming the port of /metrics when it is not the container port named http. */
export const ANNOTATION_METRICS_PORT = 'serving.modelserve.dev/metrics-port';

/**
 * The gateways' queue: requests waiting, how many gateways reported, and the requests' estimated prompt tokens
 * (undefined when a gateway with waiting requests reported none). Both hashes are read in one transaction, so a
 * gateway's length and tokens are those of one write.
 */
export async function readGatewayQueue(
  redis: Redis,
  namespace: string,
  model: string,
  nowMs: number,
): Promise<{ waiting: number; gateways: number; promptTokens: number | undefined }> {
  const key = queueKey(namespace, model);
  const tokensKey = queueTokensKey(namespace, model);
  const replies = (await redis.multi().hgetall(key).hgetall(tokensKey).exec()) ?? [];
  const hash = (i: number): Record<string, string> => {
    const [err, value] = replies[i] ?? [new Error('no reply'), undefined];
    if (err) throw err;
    return (value ?? {}) as Record<string, string>;
  };
  const lengths = hash(0);
  const { waiting, gateways, stale } = sumQueueEntries(lengths, nowMs);
  const tokens = sumQueuedPromptTokens(lengths, hash(1), nowMs);
  if (stale.length) await redis.hdel(key, ...stale);
  if (tokens.stale.length) await redis.hdel(tokensKey, ...tokens.stale);
  return { waiting, gateways, promptTokens: tokens.promptTokens };
}

export interface PodCounts {
  /** Ready serving pods (standbys take no traffic, so they are neither capacity nor a source of latency signals). */
  ready: V1Pod[];
  /** Serving pods in phase Pending: not scheduled yet, or containers not started. */
  pending: number;
  /** Serving pods not terminating. */
  live: number;
  /** Standby pods that are loaded and ready to be promoted (spec.prewarm.standbyReplicas). */
  standbyReady: number;
}

/**
 * Counts the worker pods by role. A standby is left out of ready and pending: counting it as ready would hide a
 * missing replica, and a standby waiting for a GPU must not hold back a scale-up the way a Pending replica does.
 */
export function countPods(pods: V1Pod[]): PodCounts {
  const live = pods.filter((p) => !p.metadata?.deletionTimestamp);
  const serving = live.filter((p) => roleOf(p) !== ROLE_STANDBY);
  return {
    ready: serving.filter(isPodReady),
    pending: serving.filter((p) => p.status?.phase === 'Pending').length,
    live: serving.length,
    standbyReady: live.filter((p) => roleOf(p) === ROLE_STANDBY && isPodReady(p)).length,
  };
}

/** http://<pod IP>:<port>/metrics, from the annotation, else the container port named http, else `fallbackPort`. */
export function metricsUrl(pod: V1Pod, fallbackPort: number): string | undefined {
  const ip = pod.status?.podIP;
  if (!ip) return undefined;
  const annotated = Number(pod.metadata?.annotations?.[ANNOTATION_METRICS_PORT]);
  const named = pod.spec?.containers.flatMap((c) => c.ports ?? []).find((p) => p.name === 'http')?.containerPort;
  const port = Number.isInteger(annotated) && annotated > 0 ? annotated : (named ?? fallbackPort);
  const host = ip.includes(':') ? `[${ip}]` : ip;
  return `http://${host}:${port}/metrics`;
}

export async function scrapeWorker(url: string, model: string, timeoutMs: number): Promise<WorkerMetrics> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
  const { samples } = parsePrometheusText(await res.text());
  return workerMetrics(samples, model);
}
