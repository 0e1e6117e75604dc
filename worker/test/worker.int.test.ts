// The worker process over the real native engine and a generated tiny-harmony checkpoint, driven by the official
// `openai` client. Weights are random, so text is noise: these tests check structure, token counts, determinism,
// stop strings, logprobs shapes and errors.
import { readdirSync, readFileSync } from 'node:fs';
import { getPriority } from 'node:os';
import OpenAI from 'openai';
import { renderChatPrompt } from '../src/harmony/chat.js';
import { Tokenizer } from '../src/tokenizer.js';
import { startWorker, tinyCheckpoint, type WorkerProcess } from './support/worker-process.js';

const DATE = '2026-01-15';
const MODEL = 'tiny-harmony';
const tokenizer = new Tokenizer();
let worker: WorkerProcess;
let client: OpenAI;

beforeAll(async () => {
  worker = await startWorker([
    '--model',
    tinyCheckpoint(1),
    '--served-model-name',
    MODEL,
    '--date',
    DATE,
    '--max-context',
    '1024',
    '--max-seqs',
    '8',
    '--threads',
    '2',
  ]);
  client = new OpenAI({ baseURL: `${worker.baseUrl}/v1`, apiKey: 'unused', maxRetries: 0 });
}, 120_000);

afterAll(async () => {
  await worker?.stop();
});

const user = (content: string): OpenAI.ChatCompletionMessageParam[] => [{ role: 'user', content }];
const WEATHER: OpenAI.ChatCompletionTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Gets the weather.',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};

describe('compute thread priority', () => {
  // /proc/PID/task/TID/stat: the nice value is field 19, the 17th after the parenthesized command name.
  const niceOf = (pid: number, tid: string): number => {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
  };

  it('runs the engine compute threads 10 nicer than the event loop by default, the event loop as started', () => {
    if (process.env.MS_COMPUTE_THREAD_NICE !== undefined) return; // the environment's setting is in effect
    // The worker inherits this process's nice value (0 usually; more when the suite itself runs under `nice`).
    const base = getPriority();
    const pid = worker.child.pid!;
    const nice = readdirSync(`/proc/${pid}/task`).map((tid) => [tid, niceOf(pid, tid)] as const);
    expect(nice.find(([tid]) => tid === String(pid))![1]).toBe(base);
    expect(nice.filter(([, n]) => n === Math.min(19, base + 10)).length).toBeGreaterThanOrEqual(1);
    expect(worker.logs.some((l) => l.includes('"computeThreadNice":"10"'))).toBe(true);
  });
});

