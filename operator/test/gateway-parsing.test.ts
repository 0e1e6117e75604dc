// Pure parsing the gateway relies on: request facts, EndpointSlice readiness, ModelDeployment → Service mapping,
// SSE event splitting and usage detection, the static model map, flags.
import type { V1EndpointSlice } from '@kubernetes/client-node';
import { parseConfig } from '../src/gateway/config.js';
import { StaticDiscovery, routableEndpoints, servicesByModel } from '../src/gateway/discovery.js';
import { BodyError, requestFacts, upstreamBody } from '../src/gateway/requestBody.js';
import { SseSplitter, inspectEvent } from '../src/gateway/upstream.js';
import { modelDeployment } from './fixtures.js';

describe('requestFacts', () => {
  test('chat: the prefix is the system messages then the first turn, cut to length', () => {
    const f = requestFacts(
      'chat',
      {
        model: 'm',
        stream: true,
        messages: [
          { role: 'system', content: 'You are terse.' },
          { role: 'user', content: [{ type: 'text', text: 'Hi' }] },
          { role: 'assistant', content: 'Hello' },
        ],
      },
      1000,
    );
    expect(f.model).toBe('m');
    expect(f.stream).toBe(true);
    expect(f.prefixKey).toBe('system\u0000You are terse.\u0000user\u0000Hi\u0000');
    expect(f.promptTokens()).toBe(Math.ceil(('You are terse.'.length + 2 + 5) / 4));
    expect(requestFacts('chat', { model: 'm', messages: [{ role: 'system', content: 'abcdef' }] }, 9).prefixKey).toBe(
      'system\u0000ab',
    );
  });

  test('two conversations with one system prompt share the prefix key when it is long enough', () => {
    const sys = { role: 'system', content: 'S'.repeat(600) };
    const a = requestFacts('chat', { model: 'm', messages: [sys, { role: 'user', content: 'a' }] }, 512);
    const b = requestFacts('chat', { model: 'm', messages: [sys, { role: 'user', content: 'b' }] }, 512);
    expect(a.prefixKey).toBe(b.prefixKey);
  });

  test('completions accept a string, strings or token ids', () => {
    expect(requestFacts('completion', { model: 'm', prompt: 'hello' }, 3).prefixKey).toBe('hel');
    expect(requestFacts('completion', { model: 'm', prompt: ['a', 'b'] }, 10).promptText()).toBe('a\nb');
    expect(requestFacts('completion', { model: 'm', prompt: [1, 2, 3] }, 10).promptTokens()).toBe(3);
  });

  test.each([
    [null, null, 'must be a JSON object'],
    [{ messages: [] }, 'model', "'model' is required"],
    [{ model: 'm' }, 'messages', "'messages' must be an array"],
    [{ model: 'm', messages: [3] }, 'messages[0]', "'messages[0]' must be an object"],
  ])('bad chat body %j names %s', (body, param, message) => {
    try {
      requestFacts('chat', body, 10);
      throw new Error('no error');
    } catch (err) {
      expect(err).toBeInstanceOf(BodyError);
      expect((err as BodyError).param).toBe(param);
      expect((err as Error).message).toContain(message);
    }
  });

  test('bad completion prompt', () => {
    expect(() => requestFacts('completion', { model: 'm', prompt: { x: 1 } }, 10)).toThrow("'prompt' must be");
  });
});

describe('EndpointSlices', () => {
  const slice = (endpoints: V1EndpointSlice['endpoints'], ports = [{ name: 'http', port: 8000 }]): V1EndpointSlice => ({
    addressType: 'IPv4',
    metadata: { name: 's', namespace: 'ns', labels: { 'kubernetes.io/service-name': 'svc' } },
    endpoints,
    ports,
  });

  test('ready (or unset), serving and not terminating endpoints only', () => {
    const eps = routableEndpoints([
      slice([
        { addresses: ['10.0.0.1'], conditions: { ready: true, serving: true, terminating: false } },
        { addresses: ['10.0.0.2'], conditions: {} },
        { addresses: ['10.0.0.3'], conditions: { ready: false, serving: true, terminating: true } },
        { addresses: ['10.0.0.4'], conditions: { ready: true, serving: true, terminating: true } },
        { addresses: ['10.0.0.5'], conditions: { ready: false } },
      ]),
      slice([{ addresses: ['fd00::1'], conditions: { ready: true } }]),
    ]);
    expect(eps).toEqual(['10.0.0.1:8000', '10.0.0.2:8000', '[fd00::1]:8000']);
  });

  test('the http port is used; a single unnamed port too; no port, no endpoint', () => {
    const ep = [{ addresses: ['10.0.0.1'] }];
    expect(
      routableEndpoints([
        slice(ep, [
          { name: 'metrics', port: 9 },
          { name: 'http', port: 80 },
        ]),
      ]),
    ).toEqual(['10.0.0.1:80']);
    expect(routableEndpoints([slice(ep, [{ port: 81 } as never])])).toEqual(['10.0.0.1:81']);
    expect(routableEndpoints([slice(ep, [])])).toEqual([]);
  });

  test('ModelDeployments map model ids to their Services (the Service has the ModelDeployment name)', () => {
    const a = modelDeployment({ model: { name: 'gpt' } }, { name: 'a', namespace: 'x' });
    const b = modelDeployment({ model: { name: 'gpt' } }, { name: 'b', namespace: 'w' });
    const c = modelDeployment({ model: { name: 'other' } }, { name: 'c', namespace: 'x' });
    const gone = modelDeployment(
      { model: { name: 'gone' } },
      { name: 'd', namespace: 'x', deletionTimestamp: new Date() },
    );
    expect(servicesByModel([a, b, c, gone])).toEqual(
      new Map([
        ['gpt', ['w/b', 'x/a']],
        ['other', ['x/c']],
      ]),
    );
  });
});

