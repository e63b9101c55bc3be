/**
 * The published policy table: per endpoint and direction, which remote identities may talk
 * on which protocol and destination port. It plays the role of Cilium's per-endpoint policy
 * map (bpf/lib/policy.h: struct policy_key / struct policy_entry), but it is a hash table
 * probed at the prefix lengths that exist instead of an LPM trie.
 *
 * ## What a key means
 *
 *   (endpoint, direction, remote identity, L4 value with a prefix length)
 *
 * - identity 0 means "any identity" (an L4-only rule), as in Cilium.
 * - The L4 value is 24 bits: `proto << 16 | port`. The prefix length (0..24) says how many of
 *   its top bits are significant:
 *       0        any protocol, any port
 *       8        this protocol, any port
 *       8 + k    this protocol and the top k bits of the port (port ranges become a few
 *                prefix-aligned entries, see portRangeToPrefixes)
 *       24       this protocol and this exact port
 *   Lengths 1..7 are refused: a protocol is never partly wildcarded (as in Cilium).
 *   ICMP and ICMPv6 rules put the ICMP type in the port, with prefix 24.
 *
 * ## Lookup precedence (numbered as in Cilium's __policy_can_access)
 *
 * A flow (endpoint, direction, identity, proto, port) matches every entry whose identity is
 * the flow's identity or 0 and whose L4 prefix covers (proto, port). Among the matches:
 *
 *   1. A deny wins, whatever its prefix length. (Cilium relies on its control plane to push
 *      deny entries down to every longer prefix; this table enforces it at lookup time, so
 *      the compiler may emit a deny once.) If several denies match, the one reported is the
 *      one with the longest prefix, exact identity before identity 0.
 *   2. Otherwise the allow with the longest L4 prefix wins.
 *   3. On equal prefix length, the exact-identity (L3) entry wins over identity 0.
 *
 * The reported match type follows Cilium's POLICY_MATCH_* numbers: exact identity with
 * prefix 0 / 8 / >8 is L3_ONLY / L3_PROTO / L3_L4; identity 0 with 0 / 8 / >8 is ALL /
 * PROTO_ONLY / L4_ONLY.
 *
 * ## How it is stored
 *
 * Entries live in a SharedHash (hash.ts), one slot per key, L4 value stored already masked
 * to its prefix. Slot layout (stride 6 words):
 *
 *   word  width  field
 *   0     u32    USED       SharedHash occupancy (0 empty, 1 used)
 *   1     u32    EPDIR      endpoint << 1 | direction     (endpoint < 2^16, direction 0/1)
 *   2     u32    IDENTITY   remote identity, 0 = any
 *   3     u32    L4KEY      prefixLen << 24 | (proto << 16 | port) masked to prefixLen
 *                           (the length is part of the key: a /8 and a /24 entry for the
 *                           same protocol are different entries)
 *   4     u32    FLAGS      bits 0..7 entry flags (bit 0 DENY; bits 1..7 reserved, zero);
 *                           bits 8..15 prefix length again, so a reader reports it without
 *                           decoding the key; bits 16..31 zero
 *   5     u32    COOKIE     rule cookie: an id the control plane maps to "policy + rule"
 *
 * Next to it, a published mask array tells the reader which prefix lengths exist, so it
 * probes only those keys that can exist. Layout (Uint32Array, 4 words per endpoint and
 * direction, row = (ep << 1 | dir) << 2):
 *
 *   index    width  field
 *   row + 0  u32    ALLOW_EXACT  bit L: an allow entry of length L naming an identity exists
 *   row + 1  u32    ALLOW_ANY    bit L: an allow entry of length L with identity 0 exists
 *   row + 2  u32    DENY_EXACT   bit L: a deny entry of length L naming an identity exists
 *   row + 3  u32    DENY_ANY     bit L: a deny entry of length L with identity 0 exists
 *
 * (Bits 0..24 used.) Splitting exact from identity-0 lets the reader skip the identity-0
 * probe at lengths only L3 rules use, and the exact probe at lengths only L4-only rules use.
 *
 * Both arrays are left-right pairs written through one WriteLog (publish.ts), so a reader
 * sees masks and entries of the same revision for a whole batch.
 *
 * Reader cost: with no denies and n allow lengths, at most 2n hash probes (fewer when a
 * length has only exact or only identity-0 entries); it stops at the first hit.
 */
