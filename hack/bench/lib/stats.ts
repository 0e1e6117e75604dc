// Summary statistics with the keys `vllm bench serve` writes (mean_/median_/std_/pNN_<metric>_ms).
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  // Linear interpolation between closest ranks (numpy's default), as vLLM's numbers are computed.
  const rank = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (rank - lo);
}

export function summarize(
  name: string,
  valuesMs: readonly number[],
  percentiles = [50, 90, 99],
): Record<string, number> {
  const sorted = [...valuesMs].sort((a, b) => a - b);
  const n = sorted.length;
  const mean = n ? sorted.reduce((s, v) => s + v, 0) / n : 0;
  const std = n ? Math.sqrt(sorted.reduce((s, v) => s + (v - mean) ** 2, 0) / n) : 0;
  const out: Record<string, number> = {
    [`mean_${name}_ms`]: mean,
    [`median_${name}_ms`]: percentile(sorted, 50),
    [`std_${name}_ms`]: std,
  };
  for (const p of percentiles) out[`p${p}_${name}_ms`] = percentile(sorted, p);
  return out;
}