describe('upstreamBody', () => {
  const parse = (raw: Buffer) => JSON.parse(raw.toString('utf8')) as Record<string, unknown>;

  test('the client bytes pass as they are when usage need not be asked for', () => {
    const raw = Buffer.from('{"model":"m","stream":false,"n":1.0}');
    expect(upstreamBody(raw, parse(raw), false)).toBe(raw);
  });

  test('a stream without stream_options gets include_usage spliced in; everything else is the client bytes', () => {
    const raw = Buffer.from(' \n{ "model": "m", "stream": true, "messages": [{"role":"user","content":"é"}] }');
    const out = upstreamBody(raw, parse(raw), true);
    expect(parse(out)).toEqual({ ...parse(raw), stream_options: { include_usage: true } });
    expect(out.toString('utf8').replace('"stream_options":{"include_usage":true},', '')).toBe(raw.toString('utf8'));
  });

  test("a client's own stream_options keep their other fields and get include_usage set", () => {
    const raw = Buffer.from('{"model":"m","stream":true,"stream_options":{"include_usage":false,"x":1}}');
    expect(parse(upstreamBody(raw, parse(raw), true))).toEqual({
      model: 'm',
      stream: true,
      stream_options: { include_usage: true, x: 1 },
    });
  });
});

describe('SSE', () => {
  test('the splitter yields whole events and keeps the rest', () => {
    const s = new SseSplitter();
    const push = (text: string) => s.push(Buffer.from(text)).toString('utf8');
    expect(push('data: 1\n\ndata: 2')).toBe('data: 1\n\n');
    expect(s.pending.toString()).toBe('data: 2');
    expect(push('\n')).toBe('');
    expect(push('\ndata: [DONE]\n\n')).toBe('data: 2\n\ndata: [DONE]\n\n');
    expect(s.pending.length).toBe(0);
    expect(push('no end yet')).toBe('');
    expect(push(' still none\n')).toBe('');
    expect(s.pending.toString()).toBe('no end yet still none\n');
  });

  test('a chunk that ends on an event boundary passes as the same bytes, undecoded', () => {
    const s = new SseSplitter();
    const chunk = Buffer.from('data: {"x":"é"}\n\ndata: {"y":1}\n\n');
    expect(s.push(chunk)).toBe(chunk);
    // A multi-byte character cut between two reads is joined before it is passed on.
    const text = Buffer.from('data: {"z":"€"}\n\n');
    expect(s.push(text.subarray(0, 13)).length).toBe(0);
    expect(s.push(text.subarray(13)).equals(text)).toBe(true);
  });

  test('usage is read, and the usage-only chunk recognised', () => {
    const usage = { prompt_tokens: 5, completion_tokens: 7, total_tokens: 12 };
    expect(inspectEvent(`data: ${JSON.stringify({ choices: [], usage })}\n\n`)).toEqual({ usage, usageOnly: true });
    expect(inspectEvent(`data: ${JSON.stringify({ choices: [{ delta: {} }], usage: null })}\n\n`)).toEqual({
      usageOnly: false,
    });
    expect(inspectEvent('data: [DONE]\n\n')).toEqual({ usageOnly: false });
    expect(inspectEvent('data: {"usage":{broken\n\n')).toEqual({ usageOnly: false });
  });
});

test('static models', () => {
  const d = new StaticDiscovery('a=http://127.0.0.1:8001,127.0.0.1:8002; b=http://h');
  expect(d.target('a')?.endpoints).toEqual(['127.0.0.1:8001', '127.0.0.1:8002']);
  expect(d.target('b')?.endpoints).toEqual(['h:80']);
  expect(() => new StaticDiscovery('nonsense')).toThrow('--static-models');
  expect(() => new StaticDiscovery('a=https://h:1')).toThrow('only http://');
});

describe('flags', () => {
  test('defaults', () => {
    const c = parseConfig([], {});
    expect(c.auth).toBe(true);
    expect(c.port).toBe(8080);
    expect(c.queueTimeoutMs).toBe(60_000);
  });
  test('flags, booleans and environment', () => {
    const c = parseConfig(['--auth', '--port=0', '--queue-max', '3', '--log-prompts'], {
      MODELSERVE_GATEWAY_AUTH: 'false',
      MODELSERVE_REDIS_URL: 'redis://r:6379',
    });
    expect(c.auth).toBe(true);
    expect(c.port).toBe(0);
    expect(c.queueMax).toBe(3);
    expect(c.logPrompts).toBe(true);
    expect(c.redisUrl).toBe('redis://r:6379');
    expect(parseConfig(['--auth=false'], {}).auth).toBe(false);
  });
  test('errors name the flag', () => {
    expect(() => parseConfig(['--nope=1'], {})).toThrow('unknown flag --nope');
    expect(() => parseConfig(['--queue-max=-1'], {})).toThrow('--queue-max');
    expect(() => parseConfig(['--auth=maybe'], {})).toThrow('--auth');
    expect(() => parseConfig(['--port'], {})).toThrow('--port needs a value');
  });
});
