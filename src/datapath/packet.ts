import type { FlowTuple } from '../proto/tuple.js';

/**
 * PacketInfo: the parsed view of one packet, filled in place by the parser.
 *
 * One instance per worker (and one more for the inner header of an ICMP error) is made at
 * start-up and reused for every packet: the hot path never allocates. Every field is a
 * number and is initialised here so the object keeps one hidden class. -1 means "absent".
 *
 * It is the flow tuple (src/proto/tuple.ts) that conntrack and the fragment table take.
 *
 * Addresses: IPv4 lives in src0/dst0 as an unsigned 32-bit number in network order
 * (10.0.0.1 = 0x0a000001) with src1..3/dst1..3 = 0. IPv6 uses all four words, word 0 the
 * most significant, each an unsigned 32-bit number.
 */
export class PacketInfo implements FlowTuple {
  /** 4 or 6; 0 before a successful parse. */
  family = 0;
  /** Offset of the IP header in the buffer. */
  l3Off = 0;
  /** Length of the IP header including IPv4 options or IPv6 extension headers. */
  l3HdrLen = 0;
  /** Total length of the IP packet as the header states it (<= captured length). */
  totalLen = 0;
  /** Upper-layer protocol number (after any IPv6 extension headers). */
  proto = 0;
  /** Offset of the L4 header, -1 when this packet carries no L4 header (a later fragment). */
  l4Off = -1;
  src0 = 0; src1 = 0; src2 = 0; src3 = 0;
  dst0 = 0; dst1 = 0; dst2 = 0; dst3 = 0;
  /** TCP/UDP/SCTP ports; for ICMP echo: sport = dport = echo identifier; otherwise 0. */
  sport = 0;
  dport = 0;
  /** TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, URG 0x20, ECE, CWR). */
  tcpFlags = 0;
  icmpType = -1;
  icmpCode = -1;
  /** Echo identifier for ICMP/ICMPv6 echo request/reply, else -1. */
  icmpId = -1;
  /** Offset of the embedded (inner) IP header of an ICMP error message, else -1. */
  icmpInnerOff = -1;
  /** Offset of the TTL / hop-limit byte. */
  ttlOff = 0;
  ttl = 0;
  /** 1 when the packet is any fragment (first or later) of a fragmented datagram. */
  isFragment = 0;
  /** Fragment offset in bytes (0 for the first fragment). */
  fragOffset = 0;
  /** 1 when more fragments follow. */
  moreFragments = 0;
  /** IPv4 identification (16 bit) or IPv6 fragment identification (32 bit). */
  ipId = 0;

  reset(): void {
    this.family = 0; this.l3Off = 0; this.l3HdrLen = 0; this.totalLen = 0; this.proto = 0;
    this.l4Off = -1;
    this.src0 = 0; this.src1 = 0; this.src2 = 0; this.src3 = 0;
    this.dst0 = 0; this.dst1 = 0; this.dst2 = 0; this.dst3 = 0;
    this.sport = 0; this.dport = 0; this.tcpFlags = 0;
    this.icmpType = -1; this.icmpCode = -1; this.icmpId = -1; this.icmpInnerOff = -1;
    this.ttlOff = 0; this.ttl = 0;
    this.isFragment = 0; this.fragOffset = 0; this.moreFragments = 0; this.ipId = 0;
  }
}
