/**
 * Connection tracking: one table per shard, in a SharedArrayBuffer region.
 *
 * The semantics follow Cilium's bpf/lib/conntrack.h in spirit (states, TCP flag tracking,
 * lifetimes), re-expressed for a userspace hash table:
 *
 *   1. lookup(pi, now)      one probe matching either orientation; sets lastDir (0 original, 1 reply).
 *   2. miss -> the pipeline checks policy, then create(pi, identity, now). create accounts the
 *      creating packet (original direction); do not call update() for it as well.
 *   3. hit  -> update(idx, pi, dir, now) returns CT_ESTABLISHED / CT_REPLY / CT_REOPENED and
 *      refreshes the lifetime.
 *   4. ICMP errors: lookupRelated(inner, now) finds the flow of the embedded packet.
 *   5. gc(now, budget) once per batch reclaims expired entries a few slots at a time.
 *
 * Pressure. A full table evicts instead of refusing (Linux's early_drop, Cilium's LRU map):
 * create() on a table at maxEntries examines EVICT_WINDOW slots from the home slot and deletes,
 * in this order of preference,
 *   1. an expired entry                                      (evictions{reason="expired"})
 *   2. the least recently seen entry that never saw a reply  (evictions{reason="unreplied"})
 *   3. the least recently seen entry                         (evictions{reason="oldest"})
 * Per-endpoint quota: every entry records its owner (the source endpoint of the creating
 * packet, or OWNER_HOST), and the table counts entries per owner. An owner holding `quota`
 * entries may only replace one of its own (same order of preference, evictions{reason="quota"});
 * if its own entries are not within the window the create is refused (drop 155, counted in
 * createFailed and quotaRefused). So one endpoint flooding SYNs churns its own share and never
 * takes more than `quota` slots from the others on the shard.
 *
 * Concurrency. Exactly one thread writes a region at a time (the worker owning the shard), so
 * nothing here is atomic. The control thread may attach() and read for `ct list`: such a read
 * can be torn (a half-written entry, an entry seen twice or missed while backward-shift
 * deletion moves it). That is accepted for a listing; nothing on the datapath reads that way.
 *
 * Persistence. Every piece of state that matters lives in the region; the constructor adopts an
 * existing, valid region (same magic and capacity) instead of clearing it, so a restarted
 * worker continues with the flows of its predecessor.
 *
 * Time is whatever clock the caller uses, in whole seconds, as an unsigned 32-bit number. An
 * entry is live while now < expires, and expired from now >= expires on. Wrap-around of the
 * clock is not handled (136 years of seconds).
 *
 * ---------------------------------------------------------------------------------------------
 * Region layout (all words are u32 in host byte order, through one Uint32Array):
 *
 *   header: HEADER_WORDS words (64 bytes)
 *     word 0  H_MAGIC          'CT01'; tells attach() and a restarted worker the region is ours
 *     word 1  H_CAPACITY       slot count, a power of two (sizes every index computation)
 *     word 2  H_COUNT          occupied slots, live or expired-but-not-yet-collected
 *     word 3  H_GC_CURSOR      next slot gc() examines; persists so sweeps resume after restart
 *     word 4  H_TCP_LIFETIME   seconds an established TCP flow lives without traffic
 *     word 5  H_NONTCP_LIFETIME seconds for UDP, ICMP, SCTP and anything else
 *     word 6  H_SYN_LIFETIME   seconds for a TCP flow not yet established
 *     word 7  H_CLOSE_LIFETIME seconds once a TCP flow is closed (FIN both ways, or RST)
 *     word 8  H_CREATE_FAILED  create() calls refused because the table was full (u32, wraps)
 *     word 9  H_MAX_ENTRIES    occupancy limit (capacity - capacity/8) keeping probes short
 *     word 10 H_QUOTA          entries one owner may hold (0: no quota); set by the constructor
 *                              when opts.endpointShare is given, else kept from the region
 *     word 11 H_EVICT_EXPIRED  expired entries evicted by a create on a full table (u32, wraps)
 *     word 12 H_EVICT_UNREPLIED entries without a reply evicted (early drop)
 *     word 13 H_EVICT_OLDEST   least recently seen entries evicted
 *     word 14 H_EVICT_QUOTA    own entries replaced by an owner at its quota
 *     word 15 H_QUOTA_REFUSED  creates refused because the owner was at its quota and held no
 *                              entry within the window (also counted in H_CREATE_FAILED)
 *
 *   entries: capacity x ENTRY_WORDS words (128 bytes each), at HEADER_WORDS + idx * ENTRY_WORDS
 *     key (in the orientation of the packet that created the entry):
 *     word 0  E_K0      family << 8 | proto. Never 0 for a used slot (family is 4 or 6), so 0
 *                       marks an empty slot.
 *     word 1  E_PORTS   sport << 16 | dport. ICMP/ICMPv6 echo: sport = dport = echo id, so the
 *                       request and its reply find the same entry; other ICMP: 0 | 0.
 *     words 2..5 E_SRC  source address; IPv4 in word 2 with words 3..5 = 0, IPv6 word 2 most
 *                       significant.
 *     words 6..9 E_DST  destination address, same encoding.
 *     word 10 E_HASH    ctHashSym of the key (30 bits), the same for the key and its reverse; home slot
 *                       = hash & (capacity - 1). Stored so that backward-shift deletion and
 *                       the fast-reject compare need no rehash.
 *     value:
 *     word 11 E_FLAGS   bits 0..7 TCP flags seen in the original direction, 8..15 in the reply
 *                       direction; bit 16 FIN/RST closed the original (tx) side, bit 17 the
 *                       reply (rx) side; bit 18 a TCP packet without SYN was seen; bit 19 a
 *                       reply was seen.
 *     word 12 E_EXPIRES absolute expiry time in seconds
 *     word 13 E_CREATED creation time in seconds
 *     word 14 E_IDENTITY security identity of the source of the creating packet
 *     word 15 E_PKTS0   packets in the original direction (wraps)
 *     word 16 E_BYTES0_LO, word 17 E_BYTES0_HI   bytes original direction, 64-bit as lo + hi
 *     word 18 E_PKTS1   packets in the reply direction (wraps)
 *     word 19 E_BYTES1_LO, word 20 E_BYTES1_HI   bytes reply direction
 *     word 21 E_POL_REV   policy revision at which the cached verdict was computed
 *     word 22 E_POL_COOKIE rule cookie of the cached verdict
 *     word 23 E_POL_META  bits 0..7 match type, bit 8 audited, bit 31 cache valid
 *     word 24 E_TRACE_TIME  time of the last trace event reported for this flow
 *     word 25 E_TRACE_FLAGS bits 0..7 TCP flags already reported, original direction;
 *                       8..15 reply direction; bit 16 a trace was reported at least once
 *     word 26 E_OWNER   owner slot (0..OWNER_SLOTS-1) the entry is charged to
 *     word 27 E_SEEN    time of the last packet (LRU order for eviction)
 *     words 28..31 reserved, zero (pads the entry to 128 bytes, two cache lines)
 *
 *   owner counts: OWNER_SLOTS words after the entries, entries held per owner slot
 * ---------------------------------------------------------------------------------------------
 */
