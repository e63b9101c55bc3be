/**
 * Fragment table: remembers the L4 ports of the first fragment of an IPv4 or IPv6 datagram so
 * that later fragments (which carry no L4 header) can be policed and tracked like the first.
 *
 *   first fragment (fragOffset 0, L4 present): record(pi, now)
 *   later fragment:  lookup(pi, now) fills pi.sport / pi.dport; a miss is the pipeline's
 *                    drop 175 FRAG_NOT_FOUND.
 *
 * Key: (family, proto, IP id, src, dst). The IPv4 id is 16 bits, the IPv6 fragment id 32 bits;
 * both fit the same word. Entries are never deleted: a datagram's fragments may arrive in any
 * order, so the table cannot know which one is the last. An entry simply expires `lifetime`
 * seconds after its record and its slot is then reused by a later record.
 *
 * Open addressing with linear probing inside a bounded window of PROBE_WINDOW slots from the
 * home slot. Because slots never return to empty (only flush() empties them), a key is always
 * found before the first empty slot of its window, and a record may take the first expired slot
 * on its path without breaking that invariant.
 *
 * Pressure (Cilium's fragment map is LRU). A window full of live records does not refuse: the
 * record with the earliest expiry (the oldest, as every record lives `lifetime`) is overwritten
 * (evictions{reason="oldest"}), and if the recording owner has records in that window, the
 * oldest of its own goes first: a flooding endpoint's windows are full of its own records, so
 * it pays for the pressure it makes, even below its quota. Per-endpoint quota: each record remembers its owner (the source
 * endpoint, see conntrack's ownerSlot()) and the table counts the slots each owner holds. An
 * owner holding `quota` slots may only overwrite its own records (expired first, then its
 * oldest; evictions{reason="quota"}); with none in the window the record is refused (the
 * pipeline's drop 157, recordFailed and quotaRefused). So one endpoint sending first fragments
 * with fresh IDs churns its own share and leaves the other endpoints' datagrams alone.
 *
 * Concurrency and persistence: as for the conntrack table: one writer per region, torn reads
 * from other threads are acceptable for listing, and the constructor adopts an existing valid
 * region so the records survive a worker restart. Time is the caller's clock in seconds (u32);
 * an entry is live while now < expires.
 *
 * ---------------------------------------------------------------------------------------------
 * Region layout (u32 words in host byte order):
 *   header: FRAG_HEADER_WORDS words (64 bytes)
 *     word 0 F_MAGIC          'FR02'
 *     word 1 F_CAPACITY       slot count, a power of two
 *     word 2 F_COUNT          slots ever filled since the last flush (live or expired)
 *     word 3 F_LIFETIME       seconds a record lives
 *     word 4 F_RECORD_FAILED  record() calls refused (an owner at its quota, none of its own
 *                             records in the window)
 *     word 5 F_QUOTA          slots one owner may hold (0: no quota)
 *     word 6 F_EVICT_OLDEST   live records overwritten because the window was full
 *     word 7 F_EVICT_QUOTA    own live records overwritten by an owner at its quota
 *     word 8 F_QUOTA_REFUSED  records refused for the quota (also in F_RECORD_FAILED)
 *     words 9..15             reserved, zero
 *   entries: capacity x FRAG_ENTRY_WORDS words (64 bytes each)
 *     word 0  FE_K0     family << 8 | proto; 0 marks an empty slot (family is 4 or 6)
 *     word 1  FE_ID     IP identification (IPv4: 16 bits; IPv6: 32 bits)
 *     words 2..5 FE_SRC source address (IPv4 in word 2, rest 0)
 *     words 6..9 FE_DST destination address
 *     word 10 FE_HASH   key hash; home slot = hash & (capacity - 1); fast reject on probe
 *     word 11 FE_PORTS  sport << 16 | dport of the first fragment
 *     word 12 FE_EXPIRES absolute expiry time in seconds
 *     word 13 FE_ICMP   ICMP type << 8 | code of the first fragment, + 1 (0: not ICMP), so
 *                       later ICMP fragments are policed by the type like the first one
 *     word 14 FE_OWNER  owner slot the record is charged to
 *     word 15           reserved, zero
 *   owner counts: OWNER_SLOTS words after the entries, slots held per owner (live or expired)
 * ---------------------------------------------------------------------------------------------
 */
