// WorkerContext.conversationDate(): the configured date, or today's in UTC, formatted once a day.
import { jest } from '@jest/globals';
import { DEFAULT_CONFIG, WorkerContext } from '../src/context.js';
import { Tokenizer } from '../src/tokenizer.js';

const tokenizer = new Tokenizer();
const contextWith = (conversationDate?: string | null): WorkerContext =>
  new WorkerContext(tokenizer, { ...DEFAULT_CONFIG, servedModelName: 'm', conversationDate });

describe('conversationDate', () => {
  afterEach(() => jest.restoreAllMocks());

  it('is the configured date, or none, when configured', () => {
    expect(contextWith('2025-01-02').conversationDate()).toBe('2025-01-02');
    expect(contextWith(null).conversationDate()).toBeNull();
  });

  it("is today's UTC date, and the next one from midnight UTC on", () => {
    const ctx = contextWith(undefined);
    const now = jest.spyOn(Date, 'now');
    now.mockReturnValue(Date.UTC(2026, 11, 7, 23, 59, 59, 999));
    expect(ctx.conversationDate()).toBe('2026-12-07');
    now.mockReturnValue(Date.UTC(2026, 11, 8, 0, 0, 0, 0));
    expect(ctx.conversationDate()).toBe('2026-12-08');
    now.mockReturnValue(Date.UTC(2026, 11, 8, 13, 0, 0, 0));
    expect(ctx.conversationDate()).toBe('2026-12-08');
    // A clock set back is followed too.
    now.mockReturnValue(Date.UTC(2026, 11, 6, 12, 0, 0, 0));
    expect(ctx.conversationDate()).toBe('2026-12-06');
  });

  it('matches Date for the real clock', () => {
    expect(contextWith(undefined).conversationDate()).toBe(new Date().toISOString().slice(0, 10));
  });
});
