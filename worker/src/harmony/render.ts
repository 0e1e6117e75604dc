// Harmony prompt rendering: an OpenAI chat request → o200k_harmony token ids ending with `<|start|>assistant`.
// Each header/content piece is tokenized on its own (as the reference renderer does), so token boundaries match.
import { HARMONY, type Tokenizer } from '../tokenizer.js';
import { schemaToTypeScript, type Json } from './schema-ts.js';

export type ReasoningEffort = 'low' | 'medium' | 'high';

/** One harmony message. `author` is the role, or a tool's name (`functions.get_weather`) for tool results. */
export interface HarmonyMessage {
  role: 'system' | 'developer' | 'user' | 'assistant' | 'tool';
  author?: string;
  recipient?: string;
  channel?: string;
  contentType?: string;
  content: string;
}

export interface FunctionTool {
  name: string;
  description?: string;
  parameters?: Json;
}

export interface SystemOptions {
  modelIdentity?: string;
  knowledgeCutoff?: string;
  /** `Current date:` line; omitted when null/undefined. */
  conversationDate?: string | null;
  reasoningEffort?: ReasoningEffort;
}

export const DEFAULT_MODEL_IDENTITY = 'You are ChatGPT, a large language model trained by OpenAI.';
export const DEFAULT_KNOWLEDGE_CUTOFF = '2024-06';

export function systemMessageText(options: SystemOptions, hasFunctionTools: boolean): string {
  const top = [
    options.modelIdentity ?? DEFAULT_MODEL_IDENTITY,
    `Knowledge cutoff: ${options.knowledgeCutoff ?? DEFAULT_KNOWLEDGE_CUTOFF}`,
  ];
  if (options.conversationDate) top.push(`Current date: ${options.conversationDate}`);
  let channels = '# Valid channels: analysis, commentary, final. Channel must be included for every message.';
  if (hasFunctionTools) channels += "\nCalls to these tools must go to the commentary channel: 'functions'.";
  return [top.join('\n'), `Reasoning: ${options.reasoningEffort ?? 'medium'}`, channels].join('\n\n');
}

export function toolsSection(tools: readonly FunctionTool[]): string {
  const lines = ['## functions\n', 'namespace functions {\n'];
  for (const tool of tools) {
    for (const line of splitLines(tool.description ?? '')) lines.push(`// ${line}`);
    if (tool.parameters !== undefined && tool.parameters !== null) {
      lines.push(`type ${tool.name} = (_: ${schemaToTypeScript(tool.parameters, '')}) => any;\n`);
    } else {
      lines.push(`type ${tool.name} = () => any;\n`);
    }
  }
  lines.push('} // namespace functions');
  return ['# Tools', lines.join('\n')].join('\n\n');
}

/** Rust's `str::lines`: split on \n (dropping a \r before it), no trailing empty line. */
function splitLines(text: string): string[] {
  if (text === '') return [];
  const lines = text.split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
  if (text.endsWith('\n')) lines.pop();
  return lines;
}

export function developerMessageText(instructions: string | undefined, tools: readonly FunctionTool[]): string {
  const sections: string[] = [];
  if (instructions !== undefined) sections.push('# Instructions', instructions);
  if (tools.length > 0) sections.push(toolsSection(tools));
  return sections.join('\n\n');
}

/** Ids of texts that recur from request to request — headers (roles, channels, recipients) and the system and
 * developer messages, which are the same for every request with the same date, reasoning effort and tools — per
 * tokenizer, so a chat request encodes only what is new in it (a one-turn chat renders in ≈ 3 µs instead of ≈ 10 on
 * the development VM; the system message was most of it). Bounded: emptied when full, so arbitrary headers and
 * instructions cannot grow it. */
const RECURRING_CACHE_ENTRIES = 256;
const RECURRING_CACHE_MAX_CHARS = 64 * 1024;
const recurring = new WeakMap<Tokenizer, Map<string, readonly number[]>>();

function encodeRecurring(tokenizer: Tokenizer, text: string): readonly number[] {
  if (text.length > RECURRING_CACHE_MAX_CHARS) return tokenizer.encode(text);
  let cache = recurring.get(tokenizer);
  if (!cache) recurring.set(tokenizer, (cache = new Map()));
  let ids = cache.get(text);
  if (ids === undefined) {
    ids = tokenizer.encode(text);
    if (cache.size >= RECURRING_CACHE_ENTRIES) cache.clear();
    cache.set(text, ids);
  }
  return ids;
}

function pushAll(into: number[], ids: readonly number[]): void {
  for (let i = 0; i < ids.length; i++) into.push(ids[i]!);
}

export function renderMessage(tokenizer: Tokenizer, message: HarmonyMessage, into: number[]): void {
  into.push(HARMONY.start);
  pushAll(into, encodeRecurring(tokenizer, message.role === 'tool' ? (message.author ?? 'tool') : message.role));
  if (message.recipient !== undefined && message.recipient !== 'all') {
    pushAll(into, encodeRecurring(tokenizer, ` to=${message.recipient}`));
  }
  if (message.channel !== undefined) {
    into.push(HARMONY.channel);
    pushAll(into, encodeRecurring(tokenizer, message.channel));
  }
  if (message.contentType !== undefined) {
    if (message.contentType.startsWith('<|constrain|>')) {
      pushAll(into, encodeRecurring(tokenizer, ' '));
      into.push(HARMONY.constrain);
      const rest = message.contentType.slice('<|constrain|>'.length);
      if (rest) pushAll(into, encodeRecurring(tokenizer, rest));
    } else {
      pushAll(into, encodeRecurring(tokenizer, ` ${message.contentType}`));
    }
  }
  into.push(HARMONY.message);
  const system = message.role === 'system' || message.role === 'developer';
  pushAll(into, system ? encodeRecurring(tokenizer, message.content) : tokenizer.encode(message.content));
  into.push(message.role === 'assistant' && message.recipient !== undefined ? HARMONY.call : HARMONY.end);
}

/** Drops chain of thought from earlier turns: when the last assistant message is a final answer, analysis messages
 * before the first final message are not rendered (the reference renderer's rule). */
export function dropEarlierAnalysis(messages: readonly HarmonyMessage[]): HarmonyMessage[] {
  const lastAssistant = [...messages].reverse().find((m) => m.role === 'assistant');
  if (!lastAssistant || lastAssistant.channel !== 'final') return [...messages];
  const firstFinal = messages.findIndex((m) => m.channel === 'final');
  return messages.filter((m, i) => !(i < firstFinal && m.channel === 'analysis'));
}

/** Renders a conversation for the assistant's next turn: the messages, then `<|start|>assistant`. */
export function renderConversation(tokenizer: Tokenizer, messages: readonly HarmonyMessage[]): number[] {
  const out: number[] = [];
  for (const message of dropEarlierAnalysis(messages)) renderMessage(tokenizer, message, out);
  out.push(HARMONY.start);
  pushAll(out, encodeRecurring(tokenizer, 'assistant'));
  return out;
}
