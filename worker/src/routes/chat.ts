// POST /v1/chat/completions: the model family's chat prompt (harmony for gpt-oss, ChatML for GGUF models with that
// template) → engine sequences (n) → OpenAI chat completion or SSE chunks.
import type { Request, Response } from 'express';
import type { WorkerContext } from '../context.js';
import type { FinishReason, GenerationRequest } from '../engine/types.js';
import { ChatFormatError, renderChatPrompt } from '../harmony/chat.js';
import { forcedToolCallPrefix, ToolChoiceError } from '../harmony/tool-choice.js';
import type { FunctionTool } from '../harmony/render.js';
import { renderChatMl } from '../family/chatml.js';
import { withBos, type NativeFamily } from '../family/family.js';
import {
  ChatChoice,
  isEmptyDelta,
  type ChatChoiceState,
  type ChatDelta,
  type ChatFinishReason,
} from '../openai/chat-choice.js';
import { PlainChatChoice } from '../openai/plain-chat-choice.js';
import { invalidRequest } from '../openai/errors.js';
import { chatRequestSchema, type ChatRequest } from '../openai/schemas.js';
import { SequenceRun } from '../sequences.js';
import { EventStream } from '../sse.js';
import { HARMONY, type Tokenizer } from '../tokenizer.js';
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

const CHAT_STOP_TOKENS = [HARMONY.return, HARMONY.call];

function toolsOf(body: ChatRequest): FunctionTool[] {
  if (body.tool_choice === 'none' || !body.tools) return [];
  return body.tools.map((t) => ({
    name: t.function.name,
    description: t.function.description,
    parameters: t.function.parameters as FunctionTool['parameters'],
  }));
}

interface PreparedChat {
  prompt: number[];
  /** Tokens the server wrote at the end of the prompt as the start of the reply (a forced tool call). */
  forced: number[];
  stopTokenIds: number[];
  newChoice(stops: string[], topLogprobs: number | undefined): ChatChoiceState;
}

/** gpt-oss: a harmony prompt with tools and reasoning effort; the reply is parsed into channels and tool calls. */
function prepareHarmony(ctx: WorkerContext, tokenizer: Tokenizer, body: ChatRequest): PreparedChat {
  try {
    const tools = toolsOf(body);
    const forced = forcedToolCallPrefix(tokenizer, body.tool_choice, tools);
    const prompt = renderChatPrompt(tokenizer, body.messages, tools, {
      reasoningEffort: body.reasoning_effort ?? ctx.config.defaultReasoningEffort,
      conversationDate: ctx.conversationDate(),
    }).concat(forced);
    return {
      prompt,
      forced,
      stopTokenIds: CHAT_STOP_TOKENS,
      newChoice: (stops, top) => new ChatChoice(tokenizer, stops, top),
    };
  } catch (err) {
    if (err instanceof ChatFormatError || err instanceof ToolChoiceError) throw invalidRequest(err.message, err.param);
    throw err;
  }
}

const unsupported = (param: string, why: string) =>
  invalidRequest(
    `Unsupported parameter: '${param}' is not supported with this model (${why}).`,
    param,
    'unsupported_parameter',
  );

/** A model with its own tokenizer: a ChatML prompt; the reply is plain text. What the format cannot express (tools,
 * reasoning effort) is refused, as OpenAI refuses parameters a model does not support, never silently dropped. */
function prepareNative(family: NativeFamily, body: ChatRequest): PreparedChat {
  if (!family.chat) {
    throw invalidRequest(
      "This model's chat template is not one the worker renders (ChatML): use /v1/completions with a prompt in the model's format.",
      'messages',
      'unsupported_chat_template',
    );
  }
  if (body.reasoning_effort != null) throw unsupported('reasoning_effort', 'it is not a reasoning model');
  if (body.tools && body.tools.length > 0) throw unsupported('tools', 'its chat format has no tool calls');
  if (body.tool_choice != null && body.tool_choice !== 'none') {
    throw unsupported('tool_choice', 'its chat format has no tool calls');
  }
  let prompt: number[];
  try {
    prompt = withBos(family, renderChatMl(family.tokenizer, family.chat, body.messages));
  } catch (err) {
    if (err instanceof ChatFormatError) throw invalidRequest(err.message, err.param);
    throw err;
  }
  const tokenizer = family.tokenizer;
  return {
    prompt,
    forced: [],
    stopTokenIds: family.stopTokenIds,
    newChoice: (stops, top) => new PlainChatChoice(tokenizer, stops, top),
  };
}

