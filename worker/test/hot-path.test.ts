// The per-token path without its allocations: events routed without copies, completion chunks serialized from
// per-request parts. Both must say exactly what the straightforward versions said.
import { EventRouter } from '../src/engine/native.js';
import type { TokenEvent } from '../src/engine/types.js';
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
