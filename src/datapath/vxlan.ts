/**
 * VXLAN (RFC 7348) encapsulation and decapsulation, as Cilium's tunnel mode uses it: the
 * VNI carries the source's security identity, so the receiving node enforces ingress policy
 * without looking the sender up. Pure functions over (bytes, offset, length); nothing is
 * allocated per packet.
 *
 * On the wire (IPv4 underlay, 50 bytes before the inner IP packet):
 *
 *    0                   1                   2                   3
 *    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   | outer IPv4 header, 20 bytes, protocol 17, DF clear, TTL 64   |   OUTER_IP_OFF  0
 *   +---------------------------------------------------------------+
 *   | UDP source port (inner flow hash) | UDP dest port 8472        |   OUTER_UDP_OFF 20
 *   | UDP length                        | UDP checksum (0: none)    |
 *   +---------------------------------------------------------------+
 *   |R|R|R|R|I|R|R|R|            reserved                           |   VXLAN_OFF     28
 *   |            VNI (24 bits)                      |  reserved     |
 *   +---------------------------------------------------------------+
 *   | inner Ethernet: dst MAC, src MAC (fixed), EtherType 0800/86DD  |   INNER_ETH_OFF 36
 *   +---------------------------------------------------------------+
 *   | inner IP packet                                               |   INNER_IP_OFF  50
 *
 * The underlay socket (src/io/udp.ts) gets outer IPv4/UDP from the kernel: it sends and
 * receives the UDP payload, VXLAN header onwards (VXLAN_PAYLOAD_HDR = 22 bytes before the
 * inner packet). vxlanEncap4 writes the whole 50 bytes (a raw underlay, tests, bench);
 * vxlanEncapPayload writes only the 22.
 *
 * Inner MACs are fixed, as Cilium's are (it has no L2 peers behind a tunnel): TUNNEL_SRC_MAC
 * and TUNNEL_DST_MAC. Decap ignores them; a Linux vxlan device exchanging packets with a
 * switch needs TUNNEL_DST_MAC as its address and a neighbour entry for the switch's
 * endpoints with TUNNEL_SRC_MAC (test/e2e/vxlan-interop.test.ts).
 */
import { DROP_FRAG_NEEDED, DROP_INVALID, DROP_INVALID_VNI, DROP_UNSUPPORTED_L2 } from './drop.js';
import { ipv4HeaderChecksum } from './checksum.js';

export const VXLAN_PORT = 8472;
export const OUTER_IP_OFF = 0;
export const OUTER_UDP_OFF = 20;
export const VXLAN_OFF = 28;
export const INNER_ETH_OFF = 36;
export const INNER_IP_OFF = 50;
/** Bytes added before the inner IP packet with an IPv4 underlay (what the endpoint MTU must leave). */
export const VXLAN_OVERHEAD = 50;
export const VXLAN_HDR_LEN = 8;
export const ETH_HLEN = 14;
/** VXLAN header + inner Ethernet: the part of the UDP payload before the inner IP packet. */
export const VXLAN_PAYLOAD_HDR = VXLAN_HDR_LEN + ETH_HLEN;
/** Flags byte with the I bit (valid VNI). */
export const VXLAN_FLAG_I = 0x08;
/** The largest VNI (24 bits); identities above it cannot travel (local identities never do). */
export const VXLAN_MAX_VNI = 0xffffff;
export const ETH_P_IP = 0x0800;
export const ETH_P_IPV6 = 0x86dd;
/** Locally administered fixed MACs ("ts" = 0x74 0x73) of the inner Ethernet header. */
export const TUNNEL_SRC_MAC = [0x02, 0x74, 0x73, 0x00, 0x00, 0x01] as const;
export const TUNNEL_DST_MAC = [0x02, 0x74, 0x73, 0x00, 0x00, 0x02] as const;
export const TUNNEL_SRC_MAC_TEXT = '02:74:73:00:00:01';
export const TUNNEL_DST_MAC_TEXT = '02:74:73:00:00:02';
/** Outer TTL, as the Linux vxlan driver's default. */
export const OUTER_TTL = 64;
/** Source ports come from this range (Linux's default ephemeral range, as its vxlan driver uses). */
export const SPORT_MIN = 32768;
export const SPORT_SPAN = 61000 - 32768;

