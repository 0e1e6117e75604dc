// Fetching one file into the cache: resumable (HTTP Range on a `.partial` file that survives a killed stager),
// verified (SHA-256 over the whole file, the resumed prefix included) and atomic (renamed into place only once
// verified). Local sources (file://, pvc://) are copied the same way.
import fs from 'node:fs';
import path from 'node:path';

import { newHasher, type Hasher } from './hasher.js';
import { describeError, type SourceFile } from './sources.js';

export const PARTIAL_SUFFIX = '.partial';

export interface Progress {
  (fields: { file: string; bytes: number; total?: number; resumedFrom?: number }): void;
}

export interface FetchFileOptions {
  headers?: Record<string, string>;
  /** Attempts after a network error or a truncated body (each resumes where the last stopped). */
  networkAttempts?: number;
  /** Attempts after a checksum mismatch (each starts again from byte 0). */
  checksumAttempts?: number;
  progress?: Progress;
  progressEveryBytes?: number;
  log?: (msg: string, fields: Record<string, unknown>) => void;
}

export class ChecksumError extends Error {
  constructor(
    readonly file: string,
    readonly expected: string,
    readonly actual: string,
    readonly from: string,
  ) {
    super(`sha256 mismatch for ${file}: expected ${expected}, got ${actual} (from ${from})`);
    this.name = 'ChecksumError';
  }
}

/** SHA-256 of the first `bytes` of a file, so a resumed download hashes what it already has. */
async function hashPrefix(file: string, hash: Hasher): Promise<void> {
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) await hash.update(chunk as Buffer);
}

/**
 * Fetches `src` to `dest` (`dest.partial` while in progress). Returns the file's SHA-256 and size. A dest that already
 * exists is trusted only if it matches the expected checksum (or none is given).
 */
export async function fetchFile(
  src: SourceFile,
  dest: string,
  opts: FetchFileOptions = {},
): Promise<{ sha256: string; bytes: number }> {
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  const checksumAttempts = opts.checksumAttempts ?? 2;
  for (let attempt = 1; ; attempt++) {
    const partial = dest + PARTIAL_SUFFIX;
    const result = await fetchToPartial(src, partial, opts);
    if (src.sha256 && result.sha256 !== src.sha256) {
      fs.rmSync(partial, { force: true });
      const err = new ChecksumError(src.path, src.sha256, result.sha256, src.from);
      opts.log?.('checksum mismatch', { file: src.path, attempt, of: checksumAttempts, error: err.message });
      if (attempt >= checksumAttempts) throw err;
      continue;
    }
    fs.renameSync(partial, dest);
    return result;
  }
}

async function fetchToPartial(
  src: SourceFile,
  partial: string,
  opts: FetchFileOptions,
): Promise<{ sha256: string; bytes: number }> {
  const attempts = opts.networkAttempts ?? 5;
  let lastError: unknown;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    try {
      return /^https?:\/\//.test(src.from) ? await httpOnce(src, partial, opts) : await copyOnce(src, partial, opts);
    } catch (err) {
      if (err instanceof PermanentError) throw err;
      lastError = err;
      opts.log?.('fetch interrupted; resuming', { file: src.path, attempt, error: describeError(err) });
      await new Promise((r) => setTimeout(r, Math.min(250 * 2 ** attempt, 5_000)));
    }
  }
  throw new Error(`${src.path}: giving up after ${attempts} attempts (from ${src.from}): ${describeError(lastError)}`);
}

class PermanentError extends Error {}

