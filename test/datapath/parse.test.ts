import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as drop from '../../src/datapath/drop.js';
import { DROP_CT_INVALID_HDR, DROP_INVALID, DROP_INVALID_EXTHDR, DROP_REASONS, DROP_UNKNOWN_L3, dropReasonName, dropReasonText, isKnownDropCode } from '../../src/datapath/drop.js';
import { MAX_DROP_CODE } from '../../src/tables/events.js';
import { PacketInfo } from '../../src/datapath/packet.js';
import { TCP_ACK, TCP_SYN } from '../../src/proto/ip.js';
import { parseInner, parsePacket } from '../../src/datapath/parse.js';
import {
  type Ext6,
  icmpError4,
  icmpError6,
  ip4,
  ip6,
  ipv4Fragments,
  ipv4Icmp,
  ipv4Raw,
  ipv4Sctp,
  ipv4Tcp,
  ipv4Udp,
  ipv6Icmp,
  ipv6Raw,
  ipv6Sctp,
  ipv6Tcp,
  ipv6Udp,
} from '../helpers/packets.js';

type Fields = Partial<Record<keyof PacketInfo, number>>;
interface Row {
  name: string;
  pkt: Uint8Array | number[];
  /** 0 or the expected negative drop code. */
  want: number;
  /** Expected fields; offsets (l3Off, l4Off, icmpInnerOff, ttlOff) relative to the packet start. */
  fields?: Fields;
  inner?: boolean;
}

const OFFSET_FIELDS = new Set<string>(['l3Off', 'l4Off', 'icmpInnerOff', 'ttlOff']);

/** Parse `pkt` placed at an odd offset inside a canary-filled buffer, check code and fields. */
function check(row: Row): PacketInfo {
  const pkt = Uint8Array.from(row.pkt);
  const base = 37;
  const buf = new Uint8Array(base + pkt.length + 64).fill(0xa5);
  buf.set(pkt, base);
  const dv = new DataView(buf.buffer);
  const info = new PacketInfo();
  const fn = row.inner ? parseInner : parsePacket;
  const got = fn(buf, dv, base, pkt.length, info);
  assert.equal(got, row.want, `${row.name}: got code ${got} (${dropReasonText(got)}), want ${row.want} (${dropReasonText(row.want)})`);
  for (const [k, v] of Object.entries(row.fields ?? {})) {
    const want = OFFSET_FIELDS.has(k) && (v as number) >= 0 ? (v as number) + base : v;
    const g = info[k as keyof PacketInfo];
    assert.equal(g, want, `${row.name}: ${k}: got ${String(g)}, want ${String(want)}`);
  }
  return info;
}

const A = '10.1.2.3';
const B = '192.168.7.9';
const A6 = 'fd00::1:2';
const B6 = '2001:db8::7';

