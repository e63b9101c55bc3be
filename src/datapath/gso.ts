/**
 * GSO splitting and GRO-style coalescing for TUN writes. Pure: no Node I/O; the caller owns
 * every buffer (packets and an arena inside the same Uint8Array), and nothing is allocated
 * per packet or per batch (one DataView is made when the caller switches to a new buffer).
 *
 * Every packet here starts with the 12-byte virtio-net header (src/datapath/vnet.ts).
 *
 * GsoCoalescer.coalesce() — the write side of a port that accepts GSO (IFF_VNET_HDR with
 * TSO/USO). Same-flow TCP segments (and, with allowUdp, UDP datagrams) of one batch become
 * one GSO packet. The rules, after wireguard-go's tun/offload_linux.go (tcpGRO, udpGRO,
 * tcpPacketsCanCoalesce, ipHeadersCanCoalesce, applyTCPCoalesceAccounting) and Linux's own
 * tcp_gro_receive()/inet_gro_receive(), numbered as the code below repeats them:
 *
 *   1. Candidates. Not itself GSO (gso_type NONE). IPv4 without options (IHL 5), not a
 *      fragment, valid header checksum, or IPv6 with TCP/UDP as the first next header. IP
 *      length exactly the packet length (no trailing bytes). TCP flags exactly ACK or
 *      ACK|PSH, at least one payload byte. UDP: the UDP length is the L4 length, at least one
 *      payload byte. Checksum: NEEDS_CSUM exactly at the L4 checksum field, or DATA_VALID,
 *      or a full checksum that verifies (checked only when a merge is about to happen).
 *   2. Same flow: same family, protocol, addresses and ports.
 *   3. Per-flow order is kept: a packet may only join the flow's most recent group, so any
 *      packet of the flow that does not join (a FIN, a SYN, a retransmission, a bad checksum,
 *      a GSO packet) closes that group. A later IP fragment (no ports: flow unknown) closes
 *      every group. (wireguard-go also prepends to, and appends into, older groups of a flow;
 *      we do not, so nothing ever overtakes a packet of its own flow.)
 *   4. IP fields that must match the group's first packet: IPv4 TOS, DF/reserved bits, TTL;
 *      IPv6 version/traffic class/flow label, hop limit.
 *   5. TCP fields that must match: header length and option bytes, ACK number and window
 *      (Linux GRO compares the window too; wireguard-go does not).
 *   6. TCP sequence: the packet's sequence number is the group's next expected one.
 *   7. Sizes: gso_size is the first packet's payload; every later packet is at most that
 *      long; a shorter one ends the group. PSH ends the group (it sits only on the last
 *      segment). The IP length of the result stays <= 65535. A UDP group holds at most
 *      UDP_MAX_SEGMENTS datagrams (Linux's USO limit).
 *   8. Output: a group of >= 2 packets is built in the arena (first packet whole, then the
 *      payloads) with virtio header NEEDS_CSUM, gso_type TCPV4/TCPV6/UDP_L4, hdr_len,
 *      gso_size, csum_start = IP header length, csum_offset 16/6; IPv4 total length and
 *      header checksum, IPv6 payload length, UDP length fixed; TCP flags those of the last
 *      segment; the L4 checksum field holds the folded pseudo-header sum over the whole L4
 *      length (what Linux's tcp_gso_segment / __udp_gso_segment adjust per segment). A
 *      packet that joins nothing passes by reference with its virtio header normalised; a
 *      group is never emitted as a one-segment GSO packet.
 *   9. Linux 6.6.44 (and the other stable kernels that took commit e269d79c7d35 "net:
 *      missing check virtio", until 89add40066f9 "net: drop bad gso csum_start and offset
 *      in virtio_net_hdr" removed it; tailscale/tailscale#13041, #13052) rejected with
 *      EINVAL any NEEDS_CSUM write with gso_size != 0 unless, with len the IP packet length
 *      and needed = csum_start + max(L4 minimum header 20/8, csum_offset + 2):
 *      len / gso_size >= 1, gso_size > needed, and len % gso_size is 0 or > needed.
 *      With linux6644Safe (default) no group is emitted in a shape that fails this: a short
 *      tail that trips it is sent on its own after the group, and a group that fails even
 *      with full segments only (TCP without options, UDP: len % gso_size is exactly the
 *      header length = needed) is not merged. Non-GSO packets get gso_size 0 (normalised).
 *   10. Arena full: the groups that no longer fit pass through unmerged.
 *
 * GsoSplitter.split() — the other direction: a GSO packet for a port without offload (or
 * for a smaller MTU) becomes segments in the arena, each with a zero virtio header and full
 * checksums, as Linux's tcp_gso_segment()/__udp_gso_segment() + inet_gso_segment() make
 * them: IPv4 ID + k, TCP sequence + k * mss, FIN and PSH only on the last segment, CWR only
 * on the first; UDP datagram boundaries are never changed (gso_size, whatever the MTU). A
 * non-GSO packet is copied, its NEEDS_CSUM checksum completed. IP fragmentation is not done
 * here.
 */
