// spec.model.architecture of a ModelDeployment (the operator writes it into engine.json as model.architecture): unset,
// the worker serves what the checkpoint is; set, the loaded checkpoint must be that architecture, else the worker
// refuses to serve it (a deployment that names a llama model must not silently serve a gpt-oss checkpoint).
import { readFileSync } from 'node:fs';
import type { ModelInfo } from '../engine/types.js';

/** The Hugging Face architecture name of each engine architecture (ms_model_info.architecture). */
const ARCHITECTURES: Record<string, string> = {
  gpt_oss: 'GptOssForCausalLM',
  llama: 'LlamaForCausalLM',
};

export function architectureName(info: Pick<ModelInfo, 'architecture'>): string {
  return ARCHITECTURES[info.architecture] ?? info.architecture;
}

/** model.architecture from the operator's engine.json; undefined when the file or the field is absent. */
export function readExpectedArchitecture(path: string): string | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`${path}: ${(err as Error).message}`);
  }
  const value = (parsed as { model?: { architecture?: unknown } }).model?.architecture;
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw new Error(`${path}: model.architecture must be a string`);
  return value;
}

/** An error message when the loaded model is not the expected architecture, else undefined. */
export function architectureMismatch(
  expected: string | undefined,
  info: Pick<ModelInfo, 'architecture'>,
): string | undefined {
  if (expected === undefined) return undefined;
  const actual = architectureName(info);
  return actual === expected
    ? undefined
    : `spec.model.architecture is ${expected} but the checkpoint is ${actual}: fix the source or the architecture`;
}