import { SharedHash, SharedHashWriter } from './hash.js';
import { sharedPair, type WriteLog } from './publish.js';
import { InternalError, TunswitchError } from '../proto/errors.js';


// Cilium's POLICY_MATCH_* (bpf/lib/policy.h).
export const POLICY_MATCH_NONE = 0;
export const POLICY_MATCH_L3_ONLY = 1;
export const POLICY_MATCH_L3_L4 = 2;
export const POLICY_MATCH_L4_ONLY = 3;
export const POLICY_MATCH_ALL = 4;
export const POLICY_MATCH_L3_PROTO = 5;
export const POLICY_MATCH_PROTO_ONLY = 6;
/** Display names of the match types, indexed by POLICY_MATCH_* (Hubble's spelling). */
export const POLICY_MATCH_NAMES: readonly string[] = ['none', 'L3-Only', 'L3-L4', 'L4-Only', 'all', 'L3-Proto', 'Proto-Only'];

/** Entry flag: this entry denies. */
export const POLICY_FLAG_DENY = 1;

/** Prefix length that covers the protocol only. */
export const L4_PROTO_PREFIX = 8;
/** Prefix length that covers protocol and the whole port. */
export const L4_FULL_PREFIX = 24;

export const DEFAULT_POLICY_CAPACITY = 1 << 16;
export const DEFAULT_POLICY_MAX_ENDPOINTS = 4096;
/** Endpoint indices are u16 (EPDIR packs them with the direction bit). */
export const MAX_POLICY_ENDPOINTS = 1 << 16;

const kKeyWords = 3;
const kValueWords = 2;
const kValFlags = 0;
const kValCookie = 1;
const kLens = L4_FULL_PREFIX + 1;
/** Mask words per (endpoint, direction); the index of each is its maskKind(). */
const kMaskWords = 4;
const kMaskAllowExact = 0;
const kMaskAllowAny = 1;
const kMaskDenyExact = 2;
const kMaskDenyAny = 3;

const kStride = 1 + kKeyWords + kValueWords;
/** Word offsets of the value fields inside a slot (see the layout above). */
const kSlotFlags = 1 + kKeyWords + kValFlags;
const kSlotCookie = 1 + kKeyWords + kValCookie;

/** Which of the four length masks an entry counts in. */
function maskKind(denyFlag: number, identity: number): number {
  return (denyFlag !== 0 ? kMaskDenyExact : kMaskAllowExact) + (identity === 0 ? 1 : 0);
}

/** Mask of the significant bits of the 24-bit L4 value for each prefix length. */
function l4Mask(len: number): number {
  return (0xffffff << (L4_FULL_PREFIX - len)) & 0xffffff;
}

function matchType(exact: number, len: number): number {
  if (exact !== 0) {
    return len > L4_PROTO_PREFIX ? POLICY_MATCH_L3_L4 : len > 0 ? POLICY_MATCH_L3_PROTO : POLICY_MATCH_L3_ONLY;
  }
  return len > L4_PROTO_PREFIX ? POLICY_MATCH_L4_ONLY : len > 0 ? POLICY_MATCH_PROTO_ONLY : POLICY_MATCH_ALL;
}

/** One entry, as the policy compiler emits it and the writer stores it. */
export interface PolicyEntry {
  ep: number;
  /** DIR_INGRESS (0) or DIR_EGRESS (1), src/proto/direction.ts. */
  dir: number;
  /** Remote identity; 0 = any. */
  identity: number;
  proto: number;
  /** Destination port, or the ICMP type for ICMP rules. */
  port: number;
  /** 0, or 8..24 (see the file comment). */
  prefixLen: number;
  deny: boolean;
  cookie: number;
}

/** The key fields of an entry (what remove and checkRoom take). */
export type PolicyKey = Pick<PolicyEntry, 'ep' | 'dir' | 'identity' | 'proto' | 'port' | 'prefixLen'>;

