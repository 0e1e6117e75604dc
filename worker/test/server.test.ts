/* eslint-disable @typescript-eslint/no-explicit-any -- response JSON is checked field by field against OpenAI shapes */
// The HTTP layer over a scripted in-memory engine (pure logic of routes, SSE framing, errors, admission, drain state).
// The same behaviours over the real engine and the official client: worker.int.test.ts.
import type { Server } from 'node:http';
import { DEFAULT_CONFIG } from '../src/context.js';
import type { GenerationRequest } from '../src/engine/types.js';
import { createApp, listen } from '../src/server.js';
import { Tokenizer } from '../src/tokenizer.js';
import { ScriptedEngine } from './support/scripted-engine.js';

const tokenizer = new Tokenizer();
const ANSWER = tokenizer.encodeWithSpecials(
  '<|channel|>analysis<|message|>think<|end|><|start|>assistant<|channel|>final<|message|>Hello world, again<|return|>',
);
const TOOL = tokenizer.encodeWithSpecials(
  '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"location":"Oslo"}<|call|>',
);
const FOREVER = tokenizer.encode(' la');

let script: (r: GenerationRequest) => number[] = () => ANSWER;
let engine: ScriptedEngine;
let server: Server;
let base: string;
let ctx: ReturnType<typeof createApp>['ctx'];

beforeEach(async () => {
  script = () => ANSWER;
  engine = new ScriptedEngine((r) => script(r), { maxContext: 2048, maxSeqs: 2 });
  const made = createApp({
    tokenizer,
    engine,
    config: {
      ...DEFAULT_CONFIG,
      servedModelName: 'tiny',
      maxQueue: 2,
      maxBodyBytes: 64 * 1024,
      conversationDate: null,
    },
  });
  ctx = made.ctx;
  const bound = await listen(made.app, 0, '127.0.0.1');
  server = bound.server;
  base = `http://127.0.0.1:${bound.port}`;
});

afterEach(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  await engine.close();
});

