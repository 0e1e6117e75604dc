// Streaming parser of the assistant's harmony output (the tokens after `<|start|>assistant`). It routes text to
// reasoning (analysis), content (final, or commentary without a recipient) and tool calls (a recipient
// `functions.NAME`). Models emit stray or misplaced header tokens; the parser never throws: a header that cannot be a
// header becomes content text, a misplaced `<|start|>`/`<|channel|>` closes the current message and opens a new one,
// and other special tokens inside a message are kept as their literal text.
import { HARMONY, type Tokenizer } from '../tokenizer.js';

export type Route = 'reasoning' | 'content' | 'tool' | 'control';

export type ParserEvent =
  | { type: 'text'; route: 'reasoning' | 'content'; text: string }
  | { type: 'tool_call'; index: number; name: string }
  | { type: 'tool_args'; index: number; text: string };

export interface ParsedHeader {
  channel?: string;
  recipient?: string;
  contentType?: string;
}

/** A real header is a few tokens (`<|channel|>commentary to=functions.x <|constrain|>json`); past this it is noise. */
const MAX_HEADER_TOKENS = 24;
const SPECIAL_TEXT = new Map<number, string>([
  [HARMONY.channel, '<|channel|>'],
  [HARMONY.constrain, '<|constrain|>'],
]);

type State = 'header' | 'content' | 'between';

export class HarmonyStreamParser {
  private state: State = 'header';
  private headerTokens: number[] = [];
  private header: ParsedHeader = {};
  private decoder = new TextDecoder();
  private toolIndex = -1;
  /** Tool calls opened so far (name, arguments) in order. */
  readonly toolCalls: { name: string; arguments: string }[] = [];
  private done = false;
  /** Header tokens that the last push() or finish() turned into content (for logprobs), oldest first. */
  replayedTokens: number[] = [];

  constructor(private readonly tokenizer: Tokenizer) {}

  /** Feeds one generated token; returns the events it completes and the route of the token (for logprobs). */
  push(token: number): { events: ParserEvent[]; route: Route } {
    const events: ParserEvent[] = [];
    this.replayedTokens = [];
    if (this.done) return { events, route: 'control' };
    if (token === HARMONY.return || token === HARMONY.call) {
      this.closeMessage(events);
      this.done = true;
      return { events, route: 'control' };
    }
    switch (this.state) {
      case 'between':
        if (token === HARMONY.start) {
          this.beginHeader();
          return { events, route: 'control' };
        }
        if (token === HARMONY.channel) {
          // `<|start|>assistant` omitted: the model went straight to a channel.
          this.beginHeader();
          this.headerTokens.push(token);
          return { events, route: 'control' };
        }
        if (token === HARMONY.end) return { events, route: 'control' };
        // Text outside any message: degrade to an implicit final message.
        this.header = {};
        this.state = 'content';
        return this.contentToken(token, events);
      case 'header':
        return this.headerToken(token, events);
      case 'content':
        if (token === HARMONY.end) {
          this.closeMessage(events);
          this.state = 'between';
          return { events, route: 'control' };
        }
        if (token === HARMONY.start) {
          this.closeMessage(events);
          this.beginHeader();
          return { events, route: 'control' };
        }
        if (token === HARMONY.channel) {
          // A new channel without `<|end|><|start|>assistant`: close the message and read a header.
          this.closeMessage(events);
          this.beginHeader();
          this.headerTokens.push(token);
          return { events, route: 'control' };
        }
        return this.contentToken(token, events);
    }
  }

  /** End of generation: flushes a pending header as text and any partial UTF-8. */
  finish(): ParserEvent[] {
    const events: ParserEvent[] = [];
    this.replayedTokens = [];
    if (this.state === 'header' && this.headerTokens.length > 0) this.degradeHeader(events);
    this.closeMessage(events);
    this.done = true;
    return events;
  }

  /** The route text of the current message goes to. */
  get route(): 'reasoning' | 'content' | 'tool' {
    return routeOf(this.header);
  }

  private beginHeader(): void {
    this.state = 'header';
    this.headerTokens = [];
    this.header = {};
  }

