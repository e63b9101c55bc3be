/**
 * ipcache: longest-prefix match from an IPv4 or IPv6 address to a leaf (security identity,
 * tunnel endpoint, flags). A miss means `world` (identity 2): the reader returns leaf 0 and
 * the pipeline maps it to ID_WORLD (src/proto/identity.ts) and notes that the lookup missed the ipcache.
 *
 * Published left-right through a shared WriteLog (publish.ts): every array below exists twice
 * (side 0, side 1); the control thread writes the inactive side through the log, and one
 * `log.commit()` publishes the ipcache together with the other tables. Readers call
 * `useSide(side)` once per batch, then `lookup4` / `lookup6` with no allocation.
 *
 * IPv4 uses DIR-24-8 (as DPDK's rte_lpm): one read of tbl24 for prefixes up to /24, a second
 * read of a tbl8 group when the /24 holds a longer prefix.
 *
 * IPv6 uses a published hash keyed by (masked address, prefix length), plus a short published
 * list of the prefix lengths present, longest first. A lookup probes each present length from
 * the longest; deployments usually have a handful of distinct lengths (/128, /64, /48, /0).
 *
 * ---- Shared layout (every array: Uint32Array over its own SharedArrayBuffer, two sides) ----
 *
 * tbl24   2^24 words (64 MiB per side). Index = addr >>> 8 (the /24 the address is in).
 *           value 0                        miss (no prefix covers this /24)
 *           bit 31 clear, value != 0       leaf index (the longest prefix <= /24 covering it)
 *           bit 31 set                     bits 0..30 = tbl8 group number (the /24 holds at
 *                                          least one prefix longer than /24)
 * tbl8    tbl8Groups * 256 words. Index = group * 256 + (addr & 0xff).
 *           value 0 = miss, else leaf index (never a group: DIR-24-8 has only two levels).
 * leaf    leaves * 4 words. Row i starts at word 4 * i. Leaf 0 is never used (0 = miss), so
 *         there are leaves - 1 usable leaves, shared by IPv4 and IPv6.
 *           +0  u32  identity   security identity of the prefix
 *           +1  u32  tunnel     IPv4 address of the tunnel endpoint, 0 = none (deliver locally
 *                               or route)
 *           +2  u32  flags      IPCACHE_FLAG_* bits below; other bits are carried unchanged
 *           +3  u32  prefix     bits 0..7 prefix length; bit 8 (LEAF_PREFIX_V6) set for IPv6
 * v6hash  SharedHash (hash.ts) with 5 key words and 1 value word:
 *           key   [w0, w1, w2, w3, len]   address masked to len bits (w0 most significant),
 *                                         then the prefix length (0..128)
 *           value [leaf]                  leaf index
 * v6lens  130 words.
 *           [0]      u32  n            number of distinct IPv6 prefix lengths present
 *           [1..n]   u32  lengths      those lengths, longest first (the probe order)
 *
 * Flags (leaf word +2):
 *   bit 0  IPCACHE_FLAG_LOCAL   the prefix is an endpoint on this switch
 *   bit 1  IPCACHE_FLAG_HOST    the prefix is an address owned by the host
 *   bits 2..31 reserved, stored and returned unchanged.
 *
 * ---- Writer ----
 *
 * The writer (control thread only) keeps private state next to the published arrays: the set
 * of IPv4 prefixes per length (for exact get/delete and to find the next covering prefix),
 * shadow copies of tbl24 and tbl8 with the depth (prefix length + 1, 0 = none) of the prefix
 * each slot holds, the count of longer-than-/24 prefixes in each tbl8 group, and free lists of
 * groups and leaves. Inserting a /len rewrites only the covered slots whose depth is <= len;
 * deleting a /len rewrites only the slots whose depth is len, to the next covering prefix. A
 * tbl8 group is taken from the free list when a /24 gets its first longer prefix and goes back
 * (the /24 collapses into one tbl24 entry) when the last one is deleted. Updating an existing
 * prefix rewrites its leaf only.
 *
 * Changes go to the shadows first; at the end of each operation, or of `batch()`, the touched
 * 256-slot blocks and groups are compared with the log's working side and only differing
 * words are logged. So a publish costs O(words changed), never O(table), and a bulk load in
 * one batch logs each slot once however many overlapping prefixes rewrote it.
 *
 * Bulk-load cost note: a prefix of length L <= 24 covers 2^(24-L) tbl24 slots, so any load
 * that includes /8s touches (and logs) a large part of the 16M slots, however few prefixes it
 * has. 1M prefixes of lengths 8..32 log about 23M words (measured, see
 * bench/tables/ipcache.bench.ts).
 */
