// The worker's HTTP app: OpenAI-compatible routes over an Engine. A factory, so tests can serve it on port 0.
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { jsonBody } from './body.js';
import { WorkerContext, type WorkerConfig } from './context.js';
import type { Engine } from './engine/types.js';
import type { Logger } from './log.js';
import { ApiError, draining, internalError } from './openai/errors.js';
import { chatCompletions } from './routes/chat.js';
import { sendError } from './routes/common.js';
import { completions } from './routes/completions.js';
import { getModel, health, listModels, metrics, ready } from './routes/info.js';
import type { Tokenizer } from './tokenizer.js';
import type { Tracing } from './tracing.js';

export interface AppOptions {
  tokenizer: Tokenizer;
  config: WorkerConfig;
  /** Absent while the model loads: /ready says 503 until attachEngine(). */
  engine?: Engine;
  logger?: Logger;
  tracing?: Tracing;
}

type Handler = (ctx: WorkerContext, req: Request, res: Response) => void | Promise<void>;

export function createApp(options: AppOptions): { app: express.Express; ctx: WorkerContext } {
  const ctx = new WorkerContext(options.tokenizer, options.config, options.logger, options.tracing);
  if (options.engine) ctx.attachEngine(options.engine);
  const app = express();
  app.disable('x-powered-by');
  const route =
    (handler: Handler) =>
    async (req: Request, res: Response, next: NextFunction): Promise<void> => {
      try {
        await handler(ctx, req, res);
      } catch (err) {
        next(err);
      }
    };

  // Access log: one JSON line per request when it ends (streams too); probes and scrapes only at debug.
  app.use((req, res, next) => {
    const start = performance.now();
    // Where the generation routes' Server-Timing starts (`recv`: from here to the route, body read and parsed).
    res.locals.requestStart = start;
    res.on('close', () => {
      const fields = {
        method: req.method,
        path: req.path,
        status: res.statusCode,
        ms: Number((performance.now() - start).toFixed(1)),
        ...(res.writableFinished ? {} : { aborted: true }),
      };
      if (req.path.startsWith('/v1')) ctx.logger.info('request', fields);
      else ctx.logger.debug('request', fields);
    });
    next();
  });
  // New API work is refused while draining; requests already running finish.
  const refuseWhileDraining = (_req: Request, res: Response, next: NextFunction): void => {
    if (ctx.state.draining) sendError(res, draining(ctx.config.retryAfterSeconds));
    else next();
  };
  const body = jsonBody({ limit: ctx.config.maxBodyBytes });
  // The generation routes first, each with the /v1 steps in the same order (draining, body, route): express tries
  // layers in order, so a generation request otherwise went through every other route's path match and the two
  // `/v1` prefix layers (each rewrites req.url and restores it) on its way to the engine, and in a burst of requests
  // each one waits for that work of the ones before it. Other /v1 paths get the same steps from the layers below.
  app.post('/v1/completions', refuseWhileDraining, body, route(completions));
  app.post('/v1/chat/completions', refuseWhileDraining, body, route(chatCompletions));
  app.get('/health', route(health));
  app.get('/ready', route(ready));
  app.get('/metrics', route(metrics));
  app.use('/v1', refuseWhileDraining);
  app.use('/v1', body);
  app.get('/v1/models', route(listModels));
  app.get('/v1/models/:model', route(getModel));
  app.use((req, res) => {
    sendError(res, new ApiError(404, `No route ${req.method} ${req.path}`, 'invalid_request_error', null, 'not_found'));
  });
  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    const apiError = toApiError(err, ctx.config.maxBodyBytes);
    if (apiError.status >= 500) ctx.logger.error('request failed', { error: String((err as Error)?.stack ?? err) });
    if (res.headersSent) {
      res.end();
      return;
    }
    sendError(res, apiError);
  });
  return { app, ctx };
}

/** body-parser's errors (malformed JSON, body too large) and our own, in OpenAI's shape. */
function toApiError(err: unknown, limit: number): ApiError {
  if (err instanceof ApiError) return err;
  const e = err as { type?: string; status?: number; message?: string };
  if (e?.type === 'entity.parse.failed') {
    return new ApiError(
      400,
      `Malformed JSON in request body: ${e.message}`,
      'invalid_request_error',
      null,
      'invalid_json',
    );
  }
  if (e?.type === 'entity.too.large') {
    return new ApiError(
      413,
      `Request body is larger than ${limit} bytes`,
      'invalid_request_error',
      null,
      'request_too_large',
    );
  }
  if (typeof e?.status === 'number' && e.status >= 400 && e.status < 500) {
    return new ApiError(e.status, e.message ?? 'bad request', 'invalid_request_error');
  }
  return internalError(`Internal error: ${e?.message ?? String(err)}`);
}

/** Starts listening; resolves with the bound port (use port 0 in tests). */
export function listen(
  app: express.Express,
  port: number,
  host = '0.0.0.0',
): Promise<{ server: Server; port: number }> {
  return new Promise((resolve, reject) => {
    const server = app.listen(port, host, (err?: Error) => {
      if (err) reject(err);
      else resolve({ server, port: (server.address() as AddressInfo).port });
    });
  });
}
