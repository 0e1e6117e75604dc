// `make bench-weight-cache`: how fast the stager fills a cache entry from an HTTP server on this machine, next to
// peers measured in the same run on the same server and disk: a plain streaming download to a file (no checksum, no
// rename, in its own process like the stager: what any downloader costs) and SHA-256 over the same bytes in memory (the verification's own floor).
// Also a resumed run: the stager killed at about half of the file, then run again (Range request).
// Usage: npx tsx operator/test/bench-stager.ts [--mib 512] [--stager bundle.mjs] [--dir DIR]
// (--stager runs a bundled stager with plain node, for machines without tsx; --dir is where the entries go.)
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import { cpus, loadavg } from 'node:os';
import path from 'node:path';

import { cacheKey, entryName, type CacheSource } from '../src/weightcache/keys.js';
import { HubServer } from '../../test/support/hubServer.js';

const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const repoRoot = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const mib = Number(arg('mib') ?? 512);
const stagerEntry = arg('stager')
  ? [arg('stager') as string]
  : ['--import', 'tsx', path.join(repoRoot, 'operator/src/weightcache/stager.ts')];
const REV = 'f'.repeat(40);
const data = randomFillSync(Buffer.alloc(mib << 20));
const file = 'model-00000-of-00001.safetensors';
const hub = new HubServer();
hub.addRepo('bench/model', REV, [{ path: file, data, lfs: true }]);
const root = fs.mkdtempSync(path.join(arg('dir') ?? path.join(repoRoot, '.tmp'), 'bench-stager-'));
const seconds = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9;
const gbps = (s: number) => (data.length / 1e9 / s).toFixed(2);

/** The peer: a plain streaming download to a file in its own process (as the stager runs), timed inside it. */
const PLAIN = `
import fs from 'node:fs';
import { createHash } from 'node:crypto';
const [url, out, hashing] = process.argv.slice(1);
const t0 = process.hrtime.bigint();
const res = await fetch(url);
const fd = fs.openSync(out, 'w');
const hash = createHash('sha256');
for await (const chunk of res.body) {
  fs.writeSync(fd, chunk);
  if (hashing) hash.update(chunk);
}
fs.closeSync(fd);
console.log(Number(process.hrtime.bigint() - t0) / 1e9);
`;

/** The same download, hashing each chunk as it goes (a verified download with nothing else). */
async function plainDownload(hashing = false): Promise<number> {
  const out = path.join(root, 'plain.bin');
  const url = `http://127.0.0.1:${hub.port}/bench/model/resolve/${REV}/${file}`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', PLAIN, url, out, ...(hashing ? ['1'] : [])], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let text = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (text += d));
  await new Promise((resolve) => child.on('exit', resolve));
  fs.rmSync(out);
  return Number(text.trim());
}

function hashOnly(): number {
  const t0 = process.hrtime.bigint();
  createHash('sha256').update(data).digest('hex');
  return seconds(t0);
}

/** Runs the stager; returns its own "staged" seconds, or kills it once the partial file reaches `killAtBytes`. */
function stager(src: CacheSource, killAtBytes?: number): Promise<{ staged?: number; wall: number }> {
  const t0 = process.hrtime.bigint();
  const child = spawn(
    process.execPath,
    [
      ...stagerEntry,
      `--source=${src.source}`,
      `--revision=${REV}`,
      `--root=${root}`,
      `--entry=${entryName(src)}`,
      `--key=${cacheKey(src)}`,
    ],
    {
      cwd: repoRoot,
      env: { ...process.env, HF_ENDPOINT: `http://127.0.0.1:${hub.port}` },
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  const partial = path.join(root, `${entryName(src)}.staging`, `${file}.partial`);
  const watcher =
    killAtBytes === undefined
      ? undefined
      : setInterval(() => {
          if (fs.existsSync(partial) && fs.statSync(partial).size >= killAtBytes) child.kill('SIGKILL');
        }, 5);
  return new Promise((resolve) =>
    child.on('exit', () => {
      clearInterval(watcher);
      const staged = /"msg":"staged".*?"seconds":([\d.]+)/.exec(out)?.[1];
      resolve({ staged: staged ? Number(staged) : undefined, wall: seconds(t0) });
    }),
  );
}

async function main(): Promise<void> {
  await hub.start('127.0.0.1');
  try {
    const runs = 3;
    const plain: number[] = [];
    const hash: number[] = [];
    const plainHashed: number[] = [];
    const staged: number[] = [];
    // Dirty pages of the previous phase are flushed before each one, so no phase pays another's writeback.
    const settle = () => execFileSync('sync');
    for (let r = 0; r < runs; r++) {
      settle();
      plain.push(await plainDownload());
      hash.push(hashOnly());
      settle();
      plainHashed.push(await plainDownload(true));
      settle();
      const src: CacheSource = { namespace: `run${r}`, source: 'hf://bench/model', revision: REV };
      const s = await stager(src);
      if (s.staged === undefined) throw new Error('stager did not report "staged"');
      staged.push(s.staged);
      fs.rmSync(path.join(root, entryName(src)), { recursive: true });
    }
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    console.log(
      `file ${mib} MiB, ${runs} runs, medians; ${cpus().length} CPUs, load average ${loadavg()[0]!.toFixed(1)}`,
    );
    console.log(`plain download to a file : ${med(plain).toFixed(3)} s  ${gbps(med(plain))} GB/s`);
    console.log(`sha256 in memory         : ${med(hash).toFixed(3)} s  ${gbps(med(hash))} GB/s`);
    console.log(`plain download + sha256  : ${med(plainHashed).toFixed(3)} s  ${gbps(med(plainHashed))} GB/s`);
    console.log(`stager (download+verify) : ${med(staged).toFixed(3)} s  ${gbps(med(staged))} GB/s`);
    console.log(`stager / plain download  : ${(med(staged) / med(plain)).toFixed(2)}x the time`);
    console.log(`stager / plain + sha256  : ${(med(staged) / med(plainHashed)).toFixed(2)}x the time`);

    // Resume: kill at half, then the second run fetches the rest with a Range request (and re-hashes the prefix).
    const src: CacheSource = { namespace: 'resume', source: 'hf://bench/model', revision: REV };
    await stager(src, data.length >> 1);
    settle();
    const before = hub.requests.length;
    const resumed = await stager(src);
    const range = hub.requests.slice(before).find((r) => r.range)?.range;
    console.log(`resumed after a kill at ~50%: ${resumed.staged?.toFixed(3)} s (${range ?? 'no Range request!'})`);
    console.log(`resumed / full stager run : ${((resumed.staged ?? NaN) / med(staged)).toFixed(2)}x the time`);
  } finally {
    await hub.stop();
    fs.rmSync(root, { recursive: true, force: true });
  }
}

void main();