const post = (path: string, body: unknown): Promise<Response> =>
  fetch(base + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
const chat = (extra: Record<string, unknown> = {}): Promise<Response> =>
  post('/v1/chat/completions', { model: 'tiny', messages: [{ role: 'user', content: 'hi' }], ...extra });

const json = (r: Response): Promise<any> => r.json() as Promise<any>;

async function sse(res: Response): Promise<Record<string, any>[]> {
  const text = await res.text();
  const events = text.split('\n\n').filter(Boolean);
  expect(events[events.length - 1]).toBe('data: [DONE]');
  return events.slice(0, -1).map((e) => JSON.parse(e.replace(/^data: /, '')));
}

describe('chat completions', () => {
  it('answers with reasoning_content, content and usage', async () => {
    const res = await chat();
    expect(res.status).toBe(200);
    const body = await json(res);
    expect(body.object).toBe('chat.completion');
    expect(body.choices[0].message).toEqual({
      role: 'assistant',
      content: 'Hello world, again',
      reasoning_content: 'think',
    });
    expect(body.choices[0].finish_reason).toBe('stop');
    expect(body.usage.completion_tokens).toBe(ANSWER.length);
    expect(engine.submitted[0]!.stopTokenIds).toEqual([200002, 200012]);
    expect(body.usage.prompt_tokens).toBe(engine.submitted[0]!.prompt.length);
  });

  it('streams chunks: role first, deltas, finish, usage, [DONE]', async () => {
    const res = await chat({ stream: true, stream_options: { include_usage: true } });
    expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
    const chunks = await sse(res);
    expect(chunks[0]!.choices[0].delta).toEqual({ role: 'assistant', content: '' });
    const content = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    const reasoning = chunks.map((c) => c.choices[0]?.delta?.reasoning_content ?? '').join('');
    expect(content).toBe('Hello world, again');
    expect(reasoning).toBe('think');
    const last = chunks[chunks.length - 1]!;
    expect(last.choices).toEqual([]);
    expect(last.usage.completion_tokens).toBe(ANSWER.length);
    expect(chunks[chunks.length - 2]!.choices[0].finish_reason).toBe('stop');
    for (const c of chunks) expect(c.object).toBe('chat.completion.chunk');
  });

  it('returns tool calls with finish_reason tool_calls', async () => {
    script = () => TOOL;
    const tools = [
      { type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: {} } } },
    ];
    const body = await json(await chat({ tools }));
    expect(body.choices[0].finish_reason).toBe('tool_calls');
    expect(body.choices[0].message.content).toBeNull();
    expect(body.choices[0].message.tool_calls).toEqual([
      {
        id: expect.stringMatching(/^call_/),
        type: 'function',
        function: { name: 'get_weather', arguments: '{"location":"Oslo"}' },
      },
    ]);
    const chunks = await sse(await chat({ tools, stream: true }));
    const calls = chunks.flatMap((c) => c.choices[0]?.delta?.tool_calls ?? []);
    expect(calls[0]).toMatchObject({ index: 0, type: 'function', function: { name: 'get_weather' } });
    expect(calls.map((c: any) => c.function.arguments).join('')).toBe('{"location":"Oslo"}');
  });

  describe('forced tool calls', () => {
    const tools = [
      { type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: {} } } },
      { type: 'function', function: { name: 'get_time', parameters: { type: 'object', properties: {} } } },
    ];
    const promptText = (r: GenerationRequest): string => tokenizer.decode(r.prompt);

    it('a named function: the prompt ends in its call header and the model writes only the arguments', async () => {
      let prompt = '';
      script = (r) => {
        prompt = promptText(r);
        return tokenizer.encodeWithSpecials('{"location":"Oslo"}<|call|>');
      };
      const body = await json(await chat({ tools, tool_choice: { type: 'function', function: { name: 'get_time' } } }));
      expect(
        prompt.endsWith('<|start|>assistant<|channel|>commentary to=functions.get_time <|constrain|>json<|message|>'),
      ).toBe(true);
      expect(body.choices[0].finish_reason).toBe('tool_calls');
      expect(body.choices[0].message.tool_calls).toEqual([
        {
          id: expect.stringMatching(/^call_/),
          type: 'function',
          function: { name: 'get_time', arguments: '{"location":"Oslo"}' },
        },
      ]);
      // The forced header is prompt, not completion: usage counts only what the model wrote.
      expect(body.usage.completion_tokens).toBe(tokenizer.encodeWithSpecials('{"location":"Oslo"}<|call|>').length);

      const chunks = await sse(
        await chat({ tools, tool_choice: { type: 'function', function: { name: 'get_time' } }, stream: true }),
      );
      const calls = chunks.flatMap((c) => c.choices[0]?.delta?.tool_calls ?? []);
      expect(calls[0]).toMatchObject({ index: 0, type: 'function', function: { name: 'get_time', arguments: '' } });
      expect(calls.map((c: any) => c.function.arguments).join('')).toBe('{"location":"Oslo"}');
    });

    it("'required': the prompt opens a call to functions.* and the model picks the name", async () => {
      let prompt = '';
      script = (r) => {
        prompt = promptText(r);
        return tokenizer.encodeWithSpecials('get_weather <|constrain|>json<|message|>{}<|call|>');
      };
      const body = await json(await chat({ tools, tool_choice: 'required' }));
      expect(prompt.endsWith('<|start|>assistant<|channel|>commentary to=functions.')).toBe(true);
      expect(body.choices[0].message.content).toBeNull();
      expect(body.choices[0].message.tool_calls[0].function).toEqual({ name: 'get_weather', arguments: '{}' });
    });

    it("'none' drops the tools from the prompt", async () => {
      let prompt = '';
      script = (r) => {
        prompt = promptText(r);
        return ANSWER;
      };
      await json(await chat({ tools, tool_choice: 'none' }));
      expect(prompt).not.toContain('get_weather');
      expect(prompt.endsWith('<|start|>assistant')).toBe(true);
    });
  });

  it('stops on a stop string without leaking any of it, and cancels the sequence', async () => {
    const chunks = await sse(await chat({ stream: true, stop: [', ag'] }));
    const content = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    expect(content).toBe('Hello world');
    expect(chunks[chunks.length - 1]!.choices[0].finish_reason).toBe('stop');
    expect(engine.cancelled.length).toBe(1);
  });

  it('serves n choices as n engine sequences with distinct seeds', async () => {
    const body = await json(await chat({ n: 3, seed: 5 }));
    expect(body.choices.map((c: any) => c.index)).toEqual([0, 1, 2]);
    expect(engine.submitted.map((r) => r.seed)).toEqual([5, 6, 7]);
  });

  it('returns logprobs for content tokens', async () => {
    const body = await json(await chat({ logprobs: true, top_logprobs: 2 }));
    const lp = body.choices[0].logprobs.content;
    expect(lp.length).toBeGreaterThan(0);
    expect(lp.map((e: any) => e.token).join('')).toBe('Hello world, again');
    for (const e of lp) {
      expect(e.top_logprobs).toHaveLength(2);
      expect(Array.isArray(e.bytes)).toBe(true);
    }
  });

  it('hits max_tokens with finish_reason length', async () => {
    script = () => FOREVER;
    const body = await json(await chat({ max_tokens: 5 }));
    expect(body.choices[0].finish_reason).toBe('length');
    expect(body.usage.completion_tokens).toBe(5);
  });
});

