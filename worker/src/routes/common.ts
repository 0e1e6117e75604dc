// Steps shared by the generation endpoints: body validation, model check, sampling parameters, context-length
// checks, admission, and the per-request lifecycle (in-flight count, disconnect → cancel, trace span).
import type { Request, Response } from 'express';
import { randomFillSync } from 'node:crypto';
import type { z } from 'zod';
import type { WorkerContext } from '../context.js';
import type { Engine, GenerationRequest } from '../engine/types.js';
import { ApiError, internalError, invalidRequest, modelNotFound, notReady, overloaded } from '../openai/errors.js';
import { describeIssue } from '../openai/schemas.js';
import { SERVER_TIMING, type RequestTiming } from '../server-timing.js';

/** `fast`: a cheaper schema that accepts a subset of what `schema` accepts, with the same output; tried first, and
 * anything it refuses is parsed (and its error reported) by `schema`. */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown, fast?: z.ZodType<z.infer<S>>): z.infer<S> {
  if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw invalidRequest(
      'The request body must be a JSON object (Content-Type: application/json)',
      null,
      'invalid_json',
    );
  }
  if (fast) {
    const quick = fast.safeParse(body);
    if (quick.success) return quick.data;
  }
  const parsed = schema.safeParse(body);
  if (!parsed.success) {
    const { param, message } = describeIssue(parsed.error);
    throw invalidRequest(message, param || null, 'invalid_value');
  }
  return parsed.data;
}

export function requireEngine(ctx: WorkerContext, model: string): Engine {
  if (model !== ctx.config.servedModelName) throw modelNotFound(model);
  if (!ctx.engine) throw notReady();
  return ctx.engine;
}

interface SamplingFields {
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  min_p?: number | null;
  seed?: number | null;
  frequency_penalty?: number | null;
  presence_penalty?: number | null;
  repetition_penalty?: number | null;
}

/** Engine sampling settings (ranges were checked by the schema; the engine checks them again). */
export function samplingOf(body: SamplingFields): Omit<GenerationRequest, 'prompt' | 'maxTokens'> {
  const out: Omit<GenerationRequest, 'prompt' | 'maxTokens'> = {};
  if (body.temperature !== undefined && body.temperature !== null) out.temperature = body.temperature;
  if (body.top_p !== undefined && body.top_p !== null) out.topP = body.top_p;
  if (body.top_k !== undefined && body.top_k !== null && body.top_k > 0) out.topK = body.top_k;
  if (body.min_p !== undefined && body.min_p !== null) out.minP = body.min_p;
  if (body.seed !== undefined && body.seed !== null) out.seed = body.seed;
  if (body.frequency_penalty) out.frequencyPenalty = body.frequency_penalty;
  if (body.presence_penalty) out.presencePenalty = body.presence_penalty;
  if (body.repetition_penalty !== undefined && body.repetition_penalty !== null && body.repetition_penalty !== 1)
    out.repetitionPenalty = body.repetition_penalty;
  return out;
}

/** The generation budget: what was asked for, or what is left of the context; errors name the param at fault. */
export function maxTokensFor(
  engine: Engine,
  promptTokens: number,
  requested: number | null | undefined,
  promptParam: string,
  maxParam: string,
): number {
  const context = engine.options.maxContext;
  if (promptTokens >= context) {
    throw invalidRequest(
      `This model's maximum context length is ${context} tokens. However, your ${promptParam} resulted in ${promptTokens} tokens. Please reduce the length of the ${promptParam}.`,
      promptParam,
      'context_length_exceeded',
    );
  }
  if (requested === undefined || requested === null) return context - promptTokens;
  if (promptTokens + requested > context) {
    throw invalidRequest(
      `This model's maximum context length is ${context} tokens. However, you requested ${promptTokens + requested} tokens (${promptTokens} in the ${promptParam}, ${requested} in the completion). Please reduce the length of the ${promptParam} or ${maxParam}.`,
      maxParam,
      'context_length_exceeded',
    );
  }
  return requested;
}

export function stopStrings(stop: string | string[] | null | undefined): string[] {
  if (stop === undefined || stop === null) return [];
  return (typeof stop === 'string' ? [stop] : stop).filter((s) => s.length > 0);
}

export function admit(ctx: WorkerContext, sequences: number): void {
  if (!ctx.admission!.canAdmit(sequences)) throw overloaded(ctx.config.retryAfterSeconds);
}

/** The `usage` object of a response (and of the last chunk of a stream with include_usage). */
export function usageOf(promptTokens: number, completionTokens: number, cachedTokens: number) {
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
    prompt_tokens_details: { cached_tokens: cachedTokens },
  };
}

// A request whose every sequence failed before producing anything: one that can never fit the context is the
// client's error (400 context_length_exceeded), anything else the server's.
export function noOutputError(capacityRejection: string | undefined, firstError: string): ApiError {
  return capacityRejection
    ? invalidRequest(capacityRejection, null, 'context_length_exceeded')
    : internalError(firstError);
}

export function sendError(res: Response, err: ApiError): void {
  if (err.retryAfter !== undefined) res.setHeader('Retry-After', String(err.retryAfter));
  res.status(err.status).json(err.toBody());
}

/** `res.json` with the request's Server-Timing header; the body is serialized first, so `post` counts that too.
 * `finished`: performance.now() when its last sequence ended. */
export function sendTimedJson(res: Response, body: unknown, timing: RequestTiming, finished: number): void {
  const text = JSON.stringify(body);
  res.setHeader(SERVER_TIMING, timing.responseValue(finished));
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.send(text);
}

// Random bytes for ids, drawn from the CSPRNG 4 KiB at a time: one call per request costs tens of µs when cold.
const ID_BYTES = 12;
const idPool = Buffer.alloc(ID_BYTES * 341);
let idPoolAt = idPool.length;

export function newId(prefix: string): string {
  if (idPoolAt + ID_BYTES > idPool.length) {
    randomFillSync(idPool);
    idPoolAt = 0;
  }
  idPoolAt += ID_BYTES;
  return prefix + idPool.toString('hex', idPoolAt - ID_BYTES, idPoolAt);
}

/** Calls `onGone` if the client disconnects before `finished()` is called. */
export function watchDisconnect(req: Request, res: Response, onGone: () => void): { finished(): void } {
  let done = false;
  const listener = (): void => {
    if (!done && !res.writableFinished) onGone();
  };
  res.on('close', listener);
  return {
    finished() {
      done = true;
      res.off('close', listener);
    },
  };
}

export const unixSeconds = (): number => Math.floor(Date.now() / 1000);
