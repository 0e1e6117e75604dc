import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

let cachedBinDir: string | undefined;

/**
 * The directory of control-plane binaries (kube-apiserver, etcd, kwok, kubectl, helm, ...). Runs
 * hack/build-control-plane.sh, which returns at once when the versioned cache is complete and builds it otherwise.
 * MODELSERVE_TESTBIN overrides it.
 */
export function controlPlaneBinDir(): string {
  if (cachedBinDir) return cachedBinDir;
  const fromEnv = process.env.MODELSERVE_TESTBIN;
  if (fromEnv) {
    cachedBinDir = fromEnv;
  } else {
    const out = execFileSync(path.join(repoRoot, 'hack/build-control-plane.sh'), {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    cachedBinDir = out.trim().split('\n').pop() ?? '';
  }
  if (!fs.existsSync(path.join(cachedBinDir, 'kube-apiserver'))) {
    throw new Error(`control-plane binaries not found in ${cachedBinDir}: run \`make control-plane\``);
  }
  return cachedBinDir;
}

/** A fresh per-run directory under <repo>/.tmp/ for a component's logs and state. */
export function runDir(prefix: string): string {
  const base = path.join(repoRoot, '.tmp', 'runs');
  fs.mkdirSync(base, { recursive: true });
  return fs.mkdtempSync(path.join(base, `${prefix}-${new Date().toISOString().replace(/[:.]/g, '')}-`));
}
