import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/**
 * A child process whose output goes to a log file, that is stopped with SIGTERM (then SIGKILL after a grace period),
 * and that dies with the test process even when jest is killed: every pid is registered with a reaper shell that
 * outlives us only long enough to kill what we started.
 */
export class ManagedProcess {
  readonly logFile: string;
  private child: ChildProcess | undefined;
  private exitPromise: Promise<number | null> | undefined;
  private exited = false;

  constructor(
    readonly name: string,
    readonly command: string,
    readonly args: string[],
    readonly opts: { dir: string; env?: NodeJS.ProcessEnv; cwd?: string },
  ) {
    this.logFile = path.join(opts.dir, `${name}.log`);
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return this.child !== undefined && !this.exited;
  }

  start(): this {
    const log = fs.openSync(this.logFile, 'a');
    fs.writeSync(log, `# ${new Date().toISOString()} ${this.command} ${this.args.join(' ')}\n`);
    this.exited = false;
    const child = spawn(this.command, this.args, {
      cwd: this.opts.cwd,
      env: this.opts.env ?? process.env,
      stdio: ['ignore', log, log],
    });
    fs.closeSync(log);
    this.child = child;
    this.exitPromise = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exited = true;
        resolve(code ?? (signal ? 128 : null));
      });
      child.once('error', () => {
        this.exited = true;
        resolve(127);
      });
    });
    if (child.pid) reaper.track(child.pid);
    return this;
  }

  /** The last lines of the log, for error messages. */
  tail(lines = 30): string {
    try {
      return fs.readFileSync(this.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }

  /** Throws with the log tail if the process has exited. */
  assertRunning(): void {
    if (this.exited) throw new Error(`${this.name} exited early; last log lines (${this.logFile}):\n${this.tail()}`);
  }

  async stop(graceMs = 5_000, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.child;
    if (!child || this.exited) return;
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await this.exitPromise;
    clearTimeout(timer);
    if (child.pid) reaper.untrack(child.pid);
  }

  /** SIGKILL, as a crash would. */
  async kill(): Promise<void> {
    await this.stop(0, 'SIGKILL');
  }

  wait(): Promise<number | null> {
    return this.exitPromise ?? Promise.resolve(null);
  }
}

/** Kills tracked pids if this process dies without stopping them (jest killed, crash, Ctrl-C). */
class Reaper {
  private pids = new Set<number>();
  private pidFile: string | undefined;
  private started = false;

  track(pid: number): void {
    this.pids.add(pid);
    this.ensureStarted();
    this.flush();
  }

  untrack(pid: number): void {
    this.pids.delete(pid);
    this.flush();
  }

  private flush(): void {
    if (this.pidFile) fs.writeFileSync(this.pidFile, [...this.pids].join('\n') + '\n');
  }

  private ensureStarted(): void {
    if (this.started) return;
    this.started = true;
    const dir = fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', 'modelserve-reaper-'));
    this.pidFile = path.join(dir, 'pids');
    this.flush();
    // A detached shell polls our pid; when we are gone it kills whatever is still listed, then removes its folder.
    const script =
      `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done; ` +
      `for p in $(cat "${this.pidFile}"); do kill -9 "$p" 2>/dev/null; done; rm -rf "${dir}"`;
    const watcher = spawn('bash', ['-c', script], { detached: true, stdio: 'ignore' });
    watcher.unref();
    process.once('exit', () => {
      for (const pid of this.pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    });
  }
}

const reaper = new Reaper();
