// POST /v1/completions: a raw prompt (text, in which special tokens such as `<|start|>` or `<|im_start|>` are read as
// such by the model family's tokenizer, or token ids) → engine sequences (prompts × n) → OpenAI text completion or SSE
// chunks. Special tokens are not shown in the text.
import type { Request, Response } from 'express';
import type { WorkerContext } from '../context.js';
import type { FinishReason, GenerationRequest, TokenEvent } from '../engine/types.js';
import { invalidRequest } from '../openai/errors.js';
import { completionRequestFastSchema, completionRequestSchema, type CompletionRequest } from '../openai/schemas.js';
import { SequenceRun } from '../sequences.js';
import { EventStream } from '../sse.js';
import { StopMatcher } from '../stop.js';
import { TokenTextDecoder } from '../token-text.js';
import { withBos, type ModelFamily, type TextTokenizer } from '../family/family.js';
import { HARMONY } from '../tokenizer.js';
import { RequestTiming } from '../server-timing.js';
import { RequestTrace } from '../tracing.js';
import {
  admit,
  maxTokensFor,
  newId,
  parseBody,
  requireEngine,
  samplingOf,
  noOutputError,
  sendError,
  sendTimedJson,
  stopStrings,
  unixSeconds,
  usageOf,
  watchDisconnect,
} from './common.js';

/** gpt-oss: `<|endoftext|>` as well as harmony's answer/tool-call ends (generation_config.json's stop ids). */
const HARMONY_COMPLETION_STOP_TOKENS = [HARMONY.return, HARMONY.call, HARMONY.endOfText];

const completionStopTokens = (family: ModelFamily): number[] =>
  family.kind === 'harmony' ? HARMONY_COMPLETION_STOP_TOKENS : family.stopTokenIds;
const DEFAULT_MAX_TOKENS = 16;

export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Record<string, number>[];
  text_offset: number[];
}

function promptsOf(family: ModelFamily, prompt: CompletionRequest['prompt']): number[][] {
  const text = (p: string): number[] => withBos(family, family.tokenizer.encodeWithSpecials(p));
  if (typeof prompt === 'string') return [text(prompt)];
  if (prompt.length > 0 && typeof prompt[0] === 'number') return [prompt as number[]];
  return (prompt as (string | number[])[]).map((p) => (typeof p === 'string' ? text(p) : p));
}

class CompletionChoice {
  text = '';
  tokens = 0;
  private readonly decoder: TokenTextDecoder;
  private readonly stop: StopMatcher;
  readonly logprobs: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  stoppedByString = false;
  /** The logprobs of the last push() (logprobs on). */
  lastLogprobs?: CompletionLogprobs;

  constructor(
    private readonly tokenizer: TextTokenizer,
    stops: string[],
    private readonly topLogprobs: number | undefined,
  ) {
    this.stop = new StopMatcher(stops);
    this.decoder = new TokenTextDecoder(tokenizer);
  }

  /** Feeds one engine step's tokens; returns the text they make visible. With logprobs on, `lastLogprobs` holds
   * theirs. */
  push(events: TokenEvent[]): string {
    let out = '';
    const lp: CompletionLogprobs | undefined =
      this.topLogprobs !== undefined
        ? { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] }
        : undefined;
    for (const event of events) {
      if (this.stoppedByString) break;
      this.tokens++;
      if (this.tokenizer.isSpecial(event.token)) continue;
      if (lp) {
        const piece = (t: number): string => new TextDecoder().decode(this.tokenizer.tokenBytes(t));
        lp.tokens.push(piece(event.token));
        lp.token_logprobs.push(event.logprob ?? 0);
        lp.top_logprobs.push(
          Object.fromEntries(
            (event.topLogprobs ?? []).slice(0, this.topLogprobs).map((t) => [piece(t.token), t.logprob]),
          ),
        );
        lp.text_offset.push(this.text.length + out.length);
      }
      const { text, stopped } = this.stop.push(this.decoder.push(event.token));
      out += text;
      if (stopped) this.stoppedByString = true;
    }
    this.text += out;
    if (lp) {
      for (const key of ['tokens', 'token_logprobs', 'top_logprobs', 'text_offset'] as const) {
        (this.logprobs[key] as unknown[]).push(...lp[key]);
      }
      this.lastLogprobs = lp;
    }
    return out;
  }

  finish(reason: FinishReason): { text: string; reason: 'stop' | 'length' | 'error' } {
    let text = '';
    if (!this.stoppedByString) {
      text = this.stop.push(this.decoder.flush()).text + this.stop.flush();
      this.text += text;
    }
    const finish = this.stoppedByString
      ? 'stop'
      : reason === 'length'
        ? 'length'
        : reason === 'error'
          ? 'error'
          : 'stop';
    return { text, reason: finish };
  }
}

/** Serializes a streamed text-completion chunk exactly as JSON.stringify writes {id, object: 'text_completion',
 * created, model, choices: [{index, text, logprobs: logprobs ?? null, finish_reason}], usage?: null}, from parts
 * serialized once per request: one string per token and no objects on the hot path. */
export function completionChunkJson(
  id: string,
  created: number,
  model: string,
  includeUsage: boolean,
): (index: number, text: string, finish: string | null, logprobs?: CompletionLogprobs) => string {
  const head = `{"id":${JSON.stringify(id)},"object":"text_completion","created":${JSON.stringify(created)},"model":${JSON.stringify(model)},"choices":[{"index":`;
  const tail = includeUsage ? '}],"usage":null}' : '}]}';
  return (index, text, finish, logprobs) =>
    `${head}${JSON.stringify(index)},"text":${JSON.stringify(text)},"logprobs":${logprobs ? JSON.stringify(logprobs) : 'null'},"finish_reason":${JSON.stringify(finish)}${tail}`;
}