import { SharedHash, SharedHashWriter } from './hash.js';
import { sharedPair, type WriteLog } from './publish.js';
import { formatPrefix, prefixOrReason, type Prefix } from '../proto/prefix.js';
import { InternalError, TunswitchError } from '../proto/errors.js';

// ---- constants ----

/** Leaf flag: the prefix is an endpoint on this switch. */
export const IPCACHE_FLAG_LOCAL = 1 << 0;
/** Leaf flag: the prefix is an address owned by the host. */
export const IPCACHE_FLAG_HOST = 1 << 1;

export const TBL24_ENTRIES = 1 << 24;
export const TBL8_GROUP_ENTRIES = 256;
/** tbl24 value bit saying "the rest is a tbl8 group number". */
export const TBL24_GROUP_BIT = 0x80000000;
/** Largest group count: group << 8 must stay below 2^31. */
export const MAX_TBL8_GROUPS = 1 << 23;

export const LEAF_WORDS = 4;
const kLeafIdentity = 0;
const kLeafTunnel = 1;
const kLeafFlags = 2;
const kLeafPrefix = 3;
/** Leaf prefix word: set for IPv6 prefixes. */
export const LEAF_PREFIX_V6 = 0x100;

export const V6_KEY_WORDS = 5;
export const V6_VALUE_WORDS = 1;
export const V6_LENS_WORDS = 130;

export const DEFAULT_TBL8_GROUPS = 8192;
export const DEFAULT_LEAVES = (1 << 21) + 1;
export const DEFAULT_V6_CAPACITY = 1 << 16;

/** Per IPv6 prefix length (0..128), the four word masks: MASKS6[len * 4 + w]. */
const MASKS6 = (() => {
  const m = new Uint32Array(129 * 4);
  for (let len = 0; len <= 128; len++) {
    for (let w = 0; w < 4; w++) {
      const bits = Math.min(32, Math.max(0, len - 32 * w));
      m[len * 4 + w] = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
    }
  }
  return m;
})();

/** IPv4 netmask of a prefix length (0..32) as an unsigned number. */
export function mask4(len: number): number {
  return len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
}

// ---- errors ----

// Errors are the one root's (src/proto/errors.ts): ECIDR_INVALID for a malformed prefix,
// ETABLE_FULL when no group, leaf or slot is free, EBAD_REQUEST for a value out of range,
// EINTERNAL for a misuse (bad option, a second writer).

// ---- shared description ----

/** Everything a worker needs to attach; structured-cloneable (SharedArrayBuffer-backed). */
export interface IpcacheShared {
  tbl8Groups: number;
  leaves: number;
  v6Capacity: number;
  tbl24: [Uint32Array, Uint32Array];
  tbl8: [Uint32Array, Uint32Array];
  leaf: [Uint32Array, Uint32Array];
  v6Hash: [Uint32Array, Uint32Array];
  v6Lens: [Uint32Array, Uint32Array];
}

export interface IpcacheOptions {
  tbl8Groups?: number;
  leaves?: number;
  v6Capacity?: number;
}

function optInt(v: number | undefined, name: string, dflt: number, lo: number, hi: number): number {
  if (v === undefined) return dflt;
  if (!Number.isInteger(v) || v < lo || v > hi) {
    throw new InternalError(`options.${name} must be an integer in ${lo}..${hi}, got ${v}`);
  }
  return v;
}

function i32View(a: Uint32Array): Int32Array {
  return new Int32Array(a.buffer, a.byteOffset, a.length);
}

/** Writers attached so far (one writer per ipcache). */
const withWriter = new WeakSet<Ipcache>();

// ---- reader ----

export class Ipcache {
  readonly shared: IpcacheShared;
  /** The IPv6 hash (exposed for the writer; readers use lookup6). */
  readonly v6: SharedHash;
  private readonly t24a: Int32Array;
  private readonly t24b: Int32Array;
  private readonly t8a: Int32Array;
  private readonly t8b: Int32Array;
  private readonly lfa: Uint32Array;
  private readonly lfb: Uint32Array;
  private readonly lensa: Uint32Array;
  private readonly lensb: Uint32Array;
  // The side in use (set by useSide once per batch).
  private t24: Int32Array;
  private t8: Int32Array;
  private lf: Uint32Array;
  private lens6: Uint32Array;
  private readonly key6: Uint32Array;

