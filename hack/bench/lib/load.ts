// The load generator: streams requests to an OpenAI-compatible endpoint at a fixed concurrency, a Poisson rate or a
// trace's arrival times, and measures TTFT, ITL, TPOT and end-to-end latency per request.
import { Agent, request as httpRequest } from 'node:http';
import { parseServerTiming } from './server-timing.js';
import { summarize } from './stats.js';

const agent = new Agent({ keepAlive: true, maxSockets: Infinity });

export interface BenchRequest {
  /** Prompt as token ids (completions) — its length is exact. */
  prompt: number[];
  /** Prompt text for chat endpoints. */
  text: string;
  outputTokens: number;
  /** Seconds after the start, for rate/trace modes. */
  at?: number;
}

export interface RequestResult {
  ok: boolean;
  error?: string;
  inputTokens: number;
  outputTokens: number;
  startMs: number;
  ttftMs: number;
  e2eMs: number;
  /** Gaps between streamed chunks after the first (ms). */
  itlsMs: number[];
  /** Chunk arrival times since the run started (ms), for the plot. */
  chunkAtMs: number[];
  /** The server's Server-Timing metrics (name → dur, ms), from the stream's trailer or the headers; {} if none. */
  serverTiming?: Record<string, number>;
}

export interface LoadOptions {
  baseUrl: string;
  model: string;
  endpoint: 'completions' | 'chat';
  /** Max requests in flight (fixed-concurrency mode; a cap for rate/trace modes; 0 = none). */
  concurrency: number;
  /** Schedule by `at` (rate and trace modes) instead of back-to-back. */
  scheduled: boolean;
  onProgress?: (done: number, total: number) => void;
}