import { csumFold, csumPartial32, ipv4HeaderChecksum, pseudoHeaderSum4, pseudoHeaderSum6 } from './checksum.js';
import { PacketInfo } from './packet.js';
import { IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_CWR, TCP_FIN, TCP_PSH } from '../proto/ip.js';
import {
  IPV4_MIN_HLEN,
  IPV6_HLEN,
  V4_CSUM,
  V4_FRAG,
  V4_ID,
  V4_TOS,
  V4_TOTLEN,
  V4_TTL,
  V6_HOPLIMIT,
  V6_PLEN,
  parsePacket,
} from './parse.js';
import {
  TCP_CSUM_OFFSET,
  UDP_CSUM_OFFSET,
  VNET_CSUM_OFFSET,
  VNET_CSUM_START,
  VNET_F_DATA_VALID,
  VNET_F_NEEDS_CSUM,
  VNET_FLAGS,
  VNET_GSO_ECN,
  VNET_GSO_NONE,
  VNET_GSO_SIZE,
  VNET_GSO_TCPV4,
  VNET_GSO_TCPV6,
  VNET_GSO_TYPE,
  VNET_GSO_UDP_L4,
  VNET_HDR_LEN,
  vnetGet16,
  vnetNormalise,
  vnetWrite,
} from './vnet.js';

/** Largest IP packet (IPv4 total length / IPv6 header + payload length without jumbograms). */
export const GSO_MAX_IP_LEN = 65535;
/** Datagrams per USO packet: Linux's UDP_MAX_SEGMENTS was 64 before it became 128; we use 64. */
export const UDP_MAX_SEGMENTS = 64;

const TCP_MIN_HLEN = 20;
const UDP_HLEN = 8;
/** TCP header fields (offsets from the TCP header). */
const TCP_SEQ = 4;
const TCP_ACKNO = 8;
const TCP_FLAGS = 13;
const TCP_WINDOW = 14;

/** Packet classes in the coalescer. */
const K_PASS = 0; // not TCP/UDP or unparsable: passes through, no flow
const K_FLOW = 1; // TCP/UDP of a known flow that cannot merge (closes the flow's group)
const K_TCP = 2;
const K_UDP = 3;

/** Flow key words per packet: family|proto<<8, ports, src0..3, dst0..3. */
const KEY_WORDS = 10;

/**
 * l4Checksum4/6 of checksum.ts with the payload summed 32 bits at a time (csumPartial32):
 * 0 for a packet whose checksum verifies; the value to store when the field is zero.
 */
function l4Checksum(buf: Uint8Array, dv: DataView, l3: number, l4: number, l4Len: number, proto: number, v4: boolean): number {
  const seed = v4 ? pseudoHeaderSum4(buf, l3, l4Len, proto) : pseudoHeaderSum6(buf, l3, l4Len, proto);
  return ~csumFold(csumPartial32(dv, l4, l4Len, seed)) & 0xffff;
}

/**
 * Whether Linux 6.6.44's virtio_net_hdr_to_skb() (commit e269d79c7d35, see rule 9) rejects
 * a NEEDS_CSUM write with this shape. ipLen: IP packet length; csumStart: L4 header offset;
 * l4Min: 20 (TCP) or 8 (UDP); csumOffset: 16 or 6.
 */
export function linux6644RejectsGso(ipLen: number, gsoSize: number, csumStart: number, l4Min: number, csumOffset: number): boolean {
  if (gsoSize === 0) return false; // the check ran only when gso_size was set
  const needed = csumStart + (l4Min > csumOffset + 2 ? l4Min : csumOffset + 2);
  const segs = Math.floor(ipLen / gsoSize);
  const rem = ipLen - segs * gsoSize;
  return !(segs >= 1 && gsoSize > needed && (rem > needed || rem === 0));
}

export interface GsoCoalescerOptions {
  /**
   * Verify the full L4 checksum of a segment (one without NEEDS_CSUM or DATA_VALID) before
   * merging it, as Linux GRO and wireguard-go do: merging replaces the checksums, so a
   * corrupt segment would otherwise be delivered as good. Default true.
   */
  verifyChecksums?: boolean;
  /** Rule 9: never emit a shape Linux 6.6.44's check rejects. Default true. */
  linux6644Safe?: boolean;
}

/**
 * Output of one call: m packets, packet j at buf[outOff[j] .. outOff[j]+outLen[j]) including
 * its 12-byte virtio header.
 */
