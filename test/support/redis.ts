import path from 'node:path';

import { runDir } from './paths.js';
import { freePort, isListening } from './ports.js';
import { ManagedProcess } from './process.js';
import { waitFor } from './wait.js';

/** A real redis-server on a free loopback port, without persistence, that tests can stop and restart on the same port. */
export class RedisServer {
  private proc: ManagedProcess;

  constructor(
    readonly port: number,
    readonly dir: string,
  ) {
    this.proc = this.makeProcess();
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  private makeProcess(): ManagedProcess {
    return new ManagedProcess(
      'redis-server',
      'redis-server',
      [
        '--port',
        String(this.port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        this.dir,
        '--loglevel',
        'warning',
      ],
      { dir: this.dir },
    );
  }

  async start(): Promise<void> {
    this.proc = this.makeProcess().start();
    await waitFor(async () => (this.proc.assertRunning(), isListening(this.port)), {
      timeoutMs: 15_000,
      description: `redis-server on ${this.port}`,
    });
  }

  async stop(): Promise<void> {
    await this.proc.stop();
  }

  /** SIGKILL, as a crash would. */
  async kill(): Promise<void> {
    await this.proc.kill();
  }

  /** Stops (or kills) and starts again on the same port, with empty state. */
  async restart(opts: { kill?: boolean } = {}): Promise<void> {
    await (opts.kill ? this.kill() : this.stop());
    await this.start();
  }
}

export async function startRedis(name = 'redis'): Promise<RedisServer> {
  const dir = runDir(name);
  const server = new RedisServer(await freePort(), path.resolve(dir));
  await server.start();
  return server;
}