describe('errors in OpenAI shape', () => {
  const expectError = async (res: Response, status: number, param: string | null): Promise<void> => {
    expect(res.status).toBe(status);
    const body = await json(res);
    expect(Object.keys(body.error).sort()).toEqual(['code', 'message', 'param', 'type']);
    expect(body.error.param).toBe(param);
    expect(typeof body.error.message).toBe('string');
  };
  it('malformed JSON → 400', async () => expectError(await post('/v1/chat/completions', '{"model":'), 400, null));
  it('malformed JSON on /v1/completions → 400 invalid_json', async () => {
    const res = await post('/v1/completions', '{"model":');
    expect(res.status).toBe(400);
    expect((await json(res)).error.code).toBe('invalid_json');
  });
  it('the generation routes answer POST only: GET → 404 no route', async () => {
    for (const path of ['/v1/completions', '/v1/chat/completions']) {
      const res = await fetch(base + path);
      expect(res.status).toBe(404);
      expect((await json(res)).error.code).toBe('not_found');
    }
  });
  it('unknown model → 404', async () => expectError(await chat({ model: 'nope' }), 404, 'model'));
  it('out-of-range temperature → 400 naming it', async () =>
    expectError(await chat({ temperature: 3 }), 400, 'temperature'));
  it('bad message role → 400 naming it', async () =>
    expectError(await chat({ messages: [{ role: 'robot', content: 'x' }] }), 400, 'messages[0].role'));
  it('prompt longer than the context → 400', async () =>
    expectError(await chat({ messages: [{ role: 'user', content: 'word '.repeat(3000) }] }), 400, 'messages'));
  it('max_tokens past the context → 400', async () => expectError(await chat({ max_tokens: 5000 }), 400, 'max_tokens'));
  it('body too large → 413', async () =>
    expectError(await chat({ messages: [{ role: 'user', content: 'x'.repeat(100 * 1024) }] }), 413, null));
  it('tool_choice required without tools → 400', async () =>
    expectError(await chat({ tool_choice: 'required' }), 400, 'tool_choice'));
  it('tool_choice naming an undeclared function → 400 naming it', async () =>
    expectError(
      await chat({
        tools: [{ type: 'function', function: { name: 'get_weather' } }],
        tool_choice: { type: 'function', function: { name: 'get_time' } },
      }),
      400,
      'tool_choice.function.name',
    ));
});

describe('admission and drain', () => {
  it('refuses with 429 and Retry-After once the queue is full', async () => {
    script = () => FOREVER;
    // 2 running + 2 waiting fill it; the fifth sequence is refused.
    const running = [1, 2, 3, 4].map(() => chat({ max_tokens: 200 }));
    await new Promise((r) => setTimeout(r, 50));
    const refused = await chat({ max_tokens: 5 });
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect((await json(refused)).error.code).toBe('rate_limit_exceeded');
    for (const r of await Promise.all(running)) expect(r.status).toBe(200);
  });

  it('cancels the engine sequence when the client disconnects', async () => {
    script = () => FOREVER;
    const abort = new AbortController();
    const res = await fetch(base + '/v1/chat/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'tiny',
        messages: [{ role: 'user', content: 'hi' }],
        stream: true,
        max_tokens: 1000,
      }),
      signal: abort.signal,
    });
    const reader = res.body!.getReader();
    await reader.read();
    abort.abort();
    for (let i = 0; i < 100 && engine.cancelled.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(engine.cancelled.length).toBe(1);
    for (let i = 0; i < 100 && ctx.state.inflightRequests > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(ctx.state.inflightRequests).toBe(0);
  });

  it('reports not ready and refuses new requests with 503 while draining', async () => {
    expect((await fetch(base + '/ready')).status).toBe(200);
    ctx.state.draining = true;
    expect((await fetch(base + '/ready')).status).toBe(503);
    expect((await fetch(base + '/health')).status).toBe(200);
    const res = await chat();
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('1');
    expect((await json(res)).error.code).toBe('draining');
    for (const refused of [
      await post('/v1/completions', { model: 'tiny', prompt: 'hi' }),
      await fetch(base + '/v1/models'),
    ]) {
      expect(refused.status).toBe(503);
      expect((await json(refused)).error.code).toBe('draining');
    }
    expect(engine.submitted).toHaveLength(0);
  });
});

