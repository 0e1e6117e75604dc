// OpenAI's error shape: every failure the API returns is `{ error: { message, type, param, code } }`.
export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Seconds for a Retry-After header (429, 503). */
    readonly retryAfter?: number,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  toBody(): ErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export const invalidRequest = (message: string, param: string | null = null, code: string | null = null): ApiError =>
  new ApiError(400, message, 'invalid_request_error', param, code);

export const modelNotFound = (model: string): ApiError =>
  new ApiError(404, `The model '${model}' does not exist`, 'invalid_request_error', 'model', 'model_not_found');

export const overloaded = (retryAfter: number): ApiError =>
  new ApiError(
    429,
    'The server is at capacity (request queue full); retry later',
    'rate_limit_error',
    null,
    'rate_limit_exceeded',
    retryAfter,
  );

export const draining = (retryAfter: number): ApiError =>
  new ApiError(
    503,
    'The server is shutting down and takes no new requests',
    'service_unavailable',
    null,
    'draining',
    retryAfter,
  );

export const notReady = (): ApiError =>
  new ApiError(503, 'The model is not loaded yet', 'service_unavailable', null, 'not_ready', 5);

export const internalError = (message: string): ApiError => new ApiError(500, message, 'server_error', null, null);
