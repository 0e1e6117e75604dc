// The weight-cache stager: the container of the operator's per-node Jobs. It makes `<root>/<entry>` a complete,
// verified copy of a checkpoint on this node's disk, then exits 0; on failure its last log line says why (the Job's
// pod uses terminationMessagePolicy FallbackToLogsOnError, so that line becomes the pod's termination message).
//
//   stager --source hf://org/repo --revision <commit> --root /cache --entry <name> --key <key>
//          [--budget 500Gi] [--keep key1,key2] [--local-root /source]
//   env: MODELSERVE_STAGE_SHA256 (JSON {file: sha256}), HF_ENDPOINT, HF_TOKEN
//
// Staging happens in `<entry>.staging/` (files as `<file>.partial` until verified); the finished directory gets the
// completion marker and is renamed into place in one step, so a reader sees either nothing or a whole entry.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { fetchIntoDir, headSize } from './download.js';
import { chooseEvictions, scanCache } from './evict.js';
import { COMPLETE_MARKER, parseBytes, STAGING_SUFFIX } from './keys.js';
import { DEFAULT_HF_ENDPOINT, listSource } from './sources.js';

export interface StagerArgs {
  source: string;
  revision?: string;
  root: string;
  entry: string;
  key: string;
  budgetBytes?: number;
  keep: string[];
  localRoot?: string;
  sha256: Record<string, string>;
  hfEndpoint: string;
  hfToken?: string;
}

export interface CompleteMarker {
  key: string;
  source: string;
  revision?: string;
  bytes: number;
  files: { path: string; bytes: number; sha256: string }[];
  completedAt: string;
}

const log = (level: 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown> = {}) =>
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields })}\n`);

export function parseStagerArgs(argv: string[], env: NodeJS.ProcessEnv): StagerArgs {
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
  const known = ['source', 'revision', 'root', 'entry', 'key', 'budget', 'keep', 'local-root'];
  for (const k of given.keys()) if (!known.includes(k)) throw new Error(`unknown flag --${k}`);
  const need = (k: string): string => {
    const v = given.get(k);
    if (!v) throw new Error(`--${k} is required`);
    return v;
  };
  let sha256: Record<string, string> = {};
  const rawSha = env.MODELSERVE_STAGE_SHA256;
  if (rawSha) {
    try {
      sha256 = JSON.parse(rawSha) as Record<string, string>;
    } catch (err) {
      throw new Error(`MODELSERVE_STAGE_SHA256: not JSON: ${(err as Error).message}`);
    }
    for (const [f, s] of Object.entries(sha256)) {
      if (typeof s !== 'string' || !/^[0-9a-f]{64}$/.test(s)) {
        throw new Error(`MODELSERVE_STAGE_SHA256[${JSON.stringify(f)}]: expected 64 lowercase hex digits`);
      }
    }
  }
  const entry = need('entry');
  if (entry.includes('/') || entry.startsWith('.')) throw new Error(`--entry: not a plain directory name: ${entry}`);
  const budget = given.get('budget');
  return {
    source: need('source'),
    revision: given.get('revision') || undefined,
    root: need('root'),
    entry,
    key: need('key'),
    budgetBytes: budget ? parseBytes(budget, '--budget') : undefined,
    keep: (given.get('keep') ?? '').split(',').filter(Boolean),
    localRoot: given.get('local-root') || undefined,
    sha256,
    hfEndpoint: env.HF_ENDPOINT || DEFAULT_HF_ENDPOINT,
    hfToken: env.HF_TOKEN || undefined,
  };
}

function readMarker(dir: string): CompleteMarker | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, COMPLETE_MARKER), 'utf8')) as CompleteMarker;
  } catch {
    return undefined;
  }
}

/** Stages the entry; resolves with its marker. */
export async function stage(a: StagerArgs): Promise<CompleteMarker> {
  const started = Date.now();
  const finalDir = path.join(a.root, a.entry);
  const existing = readMarker(finalDir);
  if (existing && existing.key === a.key) {
    const now = new Date();
    fs.utimesSync(path.join(finalDir, COMPLETE_MARKER), now, now); // recently used: last to be evicted
    log('info', 'already staged', { entry: a.entry, bytes: existing.bytes });
    return existing;
  }
  const headers: Record<string, string> =
    a.hfToken && a.source.startsWith('hf://') ? { authorization: `Bearer ${a.hfToken}` } : {};
  const files = await listSource({
    source: a.source,
    revision: a.revision,
    sha256: a.sha256,
    localRoot: a.localRoot,
    hfEndpoint: a.hfEndpoint,
    hfToken: a.hfToken,
  });
  if (files.length === 0) throw new Error(`source ${a.source}: no files to stage`);
  for (const f of files) if (f.size === undefined && /^https?:/.test(f.from)) f.size = await headSize(f.from, headers);
  const total = files.reduce((s, f) => s + (f.size ?? 0), 0);
  log('info', 'staging', { entry: a.entry, source: a.source, files: files.length, bytes: total });

  fs.mkdirSync(a.root, { recursive: true });
  if (a.budgetBytes !== undefined) {
    const choice = chooseEvictions(scanCache(a.root), {
      keep: new Set(a.keep),
      current: a.key,
      incomingBytes: total,
      budgetBytes: a.budgetBytes,
    });
    for (const name of choice.evict) {
      fs.rmSync(path.join(a.root, name), { recursive: true, force: true });
      log('info', 'evicted', { entry: name, reason: 'disk budget', budget: a.budgetBytes });
    }
  }
  if (fs.existsSync(finalDir)) fs.rmSync(finalDir, { recursive: true, force: true }); // no marker: not ours, not whole

  const staging = finalDir + STAGING_SUFFIX;
  const done: CompleteMarker['files'] = [];
  for (const f of files)
    done.push(
      await fetchIntoDir(f, staging, headers, log, Number(process.env.MODELSERVE_STAGE_PROGRESS_BYTES) || undefined),
    );
  const marker: CompleteMarker = {
    key: a.key,
    source: a.source,
    ...(a.revision ? { revision: a.revision } : {}),
    bytes: done.reduce((s, f) => s + f.bytes, 0),
    files: done,
    completedAt: new Date().toISOString(),
  };
  fs.writeFileSync(path.join(staging, COMPLETE_MARKER), JSON.stringify(marker, null, 2) + '\n');
  fs.renameSync(staging, finalDir);
  const seconds = (Date.now() - started) / 1000;
  log('info', 'staged', {
    entry: a.entry,
    bytes: marker.bytes,
    seconds,
    mbPerSecond: marker.bytes / 1e6 / Math.max(seconds, 1e-3),
  });
  return marker;
}

async function main(): Promise<void> {
  let args: StagerArgs;
  try {
    args = parseStagerArgs(process.argv.slice(2), process.env);
  } catch (err) {
    process.stderr.write(`stager: ${(err as Error).message}\n`);
    process.exit(2);
  }
  process.on('SIGTERM', () => {
    log('warn', 'terminated; partial files stay for the next run to resume');
    process.exit(143);
  });
  try {
    await stage(args);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    log('error', 'staging failed', { entry: args.entry, error: message });
    // Plain last line: the pod's termination message (FallbackToLogsOnError) and the WeightsCached condition.
    process.stdout.write(`stager: ${message}\n`);
    process.exit(1);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) void main();
