/**
 * Packet builders for tests and benchmarks. Every builder returns a fresh Uint8Array holding
 * one IP packet (no link-layer header, as read from a TUN device) with correct lengths and
 * checksums (IPv4 header, TCP/UDP/ICMP/ICMPv6 one's-complement, SCTP CRC32c).
 *
 *   ipv4Tcp({ src: '10.0.0.1', dst: '10.0.0.2', sport: 40000, dport: 80, flags: TCP_SYN })
 *   ipv6Udp({ src: 'fd00::1', dst: 'fd00::2', sport: 5353, dport: 53, ext: [{ type: 0 }] })
 *   icmpError4(3, 3, ipv4Udp({ sport: 1, dport: 2 }))   // port unreachable quoting a UDP packet
 *   new PacketSlab([p1, p2]).off(1)                      // packets at fixed slots in one buffer
 *
 * Defaults: IPv4 10.0.0.1 -> 10.0.0.2, IPv6 fd00::1 -> fd00::2, TTL / hop limit 64, empty
 * payload. Addresses may be given as strings or (IPv4) a u32 / (IPv6) four u32 words.
 * Builders are for tests: they allocate freely and throw on nonsense arguments.
 */
import { csumPartial, csumFold, ipv4HeaderChecksum, l4Checksum4, l4Checksum6 } from '../../src/datapath/checksum.js';

export type Bytes = Uint8Array | readonly number[];
export type Addr4 = string | number;
export type Addr6 = string | readonly [number, number, number, number];

// ---------------------------------------------------------------------------------------
// Addresses

/** '10.0.0.1' -> 0x0a000001 (unsigned). Throws on a malformed address. */
export function ip4(s: string): number {
  const parts = s.split('.');
  if (parts.length !== 4) throw new Error(`ip4: bad address ${JSON.stringify(s)}`);
  let n = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) throw new Error(`ip4: bad address ${JSON.stringify(s)}`);
    n = n * 256 + Number(p);
  }
  return n >>> 0;
}