function v4Rows(): Row[] {
  const rows: Row[] = [];
  const tcp = ipv4Tcp({ src: A, dst: B, sport: 40001, dport: 443, flags: TCP_SYN | TCP_ACK, ttl: 17, id: 0x4242 });
  rows.push({
    name: 'v4 TCP SYN-ACK', pkt: tcp, want: 0,
    fields: {
      family: 4, l3Off: 0, l3HdrLen: 20, totalLen: tcp.length, proto: 6, l4Off: 20, src0: ip4(A), dst0: ip4(B),
      src1: 0, dst3: 0, sport: 40001, dport: 443, tcpFlags: TCP_SYN | TCP_ACK, ttl: 17, ttlOff: 8, ipId: 0x4242,
      isFragment: 0, fragOffset: 0, moreFragments: 0, icmpType: -1, icmpId: -1, icmpInnerOff: -1,
    },
  });
  const tcpOpt = ipv4Tcp({ sport: 1, dport: 2, tcpOptions: [2, 4, 5, 0xb4, 1, 1, 4, 2], payload: new Uint8Array(100) });
  rows.push({ name: 'v4 TCP with options and payload', pkt: tcpOpt, want: 0, fields: { l4Off: 20, totalLen: 148, sport: 1, dport: 2 } });
  rows.push({
    name: 'v4 UDP', pkt: ipv4Udp({ src: A, dst: B, sport: 5353, dport: 53, payload: [1, 2, 3] }), want: 0,
    fields: { proto: 17, l4Off: 20, sport: 5353, dport: 53, tcpFlags: 0, totalLen: 31 },
  });
  for (const type of [8, 0]) {
    rows.push({
      name: `v4 ICMP echo type ${type}`, pkt: ipv4Icmp({ type, id: 0xbeef, seq: 7 }), want: 0,
      fields: { proto: 1, l4Off: 20, icmpType: type, icmpCode: 0, icmpId: 0xbeef, sport: 0xbeef, dport: 0xbeef, icmpInnerOff: -1 },
    });
  }
  rows.push({
    name: 'v4 ICMP timestamp (not echo, not error)', pkt: ipv4Icmp({ type: 13, id: 9 }), want: 0,
    fields: { icmpType: 13, icmpId: -1, sport: 0, dport: 0, icmpInnerOff: -1 },
  });
  rows.push({
    name: 'v4 SCTP', pkt: ipv4Sctp({ sport: 3868, dport: 3869, payload: new Uint8Array(16) }), want: 0,
    fields: { proto: 132, l4Off: 20, sport: 3868, dport: 3869 },
  });
  rows.push({ name: 'v4 SCTP common header only', pkt: ipv4Sctp({ sport: 9, dport: 10 }), want: 0, fields: { sport: 9, dport: 10 } });
  rows.push({
    name: 'v4 GRE (unknown L4)', pkt: ipv4Raw({ proto: 47, payload: new Uint8Array(24).fill(0xff) }), want: 0,
    fields: { proto: 47, l4Off: 20, sport: 0, dport: 0, icmpType: -1 },
  });
  rows.push({ name: 'v4 unknown L4, no payload', pkt: ipv4Raw({ proto: 253 }), want: 0, fields: { proto: 253, l4Off: -1 } });
  rows.push({ name: 'v4 ICMPv6 number inside IPv4 is just unknown', pkt: ipv4Raw({ proto: 58, payload: new Uint8Array(8) }), want: 0, fields: { proto: 58, icmpType: -1 } });
  for (let ihl = 6; ihl <= 15; ihl++) {
    const opts = new Array<number>((ihl - 5) * 4).fill(1); // NOPs
    const p = ipv4Tcp({ sport: 1000 + ihl, dport: 80, options: opts });
    rows.push({ name: `v4 options IHL ${ihl}`, pkt: p, want: 0, fields: { l3HdrLen: ihl * 4, l4Off: ihl * 4, sport: 1000 + ihl, totalLen: ihl * 4 + 20 } });
  }
  // Malformed headers.
  rows.push({ name: 'v4 truncated: total length > captured', pkt: tcp.slice(0, tcp.length - 1), want: DROP_INVALID });
  const short = tcp.slice();
  short[3] = 19; // total length 19 < IHL*4
  rows.push({ name: 'v4 total length < header length', pkt: short, want: DROP_INVALID });
  const ihl4 = tcp.slice();
  ihl4[0] = 0x44;
  rows.push({ name: 'v4 IHL 4', pkt: ihl4, want: DROP_INVALID });
  const ihlBig = tcp.slice();
  ihlBig[0] = 0x4f; // 60 bytes of header in a 40-byte packet
  rows.push({ name: 'v4 IHL*4 beyond packet', pkt: ihlBig, want: DROP_INVALID });
  rows.push({ name: 'v4 19 bytes', pkt: tcp.slice(0, 19), want: DROP_INVALID });
  rows.push({ name: 'v4 1 byte', pkt: [0x45], want: DROP_INVALID });
  rows.push({
    name: 'v4 trailing bytes after total length', pkt: [...tcp, 9, 9, 9, 9, 9, 9, 9], want: 0,
    fields: { totalLen: tcp.length, sport: 40001, dport: 443 },
  });
  // Total length says the TCP header is cut, even though bytes follow: those are not the packet.
  const cut = [...tcp];
  cut[3] = 30;
  rows.push({ name: 'v4 total length cuts TCP header (trailing bytes ignored)', pkt: cut, want: DROP_CT_INVALID_HDR });
  // L4 truncations.
  const ipOnly = (proto: number, n: number): Uint8Array => ipv4Raw({ proto, payload: new Uint8Array(n) });
  rows.push({ name: 'v4 TCP 19 bytes', pkt: ipOnly(6, 19), want: DROP_CT_INVALID_HDR });
  const doff4 = tcp.slice();
  doff4[32] = 0x40;
  rows.push({ name: 'v4 TCP data offset 4', pkt: doff4, want: DROP_CT_INVALID_HDR });
  const doff15 = tcp.slice();
  doff15[32] = 0xf0;
  rows.push({ name: 'v4 TCP data offset beyond packet', pkt: doff15, want: DROP_CT_INVALID_HDR });
  rows.push({ name: 'v4 UDP 7 bytes', pkt: ipOnly(17, 7), want: DROP_CT_INVALID_HDR });
  rows.push({ name: 'v4 UDP 8 bytes', pkt: ipOnly(17, 8), want: 0, fields: { l4Off: 20 } });
  rows.push({ name: 'v4 SCTP 11 bytes', pkt: ipOnly(132, 11), want: DROP_CT_INVALID_HDR });
  rows.push({ name: 'v4 ICMP 7 bytes', pkt: ipOnly(1, 7), want: DROP_CT_INVALID_HDR });
  // Fragments of a UDP datagram: 8 + 1000 bytes split at MTU 300 (280 payload bytes each).
  const big = ipv4Udp({ sport: 7, dport: 8, id: 0x7777, payload: new Uint8Array(1000).fill(3) });
  const frags = ipv4Fragments(big, 300);
  frags.forEach((f, i) => {
    const last = i === frags.length - 1;
    const fields: Fields = { isFragment: 1, fragOffset: 280 * i, moreFragments: last ? 0 : 1, ipId: 0x7777, proto: 17, totalLen: f.length };
    if (i === 0) Object.assign(fields, { l4Off: 20, sport: 7, dport: 8 });
    else Object.assign(fields, { l4Off: -1, sport: 0, dport: 0 });
    rows.push({ name: `v4 fragment ${i}/${frags.length}${i === 0 ? ' (ports)' : ' (no L4)'}`, pkt: f, want: 0, fields });
  });
  const df = ipv4Udp({ sport: 1, dport: 2, df: true });
  rows.push({ name: 'v4 DF alone is not a fragment', pkt: df, want: 0, fields: { isFragment: 0, sport: 1 } });
  // A first fragment too short for its TCP header (tiny-fragment attack).
  const tiny = ipv4Raw({ proto: 6, payload: new Uint8Array(8), fragWord: 0x2000 });
  rows.push({ name: 'v4 tiny first fragment', pkt: tiny, want: DROP_CT_INVALID_HDR });
  // ICMP errors.
  const udpInner = ipv4Udp({ src: B, dst: A, sport: 33434, dport: 53, payload: new Uint8Array(32) });
  for (const type of [3, 4, 5, 11, 12]) {
    rows.push({
      name: `v4 ICMP error type ${type}`, pkt: icmpError4(type, 1, udpInner), want: 0,
      fields: { icmpType: type, icmpCode: 1, icmpInnerOff: 28, icmpId: -1, sport: 0, src0: ip4(A), dst0: ip4(B) },
    });
  }
  rows.push({ name: 'v4 ICMP error quoting 19 bytes', pkt: icmpError4(3, 3, udpInner, { quote: 19 }), want: 0, fields: { icmpType: 3, icmpInnerOff: -1 } });
  rows.push({ name: 'v4 ICMP error quoting 20 bytes', pkt: icmpError4(3, 3, udpInner, { quote: 20 }), want: 0, fields: { icmpInnerOff: 28 } });
  return rows;
}