export class GsoCoalescer {
  readonly outOff: Int32Array;
  readonly outLen: Int32Array;
  /** Counters since construction (noun + event). packetsMerged: input packets inside built GSO packets. */
  packetsMerged = 0;
  groupsBuilt = 0;
  /** Of groupsBuilt, the UDP (USO) ones. */
  udpGroupsBuilt = 0;
  /** Groups (or tails) emitted unmerged because of rule 9 or a full arena. */
  groupsSplitForLinux6644 = 0;
  groupsUnmergedArenaFull = 0;
  checksumsBad = 0;

  private readonly cap: number;
  private readonly verify: boolean;
  private readonly safe6644: boolean;
  private readonly pi: PacketInfo;
  private dvBuf: Uint8Array;
  private dv: DataView;
  // Per input packet.
  private readonly pOff: Int32Array; // offset of the packet (its virtio header)
  private readonly kind: Uint8Array;
  private readonly fam: Uint8Array;
  private readonly hdr: Int32Array; // IP header + L4 header bytes
  private readonly pay: Int32Array; // L4 payload bytes
  private readonly csum: Int8Array; // 0 unknown, 1 good, -1 bad
  private readonly key: Int32Array;
  private readonly head: Int32Array; // group (first packet) of the packet, -1 = no flow
  private readonly next: Int32Array; // next packet of its group, -1 = last
  // Per group, indexed by its first packet.
  private readonly gCount: Int32Array;
  private readonly gPay: Int32Array;
  private readonly gSeg: Int32Array;
  private readonly gTail: Int32Array;
  private readonly gOpen: Uint8Array;
  private readonly gSeqNext: Uint32Array;
  // Flow table: flow -> most recent packet of the flow in this call (open addressing).
  private readonly tStamp: Int32Array;
  private readonly tIdx: Int32Array;
  private readonly tMask: number;
  private stamp: number;

  constructor(maxPackets: number, opts: GsoCoalescerOptions = {}) {
    if (!Number.isInteger(maxPackets) || maxPackets < 1 || maxPackets > 65536) {
      throw new RangeError(`GsoCoalescer: maxPackets must be an integer in [1, 65536], got ${maxPackets}`);
    }
    this.cap = maxPackets;
    this.verify = opts.verifyChecksums ?? true;
    this.safe6644 = opts.linux6644Safe ?? true;
    this.outOff = new Int32Array(maxPackets);
    this.outLen = new Int32Array(maxPackets);
    this.pi = new PacketInfo();
    this.dvBuf = new Uint8Array(0);
    this.dv = new DataView(this.dvBuf.buffer);
    this.pOff = new Int32Array(maxPackets);
    this.kind = new Uint8Array(maxPackets);
    this.fam = new Uint8Array(maxPackets);
    this.hdr = new Int32Array(maxPackets);
    this.pay = new Int32Array(maxPackets);
    this.csum = new Int8Array(maxPackets);
    this.key = new Int32Array(maxPackets * KEY_WORDS);
    this.head = new Int32Array(maxPackets);
    this.next = new Int32Array(maxPackets);
    this.gCount = new Int32Array(maxPackets);
    this.gPay = new Int32Array(maxPackets);
    this.gSeg = new Int32Array(maxPackets);
    this.gTail = new Int32Array(maxPackets);
    this.gOpen = new Uint8Array(maxPackets);
    this.gSeqNext = new Uint32Array(maxPackets);
    let t = 16;
    while (t < maxPackets * 2) t *= 2;
    this.tStamp = new Int32Array(t);
    this.tIdx = new Int32Array(t);
    this.tMask = t - 1;
    this.stamp = 0;
  }

  /**
   * Coalesces the n packets of one output port (packet i at buf[off[i]], length len[i], each
   * starting with its virtio header). Merged packets are built in buf[arenaOff ..
   * arenaOff + arenaLen), which must not overlap the packets. Returns m (outOff/outLen).
   */
  coalesce(
    buf: Uint8Array, off: Int32Array, len: Int32Array, n: number, arenaOff: number, arenaLen: number, allowUdp: boolean,
  ): number {
    if (n > this.cap) throw new RangeError(`GsoCoalescer.coalesce: n ${n} exceeds maxPackets ${this.cap}`);
    if (buf !== this.dvBuf) {
      this.dvBuf = buf;
      this.dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    }
    this.newGeneration();
    for (let i = 0; i < n; i++) this.admit(buf, off[i]!, len[i]!, i, allowUdp);
    return this.emit(buf, off, len, n, arenaOff, arenaLen);
  }

