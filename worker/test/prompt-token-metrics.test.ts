// The autoscaler's token signals on the worker: modelserve:num_prompt_tokens_waiting holds a sequence's prompt from
// its arrival until its first token (or its end without one), and vllm:prompt_tokens_total moves at the first token,
// not when the request ends, so that its rate is the prefill rate.
import { Admission } from '../src/admission.js';
import { WorkerMetrics } from '../src/metrics.js';
import { SequenceRun, type SequenceHandlers } from '../src/sequences.js';
import { initTracing, RequestTrace } from '../src/tracing.js';
import { ScriptedEngine } from './support/scripted-engine.js';

const newTrace = (): RequestTrace => new RequestTrace(initTracing('off').tracer, 'test', undefined, {});

const value = (text: string, name: string): number =>
  Number(new RegExp(`^${name}\\{model_name="m"\\} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);

async function read(metrics: WorkerMetrics): Promise<{ waiting: number; total: number }> {
  const text = await metrics.registry.metrics();
  return {
    waiting: value(text, 'modelserve:num_prompt_tokens_waiting'),
    total: value(text, 'vllm:prompt_tokens_total'),
  };
}

/** Handlers that resolve `first` at the sequence's first tokens. */
function firstTokens(): { handlers: SequenceHandlers; first: Promise<void> } {
  let resolve!: () => void;
  const first = new Promise<void>((r) => (resolve = r));
  return { handlers: { onTokens: () => resolve(), onFinish: () => resolve() }, first };
}

const prompt = (n: number): number[] => Array.from({ length: n }, (_, i) => i + 1);

describe('prompt-token metrics', () => {
  let engine: ScriptedEngine;
  afterEach(() => engine.close());

  it('count a prompt as waiting until its first token, then in prompt_tokens_total while it still decodes', async () => {
    // A long script at one token per 5 ms: the first sequence is still decoding when the metrics are read.
    engine = new ScriptedEngine(() => [5], {}, 5);
    const metrics = new WorkerMetrics('m', { engineStats: () => engine.stats(), admissionWaiting: () => 0 });
    expect(await read(metrics)).toEqual({ waiting: 0, total: 0 });
    const admission = new Admission(1, 4);
    const holder = admission.tryAcquire()!; // every slot taken: the run's sequences wait in the admission queue
    const a = firstTokens();
    const b = firstTokens();
    const run = new SequenceRun(engine, admission, metrics, newTrace(), performance.now(), [
      { request: { prompt: prompt(300), maxTokens: 10_000 }, handlers: a.handlers },
      { request: { prompt: prompt(200), maxTokens: 10_000 }, handlers: b.handlers },
    ]);
    const done = run.whenDone(() => undefined);
    run.start();
    expect(await read(metrics)).toEqual({ waiting: 500, total: 0 });

    holder.release(); // the first sequence gets the slot; the second keeps waiting behind it (one slot)
    await a.first;
    expect(await read(metrics)).toEqual({ waiting: 200, total: 300 });

    run.cancelAll(); // the second ends without a first token: no longer waiting, never counted as prefilled
    await done;
    expect(await read(metrics)).toEqual({ waiting: 0, total: 300 });
  });

  it('drop the prompt of a sequence the engine refuses', async () => {
    engine = new ScriptedEngine(() => [5]);
    engine.submit = () => {
      throw new Error('refused');
    };
    const metrics = new WorkerMetrics('m', { engineStats: () => undefined, admissionWaiting: () => 0 });
    const run = new SequenceRun(engine, new Admission(4, 4), metrics, newTrace(), performance.now(), [
      { request: { prompt: prompt(50), maxTokens: 4 }, handlers: firstTokens().handlers },
    ]);
    const done = run.whenDone(() => undefined);
    run.start();
    await done;
    expect(await read(metrics)).toEqual({ waiting: 0, total: 0 });
  });
});
