/**
 * What one output port is sent from a transmit batch: GSO packets kept whole or split, and
 * same-flow packets coalesced, by what the port offers. Pure: no Node I/O, nothing allocated
 * per packet or per batch; the caller owns the slab and the arena in it.
 *
 * A port is "offload" (its TUN offers TSO, and USO where the kernel has it, to the endpoint's
 * kernel) or "plain" (TUNSETOFFLOAD 0: the endpoint's kernel sends MTU-sized packets). Every
 * port has IFF_VNET_HDR. Linux takes a GSO write (TCPV4/TCPV6, UDP_L4) on any IFF_VNET_HDR
 * TUN whatever its TUNSETOFFLOAD flags (measured on 6.18: test/e2e/offload-ports.test.ts
 * writes coalesced TCP to plain ports byte-exact; test/e2e/gso.test.ts with its vnet device
 * opened without offload passed every TSO and USO case, in a one-off run): those flags only
 * say what the kernel may hand us on read. So "plain" is a choice about what the endpoint
 * sees, not a kernel limit.
 *
 * The rules, per packet of the batch, in order (GsoPortWriter.write repeats the numbers):
 *
 *   1. Not GSO (gso_type NONE): passes to step 4.
 *   2. TCP GSO (TCPV4/TCPV6, ECN or not): stays whole when the port offers TSO, or when
 *      coalescing (gro) is on: step 4 would build the same packet again from its segments, as
 *      Linux GRO does behind a NIC without TSO. Split otherwise (plain port, gro off).
 *   3. UDP GSO (UDP_L4): stays whole when the port offers USO; split otherwise, so a plain
 *      port's endpoint gets its datagrams one by one (Linux does not GRO UDP for a socket that
 *      did not ask for it with UDP_GRO). Any other gso_type is split, which refuses it (drop).
 *      Splitting is GsoSplitter (gso.ts): segments of at most the port's MTU with complete
 *      checksums and a zero virtio header, built in the arena. A packet the splitter refuses
 *      (malformed, more than MAX_SPLIT_SEGMENTS segments) is reported in `dropped`.
 *   4. With gro on, GsoCoalescer (gso.ts rules 1-10) over the resulting list: TCP towards
 *      every port (a plain port's endpoint sees GRO-sized TCP packets, as behind a NIC with
 *      GRO), UDP only towards a port that offers USO (wireguard-go's udpGRO condition). Split
 *      segments never merge again: TCP is split only with gro off, UDP only without USO.
 *   5. Room: a split needs SPLIT_ARENA_ROOM bytes of arena and its segment count of output
 *      entries. When either runs out the call stops before that packet and returns how many
 *      inputs it consumed; the caller writes what it has, then calls again with a fresh arena.
 */
import { GsoCoalescer, GsoSplitter } from './gso.js';
import { VNET_GSO_ECN, VNET_GSO_NONE, VNET_GSO_TCPV4, VNET_GSO_TCPV6, VNET_GSO_TYPE, VNET_GSO_UDP_L4 } from './vnet.js';

/**
 * Segments one GSO packet may be split into: a 64 KiB TCP packet at MSS 256 (a lab MTU is
 * >= 1280, MSS >= 1220: about 54). More is refused (dropped), not split.
 */
export const MAX_SPLIT_SEGMENTS = 256;
/** Arena bytes a split needs at most: 256 segments of (12-byte header + up to 200 header bytes) + 64 KiB. */
export const SPLIT_ARENA_ROOM = 128 * 1024;
/** Packets below this size are never worth a coalescing pass (acks, pings, 64-byte UDP). */
export const GRO_MIN_LEN = 256;

export interface GsoPortWriterOptions {
  /** Coalesce (step 4). */
  gro: boolean;
  /** Largest IP packet of a split segment (the endpoints' MTU); <= 0: gso_size only. */
  mtu: number;
  /** GsoCoalescer's linux6644Safe (gso.ts rule 9). */
  linux6644Safe: boolean;
}

export class GsoPortWriter {
  /** Output of the last write(): m packets (virtio header first). */
  readonly outOff: Int32Array;
  readonly outLen: Int32Array;
  m = 0;
  /** Input indices (into the caller's off/len) the last write() refused: count them dropped. */
  readonly dropped: Int32Array;
  nDropped = 0;
  /** Arena bytes the last write() used, from its arenaOff. */
  arenaUsed = 0;
  /** Counters since the caller last took them (noun + event). */
  gsoPacketsSplit = 0;
  gsoSegmentsMade = 0;
  tcpPacketsBuilt = 0;
  udpPacketsBuilt = 0;
  packetsCoalesced = 0;

  private readonly cap: number;
  private readonly gro: boolean;
  private readonly mtu: number;
  private readonly coalescer: GsoCoalescer;
  private readonly splitter: GsoSplitter;
  private readonly lOff: Int32Array;
  private readonly lLen: Int32Array;