describe('models, completions and metrics', () => {
  it('lists the served model', async () => {
    const body = await json(await fetch(base + '/v1/models'));
    expect(body.data.map((m: any) => m.id)).toEqual(['tiny']);
  });

  it('completes a raw prompt with special tokens read as such, hiding specials in the text', async () => {
    const prompt = '<|start|>user<|message|>hi<|end|>';
    const body = await json(await post('/v1/completions', { model: 'tiny', prompt, max_tokens: 50 }));
    expect(engine.submitted[0]!.prompt.slice(0, 1)).toEqual([200006]);
    expect(body.choices[0].text).toBe('analysisthinkassistantfinalHello world, again');
    expect(body.object).toBe('text_completion');
  });

  it('exposes vLLM metric names with model_name', async () => {
    await chat();
    const text = await (await fetch(base + '/metrics')).text();
    for (const name of [
      'vllm:num_requests_running',
      'vllm:num_requests_waiting',
      'vllm:kv_cache_usage_perc',
      'vllm:time_to_first_token_seconds_bucket',
      'vllm:inter_token_latency_seconds_bucket',
      'vllm:e2e_request_latency_seconds_bucket',
      'vllm:request_queue_time_seconds_bucket',
      'vllm:request_prefill_time_seconds_bucket',
      'vllm:request_decode_time_seconds_bucket',
      'vllm:prompt_tokens_total',
      'vllm:generation_tokens_total',
      'vllm:prefix_cache_queries_total',
      'vllm:prefix_cache_hits_total',
      'vllm:num_preemptions_total',
    ]) {
      expect(text).toContain(`${name}{`);
    }
    expect(text).toContain('vllm:request_success_total{model_name="tiny",finished_reason="stop"} 1');
    expect(text).toContain(`vllm:generation_tokens_total{model_name="tiny"} ${ANSWER.length}`);
  });
});

describe('tracing', () => {
  it('records a request span with queue, prefill and decode children, continuing the caller trace', async () => {
    const { initTracing } = await import('../src/tracing.js');
    const tracing = initTracing('memory');
    const traced = createApp({
      tokenizer,
      engine,
      tracing,
      config: { ...DEFAULT_CONFIG, servedModelName: 'tiny', conversationDate: null },
    });
    const bound = await listen(traced.app, 0, '127.0.0.1');
    try {
      const traceId = '0af7651916cd43dd8448eb211c80319c';
      const res = await fetch(`http://127.0.0.1:${bound.port}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', traceparent: `00-${traceId}-b7ad6b7169203331-01` },
        body: JSON.stringify({ model: 'tiny', messages: [{ role: 'user', content: 'hi' }] }),
      });
      expect(res.status).toBe(200);
      const spans = tracing.memory!.getFinishedSpans();
      expect(spans.map((s) => s.name).sort()).toEqual(['chat.completions', 'decode', 'prefill', 'queue']);
      const root = spans.find((s) => s.name === 'chat.completions')!;
      expect(root.spanContext().traceId).toBe(traceId);
      for (const child of spans.filter((s) => s !== root)) {
        expect(child.spanContext().traceId).toBe(traceId);
        expect(child.parentSpanContext?.spanId).toBe(root.spanContext().spanId);
      }
    } finally {
      bound.server.closeAllConnections();
      await new Promise((r) => bound.server.close(r));
      await tracing.shutdown();
    }
  });
});
