/**
 * Packet parser: IPv4 / IPv6 (with extension headers) and the first bytes of the L4 header,
 * written into a reused PacketInfo. Returns 0 or a negative DROP_* code; never throws and
 * never allocates.
 *
 * The packet is the window [off, off + len) of `buf`. `dv` is a DataView over exactly the
 * same bytes as `buf` (same buffer, same byteOffset), so an offset means the same in both.
 * Every read is preceded by a length check against the window, then done without re-checks
 * (validate once, read many).
 *
 * Steps:
 *   1. Version nibble: 4 or 6, else DROP_UNKNOWN_L3.
 *   2. L3 header: lengths checked against the window (DROP_INVALID), IPv4 options skipped,
 *      IPv6 extension headers walked (DROP_INVALID_EXTHDR). Fragment fields recorded.
 *   3. A non-first fragment stops here: it has no L4 header (l4Off = -1, ports 0).
 *   4. L4: TCP / UDP / SCTP ports, TCP flags, ICMP type/code/echo id and the offset of the
 *      packet quoted in an ICMP error. A truncated L4 header is DROP_CT_INVALID_HDR, as in
 *      Cilium where the conntrack lookup is what reads the ports. Any other protocol parses
 *      with ports 0; later stages decide about it.
 *
 * parseInner() is the same for the header quoted inside an ICMP error, which is truncated
 * by design (RFC 792 quotes the IP header plus 8 bytes): its stated length may exceed the
 * bytes present and only the first 8 bytes of its L4 header (the ports) are required.
 */
import { type PacketInfo } from './packet.js';
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP } from '../proto/ip.js';
import { DROP_CT_INVALID_HDR, DROP_INVALID, DROP_INVALID_EXTHDR, DROP_UNKNOWN_L3 } from './drop.js';

/*
 * IPv4 header (RFC 791), offsets from the start of the header:
 *   0      1      2      3
 *  +------+------+-------------+
 *  |Ver|IHL| TOS |  Total Length |  0
 *  | Identification |Flg| FragOff |  4
 *  | TTL  | Proto |   Checksum   |  8
 *  |        Source Address       | 12
 *  |     Destination Address     | 16
 *  |  Options (IHL > 5) ...      | 20
 */
export const IPV4_MIN_HLEN = 20;
export const V4_TOS = 1;
export const V4_TOTLEN = 2;
export const V4_ID = 4;
export const V4_FRAG = 6;
export const V4_TTL = 8;
const V4_PROTO = 9;
export const V4_CSUM = 10;
const V4_SRC = 12;
const V4_DST = 16;
const V4_MF = 0x2000;
const V4_OFFMASK = 0x1fff;

/*
 * IPv6 header (RFC 8200):
 *  0: Ver(4) TC(8) Flow(20)   4: Payload Length(16) Next Header(8) Hop Limit(8)
 *  8: Source (16 bytes)      24: Destination (16 bytes)         40: extension headers / L4
 */
export const IPV6_HLEN = 40;
export const V6_PLEN = 4;
const V6_NEXT = 6;
export const V6_HOPLIMIT = 7;
const V6_SRC = 8;
const V6_DST = 24;

/** IPv6 extension header numbers this parser walks through. */
export const NEXTHDR_HOP = 0;
export const NEXTHDR_ROUTING = 43;
export const NEXTHDR_FRAGMENT = 44;
export const NEXTHDR_AUTH = 51;
export const NEXTHDR_NONE = 59;
export const NEXTHDR_DEST = 60;
/** More extension headers than this is DROP_INVALID_EXTHDR (bounds the walk on hostile input). */
export const IPV6_MAX_EXTHDRS = 8;

/** Minimum L4 bytes needed for an outer header (TCP 20, UDP 8, SCTP common header 12, ICMP 8). */
const TCP_MIN = 20;
const UDP_LEN = 8;
const SCTP_COMMON = 12;
const ICMP_HDR = 8;
/** The quoted packet in an ICMP error is only required to carry the ports. */
const INNER_L4_MIN = 8;

/** ICMPv4 types. */
export const ICMP_ECHOREPLY = 0;
export const ICMP_DEST_UNREACH = 3;
export const ICMP_SOURCE_QUENCH = 4;
export const ICMP_REDIRECT = 5;
export const ICMP_ECHO = 8;
export const ICMP_TIME_EXCEEDED = 11;
export const ICMP_PARAMETERPROB = 12;
/** ICMPv6 types. */
export const ICMPV6_DEST_UNREACH = 1;
export const ICMPV6_PKT_TOOBIG = 2;
export const ICMPV6_TIME_EXCEED = 3;
export const ICMPV6_PARAMPROB = 4;
export const ICMPV6_ECHO_REQUEST = 128;
export const ICMPV6_ECHO_REPLY = 129;

