// Synthetic prompts of exact token lengths: token ids drawn from ordinary (non-special) o200k tokens, sent to
// /v1/completions as ids so the server sees exactly the requested length; for chat, their decoded text.
export function makeRng(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    // xorshift32: deterministic prompts for a given seed.
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
}

/** Ordinary text tokens: ids below the specials, away from the rare byte-fallback ranks at the start. */
const FIRST = 1000;
const LAST = 199_000;

export function promptTokens(length: number, rng: () => number): number[] {
  return Array.from({ length }, () => FIRST + Math.floor(rng() * (LAST - FIRST)));
}
