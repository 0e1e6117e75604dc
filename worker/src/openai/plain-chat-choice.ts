// One chat choice of a model whose reply is plain text (ChatML): the generated tokens' bytes through one streaming
// UTF-8 decoder (a character split across tokens appears once complete), control tokens such as the final
// `<|im_end|>` left out of the text, stop strings on the text, logprobs of the visible tokens.
import type { TokenEvent } from '../engine/types.js';
import type { NativeTextTokenizer } from '../family/family.js';
import { StopMatcher } from '../stop.js';
import {
  tokenLogprob,
  type ChatChoiceState,
  type ChatDelta,
  type ChatFinishReason,
  type TokenLogprob,
} from './chat-choice.js';

export class PlainChatChoice implements ChatChoiceState {
  content = '';
  readonly reasoning = '';
  readonly toolCalls: { id: string; name: string; arguments: string }[] = [];
  readonly logprobs: TokenLogprob[] = [];
  completionTokens = 0;
  stoppedByString = false;
  private readonly decoder = new TextDecoder();
  private readonly stop: StopMatcher;

  constructor(
    private readonly tokenizer: NativeTextTokenizer,
    stops: string[],
    /** undefined: no logprobs; N: the sampled token plus N alternatives. */
    private readonly topLogprobs: number | undefined,
  ) {
    this.stop = new StopMatcher(stops);
  }

  prime(): ChatDelta {
    return {};
  }

  push(events: TokenEvent[]): ChatDelta {
    const delta: ChatDelta = {};
    for (const event of events) {
      if (this.stoppedByString) break;
      this.completionTokens++;
      if (this.tokenizer.isSpecial(event.token)) continue;
      if (this.topLogprobs !== undefined) {
        const lp = tokenLogprob(this.tokenizer, event, this.topLogprobs);
        this.logprobs.push(lp);
        (delta.logprobs ??= []).push(lp);
      }
      this.addText(this.decoder.decode(this.tokenizer.textBytes(event.token), { stream: true }), delta);
    }
    return delta;
  }

  finish(engineReason: 'stop' | 'length' | 'cancelled' | 'error'): { delta: ChatDelta; reason: ChatFinishReason } {
    const delta: ChatDelta = {};
    if (!this.stoppedByString) {
      // An incomplete UTF-8 sequence at the end becomes U+FFFD, then held-back text is released.
      this.addText(this.decoder.decode(), delta);
      if (!this.stoppedByString) this.addVisible(this.stop.flush(), delta);
    }
    let reason: ChatFinishReason;
    if (this.stoppedByString) reason = 'stop';
    else if (engineReason === 'length') reason = 'length';
    else if (engineReason === 'error') reason = 'error';
    else reason = 'stop';
    return { delta, reason };
  }

  private addText(text: string, delta: ChatDelta): void {
    if (!text) return;
    const out = this.stop.push(text);
    this.addVisible(out.text, delta);
    if (out.stopped) this.stoppedByString = true;
  }

  private addVisible(text: string, delta: ChatDelta): void {
    if (!text) return;
    this.content += text;
    delta.content = (delta.content ?? '') + text;
  }
}
