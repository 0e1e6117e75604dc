// Streamed detokenization without a TextDecoder call per token. Most tokens' bytes are whole UTF-8 characters; such a
// token's text does not depend on what came before it, so it is decoded once per tokenizer and token and then read
// from a cache (TextDecoder's streaming decode costs ≈ 2 µs a call, most of it in its JS wrapper). The first token
// that is not whole characters (one split across tokens, invalid bytes) hands the rest of the stream to a streaming
// TextDecoder, exactly as before. The output is the same as one TextDecoder's over all the bytes, BOM rule included:
// a U+FEFF is dropped only as the stream's first character.
import { isUtf8 } from 'node:buffer';
import { TextDecoder } from 'node:util';

interface TokenBytes {
  tokenBytes(token: number): Uint8Array;
}

/** Per tokenizer: a token's text when its bytes are whole UTF-8 characters, else null. */
const texts = new WeakMap<TokenBytes, Map<number, string | null>>();
const wholeDecoder = new TextDecoder('utf-8', { ignoreBOM: true });

function textOf(tokenizer: TokenBytes, token: number, bytes: Uint8Array): string | null {
  let cache = texts.get(tokenizer);
  if (!cache) texts.set(tokenizer, (cache = new Map()));
  let text = cache.get(token);
  if (text === undefined) {
    text = isUtf8(bytes) ? wholeDecoder.decode(bytes) : null;
    cache.set(token, text);
  }
  return text;
}

export class TokenTextDecoder {
  private decoder?: TextDecoder;
  /** Whether a character has been produced (after which a U+FEFF is text, not a byte-order mark). */
  private started = false;

  constructor(private readonly tokenizer: TokenBytes) {}

  /** The text that `token` completes (characters split across tokens come out with their last byte). */
  push(token: number): string {
    const bytes = this.tokenizer.tokenBytes(token);
    if (!this.decoder) {
      const text = textOf(this.tokenizer, token, bytes);
      if (text !== null && (this.started || text.charCodeAt(0) !== 0xfeff)) {
        if (text.length > 0) this.started = true;
        return text;
      }
      this.decoder = new TextDecoder('utf-8', { ignoreBOM: this.started });
    }
    return this.decoder.decode(bytes, { stream: true });
  }

  /** What is left at the end of the stream: U+FFFD for an unfinished character, else ''. */
  flush(): string {
    return this.decoder ? this.decoder.decode() : '';
  }
}
