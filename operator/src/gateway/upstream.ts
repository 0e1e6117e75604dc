// One attempt to serve a request on one worker. Nothing reaches the client until the worker has produced its first
// body byte, so a worker that refuses the connection, answers 503/429 or dies before that can be retried on another.
// From then on SSE passes through event by event as it arrives (no buffering, Nagle off, no compression), and a worker
// that dies mid-stream ends the client's stream with an error event. The worker's token usage is read on the way.
import http from 'node:http';
import type { ServerResponse } from 'node:http';

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens?: number;
}

export interface UpstreamRequest {
  /** host:port of the worker. */
  endpoint: string;
  path: string;
  body: Buffer;
  headers: Record<string, string>;
  stream: boolean;
  /** The gateway asked for stream usage on its own account: keep the usage-only chunk from the client. */
  dropUsageChunk: boolean;
  /** Aborted when the client goes away. */
  signal: AbortSignal;
}

export type RetryKind = 'connect' | 'unavailable' | 'reset-before-first-byte';

export type Attempt =
  | {
      outcome: 'retry';
      kind: RetryKind;
      message: string;
      /** The worker's own answer (503 or 429), passed to the client when no attempt is left. */
      response?: { status: number; headers: http.IncomingHttpHeaders; body: Buffer };
    }
  | {
      outcome: 'done';
      status: number;
      usage?: Usage;
      /** Set when the worker failed after the client had bytes: the stream was ended with an error event. */
      midStreamError?: string;
      clientGone?: boolean;
    };

const RETRYABLE_STATUS = new Set([503, 429]);
const MAX_BUFFERED_BODY = 64 * 1024 * 1024;

export function createUpstreamAgent(): http.Agent {
  // Idle sockets are dropped after 4 s, before the worker's own keep-alive timeout (Node's default 5 s) closes them
  // under a request that is just being sent on them. (An active stream is not affected by this timeout.)
  return new http.Agent({ keepAlive: true, timeout: 4_000, maxSockets: Infinity, maxFreeSockets: 1024 });
}

function usageOf(value: unknown): Usage | undefined {
  const u = (value as { usage?: unknown } | null)?.usage as Partial<Usage> | null | undefined;
  if (!u || typeof u.prompt_tokens !== 'number' || typeof u.completion_tokens !== 'number') return undefined;
  return { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens, total_tokens: u.total_tokens };
}

/** Splits SSE text into whole events (`...\n\n`); the partial rest waits for the next chunk. */
export class SseSplitter {
  private rest = '';
  push(text: string): string[] {
    this.rest += text;
    const events: string[] = [];
    let at: number;
    while ((at = this.rest.indexOf('\n\n')) !== -1) {
      events.push(this.rest.slice(0, at + 2));
      this.rest = this.rest.slice(at + 2);
    }
    return events;
  }
  get pending(): string {
    return this.rest;
  }
}

/** Inspects one SSE event: its usage, and whether it is the usage-only final chunk. */
export function inspectEvent(event: string): { usage?: Usage; usageOnly: boolean } {
  if (!event.includes('"usage":{')) return { usageOnly: false };
  const data = event
    .split('\n')
    .filter((l) => l.startsWith('data:'))
    .map((l) => l.slice(5).trimStart())
    .join('\n');
  try {
    const parsed = JSON.parse(data) as { choices?: unknown[] };
    const usage = usageOf(parsed);
    return { usage, usageOnly: usage !== undefined && Array.isArray(parsed.choices) && parsed.choices.length === 0 };
  } catch {
    return { usageOnly: false };
  }
}

const SSE_HEADERS = {
  'Content-Type': 'text/event-stream; charset=utf-8',
  'Cache-Control': 'no-cache, no-transform',
  Connection: 'keep-alive',
  'X-Accel-Buffering': 'no',
};

function streamErrorEvent(message: string): string {
  return `data: ${JSON.stringify({ error: { message, type: 'server_error', param: null, code: 'upstream_error' } })}\n\n`;
}