import { IPPROTO_TCP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN } from '../proto/ip.js';
import type { FlowTuple } from '../proto/tuple.js';
import { InternalError } from '../proto/errors.js';

export const CT_NEW = 0;
export const CT_ESTABLISHED = 1;
export const CT_REPLY = 2;
export const CT_RELATED = 3;
export const CT_REOPENED = 4;
export const CT_STATE_NAMES: readonly string[] = ['new', 'established', 'reply', 'related', 'reopened'];

export function ctStateName(state: number): string {
  return state >= 0 && state < CT_STATE_NAMES.length ? (CT_STATE_NAMES[state] as string) : 'unknown';
}

const MAGIC = 0x43543031; // 'CT01'

export const HEADER_WORDS = 16;
const H_MAGIC = 0;
const H_CAPACITY = 1;
const H_COUNT = 2;
const H_GC_CURSOR = 3;
const H_TCP_LIFETIME = 4;
const H_NONTCP_LIFETIME = 5;
const H_SYN_LIFETIME = 6;
const H_CLOSE_LIFETIME = 7;
const H_CREATE_FAILED = 8;
const H_MAX_ENTRIES = 9;
const H_QUOTA = 10;
const H_EVICT_EXPIRED = 11;
const H_EVICT_UNREPLIED = 12;
const H_EVICT_OLDEST = 13;
const H_EVICT_QUOTA = 14;
const H_QUOTA_REFUSED = 15;

/**
 * Owner slots: 0 is the host port (and anything not sent by an endpoint); endpoint index e
 * is charged to slot (e mod (OWNER_SLOTS - 1)) + 1 (ownerSlot()). OWNER_SLOTS - 1 is the
 * default endpoint table size, so endpoints share a slot only in larger tables.
 */
export const OWNER_SLOTS = 4097;
export const OWNER_HOST = 0;
/** Owner slot of endpoint index `ep` (see OWNER_SLOTS). */
export function ownerSlot(ep: number): number {
  return (ep % (OWNER_SLOTS - 1)) + 1;
}
/** Default share (percent) of a shard's conntrack and fragment slots one endpoint may hold. */
export const DEFAULT_ENDPOINT_SHARE = 50;

export const ENTRY_WORDS = 32;
const ENTRY_SHIFT = 5;
const E_K0 = 0;
const E_PORTS = 1;
const E_SRC = 2;
const E_DST = 6;
const E_HASH = 10;
const E_FLAGS = 11;
const E_EXPIRES = 12;
const E_CREATED = 13;
const E_IDENTITY = 14;
const E_PKTS0 = 15;
const E_BYTES0_LO = 16;
const E_BYTES0_HI = 17;
const E_PKTS1 = 18;
const E_BYTES1_LO = 19;
const E_BYTES1_HI = 20;
const E_POL_REV = 21;
const E_POL_COOKIE = 22;
const E_POL_META = 23;
const E_TRACE_TIME = 24;
const E_TRACE_FLAGS = 25;
const E_OWNER = 26;
const E_SEEN = 27;
const KEY_WORDS = 10;

/** E_FLAGS bits. */
export const CTF_TX_CLOSING = 1 << 16;
export const CTF_RX_CLOSING = 1 << 17;
export const CTF_SEEN_NON_SYN = 1 << 18;
export const CTF_REPLY_SEEN = 1 << 19;
const CTF_CLOSING = CTF_TX_CLOSING | CTF_RX_CLOSING;

const POL_VALID = 0x80000000;
const POL_AUDITED = 0x100;
const TRACE_DONE = 0x10000;

/**
 * Slots create() examines for an expired entry to evict when the table is at maxEntries.
 * Not tuned by a benchmark: it bounds the worst-case cost of a create on a full table.
 */
export const EVICT_WINDOW = 64;

/** A trace event for a flow is reported at most once per this many seconds, unless new TCP flags appear. */
export const TRACE_INTERVAL = 5;