  /** Pass 1 for packet i: classify it, then join the flow's open group or start one. */
  private admit(buf: Uint8Array, o: number, L: number, i: number, allowUdp: boolean): void {
    this.head[i] = -1;
    this.next[i] = -1;
    this.kind[i] = K_PASS;
    this.pOff[i] = o;
    if (L < VNET_HDR_LEN + IPV4_MIN_HLEN || o < 0 || o + L > buf.length) return;
    const l3 = o + VNET_HDR_LEN;
    const pi = this.pi;
    if (parsePacket(buf, this.dv, l3, L - VNET_HDR_LEN, pi) < 0) return;
    if (pi.l4Off < 0) {
      // Rule 3: a later fragment has no ports; it may belong to any flow.
      if (pi.isFragment !== 0) this.newGeneration();
      return;
    }
    const proto = pi.proto;
    if (proto !== IPPROTO_TCP && !(proto === IPPROTO_UDP && allowUdp)) return;
    this.classify(buf, o, L, i, proto);
    const k = i * KEY_WORDS;
    const key = this.key;
    key[k] = pi.family | (proto << 8);
    key[k + 1] = (pi.sport << 16) | pi.dport;
    key[k + 2] = pi.src0; key[k + 3] = pi.src1; key[k + 4] = pi.src2; key[k + 5] = pi.src3;
    key[k + 6] = pi.dst0; key[k + 7] = pi.dst1; key[k + 8] = pi.dst2; key[k + 9] = pi.dst3;

    // Find the flow's most recent packet (rule 2) in the table.
    let h = 0x811c9dc5;
    for (let w = 0; w < KEY_WORDS; w++) h = Math.imul(h ^ key[k + w]!, 0x01000193);
    h ^= h >>> 16;
    h = Math.imul(h, 0x7feb352d);
    h ^= h >>> 15;
    let s = h & this.tMask;
    let latest = -1;
    while (this.tStamp[s] === this.stamp) {
      const j = this.tIdx[s]!;
      if (this.sameKey(k, j * KEY_WORDS)) {
        latest = j;
        break;
      }
      s = (s + 1) & this.tMask;
    }
    this.tStamp[s] = this.stamp;
    this.tIdx[s] = i;

    const kd = this.kind[i]!;
    if (latest >= 0 && kd !== K_FLOW) {
      const g = this.head[latest]!;
      // Rule 3: only the flow's most recent group, and only while it is open.
      if (this.gOpen[g] === 1 && this.kind[g] === kd && this.canAppend(buf, g, i, o, kd)) {
        this.append(buf, g, i, o, kd);
        return;
      }
    }
    // Start a group of one.
    this.head[i] = i;
    this.gCount[i] = 1;
    this.gPay[i] = this.pay[i]!;
    this.gSeg[i] = this.pay[i]!;
    this.gTail[i] = i;
    let open = kd === K_TCP || kd === K_UDP ? 1 : 0;
    if (kd === K_TCP) {
      const l4 = l3 + (this.fam[i] === 4 ? IPV4_MIN_HLEN : IPV6_HLEN);
      this.gSeqNext[i] = (this.dv.getUint32(l4 + TCP_SEQ) + this.pay[i]!) >>> 0;
      if ((buf[l4 + TCP_FLAGS]! & TCP_PSH) !== 0) open = 0; // rule 7: PSH ends a group
    }
    if (this.csum[i] === -1) open = 0;
    this.gOpen[i] = open;
  }

  /** Rule 1: sets kind (K_TCP / K_UDP when a candidate, else K_FLOW), fam, hdr, pay, csum. */
  private classify(buf: Uint8Array, o: number, L: number, i: number, proto: number): void {
    const pi = this.pi;
    const dv = this.dv;
    const l3 = o + VNET_HDR_LEN;
    const ipLen = L - VNET_HDR_LEN;
    this.kind[i] = K_FLOW;
    this.fam[i] = pi.family;
    this.csum[i] = 0;
    this.hdr[i] = 0;
    this.pay[i] = 0;
    if (buf[o + VNET_GSO_TYPE] !== VNET_GSO_NONE) return;
    if (pi.totalLen !== ipLen || pi.isFragment !== 0) return;
    const iph = pi.family === 4 ? IPV4_MIN_HLEN : IPV6_HLEN;
    if (pi.l3HdrLen !== iph) return; // IPv4 options / IPv6 extension headers
    if (pi.family === 4 && ipv4HeaderChecksum(buf, l3, IPV4_MIN_HLEN) !== dv.getUint16(l3 + V4_CSUM)) return;
    const l4 = l3 + iph;
    let l4h: number;
    let csumOff: number;
    if (proto === IPPROTO_TCP) {
      l4h = (buf[l4 + 12]! >> 4) << 2;
      const fl = buf[l4 + TCP_FLAGS]!;
      if (fl !== TCP_ACK && fl !== (TCP_ACK | TCP_PSH)) return;
      csumOff = TCP_CSUM_OFFSET;
    } else {
      l4h = UDP_HLEN;
      if (dv.getUint16(l4 + 4) !== ipLen - iph) return;
      csumOff = UDP_CSUM_OFFSET;
    }
    const payload = ipLen - iph - l4h;
    if (payload < 1) return;
    const flags = buf[o + VNET_FLAGS]!;
    if ((flags & VNET_F_NEEDS_CSUM) !== 0) {
      if (vnetGet16(buf, o + VNET_CSUM_START) !== iph || vnetGet16(buf, o + VNET_CSUM_OFFSET) !== csumOff) return;
      this.csum[i] = 1;
    } else if ((flags & VNET_F_DATA_VALID) !== 0 || !this.verify) {
      this.csum[i] = 1;
    }
    this.hdr[i] = iph + l4h;
    this.pay[i] = payload;
    this.kind[i] = proto === IPPROTO_TCP ? K_TCP : K_UDP;
  }

