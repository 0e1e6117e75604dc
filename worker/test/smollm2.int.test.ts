// SmolLM2-135M-Instruct (GGUF Q4_1) served by a real worker process: the ChatML prompt the worker renders against
// llama.cpp's prompt ids (worker/native/testdata/smollm2/greedy.json), greedy chat and text completions through the
// official `openai` client (streaming and not) against the engine driven directly, detokenization that never splits
// a UTF-8 character, and the 4xx answers for what a ChatML model cannot do. The model is fetched (hack/slm/
// fetch-model.sh) when missing, never skipped.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { loadEngine } from '../src/engine/native.js';
import type { Engine, FinishReason, GenerationRequest } from '../src/engine/types.js';
import { renderChatMl } from '../src/family/chatml.js';
import { familyOf, type NativeFamily } from '../src/family/family.js';
import { PlainChatChoice } from '../src/openai/plain-chat-choice.js';
import { Tokenizer } from '../src/tokenizer.js';
import { greedyReference, smolLm2Model } from './support/slm-model.js';
import { startWorker, type WorkerProcess } from './support/worker-process.js';

const MODEL = 'smollm2';
// The same engine settings on both sides, so the worker's greedy tokens can be compared with the engine's own.
const ENGINE = { threads: 2, maxContext: 1024, maxSeqs: 4, kvMemoryMb: 64, kvDtype: 'float32' as const };

const CHATML =
  /^<\|im_start\|>system\n([\s\S]*)<\|im_end\|>\n<\|im_start\|>user\n([\s\S]*)<\|im_end\|>\n<\|im_start\|>assistant\n$/;
const chats = greedyReference().cases.flatMap((c) => {
  const m = CHATML.exec(Buffer.from(c.prompt_hex, 'hex').toString('utf8'));
  return m ? [{ system: m[1]!, user: m[2]!, ids: c.ids }] : [];
});

let engine: Engine;
let family: NativeFamily;
let modelPath: string;

beforeAll(async () => {
  modelPath = smolLm2Model();
  engine = await loadEngine({
    modelPath,
    threads: ENGINE.threads,
    maxContext: ENGINE.maxContext,
    maxSeqs: ENGINE.maxSeqs,
    kvMemoryBytes: ENGINE.kvMemoryMb * 2 ** 20,
    kvDtype: ENGINE.kvDtype,
  });
  const f = familyOf(engine, new Tokenizer());
  if (f.kind !== 'native') throw new Error(`expected the model's own tokenizer, got the ${f.kind} family`);
  family = f;
}, 120_000);

afterAll(async () => {
  await engine?.close();
});

/** Greedy tokens from the engine driven directly (no HTTP, no worker). */
function generate(request: GenerationRequest): Promise<{ tokens: number[]; finish: FinishReason }> {
  return new Promise((resolve) => {
    const tokens: number[] = [];
    engine.submit(request, (events) => {
      for (const e of events) {
        if (e.token >= 0) tokens.push(e.token);
        if (e.finishReason) resolve({ tokens, finish: e.finishReason });
      }
    });
  });
}

/** The text of generated ids: their bytes through one UTF-8 decoder, control tokens left out. */
function textOf(ids: readonly number[]): string {
  const bytes = ids.filter((t) => !family.tokenizer.isSpecial(t)).map((t) => family.tokenizer.textBytes(t));
  return new TextDecoder().decode(Buffer.concat(bytes));
}

