// SHA-256 beside the download instead of inside it: Node.js hashes at about 1 GB/s on one core, which in the download
// loop adds its whole time to every file. Large files are hashed on a worker thread fed 8 MiB batches (transferred,
// not copied twice), with at most a few batches in flight so memory stays bounded when the network outruns the hash.
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';

export interface Hasher {
  /** Resolves when the chunk is accepted (at once, or when a batch slot frees up). */
  update(chunk: Uint8Array): Promise<void>;
  digest(): Promise<string>;
  /** Stops the worker without a digest (the download failed). */
  close(): void;
}

const BATCH_BYTES = 8 << 20;
const MAX_IN_FLIGHT = 4;
/** Files smaller than this are hashed inline: a worker's start costs more than it saves. */
export const PIPELINE_MIN_BYTES = 32 << 20;

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const hash = require('node:crypto').createHash('sha256');
parentPort.on('message', (m) => {
  if (m === 'digest') parentPort.postMessage({ digest: hash.digest('hex') });
  else { hash.update(new Uint8Array(m)); parentPort.postMessage({ ack: true }); }
});
`;

class InlineHasher implements Hasher {
  private readonly hash = createHash('sha256');
  update(chunk: Uint8Array): Promise<void> {
    this.hash.update(chunk);
    return Promise.resolve();
  }
  digest(): Promise<string> {
    return Promise.resolve(this.hash.digest('hex'));
  }
  close(): void {}
}

class WorkerHasher implements Hasher {
  private readonly worker = new Worker(WORKER_SOURCE, { eval: true });
  private batch = Buffer.allocUnsafeSlow(BATCH_BYTES);
  private used = 0;
  private inFlight = 0;
  private waiters: (() => void)[] = [];
  private digestWaiter?: { resolve: (hex: string) => void; reject: (err: Error) => void };
  private failure?: Error;

  constructor() {
    this.worker.on('message', (m: { ack?: boolean; digest?: string }) => {
      if (m.ack) {
        this.inFlight--;
        this.waiters.shift()?.();
      } else if (m.digest) this.digestWaiter?.resolve(m.digest);
    });
    this.worker.on('error', (err) => this.fail(err));
    this.worker.on('exit', (code) => {
      if (code !== 0) this.fail(new Error(`hash worker exited with code ${code}`));
    });
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const w of this.waiters.splice(0)) w();
    this.digestWaiter?.reject(err);
  }

  private async send(bytes: Buffer): Promise<void> {
    while (this.inFlight >= MAX_IN_FLIGHT && !this.failure) await new Promise<void>((r) => this.waiters.push(r));
    if (this.failure) throw this.failure;
    this.inFlight++;
    const ab = bytes.buffer as ArrayBuffer;
    this.worker.postMessage(ab, [ab]);
  }

  async update(chunk: Uint8Array): Promise<void> {
    let offset = 0;
    while (offset < chunk.byteLength) {
      const n = Math.min(chunk.byteLength - offset, BATCH_BYTES - this.used);
      this.batch.set(chunk.subarray(offset, offset + n), this.used);
      this.used += n;
      offset += n;
      if (this.used === BATCH_BYTES) {
        const full = this.batch;
        this.batch = Buffer.allocUnsafeSlow(BATCH_BYTES);
        this.used = 0;
        await this.send(full);
      }
    }
  }

  async digest(): Promise<string> {
    if (this.used > 0) {
      const rest = Buffer.allocUnsafeSlow(this.used);
      this.batch.copy(rest, 0, 0, this.used);
      this.used = 0;
      await this.send(rest);
    }
    if (this.failure) throw this.failure;
    try {
      return await new Promise<string>((resolve, reject) => {
        this.digestWaiter = { resolve, reject };
        this.worker.postMessage('digest');
      });
    } finally {
      this.close();
    }
  }

  close(): void {
    void this.worker.terminate();
  }
}

/** A hasher for a file of about `bytes` (unknown: inline). */
export function newHasher(bytes: number | undefined): Hasher {
  // The threshold can be lowered (tests run the worker path on small files).
  const min = Number(process.env.MODELSERVE_STAGE_PIPELINE_MIN_BYTES) || PIPELINE_MIN_BYTES;
  return bytes !== undefined && bytes >= min ? new WorkerHasher() : new InlineHasher();
}
