/**
 * "Fragmentation needed" (ICMPv4 type 3 code 4, RFC 1191) and "Packet Too Big" (ICMPv6
 * type 2, RFC 8201) for a packet that does not fit the tunnel: what a router answers when the
 * next hop's MTU is smaller than the packet, so the sender's path MTU discovery shrinks its
 * packets instead of losing them. Pure: the error is built in place over the packet's own
 * bytes; nothing is allocated.
 *
 * icmpTooBig(buf, dv, off, len, mtu) with the packet at buf[off, off+len):
 *   1. IPv4 without DF: returns 0 (TOO_BIG_FORWARD): the caller forwards it (the underlay
 *      may fragment the outer packet, as Linux's vxlan does with DF clear)
 *   2. an ICMP error itself (ICMPv4 types 3, 4, 5, 11, 12; ICMPv6 types < 128), or a packet
 *      too short to quote: returns DROP_FRAG_NEEDED (no error about an error, RFC 1122
 *      3.2.2, RFC 4443 2.4 e)
 *   3. otherwise rewrites buf[off, ...) into the error, addressed from the packet's
 *      destination to its source, quoting the start of the packet (IPv4: up to 576 bytes in
 *      all, as Linux; IPv6: up to 1280), with `mtu` as the next-hop MTU; returns its length
 *
 *   IPv4 error:  IPv4 header (20) | type 3 | code 4 | csum | unused (2) | next-hop MTU (2) | quote
 *   IPv6 error:  IPv6 header (40) | type 2 | code 0 | csum | MTU (4)                        | quote
 *
 * The source address is the original destination's: the switch has no address of its own on
 * the endpoint's link, and the sender matches the error by the quoted header, not by its
 * source.
 */
import { DROP_FRAG_NEEDED } from './drop.js';
import { csumFold, csumPartial, ipv4HeaderChecksum, pseudoHeaderSum6 } from './checksum.js';

export const TOO_BIG_FORWARD = 0;
/** Largest IPv4 error (RFC 1812 4.3.2.3: as much of the packet as fits 576 bytes). */
export const ICMP4_ERROR_MAX = 576;
/** Largest ICMPv6 error (RFC 4443 2.4 c: the minimum IPv6 MTU). */
export const ICMP6_ERROR_MAX = 1280;
const V4_HDR = 20;
const V6_HDR = 40;
const ICMP_HDR = 8;
const TTL = 64;

function isIcmp4Error(type: number): boolean {
  return type === 3 || type === 4 || type === 5 || type === 11 || type === 12;
}

/** Whether an oversize packet may still be forwarded (IPv4 with DF clear: the underlay fragments). */
export function oversizeMayFragment(buf: Uint8Array, off: number, len: number): boolean {
  return len >= 7 && (buf[off] as number) >> 4 === 4 && ((buf[off + 6] as number) & 0x40) === 0;
}

/** See the file comment. `len` must be the packet's length; `mtu` the largest packet that fits. */
export function icmpTooBig(buf: Uint8Array, dv: DataView, off: number, len: number, mtu: number): number {
  if (len < 1) return DROP_FRAG_NEEDED;
  const v = (buf[off] as number) >> 4;
  if (v === 4) {
    if (len < V4_HDR) return DROP_FRAG_NEEDED;
    const ihl = ((buf[off] as number) & 0x0f) * 4;
    if (((buf[off + 6] as number) & 0x40) === 0) return TOO_BIG_FORWARD; // DF clear
    if ((buf[off + 9] as number) === 1 && len >= ihl + 1 && isIcmp4Error(buf[off + ihl] as number)) return DROP_FRAG_NEEDED;
    const quote = len < ICMP4_ERROR_MAX - V4_HDR - ICMP_HDR ? len : ICMP4_ERROR_MAX - V4_HDR - ICMP_HDR;
    const q = off + V4_HDR + ICMP_HDR;
    buf.copyWithin(q, off, off + quote);
    // The original's addresses now sit at q + 12 (source) and q + 16 (destination).
    const total = V4_HDR + ICMP_HDR + quote;
    buf[off] = 0x45;
    buf[off + 1] = 0xc0; // precedence "internetwork control", as Linux sends ICMP errors
    dv.setUint16(off + 2, total);
    dv.setUint32(off + 4, 0); // id 0, no flags (an error is never fragmented: it fits 576)
    buf[off + 8] = TTL;
    buf[off + 9] = 1;
    dv.setUint16(off + 10, 0);
    dv.setUint32(off + 12, dv.getUint32(q + 16));
    dv.setUint32(off + 16, dv.getUint32(q + 12));
    dv.setUint16(off + 10, ipv4HeaderChecksum(buf, off, V4_HDR));
    const ic = off + V4_HDR;
    buf[ic] = 3;
    buf[ic + 1] = 4;
    dv.setUint16(ic + 2, 0);
    dv.setUint16(ic + 4, 0);
    dv.setUint16(ic + 6, mtu > 0xffff ? 0xffff : mtu);
    dv.setUint16(ic + 2, ~csumFold(csumPartial(buf, ic, ICMP_HDR + quote, 0)) & 0xffff);
    return total;
  }
  if (v === 6) {
    if (len < V6_HDR) return DROP_FRAG_NEEDED;
    if ((buf[off + 6] as number) === 58 && len >= V6_HDR + 1 && (buf[off + V6_HDR] as number) < 128) return DROP_FRAG_NEEDED;
    const quote = len < ICMP6_ERROR_MAX - V6_HDR - ICMP_HDR ? len : ICMP6_ERROR_MAX - V6_HDR - ICMP_HDR;
    const q = off + V6_HDR + ICMP_HDR;
    buf.copyWithin(q, off, off + quote);
    dv.setUint32(off, 0x60000000);
    dv.setUint16(off + 4, ICMP_HDR + quote);
    buf[off + 6] = 58;
    buf[off + 7] = TTL;
    buf.copyWithin(off + 8, q + 24, q + 40); // source := the original destination
    buf.copyWithin(off + 24, q + 8, q + 24); // destination := the original source
    const ic = off + V6_HDR;
    buf[ic] = 2;
    buf[ic + 1] = 0;
    dv.setUint16(ic + 2, 0);
    dv.setUint32(ic + 4, mtu);
    const sum = csumPartial(buf, ic, ICMP_HDR + quote, pseudoHeaderSum6(buf, off, ICMP_HDR + quote, 58));
    dv.setUint16(ic + 2, ~csumFold(sum) & 0xffff);
    return V6_HDR + ICMP_HDR + quote;
  }
  return DROP_FRAG_NEEDED;
}
