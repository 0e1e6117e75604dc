// Pure parts of the model families: ChatML detection and its default system prompt from chat templates, and the
// spec.model.architecture check. The renderer over the real tokenizer is in smollm2.int.test.ts.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { architectureMismatch, architectureName, readExpectedArchitecture } from '../src/family/architecture.js';
import { chatMlFormat, chatMlTurns } from '../src/family/chatml.js';
import { withBos, type ModelFamily } from '../src/family/family.js';

// The shape of SmolLM2's tokenizer.chat_template (literal newlines inside the Jinja strings).
const SMOLLM2 =
  "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are kind.<|im_end|>\n' }}{% endif %}" +
  "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

describe('chatMlFormat', () => {
  it('reads the default system prompt with literal or escaped newlines', () => {
    expect(chatMlFormat(SMOLLM2)).toEqual({ defaultSystem: 'You are kind.' });
    const escaped = SMOLLM2.replaceAll('\n', '\\n').replace('You are kind.', "It\\'s me.");
    expect(chatMlFormat(escaped)).toEqual({ defaultSystem: "It's me." });
  });

  it('finds no default system prompt where the template has none', () => {
    const plain = SMOLLM2.replace(/\{% if loop\.first[\s\S]*?\{% endif %\}/, '');
    expect(chatMlFormat(plain)).toEqual({});
  });

  it('is undefined for templates that are not ChatML', () => {
    expect(chatMlFormat('')).toBeUndefined();
    const llama3 =
      "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}{% endfor %}";
    expect(chatMlFormat(llama3)).toBeUndefined();
  });
});

describe('chatMlTurns', () => {
  it('maps developer to system and refuses tool turns by param', () => {
    expect(chatMlTurns([{ role: 'developer', content: 'x' }])).toEqual([{ role: 'system', content: 'x' }]);
    expect(() => chatMlTurns([{ role: 'tool', content: 'x', tool_call_id: 'c' }])).toThrow(
      expect.objectContaining({ param: 'messages[0].role' }),
    );
    expect(() =>
      chatMlTurns([
        { role: 'user', content: 'x' },
        { role: 'assistant', content: null, tool_calls: [{ id: 'c', function: { name: 'f', arguments: '{}' } }] },
      ]),
    ).toThrow(expect.objectContaining({ param: 'messages[1].tool_calls' }));
  });
});

describe('spec.model.architecture', () => {
  it('names engine architectures as Hugging Face does', () => {
    expect(architectureName({ architecture: 'llama' })).toBe('LlamaForCausalLM');
    expect(architectureName({ architecture: 'gpt_oss' })).toBe('GptOssForCausalLM');
  });

  it('passes when unset or equal and names both when they differ', () => {
    expect(architectureMismatch(undefined, { architecture: 'llama' })).toBeUndefined();
    expect(architectureMismatch('LlamaForCausalLM', { architecture: 'llama' })).toBeUndefined();
    expect(architectureMismatch('GptOssForCausalLM', { architecture: 'llama' })).toMatch(
      /GptOssForCausalLM.*LlamaForCausalLM/,
    );
  });

  it("reads model.architecture from the operator's engine.json", () => {
    const dir = mkdtempSync(join(tmpdir(), 'arch-'));
    try {
      const file = join(dir, 'engine.json');
      expect(readExpectedArchitecture(file)).toBeUndefined();
      writeFileSync(file, JSON.stringify({ model: { name: 'm', source: 'file:///x' }, engine: {} }));
      expect(readExpectedArchitecture(file)).toBeUndefined();
      writeFileSync(file, JSON.stringify({ model: { architecture: 'LlamaForCausalLM' } }));
      expect(readExpectedArchitecture(file)).toBe('LlamaForCausalLM');
      writeFileSync(file, '{');
      expect(() => readExpectedArchitecture(file)).toThrow(/engine\.json/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('withBos', () => {
  const native = (bosTokenId?: number): ModelFamily =>
    ({
      kind: 'native',
      stopTokenIds: [],
      ...(bosTokenId !== undefined ? { bosTokenId } : {}),
    }) as unknown as ModelFamily;

  it("puts the model's BOS in front where its tokenizer asks for one", () => {
    expect(withBos(native(7), [1, 2])).toEqual([7, 1, 2]);
    expect(withBos(native(0), [])).toEqual([0]);
  });

  it('leaves prompts alone for models without add_bos_token and for harmony', () => {
    expect(withBos(native(), [1, 2])).toEqual([1, 2]);
    expect(withBos({ kind: 'harmony' } as unknown as ModelFamily, [1, 2])).toEqual([1, 2]);
  });
});
