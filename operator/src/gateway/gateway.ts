// The gateway's request path: authenticate → read and check the body → resolve the model → per-key rate limit →
// wait in the model's queue for a worker → forward (retrying other workers until the first byte) → audit line,
// metrics, span. Also /v1/models, /healthz, /readyz, /metrics and a graceful drain.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SpanKind, SpanStatusCode, context, propagation, trace } from '@opentelemetry/api';
import type { Logger } from '../telemetry/logger.js';
import { allowsModel, bearerToken, type ApiKey, type ApiKeyStore } from './apiKeys.js';
import type { GatewayConfig } from './config.js';
import type { Discovery } from './discovery.js';
import * as errors from './errors.js';
import { GatewayError, sendError } from './errors.js';
import * as metrics from './metrics.js';
import { ModelQueue, QueueAbortedError, QueueFullError, QueueTimeoutError, type Lease } from './modelQueue.js';
import type { QueueSignals } from './queueSignals.js';
import type { LimitDecision, RateLimiter } from './rateLimit.js';
import { BodyError, requestFacts, upstreamBody, type RequestFacts } from './requestBody.js';
import { createUpstreamAgent, forward, type Attempt, type Usage } from './upstream.js';
import { WorkerPool } from './workerPool.js';

const tracer = trace.getTracer('modelserve-gateway');

export interface GatewayDeps {
  config: GatewayConfig;
  discovery: Discovery;
  /** Undefined when authentication is off. */
  keys?: ApiKeyStore;
  limiter: RateLimiter;
  signals: QueueSignals;
  log: Logger;
  /** Ready once discovery (and keys) are synced; main flips it. */
  isSynced: () => boolean;
}

interface ModelState {
  namespace: string;
  pool: WorkerPool;
  queue: ModelQueue;
}

/** One audit line per request: who (key id), what (model, tokens), how it went (status, latency, worker). */
interface Audit {
  path: string;
  key_id: string | null;
  model: string | null;
  stream: boolean;
  status: number;
  prompt_tokens: number | null;
  completion_tokens: number | null;
  latency_ms: number;
  ttft_ms: number | null;
  /** Time the gateway itself spent before the first byte (parsing, routing, relaying), queue wait excluded. */
  overhead_ms?: number;
  queue_ms: number | null;
  worker: string | null;
  attempts: number;
  error?: string;
  prompt?: string;
}

const round = (ms: number): number => Math.round(ms * 100) / 100;

export class Gateway {
  readonly server: http.Server;
  private readonly models = new Map<string, ModelState>();
  private readonly agent = createUpstreamAgent();
  private active = 0;
  private draining = false;

  constructor(private readonly deps: GatewayDeps) {
    this.server = http.createServer({ noDelay: true, keepAlive: true }, (req, res) => {
      this.route(req, res).catch((err: unknown) => {
        deps.log.error('request handler failed', { error: String(err) });
        if (!res.headersSent) sendError(res, new GatewayError(500, 'internal gateway error', 'server_error'));
        else res.destroy();
      });
    });
    // Streams can last minutes; only the request head must arrive promptly.
    this.server.requestTimeout = 0;
    this.server.headersTimeout = 30_000;
    deps.discovery.onChange(() => this.syncEndpoints());
  }

