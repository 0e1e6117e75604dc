// The worker pod's `fetch-weights` init container (operator/src/controller/plan.ts) for http(s):// and hf:// sources,
// as KServe's storage initializer does it: the checkpoint is downloaded into the pod's emptyDir before the worker
// starts, so `spec.model.source: hf://org/repo` works without any other setup.
//
//   fetch --source hf://org/repo|https://host/dir|file:///dir [--revision <commit>] --dest /models [--sha256 FILE]
//   env: HF_ENDPOINT (mirror), HF_TOKEN, MODELSERVE_WEIGHTS_CACHE, MODELSERVE_WEIGHTS_CACHE_MARKER
//
// - When the node cache holds a complete entry for this model (the same check as the worker's, weights.ts), nothing is
//   downloaded: the worker loads the entry.
// - Files are listed and fetched by the weight-cache stager's code (operator/src/weightcache: Hub API listing,
//   resumable Range downloads, SHA-256 from the Hub's LFS metadata or spec.model.sha256 (--sha256, the ConfigMap's
//   sha256.json), rename into place only once verified), into --dest.
// - Re-run after a pod restart (the emptyDir survives): files already in place are kept, a `.partial` file resumes.
// - The last line on failure is `fetch: <reason>` (the init container's termination message).
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { fetchIntoDir, headSize } from '../../operator/src/weightcache/download.js';
import { DEFAULT_HF_ENDPOINT, listSource } from '../../operator/src/weightcache/sources.js';
import { cacheProblem } from './weights.js';

/** Written into --dest when every file is there, so a restarted init container returns at once. */
export const FETCHED_MARKER = '.modelserve-fetched.json';

export interface FetchArgs {
  source: string;
  revision?: string;
  dest: string;
  sha256: Record<string, string>;
  hfEndpoint: string;
  hfToken?: string;
  cacheDir?: string;
  cacheMarker?: string;
}

export interface FetchResult {
  from: 'cache' | 'source' | 'already-fetched';
  files: number;
  bytes: number;
  seconds: number;
}

