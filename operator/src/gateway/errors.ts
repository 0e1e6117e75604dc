// Errors in OpenAI's shape, `{ error: { message, type, param, code } }`, with the HTTP status and, for 429 and 503,
// the Retry-After seconds the client should wait.
import type { ServerResponse } from 'node:http';

export class GatewayError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly code: string | null = null,
    readonly param: string | null = null,
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
    this.name = 'GatewayError';
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export const missingKey = (): GatewayError =>
  new GatewayError(
    401,
    'You did not provide an API key: send it as "Authorization: Bearer <key>"',
    'invalid_request_error',
    'missing_api_key',
  );

export const invalidKey = (): GatewayError =>
  new GatewayError(401, 'Incorrect API key provided', 'invalid_request_error', 'invalid_api_key');

export const modelNotAllowed = (model: string): GatewayError =>
  new GatewayError(
    403,
    `This API key may not use the model '${model}'`,
    'permission_error',
    'model_not_allowed',
    'model',
  );

export const modelNotFound = (model: string): GatewayError =>
  new GatewayError(404, `The model '${model}' does not exist`, 'invalid_request_error', 'model_not_found', 'model');

export const notFound = (path: string): GatewayError =>
  new GatewayError(404, `Unknown request URL: ${path}`, 'invalid_request_error', 'unknown_url');

export const methodNotAllowed = (method: string, path: string): GatewayError =>
  new GatewayError(405, `Method ${method} is not allowed on ${path}`, 'invalid_request_error', 'method_not_allowed');

export const bodyTooLarge = (limit: number): GatewayError =>
  new GatewayError(413, `The request body exceeds ${limit} bytes`, 'invalid_request_error', 'request_too_large');

export const badRequest = (message: string, param: string | null = null): GatewayError =>
  new GatewayError(400, message, 'invalid_request_error', 'invalid_request', param);

export const rateLimited = (limit: 'requests' | 'tokens', retryAfterSeconds: number): GatewayError =>
  new GatewayError(
    429,
    `Rate limit reached for ${limit} per minute on this API key; retry after ${retryAfterSeconds} s`,
    'rate_limit_error',
    'rate_limit_exceeded',
    null,
    retryAfterSeconds,
  );

export const queueFull = (model: string, retryAfterSeconds: number): GatewayError =>
  new GatewayError(
    429,
    `Too many requests are waiting for the model '${model}'; retry after ${retryAfterSeconds} s`,
    'rate_limit_error',
    'queue_full',
    null,
    retryAfterSeconds,
  );

export const queueTimeout = (model: string, retryAfterSeconds: number): GatewayError =>
  new GatewayError(
    503,
    `No worker of the model '${model}' became available in time; retry after ${retryAfterSeconds} s`,
    'service_unavailable',
    'queue_timeout',
    null,
    retryAfterSeconds,
  );

export const shuttingDown = (retryAfterSeconds: number): GatewayError =>
  new GatewayError(
    503,
    'The gateway is shutting down; retry on another replica',
    'service_unavailable',
    'shutting_down',
    null,
    retryAfterSeconds,
  );

export const upstreamFailed = (message: string): GatewayError =>
  new GatewayError(502, message, 'server_error', 'upstream_error');

/** Writes the error unless headers already went out (then the caller ends the stream its own way). */
export function sendError(res: ServerResponse, err: GatewayError, extraHeaders: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  const body = JSON.stringify(err.body());
  res.writeHead(err.status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(body),
    ...(err.retryAfterSeconds !== undefined ? { 'Retry-After': String(err.retryAfterSeconds) } : {}),
    ...extraHeaders,
  });
  res.end(body);
}
