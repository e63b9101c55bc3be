/**
 * The published endpoint table: endpoint index -> identity, addresses, output port and
 * policy flags, plus an address -> endpoint index map. The datapath uses it for the source
 * check (does this source address belong to the endpoint whose TUN the packet came from?)
 * and to find the destination endpoint of a local delivery (Cilium's lookup_ip4_endpoint).
 *
 * ## Records
 *
 * One record of 8 u32 words per endpoint index, at word ep * 8 (a left-right pair, see
 * publish.ts):
 *
 *   word  width  field
 *   0     u32    FLAGS     bit 0 EP_VALID            the record is in use
 *                          bit 1 EP_ENFORCE_INGRESS  ingress policy is enforced
 *                          bit 2 EP_ENFORCE_EGRESS   egress policy is enforced
 *                          bit 3 EP_AUDIT            policy-audit mode: a policy drop is
 *                                                    reported as audited but the packet passes
 *                          bits 4..31 reserved, zero (upsert refuses them)
 *   1     u32    IDENTITY  the endpoint's security identity
 *   2     u32    IPV4      IPv4 address, network order as a number (10.0.0.1 = 0x0a000001);
 *                          0 = none
 *   3     u32    PORT      index of the TUN port the runtime writes this endpoint's packets to
 *   4..7  u32    IPV6      IPv6 address, word 4 most significant; all zero = none
 *
 * An invalid record (FLAGS bit 0 clear) is all zero.
 *
 * ## Address map
 *
 * A SharedHash (hash.ts) with 5 key words and 1 value word. Slot layout (stride 7 words):
 *
 *   word  width  field
 *   0     u32    USED     SharedHash occupancy
 *   1     u32    FAMILY   4 or 6
 *   2..5  u32    ADDR     IPv4: the address then three zero words; IPv6: the four words
 *   6     u32    EP       endpoint index
 *
 * Capacity is the next power of two >= 4 * maxEndpoints (two addresses per endpoint at
 * most), so the map stays at most half full and probes stay short.
 */
import { SharedHash, SharedHashWriter } from './hash.js';
import { sharedPair, type WriteLog } from './publish.js';
import { TunswitchError } from '../proto/errors.js';

export const EP_VALID = 1;
export const EP_ENFORCE_INGRESS = 2;
export const EP_ENFORCE_EGRESS = 4;
export const EP_AUDIT = 8;
/** Every flag bit that has a meaning; the others must be zero. */
export const EP_KNOWN_FLAGS = EP_VALID | EP_ENFORCE_INGRESS | EP_ENFORCE_EGRESS | EP_AUDIT;

export const ADDR_FAMILY_V4 = 4;
export const ADDR_FAMILY_V6 = 6;

export const DEFAULT_MAX_ENDPOINTS = 4096;

/** Words per endpoint record and the offset of each field in it. */
export const EP_RECORD_WORDS = 8;
export const EP_OFF_FLAGS = 0;
export const EP_OFF_IDENTITY = 1;
export const EP_OFF_IPV4 = 2;
export const EP_OFF_PORT = 3;
export const EP_OFF_IPV6 = 4;

const kAddrKeyWords = 5;
const kAddrValueWords = 1;

export interface EndpointRecord {
  identity: number;
  /** IPv4 as a u32; 0 or absent = none. */
  ipv4?: number;
  /** IPv6 as four u32, word 0 most significant; absent or all zero = none. */
  ipv6?: number[];
  port: number;
  /** EP_* bits; EP_VALID is implied. */
  flags: number;
}

/** Everything a thread needs to attach to the table. Structured-cloneable. */
export interface EndpointTableShared {
  maxEndpoints: number;
  addrCapacity: number;
  records: [Uint32Array, Uint32Array];
  addrs: [Uint32Array, Uint32Array];
}

function nextPow2(n: number): number {
  return n <= 2 ? 2 : 2 ** Math.ceil(Math.log2(n));
}

export class EndpointTable {
  readonly maxEndpoints: number;
  readonly addrs: SharedHash;
  /** Records on the side being read. */
  private rec: Uint32Array;

