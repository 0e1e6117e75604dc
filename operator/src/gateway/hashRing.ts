// Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2018): every worker owns many points on a
// 32-bit ring; a request's prefix hash walks clockwise from its point and takes the first worker whose load is under
// ceil(c · (total + 1) / n). Requests that share a system prompt land on the same worker (its prefix cache is warm)
// until that worker carries more than c times the average, and adding or removing a worker only moves the keys that
// worker owns.

/** 32-bit FNV-1a with murmur3's final mix, so that similar strings land far apart on the ring. */
export function hash32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The load limit of one worker: ceil(c · (total load + 1) / workers), never below 1. */
export function loadBound(totalLoad: number, workers: number, c: number): number {
  if (workers <= 0) return 0;
  return Math.max(1, Math.ceil((c * (totalLoad + 1)) / workers));
}

export class HashRing {
  private points: number[] = [];
  private owners: string[] = [];
  private members: string[] = [];

  constructor(readonly pointsPerMember = 160) {}

  /** Rebuilds the ring when the member set changed; a same set (any order) is a no-op. */
  setMembers(members: readonly string[]): void {
    const sorted = [...new Set(members)].sort();
    if (sorted.length === this.members.length && sorted.every((m, i) => m === this.members[i])) return;
    this.members = sorted;
    const entries: [number, string][] = [];
    for (const m of sorted) for (let i = 0; i < this.pointsPerMember; i++) entries.push([hash32(`${m}#${i}`), m]);
    // Ties are broken by member name so the ring does not depend on insertion order.
    entries.sort((a, b) => a[0] - b[0] || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
    this.points = entries.map((e) => e[0]);
    this.owners = entries.map((e) => e[1]);
  }

  get size(): number {
    return this.members.length;
  }

  /** Distinct members in ring order starting at the key's point: the key's preference list. */
  *walk(keyHash: number): Generator<string> {
    const n = this.points.length;
    if (n === 0) return;
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.points[mid] as number) < keyHash) lo = mid + 1;
      else hi = mid;
    }
    const seen = new Set<string>();
    for (let i = 0; i < n && seen.size < this.members.length; i++) {
      const owner = this.owners[(lo + i) % n] as string;
      if (seen.has(owner)) continue;
      seen.add(owner);
      yield owner;
    }
  }

  /** The member owning the key when loads are ignored. */
  owner(keyHash: number): string | undefined {
    for (const m of this.walk(keyHash)) return m;
    return undefined;
  }

  /**
   * The first member along the key's walk whose load is under the bound and that `eligible` accepts; undefined when
   * none is. `load` gives the outstanding requests of a member.
   */
  pick(
    keyHash: number,
    load: (member: string) => number,
    c: number,
    eligible: (member: string) => boolean = () => true,
  ): string | undefined {
    let total = 0;
    for (const m of this.members) total += load(m);
    const bound = loadBound(total, this.members.length, c);
    for (const m of this.walk(keyHash)) if (eligible(m) && load(m) < bound) return m;
    return undefined;
  }
}