export interface ConntrackOptions {
  tcpLifetime?: number;
  nonTcpLifetime?: number;
  synLifetime?: number;
  closeLifetime?: number;
  /**
   * Percent (1-100) of maxEntries one owner may hold; 100 disables the quota. When left out,
   * a region being adopted keeps its quota and a new one has none (the switch passes the
   * configured share, DEFAULT_ENDPOINT_SHARE unless set).
   */
  endpointShare?: number;
}

/** Eviction counters of one table (see the header words H_EVICT_*). */
export interface CtEvictions {
  expired: number;
  unreplied: number;
  oldest: number;
  quota: number;
  quotaRefused: number;
}

/** One entry copied out for listing (allocates; not for the hot path). */
export interface CtEntrySnapshot {
  index: number;
  family: number;
  proto: number;
  src: number[];
  dst: number[];
  sport: number;
  dport: number;
  flags: number;
  expires: number;
  created: number;
  identity: number;
  packets: [number, number];
  bytes: [number, number];
}

/*
 * Hashing. Everything is written inline, without helper calls: V8 boxes (allocates) a number
 * outside the small-integer range (31 bits) that is passed to or returned from a call it did
 * not inline, and key words are full u32 values. For the same reason the hashes returned are
 * 30-bit non-negative integers, which never need a box.
 */
const HASH_MASK = 0x3fffffff;
const M1 = 0xcc9e2d51 | 0;
const M2 = 0x1b873593;
const F1 = 0x85ebca6b | 0;
const F2 = 0xc2b2ae35 | 0;

/**
 * Hash of a 10-word key held in `k` (murmur3-style block mix and finaliser over the words).
 * Integer arithmetic only, so every thread computes the same slot. Returns a 30-bit integer.
 */
export function hashKey10(k: Uint32Array): number {
  let h = 0x7f4a7c15;
  for (let i = 0; i < KEY_WORDS; i++) {
    let x = Math.imul(k[i] as number, M1);
    x = Math.imul((x << 15) | (x >>> 17), M2);
    h ^= x;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  h ^= KEY_WORDS * 4;
  h ^= h >>> 16; h = Math.imul(h, F1); h ^= h >>> 13; h = Math.imul(h, F2); h ^= h >>> 16;
  return h & HASH_MASK;
}

/**
 * Direction-independent hash of a conntrack key held in `k` (the 10-word layout of
 * E_K0..E_DST): each endpoint (address, port) is hashed on its own and the two results are
 * added, so a key and its reverse land on the same home slot and one probe finds a flow from
 * either direction. Integer arithmetic only. Returns a 30-bit integer.
 */
export function ctHashSym(k: Uint32Array): number {
  const ports = k[1] as number;
  let a = 0x2545f491;
  let b = 0x2545f491;
  // IPv4 keys have zeros in address words 1..3: mix only word 0 and the port (bench/micro:
  // the full 5-round mix was 15% of pipeline-established-v4). Still a pure function of the key.
  const words = ((k[3] as number) | (k[4] as number) | (k[5] as number) | (k[7] as number) | (k[8] as number) | (k[9] as number)) === 0 ? 1 : 4;
  for (let i = 4 - words; i < 5; i++) {
    const j = i < 4 ? i - (4 - words) : 4;
    let x = Math.imul(j < 4 ? (k[2 + j] as number) : ports >>> 16, M1);
    x = Math.imul((x << 15) | (x >>> 17), M2);
    a ^= x;
    a = (a << 13) | (a >>> 19);
    a = (Math.imul(a, 5) + 0xe6546b64) | 0;
    let y = Math.imul(j < 4 ? (k[6 + j] as number) : ports & 0xffff, M1);
    y = Math.imul((y << 15) | (y >>> 17), M2);
    b ^= y;
    b = (b << 13) | (b >>> 19);
    b = (Math.imul(b, 5) + 0xe6546b64) | 0;
  }
  a ^= a >>> 16; a = Math.imul(a, F1); a ^= a >>> 13; a = Math.imul(a, F2); a ^= a >>> 16;
  b ^= b >>> 16; b = Math.imul(b, F1); b ^= b >>> 13; b = Math.imul(b, F2); b ^= b >>> 16;
  let h = 0x7f4a7c15 ^ Math.imul(k[0] as number, M1);
  h ^= (a + b) | 0;
  h ^= h >>> 16; h = Math.imul(h, F1); h ^= h >>> 13; h = Math.imul(h, F2); h ^= h >>> 16;
  return h & HASH_MASK;
}

function checkLifetime(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1 || v > 0x7fffffff) {
    throw new RangeError(`options.${name} must be a positive integer number of seconds`);
  }
  return v;
}

export class ConntrackTable {
  /** Bytes of shared memory a table of `capacity` slots needs. */
  static bytesFor(capacity: number): number {
    return (HEADER_WORDS + capacity * ENTRY_WORDS + OWNER_SLOTS) * 4;
  }

  /**
   * Attach to a region that a worker already initialised (e.g. from the control thread for
   * listing). Throws if the region does not hold a conntrack table.
   */
  static attach(sab: SharedArrayBuffer, byteOffset: number): ConntrackTable {
    const h = new Uint32Array(sab, byteOffset, HEADER_WORDS);
    if (h[H_MAGIC] !== MAGIC) throw new InternalError(`no conntrack table at byte offset ${byteOffset}`);
    return new ConntrackTable(sab, byteOffset, h[H_CAPACITY] as number, undefined, true);
  }

