// Model families: how a model's text becomes tokens and back, which tokens end a generation, and how a chat becomes a
// prompt. gpt-oss checkpoints carry no tokenizer: they use o200k_harmony (tokenizer.ts) and harmony chats
// (harmony/). GGUF models carry their own tokenizer and chat template, which the engine exposes (engine.h
// ms_model_tokenize / ms_model_token_bytes / ms_model_chat_template): they use it, with ChatML chats when the
// template is ChatML (chatml.ts).
import type { Engine, ModelTokenizer } from '../engine/types.js';
import type { Tokenizer } from '../tokenizer.js';
import { chatMlFormat, type ChatMlFormat } from './chatml.js';

/** What the endpoints need of a tokenizer. */
export interface TextTokenizer {
  /** Plain text to ids: special-token text stays text. */
  encode(text: string): number[];
  /** Text in which special tokens are written inline (a raw completion prompt) to ids. */
  encodeWithSpecials(text: string): number[];
  /** One token's bytes; special tokens give their text (for logprobs). */
  tokenBytes(token: number): Uint8Array;
  /** Control tokens: never part of the generated text. */
  isSpecial(token: number): boolean;
  isValid(token: number): boolean;
}

export interface HarmonyFamily {
  kind: 'harmony';
  tokenizer: Tokenizer;
}

export interface NativeFamily {
  kind: 'native';
  tokenizer: NativeTextTokenizer;
  /** Generation ends after one of these (the model's eos and its end-of-turn / end-of-text control tokens). */
  stopTokenIds: number[];
  /** How /v1/chat/completions renders a chat; undefined when the model's template is not one the worker renders. */
  chat?: ChatMlFormat;
  /** Put before every text prompt and rendered chat, where the model's tokenizer asks for it (add_bos_token). */
  bosTokenId?: number;
}

export type ModelFamily = HarmonyFamily | NativeFamily;

/** The engine's tokenizer as a TextTokenizer. */
export class NativeTextTokenizer implements TextTokenizer {
  private readonly special = new Map<number, boolean>();

  constructor(
    readonly model: ModelTokenizer,
    readonly vocabSize: number,
  ) {}

  encode(text: string): number[] {
    return this.model.tokenize(text, false);
  }

  encodeWithSpecials(text: string): number[] {
    return this.model.tokenize(text, true);
  }

  tokenBytes(token: number): Uint8Array {
    return this.model.tokenBytes(token, true);
  }

  /** The bytes a token adds to the text: none for control tokens. */
  textBytes(token: number): Uint8Array {
    return this.model.tokenBytes(token, false);
  }

  isSpecial(token: number): boolean {
    let special = this.special.get(token);
    if (special === undefined) {
      // Control tokens have bytes only when asked for their text (ms_model_token_bytes with special = 1).
      special = this.model.tokenBytes(token, false).length === 0 && this.model.tokenBytes(token, true).length > 0;
      this.special.set(token, special);
    }
    return special;
  }

  isValid(token: number): boolean {
    return Number.isInteger(token) && token >= 0 && token < this.vocabSize;
  }

  /** The id of a control token written as `text`, or undefined when the vocabulary has no such single token. */
  specialId(text: string): number | undefined {
    const ids = this.model.tokenize(text, true);
    return ids.length === 1 && this.isSpecial(ids[0]!) ? ids[0] : undefined;
  }
}

/** Control tokens that end a turn or a text in the templates we know (llama.cpp treats them as end-of-generation). */
const END_TOKEN_TEXTS = ['<|im_end|>', '<|endoftext|>', '<|eot_id|>', '<|end_of_text|>'];

/** The family of a loaded engine: its own tokenizer when it has one, else o200k_harmony. */
export function familyOf(engine: Engine, harmony: Tokenizer): ModelFamily {
  if (!engine.tokenizer) return { kind: 'harmony', tokenizer: harmony };
  const tokenizer = new NativeTextTokenizer(engine.tokenizer, engine.info.vocabSize);
  const stops = new Set<number>();
  if (tokenizer.isValid(engine.info.eosTokenId)) stops.add(engine.info.eosTokenId);
  for (const text of END_TOKEN_TEXTS) {
    const id = tokenizer.specialId(text);
    if (id !== undefined) stops.add(id);
  }
  const chat = chatMlFormat(engine.tokenizer.chatTemplate);
  const bos = engine.info.addBosToken && tokenizer.isValid(engine.info.bosTokenId) ? engine.info.bosTokenId : undefined;
  return {
    kind: 'native',
    tokenizer,
    stopTokenIds: [...stops],
    ...(chat ? { chat } : {}),
    ...(bos !== undefined ? { bosTokenId: bos } : {}),
  };
}

/** A prompt the worker built from text (a text completion prompt, a rendered chat), with the model's BOS in front
 * where its tokenizer asks for one. Prompts given as token ids are the caller's and are left as they are. */
export function withBos(family: ModelFamily, ids: number[]): number[] {
  return family.kind === 'native' && family.bosTokenId !== undefined ? [family.bosTokenId, ...ids] : ids;
}

/** A short description for the `ready` log line. */
export function describeFamily(family: ModelFamily): string {
  if (family.kind === 'harmony') return 'harmony (o200k_harmony)';
  return `model tokenizer, ${family.chat ? 'ChatML chat' : 'no chat template the worker renders'}, stop ids ${family.stopTokenIds.join(',')}`;
}