/** Everything a thread needs to attach to the table. Structured-cloneable. */
export interface PolicyTableShared {
  capacity: number;
  maxEndpoints: number;
  entries: [Uint32Array, Uint32Array];
  masks: [Uint32Array, Uint32Array];
}

export class PolicyTable {
  readonly hash: SharedHash;
  readonly maxEndpoints: number;
  /** Masks on the side being read. */
  private masks: Uint32Array;
  private readonly lenMask: Uint32Array;

  /** Cookie of the entry that decided the last lookup (0 when none). */
  outCookie: number;
  /** POLICY_MATCH_* of the last lookup. */
  outMatchType: number;
  /** L4 prefix length of the deciding entry, -1 when none. */
  outPrefixLen: number;
  /** 1 if the deciding entry named the identity, 0 if it was identity 0 or none matched. */
  outIdentityExact: number;

  private constructor(readonly shared: PolicyTableShared) {
    this.maxEndpoints = shared.maxEndpoints;
    this.hash = new SharedHash(kKeyWords, kValueWords, shared.capacity, shared.entries);
    if (shared.masks[0].length < shared.maxEndpoints * 2 * kMaskWords) throw new RangeError('PolicyTable: mask arrays too small');
    this.masks = shared.masks[0];
    this.lenMask = new Uint32Array(kLens);
    for (let l = 0; l < kLens; l++) this.lenMask[l] = l4Mask(l);
    this.outCookie = 0;
    this.outMatchType = POLICY_MATCH_NONE;
    this.outPrefixLen = -1;
    this.outIdentityExact = 0;
  }

  static create(opts: { capacity?: number; maxEndpoints?: number } = {}): PolicyTable {
    const capacity = opts.capacity ?? DEFAULT_POLICY_CAPACITY;
    const maxEndpoints = opts.maxEndpoints ?? DEFAULT_POLICY_MAX_ENDPOINTS;
    if (!Number.isInteger(capacity) || capacity < 2 || (capacity & (capacity - 1)) !== 0) {
      throw new RangeError(`options.capacity must be a power of two >= 2, got ${capacity}`);
    }
    if (!Number.isInteger(maxEndpoints) || maxEndpoints < 1 || maxEndpoints > MAX_POLICY_ENDPOINTS) {
      throw new RangeError(`options.maxEndpoints must be an integer in 1..${MAX_POLICY_ENDPOINTS}, got ${maxEndpoints}`);
    }
    return new PolicyTable({
      capacity,
      maxEndpoints,
      entries: sharedPair(SharedHash.words(kKeyWords, kValueWords, capacity)),
      masks: sharedPair(maxEndpoints * 2 * kMaskWords),
    });
  }

  static attach(shared: PolicyTableShared): PolicyTable {
    return new PolicyTable(shared);
  }

  /** Selects the side to read (once per batch, from PublishControl.enter). */
  useSide(side: number): void {
    this.hash.useSide(side);
    this.masks = side === 0 ? this.shared.masks[0] : this.shared.masks[1];
  }

