// Every metric the gateway process exports, in one place. Names follow modelserve_gateway_<what>_<unit>.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export const registry = new Registry();
collectDefaultMetrics({ register: registry, prefix: 'modelserve_gateway_process_' });

export const requestsTotal = new Counter({
  name: 'modelserve_gateway_requests_total',
  help: 'Requests answered, by model and HTTP status (model "" when it was not known).',
  labelNames: ['model', 'status'] as const,
  registers: [registry],
});

export const requestDuration = new Histogram({
  name: 'modelserve_gateway_request_duration_seconds',
  help: 'Time from request arrival to the last byte of the response, by model.',
  labelNames: ['model'] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
  registers: [registry],
});

export const timeToFirstByte = new Histogram({
  name: 'modelserve_gateway_time_to_first_byte_seconds',
  help: 'Time from request arrival to the first response byte sent to the client (queue wait included), by model.',
  labelNames: ['model'] as const,
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  registers: [registry],
});

export const queueLength = new Gauge({
  name: 'modelserve_gateway_queue_length',
  help: 'Requests waiting in this gateway for a worker of the model.',
  labelNames: ['model'] as const,
  registers: [registry],
});

export const queueWait = new Histogram({
  name: 'modelserve_gateway_queue_wait_seconds',
  help: 'Time requests waited for a worker before being sent (0 when one had room), by model.',
  labelNames: ['model'] as const,
  buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
  registers: [registry],
});

export const queueRejections = new Counter({
  name: 'modelserve_gateway_queue_rejections_total',
  help: 'Requests refused by the queue, by model and reason (full → 429, deadline → 503).',
  labelNames: ['model', 'reason'] as const,
  registers: [registry],
});

export const routingDecisions = new Counter({
  name: 'modelserve_gateway_routing_decisions_total',
  help: 'Worker choices, by model and reason (affinity, least-loaded, retry).',
  labelNames: ['model', 'reason'] as const,
  registers: [registry],
});

export const upstreamErrors = new Counter({
  name: 'modelserve_gateway_upstream_errors_total',
  help: 'Failures talking to workers, by model and kind (connect, unavailable, reset-before-first-byte, reset-mid-stream).',
  labelNames: ['model', 'kind'] as const,
  registers: [registry],
});

export const inflightRequests = new Gauge({
  name: 'modelserve_gateway_inflight_requests',
  help: 'Requests this gateway has sent to workers of the model and not yet finished.',
  labelNames: ['model'] as const,
  registers: [registry],
});

export const readyEndpoints = new Gauge({
  name: 'modelserve_gateway_ready_endpoints',
  help: 'Ready, non-terminating worker endpoints the gateway routes to, by model.',
  labelNames: ['model'] as const,
  registers: [registry],
});

export const rateLimited = new Counter({
  name: 'modelserve_gateway_rate_limited_total',
  help: 'Requests refused by a per-key limit, by limit (requests, tokens).',
  labelNames: ['limit'] as const,
  registers: [registry],
});

export const redisErrors = new Counter({
  name: 'modelserve_gateway_redis_errors_total',
  help: 'Failed Redis operations, by operation; rate limits fail open and queue publication retries.',
  labelNames: ['op'] as const,
  registers: [registry],
});

export const wakeMessages = new Counter({
  name: 'modelserve_gateway_wake_messages_total',
  help: 'Wake messages published for models with waiting requests and no ready worker.',
  labelNames: ['model'] as const,
  registers: [registry],
});

export const apiKeysLoaded = new Gauge({
  name: 'modelserve_gateway_api_keys',
  help: 'API keys currently loaded from Secrets.',
  registers: [registry],
});
