// How the node agent turns a container into a local process. Our own images map to entry points in this checkout
// (so a pod of the worker image runs `worker/src/main.ts` with the container's args); any other image runs its
// container `command` as given, which suits small utility containers in tests.
import path from 'node:path';

import type { V1Container } from '@kubernetes/client-node';

export interface LocalCommand {
  command: string;
  args: string[];
}

export interface ImageMapping {
  /** Matches the image reference without its tag or digest, e.g. "ghcr.io/modelserve/worker". Suffix match. */
  image: string;
  /** Command that replaces the container's `command`; the container's `args` are appended. */
  command: string[];
  /** Other programs of the image: a container whose `command` ends with the key runs this command instead. */
  programs?: Record<string, string[]>;
}

export function defaultImageMappings(repoRoot: string): ImageMapping[] {
  const tsx = [process.execPath, '--import', 'tsx'];
  return [
    {
      image: 'modelserve/worker',
      command: [...tsx, path.join(repoRoot, 'worker/src/main.ts')],
      // The fetch-weights init container of http(s):// and hf:// sources (operator --fetch-command).
      programs: { 'fetch.js': [...tsx, path.join(repoRoot, 'worker/src/fetch.ts')] },
    },
    { image: 'modelserve/operator', command: [...tsx, path.join(repoRoot, 'operator/src/main.ts')] },
    { image: 'modelserve/gateway', command: [...tsx, path.join(repoRoot, 'operator/src/gateway/main.ts')] },
    // The node-local weight cache's stager Jobs (operator --stager-image=…/weight-stager in local systems and tests).
    {
      image: 'modelserve/weight-stager',
      command: [...tsx, path.join(repoRoot, 'operator/src/weightcache/stager.ts')],
    },
  ];
}

function imageName(ref: string): string {
  const noDigest = ref.split('@')[0] ?? ref;
  const lastSlash = noDigest.lastIndexOf('/');
  const colon = noDigest.indexOf(':', lastSlash + 1);
  return colon >= 0 ? noDigest.slice(0, colon) : noDigest;
}

/** The local command for a container, or an error message saying why it cannot run here. */
export function localCommand(container: V1Container, mappings: ImageMapping[]): LocalCommand | { error: string } {
  const name = imageName(container.image ?? '');
  const mapping = mappings.find((m) => name === m.image || name.endsWith(`/${m.image}`));
  if (mapping) {
    const last = container.command?.at(-1) ?? '';
    const program = Object.entries(mapping.programs ?? {}).find(([script]) => last.endsWith(script))?.[1];
    const [command, ...rest] = program ?? mapping.command;
    return { command: command as string, args: [...rest, ...(container.args ?? [])] };
  }
  const [command, ...rest] = container.command ?? [];
  if (!command) return { error: `image ${container.image} has no local mapping and the container sets no command` };
  return { command, args: [...rest, ...(container.args ?? [])] };
}