function v6Rows(): Row[] {
  const rows: Row[] = [];
  const s = ip6(A6);
  const d = ip6(B6);
  const tcp = ipv6Tcp({ src: A6, dst: B6, sport: 40000, dport: 8080, flags: TCP_SYN, hopLimit: 3 });
  rows.push({
    name: 'v6 TCP', pkt: tcp, want: 0,
    fields: {
      family: 6, l3Off: 0, l3HdrLen: 40, totalLen: 60, proto: 6, l4Off: 40, sport: 40000, dport: 8080, tcpFlags: TCP_SYN,
      src0: s[0], src1: s[1], src2: s[2], src3: s[3], dst0: d[0], dst1: d[1], dst2: d[2], dst3: d[3],
      ttl: 3, ttlOff: 7, isFragment: 0,
    },
  });
  rows.push({ name: 'v6 UDP', pkt: ipv6Udp({ sport: 546, dport: 547, payload: [1] }), want: 0, fields: { proto: 17, l4Off: 40, sport: 546, dport: 547 } });
  rows.push({ name: 'v6 SCTP', pkt: ipv6Sctp({ sport: 36412, dport: 36412 }), want: 0, fields: { proto: 132, sport: 36412 } });
  for (const type of [128, 129]) {
    rows.push({
      name: `v6 ICMPv6 echo ${type}`, pkt: ipv6Icmp({ type, id: 0x0102 }), want: 0,
      fields: { proto: 58, icmpType: type, icmpId: 0x0102, sport: 0x0102, dport: 0x0102, icmpInnerOff: -1 },
    });
  }
  rows.push({ name: 'v6 ICMPv6 neighbour solicitation', pkt: ipv6Icmp({ type: 135, payload: new Uint8Array(16) }), want: 0, fields: { icmpType: 135, icmpId: -1, sport: 0 } });
  rows.push({ name: 'v6 ICMPv4 number inside IPv6 is just unknown', pkt: ipv6Raw({ proto: 1, payload: new Uint8Array(8) }), want: 0, fields: { proto: 1, icmpType: -1 } });
  // One of each extension header, then combinations.
  const ext: [string, Ext6, number][] = [
    ['hop-by-hop', { type: 0 }, 8],
    ['hop-by-hop len 2', { type: 0, len: 2 }, 24],
    ['routing', { type: 43, len: 2 }, 24],
    ['destination options', { type: 60, len: 1 }, 16],
    ['AH', { type: 51 }, 24],
    ['AH len 1', { type: 51, len: 1 }, 12],
    ['atomic fragment', { type: 44 }, 8],
  ];
  for (const [n, e, size] of ext) {
    rows.push({
      name: `v6 UDP after ${n}`, pkt: ipv6Udp({ sport: 11, dport: 12, ext: [e] }), want: 0,
      fields: { proto: 17, l3HdrLen: 40 + size, l4Off: 40 + size, sport: 11, dport: 12, isFragment: 0 },
    });
  }
  const chain: Ext6[] = [{ type: 0 }, { type: 60 }, { type: 43 }, { type: 44, more: true, id: 99 }, { type: 51 }, { type: 60, len: 3 }];
  rows.push({
    name: 'v6 TCP after a chain of 6 extension headers (first fragment)', pkt: ipv6Tcp({ sport: 5, dport: 6, ext: chain }), want: 0,
    fields: { proto: 6, l3HdrLen: 40 + 8 + 8 + 8 + 8 + 24 + 32, sport: 5, dport: 6, isFragment: 1, moreFragments: 1, fragOffset: 0, ipId: 99 },
  });
  const eight: Ext6[] = new Array(8).fill({ type: 60 });
  rows.push({ name: 'v6 8 extension headers', pkt: ipv6Udp({ sport: 1, dport: 2, ext: eight }), want: 0, fields: { l4Off: 40 + 64, sport: 1 } });
  rows.push({ name: 'v6 9 extension headers', pkt: ipv6Udp({ sport: 1, dport: 2, ext: [...eight, { type: 0 }] }), want: DROP_INVALID_EXTHDR });
  const trunc = ipv6Raw({ proto: 59, ext: [{ type: 0 }] });
  trunc[41] = 5; // claims 48 bytes, 8 present
  rows.push({ name: 'v6 extension header runs past packet', pkt: trunc, want: DROP_INVALID_EXTHDR });
  rows.push({ name: 'v6 extension header with 1 byte left', pkt: ipv6Raw({ proto: 60, payload: [17] }), want: DROP_INVALID_EXTHDR });
  rows.push({ name: 'v6 fragment header cut', pkt: ipv6Raw({ proto: 44, payload: [17, 0, 0, 0, 0, 0, 0] }), want: DROP_INVALID_EXTHDR });
  rows.push({ name: 'v6 AH cut', pkt: ipv6Raw({ proto: 51, payload: [17, 4, 0, 0, 0, 0, 0, 0] }), want: DROP_INVALID_EXTHDR });
  rows.push({
    name: 'v6 later fragment (no L4)', pkt: ipv6Raw({ proto: 17, ext: [{ type: 0 }, { type: 44, offset: 1232, more: true, id: 0xabcdef01 }], payload: new Uint8Array(64) }), want: 0,
    fields: { proto: 17, l4Off: -1, sport: 0, dport: 0, isFragment: 1, fragOffset: 1232, moreFragments: 1, ipId: 0xabcdef01, l3HdrLen: 56 },
  });
  rows.push({
    name: 'v6 last fragment', pkt: ipv6Raw({ proto: 6, ext: [{ type: 44, offset: 8, id: 5 }], payload: new Uint8Array(3) }), want: 0,
    fields: { proto: 6, l4Off: -1, isFragment: 1, fragOffset: 8, moreFragments: 0, ipId: 5 },
  });
  rows.push({ name: 'v6 no next header', pkt: ipv6Raw({ proto: 59, ext: [{ type: 60 }] }), want: 0, fields: { proto: 59, l4Off: -1, l3HdrLen: 48 } });
  rows.push({ name: 'v6 no next header, trailing payload', pkt: ipv6Raw({ proto: 59, payload: [1, 2, 3] }), want: 0, fields: { proto: 59, l4Off: -1 } });
  rows.push({ name: 'v6 ESP stops the walk', pkt: ipv6Raw({ proto: 50, ext: [{ type: 0 }], payload: new Uint8Array(16) }), want: 0, fields: { proto: 50, l4Off: 48, sport: 0 } });
  // Header length problems.
  rows.push({ name: 'v6 39 bytes', pkt: tcp.slice(0, 39), want: DROP_INVALID });
  rows.push({ name: 'v6 payload length beyond packet', pkt: tcp.slice(0, 59), want: DROP_INVALID });
  const zero = tcp.slice();
  zero[4] = 0;
  zero[5] = 0;
  rows.push({ name: 'v6 payload length 0 (jumbogram)', pkt: zero, want: DROP_INVALID });
  rows.push({ name: 'v6 trailing bytes', pkt: [...tcp, 0, 0, 0], want: 0, fields: { totalLen: 60, sport: 40000 } });
  const cut = [...tcp, ...new Array<number>(20).fill(0)];
  cut[5] = 19;
  rows.push({ name: 'v6 payload length cuts TCP header', pkt: cut, want: DROP_CT_INVALID_HDR });
  // L4 truncations.
  rows.push({ name: 'v6 TCP 19 bytes', pkt: ipv6Raw({ proto: 6, payload: new Uint8Array(19) }), want: DROP_CT_INVALID_HDR });
  rows.push({ name: 'v6 UDP 7 bytes after ext', pkt: ipv6Raw({ proto: 17, ext: [{ type: 0 }], payload: new Uint8Array(7) }), want: DROP_CT_INVALID_HDR });
  rows.push({ name: 'v6 ICMPv6 7 bytes', pkt: ipv6Raw({ proto: 58, payload: new Uint8Array(7) }), want: DROP_CT_INVALID_HDR });
  rows.push({ name: 'v6 SCTP 11 bytes', pkt: ipv6Raw({ proto: 132, payload: new Uint8Array(11) }), want: DROP_CT_INVALID_HDR });
  // ICMPv6 errors.
  const inner = ipv6Udp({ src: B6, dst: A6, sport: 1, dport: 2, payload: new Uint8Array(100) });
  for (const type of [1, 2, 3, 4]) {
    rows.push({
      name: `v6 ICMPv6 error type ${type}`, pkt: icmpError6(type, 0, inner), want: 0,
      fields: { icmpType: type, icmpInnerOff: 48, icmpId: -1, src0: s[0], src3: s[3] },
    });
  }
  rows.push({ name: 'v6 ICMPv6 error quoting 39 bytes', pkt: icmpError6(1, 4, inner, { quote: 39 }), want: 0, fields: { icmpInnerOff: -1 } });
  return rows;
}

