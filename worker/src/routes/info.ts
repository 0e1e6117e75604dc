// GET /v1/models, /health (liveness: the process serves HTTP), /ready (weights loaded, KV allocated, not draining)
// and /metrics (Prometheus text).
import type { Request, Response } from 'express';
import type { WorkerContext } from '../context.js';
import { modelNotFound } from '../openai/errors.js';
import { unixSeconds } from './common.js';

const STARTED = unixSeconds();

function modelCard(ctx: WorkerContext): Record<string, unknown> {
  return {
    id: ctx.config.servedModelName,
    object: 'model',
    created: STARTED,
    owned_by: 'modelserve',
    root: ctx.config.servedModelName,
    parent: null,
    ...(ctx.engine ? { max_model_len: ctx.engine.options.maxContext } : {}),
  };
}

export function listModels(ctx: WorkerContext, _req: Request, res: Response): void {
  res.json({ object: 'list', data: [modelCard(ctx)] });
}

export function getModel(ctx: WorkerContext, req: Request, res: Response): void {
  const id = String(req.params.model);
  if (id !== ctx.config.servedModelName) throw modelNotFound(id);
  res.json(modelCard(ctx));
}

export function health(_ctx: WorkerContext, _req: Request, res: Response): void {
  res.json({ status: 'ok' });
}

export function ready(ctx: WorkerContext, _req: Request, res: Response): void {
  if (ctx.ready) {
    res.json({ status: 'ready', model: ctx.config.servedModelName });
    return;
  }
  res.status(503).json({ status: ctx.state.draining ? 'draining' : 'loading', model: ctx.config.servedModelName });
}

export async function metrics(ctx: WorkerContext, _req: Request, res: Response): Promise<void> {
  res.setHeader('Content-Type', ctx.metrics.registry.contentType);
  res.send(await ctx.metrics.registry.metrics());
}