  private sameKey(a: number, b: number): boolean {
    const key = this.key;
    for (let w = 0; w < KEY_WORDS; w++) if (key[a + w] !== key[b + w]) return false;
    return true;
  }

  /** Rules 4-7 (and the lazy checksum check of rule 1) for packet i joining group g. */
  private canAppend(buf: Uint8Array, g: number, i: number, o: number, kd: number): boolean {
    const go = this.pOff[g]!;
    const gl3 = go + VNET_HDR_LEN;
    const l3 = o + VNET_HDR_LEN;
    const dv = this.dv;
    const p = this.pay[i]!;
    const seg = this.gSeg[g]!;
    // Rule 7: sizes.
    if (p > seg) return false;
    if (this.hdr[g]! + this.gPay[g]! + p > GSO_MAX_IP_LEN) return false;
    if (kd === K_UDP && this.gCount[g]! >= UDP_MAX_SEGMENTS) return false;
    // Rule 4: IP fields.
    let iph: number;
    if (this.fam[g] === 4) {
      iph = IPV4_MIN_HLEN;
      if (buf[l3 + V4_TOS] !== buf[gl3 + V4_TOS] || buf[l3 + V4_TTL] !== buf[gl3 + V4_TTL]) return false;
      if ((buf[l3 + V4_FRAG]! >> 5) !== (buf[gl3 + V4_FRAG]! >> 5)) return false;
    } else {
      iph = IPV6_HLEN;
      if (dv.getUint32(l3) !== dv.getUint32(gl3) || buf[l3 + V6_HOPLIMIT] !== buf[gl3 + V6_HOPLIMIT]) return false;
    }
    if (kd === K_TCP) {
      // Rule 5: header length, ACK, window, options; rule 6: sequence.
      const hl = this.hdr[i]!;
      if (hl !== this.hdr[g]) return false;
      const l4 = l3 + iph;
      const gl4 = gl3 + iph;
      if (dv.getUint32(l4 + TCP_ACKNO) !== dv.getUint32(gl4 + TCP_ACKNO)) return false;
      if (dv.getUint16(l4 + TCP_WINDOW) !== dv.getUint16(gl4 + TCP_WINDOW)) return false;
      for (let b = TCP_MIN_HLEN; b < hl - iph; b++) if (buf[l4 + b] !== buf[gl4 + b]) return false;
      if (dv.getUint32(l4 + TCP_SEQ) !== this.gSeqNext[g]) return false;
    }
    // Rule 1, checked last because it reads the payloads: the group's first packet, then this one.
    if (this.csum[g] === 0) {
      this.csum[g] = this.checksumOk(buf, g, gl3, iph) ? 1 : -1;
      if (this.csum[g] === -1) {
        this.gOpen[g] = 0;
        this.checksumsBad++;
        return false;
      }
    }
    if (this.csum[i] === 0) {
      this.csum[i] = this.checksumOk(buf, i, l3, iph) ? 1 : -1;
      if (this.csum[i] === -1) this.checksumsBad++;
    }
    return this.csum[i] === 1;
  }

  private checksumOk(buf: Uint8Array, i: number, l3: number, iph: number): boolean {
    const l4 = l3 + iph;
    const l4Len = this.hdr[i]! - iph + this.pay[i]!;
    const v4 = this.fam[i] === 4;
    if (this.kind[i] === K_UDP) {
      const field = this.dv.getUint16(l4 + UDP_CSUM_OFFSET);
      if (field === 0) return v4; // IPv4: no checksum; IPv6: a zero checksum is invalid
      return l4Checksum(buf, this.dv, l3, l4, l4Len, IPPROTO_UDP, v4) === 0;
    }
    return l4Checksum(buf, this.dv, l3, l4, l4Len, IPPROTO_TCP, v4) === 0;
  }