function badRows(): Row[] {
  return [
    { name: 'empty', pkt: [], want: DROP_UNKNOWN_L3 },
    { name: 'version 0', pkt: new Array<number>(40).fill(0), want: DROP_UNKNOWN_L3 },
    { name: 'version 5', pkt: [0x55, ...new Array<number>(39).fill(0)], want: DROP_UNKNOWN_L3 },
    { name: 'version 15', pkt: [0xf0], want: DROP_UNKNOWN_L3 },
  ];
}

function innerRows(): Row[] {
  const rows: Row[] = [];
  const t4 = ipv4Tcp({ src: A, dst: B, sport: 1234, dport: 80, flags: TCP_SYN, payload: new Uint8Array(500) });
  const err = icmpError4(11, 0, t4); // quotes header + 8 bytes
  const q = err.subarray(28);
  rows.push({
    name: 'inner v4 TCP, 8 bytes quoted', pkt: q, inner: true, want: 0,
    fields: { family: 4, proto: 6, l4Off: 20, sport: 1234, dport: 80, src0: ip4(A), dst0: ip4(B), totalLen: 28, tcpFlags: 0 },
  });
  rows.push({ name: 'outer parse rejects the same truncated header', pkt: q, want: DROP_INVALID });
  rows.push({ name: 'inner v4 TCP, 14 bytes quoted (flags visible)', pkt: icmpError4(3, 3, t4, { quote: 34 }).subarray(28), inner: true, want: 0, fields: { tcpFlags: TCP_SYN } });
  rows.push({ name: 'inner v4 TCP, 7 bytes quoted', pkt: icmpError4(11, 0, t4, { quote: 27 }).subarray(28), inner: true, want: DROP_CT_INVALID_HDR });
  rows.push({ name: 'inner v4 header cut', pkt: t4.subarray(0, 19), inner: true, want: DROP_INVALID });
  rows.push({
    name: 'inner v4 ICMP echo', pkt: icmpError4(3, 1, ipv4Icmp({ id: 77 })).subarray(28), inner: true, want: 0,
    fields: { icmpType: 8, icmpId: 77, sport: 77 },
  });
  rows.push({ name: 'inner ICMP error does not nest', pkt: icmpError4(3, 1, icmpError4(3, 1, t4), { quote: 56 }).subarray(28), inner: true, want: 0, fields: { icmpType: 3, icmpInnerOff: -1 } });
  const u6 = ipv6Udp({ src: A6, dst: B6, sport: 9, dport: 10, ext: [{ type: 60 }], payload: new Uint8Array(2000) });
  rows.push({
    name: 'inner v6 UDP after ext, 8 bytes quoted', pkt: u6.subarray(0, 56), inner: true, want: 0,
    fields: { family: 6, proto: 17, l4Off: 48, sport: 9, dport: 10, totalLen: 56 },
  });
  const t6 = ipv6Tcp({ sport: 3, dport: 4, payload: new Uint8Array(100) });
  rows.push({ name: 'inner v6 TCP 8 bytes', pkt: t6.subarray(0, 48), inner: true, want: 0, fields: { sport: 3, dport: 4 } });
  rows.push({ name: 'inner v6 ext header cut', pkt: u6.subarray(0, 44), inner: true, want: DROP_INVALID_EXTHDR });
  rows.push({ name: 'inner bad version', pkt: [0x30, 0, 0, 0], inner: true, want: DROP_UNKNOWN_L3 });
  return rows;
}