  readonly capacity: number;
  private readonly mask: number;
  private readonly w: Uint32Array;
  /** Word index of the owner counts (after the entries). */
  private readonly own: number;
  /** Scratch key for the current probe (10 words), in the packet's orientation. */
  private readonly kb: Uint32Array;
  /** The same key reversed (addresses and ports swapped). */
  private readonly kr: Uint32Array;
  /** Direction of the last successful lookup()/lookupRelated(): 0 original, 1 reply. */
  lastDir = 0;
  /** Hash of the key loaded by the last lookup() (for createAfterMiss). */
  lastHash = 0;
  /** Orientation matched by the last find(): 0 = the packet's own, 1 = reversed. */
  private probeDir = 0;

  constructor(sab: SharedArrayBuffer, byteOffset: number, capacity: number, opts?: ConntrackOptions, attachOnly = false) {
    if (!Number.isInteger(capacity) || capacity < 8 || (capacity & (capacity - 1)) !== 0 || capacity > 1 << 26) {
      throw new RangeError('capacity must be a power of two between 8 and 2^26');
    }
    if (byteOffset % 4 !== 0) throw new RangeError('byteOffset must be a multiple of 4');
    if (byteOffset + ConntrackTable.bytesFor(capacity) > sab.byteLength) {
      throw new RangeError('the SharedArrayBuffer is too small for this capacity at this byteOffset');
    }
    this.capacity = capacity;
    this.mask = capacity - 1;
    this.w = new Uint32Array(sab, byteOffset, HEADER_WORDS + capacity * ENTRY_WORDS + OWNER_SLOTS);
    this.own = HEADER_WORDS + capacity * ENTRY_WORDS;
    this.kb = new Uint32Array(KEY_WORDS);
    this.kr = new Uint32Array(KEY_WORDS);
    if (attachOnly) return;
    const w = this.w;
    const adopt = w[H_MAGIC] === MAGIC && w[H_CAPACITY] === capacity;
    if (!adopt) {
      w.fill(0);
      w[H_CAPACITY] = capacity;
      w[H_MAX_ENTRIES] = capacity - (capacity >>> 3);
    }
    const o = opts ?? {};
    w[H_TCP_LIFETIME] = checkLifetime('tcpLifetime', o.tcpLifetime ?? 21600);
    w[H_NONTCP_LIFETIME] = checkLifetime('nonTcpLifetime', o.nonTcpLifetime ?? 60);
    w[H_SYN_LIFETIME] = checkLifetime('synLifetime', o.synLifetime ?? 60);
    w[H_CLOSE_LIFETIME] = checkLifetime('closeLifetime', o.closeLifetime ?? 10);
    if (o.endpointShare !== undefined || !adopt) {
      const share = o.endpointShare ?? 100;
      if (!Number.isInteger(share) || share < 1 || share > 100) {
        throw new RangeError('options.endpointShare must be an integer percent from 1 to 100');
      }
      w[H_QUOTA] = share >= 100 ? 0 : Math.max(1, Math.floor(((w[H_MAX_ENTRIES] as number) * share) / 100));
    }
    w[H_MAGIC] = MAGIC; // last: the region is valid from here on
  }

  get count(): number { return this.w[H_COUNT] as number; }
  /** Occupancy limit: create() fails beyond it (capacity minus one eighth). */
  get maxEntries(): number { return this.w[H_MAX_ENTRIES] as number; }
  get createFailed(): number { return this.w[H_CREATE_FAILED] as number; }
  /** Entries one owner may hold, 0 when there is no quota. */
  get quota(): number { return this.w[H_QUOTA] as number; }
  /** Entries held by owner slot `owner`. */
  ownerCount(owner: number): number { return this.w[this.own + owner] as number; }
  evictions(): CtEvictions {
    const w = this.w;
    return {
      expired: w[H_EVICT_EXPIRED] as number,
      unreplied: w[H_EVICT_UNREPLIED] as number,
      oldest: w[H_EVICT_OLDEST] as number,
      quota: w[H_EVICT_QUOTA] as number,
      quotaRefused: w[H_QUOTA_REFUSED] as number,
    };
  }
  get gcCursor(): number { return this.w[H_GC_CURSOR] as number; }
  get tcpLifetime(): number { return this.w[H_TCP_LIFETIME] as number; }
  get nonTcpLifetime(): number { return this.w[H_NONTCP_LIFETIME] as number; }
  get synLifetime(): number { return this.w[H_SYN_LIFETIME] as number; }
  get closeLifetime(): number { return this.w[H_CLOSE_LIFETIME] as number; }

  // ---- key handling --------------------------------------------------------------------------

  /** Fill the scratch keys from pi: kb in pi's orientation, kr reversed. */
  private loadKeys(pi: FlowTuple): void {
    const kb = this.kb;
    const kr = this.kr;
    const k0 = (pi.family << 8) | (pi.proto & 0xff);
    const sp = pi.sport & 0xffff;
    const dp = pi.dport & 0xffff;
    kb[0] = k0; kr[0] = k0;
    kb[1] = (sp << 16) | dp; kr[1] = (dp << 16) | sp;
    kb[2] = pi.src0; kb[3] = pi.src1; kb[4] = pi.src2; kb[5] = pi.src3;
    kb[6] = pi.dst0; kb[7] = pi.dst1; kb[8] = pi.dst2; kb[9] = pi.dst3;
    kr[2] = pi.dst0; kr[3] = pi.dst1; kr[4] = pi.dst2; kr[5] = pi.dst3;
    kr[6] = pi.src0; kr[7] = pi.src1; kr[8] = pi.src2; kr[9] = pi.src3;
  }