  async listen(host: string, port: number): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => resolve());
    });
    this.syncEndpoints();
    return (this.server.address() as AddressInfo).port;
  }

  get inflight(): number {
    return this.active;
  }

  private modelState(model: string, namespace: string): ModelState {
    let state = this.models.get(model);
    if (!state) {
      const { config } = this.deps;
      const pool = new WorkerPool({ maxInflightPerWorker: config.maxInflightPerWorker, loadFactor: config.loadFactor });
      const queue = new ModelQueue(model, pool, { maxLength: config.queueMax }, (m, length, promptTokens) => {
        const ref = { namespace: state!.namespace, model: m };
        this.deps.signals.set(ref, length, promptTokens);
        // A model with nobody to serve it: tell the autoscaler now rather than at its next tick.
        if (length > 0 && pool.endpoints.length === 0) this.deps.signals.wake(ref, length);
      });
      state = { namespace, pool, queue };
      this.models.set(model, state);
    }
    state.namespace = namespace;
    return state;
  }

  /** Applies discovery's current endpoints to every model's pool and lets waiting requests take new workers. */
  syncEndpoints(): void {
    const seen = new Set<string>();
    for (const t of this.deps.discovery.targets()) {
      seen.add(t.model);
      const state = this.modelState(t.model, t.namespace);
      state.pool.setEndpoints(t.endpoints);
      metrics.readyEndpoints.set({ model: t.model }, t.endpoints.length);
      state.queue.dispatch();
    }
    for (const [model, state] of this.models) {
      if (seen.has(model)) continue;
      state.pool.setEndpoints([]);
      metrics.readyEndpoints.set({ model }, 0);
    }
  }

  private async route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    req.socket.setNoDelay(true);
    // While draining, every answer closes its connection so that clients reconnect to another replica.
    if (this.draining) res.setHeader('Connection', 'close');
    const path = (req.url ?? '/').split('?')[0] as string;
    if (path === '/healthz') {
      res.writeHead(200, { 'Content-Type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      const ok = !this.draining && this.deps.isSynced();
      res.writeHead(ok ? 200 : 503, { 'Content-Type': 'text/plain' }).end(ok ? 'ok\n' : 'not ready\n');
    } else if (path === '/metrics') {
      const text = await metrics.registry.metrics();
      res.writeHead(200, { 'Content-Type': metrics.registry.contentType }).end(text);
    } else if (path === '/v1/models') {
      if (req.method !== 'GET') return sendError(res, errors.methodNotAllowed(req.method ?? '', path));
      this.listModels(req, res);
    } else if (path === '/v1/chat/completions' || path === '/v1/completions') {
      if (req.method !== 'POST') return sendError(res, errors.methodNotAllowed(req.method ?? '', path));
      await this.generate(req, res, path, path === '/v1/chat/completions' ? 'chat' : 'completion');
    } else {
      sendError(res, errors.notFound(path));
    }
  }

  private authenticate(req: http.IncomingMessage): ApiKey | undefined {
    const { keys } = this.deps;
    if (!keys) return undefined;
    const token = bearerToken(req.headers as { authorization?: string; 'api-key'?: string });
    if (!token) throw errors.missingKey();
    const key = keys.lookup(token);
    if (!key) throw errors.invalidKey();
    return key;
  }

  private listModels(req: http.IncomingMessage, res: http.ServerResponse): void {
    let key: ApiKey | undefined;
    try {
      key = this.authenticate(req);
    } catch (err) {
      return sendError(res, err as GatewayError);
    }
    const data = this.deps.discovery
      .targets()
      .filter((t) => !key || allowsModel(key, t.model))
      .map((t) => ({
        id: t.model,
        object: 'model',
        created: 0,
        owned_by: 'modelserve',
        ready_replicas: t.endpoints.length,
      }));
    const body = JSON.stringify({ object: 'list', data });
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) }).end(body);
  }

  private readBody(req: http.IncomingMessage): Promise<Buffer> {
    const limit = this.deps.config.maxBodyBytes;
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > limit) return Promise.reject(errors.bodyTooLarge(limit));
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > limit) {
          req.removeAllListeners('data');
          req.resume();
          reject(errors.bodyTooLarge(limit));
          return;
        }
        chunks.push(c);
      });
      req.on('end', () => resolve(Buffer.concat(chunks)));
      req.on('error', reject);
    });
  }

  private async generate(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    path: string,
    kind: 'chat' | 'completion',
  ): Promise<void> {
    const { config, log } = this.deps;
    const arrival = performance.now();
    const audit: Audit = {
      path,
      key_id: null,
      model: null,
      stream: false,
      status: 0,
      prompt_tokens: null,
      completion_tokens: null,
      latency_ms: 0,
      ttft_ms: null,
      queue_ms: null,
      worker: null,
      attempts: 0,
    };
    const abort = new AbortController();
    // Writes racing a client that just went away must not surface as an unhandled 'error' event.
    res.on('error', () => {});
    res.on('close', () => {
      if (!res.writableFinished) abort.abort();
    });
    this.active++;
    const span = tracer.startSpan('gateway.request', {
      kind: SpanKind.SERVER,
      attributes: { 'http.request.method': 'POST', 'url.path': path },
    });
    let key: ApiKey | undefined;
    let admitted: LimitDecision | undefined;
    let usage: Usage | undefined;
    try {
      if (this.draining) throw errors.shuttingDown(config.retryAfterSeconds);
      key = this.authenticate(req);
      audit.key_id = key?.id ?? null;
      const raw = await this.readBody(req);
      let parsed: unknown;
      try {
        parsed = JSON.parse(raw.toString('utf8'));
      } catch {
        throw errors.badRequest('The request body is not valid JSON');
      }
      let facts: RequestFacts;
      try {
        facts = requestFacts(kind, parsed, config.prefixChars);
      } catch (err) {
        if (err instanceof BodyError) throw errors.badRequest(err.message, err.param);
        throw err;
      }
      audit.model = facts.model;
      audit.stream = facts.stream;
      if (config.logPrompts) audit.prompt = facts.promptText();
      span.setAttribute('gen_ai.request.model', facts.model);
      if (key && !allowsModel(key, facts.model)) throw errors.modelNotAllowed(facts.model);
      const target = this.deps.discovery.target(facts.model);
      if (!target) throw errors.modelNotFound(facts.model);
      if (key) {
        admitted = await this.deps.limiter.admit(key.id, key, facts.promptTokens());
        if (!admitted.allowed) {
          metrics.rateLimited.inc({ limit: admitted.limit });
          throw errors.rateLimited(admitted.limit, Math.max(1, Math.ceil(admitted.retryAfterMs / 1000)));
        }
      }
      const state = this.modelState(facts.model, target.namespace);
      const result = await this.dispatch(
        state,
        facts,
        raw,
        parsed as Record<string, unknown>,
        path,
        res,
        abort.signal,
        audit,
        arrival,
        span,
      );
      usage = result.usage;
      audit.status = result.status;
    } catch (err) {
      const gerr =
        err instanceof GatewayError
          ? err
          : new GatewayError(500, `internal gateway error: ${(err as Error).message}`, 'server_error');
      if (!(err instanceof GatewayError)) log.error('request failed', { error: String(err) });
      audit.status = res.destroyed && !res.headersSent ? 499 : gerr.status;
      audit.error = gerr.code ?? gerr.type;
      sendError(res, gerr, this.draining ? { Connection: 'close' } : {});
    } finally {
      this.active--;
      audit.latency_ms = round(performance.now() - arrival);
      if (usage) {
        audit.prompt_tokens = usage.prompt_tokens;
        audit.completion_tokens = usage.completion_tokens;
      }
      if (key && admitted?.allowed) {
        const used = usage ? usage.prompt_tokens + usage.completion_tokens : admitted.charged;
        void this.deps.limiter.settle(key.id, key, admitted, used);
      }
      const modelLabel = audit.model && this.deps.discovery.target(audit.model) ? audit.model : '';
      metrics.requestsTotal.inc({ model: modelLabel, status: String(audit.status) });
      if (modelLabel) metrics.requestDuration.observe({ model: modelLabel }, audit.latency_ms / 1000);
      span.setAttributes({
        'http.response.status_code': audit.status,
        ...(audit.worker ? { 'server.address': audit.worker } : {}),
        ...(usage
          ? { 'gen_ai.usage.input_tokens': usage.prompt_tokens, 'gen_ai.usage.output_tokens': usage.completion_tokens }
          : {}),
      });
      if (audit.status >= 500)
        span.setStatus({ code: SpanStatusCode.ERROR, message: audit.error ?? String(audit.status) });
      span.end();
      log.info('request', { audit: true, ...audit });
    }
  }

  /** Queue → worker → forward, retrying another worker while the client has seen nothing. */
  private async dispatch(
    state: ModelState,
    facts: RequestFacts,
    raw: Buffer,
    body: Record<string, unknown>,
    path: string,
    res: http.ServerResponse,
    signal: AbortSignal,
    audit: Audit,
    arrival: number,
    span: ReturnType<typeof tracer.startSpan>,
  ): Promise<{ status: number; usage?: Usage }> {
    const { config } = this.deps;
    // Streams report usage only on request; the gateway needs it for token limits and the audit line.
    const clientAskedUsage = (body.stream_options as { include_usage?: unknown } | undefined)?.include_usage === true;
    const upstream = upstreamBody(raw, body, facts.stream && !clientAskedUsage);
    const headers: Record<string, string> = {
      'Content-Type': 'application/json',
      Accept: facts.stream ? 'text/event-stream' : 'application/json',
    };
    propagation.inject(trace.setSpan(context.active(), span), headers);
    const deadline = arrival + config.queueTimeoutMs;
    const avoid = new Set<string>();
    const model = facts.model;
    let inflightCounted = false;
    try {
      for (let attempt = 1; ; attempt++) {
        let lease: Lease;
        try {
          lease = await state.queue.acquire(facts.prefixKey, {
            timeoutMs: Math.max(0, deadline - performance.now()),
            signal,
            avoid,
            promptTokens: facts.promptTokens,
          });
        } catch (err) {
          if (err instanceof QueueFullError) {
            metrics.queueRejections.inc({ model, reason: 'full' });
            throw errors.queueFull(model, config.retryAfterSeconds);
          }
          if (err instanceof QueueTimeoutError) {
            metrics.queueRejections.inc({ model, reason: 'deadline' });
            throw errors.queueTimeout(model, config.retryAfterSeconds);
          }
          if (err instanceof QueueAbortedError) return { status: 499 };
          throw err;
        }
        const priorQueueMs = audit.queue_ms ?? 0;
        audit.attempts = attempt;
        audit.worker = lease.endpoint;
        audit.queue_ms = round((audit.queue_ms ?? 0) + lease.queuedMs);
        metrics.queueWait.observe({ model }, lease.queuedMs / 1000);
        metrics.routingDecisions.inc({ model, reason: lease.reason });
        if (!inflightCounted) metrics.inflightRequests.inc({ model });
        inflightCounted = true;
        let result: Attempt;
        const sentAt = performance.now();
        try {
          result = await forward(
            this.agent,
            {
              endpoint: lease.endpoint,
              path,
              body: upstream,
              headers,
              stream: facts.stream,
              dropUsageChunk: facts.stream && !clientAskedUsage,
              signal,
            },
            res,
            (receivedAt) => {
              const now = performance.now();
              audit.ttft_ms = round(now - arrival);
              // The gateway's own share of the first byte's latency: arrival → upstream request (less queue wait),
              // plus worker bytes in → client bytes out.
              audit.overhead_ms = round(sentAt - arrival - lease.queuedMs - priorQueueMs + (now - receivedAt));
              metrics.timeToFirstByte.observe({ model }, (now - arrival) / 1000);
            },
          );
        } finally {
          lease.release();
        }
        if (result.outcome === 'done') {
          if (result.midStreamError) {
            metrics.upstreamErrors.inc({ model, kind: 'reset-mid-stream' });
            audit.error = 'upstream_reset_mid_stream';
          }
          return { status: result.status, usage: result.usage };
        }
        metrics.upstreamErrors.inc({ model, kind: result.kind });
        this.deps.log.warn('worker attempt failed', { model, worker: lease.endpoint, attempt, error: result.message });
        avoid.add(lease.endpoint);
        if (attempt >= config.maxAttempts || signal.aborted) {
          if (result.response) {
            // The worker's own refusal (503 not ready, 429 overloaded) is the most useful answer left.
            const r = result.response;
            if (!res.headersSent) {
              res.writeHead(r.status, {
                'Content-Type': r.headers['content-type'] ?? 'application/json',
                'Content-Length': String(r.body.length),
                ...(r.headers['retry-after']
                  ? { 'Retry-After': r.headers['retry-after'] }
                  : { 'Retry-After': String(config.retryAfterSeconds) }),
              });
              res.end(r.body);
            }
            return { status: r.status };
          }
          throw errors.upstreamFailed(`no worker of the model '${model}' could take the request: ${result.message}`);
        }
        // Every ready worker has failed this request (one worker, restarting): give it a moment before trying again.
        if (state.pool.endpoints.every((e) => avoid.has(e))) {
          const pause = Math.min(100 * 2 ** (attempt - 1), Math.max(0, deadline - performance.now()));
          await new Promise((r) => setTimeout(r, pause));
        }
      }
    } finally {
      if (inflightCounted) metrics.inflightRequests.dec({ model });
    }
  }

  /** Stops accepting, lets in-flight requests finish for up to graceMs, then closes what is left. */
  async shutdown(graceMs: number): Promise<void> {
    this.draining = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    const deadline = Date.now() + graceMs;
    while (this.active > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      this.server.closeIdleConnections();
    }
    for (const state of this.models.values()) state.queue.rejectAll(() => new QueueTimeoutError('', 0));
    this.server.closeAllConnections();
    await closed;
    this.agent.destroy();
  }
}