import type { FlowTuple } from '../proto/tuple.js';
import { hashKey10, OWNER_HOST, OWNER_SLOTS } from './conntrack.js';
import { InternalError } from '../proto/errors.js';

const MAGIC = 0x46523032; // 'FR02'

export const FRAG_HEADER_WORDS = 16;
const F_MAGIC = 0;
const F_CAPACITY = 1;
const F_COUNT = 2;
const F_LIFETIME = 3;
const F_RECORD_FAILED = 4;
const F_QUOTA = 5;
const F_EVICT_OLDEST = 6;
const F_EVICT_QUOTA = 7;
const F_QUOTA_REFUSED = 8;

export const FRAG_ENTRY_WORDS = 16;
const ENTRY_SHIFT = 4;
const FE_K0 = 0;
const FE_HASH = 10;
const FE_PORTS = 11;
const FE_EXPIRES = 12;
const FE_ICMP = 13;
const FE_OWNER = 14;
const KEY_WORDS = 10;

/** Slots examined from the home slot by record() and lookup(). */
export const PROBE_WINDOW = 16;

export interface FragmentOptions {
  /** Seconds a first-fragment record lives (default 60). */
  lifetime?: number;
  /**
   * Percent (1-100) of the slots one owner may hold; 100 disables the quota. When left out, a
   * region being adopted keeps its quota and a new one has none.
   */
  endpointShare?: number;
}

/** Eviction counters of a fragment table. */
export interface FragEvictions {
  oldest: number;
  quota: number;
  quotaRefused: number;
}

export class FragmentTable {
  /** Attach to an initialised region for reading (the control thread's metrics). */
  static attach(sab: SharedArrayBuffer, byteOffset: number): FragmentTable {
    const h = new Uint32Array(sab, byteOffset, FRAG_HEADER_WORDS);
    if (h[F_MAGIC] !== MAGIC) throw new InternalError(`no fragment table at byte offset ${byteOffset}`);
    return new FragmentTable(sab, byteOffset, h[F_CAPACITY] as number, { lifetime: h[F_LIFETIME] as number });
  }

  static bytesFor(capacity: number): number {
    return (FRAG_HEADER_WORDS + capacity * FRAG_ENTRY_WORDS + OWNER_SLOTS) * 4;
  }

  readonly capacity: number;
  private readonly mask: number;
  private readonly window: number;
  private readonly w: Uint32Array;
  /** Word index of the owner counts. */
  private readonly own: number;
  private readonly kb: Uint32Array;
  /** Home slot of the last record() (for tests of the eviction window). */
  lastHome = 0;

  constructor(sab: SharedArrayBuffer, byteOffset: number, capacity: number, opts?: FragmentOptions) {
    if (!Number.isInteger(capacity) || capacity < 8 || (capacity & (capacity - 1)) !== 0 || capacity > 1 << 26) {
      throw new RangeError('capacity must be a power of two between 8 and 2^26');
    }
    if (byteOffset % 4 !== 0) throw new RangeError('byteOffset must be a multiple of 4');
    if (byteOffset + FragmentTable.bytesFor(capacity) > sab.byteLength) {
      throw new RangeError('the SharedArrayBuffer is too small for this capacity at this byteOffset');
    }
    const lifetime = opts?.lifetime ?? 60;
    if (!Number.isInteger(lifetime) || lifetime < 1 || lifetime > 0x7fffffff) {
      throw new RangeError('options.lifetime must be a positive integer number of seconds');
    }
    this.capacity = capacity;
    this.mask = capacity - 1;
    this.window = Math.min(capacity, PROBE_WINDOW);
    this.w = new Uint32Array(sab, byteOffset, FRAG_HEADER_WORDS + capacity * FRAG_ENTRY_WORDS + OWNER_SLOTS);
    this.own = FRAG_HEADER_WORDS + capacity * FRAG_ENTRY_WORDS;
    this.kb = new Uint32Array(KEY_WORDS);
    const w = this.w;
    const adopt = w[F_MAGIC] === MAGIC && w[F_CAPACITY] === capacity;
    if (!adopt) {
      w.fill(0);
      w[F_CAPACITY] = capacity;
    }
    w[F_LIFETIME] = lifetime;
    if (opts?.endpointShare !== undefined || !adopt) {
      const share = opts?.endpointShare ?? 100;
      if (!Number.isInteger(share) || share < 1 || share > 100) {
        throw new RangeError('options.endpointShare must be an integer percent from 1 to 100');
      }
      w[F_QUOTA] = share >= 100 ? 0 : Math.max(1, Math.floor((capacity * share) / 100));
    }
    w[F_MAGIC] = MAGIC;
  }

