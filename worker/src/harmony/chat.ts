// OpenAI chat messages → harmony messages (then tokens). The mapping an OpenAI client expects from a gpt-oss server:
// system/developer prompts become the developer message's `# Instructions`; `tools` its `# Tools`; an assistant
// turn's `reasoning_content` the analysis channel, its `content` the final channel and its `tool_calls` commentary
// messages addressed to `functions.NAME`; a tool result comes back from `functions.NAME` to the assistant.
import type { Tokenizer } from '../tokenizer.js';
import {
  developerMessageText,
  renderConversation,
  systemMessageText,
  type FunctionTool,
  type HarmonyMessage,
  type SystemOptions,
} from './render.js';

export type TextContent = string | { type: string; text?: string }[] | null | undefined;

export interface ChatToolCall {
  id: string;
  type?: 'function';
  function: { name: string; arguments: string };
}

export interface ChatMessage {
  role: 'system' | 'developer' | 'user' | 'assistant' | 'tool';
  content?: TextContent;
  name?: string;
  reasoning_content?: string | null;
  reasoning?: string | null;
  tool_calls?: ChatToolCall[] | null;
  tool_call_id?: string;
}

export class ChatFormatError extends Error {
  constructor(
    message: string,
    readonly param: string,
  ) {
    super(message);
  }
}

export function contentText(content: TextContent, param: string): string {
  if (content === null || content === undefined) return '';
  if (typeof content === 'string') return content;
  return content
    .map((part, i) => {
      if (part.type !== 'text' || typeof part.text !== 'string') {
        throw new ChatFormatError(`content part type '${part.type}' is not supported (only 'text')`, `${param}[${i}]`);
      }
      return part.text;
    })
    .join('\n');
}

export function chatToHarmony(
  messages: readonly ChatMessage[],
  tools: readonly FunctionTool[],
  system: SystemOptions,
): HarmonyMessage[] {
  const instructions: string[] = [];
  const rest: HarmonyMessage[] = [];
  const toolNames = new Map<string, string>();
  messages.forEach((message, i) => {
    const param = `messages[${i}]`;
    switch (message.role) {
      case 'system':
      case 'developer':
        instructions.push(contentText(message.content, `${param}.content`));
        break;
      case 'user':
        rest.push({ role: 'user', content: contentText(message.content, `${param}.content`) });
        break;
      case 'assistant': {
        const reasoning = message.reasoning_content ?? message.reasoning;
        if (reasoning) rest.push({ role: 'assistant', channel: 'analysis', content: reasoning });
        const text = contentText(message.content, `${param}.content`);
        const calls = message.tool_calls ?? [];
        // With tool calls, accompanying text is a commentary preamble; otherwise it is the final answer.
        if (text || calls.length === 0) {
          rest.push({ role: 'assistant', channel: calls.length > 0 ? 'commentary' : 'final', content: text });
        }
        for (const call of calls) {
          toolNames.set(call.id, call.function.name);
          rest.push({
            role: 'assistant',
            channel: 'commentary',
            recipient: `functions.${call.function.name}`,
            contentType: '<|constrain|>json',
            content: call.function.arguments,
          });
        }
        break;
      }
      case 'tool': {
        const name = message.name ?? (message.tool_call_id ? toolNames.get(message.tool_call_id) : undefined);
        if (!name) {
          throw new ChatFormatError(
            `tool message's tool_call_id '${message.tool_call_id ?? ''}' matches no earlier assistant tool call`,
            `${param}.tool_call_id`,
          );
        }
        rest.push({
          role: 'tool',
          author: `functions.${name}`,
          recipient: 'assistant',
          channel: 'commentary',
          content: contentText(message.content, `${param}.content`),
        });
        break;
      }
    }
  });
  const out: HarmonyMessage[] = [{ role: 'system', content: systemMessageText(system, tools.length > 0) }];
  if (instructions.length > 0 || tools.length > 0) {
    out.push({
      role: 'developer',
      content: developerMessageText(instructions.length > 0 ? instructions.join('\n\n') : undefined, tools),
    });
  }
  return out.concat(rest);
}

export function renderChatPrompt(
  tokenizer: Tokenizer,
  messages: readonly ChatMessage[],
  tools: readonly FunctionTool[],
  system: SystemOptions,
): number[] {
  return renderConversation(tokenizer, chatToHarmony(messages, tools, system));
}
