// SequenceRun: the response's end runs in the same turn as the last sequence's finish (so a stream's end shares its
// final chunk's socket write), and a run cancelled while its sequences wait for a slot leaves the queue.
import { Admission } from '../src/admission.js';
import { WorkerMetrics } from '../src/metrics.js';
import { SequenceRun, type SequenceHandlers } from '../src/sequences.js';
import { initTracing, RequestTrace } from '../src/tracing.js';
import { ScriptedEngine } from './support/scripted-engine.js';

const newTrace = (): RequestTrace => new RequestTrace(initTracing('off').tracer, 'test', undefined, {});
const newMetrics = (): WorkerMetrics =>
  new WorkerMetrics('test', { engineStats: () => undefined, admissionWaiting: () => 0 });

/** Handlers that log what happened, in order. */
function logging(log: string[], name: string): SequenceHandlers {
  return {
    onTokens: (events) => log.push(`${name} tokens ${events.map((e) => e.token).join(',')}`),
    onFinish: (reason) => log.push(`${name} finish ${reason}`),
  };
}

describe('SequenceRun', () => {
  let engine: ScriptedEngine;
  afterEach(() => engine.close());

  it('whenDone runs its callback within the last finish, after every handler, and resolves with its result', async () => {
    engine = new ScriptedEngine(() => [5, 6, 7]);
    const log: string[] = [];
    const b = logging(log, 'b');
    // A microtask queued by the last finish handler runs after the callback only if the callback ran synchronously.
    const bFinish = b.onFinish;
    b.onFinish = (reason) => {
      bFinish(reason);
      queueMicrotask(() => log.push('microtask'));
    };
    const run = new SequenceRun(engine, new Admission(4, 4), newMetrics(), newTrace(), performance.now(), [
      { request: { prompt: [1], maxTokens: 2 }, handlers: logging(log, 'a') },
      { request: { prompt: [1], maxTokens: 3 }, handlers: b },
    ]);
    const result = run.whenDone(() => {
      log.push('done');
      return 42;
    });
    run.start();
    expect(await result).toBe(42);
    expect(log.slice(-3)).toEqual(['b finish length', 'done', 'microtask']);
    expect(log.filter((l) => l === 'done')).toHaveLength(1);
  });

  it('whenDone rejects with what its callback throws', async () => {
    engine = new ScriptedEngine(() => [5]);
    const run = new SequenceRun(engine, new Admission(4, 4), newMetrics(), newTrace(), performance.now(), [
      { request: { prompt: [1], maxTokens: 1 }, handlers: logging([], 'a') },
    ]);
    const result = run.whenDone(() => {
      throw new Error('respond failed');
    });
    run.start();
    await expect(result).rejects.toThrow('respond failed');
  });

  it('whenDone runs within start() when the engine refuses every sequence at once', async () => {
    engine = new ScriptedEngine(() => [5]);
    engine.submit = () => {
      throw new Error('refused');
    };
    const log: string[] = [];
    const run = new SequenceRun(engine, new Admission(4, 4), newMetrics(), newTrace(), performance.now(), [
      { request: { prompt: [1], maxTokens: 1 }, handlers: logging(log, 'a') },
    ]);
    const result = run.whenDone(() => log.push('done'));
    run.start();
    expect(log).toEqual(['a finish error', 'done']);
    await result;
  });

  it('a run cancelled while waiting for a slot leaves the queue and never reaches the engine', async () => {
    engine = new ScriptedEngine(() => [5, 6, 7, 8]);
    const admission = new Admission(1, 4);
    const holder = admission.tryAcquire()!;
    const log: string[] = [];
    const run = new SequenceRun(engine, admission, newMetrics(), newTrace(), performance.now(), [
      { request: { prompt: [1], maxTokens: 4 }, handlers: logging(log, 'a') },
    ]);
    const done = run.whenDone(() => log.push('done'));
    run.start();
    expect(admission.waitingCount).toBe(1);
    run.cancelAll();
    await done;
    expect(log).toEqual(['a finish cancelled', 'done']);
    await new Promise((r) => setImmediate(r));
    expect(admission.waitingCount).toBe(0);
    holder.release();
    expect(admission.runningCount).toBe(0);
    expect(engine.submitted).toHaveLength(0);
  });

  it('a run cancelled before start submits nothing', async () => {
    engine = new ScriptedEngine(() => [5]);
    const admission = new Admission(1, 4);
    const log: string[] = [];
    const run = new SequenceRun(engine, admission, newMetrics(), newTrace(), performance.now(), [
      { request: { prompt: [1], maxTokens: 1 }, handlers: logging(log, 'a') },
    ]);
    const done = run.whenDone(() => log.push('done'));
    run.cancelAll();
    run.start();
    await done;
    await new Promise((r) => setImmediate(r));
    expect(log).toEqual(['a finish cancelled', 'done']);
    expect(engine.submitted).toHaveLength(0);
    expect(admission.runningCount + admission.waitingCount).toBe(0);
  });
});
