// The typed-array o200k tokenizer (worker/src/o200k.ts) against the reference encoder's ids, the tiktoken file it
// is read from, and the gpt-tokenizer package it replaced.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import o200kHarmony from 'gpt-tokenizer/encoding/o200k_harmony';
import { O200K_BASE_RANKS, O200K_BASE_SHA256, O200kBase, o200kVocabPath } from '../src/o200k.js';
import { HARMONY, HARMONY_VOCAB_SIZE, Tokenizer } from '../src/tokenizer.js';

interface EncodeCase {
  text: string;
  tokens: number[];
}

const cases = (
  JSON.parse(readFileSync(join(process.cwd(), 'worker/test/harmony/encode-vectors.json'), 'utf8')) as {
    cases: EncodeCase[];
  }
).cases;
const tokenizer = new Tokenizer();
const plain = { allowedSpecial: new Set<string>(), disallowedSpecial: new Set<string>() };

describe('o200k encoding', () => {
  it('has the reference cases', () => {
    expect(cases.length).toBeGreaterThanOrEqual(300);
  });

  it('encodes every text to the reference ids, and decodes them back', () => {
    const wrong = cases.filter((c) => JSON.stringify(tokenizer.encode(c.text)) !== JSON.stringify(c.tokens));
    expect(wrong.map((c) => ({ text: c.text, got: tokenizer.encode(c.text), want: c.tokens }))).toEqual([]);
    // (TextDecoder drops a leading U+FEFF, here as in every decoder of the worker.)
    for (const c of cases) expect(tokenizer.decode(c.tokens)).toBe(c.text.replace(/^\ufeff/, ''));
  });

  it('agrees with gpt-tokenizer (the encoder it replaced) wherever neither U+FEFF nor U+0085 is involved', () => {
    // The two differ from the reference there: JavaScript's \s, and a BOM token gpt-tokenizer keeps as bytes.
    const texts = cases.map((c) => c.text).filter((t) => !/[\ufeff\x85]/.test(t));
    // Lone surrogates (JavaScript strings only) are encoded as U+FFFD and always merged, as gpt-tokenizer does.
    texts.push('a\ud800b', '\udc00', 'x \ud83d', '\ud83d\ude00\ud83d', "it's\udfff");
    for (const text of texts) expect(tokenizer.encode(text)).toEqual(o200kHarmony.encode(text, plain));
  });

  it('reads special-token text as plain text in encode(), as specials in encodeWithSpecials()', () => {
    expect(tokenizer.encode('<|end|>')).toEqual(o200kHarmony.encode('<|end|>', plain));
    expect(tokenizer.encodeWithSpecials('<|start|>user<|message|>hi<|end|><|nope|>')).toEqual([
      HARMONY.start,
      ...tokenizer.encode('user'),
      HARMONY.message,
      ...tokenizer.encode('hi'),
      HARMONY.end,
      ...tokenizer.encode('<|nope|>'),
    ]);
  });

  it('has the bytes of every rank: rewriting the tiktoken file from them gives tiktoken’s sha256', () => {
    const lines: string[] = [];
    for (let rank = 0; rank < O200K_BASE_RANKS; rank++) {
      lines.push(`${Buffer.from(tokenizer.tokenBytes(rank)).toString('base64')} ${rank}`);
    }
    expect(
      createHash('sha256')
        .update(`${lines.join('\n')}\n`)
        .digest('hex'),
    ).toBe(O200K_BASE_SHA256);
  });

  it('gives special and reserved ids their names and throws outside the vocabulary', () => {
    const text = (id: number): string => new TextDecoder().decode(tokenizer.tokenBytes(id));
    expect(text(HARMONY.startOfText)).toBe('<|startoftext|>');
    expect(text(HARMONY.start)).toBe('<|start|>');
    expect(text(200018)).toBe('<|endofprompt|>');
    expect(text(200001)).toBe('<|reserved_200001|>');
    expect(text(HARMONY_VOCAB_SIZE - 1)).toBe(`<|reserved_${HARMONY_VOCAB_SIZE - 1}|>`);
    for (let id = HARMONY.startOfText; id < HARMONY_VOCAB_SIZE; id++) {
      const theirs = (
        o200kHarmony as unknown as { bytePairEncodingCoreProcessor: { tryDecodeToken(t: number): unknown } }
      ).bytePairEncodingCoreProcessor.tryDecodeToken(id);
      if (text(id) !== theirs) throw new Error(`id ${id}: ${text(id)} vs ${String(theirs)}`);
    }
    for (const bad of [-1, HARMONY_VOCAB_SIZE, 1.5, NaN]) expect(() => tokenizer.tokenBytes(bad)).toThrow(RangeError);
  });

  it('checks the file it reads', () => {
    const file = readFileSync(o200kVocabPath());
    const copy = Buffer.from(file);
    copy[0] = 0x42;
    expect(() => O200kBase.fromTiktoken(copy)).toThrow(/sha256/);
    // Unchecked, a file whose ranks are not its line numbers is refused.
    expect(() => O200kBase.fromTiktoken(Buffer.from('IQ== 0\nIg== 2\n'), null)).toThrow(/rank 2 on line 2/);
    const tiny = O200kBase.fromTiktoken(Buffer.from('YQ== 0\nYg== 1\nYWI= 2\n'), null);
    expect(tiny.size).toBe(3);
    expect(tiny.encode('abab')).toEqual([2, 2]);
    expect(tiny.rankOf(Buffer.from('ab'))).toBe(2);
    expect(tiny.rankOf(Buffer.from('ba'))).toBeUndefined();
  });

  it('honours MODELSERVE_O200K_VOCAB', () => {
    const saved = process.env.MODELSERVE_O200K_VOCAB;
    try {
      process.env.MODELSERVE_O200K_VOCAB = '/elsewhere/o200k_base.tiktoken';
      expect(o200kVocabPath()).toBe('/elsewhere/o200k_base.tiktoken');
    } finally {
      if (saved === undefined) delete process.env.MODELSERVE_O200K_VOCAB;
      else process.env.MODELSERVE_O200K_VOCAB = saved;
    }
    expect(o200kVocabPath()).toMatch(/gpt-tokenizer\/data\/o200k_base\.tiktoken$/);
  });
});
