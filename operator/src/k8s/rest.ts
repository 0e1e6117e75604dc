// A small Kubernetes REST client over node:http(s). @kubernetes/client-node supplies the kubeconfig handling (TLS
// material, bearer tokens, exec plugins); the requests themselves stay plain so that server-side apply, status and
// scale subresources, watches and leases all go through one path with one error type.
import http from 'node:http';
import https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
    readonly method: string,
    readonly path: string,
  ) {
    super(`${method} ${path}: ${status} ${reason}: ${message}`);
    this.name = 'ApiError';
  }
}

export const isNotFound = (e: unknown): boolean => e instanceof ApiError && e.status === 404;
export const isConflict = (e: unknown): boolean => e instanceof ApiError && e.status === 409;
export const isGone = (e: unknown): boolean => e instanceof ApiError && e.status === 410;

export interface RequestOptions {
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  contentType?: string;
  signal?: AbortSignal;
  timeoutMs?: number;
}

export type WatchEvent<T> = { type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR'; object: T };

interface Transport {
  base: URL;
  agent: http.Agent;
  headers: Record<string, string>;
  expires: number;
}

export function buildPath(path: string, query?: RequestOptions['query']): string {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined) params.set(k, String(v));
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

/** Splits a byte stream into JSON lines; a partial last line waits for the next chunk. */
export class LineDecoder {
  private buffer = '';
  push(chunk: string): string[] {
    this.buffer += chunk;
    const lines = this.buffer.split('\n');
    this.buffer = lines.pop() ?? '';
    return lines.filter((l) => l.trim() !== '');
  }
}

export class KubeClient {
  private transport?: Transport;

  constructor(readonly kubeConfig: KubeConfig) {}

  /** TLS agent and auth headers; refreshed every minute so rotated tokens are picked up. */
  private async getTransport(): Promise<Transport> {
    if (this.transport && this.transport.expires > Date.now()) return this.transport;
    const cluster = this.kubeConfig.getCurrentCluster();
    if (!cluster) throw new Error('kubeconfig has no current cluster');
    const opts: https.RequestOptions = {};
    await this.kubeConfig.applyToHTTPSOptions(opts);
    const base = new URL(cluster.server);
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(opts.headers ?? {})) if (v !== undefined) headers[k] = String(v);
    if (opts.auth) headers.Authorization = `Basic ${Buffer.from(opts.auth).toString('base64')}`;
    const agent =
      this.transport?.agent ??
      (base.protocol === 'https:'
        ? new https.Agent({
            keepAlive: true,
            maxSockets: 32,
            ca: opts.ca,
            cert: opts.cert,
            key: opts.key,
            ...(cluster.skipTLSVerify ? { rejectUnauthorized: false } : {}),
            ...(cluster.tlsServerName ? { servername: cluster.tlsServerName } : {}),
          })
        : new http.Agent({ keepAlive: true, maxSockets: 32 }));
    this.transport = { base, agent, headers, expires: Date.now() + 60_000 };
    return this.transport;
  }

  private async open(method: string, path: string, options: RequestOptions): Promise<http.IncomingMessage> {
    const t = await this.getTransport();
    const url = new URL(buildPath(path, options.query), t.base);
    const body = options.body === undefined ? undefined : JSON.stringify(options.body);
    const mod = url.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      const req = mod.request(
        url,
        {
          method,
          agent: t.agent,
          headers: {
            ...t.headers,
            Accept: 'application/json',
            ...(body !== undefined
              ? { 'Content-Type': options.contentType ?? 'application/json', 'Content-Length': Buffer.byteLength(body) }
              : {}),
          },
          signal: options.signal,
          timeout: options.timeoutMs,
        },
        resolve,
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timed out after ${options.timeoutMs} ms`)));
      req.on('error', reject);
      req.end(body);
    });
  }

  async request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const res = await this.open(method, path, { timeoutMs: 30_000, ...options });
    const chunks: Buffer[] = [];
    for await (const chunk of res) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const status = res.statusCode ?? 0;
    if (status < 200 || status >= 300) throw toApiError(status, text, method, path);
    return (text ? JSON.parse(text) : undefined) as T;
  }

  /** Closes kept-alive connections. */
  close(): void {
    this.transport?.agent.destroy();
    this.transport = undefined;
  }

  get<T>(path: string, query?: RequestOptions['query']): Promise<T> {
    return this.request<T>('GET', path, { query });
  }

  /** Server-side apply: the fields in `obj` become owned by `fieldManager`; force takes them over from others. */
  apply<T>(path: string, obj: unknown, fieldManager: string): Promise<T> {
    return this.request<T>('PATCH', path, {
      query: { fieldManager, force: true },
      body: obj,
      contentType: 'application/apply-patch+yaml',
    });
  }

  mergePatch<T>(path: string, patch: unknown, fieldManager?: string): Promise<T> {
    return this.request<T>('PATCH', path, {
      query: { fieldManager },
      body: patch,
      contentType: 'application/merge-patch+json',
    });
  }

  /**
   * Streams watch events until the server closes the stream (resolves) or it fails (rejects with ApiError; a 410
   * Gone means the resourceVersion is too old and the caller must list again).
   */
  async watch<T>(
    path: string,
    query: RequestOptions['query'],
    onEvent: (event: WatchEvent<T>) => void,
    signal: AbortSignal,
  ): Promise<void> {
    const res = await this.open('GET', path, { query: { ...query, watch: true }, signal });
    const status = res.statusCode ?? 0;
    if (status !== 200) {
      const chunks: Buffer[] = [];
      for await (const chunk of res) chunks.push(chunk as Buffer);
      throw toApiError(status, Buffer.concat(chunks).toString('utf8'), 'WATCH', path);
    }
    const decoder = new LineDecoder();
    res.setEncoding('utf8');
    try {
      for await (const chunk of res) {
        for (const line of decoder.push(chunk as string)) {
          const event = JSON.parse(line) as WatchEvent<T>;
          if (event.type === 'ERROR') {
            const st = event.object as unknown as { code?: number; reason?: string; message?: string };
            throw new ApiError(st.code ?? 500, st.reason ?? 'Error', st.message ?? '', 'WATCH', path);
          }
          onEvent(event);
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      throw e;
    }
  }
}

function toApiError(status: number, text: string, method: string, path: string): ApiError {
  try {
    const st = JSON.parse(text) as { reason?: string; message?: string };
    return new ApiError(status, st.reason ?? 'Unknown', st.message ?? text, method, path);
  } catch {
    return new ApiError(status, 'Unknown', text.slice(0, 500), method, path);
  }
}
