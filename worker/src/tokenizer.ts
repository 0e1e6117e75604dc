// o200k_harmony tokenizer over the npm `gpt-tokenizer` package: text → ids without special tokens (user text that
// happens to contain "<|end|>" stays text), and per-token bytes for incremental UTF-8 detokenization.
import o200kHarmony from 'gpt-tokenizer/encoding/o200k_harmony';

export const HARMONY = {
  startOfText: 199998,
  endOfText: 199999,
  return: 200002,
  constrain: 200003,
  channel: 200005,
  start: 200006,
  end: 200007,
  message: 200008,
  call: 200012,
} as const;

/** The vocabulary size of o200k_harmony (ids 0 … 201087). */
export const HARMONY_VOCAB_SIZE = 201088;

const SPECIAL_PATTERN = /<\|[a-z_0-9]+\|>/g;
const NAMED_SPECIALS = new Map<string, number>([
  ['<|startoftext|>', HARMONY.startOfText],
  ['<|endoftext|>', HARMONY.endOfText],
  ['<|return|>', HARMONY.return],
  ['<|constrain|>', HARMONY.constrain],
  ['<|channel|>', HARMONY.channel],
  ['<|start|>', HARMONY.start],
  ['<|end|>', HARMONY.end],
  ['<|message|>', HARMONY.message],
  ['<|call|>', HARMONY.call],
  ['<|endofprompt|>', 200018],
]);

function specialId(name: string): number | undefined {
  const named = NAMED_SPECIALS.get(name);
  if (named !== undefined) return named;
  const reserved = /^<\|reserved_(\d+)\|>$/.exec(name);
  if (!reserved) return undefined;
  const id = Number(reserved[1]);
  return id >= 200000 && id < HARMONY_VOCAB_SIZE && id !== 200018 ? id : undefined;
}

interface BpeCore {
  tryDecodeToken(token: number): string | Uint8Array | undefined;
}

const encoder = new TextEncoder();

export class Tokenizer {
  private readonly core: BpeCore;
  private readonly bytesCache = new Map<number, Uint8Array>();

  constructor() {
    // The per-token byte decoder is not part of gpt-tokenizer's typed API; check its shape once, loudly.
    const core = (o200kHarmony as unknown as { bytePairEncodingCoreProcessor?: BpeCore }).bytePairEncodingCoreProcessor;
    if (!core || typeof core.tryDecodeToken !== 'function') {
      throw new Error('gpt-tokenizer: o200k_harmony has no per-token byte decoder (unsupported gpt-tokenizer version)');
    }
    this.core = core;
  }

  /** Plain text to ids; special-token strings in the text are encoded as ordinary text. */
  encode(text: string): number[] {
    return o200kHarmony.encode(text, { allowedSpecial: new Set(), disallowedSpecial: new Set() });
  }

  /** Text with special tokens written inline ("<|start|>user<|message|>…") to ids, as a raw completion prompt is read. */
  encodeWithSpecials(text: string): number[] {
    const out: number[] = [];
    let last = 0;
    for (const match of text.matchAll(SPECIAL_PATTERN)) {
      const id = specialId(match[0]);
      if (id === undefined) continue;
      if (match.index > last) out.push(...this.encode(text.slice(last, match.index)));
      out.push(id);
      last = match.index + match[0].length;
    }
    if (last < text.length) out.push(...this.encode(text.slice(last)));
    return out;
  }

  /** The bytes of one token; special and reserved tokens give their `<|name|>` text. Unknown ids throw. */
  tokenBytes(token: number): Uint8Array {
    let bytes = this.bytesCache.get(token);
    if (bytes) return bytes;
    const decoded = this.core.tryDecodeToken(token);
    if (decoded === undefined) throw new RangeError(`token id ${token} is outside the o200k_harmony vocabulary`);
    bytes = typeof decoded === 'string' ? encoder.encode(decoded) : decoded;
    this.bytesCache.set(token, bytes);
    return bytes;
  }

  /** Whole-sequence decode (invalid UTF-8 becomes U+FFFD). */
  decode(tokens: readonly number[]): string {
    const decoder = new TextDecoder();
    let out = '';
    for (const t of tokens) out += decoder.decode(this.tokenBytes(t), { stream: true });
    return out + decoder.decode();
  }

  isValid(token: number): boolean {
    return Number.isInteger(token) && token >= 0 && token < HARMONY_VOCAB_SIZE;
  }

  /** Special and reserved tokens (ids from `<|startoftext|>` on): not part of a completion's text. */
  isSpecial(token: number): boolean {
    return token >= HARMONY.startOfText;
  }
}

/** Incremental detokenizer: feeds token bytes through one streaming UTF-8 decoder so a character split across tokens
 * is emitted once complete. */
export class IncrementalDecoder {
  private readonly decoder = new TextDecoder();
  constructor(private readonly tokenizer: Tokenizer) {}
  push(token: number): string {
    return this.decoder.decode(this.tokenizer.tokenBytes(token), { stream: true });
  }
  flush(): string {
    return this.decoder.decode();
  }
}