  private constructor(shared: IpcacheShared) {
    const { tbl8Groups, leaves, v6Capacity } = shared;
    const want: [string, number][] = [
      ['tbl24', TBL24_ENTRIES],
      ['tbl8', tbl8Groups * TBL8_GROUP_ENTRIES],
      ['leaf', leaves * LEAF_WORDS],
      ['v6Hash', SharedHash.words(V6_KEY_WORDS, V6_VALUE_WORDS, v6Capacity)],
      ['v6Lens', V6_LENS_WORDS],
    ];
    for (const [name, words] of want) {
      const pair = shared[name as 'tbl24'];
      if (!Array.isArray(pair) || pair.length !== 2) throw new InternalError(`ipcache: shared.${name} is not a pair`);
      for (const a of pair) {
        if (!(a instanceof Uint32Array) || a.length !== words) {
          throw new InternalError(`ipcache: shared.${name} must be two Uint32Array of ${words} words`);
        }
      }
    }
    this.shared = shared;
    this.v6 = new SharedHash(V6_KEY_WORDS, V6_VALUE_WORDS, v6Capacity, shared.v6Hash);
    this.t24a = i32View(shared.tbl24[0]);
    this.t24b = i32View(shared.tbl24[1]);
    this.t8a = i32View(shared.tbl8[0]);
    this.t8b = i32View(shared.tbl8[1]);
    this.lfa = shared.leaf[0];
    this.lfb = shared.leaf[1];
    this.lensa = shared.v6Lens[0];
    this.lensb = shared.v6Lens[1];
    this.t24 = this.t24a;
    this.t8 = this.t8a;
    this.lf = this.lfa;
    this.lens6 = this.lensa;
    this.key6 = this.v6.key;
  }

  static create(opts: IpcacheOptions = {}): Ipcache {
    const tbl8Groups = optInt(opts.tbl8Groups, 'tbl8Groups', DEFAULT_TBL8_GROUPS, 1, MAX_TBL8_GROUPS);
    const leaves = optInt(opts.leaves, 'leaves', DEFAULT_LEAVES, 2, 0x7fffffff);
    const v6Capacity = optInt(opts.v6Capacity, 'v6Capacity', DEFAULT_V6_CAPACITY, 2, 1 << 28);
    if ((v6Capacity & (v6Capacity - 1)) !== 0) {
      throw new InternalError(`options.v6Capacity must be a power of two, got ${v6Capacity}`);
    }
    return new Ipcache({
      tbl8Groups,
      leaves,
      v6Capacity,
      tbl24: sharedPair(TBL24_ENTRIES),
      tbl8: sharedPair(tbl8Groups * TBL8_GROUP_ENTRIES),
      leaf: sharedPair(leaves * LEAF_WORDS),
      v6Hash: sharedPair(SharedHash.words(V6_KEY_WORDS, V6_VALUE_WORDS, v6Capacity)),
      v6Lens: sharedPair(V6_LENS_WORDS),
    });
  }

  /** Wraps the arrays another thread created (workerData). Validates their sizes. */
  static attach(shared: IpcacheShared): Ipcache {
    return new Ipcache(shared);
  }

  /** Selects the side to read (the one PublishControl.enter returned), once per batch. */
  useSide(side: number): void {
    if (side === 0) {
      this.t24 = this.t24a;
      this.t8 = this.t8a;
      this.lf = this.lfa;
      this.lens6 = this.lensa;
    } else {
      this.t24 = this.t24b;
      this.t8 = this.t8b;
      this.lf = this.lfb;
      this.lens6 = this.lensb;
    }
    this.v6.useSide(side);
  }

  /** Longest-prefix match of an IPv4 address (u32); returns the leaf index, 0 = miss. */
  lookup4(addr: number): number {
    const e = this.t24[addr >>> 8] as number;
    if (e >= 0) return e;
    return this.t8[((e & 0x7fffffff) << 8) | (addr & 0xff)] as number;
  }

  /** Longest-prefix match of an IPv6 address (four u32, w0 most significant); 0 = miss. */
  lookup6(w0: number, w1: number, w2: number, w3: number): number {
    const lens = this.lens6;
    const n = lens[0] as number;
    const k = this.key6;
    const h = this.v6;
    for (let i = 1; i <= n; i++) {
      const len = lens[i] as number;
      const mb = len << 2;
      k[0] = w0 & (MASKS6[mb] as number);
      k[1] = w1 & (MASKS6[mb + 1] as number);
      k[2] = w2 & (MASKS6[mb + 2] as number);
      k[3] = w3 & (MASKS6[mb + 3] as number);
      k[4] = len;
      const b = h.find();
      if (b >= 0) return h.value(b, 0);
    }
    return 0;
  }

  leafIdentity(leaf: number): number {
    return this.lf[leaf * LEAF_WORDS + kLeafIdentity] as number;
  }

  leafTunnel(leaf: number): number {
    return this.lf[leaf * LEAF_WORDS + kLeafTunnel] as number;
  }

  leafFlags(leaf: number): number {
    return this.lf[leaf * LEAF_WORDS + kLeafFlags] as number;
  }

  leafPrefixLen(leaf: number): number {
    return (this.lf[leaf * LEAF_WORDS + kLeafPrefix] as number) & 0xff;
  }