  /**
   * One probe from the (direction-independent) home slot of the scratch keys, hash h. Returns
   * the first live entry whose key equals kb (sets probeDir 0) or kr (probeDir 1), or -1.
   * Expired entries never match. If both orientations have live entries (only possible when a
   * caller creates without looking up first), the one nearer the home slot wins.
   */
  private find(h: number, now: number): number {
    const w = this.w;
    const kb = this.kb;
    const kr = this.kr;
    const mask = this.mask;
    const k0 = kb[0] as number;
    let i = h & mask;
    for (let n = 0; n < this.capacity; n++) {
      const b = HEADER_WORDS + (i << ENTRY_SHIFT);
      const e0 = w[b + E_K0] as number;
      if (e0 === 0) return -1;
      if (w[b + E_HASH] === h && e0 === k0 && (w[b + E_EXPIRES] as number) > now) {
        if (w[b + 1] === kb[1] &&
            w[b + 2] === kb[2] && w[b + 3] === kb[3] && w[b + 4] === kb[4] && w[b + 5] === kb[5] &&
            w[b + 6] === kb[6] && w[b + 7] === kb[7] && w[b + 8] === kb[8] && w[b + 9] === kb[9]) {
          this.probeDir = 0;
          return i;
        }
        if (w[b + 1] === kr[1] &&
            w[b + 2] === kr[2] && w[b + 3] === kr[3] && w[b + 4] === kr[4] && w[b + 5] === kr[5] &&
            w[b + 6] === kr[6] && w[b + 7] === kr[7] && w[b + 8] === kr[8] && w[b + 9] === kr[9]) {
          this.probeDir = 1;
          return i;
        }
      }
      i = (i + 1) & mask;
    }
    return -1;
  }

  // ---- hot path -----------------------------------------------------------------------------

  /**
   * Find the live entry of pi's flow. Returns its index and sets lastDir (0 when pi travels in
   * the entry's original direction, 1 for the reply direction), or -1. Both orientations share
   * one home slot (ctHashSym), so this is a single probe. Expired entries count as misses; they
   * stay in place until create() reuses them or gc() collects them. Read-only on the table.
   */
  lookup(pi: FlowTuple, now: number): number {
    this.loadKeys(pi);
    const h = ctHashSym(this.kb);
    this.lastHash = h;
    const idx = this.find(h, now);
    if (idx >= 0) this.lastDir = this.probeDir;
    return idx;
  }

  /**
   * Flow of the packet embedded in an ICMP error. `inner` is that packet as the peer saw it,
   * which may be either orientation of the entry. lastDir is the direction the *error* travels:
   * 1 when the inner packet matches the entry's original orientation (the error goes back to
   * the originator), 0 otherwise. Returns -1 when there is no live entry.
   */
  lookupRelated(inner: FlowTuple, now: number): number {
    this.loadKeys(inner);
    const idx = this.find(ctHashSym(this.kb), now);
    if (idx >= 0) this.lastDir = 1 - this.probeDir;
    return idx;
  }

  /**
   * Create the entry for pi's flow in pi's orientation and account pi as its first packet.
   * If an entry with the same key exists (live or expired) it is reinitialised in place. An
   * expired entry met on the probe path is reused. When the table is at maxEntries, an entry
   * within EVICT_WINDOW slots of the home slot is evicted (see "Pressure" above). The entry is
   * charged to owner slot `owner` (OWNER_HOST or ownerSlot(endpoint)); an owner at its quota
   * replaces one of its own entries. Returns -1 and counts createFailed when nothing could be
   * evicted (the pipeline's drop 155 CT_CREATE_FAILED).
   */
  create(pi: FlowTuple, srcIdentity: number, now: number, owner = OWNER_HOST): number {
    this.loadKeys(pi);
    return this.createLoaded(pi, ctHashSym(this.kb), srcIdentity, now, owner);
  }

  /**
   * create() for the packet whose lookup() just missed, with no other call on this table in
   * between: reuses the keys and hash that lookup loaded (bench/micro: pipeline-new-flow-v4).
   */
  createAfterMiss(pi: FlowTuple, srcIdentity: number, now: number, owner = OWNER_HOST): number {
    return this.createLoaded(pi, this.lastHash, srcIdentity, now, owner);
  }

  private createLoaded(pi: FlowTuple, h: number, srcIdentity: number, now: number, owner: number): number {
    const w = this.w;
    const quota = w[H_QUOTA] as number;
    if (quota !== 0 && (w[this.own + owner] as number) >= quota && !this.evictNear(h & this.mask, now, owner)) {
      w[H_QUOTA_REFUSED] = (w[H_QUOTA_REFUSED] as number) + 1;
      w[H_CREATE_FAILED] = (w[H_CREATE_FAILED] as number) + 1;
      return -1;
    }
    let idx = this.claim(h, now);
    if (idx < 0 && this.evictNear(h & this.mask, now, -1)) idx = this.claim(h, now);
    if (idx < 0) {
      w[H_CREATE_FAILED] = (w[H_CREATE_FAILED] as number) + 1;
      return -1;
    }
    const kb = this.kb;
    const b = HEADER_WORDS + (idx << ENTRY_SHIFT);
    // a reused slot (same key, or expired on the probe path) stops counting for its old owner
    if (w[b + E_K0] !== 0) w[this.own + (w[b + E_OWNER] as number)] = (w[this.own + (w[b + E_OWNER] as number)] as number) - 1;
    for (let k = 1; k < ENTRY_WORDS; k++) w[b + k] = 0;
    for (let k = 1; k < KEY_WORDS; k++) w[b + k] = kb[k] as number;
    w[b + E_HASH] = h;
    w[b + E_CREATED] = now;
    w[b + E_IDENTITY] = srcIdentity;
    w[b + E_OWNER] = owner;
    w[this.own + owner] = (w[this.own + owner] as number) + 1;
    w[b + E_K0] = kb[0] as number; // last, so a concurrent reader sees a complete key
    this.update(idx, pi, 0, now);
    return idx;
  }

