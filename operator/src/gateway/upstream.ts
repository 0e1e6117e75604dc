// One attempt to serve a request on one worker. Nothing reaches the client until the worker has produced its first
// body byte, so a worker that refuses the connection, answers 503/429 or dies before that can be retried on another.
// From then on SSE passes through event by event as it arrives (no buffering, Nagle off, no compression) as the
// worker's own bytes, and a worker that dies mid-stream ends the client's stream with an error event. The worker's
// token usage is read on the way from its final usage chunk, the only event that is decoded.
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

const EVENT_END = Buffer.from('\n\n');
const USAGE_OBJECT = Buffer.from('"usage":{');

/**
 * Splits an SSE byte stream into runs of whole events (`...\n\n`); a partial event waits for the next chunk. Works on
 * bytes, never decoding: `\n` cannot occur inside a multi-byte UTF-8 character, so every event is whole text. A chunk
 * that ends on an event boundary (the worker writes one event per write, so nearly all do) comes back as itself.
 */
export class SseSplitter {
  private rest: Buffer | undefined;
  /** The whole events completed by `chunk` (with what was pending), as one buffer; empty when none is complete. */
  push(chunk: Buffer): Buffer {
    const data = this.rest ? Buffer.concat([this.rest, chunk]) : chunk;
    const at = data.lastIndexOf(EVENT_END);
    const end = at === -1 ? 0 : at + EVENT_END.length;
    if (end === data.length) {
      this.rest = undefined;
      return data;
    }
    // A copy, so that a kept tail does not pin (or alias) the read buffer it came in.
    this.rest = Buffer.from(data.subarray(end));
    return data.subarray(0, end);
  }
  get pending(): Buffer {
    return this.rest ?? Buffer.alloc(0);
  }
}

/** Each whole event of `events` (runs of `...\n\n`), as bytes. */
function eachEvent(events: Buffer, fn: (event: Buffer) => void): void {
  for (let from = 0; from < events.length;) {
    const at = events.indexOf(EVENT_END, from);
    const end = at === -1 ? events.length : at + EVENT_END.length;
    fn(events.subarray(from, end));
    from = end;
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

/**
 * A stream's first writes (the worker's role chunk, sent when the request enters the engine, then its first token) go
 * to the client at once; later ones wait for the end of the event loop's I/O phase (setImmediate), in order and
 * within the same turn of the loop. A worker emits one step's tokens for all its streams in one burst, and the
 * gateway relays them one by one: held this way, the reads of the whole burst, new requests' forwarding and first
 * tokens come before the writes of streams already under way, instead of a first token (or a new request) waiting
 * behind up to one write per stream in flight. Nothing is held past the turn, and a stream's bytes keep their order.
 */
const WRITES_AT_ONCE = 2;
const heldStreams = new Set<() => void>();
let heldFlushScheduled = false;

function holdToEndOfIo(flush: () => void): void {
  heldStreams.add(flush);
  if (heldFlushScheduled) return;
  heldFlushScheduled = true;
  setImmediate(() => {
    heldFlushScheduled = false;
    for (const f of heldStreams) f();
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
  let writesAtOnce = 0;
  let held: Buffer[] = [];
  const write = (out: Buffer) => {
    if (!res.write(out)) {
      // A slow client: hold the worker's stream until the socket drains (TCP pushes back on the worker in turn).
      upRes.pause();
      res.once('drain', () => upRes.resume());
    }
  };
  const flushHeld = () => {
    heldStreams.delete(flushHeld);
    if (held.length === 0) return;
    const out = held.length === 1 ? (held[0] as Buffer) : Buffer.concat(held);
    held = [];
    if (!res.destroyed) write(out);
  };
  upRes.on('data', (chunk: Buffer) => {
    if (res.destroyed) return;
    const receivedAt = performance.now();
    let out = splitter.push(chunk);
    // Only the final usage chunk has a usage object ("usage":null elsewhere): events without one pass as the
    // worker's bytes, undecoded; an event with one is read for the token counts (and dropped if the gateway asked).
    if (out.indexOf(USAGE_OBJECT) !== -1) {
      const kept: Buffer[] = [];
      eachEvent(out, (ev) => {
        if (ev.indexOf(USAGE_OBJECT) !== -1) {
          const seen = inspectEvent(ev.toString('utf8'));
          if (seen.usage) usage = seen.usage;
          if (seen.usageOnly && up.dropUsageChunk) return;
        }
        kept.push(ev);
      });
      out = kept.length === 1 ? (kept[0] as Buffer) : Buffer.concat(kept);
    }
    if (out.length === 0) return;
    const first = !started;
    if (first) {
      started = true;
      res.writeHead(200, SSE_HEADERS);
    }
    if (writesAtOnce < WRITES_AT_ONCE && held.length === 0) {
      // Nagle is off on both sockets and nothing compresses: this goes out as its own chunk now.
      writesAtOnce++;
      write(out);
      if (first) onFirstByte(receivedAt);
    } else {
      held.push(out);
      holdToEndOfIo(flushHeld);
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
      flushHeld();
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
    flushHeld();
    if (!res.destroyed) res.end(streamErrorEvent(message));
    finish({ outcome: 'done', status: 200, usage, midStreamError: message });
  });
}
