// tool_choice 'required' and a named function, without a grammar engine: harmony lets the server write the start of
// the assistant's next message itself, so the prompt ends inside a commentary header addressed to the tools. A named
// function gets the whole header (`<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>`) and the
// model writes only the arguments; 'required' stops after `to=functions.`, so the model must name one of the declared
// functions (the developer message lists them) and cannot answer in the final channel or reason first.
import { HARMONY, type Tokenizer } from '../tokenizer.js';
import type { FunctionTool } from './render.js';

export type ToolChoice = 'none' | 'auto' | 'required' | { type: 'function'; function: { name: string } } | null;

export class ToolChoiceError extends Error {
  constructor(
    message: string,
    readonly param: string,
  ) {
    super(message);
  }
}

/** The tokens the server writes after `<|start|>assistant` to force a tool call, or [] when the model may choose. */
export function forcedToolCallPrefix(
  tokenizer: Tokenizer,
  choice: ToolChoice | undefined,
  tools: readonly FunctionTool[],
): number[] {
  if (choice === undefined || choice === null || choice === 'auto' || choice === 'none') return [];
  if (tools.length === 0) {
    throw new ToolChoiceError('tool_choice requires a non-empty tools list', 'tool_choice');
  }
  if (choice === 'required') {
    return [HARMONY.channel, ...tokenizer.encode('commentary to=functions.')];
  }
  const name = choice.function.name;
  if (!tools.some((t) => t.name === name)) {
    throw new ToolChoiceError(
      `tool_choice names function '${name}', which is not in tools (${tools.map((t) => t.name).join(', ')})`,
      'tool_choice.function.name',
    );
  }
  return [
    HARMONY.channel,
    ...tokenizer.encode(`commentary to=functions.${name}`),
    ...tokenizer.encode(' '),
    HARMONY.constrain,
    ...tokenizer.encode('json'),
    HARMONY.message,
  ];
}