  /**
   * Slot for the scratch key (hash h): the slot of the same key if present, else the first
   * expired entry on the probe path, else the empty slot ending the path if the table is below
   * maxEntries (counted). -1 when full.
   */
  private claim(h: number, now: number): number {
    const kb = this.kb;
    const w = this.w;
    const mask = this.mask;
    let i = h & mask;
    let reuse = -1;
    let slot = -1;
    for (let n = 0; n < this.capacity; n++) {
      const b = HEADER_WORDS + (i << ENTRY_SHIFT);
      const k0 = w[b + E_K0] as number;
      if (k0 === 0) { slot = i; break; }
      if (w[b + E_HASH] === h && k0 === kb[0] && w[b + 1] === kb[1] &&
          w[b + 2] === kb[2] && w[b + 3] === kb[3] && w[b + 4] === kb[4] && w[b + 5] === kb[5] &&
          w[b + 6] === kb[6] && w[b + 7] === kb[7] && w[b + 8] === kb[8] && w[b + 9] === kb[9]) {
        reuse = i; // same key: reinitialise it whatever its state
        break;
      }
      if (reuse < 0 && (w[b + E_EXPIRES] as number) <= now) reuse = i;
      i = (i + 1) & mask;
    }
    // an occupied slot on our own probe path: replacing it keeps the probing invariant
    if (reuse >= 0) return reuse;
    if (slot >= 0 && (w[H_COUNT] as number) < (w[H_MAX_ENTRIES] as number)) {
      w[H_COUNT] = (w[H_COUNT] as number) + 1;
      return slot;
    }
    return -1;
  }

  /**
   * Examine up to EVICT_WINDOW slots from `start` and delete one entry: the first expired one,
   * else the least recently seen one without a reply, else the least recently seen one. With
   * owner >= 0 only that owner's entries are candidates (an owner at its quota). True if an
   * entry was deleted; the eviction is counted by its reason.
   */
  private evictNear(start: number, now: number, owner: number): boolean {
    const w = this.w;
    const mask = this.mask;
    const n = Math.min(EVICT_WINDOW, this.capacity);
    let unreplied = -1;
    let unrepliedSeen = 0;
    let oldest = -1;
    let oldestSeen = 0;
    let i = start;
    for (let k = 0; k < n; k++) {
      const b = HEADER_WORDS + (i << ENTRY_SHIFT);
      if (w[b + E_K0] !== 0 && (owner < 0 || w[b + E_OWNER] === owner)) {
        if ((w[b + E_EXPIRES] as number) <= now) {
          this.delete(i);
          this.countEviction(owner < 0 ? H_EVICT_EXPIRED : H_EVICT_QUOTA);
          return true;
        }
        const seen = w[b + E_SEEN] as number;
        if (((w[b + E_FLAGS] as number) & CTF_REPLY_SEEN) === 0) {
          if (unreplied < 0 || seen < unrepliedSeen) { unreplied = i; unrepliedSeen = seen; }
        } else if (oldest < 0 || seen < oldestSeen) {
          oldest = i; oldestSeen = seen;
        }
      }
      i = (i + 1) & mask;
    }
    if (unreplied >= 0) {
      this.delete(unreplied);
      this.countEviction(owner < 0 ? H_EVICT_UNREPLIED : H_EVICT_QUOTA);
      return true;
    }
    if (oldest >= 0) {
      this.delete(oldest);
      this.countEviction(owner < 0 ? H_EVICT_OLDEST : H_EVICT_QUOTA);
      return true;
    }
    return false;
  }

  private countEviction(word: number): void {
    this.w[word] = (this.w[word] as number) + 1;
  }

