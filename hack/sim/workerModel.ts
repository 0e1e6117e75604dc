// A roofline model of one worker replica serving gpt-oss-120b on one H100 (80 GB), used by the autoscaler simulator.
// One engine step processes every running decode (one token each) plus a chunk of prefill tokens under the token
// budget; it takes the longer of its memory time (weights touched + KV read, over HBM bandwidth) and its compute time
// (2 FLOPs per active parameter per token + attention, at an assumed utilisation), plus a fixed overhead.
// Shapes are from notes/gpt-oss.md; the efficiency factors are assumptions, stated here, to be replaced by the
// engine's measured figures when they exist.

export interface WorkerModel {
  name: string;
  /** Peak dense bf16 FLOP/s of the GPU. */
  peakFlops: number;
  /** Fraction of peak a prefill-heavy step reaches (assumed). */
  computeEfficiency: number;
  /** HBM bytes/s. */
  memBandwidth: number;
  /** Fraction of HBM bandwidth a step reaches (assumed). */
  memEfficiency: number;
  /** Per-step fixed cost: scheduling, sampling, kernel launches (assumed). */
  stepOverheadS: number;
  activeParams: number;
  /** Bytes read every step regardless of batch: attention/router/embedding weights in bf16, unembedding. */
  denseBytes: number;
  layers: number;
  expertsPerLayer: number;
  expertsPerToken: number;
  bytesPerExpert: number;
  /** KV bytes per token summed over the full-attention layers (sliding layers hold at most 128 tokens). */
  kvBytesPerToken: number;
  fullAttentionLayers: number;
  queryWidth: number;
  /** Engine limits. */
  maxBatchedTokens: number;
  maxSeqs: number;
}

export const GPT_OSS_120B_H100: WorkerModel = {
  name: 'gpt-oss-120b on 1x H100 80GB (roofline)',
  peakFlops: 989e12,
  computeEfficiency: 0.3,
  memBandwidth: 3.35e12,
  memEfficiency: 0.8,
  stepOverheadS: 0.003,
  activeParams: 5.13e9,
  // 5.003 GB read at batch 1 minus the 4 experts x 36 layers touched then.
  denseBytes: 5.003e9 - 4 * 36 * 13_236_480,
  layers: 36,
  expertsPerLayer: 128,
  expertsPerToken: 4,
  bytesPerExpert: 13_236_480,
  kvBytesPerToken: 36_864,
  fullAttentionLayers: 18,
  queryWidth: 4096,
  maxBatchedTokens: 8192,
  maxSeqs: 64,
};

/** Expected distinct experts a layer touches for `tokens` tokens routed independently. */
export function expertsTouched(m: WorkerModel, tokens: number): number {
  if (tokens <= 0) return 0;
  const pMiss = 1 - m.expertsPerToken / m.expertsPerLayer;
  return m.expertsPerLayer * (1 - Math.pow(pMiss, tokens));
}

export interface StepShape {
  /** Sequences decoding one token each. */
  decodes: number;
  /** Prefill tokens in this step. */
  prefillTokens: number;
  /** Sum of the positions the prefill tokens attend up to (for attention FLOPs). */
  prefillAttendTokens: number;
  /** Tokens of KV cache the step reads (contexts of all sequences in the batch). */
  kvTokens: number;
}

export function stepSeconds(m: WorkerModel, s: StepShape): number {
  const tokens = s.decodes + s.prefillTokens;
  if (tokens === 0) return 0;
  const bytes = m.denseBytes + m.layers * m.bytesPerExpert * expertsTouched(m, tokens) + m.kvBytesPerToken * s.kvTokens;
  const memS = bytes / (m.memBandwidth * m.memEfficiency);
  // Matmuls: 2 FLOPs per active parameter per token. Attention (full layers): QK^T and PV, 2 x 2 x width per pair.
  const attnFlops = 4 * m.fullAttentionLayers * m.queryWidth * (s.prefillAttendTokens + s.kvTokens);
  const flops = 2 * m.activeParams * tokens + attnFlops;
  const computeS = flops / (m.peakFlops * m.computeEfficiency);
  return m.stepOverheadS + Math.max(memS, computeS);
}

/** Prefill tokens per second of one replica with full-budget prefill steps (for static provisioning). */
export function prefillThroughput(m: WorkerModel, meanContext: number): number {
  const tokens = m.maxBatchedTokens;
  const t = stepSeconds(m, {
    decodes: 0,
    prefillTokens: tokens,
    prefillAttendTokens: (tokens * meanContext) / 2,
    kvTokens: 0,
  });
  return tokens / t;
}
