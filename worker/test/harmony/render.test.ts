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

describe('recurring pieces (headers, system and developer messages) are encoded once per tokenizer', () => {
  it('renders every vector the same again, in any order, once their pieces are cached', () => {
    const render = (v: Vector): number[] =>
      renderChatPrompt(tokenizer, v.request.messages, v.request.tools ?? [], {
        conversationDate: v.date,
        reasoningEffort: v.request.reasoning_effort ?? 'medium',
      });
    for (const v of [...vectors].reverse()) expect(render(v)).toEqual(v.tokens);
    // A caller that changes a prompt it got back changes nothing cached.
    const first = render(vectors[0]!);
    first.fill(0);
    expect(render(vectors[0]!)).toEqual(vectors[0]!.tokens);
  });

  it('caches per tokenizer: another tokenizer gets its own encodings', () => {
    const other = new Tokenizer();
    const v = vectors[0]!;
    const options = { conversationDate: v.date, reasoningEffort: v.request.reasoning_effort ?? 'medium' };
    expect(renderChatPrompt(other, v.request.messages, v.request.tools ?? [], options)).toEqual(v.tokens);
  });
});
