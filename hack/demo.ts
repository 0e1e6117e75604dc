// `make demo`: the whole system on this machine, from `kubectl apply` to tokens. Starts Redis, a real control plane,
// the local node agent (fake GPU nodes whose pods run as local processes), the operator and the gateway; applies the
// demo ModelDeployment (SmolLM2-135M-Instruct, a real small model from GGUF); waits until it is Ready; sends a chat
// completion through the gateway with the official client; runs a one-minute burst while printing replicas and queue;
// then keeps running with instructions until Ctrl-C, which tears everything down.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import OpenAI from 'openai';

import { isListening } from '../test/support/ports.js';
import { repoRoot } from '../test/support/paths.js';
import { startLocalSystem, type LocalSystem } from '../test/support/localSystem.js';

const log = (msg: string) => process.stdout.write(`[demo] ${msg}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function mdepLine(sys: LocalSystem): Promise<string> {
  const res = await sys.cp.kubectl(['get', 'mdep', 'demo', '--no-headers']);
  return res.stdout.trim().replace(/\s+/g, ' ');
}

async function burst(sys: LocalSystem, seconds: number): Promise<void> {
  const client = new OpenAI({ baseURL: `${sys.gatewayUrl}/v1`, apiKey: 'demo', maxRetries: 0, timeout: 120_000 });
  const end = Date.now() + seconds * 1000;
  let ok = 0;
  let failed = 0;
  const workers = Array.from({ length: 16 }, async () => {
    while (Date.now() < end) {
      try {
        await client.chat.completions.create({
          model: 'demo',
          messages: [{ role: 'user', content: 'Tell me a story.' }],
          max_tokens: 32,
        });
        ok += 1;
      } catch {
        failed += 1;
      }
    }
  });
  const display = (async () => {
    while (Date.now() < end + 5_000) {
      log(
        `t+${Math.round((Date.now() - end) / 1000 + seconds)}s  ${await mdepLine(sys)}  (completed ${ok}, failed ${failed})`,
      );
      await sleep(5_000);
    }
  })();
  await Promise.all([...workers, display]);
  log(`burst done: ${ok} completed, ${failed} failed`);
}

async function main(): Promise<void> {
  const port = Number(process.env.DEMO_PORT ?? 8080);
  if (await isListening(port)) {
    process.stderr.write(
      `[demo] port ${port} is already taken (another demo?): stop it or run DEMO_PORT=<free port> make demo\n`,
    );
    process.exit(2);
  }
  log('SmolLM2-135M-Instruct (GGUF, Q4_1): hack/slm/fetch-model.sh (cached after the first fetch)…');
  // The Makefile's `slm-model` prerequisite has fetched it; this only prints its path (and fetches when run directly).
  const gguf = execFileSync(path.join(repoRoot, 'hack/slm/fetch-model.sh'), { encoding: 'utf8' })
    .trim()
    .split('\n')
    .pop()!;
  const checkpoint = path.dirname(gguf);
  log(`model file: ${gguf}`);
  log('starting Redis, the control plane, the node agent, the operator and the gateway…');
  const sys = await startLocalSystem({ name: 'demo', nodes: 3, gpusPerNode: 1, gatewayPort: port });
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    log('tearing down…');
    await sys.stop();
    log('stopped cleanly');
    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());

  const manifest = fs
    .readFileSync(path.join(repoRoot, 'examples/demo.yaml'), 'utf8')
    .replaceAll('CHECKPOINT_DIR', checkpoint);
  const applied = await sys.cp.kubectl(['apply', '-f', '-'], { input: manifest });
  log(`kubectl apply -f examples/demo.yaml: ${(applied.stdout || applied.stderr).trim()}`);
  if (applied.code !== 0) {
    await sys.stop();
    process.exit(1);
  }
  for (;;) {
    const line = await mdepLine(sys);
    log(`kubectl get mdep demo: ${line}`);
    const ready = await sys.cp.kubectl([
      'get',
      'mdep',
      'demo',
      '-o',
      'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
    ]);
    if (ready.stdout === 'True') break;
    await sleep(2_000);
  }

  const client = new OpenAI({ baseURL: `${sys.gatewayUrl}/v1`, apiKey: 'demo', maxRetries: 0 });
  const question = 'What does HTTP stand for?';
  const answer = await client.chat.completions.create({
    model: 'demo',
    messages: [{ role: 'user', content: question }],
    max_tokens: 64,
    temperature: 0,
  });
  log(`asked: ${question}`);
  log(`answer (greedy): ${JSON.stringify(answer.choices[0]?.message.content)}`);
  log(`usage: ${JSON.stringify(answer.usage)}`);

  log('one-minute burst of 16 concurrent clients; watch READY/DESIRED/QUEUE (scale up, then down):');
  log('      NAME READY DESIRED QUEUE TTFT-P95(ms) SLO AGE');
  await burst(sys, 60);
  for (let i = 0; i < 6; i++) {
    log(`after the burst: ${await mdepLine(sys)}`);
    await sleep(5_000);
  }

  log('The system keeps running. Try:');
  log(`  export KUBECONFIG=${sys.cp.kubeconfigPath} PATH=${sys.cp.binDir}:$PATH`);
  log('  kubectl get mdep; kubectl get pods -o wide; kubectl describe mdep demo');
  log(
    `  curl -s ${sys.gatewayUrl}/v1/chat/completions -H 'content-type: application/json' -d '{"model":"demo","messages":[{"role":"user","content":"hi"}],"max_tokens":16}'`,
  );
  log(`Logs: ${sys.cp.dir} (control plane, operator, gateway, node-agent.log; pods/ holds each worker's log)`);
  log('Ctrl-C stops everything.');
  await new Promise(() => undefined);
}

main().catch((err: unknown) => {
  process.stderr.write(`[demo] failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