describe('chat completions over the real engine', () => {
  it('lists the served model', async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual([MODEL]);
  });

  it('answers with the harmony prompt length as prompt_tokens and max_tokens honoured', async () => {
    const res = await client.chat.completions.create({
      model: MODEL,
      messages: user('Hello'),
      max_tokens: 12,
      temperature: 0,
    });
    expect(res.object).toBe('chat.completion');
    expect(res.choices).toHaveLength(1);
    const expected = renderChatPrompt(tokenizer, user('Hello') as never, [], {
      conversationDate: DATE,
      reasoningEffort: 'medium',
    });
    expect(res.usage?.prompt_tokens).toBe(expected.length);
    expect(res.usage!.completion_tokens).toBeLessThanOrEqual(12);
    expect(res.usage!.total_tokens).toBe(res.usage!.prompt_tokens + res.usage!.completion_tokens);
    const choice = res.choices[0]!;
    expect(choice.message.role).toBe('assistant');
    if (choice.finish_reason === 'length') expect(res.usage!.completion_tokens).toBe(12);
    else expect(['stop', 'tool_calls']).toContain(choice.finish_reason);
  });

  it('is deterministic at temperature 0 and with a seed, and the seed matters', async () => {
    const ask = (extra: Partial<OpenAI.ChatCompletionCreateParamsNonStreaming>) =>
      client.chat.completions.create({ model: MODEL, messages: user('Tell me a story'), max_tokens: 16, ...extra });
    const [a, b] = await Promise.all([ask({ temperature: 0 }), ask({ temperature: 0 })]);
    expect(a.choices[0]!.message.content).toBe(b.choices[0]!.message.content);
    const [s1, s2, s3] = await Promise.all([
      ask({ temperature: 1, seed: 42 }),
      ask({ temperature: 1, seed: 42 }),
      ask({ temperature: 1, seed: 43 }),
    ]);
    expect(s1.choices[0]!.message).toEqual(s2.choices[0]!.message);
    expect(s3.choices[0]!.message).not.toEqual(s1.choices[0]!.message);
  });

  it('streams the same text as the non-streaming answer, role first, usage last', async () => {
    const params = { model: MODEL, messages: user('Stream please'), max_tokens: 16, temperature: 0 } as const;
    const whole = await client.chat.completions.create(params);
    const stream = await client.chat.completions.create({
      ...params,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks[0]!.choices[0]!.delta.role).toBe('assistant');
    const text = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
    expect(text).toBe(whole.choices[0]!.message.content ?? '');
    const finish = chunks.map((c) => c.choices[0]?.finish_reason).filter(Boolean);
    expect(finish).toEqual([whole.choices[0]!.finish_reason]);
    const last = chunks[chunks.length - 1]!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toEqual(whole.usage);
  });

  it('puts the reasoning effort in the system message', async () => {
    const firstLogprobs: number[][] = [];
    for (const effort of ['low', 'high'] as const) {
      const res = await client.chat.completions.create({
        model: MODEL,
        messages: user('Think'),
        max_tokens: 4,
        temperature: 0,
        reasoning_effort: effort,
        logprobs: true,
        top_logprobs: 5,
      });
      const rendered = renderChatPrompt(tokenizer, user('Think') as never, [], {
        conversationDate: DATE,
        reasoningEffort: effort,
      });
      expect(tokenizer.decode(rendered)).toContain(`Reasoning: ${effort}`);
      expect(res.usage!.prompt_tokens).toBe(rendered.length);
      firstLogprobs.push(res.choices[0]!.logprobs!.content![0]!.top_logprobs.map((t) => t.logprob));
    }
    // The prompts differ only in the effort word; the model saw it (the next-token distribution moved).
    expect(firstLogprobs[0]).not.toEqual(firstLogprobs[1]);
  });

  it('renders tools into the prompt and answers in the OpenAI shape', async () => {
    const res = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'system', content: 'Use tools.' }, ...user('Weather in Oslo?')],
      tools: [WEATHER],
      max_tokens: 8,
      temperature: 0,
    });
    const rendered = renderChatPrompt(
      tokenizer,
      [{ role: 'system', content: 'Use tools.' }, ...user('Weather in Oslo?')] as never,
      [{ name: 'get_weather', description: 'Gets the weather.', parameters: WEATHER.function.parameters as never }],
      { conversationDate: DATE, reasoningEffort: 'medium' },
    );
    expect(res.usage!.prompt_tokens).toBe(rendered.length);
    expect(['stop', 'length', 'tool_calls']).toContain(res.choices[0]!.finish_reason);
    // A follow-up turn with a tool call and its result is accepted.
    const follow = await client.chat.completions.create({
      model: MODEL,
      tools: [WEATHER],
      max_tokens: 4,
      messages: [
        ...user('Weather in Oslo?'),
        {
          role: 'assistant',
          content: null,
          tool_calls: [
            { id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo"}' } },
          ],
        },
        { role: 'tool', tool_call_id: 'call_1', content: '{"temp":-3}' },
      ],
    });
    expect(follow.choices).toHaveLength(1);
  });

  it('forces a call to the named function (tool_choice), streaming with the official client', async () => {
    const stream = await client.chat.completions.create({
      model: MODEL,
      messages: user('Weather in Oslo?'),
      tools: [WEATHER],
      tool_choice: { type: 'function', function: { name: 'get_weather' } },
      max_tokens: 6,
      temperature: 0,
      stream: true,
    });
    const calls: OpenAI.ChatCompletionChunk.Choice.Delta.ToolCall[] = [];
    for await (const chunk of stream) calls.push(...(chunk.choices[0]?.delta.tool_calls ?? []));
    // Random weights write noise as arguments, but the call itself is the one the client demanded.
    expect(calls[0]).toMatchObject({ index: 0, type: 'function', function: { name: 'get_weather' } });
  });

  it('stops on a stop string, streaming and not, without leaking it', async () => {
    const params = { model: MODEL, messages: user('Say things'), max_tokens: 32, temperature: 0 } as const;
    const full = (await client.chat.completions.create(params)).choices[0]!.message.content ?? '';
    expect(full.length).toBeGreaterThan(6);
    const stop = full.slice(3, 6);
    const expected = full.slice(0, full.indexOf(stop));
    const cut = await client.chat.completions.create({ ...params, stop: [stop] });
    expect(cut.choices[0]!.message.content).toBe(expected);
    expect(cut.choices[0]!.finish_reason).toBe('stop');
    const stream = await client.chat.completions.create({ ...params, stop: stop, stream: true });
    let text = '';
    for await (const c of stream) text += c.choices[0]?.delta.content ?? '';
    expect(text).toBe(expected);
  });

  it('returns logprobs with the sampled token on top at temperature 0', async () => {
    const res = await client.chat.completions.create({
      model: MODEL,
      messages: user('Logprobs'),
      max_tokens: 12,
      temperature: 0,
      logprobs: true,
      top_logprobs: 3,
    });
    const content = res.choices[0]!.logprobs!.content!;
    expect(content.length).toBeGreaterThan(0);
    expect(content.map((e) => e.token).join('')).toBe(res.choices[0]!.message.content);
    for (const e of content) {
      expect(e.logprob).toBeLessThanOrEqual(0);
      expect(e.top_logprobs).toHaveLength(3);
      expect(e.logprob).toBeCloseTo(e.top_logprobs[0]!.logprob, 4);
      const lps = e.top_logprobs.map((t) => t.logprob);
      expect([...lps].sort((x, y) => y - x)).toEqual(lps);
    }
  });

  it('serves n > 1 as separate sequences', async () => {
    const res = await client.chat.completions.create({
      model: MODEL,
      messages: user('n'),
      max_tokens: 6,
      n: 3,
      seed: 7,
      temperature: 1,
    });
    expect(res.choices.map((c) => c.index)).toEqual([0, 1, 2]);
  });
});