  constructor(maxOut: number, opts: GsoPortWriterOptions) {
    if (!Number.isInteger(maxOut) || maxOut < MAX_SPLIT_SEGMENTS || maxOut > 65536) {
      throw new RangeError(`GsoPortWriter: maxOut must be an integer in [${MAX_SPLIT_SEGMENTS}, 65536], got ${maxOut}`);
    }
    this.cap = maxOut;
    this.gro = opts.gro;
    this.mtu = opts.mtu;
    this.coalescer = new GsoCoalescer(maxOut, { linux6644Safe: opts.linux6644Safe });
    this.splitter = new GsoSplitter(MAX_SPLIT_SEGMENTS);
    this.outOff = new Int32Array(maxOut);
    this.outLen = new Int32Array(maxOut);
    this.dropped = new Int32Array(maxOut);
    this.lOff = new Int32Array(maxOut);
    this.lLen = new Int32Array(maxOut);
  }

  /**
   * Packets off[start .. start+n) (each at buf[off[i]], len[i] bytes with its virtio header)
   * for one port that offers TSO (tso) and/or USO (uso). Builds in buf[arenaOff ..
   * arenaOff + arenaLen), emits at most outRoom packets. Returns the inputs consumed (rule 5);
   * the output is outOff/outLen[0..m), the refused inputs dropped[0..nDropped).
   */
  write(
    buf: Uint8Array, off: Int32Array, len: Int32Array, start: number, n: number,
    tso: boolean, uso: boolean, arenaOff: number, arenaLen: number, outRoom: number,
  ): number {
    const limit = outRoom < this.cap ? outRoom : this.cap;
    const lOff = this.lOff;
    const lLen = this.lLen;
    const sp = this.splitter;
    let c = 0;
    let big = 0;
    let pos = arenaOff;
    const end = arenaOff + arenaLen;
    let i = start;
    this.nDropped = 0;
    for (; i < start + n; i++) {
      const o = off[i]!;
      const L = len[i]!;
      const t = buf[o + VNET_GSO_TYPE]! & ~VNET_GSO_ECN;
      let whole = true;
      if (t !== VNET_GSO_NONE) {
        // Rules 2 and 3.
        if (t === VNET_GSO_TCPV4 || t === VNET_GSO_TCPV6) whole = tso || this.gro;
        else whole = t === VNET_GSO_UDP_L4 && uso;
      }
      if (whole) {
        if (c >= limit) break; // rule 5
        lOff[c] = o;
        lLen[c] = L;
        if (L >= GRO_MIN_LEN) big++;
        c++;
        continue;
      }
      if (end - pos < SPLIT_ARENA_ROOM) break; // rule 5
      const at = (pos + 3) & ~3;
      const k = sp.split(buf, o, L, at, end - at, this.mtu);
      if (k < 0) {
        this.dropped[this.nDropped++] = i;
        continue;
      }
      if (c + k > limit) {
        if (c > 0) break; // rule 5: written into the arena, but not kept; done next call
        this.dropped[this.nDropped++] = i; // more segments than the caller can ever take
        continue;
      }
      for (let s = 0; s < k; s++) {
        lOff[c] = sp.outOff[s]!;
        lLen[c] = sp.outLen[s]!;
        if (lLen[c]! >= GRO_MIN_LEN) big++;
        c++;
      }
      pos = sp.outOff[k - 1]! + sp.outLen[k - 1]!;
      this.gsoPacketsSplit++;
      this.gsoSegmentsMade += k;
    }
    this.arenaUsed = pos - arenaOff;
    // Rule 4.
    if (this.gro && big >= 2) {
      const co = this.coalescer;
      const built = co.groupsBuilt;
      const udpBuilt = co.udpGroupsBuilt;
      const merged = co.packetsMerged;
      const at = (pos + 3) & ~3;
      const m = co.coalesce(buf, lOff, lLen, c, at, end > at ? end - at : 0, uso);
      let hi = pos;
      for (let j = 0; j < m; j++) {
        const oo = co.outOff[j]!;
        this.outOff[j] = oo;
        this.outLen[j] = co.outLen[j]!;
        if (oo >= at && oo + co.outLen[j]! > hi) hi = oo + co.outLen[j]!;
      }
      this.m = m;
      this.arenaUsed = hi - arenaOff;
      this.udpPacketsBuilt += co.udpGroupsBuilt - udpBuilt;
      this.tcpPacketsBuilt += co.groupsBuilt - built - (co.udpGroupsBuilt - udpBuilt);
      this.packetsCoalesced += co.packetsMerged - merged;
    } else {
      for (let j = 0; j < c; j++) {
        this.outOff[j] = lOff[j]!;
        this.outLen[j] = lLen[j]!;
      }
      this.m = c;
    }
    return i - start;
  }
}