  get count(): number { return this.w[F_COUNT] as number; }
  get recordFailed(): number { return this.w[F_RECORD_FAILED] as number; }
  get lifetime(): number { return this.w[F_LIFETIME] as number; }
  get quota(): number { return this.w[F_QUOTA] as number; }
  ownerCount(owner: number): number { return this.w[this.own + owner] as number; }
  evictions(): FragEvictions {
    const w = this.w;
    return { oldest: w[F_EVICT_OLDEST] as number, quota: w[F_EVICT_QUOTA] as number, quotaRefused: w[F_QUOTA_REFUSED] as number };
  }
  // slot accessors for listings and tests
  isUsed(i: number): boolean { return this.w[FRAG_HEADER_WORDS + (i << ENTRY_SHIFT) + FE_K0] !== 0; }
  expiresAt(i: number): number { return this.w[FRAG_HEADER_WORDS + (i << ENTRY_SHIFT) + FE_EXPIRES] as number; }
  ownerAt(i: number): number { return this.w[FRAG_HEADER_WORDS + (i << ENTRY_SHIFT) + FE_OWNER] as number; }
  /** Key word k (0..9: family/proto, id, src, dst) of slot i. */
  keyWordAt(i: number, k: number): number { return this.w[FRAG_HEADER_WORDS + (i << ENTRY_SHIFT) + k] as number; }

  private loadKey(pi: FlowTuple): void {
    const kb = this.kb;
    kb[0] = (pi.family << 8) | (pi.proto & 0xff);
    kb[1] = pi.ipId;
    kb[2] = pi.src0; kb[3] = pi.src1; kb[4] = pi.src2; kb[5] = pi.src3;
    kb[6] = pi.dst0; kb[7] = pi.dst1; kb[8] = pi.dst2; kb[9] = pi.dst3;
  }

  private sameKey(b: number, h: number): boolean {
    const w = this.w;
    const kb = this.kb;
    return w[b + FE_HASH] === h && w[b] === kb[0] && w[b + 1] === kb[1] &&
      w[b + 2] === kb[2] && w[b + 3] === kb[3] && w[b + 4] === kb[4] && w[b + 5] === kb[5] &&
      w[b + 6] === kb[6] && w[b + 7] === kb[7] && w[b + 8] === kb[8] && w[b + 9] === kb[9];
  }

