// What a stager must fetch: the list of files of a checkpoint, each with where to read it and (when known) its size
// and SHA-256. hf:// sources are listed through the Hub's HTTP API (HF_ENDPOINT for mirrors), http(s):// sources by
// spec.model.sha256 (HTTP has no directory listing), file:// and pvc:// sources by walking the mounted directory.
import fs from 'node:fs';
import path from 'node:path';

export interface SourceFile {
  /** Path relative to the checkpoint root, with '/' separators. */
  path: string;
  /** http(s) URL or absolute local path. */
  from: string;
  size?: number;
  sha256?: string;
}

export const DEFAULT_HF_ENDPOINT = 'https://huggingface.co';

/** One sibling of the Hub's model-info answer (`GET /api/models/{repo}/revision/{rev}?blobs=true`). */
interface HubSibling {
  rfilename?: unknown;
  size?: unknown;
  lfs?: { sha256?: unknown; size?: unknown } | null;
}

/** A relative path that stays inside the entry: no absolute paths, no '..', no empty segments. */
export function safeRelativePath(p: string, what: string): string {
  const parts = p.split('/');
  if (!p || p.startsWith('/') || parts.some((s) => s === '' || s === '.' || s === '..') || p.includes('\\')) {
    throw new Error(`${what}: unsafe file path ${JSON.stringify(p)} (must be relative, without '..')`);
  }
  return p;
}

/**
 * Parses the Hub's model-info JSON into the file list. LFS files carry their SHA-256 (lfs.sha256); small files kept
 * in git have only a git blob id, so they are fetched without a checksum unless spec.model.sha256 names one.
 */
export function parseHubListing(
  body: unknown,
  endpoint: string,
  repo: string,
  revision: string,
  expected: Record<string, string> = {},
): SourceFile[] {
  const siblings = (body as { siblings?: unknown } | null)?.siblings;
  if (!Array.isArray(siblings)) {
    throw new Error(`hub listing of ${repo}@${revision}: no "siblings" array in the answer from ${endpoint}`);
  }
  const base = endpoint.replace(/\/+$/, '');
  return (siblings as HubSibling[]).map((s, i) => {
    if (typeof s.rfilename !== 'string') throw new Error(`hub listing of ${repo}: siblings[${i}].rfilename missing`);
    const rel = safeRelativePath(s.rfilename, `hub listing of ${repo}`);
    const lfsSha = typeof s.lfs?.sha256 === 'string' ? s.lfs.sha256 : undefined;
    const want = expected[rel];
    if (want && lfsSha && want !== lfsSha) {
      throw new Error(
        `spec.model.sha256[${JSON.stringify(rel)}] is ${want} but the Hub lists ${lfsSha} for ${repo}@${revision}`,
      );
    }
    const size = typeof s.lfs?.size === 'number' ? s.lfs.size : typeof s.size === 'number' ? s.size : undefined;
    const encoded = rel.split('/').map(encodeURIComponent).join('/');
    return {
      path: rel,
      from: `${base}/${repo}/resolve/${encodeURIComponent(revision)}/${encoded}`,
      ...(size !== undefined ? { size } : {}),
      ...((want ?? lfsSha) ? { sha256: want ?? lfsSha } : {}),
    };
  });
}

export interface ListOptions {
  source: string;
  revision?: string;
  sha256: Record<string, string>;
  /** Where file:// and pvc:// sources are mounted in the stager's pod (the stager cannot mount by itself). */
  localRoot?: string;
  hfEndpoint: string;
  hfToken?: string;
  fetchImpl?: typeof fetch;
}

/** The files of the checkpoint at `source`. Throws with a message naming the field or URL at fault. */
export async function listSource(opts: ListOptions): Promise<SourceFile[]> {
  const m = /^([a-z]+):\/\/(.+)$/.exec(opts.source);
  if (!m) throw new Error(`--source: unsupported source ${JSON.stringify(opts.source)}`);
  const [, scheme, rest] = m as unknown as [string, string, string];
  switch (scheme) {
    case 'hf': {
      if (!opts.revision) throw new Error('--revision: an hf:// source needs a pinned revision');
      const url = `${opts.hfEndpoint.replace(/\/+$/, '')}/api/models/${rest}/revision/${encodeURIComponent(opts.revision)}?blobs=true`;
      const res = await (opts.fetchImpl ?? fetch)(url, {
        headers: opts.hfToken ? { authorization: `Bearer ${opts.hfToken}` } : {},
        signal: AbortSignal.timeout(60_000),
      }).catch((err: unknown) => {
        throw new Error(`hub listing ${url}: ${describeError(err)}`);
      });
      if (!res.ok) throw new Error(`hub listing ${url}: HTTP ${res.status} ${(await res.text()).slice(0, 200)}`);
      return parseHubListing(await res.json(), opts.hfEndpoint, rest, opts.revision, opts.sha256);
    }
    case 'http':
    case 'https': {
      const files = Object.keys(opts.sha256).sort();
      if (files.length === 0) {
        throw new Error(
          'spec.model.sha256: an http(s):// source needs the checkpoint files listed with their SHA-256 (HTTP has no directory listing)',
        );
      }
      const base = opts.source.replace(/\/+$/, '');
      return files.map((f) => ({
        path: safeRelativePath(f, 'spec.model.sha256'),
        from: `${base}/${f.split('/').map(encodeURIComponent).join('/')}`,
        sha256: opts.sha256[f],
      }));
    }
    case 'file':
    case 'pvc': {
      const root = opts.localRoot;
      if (!root) throw new Error(`--local-root: a ${scheme}:// source must be mounted into the stager`);
      if (!fs.existsSync(root)) throw new Error(`source ${opts.source}: ${root} does not exist on this node`);
      return walk(root).map((rel) => {
        const from = path.join(root, rel);
        const want = opts.sha256[rel];
        return { path: rel, from, size: fs.statSync(from).size, ...(want ? { sha256: want } : {}) };
      });
    }
    default:
      throw new Error(`--source: unsupported scheme ${scheme}:// (allowed: file, pvc, http, https, hf)`);
  }
}

/** An error's message with its cause (fetch reports "fetch failed" and puts ECONNREFUSED & co. in `cause`). */
export function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause as { code?: string; message?: string } | undefined;
  const detail = cause?.code ?? cause?.message;
  return detail && !err.message.includes(detail) ? `${err.message} (${detail})` : err.message;
}

/** Regular files under `root`, relative, sorted; hidden entries (.git, markers) are skipped. */
function walk(root: string, rel = ''): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
    if (e.name.startsWith('.')) continue;
    const child = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...walk(root, child));
    else if (e.isFile()) out.push(child);
  }
  return out.sort();
}