  /** True when the leaf holds an IPv6 prefix. */
  leafIsV6(leaf: number): boolean {
    return ((this.lf[leaf * LEAF_WORDS + kLeafPrefix] as number) & LEAF_PREFIX_V6) !== 0;
  }
}

// ---- CIDR text (the one prefix type, src/proto/prefix.ts) ----

/**
 * Parses "10.0.0.0/8", "10.1.2.3" (= /32), "fd00::/64", "::1" (= /128), "::ffff:1.2.3.4/128".
 * Host bits are cleared (10.1.2.3/8 -> 10.0.0.0/8). Throws TunswitchError ECIDR_INVALID
 * naming the text.
 */
export function parseCidr(text: string): Prefix {
  const p = prefixOrReason(text);
  if (typeof p === 'string') throw new TunswitchError('ECIDR_INVALID', `ipcache: "${typeof text === 'string' ? text : String(text)}" is not a CIDR (${p})`);
  return p;
}

// ---- writer ----

export interface IpcacheValue {
  identity: number;
  tunnel: number;
  flags: number;
}

export interface IpcacheEntry extends IpcacheValue {
  cidr: string;
}

function checkU32(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new TunswitchError('EBAD_REQUEST', `ipcache: ${what} ${v} is not an unsigned 32-bit integer`);
  }
  return v;
}

function checkAddr4(v: number): number {
  if (!Number.isInteger(v) || v < -0x80000000 || v > 0xffffffff) {
    throw new TunswitchError('EBAD_REQUEST', `ipcache: IPv4 address ${v} is not a 32-bit integer`);
  }
  return v >>> 0;
}

function checkLen(len: number, max: number): void {
  if (!Number.isInteger(len) || len < 0 || len > max) {
    throw new TunswitchError('EBAD_REQUEST', `ipcache: prefix length ${len} is not in 0..${max}`);
  }
}

/** Blocks of tbl24 tracked for flushing: one per 256 slots. */
const kBlocks24 = TBL24_ENTRIES >>> 8;

/**
 * The control thread's handle on an ipcache. Exactly one per ipcache, created while the
 * ipcache is empty (its private state starts empty).
 *
 * Every change is first applied to private shadow copies of tbl24 and tbl8 (with the depth of
 * each slot), marking the 256-slot blocks and tbl8 groups it touched. At the end of each
 * operation (or of a `batch()`), the writer compares the touched blocks with the log's working
 * side and logs only the words that differ. A bulk load inside `batch()` therefore logs each
 * slot once, however many overlapping prefixes rewrote it. Changes become visible to readers
 * at the next `log.commit()` after they were flushed; a commit in the middle of a batch
 * publishes the state from before the batch, never part of it. Leaves freed by deletes are
 * reused only after the flush that stops the tables from pointing at them.
 */
export class IpcacheWriter {
  private readonly id24: number;
  private readonly id8: number;
  private readonly idLeaf: number;
  private readonly idLens6: number;
  private readonly hw: SharedHashWriter;
  private readonly groups: number;
  /** Shadow of tbl24 (the value every slot will have after the next flush). */
  private readonly s24: Uint32Array;
  /** Per tbl24 slot: depth (prefix length + 1) of the longest prefix <= /24 covering it, 0 = none. */
  private readonly d24: Uint8Array;
  /** Shadow of tbl8. */
  private readonly s8: Uint32Array;
  /** Per tbl8 entry: depth (prefix length + 1) of the prefix it holds, 0 = none. */
  private readonly d8: Uint8Array;
  /** Per tbl8 group: number of prefixes longer than /24 inside it (0 = free). */
  private readonly groupRefs: Int32Array;
  private readonly freeGroups: Int32Array;
  private nFreeGroups: number;
  private readonly freeLeaves: Int32Array;
  private nFreeLeaves: number;
  /** Leaves freed since the last flush (still referenced by the working side until then). */
  private readonly pendingLeaves: Int32Array;
  private nPendingLeaves = 0;
  /** Dirty 256-slot blocks of tbl24 and dirty tbl8 groups, as flags and as lists. */
  private readonly dirty24: Uint8Array;
  private readonly dirty24List: Int32Array;
  private nDirty24 = 0;
  private readonly dirty8: Uint8Array;
  private readonly dirty8List: Int32Array;
  private nDirty8 = 0;
  /** Nesting depth of batch(); flushes happen when it returns to 0. */
  private batching = 0;
  /** IPv4 prefixes by length: masked address (as int32) -> leaf. */
  private readonly pfx4: Map<number, number>[];
  private n4 = 0;
  /** IPv6 prefix count per length. */
  private readonly lenCount6 = new Int32Array(129);
  private readonly key6: number[] = [0, 0, 0, 0, 0];
  private readonly value6: number[] = [0];

