// Our harmony renderer against token ids from the reference renderer (openai-harmony; see make-vectors.py).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderChatPrompt, type ChatMessage } from '../../src/harmony/chat.js';
import type { FunctionTool, ReasoningEffort } from '../../src/harmony/render.js';
import { Tokenizer } from '../../src/tokenizer.js';

interface Vector {
  name: string;
  request: { messages: ChatMessage[]; tools?: FunctionTool[]; reasoning_effort?: ReasoningEffort };
  date: string;
  tokens: number[];
  text: string;
}

const vectors = (
  JSON.parse(readFileSync(join(process.cwd(), 'worker/test/harmony/vectors.json'), 'utf8')) as { cases: Vector[] }
).cases;
const tokenizer = new Tokenizer();

describe('harmony rendering matches the reference renderer', () => {
  it('has the expected set of cases', () => {
    expect(vectors.length).toBeGreaterThanOrEqual(10);
  });

  it.each(vectors.map((v) => [v.name, v] as const))('%s', (_name, vector) => {
    const tokens = renderChatPrompt(tokenizer, vector.request.messages, vector.request.tools ?? [], {
      conversationDate: vector.date,
      reasoningEffort: vector.request.reasoning_effort ?? 'medium',
    });
    // Compare text first for a readable diff, then the exact ids (token boundaries matter too).
    expect(tokenizer.decode(tokens)).toBe(vector.text);
    expect(tokens).toEqual(vector.tokens);
  });
});
