// ChatML prompts (`<|im_start|>role\ncontent<|im_end|>\n` per message, then `<|im_start|>assistant\n`) with the
// model's own tokenizer, as the GGUF chat template of SmolLM2 and other ChatML models renders them. Like llama.cpp,
// which tokenizes the rendered text with special-token parsing, each text between two control tokens is tokenized on
// its own (so the ids are the same); unlike it, message content is tokenized as plain text, so a user who writes
// "<|im_end|>" cannot end their turn early (the harmony path does the same).
import { ChatFormatError, contentText, type ChatMessage } from '../harmony/chat.js';
import type { NativeTextTokenizer } from './family.js';

export interface ChatMlFormat {
  /** The system prompt the template inserts when the first message is not a system message; undefined: none. */
  defaultSystem?: string;
}

// `{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nTEXT<|im_end|>\n' }}` (SmolLM2,
// Qwen2): the newlines may be literal or Jinja escapes.
const DEFAULT_SYSTEM =
  /messages\[0\]\[['"]role['"]\]\s*!=\s*['"]system['"]\s*%\}\s*\{\{\s*'<\|im_start\|>system(?:\n|\\n)((?:[^'\\]|\\.)*?)<\|im_end\|>(?:\n|\\n)'\s*\}\}/;

function unescapeJinja(text: string): string {
  return text.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c === 't' ? '\t' : c));
}

/** The ChatML format a template describes, or undefined when it is not a ChatML template. */
export function chatMlFormat(template: string): ChatMlFormat | undefined {
  const isChatMl =
    template.includes('<|im_start|>') &&
    template.includes('<|im_end|>') &&
    /message\[['"]role['"]\]/.test(template) &&
    /message\[['"]content['"]\]/.test(template) &&
    /<\|im_start\|>assistant(?:\n|\\n)/.test(template);
  if (!isChatMl) return undefined;
  const match = DEFAULT_SYSTEM.exec(template);
  return match ? { defaultSystem: unescapeJinja(match[1]!) } : {};
}

interface Turn {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/** OpenAI messages as ChatML turns; what ChatML cannot express (tool calls and results) is a ChatFormatError. */
export function chatMlTurns(messages: readonly ChatMessage[]): Turn[] {
  return messages.map((message, i) => {
    const param = `messages[${i}]`;
    switch (message.role) {
      case 'system':
      case 'developer': // OpenAI's newer name for the system message
        return { role: 'system', content: contentText(message.content, `${param}.content`) };
      case 'user':
        return { role: 'user', content: contentText(message.content, `${param}.content`) };
      case 'assistant':
        if (message.tool_calls && message.tool_calls.length > 0) {
          throw new ChatFormatError(
            "this model's chat format (ChatML) has no tool calls; send assistant turns as text",
            `${param}.tool_calls`,
          );
        }
        return { role: 'assistant', content: contentText(message.content, `${param}.content`) };
      case 'tool':
        throw new ChatFormatError("this model's chat format (ChatML) has no tool messages", `${param}.role`);
    }
    throw new ChatFormatError(`unknown role`, `${param}.role`);
  });
}

/** The prompt ids of a chat, ending with the generation prompt `<|im_start|>assistant\n`. */
export function renderChatMl(
  tokenizer: NativeTextTokenizer,
  format: ChatMlFormat,
  messages: readonly ChatMessage[],
): number[] {
  const start = tokenizer.specialId('<|im_start|>');
  const end = tokenizer.specialId('<|im_end|>');
  if (start === undefined || end === undefined) {
    throw new Error('the model vocabulary has no <|im_start|>/<|im_end|> control tokens');
  }
  const turns = chatMlTurns(messages);
  if (format.defaultSystem !== undefined && turns[0]?.role !== 'system') {
    turns.unshift({ role: 'system', content: format.defaultSystem });
  }
  const newline = tokenizer.encode('\n');
  const out: number[] = [];
  for (const turn of turns) {
    out.push(start, ...tokenizer.encode(`${turn.role}\n${turn.content}`), end, ...newline);
  }
  out.push(start, ...tokenizer.encode('assistant\n'));
  return out;
}
