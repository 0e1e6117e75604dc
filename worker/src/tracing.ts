// OpenTelemetry traces: one span per HTTP request with child spans `queue`, `prefill` and `decode` per engine sequence,
// continuing the caller's trace when a W3C `traceparent` header arrives (gateway → worker → engine). Off by default;
// MODELSERVE_TRACES=console prints finished spans, =memory keeps them for tests.
import { context, trace, TraceFlags, type Context, type Span, type Tracer } from '@opentelemetry/api';
import {
  BasicTracerProvider,
  ConsoleSpanExporter,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-base';

export type TracingMode = 'off' | 'console' | 'memory';

export interface Tracing {
  tracer: Tracer;
  /** Set in 'memory' mode. */
  memory?: InMemorySpanExporter;
  shutdown(): Promise<void>;
}

export function initTracing(mode: TracingMode): Tracing {
  if (mode === 'off') return { tracer: trace.getTracer('modelserve-worker'), shutdown: async () => {} };
  const memory = mode === 'memory' ? new InMemorySpanExporter() : undefined;
  const processors: SpanProcessor[] = [new SimpleSpanProcessor(memory ?? new ConsoleSpanExporter())];
  const provider = new BasicTracerProvider({ spanProcessors: processors });
  return { tracer: provider.getTracer('modelserve-worker'), memory, shutdown: () => provider.shutdown() };
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** The parent context from a `traceparent` header, or the active context when absent or malformed. */
export function parentContext(traceparent: string | undefined): Context {
  const match = traceparent ? TRACEPARENT.exec(traceparent.trim()) : null;
  if (!match) return context.active();
  return trace.setSpanContext(context.active(), {
    traceId: match[1]!,
    spanId: match[2]!,
    traceFlags: parseInt(match[3]!, 16) & TraceFlags.SAMPLED,
    isRemote: true,
  });
}

/** Wall-clock milliseconds for a `performance.now()` reading. */
export const wallMs = (perfNow: number): number => performance.timeOrigin + perfNow;

export class RequestTrace {
  readonly root: Span;
  /** Set while the root span records. A root that does not (no tracer provider: tracing off; or not sampled) gets
   * no child spans: they would not record either, and making them cost ≈ 0.05 ms of every request. */
  private readonly ctx?: Context;

  constructor(
    private readonly tracer: Tracer,
    name: string,
    traceparent: string | undefined,
    attributes: Record<string, string | number>,
  ) {
    this.root = tracer.startSpan(name, { attributes }, parentContext(traceparent));
    if (this.root.isRecording()) this.ctx = trace.setSpan(context.active(), this.root);
  }

  /** A finished phase of one sequence, from `performance.now()` readings in ms. */
  phase(
    name: 'queue' | 'prefill' | 'decode',
    startMs: number,
    endMs: number,
    attributes: Record<string, number> = {},
  ): void {
    if (!this.ctx) return;
    this.tracer.startSpan(name, { startTime: wallMs(startMs), attributes }, this.ctx).end(wallMs(endMs));
  }

  end(attributes: Record<string, string | number> = {}): void {
    this.root.setAttributes(attributes);
    this.root.end();
  }
}