  /**
   * Remember the ports of pi, the first fragment of its datagram, charged to owner slot
   * `owner`. Refreshes an existing record of the same datagram. A window full of live records
   * overwrites the oldest (see "Pressure"). Returns false (and counts recordFailed) only when
   * the owner is at its quota with none of its records in the window.
   */
  record(pi: FlowTuple, now: number, owner = OWNER_HOST): boolean {
    this.loadKey(pi);
    const h = hashKey10(this.kb);
    const w = this.w;
    const mask = this.mask;
    const quota = w[F_QUOTA] as number;
    const atQuota = quota !== 0 && (w[this.own + owner] as number) >= quota;
    let i = h & mask;
    this.lastHome = i;
    let slot = -1;
    let empty = false;
    let victim = -1; // the oldest live record any owner holds in the window
    let victimExp = 0;
    let ownVictim = -1; // the oldest live record of this owner in the window
    let ownExp = 0;
    for (let n = 0; n < this.window; n++) {
      const b = FRAG_HEADER_WORDS + (i << ENTRY_SHIFT);
      if (w[b + FE_K0] === 0) {
        // an owner at its quota may not take a new slot
        if (slot < 0 && !atQuota) { slot = i; empty = true; }
        break;
      }
      if (this.sameKey(b, h)) { slot = i; empty = false; victim = -1; ownVictim = -1; break; }
      const mine = w[b + FE_OWNER] === owner;
      if (!atQuota || mine) {
        const exp = w[b + FE_EXPIRES] as number;
        if (exp <= now) {
          if (slot < 0) slot = i;
        } else {
          if (victim < 0 || exp < victimExp) { victim = i; victimExp = exp; }
          if (mine && (ownVictim < 0 || exp < ownExp)) { ownVictim = i; ownExp = exp; }
        }
      }
      i = (i + 1) & mask;
    }
    if (ownVictim >= 0) victim = ownVictim;
    if (slot < 0 && victim >= 0) {
      slot = victim;
      const c = atQuota ? F_EVICT_QUOTA : F_EVICT_OLDEST;
      w[c] = (w[c] as number) + 1;
    }
    if (slot < 0) {
      if (atQuota) w[F_QUOTA_REFUSED] = (w[F_QUOTA_REFUSED] as number) + 1;
      w[F_RECORD_FAILED] = (w[F_RECORD_FAILED] as number) + 1;
      return false;
    }
    const b = FRAG_HEADER_WORDS + (slot << ENTRY_SHIFT);
    const kb = this.kb;
    if (!empty) {
      const o = this.own + (w[b + FE_OWNER] as number);
      w[o] = (w[o] as number) - 1;
    }
    for (let k = 1; k < KEY_WORDS; k++) w[b + k] = kb[k] as number;
    w[b + FE_HASH] = h;
    w[b + FE_PORTS] = ((pi.sport & 0xffff) << 16) | (pi.dport & 0xffff);
    w[b + FE_ICMP] = pi.icmpType >= 0 ? (((pi.icmpType & 0xff) << 8) | (pi.icmpCode & 0xff)) + 1 : 0;
    w[b + FE_EXPIRES] = now + (w[F_LIFETIME] as number);
    w[b + FE_OWNER] = owner;
    w[this.own + owner] = (w[this.own + owner] as number) + 1;
    w[b + FE_K0] = kb[0] as number; // last, so a concurrent reader sees a complete key
    if (empty) w[F_COUNT] = (w[F_COUNT] as number) + 1;
    return true;
  }

  /**
   * For a later fragment: find the live record of its datagram and copy the ports into
   * pi.sport / pi.dport. Returns false (pi untouched) when there is none.
   */
  lookup(pi: FlowTuple, now: number): boolean {
    this.loadKey(pi);
    const h = hashKey10(this.kb);
    const w = this.w;
    const mask = this.mask;
    let i = h & mask;
    for (let n = 0; n < this.window; n++) {
      const b = FRAG_HEADER_WORDS + (i << ENTRY_SHIFT);
      if (w[b + FE_K0] === 0) return false;
      if (this.sameKey(b, h)) {
        if ((w[b + FE_EXPIRES] as number) <= now) return false;
        const ports = w[b + FE_PORTS] as number;
        pi.sport = ports >>> 16;
        pi.dport = ports & 0xffff;
        const icmp = w[b + FE_ICMP] as number;
        if (icmp !== 0) {
          pi.icmpType = ((icmp - 1) >>> 8) & 0xff;
          pi.icmpCode = (icmp - 1) & 0xff;
          if (pi.sport !== 0 || pi.dport !== 0) pi.icmpId = pi.sport;
        }
        return true;
      }
      i = (i + 1) & mask;
    }
    return false;
  }

  /** Number of records still live at `now` (scans the table; for status output). */
  liveCount(now: number): number {
    const w = this.w;
    let n = 0;
    for (let i = 0; i < this.capacity; i++) {
      const b = FRAG_HEADER_WORDS + (i << ENTRY_SHIFT);
      if (w[b + FE_K0] !== 0 && (w[b + FE_EXPIRES] as number) > now) n++;
    }
    return n;
  }

  /** Remove every record and the owner counts. Keeps lifetime, quota and counters. */
  flush(): void {
    this.w.fill(0, FRAG_HEADER_WORDS);
    this.w[F_COUNT] = 0;
  }
}