  /**
   * Account pi (travelling in direction dir of entry idx) and refresh the lifetime.
   * Returns CT_ESTABLISHED (dir 0), CT_REPLY (dir 1), or CT_REOPENED when a SYN without ACK
   * arrives on a TCP entry that a FIN or RST had started to close: the flags start afresh and
   * the cached policy verdict is dropped (the pipeline treats the flow like a new one).
   */
  update(idx: number, pi: FlowTuple, dir: number, now: number): number {
    const w = this.w;
    const b = HEADER_WORDS + (idx << ENTRY_SHIFT);
    let f = w[b + E_FLAGS] as number;
    let state = dir === 0 ? CT_ESTABLISHED : CT_REPLY;
    let lifetime: number;
    if (pi.proto === IPPROTO_TCP) {
      const tf = pi.tcpFlags & 0xff;
      if ((tf & (TCP_SYN | TCP_ACK)) === TCP_SYN && (f & CTF_CLOSING) !== 0) {
        f = 0;
        w[b + E_POL_META] = 0;
        state = CT_REOPENED;
      }
      f |= tf << (dir << 3);
      if ((tf & TCP_RST) !== 0) f |= CTF_CLOSING;
      else if ((tf & TCP_FIN) !== 0) f |= dir === 0 ? CTF_TX_CLOSING : CTF_RX_CLOSING;
      if ((tf & TCP_SYN) === 0) f |= CTF_SEEN_NON_SYN;
      if (dir !== 0) f |= CTF_REPLY_SEEN;
      if ((f & CTF_CLOSING) === CTF_CLOSING) lifetime = w[H_CLOSE_LIFETIME] as number;
      else if ((f & (CTF_REPLY_SEEN | CTF_SEEN_NON_SYN)) === (CTF_REPLY_SEEN | CTF_SEEN_NON_SYN)) lifetime = w[H_TCP_LIFETIME] as number;
      else lifetime = w[H_SYN_LIFETIME] as number;
    } else {
      if (dir !== 0) f |= CTF_REPLY_SEEN;
      lifetime = w[H_NONTCP_LIFETIME] as number;
    }
    w[b + E_FLAGS] = f;
    w[b + E_EXPIRES] = now + lifetime;
    w[b + E_SEEN] = now;
    const pk = b + (dir === 0 ? E_PKTS0 : E_PKTS1);
    const bl = b + (dir === 0 ? E_BYTES0_LO : E_BYTES1_LO);
    const bh = b + (dir === 0 ? E_BYTES0_HI : E_BYTES1_HI);
    w[pk] = (w[pk] as number) + 1; // wraps mod 2^32
    const lo = (w[bl] as number) + pi.totalLen;
    w[bl] = lo; // stored mod 2^32
    if (lo > 0xffffffff) w[bh] = (w[bh] as number) + 1;
    return state;
  }

  /**
   * Trace aggregation: true when a trace event should be reported for this packet of the flow,
   * i.e. nothing was reported yet, TRACE_INTERVAL seconds passed since the last report, or the
   * packet carries TCP flags not yet reported in this direction. Records the report.
   */
  shouldTrace(idx: number, dir: number, tcpFlags: number, now: number): boolean {
    const w = this.w;
    const b = HEADER_WORDS + (idx << ENTRY_SHIFT);
    const tfl = w[b + E_TRACE_FLAGS] as number;
    const shift = dir === 0 ? 0 : 8;
    const fl = (tcpFlags & 0xff) << shift;
    if ((tfl & TRACE_DONE) !== 0 && (fl & ~tfl) === 0 && now - (w[b + E_TRACE_TIME] as number) < TRACE_INTERVAL) {
      return false;
    }
    w[b + E_TRACE_FLAGS] = tfl | fl | TRACE_DONE;
    w[b + E_TRACE_TIME] = now;
    return true;
  }

  // ---- policy verdict cache -----------------------------------------------------------------

  setPolicyCache(idx: number, revision: number, cookie: number, matchType: number, audited: boolean): void {
    const b = HEADER_WORDS + (idx << ENTRY_SHIFT);
    this.w[b + E_POL_REV] = revision;
    this.w[b + E_POL_COOKIE] = cookie;
    this.w[b + E_POL_META] = POL_VALID | (audited ? POL_AUDITED : 0) | (matchType & 0xff);
  }
  clearPolicyCache(idx: number): void {
    this.w[HEADER_WORDS + (idx << ENTRY_SHIFT) + E_POL_META] = 0;
  }
  /** Revision of the cached verdict, or -1 when none is cached. */
  policyRevision(idx: number): number {
    const b = HEADER_WORDS + (idx << ENTRY_SHIFT);
    return ((this.w[b + E_POL_META] as number) & POL_VALID) !== 0 ? (this.w[b + E_POL_REV] as number) : -1;
  }
  policyCookie(idx: number): number { return this.w[HEADER_WORDS + (idx << ENTRY_SHIFT) + E_POL_COOKIE] as number; }
  policyMatchType(idx: number): number { return (this.w[HEADER_WORDS + (idx << ENTRY_SHIFT) + E_POL_META] as number) & 0xff; }
  policyAudited(idx: number): boolean { return ((this.w[HEADER_WORDS + (idx << ENTRY_SHIFT) + E_POL_META] as number) & POL_AUDITED) !== 0; }

  // ---- deletion and garbage collection --------------------------------------------------------

  /**
   * Remove the entry at idx by backward shift: later members of its probe cluster move back
   * so that no tombstone is needed. Entries can move; indices held across a delete are stale.
   */
  delete(idx: number): void {
    const w = this.w;
    const mask = this.mask;
    const gone = this.own + (w[HEADER_WORDS + (idx << ENTRY_SHIFT) + E_OWNER] as number);
    w[gone] = (w[gone] as number) - 1;
    let hole = idx;
    let j = (idx + 1) & mask;
    for (;;) {
      const bj = HEADER_WORDS + (j << ENTRY_SHIFT);
      if (w[bj + E_K0] === 0) break;
      const home = (w[bj + E_HASH] as number) & mask;
      // j may fill the hole when its home is not in the cyclic range (hole, j]
      if (((j - home) & mask) >= ((j - hole) & mask)) {
        const bh = HEADER_WORDS + (hole << ENTRY_SHIFT);
        w.copyWithin(bh, bj, bj + ENTRY_WORDS);
        hole = j;
      }
      j = (j + 1) & mask;
    }
    const bh = HEADER_WORDS + (hole << ENTRY_SHIFT);
    w[bh + E_K0] = 0;
    for (let k = 1; k < ENTRY_WORDS; k++) w[bh + k] = 0;
    w[H_COUNT] = (w[H_COUNT] as number) - 1;
  }