/** Parse the packet in buf[off, off+len) into `out`. Returns 0 or a negative DROP_* code. */
export function parsePacket(buf: Uint8Array, dv: DataView, off: number, len: number, out: PacketInfo): number {
  out.reset();
  if (len < 1) return DROP_UNKNOWN_L3;
  const ver = buf[off]! >> 4;
  if (ver === 4) return parseIpv4(buf, dv, off, len, out, false);
  if (ver === 6) return parseIpv6(buf, dv, off, len, out, false);
  return DROP_UNKNOWN_L3;
}

/**
 * Parse the IP packet quoted in an ICMP error (buf[off, off+len), usually
 * info.icmpInnerOff .. info.l3Off + info.totalLen). Tolerates a stated length larger than
 * the bytes present (out.totalLen is then clipped to `len`) and needs only 8 bytes of L4.
 */
export function parseInner(buf: Uint8Array, dv: DataView, off: number, len: number, out: PacketInfo): number {
  out.reset();
  if (len < 1) return DROP_UNKNOWN_L3;
  const ver = buf[off]! >> 4;
  if (ver === 4) return parseIpv4(buf, dv, off, len, out, true);
  if (ver === 6) return parseIpv6(buf, dv, off, len, out, true);
  return DROP_UNKNOWN_L3;
}

function parseIpv4(
  buf: Uint8Array, dv: DataView, off: number, len: number, out: PacketInfo, inner: boolean,
): number {
  if (len < IPV4_MIN_HLEN) return DROP_INVALID;
  const hlen = (buf[off]! & 0x0f) << 2;
  if (hlen < IPV4_MIN_HLEN || hlen > len) return DROP_INVALID;
  let total = dv.getUint16(off + V4_TOTLEN);
  if (total < hlen) return DROP_INVALID;
  if (total > len) {
    if (!inner) return DROP_INVALID;
    total = len; // quoted packet: only what is there
  }
  // Header is valid and within the window: read it.
  out.family = 4;
  out.l3Off = off;
  out.l3HdrLen = hlen;
  out.totalLen = total;
  const proto = buf[off + V4_PROTO]!;
  out.proto = proto;
  out.ttlOff = off + V4_TTL;
  out.ttl = buf[off + V4_TTL]!;
  out.src0 = dv.getUint32(off + V4_SRC);
  out.dst0 = dv.getUint32(off + V4_DST);
  out.ipId = dv.getUint16(off + V4_ID);
  const frag = dv.getUint16(off + V4_FRAG);
  const fragOff = (frag & V4_OFFMASK) << 3;
  if ((frag & (V4_MF | V4_OFFMASK)) !== 0) {
    out.isFragment = 1;
    out.fragOffset = fragOff;
    out.moreFragments = (frag & V4_MF) !== 0 ? 1 : 0;
    // A later fragment carries a slice of the payload, not an L4 header.
    if (fragOff !== 0) return 0;
  }
  return parseL4(buf, dv, off + hlen, total - hlen, proto, 4, out, inner);
}

function parseIpv6(
  buf: Uint8Array, dv: DataView, off: number, len: number, out: PacketInfo, inner: boolean,
): number {
  if (len < IPV6_HLEN) return DROP_INVALID;
  const plen = dv.getUint16(off + V6_PLEN);
  // Payload length 0 announces a jumbogram (hop-by-hop option), which we do not support.
  if (plen === 0) return DROP_INVALID;
  let total = plen + IPV6_HLEN;
  if (total > len) {
    if (!inner) return DROP_INVALID;
    total = len;
  }
  out.family = 6;
  out.l3Off = off;
  out.totalLen = total;
  out.ttlOff = off + V6_HOPLIMIT;
  out.ttl = buf[off + V6_HOPLIMIT]!;
  out.src0 = dv.getUint32(off + V6_SRC);
  out.src1 = dv.getUint32(off + V6_SRC + 4);
  out.src2 = dv.getUint32(off + V6_SRC + 8);
  out.src3 = dv.getUint32(off + V6_SRC + 12);
  out.dst0 = dv.getUint32(off + V6_DST);
  out.dst1 = dv.getUint32(off + V6_DST + 4);
  out.dst2 = dv.getUint32(off + V6_DST + 8);
  out.dst3 = dv.getUint32(off + V6_DST + 12);

  // Walk the extension headers. `pos` is the current header, `end` the end of the packet.
  const end = off + total;
  let nh = buf[off + V6_NEXT]!;
  let pos = off + IPV6_HLEN;
  let count = 0;
  while (true) {
    let hl: number;
    if (nh === NEXTHDR_HOP || nh === NEXTHDR_ROUTING || nh === NEXTHDR_DEST) {
      // Next Header(8) Hdr Ext Len(8) in units of 8 bytes, not counting the first 8.
      if (pos + 2 > end) return DROP_INVALID_EXTHDR;
      hl = (buf[pos + 1]! + 1) << 3;
    } else if (nh === NEXTHDR_AUTH) {
      // AH (RFC 4302): Payload Len in 4-byte units, minus 2.
      if (pos + 2 > end) return DROP_INVALID_EXTHDR;
      hl = (buf[pos + 1]! + 2) << 2;
    } else if (nh === NEXTHDR_FRAGMENT) {
      // Next Header(8) Reserved(8) FragOffset(13) Res(2) M(1) Identification(32).
      hl = 8;
    } else {
      break; // upper-layer protocol, ESP, or "no next header"
    }
    if (++count > IPV6_MAX_EXTHDRS) return DROP_INVALID_EXTHDR;
    if (pos + hl > end) return DROP_INVALID_EXTHDR;
    const next = buf[pos]!;
    if (nh === NEXTHDR_FRAGMENT) {
      const fo = dv.getUint16(pos + 2);
      const fragOff = fo & 0xfff8;
      out.ipId = dv.getUint32(pos + 4);
      // An atomic fragment (offset 0, M 0; RFC 6946) is a whole packet, not a fragment.
      if ((fo & 0xfff9) !== 0) {
        out.isFragment = 1;
        out.fragOffset = fragOff;
        out.moreFragments = fo & 1;
      }
      if (fragOff !== 0) {
        // Later fragment: what follows is a slice of the payload, not a header.
        out.l3HdrLen = pos + hl - off;
        out.proto = next;
        return 0;
      }
    }
    nh = next;
    pos += hl;
  }
  out.l3HdrLen = pos - off;
  out.proto = nh;
  if (nh === NEXTHDR_NONE) return 0;
  return parseL4(buf, dv, pos, end - pos, nh, 6, out, inner);
}