  /**
   * Decides a flow. Returns 1 allow, -1 deny, 0 when no entry matches (the caller drops with
   * DROP_POLICY unless enforcement is off). Fills out* fields. Allocates nothing.
   */
  lookup(ep: number, dir: number, identity: number, proto: number, port: number): number {
    this.outCookie = 0;
    this.outMatchType = POLICY_MATCH_NONE;
    this.outPrefixLen = -1;
    this.outIdentityExact = 0;
    if (ep < 0 || ep >= this.maxEndpoints) return 0;
    const epdir = (ep << 1) | (dir & 1);
    const row = epdir << 2;
    const masks = this.masks;
    const id = identity >>> 0;
    // A flow from identity 0 (unknown) can only match identity-0 entries.
    const allowExact = id === 0 ? 0 : (masks[row + kMaskAllowExact] as number);
    const allowAny = masks[row + kMaskAllowAny] as number;
    const denyExact = id === 0 ? 0 : (masks[row + kMaskDenyExact] as number);
    const denyAny = masks[row + kMaskDenyAny] as number;
    const t = this.hash.cur;
    const full = ((proto & 0xff) << 16) | (port & 0xffff);

    // 1. A deny that matches at any length wins. Lengths from the longest down; at each
    //    length the exact identity first, so the reported deny is the most specific one.
    //    (An entry found here may be an allow that shares a length with some deny.)
    let rest = denyExact | denyAny;
    while (rest !== 0) {
      const len = 31 - Math.clz32(rest);
      rest ^= 1 << len;
      const l4 = (len << 24) | (full & (this.lenMask[len] as number));
      if (((denyExact >>> len) & 1) !== 0) {
        const b = this.probe(epdir, id, l4);
        if (b >= 0 && ((t[b + kSlotFlags] as number) & POLICY_FLAG_DENY) !== 0) return this.hit(b, 1, -1);
      }
      if (((denyAny >>> len) & 1) !== 0) {
        const b = this.probe(epdir, 0, l4);
        if (b >= 0 && ((t[b + kSlotFlags] as number) & POLICY_FLAG_DENY) !== 0) return this.hit(b, 0, -1);
      }
    }

    // 2. Otherwise the allow with the longest prefix: the first length that matches decides.
    //    No entry found here can be a deny: every key a deny could sit at was probed above.
    rest = allowExact | allowAny;
    while (rest !== 0) {
      const len = 31 - Math.clz32(rest);
      rest ^= 1 << len;
      const l4 = (len << 24) | (full & (this.lenMask[len] as number));
      // 3. At equal length the exact identity (L3) wins over identity 0.
      if (((allowExact >>> len) & 1) !== 0) {
        const b = this.probe(epdir, id, l4);
        if (b >= 0) return this.hit(b, 1, 1);
      }
      if (((allowAny >>> len) & 1) !== 0) {
        const b = this.probe(epdir, 0, l4);
        if (b >= 0) return this.hit(b, 0, 1);
      }
    }
    return 0;
  }

  /**
   * SharedHash.find specialised to this table's 3 key words: the same hash (mixWords over
   * three words, unrolled) and the same linear probing, without the key scratch array and
   * the generic compare loop. Returns the slot base or -1.
   */
  private probe(w0: number, w1: number, w2: number): number {
    let h = 0x9e3779b9 ^ kKeyWords;
    h = Math.imul(h ^ w0, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h ^ w1, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h ^ w2, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h ^ (h >>> 16), 0xc2b2ae35);
    h ^= h >>> 15;
    const t = this.hash.cur;
    const mask = this.hash.mask;
    let i = h & mask;
    // The writer keeps the table at most 7/8 full, so an empty slot ends every probe; the
    // bound only guards against a corrupted table.
    for (let n = 0; n <= mask; n++) {
      const base = i * kStride;
      if (t[base] === 0) return -1;
      if (t[base + 1] === w0 && t[base + 2] === w1 && t[base + 3] === w2) return base;
      i = (i + 1) & mask;
    }
    return -1;
  }

  private hit(base: number, exact: number, verdict: number): number {
    const t = this.hash.cur;
    const len = ((t[base + kSlotFlags] as number) >>> 8) & 0xff;
    this.outCookie = t[base + kSlotCookie] as number;
    this.outPrefixLen = len;
    this.outIdentityExact = exact;
    this.outMatchType = matchType(exact, len);
    return verdict;
  }
}

/**
 * The control thread's handle on the table. Writes go to the inactive side through the
 * WriteLog; `log.commit()` publishes them. Keeps, per (endpoint, direction, kind, length),
 * how many entries exist, to maintain the published length masks.
 */
export class PolicyTableWriter {
  private readonly hw: SharedHashWriter;
  private readonly maskId: number;
  /** counts[((epdir << 2) | kind) * 25 + len] with kind = maskKind(). Writer-side only. */
  private readonly counts: Uint32Array;
  private readonly keyBuf = [0, 0, 0];

