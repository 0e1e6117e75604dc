// The Server-Timing field over a real worker process and the native engine (tiny-harmony checkpoint): a trailer on
// streams (declared in the headers), a header on non-streaming responses, durations that fit inside what the client
// itself measured (the server's intervals lie within the client's), and no trailer where HTTP/1.0 cannot carry one.
import { request, type IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';
import { startWorker, tinyCheckpoint, type WorkerProcess } from './support/worker-process.js';

const MODEL = 'tiny-harmony';
let worker: WorkerProcess;

beforeAll(async () => {
  worker = await startWorker([
    '--model',
    tinyCheckpoint(1),
    '--served-model-name',
    MODEL,
    '--max-context',
    '1024',
    '--max-seqs',
    '4',
    '--threads',
    '1',
  ]);
}, 120_000);

afterAll(async () => {
  await worker?.stop();
});

/** name → dur of a field the worker writes: `name;dur=D.DDD` items joined by ", " (strict: any other shape fails). */
function parseField(field: string | undefined): Record<string, number> {
  expect(typeof field).toBe('string');
  const out: Record<string, number> = {};
  for (const item of field!.split(', ')) {
    const m = /^([a-z-]+);dur=(\d+\.\d{3})$/.exec(item);
    expect(m).not.toBeNull();
    expect(out[m![1]!]).toBeUndefined();
    out[m![1]!] = Number(m![2]);
  }
  return out;
}

interface Exchange {
  status: number;
  headers: IncomingHttpHeaders;
  trailers: NodeJS.Dict<string>;
  body: string;
  /** From sending the request to the first SSE event with generated text (ms); undefined if none. */
  ttftMs?: number;
  /** From sending the request to the end of the response (ms). */
  totalMs: number;
}

/** POSTs JSON with node:http (which reads trailers) and times it as the load generator does. */
function post(path: string, payload: unknown): Promise<Exchange> {
  const body = JSON.stringify(payload);
  return new Promise((resolve, reject) => {
    const start = performance.now();
    let ttftMs: number | undefined;
    let text = '';
    const req = request(
      `${worker.baseUrl}${path}`,
      { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
      (res) => {
        res.setEncoding('utf8');
        res.on('data', (piece: string) => {
          text += piece;
          if (ttftMs !== undefined) return;
          for (const event of text.split('\n\n')) {
            if (!event.startsWith('data: {')) continue;
            const chunk = JSON.parse(event.slice(6)) as {
              choices?: { text?: string; delta?: { content?: string; reasoning_content?: string } }[];
            };
            const c = chunk.choices?.[0];
            if (c?.text || c?.delta?.content || c?.delta?.reasoning_content) {
              ttftMs = performance.now() - start;
              break;
            }
          }
        });
        res.on('end', () =>
          resolve({
            status: res.statusCode!,
            headers: res.headers,
            trailers: res.trailers,
            body: text,
            ttftMs,
            totalMs: performance.now() - start,
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

// Durations are written rounded to 1 µs: a sum of four may exceed the interval it measures by that much.
const ROUNDING = 0.004;

describe('Server-Timing', () => {
  it.each([
    ['/v1/completions', { prompt: [1000, 2000, 3000, 4000], max_tokens: 8 }],
    ['/v1/chat/completions', { messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: 24 }],
  ])('is a trailer of a stream from %s: recv, pre, engine-ttft, post within the client TTFT', async (path, fields) => {
    const r = await post(path, { model: MODEL, temperature: 0, stream: true, ...fields });
    expect(r.status).toBe(200);
    expect(r.headers.trailer).toBe('Server-Timing');
    expect(r.headers['transfer-encoding']).toBe('chunked');
    expect(r.headers['server-timing']).toBeUndefined();
    expect(r.body.endsWith('data: [DONE]\n\n')).toBe(true);
    expect(r.ttftMs).toBeDefined();
    const t = parseField(r.trailers['server-timing']);
    expect(Object.keys(t).sort()).toEqual(['engine-ttft', 'post', 'pre', 'recv']);
    for (const v of Object.values(t)) expect(v).toBeGreaterThanOrEqual(0);
    // The engine produced the first tokens before the client read them, and everything the worker did before the
    // first chunk was written lies inside the client's TTFT.
    expect(t['engine-ttft']).toBeLessThanOrEqual(r.ttftMs!);
    expect(t.recv! + t.pre! + t['engine-ttft']! + t.post!).toBeLessThanOrEqual(r.ttftMs! + ROUNDING);
  });

  it('is a header of a non-streaming response: recv, pre, engine-ttft, engine, post within the response time', async () => {
    const r = await post('/v1/completions', {
      model: MODEL,
      temperature: 0,
      prompt: [1000, 2000, 3000, 4000],
      max_tokens: 8,
      n: 2,
    });
    expect(r.status).toBe(200);
    expect(r.headers.trailer).toBeUndefined();
    expect(Object.keys(r.trailers)).toHaveLength(0);
    const body = JSON.parse(r.body) as { usage: { completion_tokens: number } };
    expect(body.usage.completion_tokens).toBeGreaterThan(0);
    const t = parseField(r.headers['server-timing'] as string | undefined);
    expect(Object.keys(t).sort()).toEqual(['engine', 'engine-ttft', 'post', 'pre', 'recv']);
    for (const v of Object.values(t)) expect(v).toBeGreaterThanOrEqual(0);
    expect(t['engine-ttft']).toBeLessThanOrEqual(t.engine! + ROUNDING);
    expect(t.recv! + t.pre! + t.engine! + t.post!).toBeLessThanOrEqual(r.totalMs + ROUNDING);
  });

  it('is left out of an HTTP/1.0 stream, which has no chunked encoding to carry trailers', async () => {
    const body = JSON.stringify({ model: MODEL, prompt: [1000, 2000], max_tokens: 4, temperature: 0, stream: true });
    const raw = await new Promise<string>((resolve, reject) => {
      const socket = connect(worker.port, '127.0.0.1', () => {
        socket.write(
          `POST /v1/completions HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
            `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
        );
      });
      let text = '';
      socket.setEncoding('utf8');
      socket.on('data', (d: string) => (text += d));
      socket.on('end', () => resolve(text));
      socket.on('error', reject);
    });
    const [head, rest] = [raw.slice(0, raw.indexOf('\r\n\r\n')), raw.slice(raw.indexOf('\r\n\r\n') + 4)];
    expect(head.split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
    expect(head.toLowerCase()).not.toContain('trailer:');
    expect(head.toLowerCase()).not.toContain('transfer-encoding');
    expect(head.toLowerCase()).not.toContain('server-timing');
    expect(rest.endsWith('data: [DONE]\n\n')).toBe(true);
  });
});
