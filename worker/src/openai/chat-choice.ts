// One chat choice being generated: harmony parsing, stop strings on the visible content, logprobs, tool calls.
// Produces OpenAI deltas (for streaming) and accumulates the whole message (for non-streaming).
import type { TokenEvent } from '../engine/types.js';
import { HarmonyStreamParser, type ParserEvent } from '../harmony/parser.js';
import { StopMatcher } from '../stop.js';
import { HARMONY, type Tokenizer } from '../tokenizer.js';
import { randomBytes } from 'node:crypto';

export interface TokenLogprob {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

export interface ToolCallDelta {
  index: number;
  id?: string;
  type?: 'function';
  function: { name?: string; arguments: string };
}

export interface ChatDelta {
  content?: string;
  reasoning_content?: string;
  tool_calls?: ToolCallDelta[];
  logprobs?: TokenLogprob[];
}

export type ChatFinishReason = 'stop' | 'length' | 'tool_calls' | 'error';

/** One chat choice being generated, whatever the model's chat format: the chat route drives it. */
export interface ChatChoiceState {
  readonly content: string;
  readonly reasoning: string;
  readonly toolCalls: readonly { id: string; name: string; arguments: string }[];
  readonly logprobs: readonly TokenLogprob[];
  readonly completionTokens: number;
  /** Set when a stop string matched (the caller stops the engine sequence). */
  readonly stoppedByString: boolean;
  /** Tokens the server wrote into the prompt as the start of the assistant's message. */
  prime(tokens: readonly number[]): ChatDelta;
  /** Feeds one engine step's tokens; returns the delta to stream (empty object when nothing is visible yet). */
  push(events: TokenEvent[]): ChatDelta;
  /** End of generation: flushes held text; returns the last delta and the finish reason. */
  finish(engineReason: 'stop' | 'length' | 'cancelled' | 'error'): { delta: ChatDelta; reason: ChatFinishReason };
}

export function tokenLogprob(tokenizer: Pick<Tokenizer, 'tokenBytes'>, event: TokenEvent, top: number): TokenLogprob {
  const entry = (token: number, logprob: number): { token: string; logprob: number; bytes: number[] } => {
    const bytes = tokenizer.tokenBytes(token);
    return { token: new TextDecoder().decode(bytes), logprob, bytes: [...bytes] };
  };
  return {
    ...entry(event.token, event.logprob ?? 0),
    top_logprobs: (event.topLogprobs ?? []).slice(0, top).map((t) => entry(t.token, t.logprob)),
  };
}

export class ChatChoice implements ChatChoiceState {
  private readonly parser: HarmonyStreamParser;
  private readonly stop: StopMatcher;
  content = '';
  reasoning = '';
  readonly toolCalls: { id: string; name: string; arguments: string }[] = [];
  readonly logprobs: TokenLogprob[] = [];
  completionTokens = 0;
  private lastToken = -1;
  /** Recent events, to find the logprobs of header tokens the parser later shows as content. */
  private recent: TokenEvent[] = [];
  /** Set when a stop string matched (the caller stops the engine sequence). */
  stoppedByString = false;

  constructor(
    private readonly tokenizer: Tokenizer,
    stops: string[],
    /** undefined: no logprobs; N: the sampled token plus N alternatives. */
    private readonly topLogprobs: number | undefined,
  ) {
    this.parser = new HarmonyStreamParser(tokenizer);
    this.stop = new StopMatcher(stops);
  }

  /** Feeds tokens the server wrote into the prompt as the start of the assistant's message (a forced tool-call
   * header): they are parsed but are not completion tokens and have no logprobs. */
  prime(tokens: readonly number[]): ChatDelta {
    const delta: ChatDelta = {};
    for (const token of tokens) this.apply(this.parser.push(token).events, delta);
    return delta;
  }

  /** Feeds one engine step's tokens; returns the delta to stream (empty object when nothing is visible yet). */
  push(events: TokenEvent[]): ChatDelta {
    const delta: ChatDelta = {};
    for (const event of events) {
      if (this.stoppedByString) break;
      this.completionTokens++;
      this.lastToken = event.token;
      const { events: parsed, route } = this.parser.push(event.token);
      if (this.topLogprobs !== undefined) {
        this.recent.push(event);
        if (this.recent.length > 64) this.recent.shift();
        this.addLogprobs(this.parser.replayedTokens.length, delta, 1);
        if (route === 'content') this.addLogprobs(1, delta, 0);
      }
      this.apply(parsed, delta);
    }
    return delta;
  }

  /** End of generation: flushes held text; returns the last delta and the finish reason. */
  finish(engineReason: 'stop' | 'length' | 'cancelled' | 'error'): { delta: ChatDelta; reason: ChatFinishReason } {
    const delta: ChatDelta = {};
    if (!this.stoppedByString) {
      const flushed = this.parser.finish();
      if (this.topLogprobs !== undefined) this.addLogprobs(this.parser.replayedTokens.length, delta, 0);
      this.apply(flushed, delta);
      const held = this.stop.flush();
      if (held) this.addContent(held, delta);
    }
    let reason: ChatFinishReason;
    if (this.stoppedByString) reason = 'stop';
    else if (engineReason === 'length') reason = 'length';
    else if (engineReason === 'error') reason = 'error';
    else if (this.lastToken === HARMONY.call && this.toolCalls.length > 0) reason = 'tool_calls';
    else reason = 'stop';
    return { delta, reason };
  }

  /** Logprobs of `count` recent events, ending `skipLast` events before the newest. */
  private addLogprobs(count: number, delta: ChatDelta, skipLast: number): void {
    const end = this.recent.length - skipLast;
    for (const event of this.recent.slice(Math.max(0, end - count), end)) {
      const lp = tokenLogprob(this.tokenizer, event, this.topLogprobs ?? 0);
      this.logprobs.push(lp);
      (delta.logprobs ??= []).push(lp);
    }
  }

  private apply(events: ParserEvent[], delta: ChatDelta): void {
    for (const e of events) {
      if (e.type === 'text' && e.route === 'reasoning') {
        this.reasoning += e.text;
        delta.reasoning_content = (delta.reasoning_content ?? '') + e.text;
      } else if (e.type === 'text') {
        const { text, stopped } = this.stop.push(e.text);
        if (text) this.addContent(text, delta);
        if (stopped) {
          this.stoppedByString = true;
          return;
        }
      } else if (e.type === 'tool_call') {
        const id = `call_${randomBytes(12).toString('hex')}`;
        this.toolCalls.push({ id, name: e.name, arguments: '' });
        (delta.tool_calls ??= []).push({
          index: e.index,
          id,
          type: 'function',
          function: { name: e.name, arguments: '' },
        });
      } else {
        this.toolCalls[e.index]!.arguments += e.text;
        const calls = (delta.tool_calls ??= []);
        const last = calls[calls.length - 1];
        if (last && last.index === e.index) last.function.arguments += e.text;
        else calls.push({ index: e.index, function: { arguments: e.text } });
      }
    }
  }

  private addContent(text: string, delta: ChatDelta): void {
    this.content += text;
    delta.content = (delta.content ?? '') + text;
  }
}

export const isEmptyDelta = (d: ChatDelta): boolean =>
  d.content === undefined &&
  d.reasoning_content === undefined &&
  d.tool_calls === undefined &&
  d.logprobs === undefined;