  constructor(
    readonly ipcache: Ipcache,
    readonly log: WriteLog,
  ) {
    if (withWriter.has(ipcache)) throw new InternalError('ipcache: this ipcache already has a writer');
    const sh = ipcache.shared;
    this.id24 = log.register(sh.tbl24[0], sh.tbl24[1]);
    this.id8 = log.register(sh.tbl8[0], sh.tbl8[1]);
    this.idLeaf = log.register(sh.leaf[0], sh.leaf[1]);
    this.idLens6 = log.register(sh.v6Lens[0], sh.v6Lens[1]);
    this.hw = new SharedHashWriter(ipcache.v6, log);
    // Cheap emptiness check (a full scan of tbl24 would fault in 64 MiB of untouched pages).
    if (this.hw.size !== 0 || (log.working(this.idLens6)[0] as number) !== 0) {
      throw new InternalError('ipcache: a writer must start from an empty ipcache');
    }
    withWriter.add(ipcache);
    const groups = sh.tbl8Groups;
    this.groups = groups;
    this.s24 = new Uint32Array(TBL24_ENTRIES);
    this.d24 = new Uint8Array(TBL24_ENTRIES);
    this.s8 = new Uint32Array(groups * TBL8_GROUP_ENTRIES);
    this.d8 = new Uint8Array(groups * TBL8_GROUP_ENTRIES);
    this.groupRefs = new Int32Array(groups);
    // Stacks of free groups and leaves; pop gives the lowest number first.
    this.freeGroups = new Int32Array(groups);
    for (let i = 0; i < groups; i++) this.freeGroups[i] = groups - 1 - i;
    this.nFreeGroups = groups;
    this.freeLeaves = new Int32Array(sh.leaves - 1);
    for (let i = 0; i < sh.leaves - 1; i++) this.freeLeaves[i] = sh.leaves - 1 - i;
    this.nFreeLeaves = sh.leaves - 1;
    this.pendingLeaves = new Int32Array(sh.leaves - 1);
    this.dirty24 = new Uint8Array(kBlocks24);
    this.dirty24List = new Int32Array(kBlocks24);
    this.dirty8 = new Uint8Array(groups);
    this.dirty8List = new Int32Array(groups);
    this.pfx4 = [];
    for (let l = 0; l <= 32; l++) this.pfx4.push(new Map());
  }

  /** Number of prefixes (IPv4 + IPv6). */
  get size(): number {
    return this.n4 + this.hw.size;
  }

  /** tbl8 groups in use (one per /24 that holds a prefix longer than /24). */
  get tbl8InUse(): number {
    return this.groups - this.nFreeGroups;
  }

  /** Leaves in use (one per prefix, plus those freed but not yet flushed). */
  get leavesInUse(): number {
    return this.ipcache.shared.leaves - 1 - this.nFreeLeaves;
  }

  /**
   * Runs `fn` with flushing deferred: its upserts and deletes reach the log once, when the
   * outermost batch returns (or throws). Use it for bulk loads. Operations that completed
   * before a throw are kept.
   */
  batch<T>(fn: () => T): T {
    this.batching++;
    try {
      return fn();
    } finally {
      if (--this.batching === 0) this.flush();
    }
  }

  // ---- text API ----

  /** Inserts or replaces a prefix given as text ("10.0.0.0/8", "10.1.2.3", "fd00::/64") or parsed. */
  upsert(cidr: string | Prefix, v: { identity: number; tunnel?: number; flags?: number }): void {
    const c = typeof cidr === 'string' ? parseCidr(cidr) : cidr;
    if (c.family === 4) this.upsert4(c.words[0] as number, c.bits, v.identity, v.tunnel ?? 0, v.flags ?? 0);
    else this.upsert6(c.words, c.bits, v.identity, v.tunnel ?? 0, v.flags ?? 0);
  }

  /** Deletes a prefix given as text or parsed; returns whether it was present. */
  delete(cidr: string | Prefix): boolean {
    const c = typeof cidr === 'string' ? parseCidr(cidr) : cidr;
    return c.family === 4 ? this.delete4(c.words[0] as number, c.bits) : this.delete6(c.words, c.bits);
  }

  /** The value stored for exactly this prefix (not a longest match), or undefined. */
  get(cidr: string): IpcacheValue | undefined {
    const c = parseCidr(cidr);
    const leaf = c.family === 4 ? this.find4(c.words[0] as number, c.bits) : this.find6(c.words, c.bits);
    return leaf === 0 ? undefined : this.readLeaf(leaf);
  }