export function forward(
  agent: http.Agent,
  up: UpstreamRequest,
  res: ServerResponse,
  /** Called once the first bytes are written to the client, with the time they arrived from the worker. */
  onFirstByte: (receivedAt: number) => void,
): Promise<Attempt> {
  const colon = up.endpoint.lastIndexOf(':');
  const host = up.endpoint.slice(0, colon).replace(/^\[|\]$/g, '');
  const port = Number(up.endpoint.slice(colon + 1));
  return new Promise<Attempt>((resolve) => {
    let settled = false;
    const finish = (a: Attempt) => {
      if (settled) return;
      settled = true;
      up.signal.removeEventListener('abort', onAbort);
      resolve(a);
    };
    const req = http.request({
      host,
      port,
      method: 'POST',
      path: up.path,
      agent,
      headers: { ...up.headers, 'Content-Length': String(up.body.length) },
    });
    const onAbort = () => {
      req.destroy();
      finish({ outcome: 'done', status: 499, clientGone: true });
    };
    up.signal.addEventListener('abort', onAbort, { once: true });
    req.on('socket', (s) => s.setNoDelay(true));
    req.on('error', (err) => finish({ outcome: 'retry', kind: 'connect', message: `${up.endpoint}: ${err.message}` }));
    req.on('response', (upRes) => {
      const status = upRes.statusCode ?? 502;
      // Any failure from here on is a worker that answered and then went away.
      req.removeAllListeners('error');
      req.on('error', () => {});
      if (RETRYABLE_STATUS.has(status) || !up.stream || status !== 200) {
        bufferBody(upRes, status, up, res, finish);
      } else {
        pipeStream(upRes, up, res, onFirstByte, finish);
      }
    });
    req.end(up.body);
  });
}

function bufferBody(
  upRes: http.IncomingMessage,
  status: number,
  up: UpstreamRequest,
  res: ServerResponse,
  finish: (a: Attempt) => void,
): void {
  const chunks: Buffer[] = [];
  let size = 0;
  upRes.on('data', (c: Buffer) => {
    size += c.length;
    if (size <= MAX_BUFFERED_BODY) chunks.push(c);
  });
  upRes.on('error', () => {});
  upRes.on('close', () => {
    if (!upRes.complete) {
      finish({
        outcome: 'retry',
        kind: 'reset-before-first-byte',
        message: `${up.endpoint}: connection lost mid-response`,
      });
      return;
    }
    const body = Buffer.concat(chunks);
    if (RETRYABLE_STATUS.has(status)) {
      finish({
        outcome: 'retry',
        kind: 'unavailable',
        message: `${up.endpoint}: answered ${status}`,
        response: { status, headers: upRes.headers, body },
      });
      return;
    }
    let usage: Usage | undefined;
    if (status === 200) {
      try {
        usage = usageOf(JSON.parse(body.toString('utf8')));
      } catch {
        /* not JSON: pass it on as is */
      }
    }
    if (res.destroyed) {
      finish({ outcome: 'done', status: 499, usage, clientGone: true });
      return;
    }
    res.writeHead(status, {
      'Content-Type': upRes.headers['content-type'] ?? 'application/json',
      'Content-Length': String(body.length),
      ...(upRes.headers['retry-after'] ? { 'Retry-After': upRes.headers['retry-after'] } : {}),
    });
    res.end(body);
    finish({ outcome: 'done', status, usage });
  });
}

function pipeStream(
  upRes: http.IncomingMessage,
  up: UpstreamRequest,
  res: ServerResponse,
  onFirstByte: (receivedAt: number) => void,
  finish: (a: Attempt) => void,
): void {
  const splitter = new SseSplitter();
  let started = false;
  let usage: Usage | undefined;
  upRes.setEncoding('utf8');
  upRes.on('data', (text: string) => {
    if (res.destroyed) return;
    const receivedAt = performance.now();
    const events = splitter.push(text);
    let out = '';
    for (const ev of events) {
      const seen = inspectEvent(ev);
      if (seen.usage) usage = seen.usage;
      if (seen.usageOnly && up.dropUsageChunk) continue;
      out += ev;
    }
    if (out === '') return;
    const first = !started;
    if (first) {
      started = true;
      res.writeHead(200, SSE_HEADERS);
    }
    // Each write goes out as its own chunk at once: Nagle is off on both sockets and nothing compresses.
    const flushed = res.write(out);
    if (first) onFirstByte(receivedAt);
    if (!flushed) {
      // A slow client: hold the worker's stream until the socket drains (TCP pushes back on the worker in turn).
      upRes.pause();
      res.once('drain', () => upRes.resume());
    }
  });
  upRes.on('error', () => {});
  upRes.on('close', () => {
    if (res.destroyed) {
      finish({ outcome: 'done', status: 499, usage, clientGone: true });
      return;
    }
    if (upRes.complete) {
      if (!started) {
        // A 200 with an empty stream: still a valid (if odd) answer.
        res.writeHead(200, SSE_HEADERS);
        onFirstByte(performance.now());
      }
      res.end(splitter.pending);
      finish({ outcome: 'done', status: 200, usage });
      return;
    }
    if (!started) {
      finish({
        outcome: 'retry',
        kind: 'reset-before-first-byte',
        message: `${up.endpoint}: stream lost before its first event`,
      });
      return;
    }
    const message = `the worker ${up.endpoint} failed mid-stream`;
    if (!res.destroyed) res.end(streamErrorEvent(message));
    finish({ outcome: 'done', status: 200, usage, midStreamError: message });
  });
}