export async function completions(ctx: WorkerContext, req: Request, res: Response): Promise<void> {
  const arrival = performance.now();
  const body = parseBody(completionRequestSchema, req.body, completionRequestFastSchema);
  const engine = requireEngine(ctx, body.model);
  const sampling = samplingOf(body);
  if (body.echo) throw invalidRequest('echo is not supported', 'echo', 'unsupported_parameter');
  if (body.suffix) throw invalidRequest('suffix is not supported', 'suffix', 'unsupported_parameter');
  if (body.best_of && body.best_of !== (body.n ?? 1)) {
    throw invalidRequest('best_of other than n is not supported', 'best_of', 'unsupported_parameter');
  }
  const family = ctx.family!;
  const tokenizer = family.tokenizer;
  const prompts = promptsOf(family, body.prompt);
  prompts.forEach((p, i) => {
    if (p.length === 0) throw invalidRequest('prompt is empty', prompts.length > 1 ? `prompt[${i}]` : 'prompt');
    const bad = p.find((t) => !tokenizer.isValid(t) || t >= engine.info.vocabSize);
    if (bad !== undefined) throw invalidRequest(`token id ${bad} is outside the vocabulary`, 'prompt');
  });
  const maxTokens = prompts.map((p) =>
    maxTokensFor(
      engine,
      p.length,
      body.max_tokens ?? Math.min(DEFAULT_MAX_TOKENS, engine.options.maxContext - p.length),
      'prompt',
      'max_tokens',
    ),
  );
  const n = body.n ?? 1;
  admit(ctx, n * prompts.length);

  const stops = stopStrings(body.stop);
  const topLogprobs = body.logprobs ?? undefined;
  const id = newId('cmpl-');
  const created = unixSeconds();
  const model = ctx.config.servedModelName;
  const stream = body.stream === true;
  const includeUsage = stream && body.stream_options?.include_usage === true;
  const timing = new RequestTiming(arrival, stream, res.locals.requestStart as number | undefined);
  const slots = prompts.flatMap((prompt, p) => Array.from({ length: n }, (_, k) => ({ prompt, p, k })));
  const choices = slots.map(() => new CompletionChoice(tokenizer, stops, topLogprobs));
  const stopTokenIds = completionStopTokens(family);
  const finishReasons: string[] = new Array(slots.length).fill('stop');
  const errors: string[] = [];
  const leave = ctx.state.enter();
  const trace = new RequestTrace(ctx.tracing.tracer, 'completions', req.header('traceparent'), {
    'gen_ai.request.model': model,
    n: slots.length,
  });
  const chunk = completionChunkJson(id, created, model, includeUsage);

  const sse = new EventStream(res, undefined, timing);
  const run = new SequenceRun(
    engine,
    ctx.admission!,
    ctx.metrics,
    trace,
    arrival,
    slots.map(({ prompt, p, k }, index) => {
      const choice = choices[index]!;
      const request: GenerationRequest = {
        prompt,
        maxTokens: maxTokens[p]!,
        ...sampling,
        ...(sampling.seed !== undefined ? { seed: sampling.seed + k } : {}),
        stopTokenIds,
        ...(topLogprobs !== undefined ? { logprobs: Math.max(1, topLogprobs) } : {}),
      };
      return {
        request,
        handlers: {
          onTokens(events) {
            const text = choice.push(events);
            const logprobs = choice.lastLogprobs;
            if (stream && (text || logprobs?.tokens.length)) {
              sse.sendJson(chunk(index, text, null, logprobs));
              timing.wroteOutput();
            }
            if (choice.stoppedByString) run.stop(index);
          },
          onFinish(reason: FinishReason, message?: string) {
            const out = choice.finish(reason);
            finishReasons[index] = out.reason;
            if (reason === 'error') errors.push(message ?? 'engine error');
            if (stream && reason !== 'cancelled') {
              if (reason === 'error') {
                sse.send({
                  error: { message: message ?? 'engine error', type: 'server_error', param: null, code: null },
                });
              } else {
                sse.sendJson(chunk(index, out.text, out.reason));
              }
            }
          },
        },
      };
    }),
    timing,
  );
  const watch = watchDisconnect(req, res, () => run.cancelAll());
  const output = run.whenDone(() => respond(performance.now()));
  run.start();
  if (stream) sse.openSoon();
  await output;

  /** The response's end, when the last sequence finished (`finished`: then). */
  function respond(finished: number): void {
    watch.finished();
    leave();
    const promptTokens = prompts.reduce((sum, p) => sum + p.length, 0);
    const completionTokens = choices.reduce((sum, c) => sum + c.tokens, 0);
    const usage = usageOf(promptTokens, completionTokens, run.cachedPromptTokens);
    trace.end({ 'gen_ai.usage.prompt_tokens': promptTokens, 'gen_ai.usage.completion_tokens': completionTokens });
    if (res.destroyed) return;
    if (stream) {
      if (includeUsage) sse.send({ id, object: 'text_completion', created, model, choices: [], usage });
      sse.end();
      return;
    }
    if (errors.length === slots.length) {
      sendError(res, noOutputError(run.capacityRejection, errors[0]!));
      return;
    }
    sendTimedJson(
      res,
      {
        id,
        object: 'text_completion',
        created,
        model,
        choices: choices.map((c, index) => ({
          index,
          text: c.text,
          logprobs: topLogprobs !== undefined ? c.logprobs : null,
          finish_reason: finishReasons[index],
        })),
        usage,
      },
      timing,
      finished,
    );
  }
}