function offsetOf(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

async function httpOnce(
  src: SourceFile,
  partial: string,
  opts: FetchFileOptions,
): Promise<{ sha256: string; bytes: number }> {
  let offset = offsetOf(partial);
  if (src.size !== undefined && offset > src.size) {
    fs.rmSync(partial, { force: true });
    offset = 0;
  }
  const headers: Record<string, string> = { ...opts.headers };
  if (offset > 0) headers.range = `bytes=${offset}-`;
  const res = await fetch(src.from, { headers, redirect: 'follow' });
  if (res.status === 416 && offset > 0) {
    // Nothing after our offset: the partial file is the whole file (or longer than it; start over).
    await res.arrayBuffer();
    const total = Number(/\/(\d+)$/.exec(res.headers.get('content-range') ?? '')?.[1] ?? NaN);
    if (total === offset) {
      const hash = newHasher(offset);
      try {
        await hashPrefix(partial, hash);
        return { sha256: await hash.digest(), bytes: offset };
      } finally {
        hash.close();
      }
    }
    fs.rmSync(partial, { force: true });
    throw new Error(`range ${offset}- not satisfiable (size ${total}); starting over`);
  }
  if (res.status === 404 || res.status === 401 || res.status === 403) {
    await res.arrayBuffer();
    throw new PermanentError(`GET ${src.from}: HTTP ${res.status}`);
  }
  if (res.status !== 200 && res.status !== 206) {
    await res.arrayBuffer();
    throw new Error(`GET ${src.from}: HTTP ${res.status}`);
  }
  const resumed = res.status === 206;
  if (!resumed) offset = 0; // the server ignored the Range header: take the whole body
  const length = Number(res.headers.get('content-length') ?? NaN);
  const total = Number.isFinite(length) ? offset + length : src.size;
  const hash = newHasher(total);
  const out = fs.openSync(partial, resumed ? 'a' : 'w');
  let bytes = offset;
  let reported = offset;
  try {
    if (resumed) await hashPrefix(partial, hash);
    if (resumed) opts.progress?.({ file: src.path, bytes: offset, total, resumedFrom: offset });
    if (!res.body) throw new Error(`GET ${src.from}: no body`);
    for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
      fs.writeSync(out, chunk);
      await hash.update(chunk);
      bytes += chunk.byteLength;
      if (bytes - reported >= (opts.progressEveryBytes ?? 64 << 20)) {
        reported = bytes;
        opts.progress?.({ file: src.path, bytes, total });
      }
    }
    if (total !== undefined && bytes !== total) {
      throw new Error(`GET ${src.from}: body ended at ${bytes} of ${total} bytes`);
    }
    opts.progress?.({ file: src.path, bytes, total });
    return { sha256: await hash.digest(), bytes };
  } finally {
    fs.closeSync(out);
    hash.close();
  }
}

async function copyOnce(
  src: SourceFile,
  partial: string,
  opts: FetchFileOptions,
): Promise<{ sha256: string; bytes: number }> {
  const size = fs.statSync(src.from).size;
  let offset = offsetOf(partial);
  if (offset > size) {
    fs.rmSync(partial, { force: true });
    offset = 0;
  }
  const hash = newHasher(size);
  const out = fs.openSync(partial, offset > 0 ? 'a' : 'w');
  let bytes = offset;
  let reported = offset;
  try {
    if (offset > 0) await hashPrefix(partial, hash);
    for await (const chunk of fs.createReadStream(src.from, { start: offset, highWaterMark: 1 << 20 })) {
      fs.writeSync(out, chunk as Buffer);
      await hash.update(chunk as Buffer);
      bytes += (chunk as Buffer).byteLength;
      if (bytes - reported >= (opts.progressEveryBytes ?? 64 << 20)) {
        reported = bytes;
        opts.progress?.({ file: src.path, bytes, total: size });
      }
    }
    opts.progress?.({ file: src.path, bytes, total: size });
    return { sha256: await hash.digest(), bytes };
  } finally {
    fs.closeSync(out);
    hash.close();
  }
}

/** Sizes of http(s) files whose listing gave none, from HEAD requests (for the disk budget). */
export async function headSize(url: string, headers: Record<string, string> = {}): Promise<number | undefined> {
  const res = await fetch(url, { method: 'HEAD', headers, redirect: 'follow' });
  if (!res.ok) throw new Error(`HEAD ${url}: HTTP ${res.status}`);
  const n = Number(res.headers.get('content-length') ?? NaN);
  return Number.isFinite(n) ? n : undefined;
}

export type FieldLog = (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;

/**
 * One listed file into `dir` (at its relative path), for the stager and the worker's fetch-weights alike: a copy an
 * earlier run left there is kept — files are renamed from .partial only once verified — else it is fetched with
 * progress and retry lines on `log`.
 */
export async function fetchIntoDir(
  f: SourceFile,
  dir: string,
  headers: Record<string, string>,
  log: FieldLog,
  progressEveryBytes?: number,
): Promise<{ path: string; bytes: number; sha256: string }> {
  const dest = path.join(dir, ...f.path.split('/'));
  if (fs.existsSync(dest) && f.sha256 && (f.size === undefined || fs.statSync(dest).size === f.size)) {
    return { path: f.path, bytes: fs.statSync(dest).size, sha256: f.sha256 };
  }
  const r = await fetchFile(f, dest, {
    headers,
    progress: (p) =>
      log('info', 'progress', { ...p, ...(p.total ? { percent: Math.round((1000 * p.bytes) / p.total) / 10 } : {}) }),
    ...(progressEveryBytes ? { progressEveryBytes } : {}),
    log: (msg, fields) => log('warn', msg, fields),
  });
  log('info', 'file verified', { file: f.path, bytes: r.bytes, sha256: r.sha256 });
  return { path: f.path, bytes: r.bytes, sha256: r.sha256 };
}