  private append(buf: Uint8Array, g: number, i: number, o: number, kd: number): void {
    const p = this.pay[i]!;
    this.head[i] = g;
    this.next[this.gTail[g]!] = i;
    this.gTail[g] = i;
    this.gCount[g]!++;
    this.gPay[g]! += p;
    this.gSeqNext[g] = (this.gSeqNext[g]! + p) >>> 0;
    if (p < this.gSeg[g]!) this.gOpen[g] = 0; // rule 7: nothing after a short segment
    if (kd === K_TCP) {
      const l4 = o + VNET_HDR_LEN + (this.fam[i] === 4 ? IPV4_MIN_HLEN : IPV6_HLEN);
      if ((buf[l4 + TCP_FLAGS]! & TCP_PSH) !== 0) this.gOpen[g] = 0; // rule 7: PSH is last
    }
  }

  /** Pass 2: the output list, in the order of each group's first packet (rules 8-10). */
  private emit(buf: Uint8Array, off: Int32Array, len: Int32Array, n: number, arenaOff: number, arenaLen: number): number {
    let m = 0;
    let pos = arenaOff;
    const arenaEnd = arenaOff + arenaLen;
    for (let i = 0; i < n; i++) {
      const g = this.head[i]!;
      if (g !== i) {
        if (g === -1) m = this.passOn(buf, off[i]!, len[i]!, m);
        continue; // a later member: emitted with its group
      }
      let count = this.gCount[i]!;
      let total = this.gPay[i]!;
      if (count >= 2 && this.safe6644 && this.rejected6644(i, total)) {
        // Rule 9: drop a short tail if that fixes it, else do not merge.
        const tailPay = this.pay[this.gTail[i]!]!;
        if (count > 2 && tailPay < this.gSeg[i]! && !this.rejected6644(i, total - tailPay)) {
          count--;
          total -= tailPay;
        } else {
          count = 1;
        }
        this.groupsSplitForLinux6644++;
      }
      let j = i;
      if (count >= 2) {
        const start = (pos + 3) & ~3;
        const need = VNET_HDR_LEN + this.hdr[i]! + total;
        if (start + need <= arenaEnd) {
          j = this.build(buf, off, i, count, total, start);
          this.outOff[m] = start;
          this.outLen[m] = need;
          m++;
          pos = start + need;
          this.groupsBuilt++;
          this.packetsMerged += count;
        } else {
          this.groupsUnmergedArenaFull++; // rule 10
        }
      }
      // Members not in a built packet pass on, in order.
      while (j !== -1) {
        m = this.passOn(buf, off[j]!, len[j]!, m);
        j = this.next[j]!;
      }
    }
    return m;
  }

  private rejected6644(g: number, total: number): boolean {
    const iph = this.fam[g] === 4 ? IPV4_MIN_HLEN : IPV6_HLEN;
    const tcp = this.kind[g] === K_TCP;
    return linux6644RejectsGso(this.hdr[g]! + total, this.gSeg[g]!, iph, tcp ? TCP_MIN_HLEN : UDP_HLEN, tcp ? TCP_CSUM_OFFSET : UDP_CSUM_OFFSET);
  }

  private passOn(buf: Uint8Array, o: number, L: number, m: number): number {
    if (L >= VNET_HDR_LEN && o >= 0 && o + VNET_HDR_LEN <= buf.length) vnetNormalise(buf, o);
    this.outOff[m] = o;
    this.outLen[m] = L;
    return m + 1;
  }

  /**
   * Rule 8: builds the first `count` packets of group g at `at`. Returns the first member
   * not included (-1 when all are).
   */
  private build(buf: Uint8Array, off: Int32Array, g: number, count: number, total: number, at: number): number {
    const dv = this.dv;
    const go = off[g]!;
    const hl = this.hdr[g]!;
    buf.copyWithin(at, go, go + VNET_HDR_LEN + hl + this.pay[g]!);
    let w = at + VNET_HDR_LEN + hl + this.pay[g]!;
    let last = g;
    let j = this.next[g]!;
    for (let k = 1; k < count; k++) {
      const src = off[j]! + VNET_HDR_LEN + this.hdr[j]!;
      buf.copyWithin(w, src, src + this.pay[j]!);
      w += this.pay[j]!;
      last = j;
      j = this.next[j]!;
    }
    const l3 = at + VNET_HDR_LEN;
    const ipLen = hl + total;
    const v4 = this.fam[g] === 4;
    const iph = v4 ? IPV4_MIN_HLEN : IPV6_HLEN;
    const l4 = l3 + iph;
    const l4Len = ipLen - iph;
    if (v4) {
      dv.setUint16(l3 + V4_TOTLEN, ipLen);
      dv.setUint16(l3 + V4_CSUM, ipv4HeaderChecksum(buf, l3, IPV4_MIN_HLEN));
    } else {
      dv.setUint16(l3 + V6_PLEN, l4Len);
    }
    const tcp = this.kind[g] === K_TCP;
    const proto = tcp ? IPPROTO_TCP : IPPROTO_UDP;
    const csumOff = tcp ? TCP_CSUM_OFFSET : UDP_CSUM_OFFSET;
    if (tcp) buf[l4 + TCP_FLAGS] = buf[off[last]! + VNET_HDR_LEN + iph + TCP_FLAGS]!;
    else dv.setUint16(l4 + 4, l4Len);
    const seed = v4 ? pseudoHeaderSum4(buf, l3, l4Len, proto) : pseudoHeaderSum6(buf, l3, l4Len, proto);
    dv.setUint16(l4 + csumOff, csumFold(seed));
    const gsoType = tcp ? (v4 ? VNET_GSO_TCPV4 : VNET_GSO_TCPV6) : VNET_GSO_UDP_L4;
    if (!tcp) this.udpGroupsBuilt++;
    vnetWrite(buf, at, VNET_F_NEEDS_CSUM, gsoType, hl, this.gSeg[g]!, iph, csumOff);
    return j;
  }

