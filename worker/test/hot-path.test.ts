// The per-token path without its allocations: events routed without copies, completion chunks serialized from
// per-request parts; and the per-request one: completion bodies validated with the prompt checked in one loop, token
// ids handed to the addon as an Int32Array. Each must say exactly what the straightforward version said.
import { EventRouter, int32Ids } from '../src/engine/native.js';
import type { TokenEvent } from '../src/engine/types.js';
import { completionRequestFastSchema, completionRequestSchema } from '../src/openai/schemas.js';
import { completionChunkJson, type CompletionLogprobs } from '../src/routes/completions.js';

describe('completionChunkJson', () => {
  const reference = (
    id: string,
    created: number,
    model: string,
    includeUsage: boolean,
    index: number,
    text: string,
    finish: string | null,
    logprobs?: CompletionLogprobs,
  ): string =>
    JSON.stringify({
      id,
      object: 'text_completion',
      created,
      model,
      choices: [{ index, text, logprobs: logprobs ?? null, finish_reason: finish }],
      ...(includeUsage ? { usage: null } : {}),
    });

  const logprobs: CompletionLogprobs = {
    tokens: ['a', '"b"'],
    token_logprobs: [-0.5, -1e-9],
    top_logprobs: [{ a: -0.5, c: -2 }, {}],
    text_offset: [0, 1],
  };

  it.each([
    ['plain', 'Hello', null, undefined],
    ['escapes', 'quote " backslash \\ newline \n tab \t nul \u0000', null, undefined],
    ['unicode and a lone surrogate', 'é 中文 😀 \ud800 \u2028', null, undefined],
    ['empty, finished', '', 'stop', undefined],
    ['length', 'x', 'length', undefined],
    ['logprobs', 'ab', null, logprobs],
  ] as const)('%s', (_name, text, finish, lp) => {
    for (const includeUsage of [false, true]) {
      for (const model of ['tiny', 'org/"odd" model']) {
        const chunk = completionChunkJson('cmpl-0123abcd', 1765000000, model, includeUsage);
        for (const index of [0, 7]) {
          expect(chunk(index, text, finish, lp)).toBe(
            reference('cmpl-0123abcd', 1765000000, model, includeUsage, index, text, finish, lp),
          );
        }
      }
    }
  });
});

describe('EventRouter', () => {
  type Ev = TokenEvent & { id: number };
  const ev = (id: number, token: number, finishReason?: TokenEvent['finishReason']): Ev => ({
    id,
    token,
    ...(finishReason ? { finishReason } : {}),
  });

  function setup(ids: number[]): { router: EventRouter; calls: [number, TokenEvent[]][] } {
    const router = new EventRouter();
    const calls: [number, TokenEvent[]][] = [];
    for (const id of ids) router.add(id, (events) => calls.push([id, events]));
    return { router, calls };
  }

  it('hands a step with one request its batch as is', () => {
    const { router, calls } = setup([1]);
    const batch = [ev(1, 10), ev(1, 11)];
    router.dispatch(batch);
    expect(calls).toHaveLength(1);
    expect(calls[0]![1]).toBe(batch);
  });

  it('splits a step into per-request runs, in order', () => {
    const { router, calls } = setup([1, 2, 3]);
    router.dispatch([ev(2, 20), ev(1, 10), ev(1, 11), ev(3, 30)]);
    expect(calls.map(([id, events]) => [id, events.map((e) => e.token)])).toEqual([
      [2, [20]],
      [1, [10, 11]],
      [3, [30]],
    ]);
  });

  it('groups interleaved events by request, in order of first appearance', () => {
    const { router, calls } = setup([1, 2]);
    router.dispatch([ev(1, 10), ev(2, 20), ev(1, 11), ev(2, -1, 'cancelled')]);
    expect(calls.map(([id, events]) => [id, events.map((e) => e.token)])).toEqual([
      [1, [10, 11]],
      [2, [20, -1]],
    ]);
    // 2 finished: later events for it are dropped, 1 still gets its own.
    router.dispatch([ev(2, 21), ev(1, 12, 'length')]);
    expect(calls.slice(2).map(([id, events]) => [id, events.map((e) => e.token)])).toEqual([[1, [12]]]);
    expect(router.size).toBe(0);
  });

  it('ignores unknown requests and empty steps', () => {
    const { router, calls } = setup([1]);
    router.dispatch([]);
    router.dispatch([ev(9, 90), ev(1, 10)]);
    expect(calls.map(([id, events]) => [id, events.map((e) => e.token)])).toEqual([[1, [10]]]);
  });
});

describe('completionRequestFastSchema', () => {
  const base = { model: 'tiny', max_tokens: 8, stream: true, stream_options: { include_usage: true } };
  // Prompts and bodies of every kind, accepted and refused by the full schema: wherever the fast schema accepts, the
  // full one must too, with the same output; the route's errors come from the full schema alone.
  const prompts: unknown[] = [
    'text',
    '',
    [1, 2, 3],
    [0],
    [],
    [1, -2],
    [1, 2.5],
    [1, Number.MAX_SAFE_INTEGER + 1],
    [1, '2'],
    [1, null],
    ['a', 'b'],
    ['a', 3],
    [[1, 2], [3]],
    [[1, 2], []],
    [[1], ['a']],
    [[]],
    [{}],
    [true],
    null,
    undefined,
    7,
    {},
  ];
  const bodies: unknown[] = [
    ...prompts.map((prompt) => ({ ...base, prompt })),
    { ...base, prompt: [1, 2], temperature: 3 },
    { ...base, prompt: [1, 2], n: 0 },
    { ...base, prompt: [1, 2], unknown_field: 1 },
    { model: '', prompt: [1] },
    { prompt: [1] },
  ];

  it.each(bodies.map((b) => [JSON.stringify(b) ?? String(b), b]))('%s', (_name, body) => {
    const fast = completionRequestFastSchema.safeParse(body);
    const full = completionRequestSchema.safeParse(body);
    if (fast.success) {
      expect(full.success).toBe(true);
      expect(fast.data).toEqual(full.data);
    }
    // What a client sends (any well-formed prompt) takes the fast path.
    if (full.success) expect(fast.success).toBe(true);
  });
});

describe('int32Ids', () => {
  it('gives the addon an Int32Array of the same ids', () => {
    const out = int32Ids([0, 5, 2 ** 31 - 1, -1]);
    expect(out).toBeInstanceOf(Int32Array);
    expect(Array.from(out)).toEqual([0, 5, 2 ** 31 - 1, -1]);
  });

  it.each([[[1, 2 ** 31]], [[1.5]], [[1, '2']], [[NaN]]])('leaves %j as given, for the addon to refuse', (ids) => {
    const given = ids as number[];
    expect(int32Ids(given)).toBe(given);
  });
});