  private constructor(readonly shared: EndpointTableShared) {
    this.maxEndpoints = shared.maxEndpoints;
    if (shared.records[0].length < shared.maxEndpoints * EP_RECORD_WORDS) {
      throw new RangeError('EndpointTable: record arrays too small');
    }
    this.rec = shared.records[0];
    this.addrs = new SharedHash(kAddrKeyWords, kAddrValueWords, shared.addrCapacity, shared.addrs);
  }

  static create(opts: { maxEndpoints?: number } = {}): EndpointTable {
    const maxEndpoints = opts.maxEndpoints ?? DEFAULT_MAX_ENDPOINTS;
    if (!Number.isInteger(maxEndpoints) || maxEndpoints < 1 || maxEndpoints > 1 << 16) {
      throw new RangeError(`options.maxEndpoints must be an integer in 1..65536, got ${maxEndpoints}`);
    }
    const addrCapacity = nextPow2(maxEndpoints * 4);
    return new EndpointTable({
      maxEndpoints,
      addrCapacity,
      records: sharedPair(maxEndpoints * EP_RECORD_WORDS),
      addrs: sharedPair(SharedHash.words(kAddrKeyWords, kAddrValueWords, addrCapacity)),
    });
  }

  static attach(shared: EndpointTableShared): EndpointTable {
    return new EndpointTable(shared);
  }

  /** Selects the side to read (once per batch, from PublishControl.enter). */
  useSide(side: number): void {
    this.rec = side === 0 ? this.shared.records[0] : this.shared.records[1];
    this.addrs.useSide(side);
  }

  /** Endpoint index owning this IPv4 address, or -1. */
  byAddr4(addr: number): number {
    // The generic SharedHash.find, unrolled for the key (V4, addr, 0, 0, 0): the same hash
    // as mixWords (hash.ts) computed inline, and a direct slot compare (bench/micro:
    // pipeline-established-v4 spent a sixth of its time in the generic probe).
    const h = this.addrs;
    const t = h.cur;
    const stride = h.stride;
    const mask = h.mask;
    let x = 0x9e3779b9 ^ 5;
    x = Math.imul(x ^ ADDR_FAMILY_V4, 0x85ebca6b);
    x ^= x >>> 13;
    x = Math.imul(x ^ addr, 0x85ebca6b);
    x ^= x >>> 13;
    x = Math.imul(x, 0x85ebca6b);
    x ^= x >>> 13;
    x = Math.imul(x, 0x85ebca6b);
    x ^= x >>> 13;
    x = Math.imul(x, 0x85ebca6b);
    x ^= x >>> 13;
    x = Math.imul(x ^ (x >>> 16), 0xc2b2ae35);
    let i = (x ^ (x >>> 15)) & mask;
    for (let probes = 0; probes <= mask; probes++) {
      const b = i * stride;
      if (t[b] === 0) return -1;
      if (t[b + 1] === ADDR_FAMILY_V4 && t[b + 2] === addr && t[b + 3] === 0 && t[b + 4] === 0 && t[b + 5] === 0) {
        return t[b + 6] as number;
      }
      i = (i + 1) & mask;
    }
    return -1;
  }

  /** Endpoint index owning this IPv6 address (w0 most significant), or -1. */
  byAddr6(w0: number, w1: number, w2: number, w3: number): number {
    const h = this.addrs;
    const k = h.key;
    k[0] = ADDR_FAMILY_V6;
    k[1] = w0;
    k[2] = w1;
    k[3] = w2;
    k[4] = w3;
    const b = h.find();
    return b < 0 ? -1 : (h.value(b, 0) as number);
  }

  /** FLAGS of endpoint `ep`; 0 (not valid) for an index out of range. */
  flags(ep: number): number {
    if (ep < 0 || ep >= this.maxEndpoints) return 0;
    return this.rec[ep * EP_RECORD_WORDS + EP_OFF_FLAGS] as number;
  }

  // The accessors below do not check `ep`: the datapath reads them only for an index that
  // flags() reported valid (or that byAddr4/byAddr6 returned).