  constructor(
    readonly table: PolicyTable,
    readonly log: WriteLog,
  ) {
    this.hw = new SharedHashWriter(table.hash, log);
    this.maskId = log.register(table.shared.masks[0], table.shared.masks[1]);
    this.counts = new Uint32Array(table.maxEndpoints * 2 * kMaskWords * kLens);
    // A writer attached to a populated table rebuilds its counts from the working side.
    for (const { key, value } of this.hw.entries()) {
      const kind = maskKind((value[kValFlags] as number) & POLICY_FLAG_DENY, key[1] as number);
      const i = (((key[0] as number) << 2) | kind) * kLens + ((key[2] as number) >>> 24);
      this.counts[i] = (this.counts[i] as number) + 1;
    }
  }

  /** Number of entries (all endpoints). */
  get size(): number {
    return this.hw.size;
  }

  /**
   * Throws ETABLE_FULL, before anything is written, when removing `removed` and then adding
   * `added` would take the table past the entries it holds (SharedHashWriter.limit). A key in
   * both lists is a changed entry and costs nothing; an added key already present replaces.
   * The message names the endpoint that gains the most entries. Control plane only (allocates).
   */
  checkRoom(removed: readonly PolicyKey[], added: readonly PolicyKey[]): void {
    let n = this.hw.size;
    const gone = new Set<string>();
    for (const e of removed) {
      const key = this.makeKey(e);
      if (this.hw.get(key) === undefined) continue;
      n--;
      gone.add(key.join(','));
    }
    const gain = new Map<number, number>();
    for (const e of added) {
      const key = this.makeKey(e);
      if (this.hw.get(key) !== undefined && !gone.has(key.join(','))) continue;
      n++;
      gain.set(e.ep, (gain.get(e.ep) ?? 0) + 1);
    }
    const limit = this.hw.limit;
    if (n <= limit) return;
    let ep = -1;
    let most = 0;
    for (const [k, v] of gain) if (v > most) [ep, most] = [k, v];
    throw new TunswitchError('ETABLE_FULL', `policy table full: the change needs ${n} entries, the table holds ${limit} (capacity ${this.table.hash.capacity}, filled to 7/8); endpoint ${ep} gains the most (${most} new entries)`);
  }

  /** Inserts or replaces the entry with this key. Throws on malformed entries. */
  add(e: PolicyEntry): void {
    if (!Number.isInteger(e.cookie) || e.cookie < 0 || e.cookie > 0xffffffff) {
      throw new RangeError(`policy entry cookie ${e.cookie} is not a u32`);
    }
    const key = this.makeKey(e);
    const epdir = key[0] as number;
    const len = e.prefixLen;
    const deny = e.deny ? POLICY_FLAG_DENY : 0;
    const kind = maskKind(deny, e.identity);
    const cookie = e.cookie >>> 0;
    const old = this.hw.get(key);
    this.hw.set(key, [deny | (len << 8), cookie]);
    if (old !== undefined) {
      const oldKind = maskKind((old[kValFlags] as number) & POLICY_FLAG_DENY, e.identity);
      // Same kind (a new cookie only): the masks do not change.
      if (oldKind === kind) return;
      this.count(epdir, oldKind, len, -1);
    }
    this.count(epdir, kind, len, 1);
  }

  /** Removes the entry with e's key (ep, dir, identity, proto, port, prefixLen). */
  remove(e: PolicyKey): boolean {
    const key = this.makeKey(e);
    const old = this.hw.get(key);
    if (old === undefined) return false;
    this.hw.delete(key);
    this.count(key[0] as number, maskKind((old[kValFlags] as number) & POLICY_FLAG_DENY, e.identity), e.prefixLen, -1);
    return true;
  }

  /**
   * Removes every entry of endpoint `ep` (both directions). Scans the working side once:
   * O(capacity) work on the control thread, but the publish still costs O(entries removed).
   */
  clearEndpoint(ep: number): void {
    this.checkEp(ep);
    const doomed: number[][] = [];
    for (const { key } of this.hw.entries()) if ((key[0] as number) >>> 1 === ep) doomed.push(key);
    for (const key of doomed) {
      const old = this.hw.get(key) as number[];
      this.hw.delete(key);
      const kind = maskKind((old[kValFlags] as number) & POLICY_FLAG_DENY, key[1] as number);
      this.count(key[0] as number, kind, (key[2] as number) >>> 24, -1);
    }
  }

