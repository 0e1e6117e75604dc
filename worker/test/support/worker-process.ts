// Real worker processes and the real engine for integration tests: a generated tiny-harmony checkpoint (random
// weights, real shapes and vocabulary), `worker/src/main.ts` spawned under tsx, and the native engine in-process.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { loadEngine } from '../../src/engine/native.js';
import type { Engine, EngineOptions } from '../../src/engine/types.js';

export const REPO = resolve(process.cwd());
export const MAKE_CHECKPOINT = join(REPO, 'worker/native/build/make_checkpoint');
export const ADDON = join(REPO, 'worker/native/build/modelserve_engine.node');

/** Where generated checkpoints live (shared with `make engine-checkpoint`). */
export const checkpointCache = (): string =>
  join(process.env.MODELSERVE_CACHE ?? join(homedir(), '.cache/modelserve'), 'checkpoints');

/** The tiny-harmony checkpoint for `seed`, generated once per machine into the cache. */
export function tinyCheckpoint(seed = 1): string {
  const dir = join(checkpointCache(), `tiny-harmony-seed${seed}`);
  if (existsSync(join(dir, 'config.json'))) return dir;
  if (!existsSync(MAKE_CHECKPOINT)) throw new Error(`${MAKE_CHECKPOINT} is missing: run \`make native\` first`);
  mkdirSync(checkpointCache(), { recursive: true });
  const made = spawnSync(MAKE_CHECKPOINT, ['--preset', 'tiny-harmony', '--seed', String(seed), '--out', dir], {
    encoding: 'utf8',
  });
  if (made.status !== 0) throw new Error(`make_checkpoint failed: ${made.stderr}`);
  return dir;
}

export function loadRealEngine(options: EngineOptions): Promise<Engine> {
  return loadEngine(options);
}

export interface WorkerProcess {
  child: ChildProcess;
  baseUrl: string;
  port: number;
  logs: string[];
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
  stop(): Promise<void>;
}

/** Spawns `worker/src/main.ts` on a free port and waits until /ready answers 200. */
export async function startWorker(args: string[], timeoutMs = 60_000): Promise<WorkerProcess> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(REPO, 'worker/src/main.ts'), '--port', '0', '--host', '127.0.0.1', ...args],
    {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, MODELSERVE_LOG_LEVEL: 'info' },
    },
  );
  const logs: string[] = [];
  let port = 0;
  let buffered = '';
  child.stderr!.on('data', (d: Buffer) => {
    buffered += d.toString();
    let nl: number;
    while ((nl = buffered.indexOf('\n')) !== -1) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      logs.push(line);
      try {
        const entry = JSON.parse(line) as { msg?: string; port?: number };
        if (entry.msg === 'listening' && entry.port) port = entry.port;
      } catch {
        // not a JSON log line (e.g. a Node warning)
      }
    }
  });
  child.stdout!.on('data', (d: Buffer) => logs.push(d.toString()));
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  let gone = false;
  void exited.then(() => (gone = true));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (gone) throw new Error(`worker exited before ready:\n${logs.join('\n')}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`worker not ready after ${timeoutMs} ms:\n${logs.join('\n')}`);
    }
    if (port) {
      const ok = await fetch(`http://127.0.0.1:${port}/ready`).then(
        (r) => r.status === 200,
        () => false,
      );
      if (ok) break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    child,
    port,
    baseUrl: `http://127.0.0.1:${port}`,
    logs,
    exited,
    async stop() {
      if (!gone) child.kill('SIGKILL');
      await exited;
    },
  };
}
