// Graceful shutdown: on SIGTERM the worker reports not-ready at once (so the Service stops routing to it), refuses new
// API requests with 503 + Retry-After, lets in-flight streams finish for up to the grace period, then exits 0.
import type { Server } from 'node:http';
import type { WorkerContext } from './context.js';

export interface DrainOptions {
  graceSeconds: number;
  /** Called after the server closed (e.g. engine.close, tracing flush). */
  onClosed?: () => Promise<void>;
}

/** Starts draining; resolves when the worker may exit (idle or grace elapsed). Idempotent. */
export async function drain(ctx: WorkerContext, server: Server, options: DrainOptions): Promise<'idle' | 'grace'> {
  ctx.state.draining = true;
  const inflight = ctx.state.inflightRequests;
  ctx.logger.info('draining', { inflight, graceSeconds: options.graceSeconds });
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([
    ctx.state.idle().then(() => 'idle' as const),
    new Promise<'grace'>((resolve) => (timer = setTimeout(() => resolve('grace'), options.graceSeconds * 1000))),
  ]);
  clearTimeout(timer);
  ctx.logger.info('drained', { outcome, left: ctx.state.inflightRequests });
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await options.onClosed?.();
  return outcome;
}

export function installSignalHandlers(ctx: WorkerContext, server: Server, options: DrainOptions): void {
  let started = false;
  const onSignal = (signal: string): void => {
    if (started) return;
    started = true;
    ctx.logger.info('signal received', { signal });
    drain(ctx, server, options).then(
      () => process.exit(0),
      (err: unknown) => {
        ctx.logger.error('drain failed', { error: String(err) });
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
}
