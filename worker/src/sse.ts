// Server-sent events as OpenAI streams them: `data: {json}\n\n` per chunk, then `data: [DONE]\n\n`.
import type { Response } from 'express';
import { SERVER_TIMING, type RequestTiming } from './server-timing.js';

/** `trailer`: a trailer field the stream will end with (declared in the headers; only over chunked HTTP/1.1). */
export function startEventStream(res: Response, trailer?: string): void {
  res.status(200);
  res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
  res.setHeader('Cache-Control', 'no-cache');
  res.setHeader('Connection', 'keep-alive');
  res.setHeader('X-Accel-Buffering', 'no');
  if (trailer) res.setHeader('Trailer', trailer);
  res.flushHeaders();
}

/** Whether the response goes out in chunks and so can carry trailers: HTTP/1.1 and later (node refuses a declared
 * trailer on an HTTP/1.0 response, which has no chunked encoding). */
const canSendTrailers = (res: Response): boolean =>
  res.req.httpVersionMajor > 1 || (res.req.httpVersionMajor === 1 && res.req.httpVersionMinor >= 1);

export function sendEvent(res: Response, data: unknown): void {
  sendEventJson(res, JSON.stringify(data));
}

/** An event whose data is already JSON text (routes that serialize their per-token chunks themselves). */
export function sendEventJson(res: Response, json: string): void {
  if (!res.writableEnded && !res.destroyed) res.write(`data: ${json}\n\n`);
}

export function endEventStream(res: Response): void {
  if (!res.writableEnded && !res.destroyed) res.end('data: [DONE]\n\n');
}

/**
 * An event stream that opens (headers, then `prologue`'s events) on its first event or on `open()`, whichever comes
 * first. Routes call `openSoon()` right after submitting their sequences, so the header write (a syscall) is not on
 * the path from the request's arrival to the engine, nor on that of requests read in the same turn of the event loop,
 * while clients still get the headers before any token.
 */
export class EventStream {
  private opened = false;
  private trailers = false;

  /** `timing`: the request's phases, sent as a `Server-Timing` trailer when the stream ends. */
  constructor(
    private readonly res: Response,
    private readonly prologue?: () => void,
    private readonly timing?: RequestTiming,
  ) {}

  open(): void {
    if (this.opened) return;
    this.opened = true;
    this.trailers = this.timing !== undefined && canSendTrailers(this.res);
    startEventStream(this.res, this.trailers ? SERVER_TIMING : undefined);
    this.prologue?.();
  }

  /**
   * `open()` once the event loop has handled the I/O that is ready now (setImmediate): when a burst of requests is
   * waiting to be read (streams that ended at the same engine step are followed by their clients' next requests), each
   * request's header write (a syscall, ≈ 0.2 ms) then comes after the others were read and submitted, not before.
   * The headers still go first: any event, or `end()`, opens the stream before writing.
   */
  openSoon(): void {
    if (this.opened) return;
    setImmediate(() => {
      if (!this.res.destroyed && !this.res.writableEnded) this.open();
    });
  }

  send(data: unknown): void {
    this.open();
    sendEvent(this.res, data);
  }

  /** `send` for data already serialized to JSON. */
  sendJson(json: string): void {
    this.open();
    sendEventJson(this.res, json);
  }

  end(): void {
    this.open();
    if (this.trailers && !this.res.writableEnded && !this.res.destroyed) {
      const value = this.timing!.streamValue();
      if (value) this.res.addTrailers({ [SERVER_TIMING]: value });
    }
    endEventStream(this.res);
  }
}