  private headerToken(token: number, events: ParserEvent[]): { events: ParserEvent[]; route: Route } {
    if (token === HARMONY.message) {
      this.header = parseHeader(this.headerText(this.headerTokens));
      this.headerTokens = [];
      this.state = 'content';
      this.decoder = new TextDecoder();
      if (routeOf(this.header) === 'tool') {
        this.toolIndex = this.toolCalls.length;
        const name = this.header.recipient!.slice('functions.'.length);
        this.toolCalls.push({ name, arguments: '' });
        events.push({ type: 'tool_call', index: this.toolIndex, name });
      }
      return { events, route: 'control' };
    }
    if (token === HARMONY.start) {
      // A header restarted: drop what was read (it was never shown).
      this.beginHeader();
      return { events, route: 'control' };
    }
    if (token === HARMONY.end) {
      // An empty message; nothing to show.
      this.state = 'between';
      this.headerTokens = [];
      return { events, route: 'control' };
    }
    this.headerTokens.push(token);
    if (this.headerTokens.length > MAX_HEADER_TOKENS || !plausibleHeader(this.headerText(this.headerTokens))) {
      this.degradeHeader(events);
      // The current token is reported through `route`; the earlier header tokens through replayedTokens.
      this.replayedTokens.pop();
      return { events, route: 'content' };
    }
    return { events, route: 'control' };
  }

  /** The tokens read as a header were not one: show them as content of an implicit final message. */
  private degradeHeader(events: ParserEvent[]): void {
    const tokens = this.headerTokens;
    this.replayedTokens = [...tokens];
    this.headerTokens = [];
    this.header = {};
    this.state = 'content';
    this.decoder = new TextDecoder();
    for (const t of tokens) this.appendText(this.tokenText(t), events);
  }

  private contentToken(token: number, events: ParserEvent[]): { events: ParserEvent[]; route: Route } {
    this.appendText(this.tokenText(token), events);
    return { events, route: routeOf(this.header) };
  }

  private tokenText(token: number): string {
    return this.decoder.decode(this.tokenizer.tokenBytes(token), { stream: true });
  }

  private appendText(text: string, events: ParserEvent[]): void {
    if (!text) return;
    const route = routeOf(this.header);
    if (route === 'tool') {
      this.toolCalls[this.toolIndex]!.arguments += text;
      events.push({ type: 'tool_args', index: this.toolIndex, text });
    } else {
      const last = events[events.length - 1];
      if (last && last.type === 'text' && last.route === route) last.text += text;
      else events.push({ type: 'text', route, text });
    }
  }

  private closeMessage(events: ParserEvent[]): void {
    if (this.state === 'content') this.appendText(this.decoder.decode(), events);
    this.decoder = new TextDecoder();
  }

  private headerText(tokens: readonly number[]): string {
    const decoder = new TextDecoder();
    let text = '';
    for (const t of tokens) {
      const special = SPECIAL_TEXT.get(t);
      text += special ?? decoder.decode(this.tokenizer.tokenBytes(t), { stream: true });
    }
    return text + decoder.decode();
  }
}

function routeOf(header: ParsedHeader): 'reasoning' | 'content' | 'tool' {
  if (header.recipient?.startsWith('functions.') && header.recipient.length > 'functions.'.length) return 'tool';
  if (header.channel === 'analysis') return 'reasoning';
  return 'content';
}

const HEADER_PREFIX =
  /^(assistant)?\s*(to=[\w.\-:/]*\s*)?(<\|channel\|>\w*\s*)?(to=[\w.\-:/]*\s*)?(<\|constrain\|>\w*\s*)?(t|to)?$/;

/** Could this text still grow into a header like ` to=functions.x<|channel|>commentary <|constrain|>json`? */
function plausibleHeader(text: string): boolean {
  return HEADER_PREFIX.test(text);
}

/** Header text (specials as their names) → channel, recipient, content type. */
export function parseHeader(text: string): ParsedHeader {
  const header: ParsedHeader = {};
  let rest = text.replace(/^assistant/, '');
  const channel = /<\|channel\|>([^\s<]*)/.exec(rest);
  if (channel) {
    if (channel[1]) header.channel = channel[1];
    rest = rest.slice(0, channel.index) + ' ' + rest.slice(channel.index + channel[0].length);
  }
  const constrain = /<\|constrain\|>(\S*)/.exec(rest);
  if (constrain) {
    if (constrain[1]) header.contentType = constrain[1];
    rest = rest.slice(0, constrain.index) + ' ' + rest.slice(constrain.index + constrain[0].length);
  }
  const recipient = /(?:^|\s)to=(\S+)/.exec(rest);
  if (recipient) header.recipient = recipient[1];
  return header;
}