/** 0x0a000001 -> '10.0.0.1'. */
export function ip4str(n: number): string {
  return `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/** 'fd00::1' -> [0xfd000000, 0, 0, 1]; supports '::' and a trailing dotted IPv4. */
export function ip6(s: string): [number, number, number, number] {
  const bad = (): never => {
    throw new Error(`ip6: bad address ${JSON.stringify(s)}`);
  };
  let text = s;
  const groups: number[] = [];
  const tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (text.indexOf('.', lastColon) >= 0) {
    const v4 = ip4(text.slice(lastColon + 1));
    text = text.slice(0, lastColon + 1) + '0:0';
    tail.push(v4 >>> 16, v4 & 0xffff);
  }
  const halves = text.split('::');
  if (halves.length > 2) bad();
  const parse = (h: string): number[] =>
    h === '' ? [] : h.split(':').map((g) => (/^[0-9a-fA-F]{1,4}$/.test(g) ? parseInt(g, 16) : bad()));
  const head = parse(halves[0]!);
  const rest = halves.length === 2 ? parse(halves[1]!) : [];
  if (halves.length === 2) {
    if (head.length + rest.length > 7) bad();
    groups.push(...head, ...new Array<number>(8 - head.length - rest.length).fill(0), ...rest);
  } else {
    if (head.length !== 8) bad();
    groups.push(...head);
  }
  if (tail.length === 2) {
    groups[6] = tail[0]!;
    groups[7] = tail[1]!;
  }
  const w = (i: number): number => ((groups[2 * i]! << 16) | groups[2 * i + 1]!) >>> 0;
  return [w(0), w(1), w(2), w(3)];
}

/** Four words -> 'fd00:0:0:0:0:0:0:1' (uncompressed, for messages). */
export function ip6str(w: readonly number[]): string {
  const g: string[] = [];
  for (let i = 0; i < 4; i++) g.push(((w[i]! >>> 16) & 0xffff).toString(16), (w[i]! & 0xffff).toString(16));
  return g.join(':');
}

function addr4(a: Addr4 | undefined, dflt: string): number {
  return a === undefined ? ip4(dflt) : typeof a === 'number' ? a >>> 0 : ip4(a);
}
function addr6(a: Addr6 | undefined, dflt: string): readonly number[] {
  return a === undefined ? ip6(dflt) : typeof a === 'string' ? ip6(a) : a;
}
function bytes(b: Bytes | undefined): Uint8Array {
  return b === undefined ? new Uint8Array(0) : b instanceof Uint8Array ? b : Uint8Array.from(b);
}
function u16(x: number, what: string): number {
  if (!Number.isInteger(x) || x < 0 || x > 0xffff) throw new Error(`${what}: ${x} is not a 16-bit value`);
  return x;
}

// ---------------------------------------------------------------------------------------
// L4 headers (checksum left zero; the IP builders fill it in)

export const PROTO_ICMP = 1;
export const PROTO_TCP = 6;
export const PROTO_UDP = 17;
export const PROTO_ICMPV6 = 58;
export const PROTO_SCTP = 132;

export interface TcpFields {
  sport: number;
  dport: number;
  /** TCP flags byte (see TCP_* in src/datapath/packet.ts). Default SYN (0x02). */
  flags?: number;
  seq?: number;
  ack?: number;
  window?: number;
  /** TCP options, padded with zeros (EOL) to a multiple of 4. */
  tcpOptions?: Bytes;
  payload?: Bytes;
}
export interface UdpFields {
  sport: number;
  dport: number;
  payload?: Bytes;
}
export interface IcmpFields {
  /** Default: echo request (8 for ICMPv4, 128 for ICMPv6). */
  type?: number;
  code?: number;
  /** Echo identifier and sequence (bytes 4..7 of the ICMP header). */
  id?: number;
  seq?: number;
  payload?: Bytes;
}
export interface SctpFields {
  sport: number;
  dport: number;
  vtag?: number;
  /** Chunks, as raw bytes. */
  payload?: Bytes;
}

function tcpSegment(f: TcpFields): Uint8Array {
  const opt = bytes(f.tcpOptions);
  const optLen = (opt.length + 3) & ~3;
  const hl = 20 + optLen;
  if (hl > 60) throw new Error(`tcp: options too long (${opt.length} bytes, max 40)`);
  const pl = bytes(f.payload);
  const b = new Uint8Array(hl + pl.length);
  const dv = new DataView(b.buffer);
  dv.setUint16(0, u16(f.sport, 'sport'));
  dv.setUint16(2, u16(f.dport, 'dport'));
  dv.setUint32(4, (f.seq ?? 1000) >>> 0);
  dv.setUint32(8, (f.ack ?? 0) >>> 0);
  b[12] = (hl >> 2) << 4;
  b[13] = (f.flags ?? 0x02) & 0xff;
  dv.setUint16(14, u16(f.window ?? 65535, 'window'));
  b.set(opt, 20);
  b.set(pl, hl);
  return b;
}

function udpDatagram(f: UdpFields): Uint8Array {
  const pl = bytes(f.payload);
  const b = new Uint8Array(8 + pl.length);
  const dv = new DataView(b.buffer);
  dv.setUint16(0, u16(f.sport, 'sport'));
  dv.setUint16(2, u16(f.dport, 'dport'));
  dv.setUint16(4, b.length & 0xffff);
  b.set(pl, 8);
  return b;
}

function icmpMessage(f: IcmpFields, dfltType: number): Uint8Array {
  const pl = bytes(f.payload);
  const b = new Uint8Array(8 + pl.length);
  const dv = new DataView(b.buffer);
  b[0] = f.type ?? dfltType;
  b[1] = f.code ?? 0;
  dv.setUint16(4, u16(f.id ?? 0x1234, 'icmp id'));
  dv.setUint16(6, u16(f.seq ?? 1, 'icmp seq'));
  b.set(pl, 8);
  return b;
}

function sctpPacket(f: SctpFields): Uint8Array {
  const pl = bytes(f.payload);
  const b = new Uint8Array(12 + pl.length);
  const dv = new DataView(b.buffer);
  dv.setUint16(0, u16(f.sport, 'sport'));
  dv.setUint16(2, u16(f.dport, 'dport'));
  dv.setUint32(4, (f.vtag ?? 0xcafe) >>> 0);
  b.set(pl, 12);
  return b;
}

const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

/** CRC32c (Castagnoli) as SCTP uses it (RFC 9260 appendix B). */
export function crc32c(b: Uint8Array, off = 0, len = b.length - off): number {
  let c = 0xffffffff;
  for (let i = off; i < off + len; i++) c = CRC32C_TABLE[(c ^ b[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * Fill in the checksum of the L4 header at pkt[l4Off..] for `proto`. `family` selects the
 * pseudo-header. Other protocols are left alone.
 */
export function fixL4Checksum(pkt: Uint8Array, family: 4 | 6, l3Off: number, l4Off: number, proto: number): void {
  const dv = new DataView(pkt.buffer, pkt.byteOffset, pkt.byteLength);
  const l4Len = pkt.length - l4Off;
  const pseudo = family === 4 ? l4Checksum4 : l4Checksum6;
  if (proto === PROTO_TCP && l4Len >= 20) {
    dv.setUint16(l4Off + 16, 0);
    dv.setUint16(l4Off + 16, pseudo(pkt, l3Off, l4Off, l4Len, proto));
  } else if (proto === PROTO_UDP && l4Len >= 8) {
    dv.setUint16(l4Off + 6, 0);
    const c = pseudo(pkt, l3Off, l4Off, l4Len, proto);
    dv.setUint16(l4Off + 6, c === 0 ? 0xffff : c);
  } else if (proto === PROTO_ICMP && family === 4 && l4Len >= 8) {
    dv.setUint16(l4Off + 2, 0);
    dv.setUint16(l4Off + 2, ~csumFold(csumPartial(pkt, l4Off, l4Len, 0)) & 0xffff);
  } else if (proto === PROTO_ICMPV6 && family === 6 && l4Len >= 8) {
    dv.setUint16(l4Off + 2, 0);
    dv.setUint16(l4Off + 2, pseudo(pkt, l3Off, l4Off, l4Len, proto));
  } else if (proto === PROTO_SCTP && l4Len >= 12) {
    dv.setUint32(l4Off + 8, 0);
    dv.setUint32(l4Off + 8, crc32c(pkt, l4Off, l4Len), true); // stored little-endian, as Linux does
  }
}

// ---------------------------------------------------------------------------------------
// IPv4

export interface Ip4Fields {
  src?: Addr4;
  dst?: Addr4;
  ttl?: number;
  /** Identification. Default 1. (In ipv4Icmp `id` is the echo identifier; use ipId there.) */
  id?: number;
  /** Identification; wins over `id`. */
  ipId?: number;
  tos?: number;
  /** Don't Fragment flag. */
  df?: boolean;
  /** Raw flags+offset word (overrides df). For hand-made fragments. */
  fragWord?: number;
  /** IP options, padded with zeros (EOL) to a multiple of 4 (max 40 bytes). */
  options?: Bytes;
}

/** An IPv4 packet carrying `l4` as protocol `proto`; fixes the L4 checksum for known protocols. */
export function ipv4Raw(f: Ip4Fields & { proto: number; payload?: Bytes; fixL4?: boolean }): Uint8Array {
  return ipv4Wrap(f, f.proto, bytes(f.payload), f.fixL4 ?? false);
}

function ipv4Wrap(f: Ip4Fields, proto: number, l4: Uint8Array, fixL4: boolean): Uint8Array {
  const opt = bytes(f.options);
  const optLen = (opt.length + 3) & ~3;
  const hl = 20 + optLen;
  if (hl > 60) throw new Error(`ipv4: options too long (${opt.length} bytes, max 40)`);
  const total = hl + l4.length;
  if (total > 0xffff) throw new Error(`ipv4: packet too long (${total})`);
  const b = new Uint8Array(total);
  const dv = new DataView(b.buffer);
  b[0] = 0x40 | (hl >> 2);
  b[1] = f.tos ?? 0;
  dv.setUint16(2, total);
  dv.setUint16(4, u16(f.ipId ?? f.id ?? 1, 'id'));
  dv.setUint16(6, f.fragWord ?? (f.df ? 0x4000 : 0));
  b[8] = f.ttl ?? 64;
  b[9] = proto;
  dv.setUint32(12, addr4(f.src, '10.0.0.1'));
  dv.setUint32(16, addr4(f.dst, '10.0.0.2'));
  b.set(opt, 20);
  b.set(l4, hl);
  dv.setUint16(10, ipv4HeaderChecksum(b, 0, hl));
  if (fixL4) fixL4Checksum(b, 4, 0, hl, proto);
  return b;
}

export function ipv4Tcp(f: Ip4Fields & TcpFields): Uint8Array {
  return ipv4Wrap(f, PROTO_TCP, tcpSegment(f), true);
}
export function ipv4Udp(f: Ip4Fields & UdpFields): Uint8Array {
  return ipv4Wrap(f, PROTO_UDP, udpDatagram(f), true);
}
export function ipv4Icmp(f: Ip4Fields & IcmpFields = {}): Uint8Array {
  return ipv4Wrap({ ...f, id: undefined }, PROTO_ICMP, icmpMessage(f, 8), true);
}
export function ipv4Sctp(f: Ip4Fields & SctpFields): Uint8Array {
  return ipv4Wrap(f, PROTO_SCTP, sctpPacket(f), true);
}

/**
 * Split an IPv4 packet into fragments of at most `mtu` bytes (RFC 791). Options without
 * the copy bit are kept only in the first fragment. Fragmenting a fragment works (offsets
 * add up, the last piece keeps the original MF). Throws if DF is set and a split is needed.
 */
export function ipv4Fragments(packet: Uint8Array, mtu: number): Uint8Array[] {
  const dv = new DataView(packet.buffer, packet.byteOffset, packet.byteLength);
  const hl = (packet[0]! & 0x0f) << 2;
  const total = dv.getUint16(2);
  const word = dv.getUint16(6);
  if (total <= mtu) return [packet.slice(0, total)];
  if (word & 0x4000) throw new Error('ipv4Fragments: DF is set');
  const baseOff = (word & 0x1fff) << 3;
  const lastMf = word & 0x2000;
  // Options for the later fragments: only those with the copied flag (0x80).
  const later: number[] = [];
  for (let i = 20; i < hl; ) {
    const t = packet[i]!;
    if (t === 0) break;
    if (t === 1) { i++; continue; }
    const ol = packet[i + 1]!;
    if (ol < 2 || i + ol > hl) break;
    if (t & 0x80) for (let k = 0; k < ol; k++) later.push(packet[i + k]!);
    i += ol;
  }
  const laterHl = 20 + ((later.length + 3) & ~3);
  const out: Uint8Array[] = [];
  let pos = hl;
  while (pos < total) {
    const first = pos === hl;
    const fhl = first ? hl : laterHl;
    const room = (mtu - fhl) & ~7;
    if (room <= 0) throw new Error(`ipv4Fragments: mtu ${mtu} too small`);
    const n = Math.min(room, total - pos);
    const last = pos + n >= total;
    const f = new Uint8Array(fhl + n);
    const fdv = new DataView(f.buffer);
    f.set(packet.subarray(0, 20), 0);
    if (first) f.set(packet.subarray(20, hl), 20);
    else f.set(later, 20);
    f[0] = 0x40 | (fhl >> 2);
    f.set(packet.subarray(pos, pos + n), fhl);
    fdv.setUint16(2, fhl + n);
    const off = baseOff + (pos - hl);
    fdv.setUint16(6, (word & 0x4000) | (last ? lastMf : 0x2000) | (off >> 3));
    fdv.setUint16(10, 0);
    fdv.setUint16(10, ipv4HeaderChecksum(f, 0, fhl));
    out.push(f);
    pos += n;
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// IPv6

/** An IPv6 extension header to insert between the fixed header and the L4 header. */
export type Ext6 =
  /** Hop-by-hop (0), routing (43) or destination options (60); `len` = Hdr Ext Len (8-byte units after the first 8). */
  | { type: 0 | 43 | 60; len?: number }
  /** Authentication header; `len` = Payload Len field ((total / 4) - 2), default 4 (24 bytes). */
  | { type: 51; len?: number; spi?: number }
  /** Fragment header; `offset` in bytes (multiple of 8). */
  | { type: 44; offset?: number; more?: boolean; id?: number };

export interface Ip6Fields {
  src?: Addr6;
  dst?: Addr6;
  hopLimit?: number;
  trafficClass?: number;
  flowLabel?: number;
  ext?: readonly Ext6[];
}

function extBytes(e: Ext6, next: number): Uint8Array {
  let b: Uint8Array;
  if (e.type === 44) {
    const offset = e.offset ?? 0;
    if (offset % 8 !== 0 || offset > 0xfff8) throw new Error(`ipv6 fragment offset ${offset} invalid`);
    b = new Uint8Array(8);
    const dv = new DataView(b.buffer);
    dv.setUint16(2, offset | (e.more ? 1 : 0));
    dv.setUint32(4, (e.id ?? 0x12345678) >>> 0);
  } else if (e.type === 51) {
    const n = e.len ?? 4;
    b = new Uint8Array((n + 2) * 4);
    b[1] = n;
    const dv = new DataView(b.buffer);
    if (b.length >= 12) {
      dv.setUint32(4, (e.spi ?? 0x100) >>> 0);
      dv.setUint32(8, 1);
    }
  } else {
    const n = e.len ?? 0;
    b = new Uint8Array((n + 1) * 8);
    b[1] = n;
    if (e.type === 43) {
      b[2] = 4; // routing type (SRH number, any is fine with segments left 0)
      b[3] = 0; // segments left
    } else {
      // Options area: one PadN option covering it (type 1, length = area - 2).
      b[2] = 1;
      b[3] = b.length - 4;
    }
  }
  b[0] = next;
  return b;
}

function ipv6Wrap(f: Ip6Fields, proto: number, l4: Uint8Array, fixL4: boolean): Uint8Array {
  const exts = f.ext ?? [];
  const parts: Uint8Array[] = [];
  for (let i = 0; i < exts.length; i++) {
    parts.push(extBytes(exts[i]!, i + 1 < exts.length ? exts[i + 1]!.type : proto));
  }
  const extLen = parts.reduce((a, p) => a + p.length, 0);
  const plen = extLen + l4.length;
  if (plen > 0xffff) throw new Error(`ipv6: payload too long (${plen})`);
  const b = new Uint8Array(40 + plen);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, ((6 << 28) | ((f.trafficClass ?? 0) << 20) | ((f.flowLabel ?? 0) & 0xfffff)) >>> 0);
  dv.setUint16(4, plen);
  b[6] = exts.length > 0 ? exts[0]!.type : proto;
  b[7] = f.hopLimit ?? 64;
  const s = addr6(f.src, 'fd00::1');
  const d = addr6(f.dst, 'fd00::2');
  for (let i = 0; i < 4; i++) {
    dv.setUint32(8 + 4 * i, s[i]! >>> 0);
    dv.setUint32(24 + 4 * i, d[i]! >>> 0);
  }
  let pos = 40;
  for (const p of parts) {
    b.set(p, pos);
    pos += p.length;
  }
  b.set(l4, pos);
  if (fixL4) fixL4Checksum(b, 6, 0, pos, proto);
  return b;
}

/** An IPv6 packet whose final next header is `proto` and whose upper-layer bytes are `payload`. */
export function ipv6Raw(f: Ip6Fields & { proto: number; payload?: Bytes; fixL4?: boolean }): Uint8Array {
  return ipv6Wrap(f, f.proto, bytes(f.payload), f.fixL4 ?? false);
}
export function ipv6Tcp(f: Ip6Fields & TcpFields): Uint8Array {
  return ipv6Wrap(f, PROTO_TCP, tcpSegment(f), true);
}
export function ipv6Udp(f: Ip6Fields & UdpFields): Uint8Array {
  return ipv6Wrap(f, PROTO_UDP, udpDatagram(f), true);
}
export function ipv6Icmp(f: Ip6Fields & IcmpFields = {}): Uint8Array {
  return ipv6Wrap(f, PROTO_ICMPV6, icmpMessage(f, 128), true);
}
export function ipv6Sctp(f: Ip6Fields & SctpFields): Uint8Array {
  return ipv6Wrap(f, PROTO_SCTP, sctpPacket(f), true);
}

// ---------------------------------------------------------------------------------------
// ICMP errors

export interface IcmpErrorOpts {
  /** Outer addresses; default: from the inner packet's destination back to its source. */
  src?: string;
  dst?: string;
  ttl?: number;
  /** Bytes of the inner packet to quote. v4 default: its header + 8 bytes (RFC 792);
   *  v6 default: as much as fits in 1280 bytes (RFC 4443). */
  quote?: number;
  /** Bytes 4..7 of the ICMP header (next-hop MTU, pointer, gateway, ...). Default 0. */
  rest?: number;
}

/** An ICMPv4 error (type 3, 4, 5, 11, 12) quoting `inner` (an IPv4 packet). */
export function icmpError4(type: number, code: number, inner: Uint8Array, o: IcmpErrorOpts = {}): Uint8Array {
  const idv = new DataView(inner.buffer, inner.byteOffset, inner.byteLength);
  const ihl = (inner[0]! & 0x0f) << 2;
  const q = Math.min(inner.length, o.quote ?? ihl + 8);
  const msg = new Uint8Array(8 + q);
  msg[0] = type;
  msg[1] = code;
  new DataView(msg.buffer).setUint32(4, (o.rest ?? 0) >>> 0);
  msg.set(inner.subarray(0, q), 8);
  const f: Ip4Fields = {
    src: o.src ?? (inner.length >= 20 ? idv.getUint32(16) : undefined),
    dst: o.dst ?? (inner.length >= 20 ? idv.getUint32(12) : undefined),
  };
  if (o.ttl !== undefined) f.ttl = o.ttl;
  return ipv4Wrap(f, PROTO_ICMP, msg, true);
}

/** An ICMPv6 error (type 1..4) quoting `inner` (an IPv6 packet). */
export function icmpError6(type: number, code: number, inner: Uint8Array, o: IcmpErrorOpts = {}): Uint8Array {
  const idv = new DataView(inner.buffer, inner.byteOffset, inner.byteLength);
  const q = Math.min(inner.length, o.quote ?? 1280 - 48);
  const msg = new Uint8Array(8 + q);
  msg[0] = type;
  msg[1] = code;
  new DataView(msg.buffer).setUint32(4, (o.rest ?? 0) >>> 0);
  msg.set(inner.subarray(0, q), 8);
  const words = (at: number): [number, number, number, number] =>
    [idv.getUint32(at), idv.getUint32(at + 4), idv.getUint32(at + 8), idv.getUint32(at + 12)];
  const f: Ip6Fields = {
    src: o.src ?? (inner.length >= 40 ? words(24) : undefined),
    dst: o.dst ?? (inner.length >= 40 ? words(8) : undefined),
  };
  if (o.ttl !== undefined) f.hopLimit = o.ttl;
  return ipv6Wrap(f, PROTO_ICMPV6, msg, true);
}

// ---------------------------------------------------------------------------------------
// Slabs

/**
 * Packets laid out at fixed-size slots in one buffer, the way the I/O thread fills a slab:
 * packet i lives at buf[off(i), off(i) + len(i)). `buf` and `dv` view the same bytes.
 */
export class PacketSlab {
  readonly buf: Uint8Array;
  readonly dv: DataView;
  readonly slotSize: number;
  readonly count: number;
  readonly lens: Uint32Array;

  constructor(packets: readonly Uint8Array[], slotSize = 2048, opts: { shared?: boolean; fill?: number } = {}) {
    const size = slotSize * Math.max(1, packets.length);
    const ab = opts.shared ? new SharedArrayBuffer(size) : new ArrayBuffer(size);
    this.buf = new Uint8Array(ab);
    if (opts.fill !== undefined) this.buf.fill(opts.fill);
    this.dv = new DataView(ab);
    this.slotSize = slotSize;
    this.count = packets.length;
    this.lens = new Uint32Array(packets.length);
    for (let i = 0; i < packets.length; i++) {
      const p = packets[i]!;
      if (p.length > slotSize) throw new Error(`PacketSlab: packet ${i} is ${p.length} bytes, slot is ${slotSize}`);
      this.buf.set(p, i * slotSize);
      this.lens[i] = p.length;
    }
  }

  /** Offset of packet i in buf. */
  off(i: number): number {
    return i * this.slotSize;
  }
  /** Length of packet i. */
  len(i: number): number {
    return this.lens[i]!;
  }
}
