// make bench-gateway: what the gateway adds to time-to-first-token at N concurrent streams. One real worker (the
// tiny-harmony checkpoint) and one gateway in front of it (static routing, no auth, no Redis); the same N streaming
// requests go straight to the worker and through the gateway, in alternating rounds so both see the same machine
// state. TTFT = request start → first SSE chunk carrying generated text. Prints a Markdown table.
// Usage: npx tsx operator/test/gateway-bench.ts [--concurrency 200] [--rounds 2] [--pattern steady|burst] [--per-stream 2]
//   [--max-tokens 16] [--worker-threads 1]
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { runDir, repoRoot } from '../../test/support/paths.js';
import { freePort } from '../../test/support/ports.js';
import { ManagedProcess } from '../../test/support/process.js';
import { waitFor } from '../../test/support/wait.js';
import { tinyCheckpoint } from './gateway-support.js';

const { values } = parseArgs({
  options: {
    concurrency: { type: 'string', default: '200' },
    rounds: { type: 'string', default: '2' },
    // burst: all N requests start at the same instant; steady: N clients each send --per-stream requests back to
    // back, and only the requests after each client's first count (arrivals spread out as streams finish).
    pattern: { type: 'string', default: 'steady' },
    'per-stream': { type: 'string', default: '2' },
    'max-tokens': { type: 'string', default: '16' },
    // One engine thread leaves the other core(s) to the client, the gateway and the worker's event loop, so the
    // comparison is not dominated by the gateway stealing CPU from the engine on a small machine.
    'worker-threads': { type: 'string', default: '1' },
  },
});
const N = Number(values.concurrency);
const ROUNDS = Number(values.rounds);
const PATTERN = values.pattern === 'burst' ? 'burst' : 'steady';
const PER_STREAM = PATTERN === 'burst' ? 1 : Math.max(2, Number(values['per-stream']));
const MAX_TOKENS = Number(values['max-tokens']);

// Idle sockets close after 4 s, before the servers' 5 s keep-alive timeout can close them under a new request.
const agent = new http.Agent({ keepAlive: true, timeout: 4_000, maxSockets: Infinity });

/** True when an SSE event carries generated text (content or reasoning). */
function hasText(event: string): boolean {
  if (!event.startsWith('data: {')) return false;
  const chunk = JSON.parse(event.slice(6)) as {
    choices?: { delta?: { content?: string; reasoning_content?: string } }[];
  };
  return (chunk.choices ?? []).some((c) => Boolean(c.delta?.content || c.delta?.reasoning_content));
}