  /** Every prefix, IPv4 first, each family sorted by address then length. */
  list(): IpcacheEntry[] {
    const v4: { a: number; len: number; leaf: number }[] = [];
    for (let len = 0; len <= 32; len++) {
      for (const [k, leaf] of this.pfx4[len] as Map<number, number>) v4.push({ a: k >>> 0, len, leaf });
    }
    v4.sort((x, y) => x.a - y.a || x.len - y.len);
    const v6: { w: number[]; len: number; leaf: number }[] = [];
    for (const { key, value } of this.hw.entries()) v6.push({ w: key.slice(0, 4), len: key[4] as number, leaf: value[0] as number });
    v6.sort((x, y) => {
      for (let i = 0; i < 4; i++) {
        const d = (x.w[i] as number) - (y.w[i] as number);
        if (d !== 0) return d;
      }
      return x.len - y.len;
    });
    const out: IpcacheEntry[] = [];
    for (const e of v4) out.push({ cidr: formatPrefix(4, [e.a], e.len), ...this.readLeaf(e.leaf) });
    for (const e of v6) out.push({ cidr: formatPrefix(6, e.w, e.len), ...this.readLeaf(e.leaf) });
    return out;
  }

  // ---- IPv4 fast path ----

  /** Inserts or replaces addr/len (host bits are cleared). */
  upsert4(addr: number, len: number, identity: number, tunnel = 0, flags = 0): void {
    checkLen(len, 32);
    const a = (checkAddr4(addr) & mask4(len)) >>> 0;
    checkU32(identity, 'identity');
    checkU32(tunnel, 'tunnel');
    checkU32(flags, 'flags');
    const map = this.pfx4[len] as Map<number, number>;
    const old = map.get(a | 0);
    if (old !== undefined) {
      // Same prefix, new value: only its leaf changes.
      this.writeLeaf(old, identity, tunnel, flags, len);
      return;
    }
    // Check capacity before changing anything.
    if (this.nFreeLeaves === 0) this.noLeaf(4, [a], len);
    if (len > 24 && (this.s24[a >>> 8] as number) < TBL24_GROUP_BIT && this.nFreeGroups === 0) {
      throw new TunswitchError('ETABLE_FULL', `ipcache: no free tbl8 group for ${formatPrefix(4, [a], len)} (tbl8Groups ${this.groups})`);
    }
    const leaf = this.freeLeaves[--this.nFreeLeaves] as number;
    this.writeLeaf(leaf, identity, tunnel, flags, len);
    map.set(a | 0, leaf);
    this.n4++;
    if (len <= 24) this.insert24(a, len, leaf);
    else this.insert8(a, len, leaf);
    if (this.batching === 0) this.flush();
  }

  /** Deletes addr/len (host bits are cleared); returns whether it was present. */
  delete4(addr: number, len: number): boolean {
    checkLen(len, 32);
    const a = (checkAddr4(addr) & mask4(len)) >>> 0;
    const map = this.pfx4[len] as Map<number, number>;
    const leaf = map.get(a | 0);
    if (leaf === undefined) return false;
    map.delete(a | 0);
    this.n4--;
    // The next covering prefix: the longest shorter prefix containing a/len.
    let pLeaf = 0;
    let pDepth = 0;
    for (let l = len - 1; l >= 0; l--) {
      const x = (this.pfx4[l] as Map<number, number>).get((a & mask4(l)) | 0);
      if (x !== undefined) {
        pLeaf = x;
        pDepth = l + 1;
        break;
      }
    }
    const depth = len + 1;
    if (len <= 24) {
      const s24 = this.s24;
      const d24 = this.d24;
      const lo = a >>> 8;
      const hi = lo + (1 << (24 - len));
      this.markRange24(lo, hi);
      for (let s = lo; s < hi; s++) {
        // The slots where this prefix is the longest match <= /24 are those at its depth.
        if (d24[s] !== depth) continue;
        d24[s] = pDepth;
        const e = s24[s] as number;
        if (e >= TBL24_GROUP_BIT) this.replaceInGroup(e & 0x7fffffff, 0, TBL8_GROUP_ENTRIES, depth, pDepth, pLeaf);
        else s24[s] = pLeaf;
      }
    } else {
      const s = a >>> 8;
      const g = (this.s24[s] as number) & 0x7fffffff;
      this.replaceInGroup(g, a & 0xff, 1 << (32 - len), depth, pDepth, pLeaf);
      if (--(this.groupRefs[g] as number) === 0) this.collapse(s, g);
    }
    this.pendingLeaves[this.nPendingLeaves++] = leaf;
    if (this.batching === 0) this.flush();
    return true;
  }

  private find4(a: number, len: number): number {
    return (this.pfx4[len] as Map<number, number>).get(a | 0) ?? 0;
  }

  private markRange24(lo: number, hi: number): void {
    const last = (hi - 1) >>> 8;
    for (let b = lo >>> 8; b <= last; b++) {
      if (this.dirty24[b] === 0) {
        this.dirty24[b] = 1;
        this.dirty24List[this.nDirty24++] = b;
      }
    }
  }

