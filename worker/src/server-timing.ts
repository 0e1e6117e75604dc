// One generation request's phases, as a `Server-Timing` field (https://www.w3.org/TR/server-timing/): what the HTTP
// path spends before and after the engine, so a client can tell the TTFT the worker adds from the engine's own
// (added TTFT = the client's TTFT − `engine-ttft`, both durations: no clock is shared between processes).
//
// Both:
//   recv         the request handed to the app (headers parsed) → route entered: express routing, the body read and
//                parsed (absent where the app's first middleware did not stamp the request)
// Streaming (an HTTP trailer, declared with `Trailer: Server-Timing`):
//   pre          route entered → the sequence that first streamed output was submitted to the engine
//                (validation, tokenization, prompt rendering, admission)
//   engine-ttft  that submission → the engine step that produced that output delivered to JS by the addon
//   post         that delivery → the chunk carrying it written (res.write returned)
// recv + pre + engine-ttft + post is the worker's time to its first streamed output. A stream that wrote no output
// gets `recv` and `pre` only.
// Non-streaming (a header, written with the body):
//   pre          route entered → first sequence submitted
//   engine-ttft  that submission → the first generated tokens delivered to JS
//   engine       that submission → the last sequence finished
//   post         last sequence finished → the response body serialized (just before the header is written)
// Cost: a few performance.now() calls per request; per engine step, one comparison until the first output is written.

export const SERVER_TIMING = 'Server-Timing';

const dur = (name: string, from: number, to: number): string => `${name};dur=${Math.max(0, to - from).toFixed(3)}`;

export class RequestTiming {
  /** performance.now() of the first submission to the engine. */
  private firstSubmitted?: number;
  /** The first delivery of generated tokens (any sequence), and its sequence's submission. */
  private firstDelivery?: number;
  private firstDeliverySubmitted?: number;
  /** The delivery being handled now, until the first output is written. */
  private currentSubmitted = 0;
  private currentDelivery = 0;
  /** Fixed by the first written output. */
  private outputSubmitted?: number;
  private outputDelivery?: number;
  private outputWritten?: number;

  /** `received`: performance.now() when the route was entered; `requestStart`: when the app got the request. */
  constructor(
    readonly received: number,
    private readonly streaming: boolean,
    private readonly requestStart?: number,
  ) {}

  private recv(parts: string[]): string[] {
    if (this.requestStart !== undefined) parts.unshift(dur('recv', this.requestStart, this.received));
    return parts;
  }

  /** Whether deliveries still matter: a stream's until its first output is written, else only the first. */
  get waitingForDelivery(): boolean {
    return this.streaming ? this.outputWritten === undefined : this.firstDelivery === undefined;
  }

  submitted(at: number): void {
    if (this.firstSubmitted === undefined) this.firstSubmitted = at;
  }

  /** Tokens of a sequence submitted at `submitted` are being handed to the route; they arrived in JS at `delivered`. */
  delivering(submitted: number, delivered: number): void {
    if (this.firstDelivery === undefined) {
      this.firstDelivery = delivered;
      this.firstDeliverySubmitted = submitted;
    }
    this.currentSubmitted = submitted;
    this.currentDelivery = delivered;
  }

  /** The route wrote a chunk carrying generated output (call after the write returned); only the first counts. */
  wroteOutput(): void {
    if (this.outputWritten !== undefined) return;
    this.outputWritten = performance.now();
    this.outputSubmitted = this.currentSubmitted;
    this.outputDelivery = this.currentDelivery;
  }

  /** The field for a stream's trailer. */
  streamValue(): string {
    if (this.outputWritten !== undefined) {
      return this.recv([
        dur('pre', this.received, this.outputSubmitted!),
        dur('engine-ttft', this.outputSubmitted!, this.outputDelivery!),
        dur('post', this.outputDelivery!, this.outputWritten),
      ]).join(', ');
    }
    return this.recv(this.firstSubmitted !== undefined ? [dur('pre', this.received, this.firstSubmitted)] : []).join(
      ', ',
    );
  }

  /** The field for a non-streaming response: `finished` when the last sequence ended, `now` once the body is ready. */
  responseValue(finished: number, now = performance.now()): string {
    const parts: string[] = [];
    if (this.firstSubmitted !== undefined) {
      parts.push(dur('pre', this.received, this.firstSubmitted));
      if (this.firstDelivery !== undefined) {
        parts.push(dur('engine-ttft', this.firstDeliverySubmitted!, this.firstDelivery));
      }
      parts.push(dur('engine', this.firstSubmitted, finished));
    }
    parts.push(dur('post', finished, now));
    return this.recv(parts).join(', ');
  }
}
