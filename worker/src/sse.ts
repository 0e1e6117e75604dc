// Server-sent events as OpenAI streams them: `data: {json}\n\n` per chunk, then `data: [DONE]\n\n`.
import type { Response } from 'express';

export function startEventStream(res: Response): void {
  res.status(200);
  res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
  res.setHeader('Cache-Control', 'no-cache');
  res.setHeader('Connection', 'keep-alive');
  res.setHeader('X-Accel-Buffering', 'no');
  res.flushHeaders();
}

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
 * first. Routes call `open()` right after submitting their sequences, so the header write (a syscall) is not on the
 * path from the request's arrival to the engine, while clients still get the headers before any token.
 */
export class EventStream {
  private opened = false;

  constructor(
    private readonly res: Response,
    private readonly prologue?: () => void,
  ) {}

  open(): void {
    if (this.opened) return;
    this.opened = true;
    startEventStream(this.res);
    this.prologue?.();
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
    endEventStream(this.res);
  }
}