/** Parse the L4 header at buf[l4, l4+avail). `family` selects which ICMP is native. */
function parseL4(
  buf: Uint8Array, dv: DataView, l4: number, avail: number, proto: number, family: number,
  out: PacketInfo, inner: boolean,
): number {
  if (proto === IPPROTO_TCP) {
    if (inner) {
      if (avail < INNER_L4_MIN) return DROP_CT_INVALID_HDR;
      out.tcpFlags = avail >= 14 ? buf[l4 + 13]! : 0;
    } else {
      if (avail < TCP_MIN) return DROP_CT_INVALID_HDR;
      const doff = (buf[l4 + 12]! >> 4) << 2;
      if (doff < TCP_MIN || doff > avail) return DROP_CT_INVALID_HDR;
      out.tcpFlags = buf[l4 + 13]!;
    }
    out.l4Off = l4;
    out.sport = dv.getUint16(l4);
    out.dport = dv.getUint16(l4 + 2);
    return 0;
  }
  if (proto === IPPROTO_UDP) {
    if (avail < UDP_LEN) return DROP_CT_INVALID_HDR;
    out.l4Off = l4;
    out.sport = dv.getUint16(l4);
    out.dport = dv.getUint16(l4 + 2);
    return 0;
  }
  if (proto === IPPROTO_SCTP) {
    if (avail < (inner ? INNER_L4_MIN : SCTP_COMMON)) return DROP_CT_INVALID_HDR;
    out.l4Off = l4;
    out.sport = dv.getUint16(l4);
    out.dport = dv.getUint16(l4 + 2);
    return 0;
  }
  if (proto === IPPROTO_ICMP && family === 4) {
    if (avail < ICMP_HDR) return DROP_CT_INVALID_HDR;
    out.l4Off = l4;
    const type = buf[l4]!;
    out.icmpType = type;
    out.icmpCode = buf[l4 + 1]!;
    if (type === ICMP_ECHO || type === ICMP_ECHOREPLY) {
      const id = dv.getUint16(l4 + 4);
      out.icmpId = id;
      out.sport = id;
      out.dport = id;
    } else if (
      !inner && avail - ICMP_HDR >= IPV4_MIN_HLEN &&
      (type === ICMP_DEST_UNREACH || type === ICMP_SOURCE_QUENCH || type === ICMP_REDIRECT ||
        type === ICMP_TIME_EXCEEDED || type === ICMP_PARAMETERPROB)
    ) {
      out.icmpInnerOff = l4 + ICMP_HDR;
    }
    return 0;
  }
  if (proto === IPPROTO_ICMPV6 && family === 6) {
    if (avail < ICMP_HDR) return DROP_CT_INVALID_HDR;
    out.l4Off = l4;
    const type = buf[l4]!;
    out.icmpType = type;
    out.icmpCode = buf[l4 + 1]!;
    if (type === ICMPV6_ECHO_REQUEST || type === ICMPV6_ECHO_REPLY) {
      const id = dv.getUint16(l4 + 4);
      out.icmpId = id;
      out.sport = id;
      out.dport = id;
    } else if (!inner && avail - ICMP_HDR >= IPV6_HLEN && type >= ICMPV6_DEST_UNREACH && type <= ICMPV6_PARAMPROB) {
      out.icmpInnerOff = l4 + ICMP_HDR;
    }
    return 0;
  }
  // Other protocols: no ports. l4Off still points at the payload when there is some.
  out.l4Off = avail > 0 ? l4 : -1;
  return 0;
}