  identity(ep: number): number {
    return this.rec[ep * EP_RECORD_WORDS + EP_OFF_IDENTITY] as number;
  }

  ipv4(ep: number): number {
    return this.rec[ep * EP_RECORD_WORDS + EP_OFF_IPV4] as number;
  }

  port(ep: number): number {
    return this.rec[ep * EP_RECORD_WORDS + EP_OFF_PORT] as number;
  }

  /** IPv6 word i (0 most significant) of endpoint `ep`. */
  ipv6Word(ep: number, i: number): number {
    return this.rec[ep * EP_RECORD_WORDS + EP_OFF_IPV6 + i] as number;
  }
}

/** The control thread's handle: writes the inactive side through the WriteLog. */
export class EndpointTableWriter {
  private readonly recId: number;
  private readonly hw: SharedHashWriter;

  constructor(
    readonly table: EndpointTable,
    readonly log: WriteLog,
  ) {
    this.recId = log.register(table.shared.records[0], table.shared.records[1]);
    this.hw = new SharedHashWriter(table.addrs, log);
  }

  /** Number of address mappings (IPv4 and IPv6). */
  get addressCount(): number {
    return this.hw.size;
  }

  /**
   * Creates or replaces endpoint `ep`. A changed address drops the old mapping. Throws if an
   * address already belongs to another endpoint (remove or re-address that one first).
   */
  upsert(ep: number, rec: EndpointRecord): void {
    this.checkEp(ep);
    if (!Number.isInteger(rec.identity) || rec.identity < 0 || rec.identity > 0xffffffff) {
      throw new RangeError(`endpoint ${ep}: identity ${rec.identity} is not a u32`);
    }
    if (!Number.isInteger(rec.port) || rec.port < 0 || rec.port > 0xffffffff) {
      throw new RangeError(`endpoint ${ep}: port ${rec.port} is not a u32`);
    }
    if (!Number.isInteger(rec.flags) || (rec.flags & ~EP_KNOWN_FLAGS) !== 0 || rec.flags < 0) {
      throw new RangeError(`endpoint ${ep}: flags 0x${rec.flags.toString(16)} has unknown bits`);
    }
    const v4 = (rec.ipv4 ?? 0) >>> 0;
    if (rec.ipv4 !== undefined && (!Number.isInteger(rec.ipv4) || rec.ipv4 < 0 || rec.ipv4 > 0xffffffff)) {
      throw new RangeError(`endpoint ${ep}: ipv4 ${rec.ipv4} is not a u32`);
    }
    const v6 = [0, 0, 0, 0];
    if (rec.ipv6 !== undefined) {
      if (rec.ipv6.length !== 4) throw new RangeError(`endpoint ${ep}: ipv6 must be four u32 words`);
      for (let i = 0; i < 4; i++) {
        const w = rec.ipv6[i] as number;
        if (!Number.isInteger(w) || w < 0 || w > 0xffffffff) {
          throw new RangeError(`endpoint ${ep}: ipv6 word ${i} ${w} is not a u32`);
        }
        v6[i] = w >>> 0;
      }
    }
    const has6 = (v6[0] | v6[1] | v6[2] | v6[3]) !== 0;

    // Refuse before writing anything, so a failed upsert leaves the table untouched.
    if (v4 !== 0) {
      const owner = this.hw.get([ADDR_FAMILY_V4, v4, 0, 0, 0]);
      if (owner !== undefined && owner[0] !== ep) {
        throw new TunswitchError('EBAD_REQUEST', `endpoint ${ep}: IPv4 ${fmt4(v4)} already belongs to endpoint ${owner[0]}`);
      }
    }
    if (has6) {
      const owner = this.hw.get([ADDR_FAMILY_V6, ...v6]);
      if (owner !== undefined && owner[0] !== ep) {
        throw new TunswitchError('EBAD_REQUEST', `endpoint ${ep}: IPv6 ${fmt6(v6)} already belongs to endpoint ${owner[0]}`);
      }
    }

    const base = ep * EP_RECORD_WORDS;
    const old4 = this.word(base + EP_OFF_IPV4);
    const old6 = [0, 1, 2, 3].map((i) => this.word(base + EP_OFF_IPV6 + i));
    const oldHas6 = (old6[0] | old6[1] | old6[2] | old6[3]) !== 0;
    const same6 = old6.every((w, i) => w === v6[i]);

    if (old4 !== 0 && old4 !== v4) this.hw.delete([ADDR_FAMILY_V4, old4, 0, 0, 0]);
    if (oldHas6 && !same6) this.hw.delete([ADDR_FAMILY_V6, ...old6]);
    if (v4 !== 0) this.hw.set([ADDR_FAMILY_V4, v4, 0, 0, 0], [ep]);
    if (has6) this.hw.set([ADDR_FAMILY_V6, ...v6], [ep]);

    this.put(base + EP_OFF_FLAGS, (rec.flags | EP_VALID) >>> 0);
    this.put(base + EP_OFF_IDENTITY, rec.identity >>> 0);
    this.put(base + EP_OFF_IPV4, v4);
    this.put(base + EP_OFF_PORT, rec.port >>> 0);
    for (let i = 0; i < 4; i++) this.put(base + EP_OFF_IPV6 + i, v6[i] as number);
  }