  /** A new flow-table generation: every flow is forgotten (start of a call; rule 3 barrier). */
  private newGeneration(): void {
    if (this.stamp >= 0x7ffffffe) {
      this.tStamp.fill(0);
      this.stamp = 0;
    }
    this.stamp++;
  }
}

/**
 * Splits a GSO packet into segments that a port without offload (or with a smaller MTU)
 * accepts. See the file comment.
 */
export class GsoSplitter {
  readonly outOff: Int32Array;
  readonly outLen: Int32Array;
  private readonly cap: number;
  private readonly pi: PacketInfo;
  private dvBuf: Uint8Array;
  private dv: DataView;

  constructor(maxSegments: number) {
    if (!Number.isInteger(maxSegments) || maxSegments < 1 || maxSegments > 65536) {
      throw new RangeError(`GsoSplitter: maxSegments must be an integer in [1, 65536], got ${maxSegments}`);
    }
    this.cap = maxSegments;
    this.outOff = new Int32Array(maxSegments);
    this.outLen = new Int32Array(maxSegments);
    this.pi = new PacketInfo();
    this.dvBuf = new Uint8Array(0);
    this.dv = new DataView(this.dvBuf.buffer);
  }

  /**
   * Packet at buf[off .. off+len) (virtio header first) -> segments in buf[arenaOff ..
   * arenaOff+arenaLen), each with a zero virtio header and complete checksums. mtu <= 0
   * means no limit (segments of gso_size). Returns the segment count (outOff/outLen), or -1
   * with nothing written when the packet is malformed or the arena / maxSegments too small.
   * headroom: bytes left free in front of every segment (outOff[k] - headroom is its own),
   * so a caller can write a longer header over the virtio one in place: the underlay puts
   * VXLAN + inner Ethernet (22 bytes) there, and its frames are then back to back.
   */
  split(buf: Uint8Array, off: number, len: number, arenaOff: number, arenaLen: number, mtu: number, headroom = 0): number {
    if (buf !== this.dvBuf) {
      this.dvBuf = buf;
      this.dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    }
    const dv = this.dv;
    if (len < VNET_HDR_LEN + IPV4_MIN_HLEN || off < 0 || off + len > buf.length) return -1;
    if (arenaOff < 0 || arenaOff + arenaLen > buf.length) return -1;
    const l3 = off + VNET_HDR_LEN;
    const ipLen = len - VNET_HDR_LEN;
    const pi = this.pi;
    if (parsePacket(buf, dv, l3, ipLen, pi) < 0 || pi.totalLen !== ipLen) return -1;
    const flags = buf[off + VNET_FLAGS]!;
    const gsoType = buf[off + VNET_GSO_TYPE]! & ~VNET_GSO_ECN;

    if (headroom < 0 || headroom > arenaLen) return -1;
    if (gsoType === VNET_GSO_NONE) return this.copyOne(buf, off, len, flags, arenaOff + headroom, arenaLen - headroom);

    const v4 = pi.family === 4;
    const tcp = gsoType === VNET_GSO_TCPV4 || gsoType === VNET_GSO_TCPV6;
    if (tcp) {
      if (pi.proto !== IPPROTO_TCP || (gsoType === VNET_GSO_TCPV4) !== v4) return -1;
    } else if (gsoType !== VNET_GSO_UDP_L4 || pi.proto !== IPPROTO_UDP) {
      return -1;
    }
    if (pi.isFragment !== 0 || pi.l4Off < 0) return -1;
    const l4Rel = pi.l4Off - l3;
    const l4h = tcp ? (buf[pi.l4Off + 12]! >> 4) << 2 : UDP_HLEN;
    const hdrs = l4Rel + l4h;
    const payload = ipLen - hdrs;
    if (payload < 0) return -1;
    const gso = vnetGet16(buf, off + VNET_GSO_SIZE);
    if (gso === 0) return -1;
    let seg = gso;
    if (tcp && mtu > 0 && hdrs + seg > mtu) seg = mtu - hdrs;
    if (seg <= 0) return -1;
    const nseg = payload === 0 ? 1 : Math.ceil(payload / seg);
    if (nseg > this.cap) return -1;
    if (nseg * (headroom + VNET_HDR_LEN + hdrs) + payload > arenaLen) return -1;

    const seq0 = tcp ? dv.getUint32(pi.l4Off + TCP_SEQ) : 0;
    const flags0 = tcp ? buf[pi.l4Off + TCP_FLAGS]! : 0;
    const id0 = v4 ? dv.getUint16(l3 + V4_ID) : 0;
    const proto = tcp ? IPPROTO_TCP : IPPROTO_UDP;
    let pos = arenaOff;
    for (let k = 0; k < nseg; k++) {
      pos += headroom;
      const from = k * seg;
      const segPay = payload - from < seg ? payload - from : seg;
      buf.fill(0, pos, pos + VNET_HDR_LEN);
      const s3 = pos + VNET_HDR_LEN;
      buf.copyWithin(s3, l3, l3 + hdrs);
      buf.copyWithin(s3 + hdrs, l3 + hdrs + from, l3 + hdrs + from + segPay);
      const segIp = hdrs + segPay;
      const s4 = s3 + l4Rel;
      const l4Len = segIp - l4Rel;
      if (v4) {
        dv.setUint16(s3 + V4_TOTLEN, segIp);
        dv.setUint16(s3 + V4_ID, (id0 + k) & 0xffff);
        dv.setUint16(s3 + V4_CSUM, ipv4HeaderChecksum(buf, s3, pi.l3HdrLen));
      } else {
        dv.setUint16(s3 + V6_PLEN, segIp - IPV6_HLEN);
      }
      let c: number;
      if (tcp) {
        dv.setUint32(s4 + TCP_SEQ, (seq0 + from) >>> 0);
        let f = flags0;
        if (k < nseg - 1) f &= ~(TCP_FIN | TCP_PSH);
        if (k > 0) f &= ~TCP_CWR;
        buf[s4 + TCP_FLAGS] = f;
        dv.setUint16(s4 + TCP_CSUM_OFFSET, 0);
        c = l4Checksum(buf, dv, s3, s4, l4Len, proto, v4);
        dv.setUint16(s4 + TCP_CSUM_OFFSET, c);
      } else {
        dv.setUint16(s4 + 4, l4Len);
        dv.setUint16(s4 + UDP_CSUM_OFFSET, 0);
        c = l4Checksum(buf, dv, s3, s4, l4Len, proto, v4);
        dv.setUint16(s4 + UDP_CSUM_OFFSET, c === 0 ? 0xffff : c);
      }
      this.outOff[k] = pos;
      this.outLen[k] = VNET_HDR_LEN + segIp;
      pos += VNET_HDR_LEN + segIp;
    }
    return nseg;
  }