  private markGroup(g: number): void {
    if (this.dirty8[g] === 0) {
      this.dirty8[g] = 1;
      this.dirty8List[this.nDirty8++] = g;
    }
  }

  /** Writes `leaf` into the tbl24 slots of a/len (len <= 24) that hold a shorter prefix. */
  private insert24(a: number, len: number, leaf: number): void {
    const s24 = this.s24;
    const d24 = this.d24;
    const depth = len + 1;
    const lo = a >>> 8;
    const hi = lo + (1 << (24 - len));
    this.markRange24(lo, hi);
    for (let s = lo; s < hi; s++) {
      // A group's entries are all at least as deep as its base (d24), so one test covers both.
      if ((d24[s] as number) > depth) continue;
      d24[s] = depth;
      const e = s24[s] as number;
      if (e >= TBL24_GROUP_BIT) this.fillGroup(e & 0x7fffffff, 0, TBL8_GROUP_ENTRIES, depth, leaf);
      else s24[s] = leaf;
    }
  }

  /** Inserts a/len (len > 24) into the tbl8 group of its /24, creating the group if needed. */
  private insert8(a: number, len: number, leaf: number): void {
    const s = a >>> 8;
    const e = this.s24[s] as number;
    let g: number;
    if (e >= TBL24_GROUP_BIT) {
      g = e & 0x7fffffff;
    } else {
      // New group: every entry starts as the /24's current match.
      g = this.freeGroups[--this.nFreeGroups] as number;
      const base = g * TBL8_GROUP_ENTRIES;
      this.s8.fill(e, base, base + TBL8_GROUP_ENTRIES);
      this.d8.fill(this.d24[s] as number, base, base + TBL8_GROUP_ENTRIES);
      this.s24[s] = (TBL24_GROUP_BIT | g) >>> 0;
      this.markRange24(s, s + 1);
    }
    (this.groupRefs[g] as number)++;
    this.fillGroup(g, a & 0xff, 1 << (32 - len), len + 1, leaf);
  }

  /** Sets entries [from, from+count) of group g whose depth is <= depth to leaf. */
  private fillGroup(g: number, from: number, count: number, depth: number, leaf: number): void {
    const s8 = this.s8;
    const d8 = this.d8;
    const base = g * TBL8_GROUP_ENTRIES + from;
    this.markGroup(g);
    for (let i = base; i < base + count; i++) {
      if ((d8[i] as number) > depth) continue;
      d8[i] = depth;
      s8[i] = leaf;
    }
  }

  /** Entries of group g in range held by the prefix at `depth` go to the parent. */
  private replaceInGroup(g: number, from: number, count: number, depth: number, pDepth: number, pLeaf: number): void {
    const s8 = this.s8;
    const d8 = this.d8;
    const base = g * TBL8_GROUP_ENTRIES + from;
    this.markGroup(g);
    for (let i = base; i < base + count; i++) {
      if (d8[i] !== depth) continue;
      d8[i] = pDepth;
      s8[i] = pLeaf;
    }
  }

  /** Group g of slot s holds no prefix longer than /24 any more: fold it back into tbl24. */
  private collapse(s: number, g: number): void {
    // Every entry now holds the /24's base match; entry 0 stands for all of them.
    this.s24[s] = this.s8[g * TBL8_GROUP_ENTRIES] as number;
    this.markRange24(s, s + 1);
    this.freeGroups[this.nFreeGroups++] = g;
  }

  /**
   * Logs every word of the dirty blocks and groups that differs from the working side, then
   * makes the leaves freed since the last flush reusable. O(touched blocks * 256).
   */
  private flush(): void {
    // tbl24 blocks are 256 entries (one per low byte), as are tbl8 groups.
    this.flushDirty(this.id24, this.s24, this.dirty24, this.dirty24List, this.nDirty24, 256);
    this.nDirty24 = 0;
    this.flushDirty(this.id8, this.s8, this.dirty8, this.dirty8List, this.nDirty8, TBL8_GROUP_ENTRIES);
    this.nDirty8 = 0;
    for (let k = 0; k < this.nPendingLeaves; k++) this.freeLeaves[this.nFreeLeaves++] = this.pendingLeaves[k] as number;
    this.nPendingLeaves = 0;
  }

  /** Logs the words of the first n dirty blocks (of `size` words) of `shadow` that differ from the working side of array `id`; clears their dirty marks. */
  private flushDirty(id: number, shadow: Uint32Array, dirty: Uint8Array, list: Int32Array, n: number, size: number): void {
    const log = this.log;
    const w = log.working(id);
    for (let k = 0; k < n; k++) {
      const b = list[k] as number;
      dirty[b] = 0;
      for (let i = b * size; i < (b + 1) * size; i++) {
        const v = shadow[i] as number;
        if (w[i] !== v) log.set(id, i, v);
      }
    }
  }

