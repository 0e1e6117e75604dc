// A real HTTP server for the weight-cache tests and the cold-start benchmark (hack/bench/coldstart.ts): serves the Hub API paths (`/api/models/{repo}/revision/{rev}` with
// the file list and LFS SHA-256s, `/{repo}/resolve/{rev}/{file}` with Range support) and plain files under `/plain/`.
// It records every request (method, path, Range header) so tests can see resumed downloads, and can serve a file
// slowly (to kill a stager mid-file) or with corrupted bytes (to see the checksum check refuse it).
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface HubFile {
  path: string;
  data: Buffer;
  /** Listed with lfs.sha256 (large files); small git files have only a blob id on the Hub. */
  lfs: boolean;
}

export interface RequestRecord {
  method: string;
  path: string;
  range?: string;
}

export const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

// The listing answers every request with each file's SHA-256; a large checkpoint (the benchmark serves 1 GB) is
// hashed once, not on every listing.
const digests = new WeakMap<Buffer, string>();
export function fileSha256(f: HubFile): string {
  let d = digests.get(f.data);
  if (d === undefined) digests.set(f.data, (d = sha256(f.data)));
  return d;
}

/**
 * The address of this machine as pods of the node agent see it: the bridge's gateway when pods have their own network
 * namespaces (10.x.0.1; a server listening on 0.0.0.0 answers there), else the node's loopback address.
 */
export function hostAddressForPods(agent: { networkMode: string; nodes: { hostIP: string }[] }): string {
  const hostIP = agent.nodes[0]?.hostIP;
  if (!hostIP) throw new Error('the node agent has no nodes');
  return agent.networkMode === 'netns' ? hostIP.replace(/^(\d+\.\d+)\..*$/, '$1.0.1') : hostIP;
}

/** A deterministic pseudo-random checkpoint: a config, a tokenizer and `weightFiles` shards of `shardBytes`. */
export function makeCheckpoint(seed: string, shardBytes: number, weightFiles = 2): HubFile[] {
  const files: HubFile[] = [
    {
      path: 'config.json',
      data: Buffer.from(JSON.stringify({ architectures: ['GptOssForCausalLM'], seed })),
      lfs: false,
    },
    { path: 'tokenizer/tokenizer.json', data: Buffer.from(JSON.stringify({ seed, vocab: 16 })), lfs: false },
  ];
  for (let i = 0; i < weightFiles; i++) {
    const data = Buffer.alloc(shardBytes);
    let block = createHash('sha256').update(`${seed}-${i}`).digest();
    for (let o = 0; o < shardBytes; o += block.length) {
      block.copy(data, o);
      block = createHash('sha256').update(block).digest();
    }
    files.push({ path: `model-0000${i}-of-0000${weightFiles}.safetensors`, data, lfs: true });
  }
  return files;
}

export class HubServer {
  readonly requests: RequestRecord[] = [];
  /** repo → revision → files. */
  readonly repos = new Map<string, Map<string, HubFile[]>>();
  /** Files (by path) served with one byte flipped. */
  readonly corrupt = new Set<string>();
  /** Files (by path) served at about this many bytes per second. */
  readonly slow = new Map<string, number>();
  private server?: http.Server;
  port = 0;

  addRepo(repo: string, revision: string, files: HubFile[]): void {
    if (!this.repos.has(repo)) this.repos.set(repo, new Map());
    this.repos.get(repo)!.set(revision, files);
  }

  async start(host = '0.0.0.0'): Promise<void> {
    this.server = http.createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(0, host, resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private files(repo: string, rev: string): HubFile[] | undefined {
    return this.repos.get(repo)?.get(rev);
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const range = req.headers.range;
    this.requests.push({ method: req.method ?? '', path: url.pathname, ...(range ? { range } : {}) });
    const info = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(url.pathname);
    if (info) {
      const files = this.files(info[1]!, decodeURIComponent(info[2]!));
      if (!files) return void res.writeHead(404).end('{"error":"Repository not found"}');
      const siblings = files.map((f) => ({
        rfilename: f.path,
        size: f.data.length,
        blobId: randomBytes(20).toString('hex'),
        ...(f.lfs ? { lfs: { sha256: fileSha256(f), size: f.data.length, pointerSize: 134 } } : {}),
      }));
      res.writeHead(200, { 'content-type': 'application/json' });
      return void res.end(JSON.stringify({ id: info[1], sha: info[2], siblings }));
    }
    const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    const plain = /^\/plain\/([^/]+\/[^/]+)\/([^/]+)\/(.+)$/.exec(url.pathname);
    const m = resolve ?? plain;
    if (!m) return void res.writeHead(404).end('not found');
    const file = this.files(m[1]!, decodeURIComponent(m[2]!))?.find((f) => f.path === decodeURIComponent(m[3]!));
    if (!file) return void res.writeHead(404).end('Entry not found');
    let data = file.data;
    if (this.corrupt.has(file.path)) {
      data = Buffer.from(data);
      const mid = data.length >> 1;
      data[mid] = (data[mid] ?? 0) ^ 0xff;
    }
    let start = 0;
    const r = range ? /^bytes=(\d+)-$/.exec(range) : null;
    if (r) {
      start = Number(r[1]);
      if (start >= data.length) {
        res.writeHead(416, { 'content-range': `bytes */${data.length}` });
        return void res.end();
      }
    }
    const body = data.subarray(start);
    res.writeHead(r ? 206 : 200, {
      'content-length': String(body.length),
      'accept-ranges': 'bytes',
      ...(r ? { 'content-range': `bytes ${start}-${data.length - 1}/${data.length}` } : {}),
    });
    if (req.method === 'HEAD') return void res.end();
    const rate = this.slow.get(file.path);
    if (!rate) return void res.end(body);
    // Slow: 1/20 of the rate every 50 ms, until the client goes away or the body is sent.
    const step = Math.max(1, Math.floor(rate / 20));
    let off = 0;
    const timer = setInterval(() => {
      if (res.destroyed || off >= body.length) {
        clearInterval(timer);
        if (!res.destroyed) res.end();
        return;
      }
      res.write(body.subarray(off, off + step));
      off += step;
    }, 50);
    res.on('close', () => clearInterval(timer));
  }
}