/**
 * UDP source port for the inner packet at buf[off, off+len): a hash of its addresses,
 * protocol and ports, so the underlay's ECMP/RSS spreads flows and keeps each one in order.
 * Reads only what a valid IPv4/IPv6 header holds; anything shorter hashes what it has.
 */
export function vxlanSourcePort(buf: Uint8Array, off: number, len: number): number {
  let h = 0x811c9dc5;
  if (len >= 20 && (buf[off] as number) >> 4 === 4) {
    const ihl = ((buf[off] as number) & 0x0f) * 4;
    for (let i = 12; i < 20; i++) h = Math.imul(h ^ (buf[off + i] as number), 0x01000193);
    h = Math.imul(h ^ (buf[off + 9] as number), 0x01000193);
    if (len >= ihl + 4) for (let i = ihl; i < ihl + 4; i++) h = Math.imul(h ^ (buf[off + i] as number), 0x01000193);
  } else if (len >= 40 && (buf[off] as number) >> 4 === 6) {
    for (let i = 8; i < 40; i++) h = Math.imul(h ^ (buf[off + i] as number), 0x01000193);
    h = Math.imul(h ^ (buf[off + 6] as number), 0x01000193);
    if (len >= 44) for (let i = 40; i < 44; i++) h = Math.imul(h ^ (buf[off + i] as number), 0x01000193);
  }
  h ^= h >>> 16;
  return SPORT_MIN + ((h >>> 0) % SPORT_SPAN);
}

/** Writes the VXLAN header and inner Ethernet header at buf[at, at+22). */
function writeVxlanEth(buf: Uint8Array, at: number, vni: number, ethType: number): void {
  buf[at] = VXLAN_FLAG_I;
  buf[at + 1] = 0;
  buf[at + 2] = 0;
  buf[at + 3] = 0;
  buf[at + 4] = (vni >>> 16) & 0xff;
  buf[at + 5] = (vni >>> 8) & 0xff;
  buf[at + 6] = vni & 0xff;
  buf[at + 7] = 0;
  const e = at + VXLAN_HDR_LEN;
  for (let i = 0; i < 6; i++) {
    buf[e + i] = TUNNEL_DST_MAC[i] as number;
    buf[e + 6 + i] = TUNNEL_SRC_MAC[i] as number;
  }
  buf[e + 12] = ethType >>> 8;
  buf[e + 13] = ethType & 0xff;
}

function innerEthType(buf: Uint8Array, off: number): number {
  const v = (buf[off] as number) >> 4;
  return v === 4 ? ETH_P_IP : v === 6 ? ETH_P_IPV6 : -1;
}

/**
 * Encapsulates the IP packet at buf[off, off+len) in place for an IPv4 underlay: the packet
 * moves VXLAN_OVERHEAD bytes up (memmove) and the outer headers go in front, so the result
 * is buf[off, off+len+50). `room` is how many bytes from `off` the caller owns. Returns the
 * new length, or a negative drop code (room too small: DROP_FRAG_NEEDED; not IP: DROP_INVALID;
 * identity beyond 24 bits: DROP_INVALID_VNI).
 */
export function vxlanEncap4(
  buf: Uint8Array,
  dv: DataView,
  off: number,
  len: number,
  room: number,
  srcIp: number,
  dstIp: number,
  vni: number,
): number {
  if (vni < 1 || vni > VXLAN_MAX_VNI) return DROP_INVALID_VNI;
  const ethType = len >= 20 ? innerEthType(buf, off) : -1;
  if (ethType < 0) return DROP_INVALID;
  const total = len + VXLAN_OVERHEAD;
  if (total > room || total > 0xffff) return DROP_FRAG_NEEDED;
  const sport = vxlanSourcePort(buf, off, len);
  buf.copyWithin(off + INNER_IP_OFF, off, off + len);
  // outer IPv4: version 4, IHL 5, DSCP 0, total length, id 0, flags 0, TTL, UDP, checksum
  buf[off] = 0x45;
  buf[off + 1] = 0;
  dv.setUint16(off + 2, total);
  dv.setUint32(off + 4, 0);
  buf[off + 8] = OUTER_TTL;
  buf[off + 9] = 17;
  dv.setUint16(off + 10, 0);
  dv.setUint32(off + 12, srcIp >>> 0);
  dv.setUint32(off + 16, dstIp >>> 0);
  dv.setUint16(off + 10, ipv4HeaderChecksum(buf, off, 20));
  // UDP: checksum 0 (allowed over IPv4, RFC 7348 recommends it; Linux sends 0 by default)
  const u = off + OUTER_UDP_OFF;
  dv.setUint16(u, sport);
  dv.setUint16(u + 2, VXLAN_PORT);
  dv.setUint16(u + 4, total - OUTER_UDP_OFF);
  dv.setUint16(u + 6, 0);
  writeVxlanEth(buf, off + VXLAN_OFF, vni, ethType);
  return total;
}