  /** A non-GSO packet: copied with a zero header, its NEEDS_CSUM checksum completed. */
  private copyOne(buf: Uint8Array, off: number, len: number, flags: number, arenaOff: number, arenaLen: number): number {
    if (len > arenaLen) return -1;
    const ipLen = len - VNET_HDR_LEN;
    let cs = -1;
    let co = -1;
    if ((flags & VNET_F_NEEDS_CSUM) !== 0) {
      cs = vnetGet16(buf, off + VNET_CSUM_START);
      co = vnetGet16(buf, off + VNET_CSUM_OFFSET);
      if (cs < IPV4_MIN_HLEN || cs + co + 2 > ipLen) return -1;
    }
    buf.copyWithin(arenaOff + VNET_HDR_LEN, off + VNET_HDR_LEN, off + len);
    buf.fill(0, arenaOff, arenaOff + VNET_HDR_LEN);
    if (cs >= 0) {
      // The field holds the pseudo-header sum; the sum from csum_start to the end completes it
      // (what the kernel's skb_checksum_help does).
      const a3 = arenaOff + VNET_HDR_LEN;
      let c = ~csumFold(csumPartial32(this.dv, a3 + cs, ipLen - cs, 0)) & 0xffff;
      if (c === 0 && co === UDP_CSUM_OFFSET && this.pi.proto === IPPROTO_UDP) c = 0xffff;
      this.dv.setUint16(a3 + cs + co, c);
    }
    this.outOff[0] = arenaOff;
    this.outLen[0] = len;
    return 1;
  }
}