describe('completions over the real engine', () => {
  it('accepts token ids and text, with logprobs in the legacy shape', async () => {
    const ids = tokenizer.encode('Once upon a time');
    const res = await client.completions.create({
      model: MODEL,
      prompt: ids,
      max_tokens: 8,
      temperature: 0,
      logprobs: 2,
    });
    expect(res.usage!.prompt_tokens).toBe(ids.length);
    const lp = res.choices[0]!.logprobs!;
    expect(lp.tokens!.length).toBe(lp.token_logprobs!.length);
    expect(lp.top_logprobs!.every((t) => Object.keys(t).length <= 2)).toBe(true);
    const same = await client.completions.create({
      model: MODEL,
      prompt: 'Once upon a time',
      max_tokens: 8,
      temperature: 0,
    });
    expect(same.choices[0]!.text).toBe(res.choices[0]!.text);
  });
});

describe('errors over the real worker', () => {
  it('unknown model → 404', async () => {
    await expect(client.chat.completions.create({ model: 'nope', messages: user('x') })).rejects.toMatchObject({
      status: 404,
      error: { param: 'model', code: 'model_not_found' },
    });
  });

  it('prompt longer than the context → 400 naming messages', async () => {
    await expect(
      client.chat.completions.create({ model: MODEL, messages: user('word '.repeat(1500)) }),
    ).rejects.toMatchObject({ status: 400, error: { param: 'messages', code: 'context_length_exceeded' } });
  });

  it('out-of-range parameters → 400 naming the parameter', async () => {
    for (const [param, value] of [
      ['temperature', 5],
      ['top_p', 0],
      ['n', 0],
      ['top_logprobs', 50],
    ] as const) {
      await expect(
        client.chat.completions.create({ model: MODEL, messages: user('x'), logprobs: true, [param]: value } as never),
      ).rejects.toMatchObject({ status: 400, error: { param } });
    }
  });

  it('malformed JSON → 400 and an oversized body → 413, in OpenAI shape', async () => {
    const bad = await fetch(`${worker.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"model": ',
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { type: string } }).error.type).toBe('invalid_request_error');
    const big = await fetch(`${worker.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, messages: user('x'.repeat(5 * 1024 * 1024)) }),
    });
    expect(big.status).toBe(413);
    expect(((await big.json()) as { error: { code: string } }).error.code).toBe('request_too_large');
  });

  it('counts requests in the vLLM metrics', async () => {
    const text = await (await fetch(`${worker.baseUrl}/metrics`)).text();
    const success = /vllm:request_success_total\{model_name="tiny-harmony",finished_reason="length"\} (\d+)/.exec(text);
    expect(Number(success?.[1])).toBeGreaterThan(0);
    const kv = Number(/vllm:kv_cache_usage_perc\{model_name="tiny-harmony"\} (\S+)/.exec(text)?.[1]);
    expect(kv).toBeGreaterThanOrEqual(0);
    expect(kv).toBeLessThanOrEqual(1);
    expect(text).toMatch(/vllm:generation_tokens_total\{model_name="tiny-harmony"\} [1-9]/);
  });
});
