// Reading the autoscaler's inputs: the gateways' queue lengths from Redis, the workers' /metrics over HTTP, and the
// pods' phases. Each reader reports failure instead of guessing: a missing queue means "hold", not "zero".
import type { V1Pod } from '@kubernetes/client-node';
import type { Redis } from 'ioredis';
import { isPodReady } from '../controller/status.js';
import { parsePrometheusText, workerMetrics, type WorkerMetrics } from './prometheus.js';
import { queueKey, sumQueueEntries } from './signals-keys.js';

/** Pod annotation naming the port of /metrics when it is not the container port named http. */
export const ANNOTATION_METRICS_PORT = 'serving.modelserve.dev/metrics-port';

export async function readGatewayQueue(
  redis: Redis,
  namespace: string,
  model: string,
  nowMs: number,
): Promise<{ waiting: number; gateways: number }> {
  const key = queueKey(namespace, model);
  const entries = await redis.hgetall(key);
  const { waiting, gateways, stale } = sumQueueEntries(entries, nowMs);
  if (stale.length) await redis.hdel(key, ...stale);
  return { waiting, gateways };
}

export interface PodCounts {
  ready: V1Pod[];
  /** Phase Pending: not scheduled yet, or containers not started. */
  pending: number;
  /** Not terminating. */
  live: number;
}

export function countPods(pods: V1Pod[]): PodCounts {
  const live = pods.filter((p) => !p.metadata?.deletionTimestamp);
  return {
    ready: live.filter(isPodReady),
    pending: live.filter((p) => p.status?.phase === 'Pending').length,
    live: live.length,
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