  /** Every entry on the working side (listing, state dump). Allocates; control plane only. */
  *entries(): Generator<PolicyEntry> {
    for (const { key, value } of this.hw.entries()) {
      const epdir = key[0] as number;
      const l4 = (key[2] as number) & 0xffffff;
      yield {
        ep: epdir >>> 1,
        dir: epdir & 1,
        identity: key[1] as number,
        proto: l4 >>> 16,
        port: l4 & 0xffff,
        prefixLen: (key[2] as number) >>> 24,
        deny: ((value[kValFlags] as number) & POLICY_FLAG_DENY) !== 0,
        cookie: value[kValCookie] as number,
      };
    }
  }

  private checkEp(ep: number): void {
    if (!Number.isInteger(ep) || ep < 0 || ep >= this.table.maxEndpoints) {
      throw new RangeError(`policy entry ep ${ep} is outside 0..${this.table.maxEndpoints - 1}`);
    }
  }

  private makeKey(e: PolicyKey): number[] {
    this.checkEp(e.ep);
    if (e.dir !== 0 && e.dir !== 1) throw new RangeError(`policy entry dir ${e.dir} is not 0 (ingress) or 1 (egress)`);
    if (!Number.isInteger(e.identity) || e.identity < 0 || e.identity > 0xffffffff) {
      throw new RangeError(`policy entry identity ${e.identity} is not a u32`);
    }
    if (!Number.isInteger(e.proto) || e.proto < 0 || e.proto > 255) {
      throw new RangeError(`policy entry proto ${e.proto} is not 0..255`);
    }
    if (!Number.isInteger(e.port) || e.port < 0 || e.port > 0xffff) {
      throw new RangeError(`policy entry port ${e.port} is not 0..65535`);
    }
    const len = e.prefixLen;
    if (!Number.isInteger(len) || len < 0 || len > L4_FULL_PREFIX || (len > 0 && len < L4_PROTO_PREFIX)) {
      throw new RangeError(`policy entry prefixLen ${len} is not 0 or 8..24`);
    }
    const k = this.keyBuf;
    k[0] = (e.ep << 1) | e.dir;
    k[1] = e.identity >>> 0;
    k[2] = ((len << 24) | (((e.proto << 16) | e.port) & l4Mask(len))) >>> 0;
    return k;
  }

  private count(epdir: number, kind: number, len: number, delta: number): void {
    const i = ((epdir << 2) | kind) * kLens + len;
    const before = this.counts[i] as number;
    if (delta < 0 && before === 0) throw new InternalError('PolicyTableWriter: length count underflow (broken invariant)');
    const after = before + delta;
    this.counts[i] = after;
    if ((before === 0) === (after === 0)) return;
    const mi = (epdir << 2) | kind;
    const m = this.log.get(this.maskId, mi);
    this.log.set(this.maskId, mi, after === 0 ? m & ~(1 << len) : m | (1 << len));
  }
}

/**
 * Splits the port range [lo, hi] (0..65535) into the fewest prefix-aligned blocks. Each
 * block is { port, prefixLen } with prefixLen over the 16 port bits only (0 = every port,
 * 16 = one port); the policy compiler adds 8 for the protocol byte.
 */
export function portRangeToPrefixes(lo: number, hi: number): { port: number; prefixLen: number }[] {
  if (!Number.isInteger(lo) || !Number.isInteger(hi) || lo < 0 || hi > 0xffff || lo > hi) {
    throw new RangeError(`port range ${lo}-${hi} is not within 0..65535 with lo <= hi`);
  }
  const out: { port: number; prefixLen: number }[] = [];
  let cur = lo;
  while (cur <= hi) {
    // The largest block aligned at `cur` that does not pass `hi`.
    let size = cur === 0 ? 0x10000 : cur & -cur;
    while (cur + size - 1 > hi) size >>>= 1;
    out.push({ port: cur, prefixLen: 16 - (31 - Math.clz32(size)) });
    cur += size;
  }
  return out;
}
