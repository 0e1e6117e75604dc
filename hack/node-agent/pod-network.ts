// Pod networking for the node agent. Kubernetes refuses loopback addresses in EndpointSlices, so pods cannot simply
// use 127.x addresses if anything (the gateway) is to discover them. With root and iproute2 the agent gives every pod
// its own network namespace on a bridge, like a tiny CNI: a real address in a private /16 that exists only on this
// machine, reachable from the host. Without them it falls back to loopback addresses (pods run, but EndpointSlices
// stay empty).
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

// Each network records its bridge, namespaces and owner pid here, so that one whose process was killed (a test run
// stopped with SIGKILL) is cleaned up by the next one to start.
const RECORDS = '/run/modelserve-podnet';

export interface PodNetwork {
  readonly mode: 'netns' | 'loopback';
  hostIP(nodeIndex: number): string;
  /** Sets up the pod's address; returns it and how to run a command inside the pod's network. */
  attach(
    uid: string,
    nodeIndex: number,
  ): { podIP: string; wrap: (command: string, args: string[]) => [string, string[]] };
  detach(uid: string): void;
  close(): void;
}

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });

export function createPodNetwork(): PodNetwork {
  if (process.getuid?.() === 0) {
    try {
      return new NetnsNetwork();
    } catch {
      /* no iproute2 or no permission: fall back */
    }
  }
  return new LoopbackNetwork();
}

class NetnsNetwork implements PodNetwork {
  readonly mode = 'netns' as const;
  private readonly bridge: string;
  private readonly octet: number;
  private readonly pods = new Map<string, string>(); // uid → netns name
  private next = new Map<number, number>();

  constructor() {
    reapAbandoned();
    const routes = execFileSync('ip', ['-4', 'route', 'show'], { encoding: 'utf8' });
    const candidates = Array.from({ length: 60 }, (_, i) => 190 + i).filter((o) => !routes.includes(`10.${o}.`));
    this.octet = candidates[Math.floor(Math.random() * candidates.length)] ?? 190;
    this.bridge = `msbr${randomBytes(3).toString('hex')}`;
    ip('link', 'add', this.bridge, 'type', 'bridge');
    ip('addr', 'add', `10.${this.octet}.0.1/16`, 'dev', this.bridge);
    ip('link', 'set', this.bridge, 'up');
    this.record();
  }

  private record(): void {
    fs.mkdirSync(RECORDS, { recursive: true });
    const data = { pid: process.pid, bridge: this.bridge, namespaces: [...this.pods.values()] };
    fs.writeFileSync(path.join(RECORDS, `${this.bridge}.json`), JSON.stringify(data));
  }

  hostIP(nodeIndex: number): string {
    return `10.${this.octet}.${nodeIndex + 1}.1`;
  }

  attach(uid: string, nodeIndex: number) {
    const n = this.next.get(nodeIndex) ?? 2;
    this.next.set(nodeIndex, n >= 254 ? 2 : n + 1);
    const podIP = `10.${this.octet}.${nodeIndex + 1}.${n}`;
    const tag = uid.replace(/-/g, '').slice(0, 10);
    const ns = `ms-${tag}`;
    const hostSide = `ms${tag}`;
    ip('netns', 'add', ns);
    ip('link', 'add', hostSide, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    ip('link', 'set', hostSide, 'master', this.bridge, 'up');
    ip('-n', ns, 'addr', 'add', `${podIP}/16`, 'dev', 'eth0');
    ip('-n', ns, 'link', 'set', 'eth0', 'up');
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    ip('-n', ns, 'route', 'add', 'default', 'via', `10.${this.octet}.0.1`);
    this.pods.set(uid, ns);
    this.record();
    return {
      podIP,
      wrap: (command: string, args: string[]): [string, string[]] => ['ip', ['netns', 'exec', ns, command, ...args]],
    };
  }

  detach(uid: string): void {
    const ns = this.pods.get(uid);
    if (!ns) return;
    this.pods.delete(uid);
    try {
      ip('netns', 'del', ns);
    } catch {
      /* already gone */
    }
    this.record();
  }

  close(): void {
    for (const uid of [...this.pods.keys()]) this.detach(uid);
    try {
      ip('link', 'del', this.bridge);
    } catch {
      /* already gone */
    }
    fs.rmSync(path.join(RECORDS, `${this.bridge}.json`), { force: true });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Deletes the namespaces and bridges of networks whose owning process is gone. */
function reapAbandoned(): void {
  if (!fs.existsSync(RECORDS)) return;
  for (const f of fs.readdirSync(RECORDS)) {
    const file = path.join(RECORDS, f);
    try {
      const rec = JSON.parse(fs.readFileSync(file, 'utf8')) as { pid: number; bridge: string; namespaces: string[] };
      if (alive(rec.pid)) continue;
      for (const ns of rec.namespaces) {
        try {
          ip('netns', 'del', ns);
        } catch {
          /* already gone */
        }
      }
      try {
        ip('link', 'del', rec.bridge);
      } catch {
        /* already gone */
      }
    } catch {
      /* unreadable record: drop it */
    }
    fs.rmSync(file, { force: true });
  }
}

class LoopbackNetwork implements PodNetwork {
  readonly mode = 'loopback' as const;
  // A random second octet per agent keeps two agents (two test suites) from handing out the same pod IPs.
  private readonly base = `127.${10 + Math.floor(Math.random() * 240)}`;
  private next = 2;

  hostIP(nodeIndex: number): string {
    return `${this.base}.${nodeIndex}.1`;
  }

  attach(_uid: string, nodeIndex: number) {
    const podIP = `${this.base}.${nodeIndex}.${this.next}`;
    this.next = this.next >= 254 ? 2 : this.next + 1;
    return { podIP, wrap: (command: string, args: string[]): [string, string[]] => [command, args] };
  }

  detach(): void {}
  close(): void {}
}