/**
 * Encapsulates for a UDP socket (the kernel adds outer IPv4/UDP): writes the VXLAN and inner
 * Ethernet headers into buf[off-22, off) in front of the packet at buf[off, off+len), which
 * does not move. The caller owns the 22 bytes of headroom. Returns the payload length
 * (len + 22) or a negative drop code.
 */
export function vxlanEncapPayload(buf: Uint8Array, off: number, len: number, vni: number): number {
  if (vni < 1 || vni > VXLAN_MAX_VNI) return DROP_INVALID_VNI;
  const ethType = len >= 20 ? innerEthType(buf, off) : -1;
  if (ethType < 0) return DROP_INVALID;
  writeVxlanEth(buf, off - VXLAN_PAYLOAD_HDR, vni, ethType);
  return len + VXLAN_PAYLOAD_HDR;
}

/** Where decap leaves its result (preallocated, one per caller). */
export class VxlanResult {
  vni = 0;
  innerOff = 0;
  innerLen = 0;
  /** Outer source address (vxlanDecap4 only; 0 otherwise). */
  outerSrc = 0;
  sport = 0;
}

/**
 * Decapsulates a UDP payload (VXLAN header first) at buf[off, off+len). Returns 0 and fills
 * `r`, or a negative drop code: DROP_INVALID (too short), DROP_INVALID_VNI (I flag clear or
 * VNI 0), DROP_UNSUPPORTED_L2 (inner EtherType neither IPv4 nor IPv6, e.g. ARP).
 */
export function vxlanDecapPayload(buf: Uint8Array, off: number, len: number, r: VxlanResult): number {
  if (len < VXLAN_PAYLOAD_HDR + 20) return DROP_INVALID;
  if (((buf[off] as number) & VXLAN_FLAG_I) === 0) return DROP_INVALID_VNI;
  const vni = ((buf[off + 4] as number) << 16) | ((buf[off + 5] as number) << 8) | (buf[off + 6] as number);
  if (vni === 0) return DROP_INVALID_VNI;
  const e = off + VXLAN_HDR_LEN;
  const ethType = ((buf[e + 12] as number) << 8) | (buf[e + 13] as number);
  const inner = off + VXLAN_PAYLOAD_HDR;
  const v = (buf[inner] as number) >> 4;
  if (!((ethType === ETH_P_IP && v === 4) || (ethType === ETH_P_IPV6 && v === 6))) return DROP_UNSUPPORTED_L2;
  r.vni = vni;
  r.innerOff = inner;
  r.innerLen = len - VXLAN_PAYLOAD_HDR;
  return 0;
}

/**
 * Decapsulates a whole outer IPv4 packet at buf[off, off+len): IPv4, UDP to port 8472,
 * then as vxlanDecapPayload. Returns 0 or a negative drop code; never throws.
 */
export function vxlanDecap4(buf: Uint8Array, dv: DataView, off: number, len: number, r: VxlanResult): number {
  if (len < 28 || (buf[off] as number) >> 4 !== 4) return DROP_INVALID;
  const ihl = ((buf[off] as number) & 0x0f) * 4;
  if (ihl < 20 || len < ihl + 8) return DROP_INVALID;
  const tot = dv.getUint16(off + 2);
  if (tot < ihl + 8 || tot > len) return DROP_INVALID;
  if ((buf[off + 9] as number) !== 17) return DROP_INVALID;
  if ((dv.getUint16(off + 6) & 0x3fff) !== 0) return DROP_INVALID; // a fragment: the underlay reassembles, not us
  const u = off + ihl;
  if (dv.getUint16(u + 2) !== VXLAN_PORT) return DROP_INVALID;
  const ulen = dv.getUint16(u + 4);
  if (ulen < 8 || ulen > tot - ihl) return DROP_INVALID;
  const rc = vxlanDecapPayload(buf, u + 8, ulen - 8, r);
  if (rc < 0) return rc;
  r.outerSrc = dv.getUint32(off + 12);
  r.sport = dv.getUint16(u);
  return 0;
}
