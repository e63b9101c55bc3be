/**
 * The flow tuple: what conntrack and the fragment table read from a packet (Cilium's
 * `ipv4_ct_tuple` / `ipv6_ct_tuple`, plus the few fields they need beside it). The datapath's
 * PacketInfo implements it, so one preallocated object is passed and nothing is copied.
 *
 * Addresses: IPv4 in src0/dst0 as an unsigned 32-bit number (10.0.0.1 = 0x0a000001) with the
 * other words 0; IPv6 in all four words, word 0 most significant. -1 means "absent".
 */
export interface FlowTuple {
  /** 4 or 6. */
  readonly family: number;
  /** IP protocol number (see ip.ts). */
  readonly proto: number;
  readonly src0: number;
  readonly src1: number;
  readonly src2: number;
  readonly src3: number;
  readonly dst0: number;
  readonly dst1: number;
  readonly dst2: number;
  readonly dst3: number;
  // The L4 fields are writable: the fragment table fills them in for a later fragment from
  // the record of its first one.
  /** TCP/UDP/SCTP ports; for ICMP echo both are the echo identifier; otherwise 0. */
  sport: number;
  dport: number;
  /** TCP flags byte (TCP_* in ip.ts). */
  readonly tcpFlags: number;
  icmpType: number;
  icmpCode: number;
  /** Echo identifier of an ICMP echo request/reply, else -1. */
  icmpId: number;
  /** IPv4 identification or IPv6 fragment identification (fragments only). */
  readonly ipId: number;
  /** Length of the IP packet as its header states it. */
  readonly totalLen: number;
}