  /**
   * Examine `budget` slots from the persistent cursor (wrapping) and delete expired entries.
   * After a deletion the same slot is examined again, because backward shift may have moved a
   * later entry into it; so a sweep of `capacity` slots collects every entry that was expired
   * when it started. Entries moved behind the cursor by deletions outside gc() are caught on
   * the next round. Returns the number of entries deleted.
   */
  gc(now: number, budget: number): number {
    const w = this.w;
    const mask = this.mask;
    let c = (w[H_GC_CURSOR] as number) & mask;
    let deleted = 0;
    let left = budget;
    while (left > 0) {
      const b = HEADER_WORDS + (c << ENTRY_SHIFT);
      if (w[b + E_K0] !== 0 && (w[b + E_EXPIRES] as number) <= now) {
        this.delete(c);
        deleted++;
        continue; // re-examine c; termination: each deletion lowers count
      }
      c = (c + 1) & mask;
      left--;
    }
    w[H_GC_CURSOR] = c;
    return deleted;
  }

  /** Remove every entry (and the owner counts). Keeps the lifetimes, quota and counters. */
  flush(): void {
    const w = this.w;
    w.fill(0, HEADER_WORDS);
    w[H_COUNT] = 0;
    w[H_GC_CURSOR] = 0;
  }

  // ---- listing (may allocate) --------------------------------------------------------------

  /** Call cb for every occupied slot (live or not yet collected). Do not mutate from cb. */
  forEach(cb: (idx: number) => void): void {
    const w = this.w;
    for (let i = 0; i < this.capacity; i++) {
      if (w[HEADER_WORDS + (i << ENTRY_SHIFT) + E_K0] !== 0) cb(i);
    }
  }

  isUsed(idx: number): boolean { return this.w[HEADER_WORDS + (idx << ENTRY_SHIFT) + E_K0] !== 0; }
  family(idx: number): number { return (this.w[HEADER_WORDS + (idx << ENTRY_SHIFT) + E_K0] as number) >>> 8; }
  proto(idx: number): number { return (this.w[HEADER_WORDS + (idx << ENTRY_SHIFT) + E_K0] as number) & 0xff; }
  sport(idx: number): number { return (this.w[HEADER_WORDS + (idx << ENTRY_SHIFT) + E_PORTS] as number) >>> 16; }
  dport(idx: number): number { return (this.w[HEADER_WORDS + (idx << ENTRY_SHIFT) + E_PORTS] as number) & 0xffff; }
  /** Word i (0..3) of the source address. */
  srcWord(idx: number, i: number): number { return this.w[HEADER_WORDS + (idx << ENTRY_SHIFT) + E_SRC + i] as number; }
  dstWord(idx: number, i: number): number { return this.w[HEADER_WORDS + (idx << ENTRY_SHIFT) + E_DST + i] as number; }
  flags(idx: number): number { return this.w[HEADER_WORDS + (idx << ENTRY_SHIFT) + E_FLAGS] as number; }
  expires(idx: number): number { return this.w[HEADER_WORDS + (idx << ENTRY_SHIFT) + E_EXPIRES] as number; }
  created(idx: number): number { return this.w[HEADER_WORDS + (idx << ENTRY_SHIFT) + E_CREATED] as number; }
  identity(idx: number): number { return this.w[HEADER_WORDS + (idx << ENTRY_SHIFT) + E_IDENTITY] as number; }
  /** Owner slot the entry is charged to. */
  owner(idx: number): number { return this.w[HEADER_WORDS + (idx << ENTRY_SHIFT) + E_OWNER] as number; }
  /** Time of the entry's last packet. */
  seen(idx: number): number { return this.w[HEADER_WORDS + (idx << ENTRY_SHIFT) + E_SEEN] as number; }
  packets(idx: number, dir: number): number {
    return this.w[HEADER_WORDS + (idx << ENTRY_SHIFT) + (dir === 0 ? E_PKTS0 : E_PKTS1)] as number;
  }
  /** Bytes in direction dir (exact up to 2^53). */
  bytes(idx: number, dir: number): number {
    const b = HEADER_WORDS + (idx << ENTRY_SHIFT);
    const lo = this.w[b + (dir === 0 ? E_BYTES0_LO : E_BYTES1_LO)] as number;
    const hi = this.w[b + (dir === 0 ? E_BYTES0_HI : E_BYTES1_HI)] as number;
    return hi * 4294967296 + lo;
  }
  /** TCP flags seen in direction dir. */
  tcpFlagsSeen(idx: number, dir: number): number { return (this.flags(idx) >>> (dir === 0 ? 0 : 8)) & 0xff; }
  isClosing(idx: number): boolean { return (this.flags(idx) & CTF_CLOSING) !== 0; }
  replySeen(idx: number): boolean { return (this.flags(idx) & CTF_REPLY_SEEN) !== 0; }

  snapshot(idx: number): CtEntrySnapshot {
    return {
      index: idx,
      family: this.family(idx),
      proto: this.proto(idx),
      src: [this.srcWord(idx, 0), this.srcWord(idx, 1), this.srcWord(idx, 2), this.srcWord(idx, 3)],
      dst: [this.dstWord(idx, 0), this.dstWord(idx, 1), this.dstWord(idx, 2), this.dstWord(idx, 3)],
      sport: this.sport(idx),
      dport: this.dport(idx),
      flags: this.flags(idx),
      expires: this.expires(idx),
      created: this.created(idx),
      identity: this.identity(idx),
      packets: [this.packets(idx, 0), this.packets(idx, 1)],
      bytes: [this.bytes(idx, 0), this.bytes(idx, 1)],
    };
  }
}