describe('ChatML prompts of SmolLM2 through the engine tokenizer', () => {
  it('reads ChatML and its default system prompt from the GGUF chat template', () => {
    expect(chats).toHaveLength(12);
    expect(family.chat).toEqual({ defaultSystem: chats[0]!.system });
    expect(family.tokenizer.specialId('<|im_end|>')).toBe(greedyReference().stop_id);
    expect(family.stopTokenIds).toContain(greedyReference().stop_id);
    expect(family.stopTokenIds).toContain(engine.info.eosTokenId);
    // SmolLM2 declares add_bos_token = false (llama.cpp's reference prompts have no BOS either).
    expect(engine.info.addBosToken).toBe(false);
    expect(family.bosTokenId).toBeUndefined();
  });

  it("renders the 12 reference chats to llama.cpp's prompt ids, with the default system prompt or an explicit one", () => {
    for (const chat of chats) {
      expect(renderChatMl(family.tokenizer, family.chat!, [{ role: 'user', content: chat.user }])).toEqual(chat.ids);
      expect(
        renderChatMl(family.tokenizer, family.chat!, [
          { role: 'system', content: chat.system },
          { role: 'user', content: chat.user },
        ]),
      ).toEqual(chat.ids);
    }
  });

  it('renders a given system prompt, several turns and text parts as the ChatML text would tokenize', () => {
    const ids = renderChatMl(family.tokenizer, family.chat!, [
      { role: 'developer', content: 'Answer briefly.' },
      { role: 'user', content: [{ type: 'text', text: 'Hi' }] },
      { role: 'assistant', content: 'Hello! ' },
      { role: 'user', content: 'Naïve café? 🦜' },
    ]);
    const text =
      '<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n' +
      '<|im_start|>assistant\nHello! <|im_end|>\n<|im_start|>user\nNaïve café? 🦜<|im_end|>\n<|im_start|>assistant\n';
    expect(ids).toEqual(family.tokenizer.encodeWithSpecials(text));
  });

  it('keeps control-token text in a message as text', () => {
    const ids = renderChatMl(family.tokenizer, family.chat!, [{ role: 'user', content: 'a<|im_end|>b' }]);
    const imEnd = family.tokenizer.specialId('<|im_end|>')!;
    // The system turn, the user turn and nothing else end with <|im_end|>.
    expect(ids.filter((t) => t === imEnd)).toHaveLength(2);
  });

  it('never splits a UTF-8 character across streamed deltas', () => {
    const parrot = family.tokenizer.encode('🦜🦜');
    const single = parrot.map((t) => family.tokenizer.textBytes(t).length);
    // Observed: the emoji's four bytes do not come as one token, so some token ends inside the character.
    expect(Math.min(...single)).toBeLessThan(4);
    const choice = new PlainChatChoice(family.tokenizer, [], undefined);
    const deltas = parrot.map((token) => choice.push([{ token }]).content ?? '');
    deltas.push(choice.finish('stop').delta.content ?? '');
    expect(deltas.join('')).toBe('🦜🦜');
    for (const d of deltas) expect(d).not.toContain('\uFFFD');
    expect(deltas.filter((d) => d !== '')).toEqual(['🦜', '🦜']);
  });
});

describe('spec.model.architecture', () => {
  it('stops a worker whose engine.json asserts another architecture, and serves when it matches', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'smollm2-arch-'));
    try {
      const config = join(dir, 'engine.json');
      const args = ['--model', modelPath, '--engine-config', config, '--threads', '1', '--kv-memory-mb', '16'];
      writeFileSync(config, JSON.stringify({ model: { architecture: 'GptOssForCausalLM' }, engine: {} }));
      await expect(startWorker(args)).rejects.toThrow(
        /spec\.model\.architecture is GptOssForCausalLM but the checkpoint is LlamaForCausalLM/,
      );
      writeFileSync(config, JSON.stringify({ model: { architecture: 'LlamaForCausalLM' }, engine: {} }));
      const worker = await startWorker(args);
      await worker.stop();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});

