// TokenTextDecoder must produce, token by token, exactly what one streaming TextDecoder over the same bytes produces:
// characters split across tokens, invalid bytes, byte-order marks first and later, empty tokens.
import { TokenTextDecoder } from '../src/token-text.js';

const utf8 = (s: string): number[] => [...new TextEncoder().encode(s)];
// Token id → bytes: whole characters, pieces of characters, invalid bytes, BOMs, nothing.
const VOCAB: number[][] = [
  utf8('Hello'),
  utf8(' world'),
  utf8('é'),
  utf8('中文'),
  utf8('😀'),
  [0xe4],
  [0xb8, 0xad],
  [0xf0, 0x9f],
  [0x98, 0x80],
  [0xff],
  [0x80],
  [0xc3],
  [0xef, 0xbb, 0xbf],
  [0xef, 0xbb, 0xbf, 0x41],
  [0xef],
  [0xbb, 0xbf],
  [],
  utf8('\u2028"\\'),
];
const tokenizer = { tokenBytes: (t: number): Uint8Array => Uint8Array.from(VOCAB[t]!) };

function reference(tokens: number[]): string[] {
  const d = new TextDecoder();
  return [...tokens.map((t) => d.decode(tokenizer.tokenBytes(t), { stream: true })), d.decode()];
}

function decoded(tokens: number[]): string[] {
  const d = new TokenTextDecoder(tokenizer);
  return [...tokens.map((t) => d.push(t)), d.flush()];
}

describe('TokenTextDecoder', () => {
  it.each([
    [[0, 1, 2, 3, 4]],
    [[0, 5, 6, 1]],
    [[7, 8, 0]],
    [[0, 7]],
    [[9, 0, 10, 11]],
    [[12, 0]],
    [[13, 12]],
    [[0, 12]],
    [[16, 12, 0]],
    [[16, 16, 0, 12]],
    [[14, 15, 12]],
    [[0, 14, 15]],
    [[5, 12]],
    [[17, 4, 11]],
  ])('%j decodes as one TextDecoder does', (tokens) => {
    expect(decoded(tokens)).toEqual(reference(tokens));
  });

  it('agrees with TextDecoder on random token streams', () => {
    let seed = 12345;
    const next = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let i = 0; i < 2000; i++) {
      const tokens = Array.from({ length: 1 + next(12) }, () => next(VOCAB.length));
      expect(decoded(tokens)).toEqual(reference(tokens));
    }
  });
});