export async function chatCompletions(ctx: WorkerContext, req: Request, res: Response): Promise<void> {
  const arrival = performance.now();
  const body = parseBody(chatRequestSchema, req.body);
  const engine = requireEngine(ctx, body.model);
  const sampling = samplingOf(body);
  const family = ctx.family!;
  const { prompt, forced, stopTokenIds, newChoice } =
    family.kind === 'harmony' ? prepareHarmony(ctx, family.tokenizer, body) : prepareNative(family, body);
  const maxParam = body.max_completion_tokens != null ? 'max_completion_tokens' : 'max_tokens';
  const maxTokens = maxTokensFor(
    engine,
    prompt.length,
    body.max_completion_tokens ?? body.max_tokens,
    'messages',
    maxParam,
  );
  const n = body.n ?? 1;
  const topLogprobs = body.logprobs ? (body.top_logprobs ?? 0) : undefined;
  if (!body.logprobs && body.top_logprobs) {
    throw invalidRequest('top_logprobs requires logprobs: true', 'top_logprobs');
  }
  admit(ctx, n);

  const stops = stopStrings(body.stop);
  const id = newId('chatcmpl-');
  const created = unixSeconds();
  const model = ctx.config.servedModelName;
  const stream = body.stream === true;
  const includeUsage = stream && body.stream_options?.include_usage === true;
  const timing = new RequestTiming(arrival, stream, res.locals.requestStart as number | undefined);
  const choices = Array.from({ length: n }, () => newChoice(stops, topLogprobs));
  // The forced tool-call header is part of the prompt; the parser must still see it to route what follows.
  const primed = choices.map((c) => c.prime(forced));
  const finishReasons: (ChatFinishReason | undefined)[] = new Array(n).fill(undefined);
  const errors: string[] = [];
  const leave = ctx.state.enter();
  const trace = new RequestTrace(ctx.tracing.tracer, 'chat.completions', req.header('traceparent'), {
    'gen_ai.request.model': model,
    'gen_ai.request.max_tokens': maxTokens,
    n,
  });

  const chunk = (
    index: number,
    delta: Record<string, unknown>,
    finish: string | null,
    logprobs?: unknown,
  ): unknown => ({
    id,
    object: 'chat.completion.chunk',
    created,
    model,
    choices: [{ index, delta, logprobs: logprobs ?? null, finish_reason: finish }],
    ...(includeUsage ? { usage: null } : {}),
  });
  // Opens with each choice's role chunk and what its parser was primed with (a forced tool call's header).
  const sse = new EventStream(
    res,
    () => {
      choices.forEach((_, index) => sse.send(chunk(index, { role: 'assistant', content: '' }, null)));
      primed.forEach((delta, index) => streamDelta(index, delta, null));
    },
    timing,
  );
  /** Returns whether a chunk was written. */
  const streamDelta = (index: number, delta: ChatDelta, finish: ChatFinishReason | null): boolean => {
    if (isEmptyDelta(delta) && finish === null) return false;
    const { logprobs, ...rest } = delta;
    sse.send(chunk(index, rest, finish, logprobs ? { content: logprobs } : undefined));
    return true;
  };

  const run = new SequenceRun(
    engine,
    ctx.admission!,
    ctx.metrics,
    trace,
    arrival,
    choices.map((choice, index) => {
      const request: GenerationRequest = {
        prompt,
        maxTokens,
        ...sampling,
        ...(sampling.seed !== undefined ? { seed: sampling.seed + index } : {}),
        stopTokenIds,
        ...(topLogprobs !== undefined ? { logprobs: Math.max(1, topLogprobs) } : {}),
      };
      return {
        request,
        handlers: {
          onTokens(events) {
            const delta = choice.push(events);
            if (stream && streamDelta(index, delta, null)) timing.wroteOutput();
            if (choice.stoppedByString) run.stop(index);
          },
          onFinish(reason: FinishReason, message?: string) {
            const { delta, reason: finish } = choice.finish(reason);
            finishReasons[index] = finish;
            if (reason === 'error') errors.push(message ?? 'engine error');
            if (stream && reason !== 'cancelled') {
              if (reason === 'error') {
                sse.send({
                  error: { message: message ?? 'engine error', type: 'server_error', param: null, code: null },
                });
              } else {
                streamDelta(index, delta, finish);
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
    const completionTokens = choices.reduce((sum, c) => sum + c.completionTokens, 0);
    const usage = usageOf(prompt.length, completionTokens, run.cachedPromptTokens);
    trace.end({ 'gen_ai.usage.prompt_tokens': prompt.length, 'gen_ai.usage.completion_tokens': completionTokens });
    if (res.destroyed) return;
    if (stream) {
      if (includeUsage) sse.send({ id, object: 'chat.completion.chunk', created, model, choices: [], usage });
      sse.end();
      return;
    }
    if (errors.length === n) {
      sendError(res, noOutputError(run.capacityRejection, errors[0]!));
      return;
    }
    sendTimedJson(
      res,
      {
        id,
        object: 'chat.completion',
        created,
        model,
        choices: choices.map((c, index) => ({
          index,
          message: {
            role: 'assistant',
            content: c.toolCalls.length > 0 && c.content === '' ? null : c.content,
            ...(c.reasoning ? { reasoning_content: c.reasoning } : {}),
            ...(c.toolCalls.length > 0
              ? {
                  tool_calls: c.toolCalls.map((t) => ({
                    id: t.id,
                    type: 'function',
                    function: { name: t.name, arguments: t.arguments },
                  })),
                }
              : {}),
          },
          logprobs: topLogprobs !== undefined ? { content: c.logprobs } : null,
          finish_reason: finishReasons[index] ?? 'stop',
        })),
        usage,
      },
      timing,
      finished,
    );
  }
}