type Log = (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;

const jsonLog: Log = (level, msg, fields = {}) =>
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields })}\n`);

export function parseFetchArgs(argv: string[], env: NodeJS.ProcessEnv): FetchArgs {
  const given = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (!arg.startsWith('--')) throw new Error(`unexpected argument ${arg}`);
    const eq = arg.indexOf('=');
    if (eq > 0) given.set(arg.slice(2, eq), arg.slice(eq + 1));
    else {
      const value = argv[++i];
      if (value === undefined) throw new Error(`${arg} needs a value`);
      given.set(arg.slice(2), value);
    }
  }
  for (const k of given.keys()) {
    if (!['source', 'revision', 'dest', 'sha256'].includes(k)) throw new Error(`unknown flag --${k}`);
  }
  const need = (k: string): string => {
    const v = given.get(k);
    if (!v) throw new Error(`--${k} is required`);
    return v;
  };
  let sha256: Record<string, string> = {};
  const shaFile = given.get('sha256');
  if (shaFile && fs.existsSync(shaFile)) {
    try {
      sha256 = JSON.parse(fs.readFileSync(shaFile, 'utf8')) as Record<string, string>;
    } catch (err) {
      throw new Error(`--sha256 ${shaFile}: not JSON: ${(err as Error).message}`);
    }
    for (const [f, s] of Object.entries(sha256)) {
      if (typeof s !== 'string' || !/^[0-9a-f]{64}$/.test(s)) {
        throw new Error(`--sha256 ${shaFile}: ${JSON.stringify(f)}: expected 64 lowercase hex digits`);
      }
    }
  }
  return {
    source: need('source'),
    revision: given.get('revision') || undefined,
    dest: need('dest'),
    sha256,
    hfEndpoint: env.HF_ENDPOINT || DEFAULT_HF_ENDPOINT,
    hfToken: env.HF_TOKEN || undefined,
    cacheDir: env.MODELSERVE_WEIGHTS_CACHE || undefined,
    cacheMarker: env.MODELSERVE_WEIGHTS_CACHE_MARKER || undefined,
  };
}

interface FetchedMarker {
  source: string;
  revision?: string;
  files: { path: string; bytes: number; sha256: string }[];
}

function readFetched(dest: string): FetchedMarker | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(dest, FETCHED_MARKER), 'utf8')) as FetchedMarker;
  } catch {
    return undefined;
  }
}

export async function fetchWeights(a: FetchArgs, log: Log = jsonLog): Promise<FetchResult> {
  const started = performance.now();
  const seconds = () => (performance.now() - started) / 1000;
  if (a.cacheDir) {
    const { problem, marker } = cacheProblem(a.cacheDir, a.cacheMarker);
    if (marker) {
      log('info', 'node cache holds the weights; nothing to fetch', { cache: a.cacheDir, bytes: marker.bytes });
      return { from: 'cache', files: marker.files.length, bytes: marker.bytes, seconds: seconds() };
    }
    log('info', 'node cache not usable; fetching from the source', { cache: a.cacheDir, reason: problem });
  }
  const done = readFetched(a.dest);
  if (done && done.source === a.source && done.revision === a.revision) {
    const bytes = done.files.reduce((s, f) => s + f.bytes, 0);
    log('info', 'already fetched', { dest: a.dest, files: done.files.length, bytes });
    return { from: 'already-fetched', files: done.files.length, bytes, seconds: seconds() };
  }
  const m = /^file:\/\/(\/.*)$/.exec(a.source);
  const headers: Record<string, string> =
    a.hfToken && a.source.startsWith('hf://') ? { authorization: `Bearer ${a.hfToken}` } : {};
  const files = await listSource({
    source: a.source,
    revision: a.revision,
    sha256: a.sha256,
    localRoot: m?.[1],
    hfEndpoint: a.hfEndpoint,
    hfToken: a.hfToken,
  });
  if (files.length === 0) throw new Error(`source ${a.source}: no files to fetch`);
  for (const f of files) if (f.size === undefined && /^https?:/.test(f.from)) f.size = await headSize(f.from, headers);
  const total = files.reduce((s, f) => s + (f.size ?? 0), 0);
  log('info', 'fetching', { source: a.source, dest: a.dest, files: files.length, bytes: total });
  fs.mkdirSync(a.dest, { recursive: true });
  const got: FetchedMarker['files'] = [];
  for (const f of files) got.push(await fetchIntoDir(f, a.dest, headers, log));
  const bytes = got.reduce((s, f) => s + f.bytes, 0);
  const marker: FetchedMarker = { source: a.source, ...(a.revision ? { revision: a.revision } : {}), files: got };
  fs.writeFileSync(path.join(a.dest, FETCHED_MARKER), JSON.stringify(marker, null, 2) + '\n');
  log('info', 'fetched', {
    files: got.length,
    bytes,
    seconds: Number(seconds().toFixed(2)),
    mbPerSecond: Math.round(bytes / 1e6 / Math.max(seconds(), 1e-3)),
  });
  return { from: 'source', files: got.length, bytes, seconds: seconds() };
}

async function main(): Promise<void> {
  let args: FetchArgs;
  try {
    args = parseFetchArgs(process.argv.slice(2), process.env);
  } catch (err) {
    process.stderr.write(`fetch: ${(err as Error).message}\n`);
    process.exit(2);
  }
  process.on('SIGTERM', () => {
    jsonLog('warn', 'terminated; partial files stay for the next run to resume');
    process.exit(143);
  });
  try {
    await fetchWeights(args);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    jsonLog('error', 'fetch failed', { source: args.source, error: message });
    process.stdout.write(`fetch: ${message}\n`);
    process.exit(1);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) void main();
