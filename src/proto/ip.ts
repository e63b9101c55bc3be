/**
 * IP protocol numbers (IANA) and TCP flag bits, with the names flow events and listings
 * print (Hubble's spelling: `ICMPv4`, not `ICMP`). Leaf module: imports nothing.
 */

export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_ICMPV6 = 58;
export const IPPROTO_SCTP = 132;

/** The protocol numbers by the names policy and the CLI accept (`ICMP` is ICMPv4). */
export const IPPROTO = { ICMP: IPPROTO_ICMP, TCP: IPPROTO_TCP, UDP: IPPROTO_UDP, ICMPV6: IPPROTO_ICMPV6, SCTP: IPPROTO_SCTP } as const;

/** Display name of each protocol the switch knows, as flow events write `l4.protocol`. */
export const PROTO_NAMES: Readonly<Record<number, string>> = {
  [IPPROTO_ICMP]: 'ICMPv4',
  [IPPROTO_TCP]: 'TCP',
  [IPPROTO_UDP]: 'UDP',
  [IPPROTO_ICMPV6]: 'ICMPv6',
  [IPPROTO_SCTP]: 'SCTP',
};

/** Protocol numbers by display name (the inverse of PROTO_NAMES). */
export const PROTO_NUMBERS: Readonly<Record<string, number>> = {
  ICMPv4: IPPROTO_ICMP,
  TCP: IPPROTO_TCP,
  UDP: IPPROTO_UDP,
  ICMPv6: IPPROTO_ICMPV6,
  SCTP: IPPROTO_SCTP,
};

/** The display name of a protocol number; an unknown one prints as its number. */
export function protoName(proto: number): string {
  return PROTO_NAMES[proto] ?? String(proto);
}

/** True for ICMP and ICMPv6 (their "port" is the ICMP type). */
export function isIcmp(proto: number): boolean {
  return proto === IPPROTO_ICMP || proto === IPPROTO_ICMPV6;
}

/** Protocols that carry 16-bit ports: what a policy port without a protocol expands to. */
export function hasPorts(proto: number): boolean {
  return proto === IPPROTO_TCP || proto === IPPROTO_UDP || proto === IPPROTO_SCTP;
}

// TCP flags byte (RFC 9293 section 3.1; ECE and CWR from RFC 3168).
export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;
export const TCP_ECE = 0x40;
export const TCP_CWR = 0x80;

/** `SYN, ACK`: the flags Hubble prints, in its order (ECE and CWR are not printed). */
export function tcpFlagNames(f: number): string {
  const names: string[] = [];
  if (f & TCP_SYN) names.push('SYN');
  if (f & TCP_ACK) names.push('ACK');
  if (f & TCP_FIN) names.push('FIN');
  if (f & TCP_RST) names.push('RST');
  if (f & TCP_PSH) names.push('PSH');
  if (f & TCP_URG) names.push('URG');
  return names.join(', ');
}