  /** Removes endpoint `ep` and its address mappings; returns whether it existed. */
  remove(ep: number): boolean {
    this.checkEp(ep);
    const base = ep * EP_RECORD_WORDS;
    if ((this.word(base + EP_OFF_FLAGS) & EP_VALID) === 0) return false;
    const old4 = this.word(base + EP_OFF_IPV4);
    const old6 = [0, 1, 2, 3].map((i) => this.word(base + EP_OFF_IPV6 + i));
    if (old4 !== 0) this.hw.delete([ADDR_FAMILY_V4, old4, 0, 0, 0]);
    if ((old6[0] | old6[1] | old6[2] | old6[3]) !== 0) this.hw.delete([ADDR_FAMILY_V6, ...old6]);
    for (let w = 0; w < EP_RECORD_WORDS; w++) this.put(base + w, 0);
    return true;
  }

  /** The record of `ep` on the working side (what the next commit publishes), or undefined. */
  get(ep: number): (Required<EndpointRecord> & { ep: number }) | undefined {
    this.checkEp(ep);
    const base = ep * EP_RECORD_WORDS;
    const flags = this.word(base + EP_OFF_FLAGS);
    if ((flags & EP_VALID) === 0) return undefined;
    return {
      ep,
      identity: this.word(base + EP_OFF_IDENTITY),
      ipv4: this.word(base + EP_OFF_IPV4),
      ipv6: [0, 1, 2, 3].map((i) => this.word(base + EP_OFF_IPV6 + i)),
      port: this.word(base + EP_OFF_PORT),
      flags,
    };
  }

  /** Every valid endpoint on the working side. */
  *entries(): Generator<Required<EndpointRecord> & { ep: number }> {
    for (let ep = 0; ep < this.table.maxEndpoints; ep++) {
      const r = this.get(ep);
      if (r !== undefined) yield r;
    }
  }

  private word(i: number): number {
    return this.log.get(this.recId, i);
  }

  /** Writes a record word only when it changes, so the publish stays O(change). */
  private put(i: number, v: number): void {
    if (this.log.get(this.recId, i) !== v) this.log.set(this.recId, i, v);
  }

  private checkEp(ep: number): void {
    if (!Number.isInteger(ep) || ep < 0 || ep >= this.table.maxEndpoints) {
      throw new RangeError(`endpoint index ${ep} is outside 0..${this.table.maxEndpoints - 1}`);
    }
  }
}

function fmt4(a: number): string {
  return `${a >>> 24}.${(a >>> 16) & 0xff}.${(a >>> 8) & 0xff}.${a & 0xff}`;
}

function fmt6(w: number[]): string {
  const parts: string[] = [];
  for (const x of w) parts.push(((x >>> 16) & 0xffff).toString(16), (x & 0xffff).toString(16));
  return parts.join(':');
}
