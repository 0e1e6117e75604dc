// o200k_harmony tokenizer: text → ids without special tokens (user text that happens to contain "<|end|>" stays
// text), and per-token bytes for incremental UTF-8 detokenization. The ranks live in typed arrays (o200k.ts), shared
// by every Tokenizer of the process.
import { o200kBase, type O200kBase } from './o200k.js';

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

const SPECIAL_NAMES = new Map<number, string>([...NAMED_SPECIALS].map(([name, id]) => [id, name]));

/** The `<|name|>` of a special or reserved id (o200k_harmony's table), or undefined outside them. */
function specialName(id: number): string | undefined {
  if (!Number.isInteger(id) || id < HARMONY.startOfText || id >= HARMONY_VOCAB_SIZE) return undefined;
  return SPECIAL_NAMES.get(id) ?? `<|reserved_${id}|>`;
}

const encoder = new TextEncoder();

export class Tokenizer {
  private readonly table: O200kBase;
  /** `<|name|>` bytes of special and reserved ids, made on first use. */
  private readonly specialBytes = new Map<number, Uint8Array>();

  constructor() {
    this.table = o200kBase();
  }

  /** Plain text to ids; special-token strings in the text are encoded as ordinary text. */
  encode(text: string): number[] {
    return this.table.encode(text);
  }

  /** Text with special tokens written inline ("<|start|>user<|message|>…") to ids, as a raw completion prompt is read. */
  encodeWithSpecials(text: string): number[] {
    const out: number[] = [];
    let last = 0;
    for (const match of text.matchAll(SPECIAL_PATTERN)) {
      const id = specialId(match[0]);
      if (id === undefined) continue;
      if (match.index > last) this.table.encode(text.slice(last, match.index), out);
      out.push(id);
      last = match.index + match[0].length;
    }
    if (last < text.length) this.table.encode(text.slice(last), out);
    return out;
  }

  /** The bytes of one token (a view into the shared vocabulary: read it, never write it); special and reserved
   * tokens give their `<|name|>` text. Unknown ids throw. */
  tokenBytes(token: number): Uint8Array {
    const { offsets } = this.table;
    if (token >>> 0 === token && token < this.table.size)
      return this.table.bytes.subarray(offsets[token]!, offsets[token + 1]!);
    let bytes = this.specialBytes.get(token);
    if (bytes) return bytes;
    const name = specialName(token);
    if (name === undefined) throw new RangeError(`token id ${token} is outside the o200k_harmony vocabulary`);
    bytes = encoder.encode(name);
    this.specialBytes.set(token, bytes);
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
