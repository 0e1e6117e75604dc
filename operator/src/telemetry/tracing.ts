// Tracing through the OpenTelemetry API only: spans are no-ops unless the process registers an SDK and exporter
// (for example with `node --import @opentelemetry/auto-instrumentations-node/register`), so the operator carries
// no exporter dependency of its own.
import { SpanStatusCode, trace, type Span } from '@opentelemetry/api';

export const tracer = trace.getTracer('modelserve-operator');

/** Runs fn inside a span named `name`; records the error and rethrows on failure. */
export async function withSpan<T>(
  name: string,
  attributes: Record<string, string | number | boolean>,
  fn: (span: Span) => Promise<T>,
): Promise<T> {
  return tracer.startActiveSpan(name, { attributes }, async (span) => {
    try {
      return await fn(span);
    } catch (err) {
      span.recordException(err as Error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: String(err) });
      throw err;
    } finally {
      span.end();
    }
  });
}
