// Request bodies of the OpenAI API as zod schemas. Unknown fields are ignored (as OpenAI-compatible servers do);
// out-of-range values fail with the parameter's name. Features the engine does not have are refused explicitly.
import { z } from 'zod';

const textPart = z.object({ type: z.string(), text: z.string().optional() });
const content = z
  .union([z.string(), z.array(textPart)])
  .nullable()
  .optional();

const toolCall = z.object({
  id: z.string(),
  type: z.literal('function').optional(),
  function: z.object({ name: z.string().min(1), arguments: z.string() }),
});

const message = z.discriminatedUnion('role', [
  z.object({ role: z.literal('system'), content, name: z.string().optional() }),
  z.object({ role: z.literal('developer'), content, name: z.string().optional() }),
  z.object({ role: z.literal('user'), content, name: z.string().optional() }),
  z.object({
    role: z.literal('assistant'),
    content,
    name: z.string().optional(),
    reasoning_content: z.string().nullable().optional(),
    reasoning: z.string().nullable().optional(),
    tool_calls: z.array(toolCall).nullable().optional(),
  }),
  z.object({ role: z.literal('tool'), content, tool_call_id: z.string().optional(), name: z.string().optional() }),
]);

const functionTool = z.object({
  type: z.literal('function'),
  function: z.object({
    name: z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, 'must be 1-64 letters, digits, underscores or dashes'),
    description: z.string().optional(),
    parameters: z.record(z.string(), z.unknown()).optional(),
  }),
});

const stop = z
  .union([z.string(), z.array(z.string()).max(16)])
  .nullable()
  .optional();
const penalty = z.number().min(-2).max(2).nullable().optional();

/** Sampling and length fields shared by both endpoints. */
const sampling = {
  model: z.string().min(1),
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().gt(0).max(1).nullable().optional(),
  top_k: z.number().int().min(-1).nullable().optional(),
  min_p: z.number().min(0).max(1).nullable().optional(),
  seed: z.number().int().nullable().optional(),
  stop,
  n: z.number().int().min(1).max(16).nullable().optional(),
  stream: z.boolean().nullable().optional(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).nullable().optional(),
  user: z.string().optional(),
  frequency_penalty: penalty,
  presence_penalty: penalty,
  // vLLM's extension: > 1 discourages tokens already in the prompt or the output, < 1 encourages them.
  repetition_penalty: z.number().gt(0).nullable().optional(),
};

export const chatRequestSchema = z.object({
  ...sampling,
  messages: z.array(message).min(1),
  max_tokens: z.number().int().min(1).nullable().optional(),
  max_completion_tokens: z.number().int().min(1).nullable().optional(),
  logprobs: z.boolean().nullable().optional(),
  top_logprobs: z.number().int().min(0).max(20).nullable().optional(),
  tools: z.array(functionTool).nullable().optional(),
  tool_choice: z
    .union([
      z.enum(['none', 'auto', 'required']),
      z.object({ type: z.literal('function'), function: z.object({ name: z.string() }) }),
    ])
    .nullable()
    .optional(),
  parallel_tool_calls: z.boolean().nullable().optional(),
  reasoning_effort: z.enum(['low', 'medium', 'high']).nullable().optional(),
});
export type ChatRequest = z.infer<typeof chatRequestSchema>;

const tokenIds = z.array(z.number().int().min(0)).min(1);
export const completionRequestSchema = z.object({
  ...sampling,
  // Token ids before lists of strings: a union tries its options in order, and checking a long id list against
  // z.array(z.string()) first costs an issue per element. (Which option comes first changes no error message.)
  prompt: z.union([z.string(), tokenIds, z.array(z.string()).min(1), z.array(tokenIds).min(1)]),
  max_tokens: z.number().int().min(1).nullable().optional(),
  logprobs: z.number().int().min(0).max(20).nullable().optional(),
  echo: z.boolean().nullable().optional(),
  suffix: z.string().nullable().optional(),
  best_of: z.number().int().min(1).nullable().optional(),
});
export type CompletionRequest = z.infer<typeof completionRequestSchema>;

/** Whether `x` is what `tokenIds` accepts: a non-empty array of non-negative safe integers (zod's `.int()`). */
function isTokenIds(x: unknown): x is number[] {
  if (!Array.isArray(x) || x.length === 0) return false;
  for (let i = 0; i < x.length; i++) {
    const t: unknown = x[i];
    if (typeof t !== 'number' || !Number.isSafeInteger(t) || t < 0) return false;
  }
  return true;
}

/** Whether `prompt` is one of the four forms `completionRequestSchema.prompt` accepts (the same test, one loop). */
function isPrompt(prompt: unknown): boolean {
  if (typeof prompt === 'string') return true;
  if (!Array.isArray(prompt) || prompt.length === 0) return false;
  if (typeof prompt[0] === 'number') return isTokenIds(prompt);
  if (typeof prompt[0] === 'string') return prompt.every((p) => typeof p === 'string');
  return prompt.every(isTokenIds);
}

/**
 * `completionRequestSchema` with the prompt checked by a plain loop: zod's union and per-element checks cost
 * ≈ 2 µs a prompt token (0.2–0.3 ms of a 128-token request, before its submission). Only for requests it accepts:
 * what it refuses goes through `completionRequestSchema`, whose error is the one reported (parseBody's `fast`).
 * Accepted prompts come back as given (zod would copy the arrays; nothing changes them).
 */
export const completionRequestFastSchema = completionRequestSchema.extend({
  prompt: z.custom<CompletionRequest['prompt']>(isPrompt),
});

/** The first issue as (param, message): `messages[2].role`, "Invalid input". */
export function describeIssue(error: z.ZodError): { param: string; message: string } {
  const issue = error.issues[0];
  if (!issue) return { param: '', message: 'invalid request body' };
  let param = '';
  for (const key of issue.path) {
    param += typeof key === 'number' ? `[${key}]` : param ? `.${String(key)}` : String(key);
  }
  return { param, message: param ? `${param}: ${issue.message}` : issue.message };
}
