// Drain on SIGTERM over a real worker process: a stream in progress completes, a new request gets 503 with
// Retry-After, /ready reports not ready, and the process exits 0.
import { startWorker, tinyCheckpoint, type WorkerProcess } from './support/worker-process.js';

let worker: WorkerProcess | undefined;
afterEach(async () => {
  await worker?.stop();
});

it('finishes the in-flight stream, refuses new work with 503 and exits 0', async () => {
  worker = await startWorker([
    '--model',
    tinyCheckpoint(1),
    '--served-model-name',
    'tiny',
    '--max-context',
    '1024',
    '--grace-seconds',
    '60',
    '--threads',
    '1',
  ]);
  const maxTokens = 600;
  const res = await fetch(`${worker.baseUrl}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'tiny',
      prompt: [1000, 2000, 3000],
      max_tokens: maxTokens,
      stream: true,
      temperature: 0,
      stream_options: { include_usage: true },
    }),
  });
  expect(res.status).toBe(200);
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let text = decoder.decode((await reader.read()).value, { stream: true });

  worker.child.kill('SIGTERM');
  // Not ready at once, and new requests are refused while the stream runs.
  let ready = 0;
  for (let i = 0; i < 50 && ready !== 503; i++) {
    ready = (await fetch(`${worker.baseUrl}/ready`)).status;
    if (ready !== 503) await new Promise((r) => setTimeout(r, 20));
  }
  expect(ready).toBe(503);
  const refused = await fetch(`${worker.baseUrl}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'tiny', prompt: 'hi', max_tokens: 4 }),
  });
  expect(refused.status).toBe(503);
  expect(refused.headers.get('retry-after')).toBeTruthy();
  expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('draining');

  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
  }
  const events = text.split('\n\n').filter(Boolean);
  expect(events[events.length - 1]).toBe('data: [DONE]');
  const usage = JSON.parse(events[events.length - 2]!.slice(6)) as { usage: { completion_tokens: number } };
  const finishes = events
    .slice(0, -1)
    .map((e) => JSON.parse(e.slice(6)) as { choices: { finish_reason: string | null }[] })
    .flatMap((c) => c.choices.map((x) => x.finish_reason))
    .filter(Boolean);
  expect(finishes).toHaveLength(1);
  if (finishes[0] === 'length') expect(usage.usage.completion_tokens).toBe(maxTokens);
  expect(await worker.exited).toBe(0);
}, 120_000);
