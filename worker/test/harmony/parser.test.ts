// The streaming harmony parser: channels, tool calls, and tolerance of stray or misplaced header tokens.
import { HarmonyStreamParser, parseHeader, type ParserEvent } from '../../src/harmony/parser.js';
import { HARMONY, Tokenizer } from '../../src/tokenizer.js';

const tokenizer = new Tokenizer();

function run(tokens: number[]): {
  reasoning: string;
  content: string;
  tools: { name: string; arguments: string }[];
  events: ParserEvent[];
} {
  const parser = new HarmonyStreamParser(tokenizer);
  const events: ParserEvent[] = [];
  for (const t of tokens) events.push(...parser.push(t).events);
  events.push(...parser.finish());
  let reasoning = '';
  let content = '';
  for (const e of events) {
    if (e.type === 'text' && e.route === 'reasoning') reasoning += e.text;
    if (e.type === 'text' && e.route === 'content') content += e.text;
  }
  return { reasoning, content, tools: parser.toolCalls, events };
}

const ids = (text: string): number[] => tokenizer.encodeWithSpecials(text);

describe('HarmonyStreamParser', () => {
  it('routes analysis to reasoning and final to content', () => {
    const out = run(
      ids(
        '<|channel|>analysis<|message|>Let me think.<|end|><|start|>assistant<|channel|>final<|message|>The answer is 4.<|return|>',
      ),
    );
    expect(out.reasoning).toBe('Let me think.');
    expect(out.content).toBe('The answer is 4.');
    expect(out.tools).toEqual([]);
  });

  it('reads a tool call with the recipient after the channel', () => {
    const out = run(
      ids('<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"location":"Paris"}<|call|>'),
    );
    expect(out.tools).toEqual([{ name: 'get_weather', arguments: '{"location":"Paris"}' }]);
    expect(out.events[0]).toEqual({ type: 'tool_call', index: 0, name: 'get_weather' });
    expect(out.content).toBe('');
  });

  it('reads a tool call with the recipient in the role part, after reasoning', () => {
    const out = run(
      ids(
        '<|channel|>analysis<|message|>need tool<|end|><|start|>assistant to=functions.lookup<|channel|>commentary<|message|>{}<|call|>',
      ),
    );
    expect(out.reasoning).toBe('need tool');
    expect(out.tools).toEqual([{ name: 'lookup', arguments: '{}' }]);
  });

  it('treats commentary without a recipient (a preamble) and unknown channels as content', () => {
    expect(run(ids('<|channel|>commentary<|message|>Checking.<|end|>')).content).toBe('Checking.');
    expect(run(ids('<|channel|>weird<|message|>text<|return|>')).content).toBe('text');
  });

  it('degrades a header that cannot be one into content text', () => {
    const out = run(ids('Hello world, no header here.'));
    expect(out.content).toBe('Hello world, no header here.');
  });

  it('closes the message on a misplaced <|channel|> inside content and opens the new channel', () => {
    const out = run(ids('<|channel|>analysis<|message|>thinking<|channel|>final<|message|>done<|return|>'));
    expect(out.reasoning).toBe('thinking');
    expect(out.content).toBe('done');
  });

  it('keeps stray <|message|>, <|constrain|> and reserved tokens inside content as literal text', () => {
    const tokens = [
      ...ids('<|channel|>final<|message|>a'),
      HARMONY.message,
      200100,
      HARMONY.constrain,
      ...ids('b<|return|>'),
    ];
    expect(run(tokens).content).toBe('a<|message|><|reserved_200100|><|constrain|>b');
  });

  it('restarts a header on a stray <|start|> and skips empty messages', () => {
    const out = run(
      ids(
        '<|channel|>anal<|start|>assistant<|channel|>final<|message|><|end|><|start|>assistant<|channel|>final<|message|>ok<|return|>',
      ),
    );
    expect(out.content).toBe('ok');
  });

  it('treats text between messages as an implicit final message', () => {
    const out = run(ids('<|channel|>analysis<|message|>x<|end|>loose text<|return|>'));
    expect(out.reasoning).toBe('x');
    expect(out.content).toBe('loose text');
  });

  it('flushes a pending header as text when generation ends (max_tokens)', () => {
    const out = run(ids('<|channel|>fin'));
    expect(out.content).toBe('<|channel|>fin');
  });

  it('emits a multi-byte character split across tokens once, when complete', () => {
    const byteToken = new Map<number, number>();
    for (let id = 0; id < 2000 && byteToken.size < 256; id++) {
      const b = tokenizer.tokenBytes(id);
      if (b.length === 1) byteToken.set(b[0]!, id);
    }
    const emoji = [...new TextEncoder().encode('😀')].map((b) => byteToken.get(b)!);
    const parser = new HarmonyStreamParser(tokenizer);
    for (const t of ids('<|channel|>final<|message|>')) parser.push(t);
    const texts = emoji.map((t) => parser.push(t).events);
    expect(texts.slice(0, 3).flat()).toEqual([]);
    expect(texts[3]).toEqual([{ type: 'text', route: 'content', text: '😀' }]);
  });

  it('never throws on random token streams', () => {
    let seed = 7;
    const rand = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const specials = [
      HARMONY.start,
      HARMONY.end,
      HARMONY.message,
      HARMONY.channel,
      HARMONY.constrain,
      HARMONY.endOfText,
    ];
    for (let run = 0; run < 50; run++) {
      const parser = new HarmonyStreamParser(tokenizer);
      for (let i = 0; i < 200; i++) {
        const t = rand() < 0.2 ? specials[Math.floor(rand() * specials.length)]! : Math.floor(rand() * 201088);
        expect(() => parser.push(t)).not.toThrow();
      }
      expect(() => parser.finish()).not.toThrow();
    }
  });

  it('parses header text', () => {
    expect(parseHeader('<|channel|>commentary to=functions.f <|constrain|>json')).toEqual({
      channel: 'commentary',
      recipient: 'functions.f',
      contentType: 'json',
    });
    expect(parseHeader(' to=functions.g<|channel|>commentary')).toEqual({
      channel: 'commentary',
      recipient: 'functions.g',
    });
  });
});

describe('HarmonyStreamParser replayed header tokens', () => {
  it('reports header tokens that became content when the header degrades', () => {
    const parser = new HarmonyStreamParser(tokenizer);
    const [t1, t2] = [...ids(' to'), ...ids(' banana')];
    expect(parser.push(t1!).route).toBe('control');
    const out = parser.push(t2!);
    expect(out.route).toBe('content');
    expect(parser.replayedTokens).toEqual([t1]);
  });
});
