// A streaming chat completion read as raw SSE, for end-to-end checks that a stream was not truncated: it records the
// finish_reason, the usage chunk, the content chunks and whether the terminating `data: [DONE]` arrived — a stream cut
// short (connection closed, error event) lacks some of them, and `error` says what happened.
export interface StreamResult {
  status: number;
  finishReason?: string;
  completionTokens?: number;
  /** Chunks that carried a content or reasoning delta. */
  contentChunks: number;
  /** `data: [DONE]` was received. */
  done: boolean;
  /** An error event, a non-200 status or a broken connection. */
  error?: string;
  /** Date.now() when the first chunk arrived and when the stream ended. */
  firstChunkAt?: number;
  endedAt: number;
}

export interface ChatStream {
  /** Resolves at the first chunk (rejects if the stream ends before one). */
  firstChunk: Promise<void>;
  result: Promise<StreamResult>;
}

interface Chunk {
  choices?: { delta?: { content?: string; reasoning_content?: string }; finish_reason?: string | null }[];
  usage?: { completion_tokens?: number } | null;
  error?: { message?: string };
}

/** Starts a streaming chat completion of `maxTokens` tokens through `baseUrl` (a gateway or a worker). */
export function streamChat(
  baseUrl: string,
  opts: { model: string; prompt: string; maxTokens: number; headers?: Record<string, string> },
): ChatStream {
  let onFirst!: () => void;
  let onNoFirst!: (err: Error) => void;
  const firstChunk = new Promise<void>((resolve, reject) => ((onFirst = resolve), (onNoFirst = reject)));
  firstChunk.catch(() => undefined); // callers that only await `result` must not see an unhandled rejection
  const r: StreamResult = { status: 0, contentChunks: 0, done: false, endedAt: 0 };
  const onChunk = (c: Chunk): void => {
    if (r.firstChunkAt === undefined) {
      r.firstChunkAt = Date.now();
      onFirst();
    }
    if (c.error) r.error = `error event: ${c.error.message ?? JSON.stringify(c.error)}`;
    for (const choice of c.choices ?? []) {
      if (choice.delta?.content || choice.delta?.reasoning_content) r.contentChunks += 1;
      if (choice.finish_reason) r.finishReason = choice.finish_reason;
    }
    if (c.usage?.completion_tokens !== undefined) r.completionTokens = c.usage.completion_tokens;
  };
  const result = (async () => {
    try {
      const res = await fetch(`${baseUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...opts.headers },
        body: JSON.stringify({
          model: opts.model,
          messages: [{ role: 'user', content: opts.prompt }],
          max_tokens: opts.maxTokens,
          stream: true,
          stream_options: { include_usage: true },
        }),
      });
      r.status = res.status;
      if (res.status !== 200 || !res.body) {
        r.error = `status ${res.status}: ${(await res.text()).slice(0, 300)}`;
        return r;
      }
      const decoder = new TextDecoder();
      let buffer = '';
      for await (const bytes of res.body) {
        buffer += decoder.decode(bytes as Uint8Array, { stream: true });
        for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          for (const line of event.split('\n')) {
            if (!line.startsWith('data:')) continue;
            const data = line.slice(5).trim();
            if (data === '[DONE]') r.done = true;
            else onChunk(JSON.parse(data) as Chunk);
          }
        }
      }
    } catch (err) {
      r.error = `connection: ${(err as Error).message}`;
    } finally {
      r.endedAt = Date.now();
      onNoFirst(new Error(`the stream ended before its first chunk (${r.error ?? `status ${r.status}`})`));
    }
    return r;
  })();
  return { firstChunk, result };
}