/** One streaming chat request; resolves with its TTFT in ms (start → first event with generated text). */
function ttft(port: number, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    let first: number | undefined;
    let buffer = '';
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path: '/v1/chat/completions',
        method: 'POST',
        agent,
        headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
      },
      (res) => {
        if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`));
        res.setEncoding('utf8');
        res.on('data', (text: string) => {
          if (first !== undefined) return;
          const now = performance.now();
          buffer += text;
          let at: number;
          while (first === undefined && (at = buffer.indexOf('\n\n')) !== -1) {
            if (hasText(buffer.slice(0, at))) first = now;
            buffer = buffer.slice(at + 2);
          }
        });
        res.on('error', reject);
        res.on('close', () =>
          first === undefined ? reject(new Error('stream ended without generated text')) : resolve(first - start),
        );
      },
    );
    req.on('socket', (s) => s.setNoDelay(true));
    req.on('error', reject);
    req.end(body);
  });
}

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] as number;
};

async function main(): Promise<void> {
  const dir = runDir('bench-gateway');
  const [workerPort, gatewayPort] = [await freePort(), await freePort()];
  const node = (script: string, args: string[]): [string, string[]] => [
    process.execPath,
    ['--import', 'tsx', path.join(repoRoot, script), ...args],
  ];
  const worker = new ManagedProcess(
    'worker',
    ...node('worker/src/main.ts', [
      '--model',
      tinyCheckpoint(),
      '--served-model-name',
      'tiny',
      '--host',
      '127.0.0.1',
      '--port',
      String(workerPort),
      '--backend',
      'cpu',
      '--threads',
      String(values['worker-threads']),
      '--max-seqs',
      String(Math.max(N, 1)),
      '--max-queue',
      String(4 * N),
      '--date',
      '2026-01-01',
      '--log-level',
      'warn',
    ]),
    { dir, cwd: repoRoot },
  ).start();
  const gateway = new ManagedProcess(
    'gateway',
    ...node('operator/src/gateway/main.ts', [
      '--host',
      '127.0.0.1',
      '--port',
      String(gatewayPort),
      '--auth=false',
      '--static-models',
      `tiny=http://127.0.0.1:${workerPort}`,
      '--max-inflight-per-worker',
      String(4 * N),
      '--log-level',
      'info',
      '--log-prompts',
    ]),
    { dir, cwd: repoRoot },
  ).start();
  try {
    await waitFor(async () => (worker.assertRunning(), (await fetch(`http://127.0.0.1:${workerPort}/ready`)).ok), {
      timeoutMs: 120_000,
      description: 'worker ready',
    });
    await waitFor(async () => (gateway.assertRunning(), (await fetch(`http://127.0.0.1:${gatewayPort}/readyz`)).ok), {
      timeoutMs: 60_000,
      description: 'gateway ready',
    });
    const body = (i: number, k: number) =>
      JSON.stringify({
        model: 'tiny',
        stream: true,
        max_tokens: MAX_TOKENS,
        temperature: 0,
        messages: [
          { role: 'system', content: 'You are a benchmark.' },
          { role: 'user', content: `Request ${i}.${k}: tell me something.` },
        ],
      });
    const round = async (port: number) => {
      const t0 = performance.now();
      const out: number[] = [];
      await Promise.all(
        Array.from({ length: N }, async (_, i) => {
          for (let k = 0; k < PER_STREAM; k++) {
            const t = await ttft(port, body(i, k));
            if (PATTERN === 'burst' || k > 0) out.push(t);
          }
        }),
      );
      const which = port === workerPort ? 'direct' : 'gateway';
      process.stderr.write(`round ${which}: ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
      return out;
    };
    // Warm-up: connections, JIT, the worker's prefix cache for the shared system prompt.
    await round(workerPort);
    await round(gatewayPort);
    const direct: number[] = [];
    const viaGateway: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const [first, second] = r % 2 === 0 ? [workerPort, gatewayPort] : [gatewayPort, workerPort];
      const a = await round(first);
      const b = await round(second);
      (first === workerPort ? direct : viaGateway).push(...a);
      (second === workerPort ? direct : viaGateway).push(...b);
    }
    // The gateway's own time before each first byte (its audit lines; the warm-up round's N lines skipped).
    const overhead = fs
      .readFileSync(gateway.logFile, 'utf8')
      .split('\n')
      .filter((l) => l.includes('"audit":true'))
      .slice(N * PER_STREAM)
      .map((l) => JSON.parse(l) as { overhead_ms?: number; prompt?: string })
      .filter((a) => PATTERN === 'burst' || !/Request \d+\.0:/.test(a.prompt ?? ''))
      .map((a) => a.overhead_ms)
      .filter((v): v is number => typeof v === 'number');
    const row = (p: number) => {
      const d = pct(direct, p);
      const g = pct(viaGateway, p);
      return `| p${p} | ${d.toFixed(2)} | ${g.toFixed(2)} | ${(g - d).toFixed(2)} | ${(g / d).toFixed(3)} | ${pct(overhead, p).toFixed(3)} |`;
    };
    const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
    process.stdout.write(
      [
        `gateway TTFT bench: ${N} concurrent streams (${PATTERN}${PATTERN === 'steady' ? `, ${PER_STREAM} requests each, first not counted` : ''}) × ${ROUNDS} rounds per path, max_tokens ${MAX_TOKENS}, worker threads ${values['worker-threads']}, ${os.cpus().length} × ${cpu}, node ${process.version}`,
        '',
        '| percentile | direct TTFT ms | via gateway TTFT ms | difference ms | ratio gateway/direct | gateway own overhead ms |',
        '|---|---|---|---|---|---|',
        row(50),
        row(90),
        row(99),
        '',
        `(${direct.length} direct and ${viaGateway.length} gateway streams; own overhead from ${overhead.length} audit lines)`,
        '',
      ].join('\n'),
    );
  } finally {
    await gateway.stop();
    await worker.stop();
    agent.destroy();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench-gateway: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