describe('parsePacket', () => {
  for (const [group, rows] of [['IPv4', v4Rows()], ['IPv6', v6Rows()], ['bad L3', badRows()]] as const) {
    it(`${group}: ${rows.length} table rows`, () => {
      for (const row of rows) check(row);
    });
  }

  it('ICMP error: parseInner at icmpInnerOff recovers the quoted flow', () => {
    const inner4 = ipv4Udp({ src: A, dst: B, sport: 5000, dport: 53, payload: new Uint8Array(40) });
    const inner6 = ipv6Tcp({ src: A6, dst: B6, sport: 6000, dport: 22, payload: new Uint8Array(40) });
    for (const [name, pkt, sport, dport] of [
      ['v4', icmpError4(3, 3, inner4), 5000, 53],
      ['v6', icmpError6(1, 4, inner6, { quote: 48 }), 6000, 22],
    ] as const) {
      const buf = new Uint8Array(pkt.length + 10);
      buf.set(pkt, 10);
      const dv = new DataView(buf.buffer);
      const outer = new PacketInfo();
      const inner = new PacketInfo();
      assert.equal(parsePacket(buf, dv, 10, pkt.length, outer), 0, `${name}: outer parse`);
      assert.notEqual(outer.icmpInnerOff, -1, `${name}: icmpInnerOff: got -1, want an offset`);
      const end = outer.l3Off + outer.totalLen;
      const rc = parseInner(buf, dv, outer.icmpInnerOff, end - outer.icmpInnerOff, inner);
      assert.equal(rc, 0, `${name}: inner parse: got ${rc}, want 0`);
      assert.equal(inner.sport, sport, `${name}: inner sport: got ${inner.sport}, want ${sport}`);
      assert.equal(inner.dport, dport, `${name}: inner dport: got ${inner.dport}, want ${dport}`);
      // The quoted packet goes the other way: its source is the outer destination.
      assert.equal(inner.src0, outer.dst0, `${name}: inner src0: got ${inner.src0}, want ${outer.dst0}`);
      assert.ok(inner.l3Off + inner.totalLen <= end, `${name}: inner end ${inner.l3Off + inner.totalLen} past outer end ${end}`);
    }
  });

  it('parseInner table', () => {
    for (const row of innerRows()) check(row);
  });

  it('resets fields between packets', () => {
    const info = check({ name: 'fragment', pkt: ipv6Raw({ proto: 17, ext: [{ type: 44, offset: 16 }], payload: [1] }), want: 0 });
    assert.equal(info.isFragment, 1);
    check({
      name: 'after fragment', pkt: ipv4Icmp({ id: 3 }), want: 0,
      fields: { isFragment: 0, fragOffset: 0, ipId: 1, src1: 0, dst3: 0, family: 4, icmpId: 3 },
    });
  });
});