  private noLeaf(family: 4 | 6, words: ArrayLike<number>, len: number): never {
    throw new TunswitchError('ETABLE_FULL', `ipcache: no free leaf for ${formatPrefix(family, words, len)} (leaves ${this.ipcache.shared.leaves})`);
  }

  // ---- IPv6 fast path ----

  private setKey6(w: ArrayLike<number>, len: number): number[] {
    const k = this.key6;
    for (let i = 0; i < 4; i++) {
      const x = w[i] as number;
      if (!Number.isInteger(x) || x < -0x80000000 || x > 0xffffffff) {
        throw new TunswitchError('EBAD_REQUEST', `ipcache: IPv6 word ${i} (${x}) is not a 32-bit integer`);
      }
      k[i] = (x & (MASKS6[len * 4 + i] as number)) >>> 0;
    }
    k[4] = len;
    return k;
  }

  /** Inserts or replaces w/len (four u32 words, w[0] most significant; host bits cleared). */
  upsert6(w: ArrayLike<number>, len: number, identity: number, tunnel = 0, flags = 0): void {
    checkLen(len, 128);
    const k = this.setKey6(w, len);
    checkU32(identity, 'identity');
    checkU32(tunnel, 'tunnel');
    checkU32(flags, 'flags');
    const old = this.hw.get(k);
    const prefixWord = len | LEAF_PREFIX_V6;
    if (old !== undefined) {
      this.writeLeaf(old[0] as number, identity, tunnel, flags, prefixWord);
      return;
    }
    const cap = this.ipcache.shared.v6Capacity;
    if (this.hw.size + 1 > (cap * 7) / 8) {
      throw new TunswitchError('ETABLE_FULL', `ipcache: IPv6 table full at ${formatPrefix(6, k, len)} (v6Capacity ${cap})`);
    }
    if (this.nFreeLeaves === 0) this.noLeaf(6, k, len);
    const leaf = this.freeLeaves[--this.nFreeLeaves] as number;
    this.writeLeaf(leaf, identity, tunnel, flags, prefixWord);
    this.value6[0] = leaf;
    this.hw.set(k, this.value6);
    if (++(this.lenCount6[len] as number) === 1) this.publishLens6();
  }

  /** Deletes w/len; returns whether it was present. */
  delete6(w: ArrayLike<number>, len: number): boolean {
    checkLen(len, 128);
    const k = this.setKey6(w, len);
    const old = this.hw.get(k);
    if (old === undefined) return false;
    this.hw.delete(k);
    // The hash entry is gone in the same log as any reuse of the leaf, but keep one rule.
    this.pendingLeaves[this.nPendingLeaves++] = old[0] as number;
    if (--(this.lenCount6[len] as number) === 0) this.publishLens6();
    if (this.batching === 0) this.flush();
    return true;
  }

  private find6(w: ArrayLike<number>, len: number): number {
    const v = this.hw.get(this.setKey6(w, len));
    return v === undefined ? 0 : (v[0] as number);
  }

  /** Rewrites the list of present IPv6 lengths, longest first. */
  private publishLens6(): void {
    const log = this.log;
    const id = this.idLens6;
    const wl = log.working(id);
    let n = 0;
    for (let l = 128; l >= 0; l--) {
      if ((this.lenCount6[l] as number) === 0) continue;
      n++;
      if (wl[n] !== l) log.set(id, n, l);
    }
    if (wl[0] !== n) log.set(id, 0, n);
  }

  // ---- leaves ----

  private writeLeaf(leaf: number, identity: number, tunnel: number, flags: number, prefixWord: number): void {
    const log = this.log;
    const id = this.idLeaf;
    const wl = log.working(id);
    const b = leaf * LEAF_WORDS;
    if (wl[b + kLeafIdentity] !== identity) log.set(id, b + kLeafIdentity, identity);
    if (wl[b + kLeafTunnel] !== tunnel) log.set(id, b + kLeafTunnel, tunnel);
    if (wl[b + kLeafFlags] !== flags) log.set(id, b + kLeafFlags, flags);
    if (wl[b + kLeafPrefix] !== prefixWord) log.set(id, b + kLeafPrefix, prefixWord);
  }

  private readLeaf(leaf: number): IpcacheValue {
    const wl = this.log.working(this.idLeaf);
    const b = leaf * LEAF_WORDS;
    return {
      identity: wl[b + kLeafIdentity] as number,
      tunnel: wl[b + kLeafTunnel] as number,
      flags: wl[b + kLeafFlags] as number,
    };
  }
}