describe('a worker serving SmolLM2', () => {
  let worker: WorkerProcess;
  let client: OpenAI;

  beforeAll(async () => {
    worker = await startWorker([
      '--model',
      modelPath,
      '--served-model-name',
      MODEL,
      '--threads',
      String(ENGINE.threads),
      '--max-context',
      String(ENGINE.maxContext),
      '--max-seqs',
      String(ENGINE.maxSeqs),
      '--kv-memory-mb',
      String(ENGINE.kvMemoryMb),
      '--kv-dtype',
      ENGINE.kvDtype,
    ]);
    client = new OpenAI({ baseURL: `${worker.baseUrl}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
  }, 120_000);

  afterAll(async () => {
    await worker?.stop();
  });

  const MAX = 48;

  it('answers greedy chats with the engine’s own tokens and the same text streamed or not', async () => {
    for (const chat of chats.slice(0, 4)) {
      const direct = await generate({
        prompt: chat.ids,
        maxTokens: MAX,
        temperature: 0,
        stopTokenIds: family.stopTokenIds,
      });
      const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: chat.user }];
      const whole = await client.chat.completions.create({
        model: MODEL,
        messages,
        max_tokens: MAX,
        temperature: 0,
        logprobs: true,
      });
      let streamed = '';
      let streamedFinish: string | null = null;
      let streamedUsage: OpenAI.CompletionUsage | undefined;
      const stream = await client.chat.completions.create({
        model: MODEL,
        messages,
        max_tokens: MAX,
        temperature: 0,
        stream: true,
        stream_options: { include_usage: true },
      });
      for await (const chunk of stream) {
        streamed += chunk.choices[0]?.delta.content ?? '';
        streamedFinish = chunk.choices[0]?.finish_reason ?? streamedFinish;
        if (chunk.usage) streamedUsage = chunk.usage;
      }

      const choice = whole.choices[0]!;
      const text = textOf(direct.tokens);
      expect(text.length).toBeGreaterThan(0);
      expect(choice.message.content).toBe(text);
      expect(streamed).toBe(text);
      expect(text).not.toContain('\uFFFD');
      expect(text).not.toContain('<|im_end|>');
      // Token by token: the logprobs entries are the engine's visible tokens (the final <|im_end|> is not shown).
      const visible = direct.tokens.filter((t) => !family.tokenizer.isSpecial(t));
      expect(choice.logprobs!.content!.map((lp) => lp.bytes)).toEqual(
        visible.map((t) => [...family.tokenizer.textBytes(t)]),
      );
      const finish = direct.finish === 'length' ? 'length' : 'stop';
      expect(choice.finish_reason).toBe(finish);
      expect(streamedFinish).toBe(finish);
      for (const usage of [whole.usage!, streamedUsage!]) {
        expect(usage.prompt_tokens).toBe(chat.ids.length);
        expect(usage.completion_tokens).toBe(direct.tokens.length);
        expect(usage.total_tokens).toBe(chat.ids.length + direct.tokens.length);
      }
    }
  }, 120_000);

  it('cuts the reply at a stop string, streamed or not', async () => {
    const chat = chats[2]!;
    const direct = await generate({
      prompt: chat.ids,
      maxTokens: MAX,
      temperature: 0,
      stopTokenIds: family.stopTokenIds,
    });
    const text = textOf(direct.tokens);
    // A stop string from the middle of the greedy reply: the answer is the text before its first occurrence.
    const stop = text.slice(Math.floor(text.length / 2), Math.floor(text.length / 2) + 3);
    const expected = text.slice(0, text.indexOf(stop));
    const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: chat.user }];
    const whole = await client.chat.completions.create({
      model: MODEL,
      messages,
      max_tokens: MAX,
      temperature: 0,
      stop,
    });
    expect(whole.choices[0]!.message.content).toBe(expected);
    expect(whole.choices[0]!.finish_reason).toBe('stop');
    let streamed = '';
    const stream = await client.chat.completions.create({
      model: MODEL,
      messages,
      max_tokens: MAX,
      temperature: 0,
      stop: [stop],
      stream: true,
    });
    for await (const chunk of stream) streamed += chunk.choices[0]?.delta.content ?? '';
    expect(streamed).toBe(expected);
  }, 60_000);

  it('continues a raw prompt through /v1/completions with the model tokenizer', async () => {
    const prompt = 'Once upon a time';
    const ids = family.tokenizer.encodeWithSpecials(prompt);
    const direct = await generate({ prompt: ids, maxTokens: 24, temperature: 0, stopTokenIds: family.stopTokenIds });
    const whole = await client.completions.create({ model: MODEL, prompt, max_tokens: 24, temperature: 0 });
    expect(whole.choices[0]!.text).toBe(textOf(direct.tokens));
    expect(whole.usage!.prompt_tokens).toBe(ids.length);
    expect(whole.usage!.completion_tokens).toBe(direct.tokens.length);
    let streamed = '';
    const stream = await client.completions.create({
      model: MODEL,
      prompt,
      max_tokens: 24,
      temperature: 0,
      stream: true,
    });
    for await (const chunk of stream) streamed += chunk.choices[0]?.text ?? '';
    expect(streamed).toBe(whole.choices[0]!.text);
    // Special tokens in a raw prompt are read as such: a ChatML prompt written by hand is the rendered chat.
    const chat = chats[0]!;
    const byHand = await client.completions.create({
      model: MODEL,
      prompt: Buffer.from(greedyReference().cases[0]!.prompt_hex, 'hex').toString('utf8'),
      max_tokens: 8,
      temperature: 0,
    });
    expect(byHand.usage!.prompt_tokens).toBe(chat.ids.length);
  }, 60_000);

  it('refuses what a ChatML model cannot do with a 4xx naming the parameter', async () => {
    const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: 'hi' }];
    const refused = async (body: Record<string, unknown>, param: string): Promise<void> => {
      const err = await client.chat.completions
        .create({ model: MODEL, messages, max_tokens: 4, ...body } as OpenAI.ChatCompletionCreateParamsNonStreaming)
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(err).toBeInstanceOf(OpenAI.BadRequestError);
      expect((err as InstanceType<typeof OpenAI.BadRequestError>).param).toBe(param);
    };
    await refused({ reasoning_effort: 'low' }, 'reasoning_effort');
    await refused(
      { tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } }] },
      'tools',
    );
    await refused({ tool_choice: 'required' }, 'tool_choice');
    await refused(
      {
        messages: [
          { role: 'user', content: 'weather?' },
          { role: 'tool', tool_call_id: 'call_1', content: '{"temp": 3}' },
        ],
      },
      'messages[1].role',
    );
    await refused(
      { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] },
      'messages[0].content[0]',
    );
    const outside = await client.completions
      .create({ model: MODEL, prompt: [engine.info.vocabSize], max_tokens: 4 })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(outside).toBeInstanceOf(OpenAI.BadRequestError);
    const malformed = await fetch(`${worker.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"model": "smollm2", "messages": [',
    });
    expect(malformed.status).toBe(400);
  }, 60_000);
});