async function sendOne(opts: LoadOptions, req: BenchRequest, t0: number): Promise<RequestResult> {
  const start = performance.now();
  const result: RequestResult = {
    ok: false,
    inputTokens: req.prompt.length,
    outputTokens: 0,
    startMs: start - t0,
    ttftMs: 0,
    e2eMs: 0,
    itlsMs: [],
    chunkAtMs: [],
  };
  const common = {
    model: opts.model,
    max_tokens: req.outputTokens,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  };
  const body =
    opts.endpoint === 'completions'
      ? { ...common, prompt: req.prompt }
      : { ...common, messages: [{ role: 'user', content: req.text }] };
  try {
    const url = new URL(`${opts.baseUrl}/v1/${opts.endpoint === 'chat' ? 'chat/completions' : 'completions'}`);
    const payload = JSON.stringify(body);
    let last = 0;
    let buffer = '';
    const onEvent = (data: string): void => {
      if (data === '[DONE]') return;
      const chunk = JSON.parse(data) as {
        choices?: { text?: string; delta?: { content?: string; reasoning_content?: string } }[];
        usage?: { completion_tokens: number } | null;
        error?: { message: string };
      };
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) result.outputTokens = chunk.usage.completion_tokens;
      const c = chunk.choices?.[0];
      if (!(c?.text || c?.delta?.content || c?.delta?.reasoning_content)) return;
      const now = performance.now();
      if (result.chunkAtMs.length === 0) result.ttftMs = now - start;
      else result.itlsMs.push(now - last);
      result.chunkAtMs.push(now - t0);
      last = now;
    };
    // node:http with a keep-alive agent: a lighter client than fetch, so the numbers are the server's.
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest(
        url,
        {
          method: 'POST',
          agent,
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
        },
        (res) => {
          res.setEncoding('utf8');
          if (res.statusCode !== 200) {
            let text = '';
            res.on('data', (d: string) => (text += d));
            res.on('end', () => reject(new Error(`HTTP ${res.statusCode}: ${text.slice(0, 200)}`)));
            return;
          }
          res.on('data', (piece: string) => {
            buffer += piece;
            let sep: number;
            try {
              while ((sep = buffer.indexOf('\n\n')) !== -1) {
                const event = buffer.slice(0, sep);
                buffer = buffer.slice(sep + 2);
                if (event.startsWith('data: ')) onEvent(event.slice(6));
              }
            } catch (err) {
              res.destroy();
              reject(err as Error);
            }
          });
          res.on('end', () => {
            // Trailers are read once the body has ended; TTFT was taken at the first content chunk, as before.
            result.serverTiming = parseServerTiming(res.trailers['server-timing'] ?? res.headers['server-timing']);
            resolve();
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
    result.e2eMs = performance.now() - start;
    result.ok = true;
  } catch (err) {
    result.error = (err as Error).message;
  }
  return result;
}

export async function runLoad(
  opts: LoadOptions,
  requests: BenchRequest[],
): Promise<{ results: RequestResult[]; durationS: number }> {
  const t0 = performance.now();
  const results: RequestResult[] = new Array(requests.length);
  let next = 0;
  let done = 0;
  let inflight = 0;
  const waiters: (() => void)[] = [];
  const cap = opts.concurrency > 0 ? opts.concurrency : Infinity;
  const finishOne = (i: number, r: RequestResult): void => {
    results[i] = r;
    done++;
    inflight--;
    waiters.shift()?.();
    opts.onProgress?.(done, requests.length);
  };
  const tasks: Promise<void>[] = [];
  while (next < requests.length) {
    const i = next++;
    const req = requests[i]!;
    if (opts.scheduled && req.at !== undefined) {
      const wait = req.at * 1000 - (performance.now() - t0);
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
    while (inflight >= cap) await new Promise<void>((r) => waiters.push(r));
    inflight++;
    tasks.push(sendOne(opts, req, t0).then((r) => finishOne(i, r)));
  }
  await Promise.all(tasks);
  return { results, durationS: (performance.now() - t0) / 1000 };
}

/** The JSON `vllm bench serve --save-result` writes, for the same keys. */
export function report(results: RequestResult[], durationS: number): Record<string, unknown> {
  const ok = results.filter((r) => r.ok);
  const totalIn = ok.reduce((s, r) => s + r.inputTokens, 0);
  const totalOut = ok.reduce((s, r) => s + r.outputTokens, 0);
  const tpots = ok.filter((r) => r.outputTokens > 1).map((r) => (r.e2eMs - r.ttftMs) / (r.outputTokens - 1));
  return {
    duration: durationS,
    completed: ok.length,
    failed: results.length - ok.length,
    total_input_tokens: totalIn,
    total_output_tokens: totalOut,
    request_throughput: ok.length / durationS,
    output_throughput: totalOut / durationS,
    total_token_throughput: (totalIn + totalOut) / durationS,
    ...summarize(
      'ttft',
      ok.map((r) => r.ttftMs),
    ),
    ...summarize('tpot', tpots),
    ...summarize(
      'itl',
      ok.flatMap((r) => r.itlsMs),
    ),
    ...summarize(
      'e2el',
      ok.map((r) => r.e2eMs),
    ),
    input_lens: ok.map((r) => r.inputTokens),
    output_lens: ok.map((r) => r.outputTokens),
    ttfts: ok.map((r) => r.ttftMs / 1000),
    errors: results.filter((r) => !r.ok).map((r) => r.error ?? 'unknown'),
  };
}

/** A one-line progress bar on stderr. */
export function progressBar(label: string): (done: number, total: number) => void {
  const start = performance.now();
  return (done, total) => {
    if (!process.stderr.isTTY && done !== total && done % Math.max(1, Math.floor(total / 10)) !== 0) return;
    const width = 30;
    const filled = Math.round((width * done) / total);
    const secs = ((performance.now() - start) / 1000).toFixed(1);
    process.stderr.write(
      `${process.stderr.isTTY ? '\r' : ''}${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} ${secs}s${process.stderr.isTTY && done < total ? '' : '\n'}`,
    );
  };
}