describe('drop reasons', () => {
  const cilium: [number, string, string][] = [
    [132, 'INVALID_SIP', 'Invalid source ip'],
    [133, 'POLICY', 'Policy denied'],
    [134, 'INVALID', 'Invalid packet'],
    [135, 'CT_INVALID_HDR', 'CT: Truncated or invalid header'],
    [137, 'CT_UNKNOWN_PROTO', 'CT: Unknown L4 protocol'],
    [139, 'UNKNOWN_L3', 'Unsupported L3 protocol'],
    [142, 'UNKNOWN_L4', 'Unknown L4 protocol'],
    [150, 'UNKNOWN_TARGET', 'Unknown L3 target address'],
    [151, 'UNROUTABLE', 'Stale or unroutable IP'],
    [155, 'CT_CREATE_FAILED', 'CT: Map insertion failed'],
    [156, 'INVALID_EXTHDR', 'Invalid IPv6 extension header'],
    [157, 'FRAG_NOSUPPORT', 'IP fragmentation not supported'],
    [165, 'NO_CONFIG', 'No configuration available to perform policy decision'],
    [175, 'FRAG_NOT_FOUND', 'First logical datagram fragment not found'],
    [181, 'POLICY_DENY', 'Policy denied by denylist'],
    [196, 'TTL_EXCEEDED', 'TTL exceeded'],
    [230, 'QUEUE_FULL', 'tunswitch: shard queue full (backpressure)'],
  ];
  it('known codes have Cilium names and texts, for both signs', () => {
    for (const [code, name, text] of cilium) {
      for (const c of [code, -code]) {
        assert.equal(dropReasonText(c), text, `text(${c}): got ${dropReasonText(c)}, want ${text}`);
        assert.equal(dropReasonName(c), name, `name(${c}): got ${dropReasonName(c)}, want ${name}`);
      }
      const k = `DROP_${name}` as keyof typeof drop;
      assert.equal(drop[k], -code, `${k}: got ${String(drop[k])}, want ${-code}`);
    }
  });
  it('every exported DROP_ constant is a negative code in the table with a matching name', () => {
    let n = 0;
    for (const [k, v] of Object.entries(drop)) {
      if (!k.startsWith('DROP_') || k === 'DROP_REASONS') continue;
      n++;
      assert.equal(typeof v, 'number', `${k}: got ${typeof v}, want number`);
      const code = v as number;
      assert.ok(code <= 0 && isKnownDropCode(code), `${k} = ${code}: not a known code`);
      assert.equal(`DROP_${dropReasonName(code)}`, k, `name of ${code}: got DROP_${dropReasonName(code)}, want ${k}`);
    }
    assert.equal(n, DROP_REASONS.length, `exported constants: got ${n}, want one per table row (${DROP_REASONS.length})`);
  });
  it('table is sorted, unique, within MAX_DROP_CODE; tunswitch codes are >= 230', () => {
    for (let i = 0; i < DROP_REASONS.length; i++) {
      const d = DROP_REASONS[i]!;
      assert.ok(d.code >= 0 && d.code < MAX_DROP_CODE, `code ${d.code} out of range`);
      if (i > 0) assert.ok(d.code > DROP_REASONS[i - 1]!.code, `code ${d.code} not after ${DROP_REASONS[i - 1]!.code}`);
      assert.equal(d.text.startsWith('tunswitch:'), d.code >= 230, `code ${d.code} "${d.text}": tunswitch range is 230..255`);
    }
  });
  it('unknown codes get a text naming the number', () => {
    for (const c of [1, 129, 229, -250, 255, 1000]) {
      assert.equal(isKnownDropCode(c), false, `isKnownDropCode(${c}): got true, want false`);
      const want = `Unknown drop reason ${Math.abs(c)}`;
      assert.equal(dropReasonText(c), want, `text(${c}): got ${dropReasonText(c)}, want ${want}`);
    }
  });
});

describe('packet helpers', () => {
  it('ip4 / ip6 conversions', () => {
    const v4: [string, number][] = [['10.0.0.1', 0x0a000001], ['255.255.255.255', 0xffffffff], ['0.0.0.0', 0], ['192.168.7.9', 0xc0a80709]];
    for (const [s, want] of v4) assert.equal(ip4(s), want, `ip4(${s}): got ${ip4(s).toString(16)}, want ${want.toString(16)}`);
    const v6: [string, number[]][] = [
      ['fd00::1', [0xfd000000, 0, 0, 1]],
      ['::', [0, 0, 0, 0]],
      ['2001:db8:1:2:3:4:5:6', [0x20010db8, 0x00010002, 0x00030004, 0x00050006]],
      ['::ffff:10.0.0.1', [0, 0, 0xffff, 0x0a000001]],
      ['fe80::', [0xfe800000, 0, 0, 0]],
    ];
    for (const [s, want] of v6) assert.deepEqual(ip6(s), want, `ip6(${s}): got ${ip6(s)}, want ${want}`);
    for (const bad of ['10.0.0', '10.0.0.256', 'x.1.2.3']) assert.throws(() => ip4(bad), /bad address/, `ip4(${bad}) should throw`);
    for (const bad of ['1::2::3', '1:2:3:4:5:6:7', 'fffff::', '1:2:3:4:5:6:7:8:9']) assert.throws(() => ip6(bad), /bad address/, `ip6(${bad}) should throw`);
  });

  it('ipv4Fragments: pieces fit the MTU and reassemble to the original payload', () => {
    // Options: one with the copy bit (0x83, loose source route, 7 bytes) and one without (0x07, record route).
    const options = [0x83, 7, 4, 1, 2, 3, 4, 0x07, 7, 4, 0, 0, 0, 0, 0, 0];
    const orig = ipv4Udp({ sport: 1, dport: 2, options, payload: Array.from({ length: 1500 }, (_, i) => i & 0xff) });
    const hl = (orig[0]! & 0x0f) * 4;
    for (const mtu of [68, 100, 576, 1000, 1499]) {
      const frags = ipv4Fragments(orig, mtu);
      const body = new Uint8Array(orig.length - hl);
      const info = new PacketInfo();
      frags.forEach((f, i) => {
        assert.ok(f.length <= mtu, `mtu ${mtu} frag ${i}: length ${f.length} > mtu`);
        assert.equal(parsePacket(f, new DataView(f.buffer), 0, f.length, info), 0, `mtu ${mtu} frag ${i}: parse`);
        const want = i === 0 ? hl : 28; // later fragments keep only the copied option (7 bytes, padded to 8)
        assert.equal(info.l3HdrLen, want, `mtu ${mtu} frag ${i}: header got ${info.l3HdrLen}, want ${want}`);
        body.set(f.subarray(info.l3HdrLen), info.fragOffset);
        assert.equal(info.moreFragments, i < frags.length - 1 ? 1 : 0, `mtu ${mtu} frag ${i}: MF`);
      });
      assert.deepEqual(body, orig.subarray(hl), `mtu ${mtu}: reassembled payload differs`);
    }
  });
});
