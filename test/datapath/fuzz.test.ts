/**
 * Parser fuzz: seeded random and mutated packets. The only acceptable outcomes are 0 or a
 * code from DROP_REASONS; the parser never throws, never reads outside its window, reports
 * offsets inside the window, and still parses valid packets correctly afterwards.
 *
 * "Never reads outside the window" is checked two ways:
 *  - differentially: each input is parsed twice, placed at different offsets in two buffers
 *    filled with different canary bytes, and the results must agree;
 *  - directly: a third parse goes through bounds-checking stand-ins for the Uint8Array and
 *    the DataView that throw on any access outside [off, off+len).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { dropReasonText, isKnownDropCode } from '../../src/datapath/drop.js';
import { PacketInfo } from '../../src/datapath/packet.js';
import { TCP_ACK, TCP_SYN } from '../../src/proto/ip.js';
import { parseInner, parsePacket } from '../../src/datapath/parse.js';
import { Rand } from '../helpers/rand.js';
import {
  type Ext6,
  icmpError4,
  icmpError6,
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

const SEED = 0x5eed;
const ITERATIONS = 200_000;
const MAX_PKT = 1600;

const FIELDS = [
  'family', 'l3HdrLen', 'totalLen', 'proto', 'src0', 'src1', 'src2', 'src3', 'dst0', 'dst1', 'dst2', 'dst3',
  'sport', 'dport', 'tcpFlags', 'icmpType', 'icmpCode', 'icmpId', 'ttl', 'isFragment', 'fragOffset',
  'moreFragments', 'ipId',
] as const;
const OFFSETS = ['l3Off', 'l4Off', 'icmpInnerOff', 'ttlOff'] as const;

/** Valid packets of every kind the parser knows. */
function corpus(r: Rand): Uint8Array[] {
  const out: Uint8Array[] = [];
  const pl = (): Uint8Array => r.bytes(r.int(64));
  const ext6 = (): Ext6[] => {
    const all: Ext6[] = [{ type: 0, len: r.int(3) }, { type: 43, len: r.int(2) }, { type: 60 }, { type: 51, len: 1 + r.int(5) }, { type: 44, more: r.bool(), id: r.u32() }];
    const n = r.int(4);
    const e: Ext6[] = [];
    for (let i = 0; i < n; i++) e.push(r.pick(all));
    return e;
  };
  for (let i = 0; i < 8; i++) {
    const sport = r.range(1, 65535);
    const dport = r.range(1, 65535);
    const options = r.bool() ? r.bytes(4 * r.int(11)) : undefined;
    const v4 = ipv4Udp({ sport, dport, payload: r.bytes(32 + r.int(200)) });
    const v6 = ipv6Tcp({ sport, dport, payload: r.bytes(r.int(100)) });
    out.push(
      ipv4Tcp({ sport, dport, flags: TCP_SYN | TCP_ACK, payload: pl(), options, tcpOptions: r.bytes(4 * r.int(11)) }),
      ipv4Udp({ sport, dport, payload: pl(), options }),
      ipv4Icmp({ type: r.pick([0, 8, 13]), id: sport, payload: pl() }),
      ipv4Sctp({ sport, dport, payload: pl() }),
      ipv4Raw({ proto: r.pick([47, 50, 89, 255]), payload: pl() }),
      ...ipv4Fragments(ipv4Udp({ sport, dport, payload: r.bytes(600) }), 200),
      icmpError4(r.pick([3, 4, 5, 11, 12]), r.int(16), r.pick([v4, ipv4Tcp({ sport, dport }), ipv4Icmp({})]), { quote: r.range(20, 120) }),
      ipv6Tcp({ sport, dport, payload: pl(), ext: ext6() }),
      ipv6Udp({ sport, dport, payload: pl(), ext: ext6() }),
      ipv6Icmp({ type: r.pick([128, 129, 135]), id: sport, payload: pl(), ext: ext6() }),
      ipv6Sctp({ sport, dport, payload: pl(), ext: ext6() }),
      ipv6Raw({ proto: 59, ext: ext6(), payload: pl() }),
      ipv6Raw({ proto: 17, ext: [{ type: 44, offset: 8 * r.range(1, 100), more: r.bool() }], payload: r.bytes(8 + r.int(50)) }),
      icmpError6(r.range(1, 4), r.int(8), r.pick([v6, ipv6Udp({ sport, dport, ext: ext6() })]), { quote: r.range(40, 200) }),
    );
  }
  return out;
}

/** One mutated or random input, written into `scratch`; returns its length. */
function mutate(r: Rand, base: readonly Uint8Array[], scratch: Uint8Array): number {
  const kind = r.int(10);
  if (kind === 0) {
    // Pure noise, usually with a plausible version nibble.
    const n = r.int(120);
    for (let i = 0; i < n; i++) scratch[i] = r.u32() & 0xff;
    if (n > 0 && r.bool(0.8)) scratch[0] = (scratch[0]! & 0x0f) | (r.bool() ? 0x40 : 0x60);
    return n;
  }
  const src = r.pick(base);
  let n = src.length;
  scratch.set(src, 0);
  const dv = new DataView(scratch.buffer, scratch.byteOffset, scratch.byteLength);
  const v6 = src[0]! >> 4 === 6;
  const rounds = 1 + r.int(3);
  for (let k = 0; k < rounds; k++) {
    switch (r.int(10)) {
      case 0: // bit flips
        for (let f = 1 + r.int(8); f > 0 && n > 0; f--) scratch[r.int(n)]! ^= 1 << r.int(8);
        break;
      case 1: // truncation
        n = r.int(n + 1);
        break;
      case 2: // total / payload length corruption
        if (n >= 6) dv.setUint16(v6 ? 4 : 2, r.bool() ? r.u32() & 0xffff : Math.max(0, dv.getUint16(v6 ? 4 : 2) + r.range(-48, 48)));
        break;
      case 3: // IHL / ext header length / next header corruption
        if (!v6 && n > 0) scratch[0] = 0x40 | r.int(16);
        else if (v6 && n > 41) scratch[r.pick([6, 40, 41, 48, 49])] = r.pick([0, 43, 44, 51, 59, 60, r.u32() & 0xff]);
        break;
      case 4: { // L4 header bytes: TCP data offset, ICMP type, ports
        const l4 = v6 ? 40 : (scratch[0]! & 0x0f) * 4;
        const at = l4 + r.pick([0, 1, 12, 13]);
        if (at < n) scratch[at] = r.u32() & 0xff;
        break;
      }
      case 5: // fragment fields
        if (!v6 && n >= 8) dv.setUint16(6, r.u32() & 0xffff);
        break;
      case 6: // trailing garbage
        if (n < MAX_PKT - 64) {
          const extra = r.int(64);
          for (let i = 0; i < extra; i++) scratch[n + i] = r.u32() & 0xff;
          n += extra;
        }
        break;
      case 7:
      case 8: // consistent truncation: cut the packet and make the length field agree
        n = r.int(n + 1);
        if (v6 && n >= 40) dv.setUint16(4, n - 40);
        else if (!v6 && n >= 4) dv.setUint16(2, n);
        break;
      default: // random byte overwrite
        if (n > 0) scratch[r.int(n)] = r.u32() & 0xff;
    }
  }
  return n;
}

interface Place {
  buf: Uint8Array;
  dv: DataView;
  off: number;
}
function place(canary: number, off: number): Place {
  const buf = new Uint8Array(off + MAX_PKT + 256).fill(canary);
  return { buf, dv: new DataView(buf.buffer), off };
}

/** Window invariants for a successful parse of buf[off, off+len). */
function checkWindow(info: PacketInfo, off: number, len: number, ctx: string): void {
  const end = off + len;
  const ok = (c: boolean, what: string): void => assert.ok(c, `${ctx}: ${what}`);
  ok(info.family === 4 || info.family === 6, `family ${info.family}`);
  ok(info.l3Off === off, `l3Off ${info.l3Off} != ${off}`);
  ok(info.totalLen <= len && info.totalLen >= info.l3HdrLen, `totalLen ${info.totalLen} vs len ${len} hdr ${info.l3HdrLen}`);
  ok(info.ttlOff >= off && info.ttlOff < end, `ttlOff ${info.ttlOff} outside [${off}, ${end})`);
  const pktEnd = off + info.totalLen;
  if (info.l4Off !== -1) ok(info.l4Off >= off + info.l3HdrLen && info.l4Off < pktEnd, `l4Off ${info.l4Off} outside packet [${off}, ${pktEnd})`);
  if (info.icmpInnerOff !== -1) {
    ok(info.icmpInnerOff === info.l4Off + 8, `icmpInnerOff ${info.icmpInnerOff} != l4Off+8`);
    ok(info.icmpInnerOff + (info.family === 4 ? 20 : 40) <= pktEnd, `icmpInnerOff ${info.icmpInnerOff} leaves no room for an IP header before ${pktEnd}`);
  }
  if (info.isFragment === 1 && info.fragOffset > 0) ok(info.l4Off === -1 && info.sport === 0 && info.dport === 0, 'later fragment has L4 fields');
}

class OutOfWindow extends Error {}

/**
 * Stand-ins for (buf, dv) that throw OutOfWindow on any index outside [lo, hi). Test only:
 * a Proxy over the Uint8Array for indexed reads, an object with the DataView getters.
 */
function strictViews(p: Place, lo: () => number, hi: () => number): { buf: Uint8Array; dv: DataView } {
  const check = (i: number, w: number): void => {
    if (!(i >= lo() && i + w <= hi())) throw new OutOfWindow(`access at ${i} width ${w} outside [${lo()}, ${hi()})`);
  };
  const buf = new Proxy(p.buf, {
    get(t, prop) {
      if (typeof prop === 'string' && /^\d+$/.test(prop)) {
        check(Number(prop), 1);
        return t[Number(prop)];
      }
      return Reflect.get(t, prop);
    },
  });
  const dv = {
    getUint8: (i: number) => (check(i, 1), p.dv.getUint8(i)),
    getUint16: (i: number) => (check(i, 2), p.dv.getUint16(i)),
    getUint32: (i: number) => (check(i, 4), p.dv.getUint32(i)),
    getInt8: (i: number) => (check(i, 1), p.dv.getInt8(i)),
    getInt16: (i: number) => (check(i, 2), p.dv.getInt16(i)),
    getInt32: (i: number) => (check(i, 4), p.dv.getInt32(i)),
  } as unknown as DataView;
  return { buf, dv };
}

function sameResult(a: PacketInfo, aOff: number, b: PacketInfo, bOff: number, ctx: string): void {
  for (const k of FIELDS) {
    if (a[k] !== b[k]) assert.fail(`${ctx}: ${k} differs between placements: got ${b[k]}, want ${a[k]} (read outside the window?)`);
  }
  for (const k of OFFSETS) {
    const x = a[k] === -1 ? -1 : a[k] - aOff;
    const y = b[k] === -1 ? -1 : b[k] - bOff;
    if (x !== y) assert.fail(`${ctx}: ${k} differs between placements: got ${y}, want ${x}`);
  }
}

describe('parser fuzz', () => {
  it(`${ITERATIONS} seeded random and mutated packets (seed ${SEED})`, () => {
    const r = new Rand(SEED);
    const base = corpus(r);
    const scratch = new Uint8Array(MAX_PKT + 128);
    const pa = place(0xa5, 64);
    const pb = place(0x5a, 301);
    let lo = 0;
    let hi = 0;
    const strict = strictViews(pa, () => lo, () => hi);
    const is = new PacketInfo();
    const ia = new PacketInfo();
    const ib = new PacketInfo();
    const inA = new PacketInfo();
    const inB = new PacketInfo();
    // Reference: a valid packet and what it parses to, for "still works afterwards".
    const ref = ipv4Tcp({ src: '10.9.8.7', dst: '10.1.1.1', sport: 4242, dport: 80, flags: TCP_SYN, payload: [1, 2, 3] });
    const refInfo = new PacketInfo();
    assert.equal(parsePacket(ref, new DataView(ref.buffer), 0, ref.length, refInfo), 0);
    const codes = new Map<number, number>();
    let innerParsed = 0;

    for (let i = 0; i < ITERATIONS; i++) {
      const n = mutate(r, base, scratch);
      const ctx = `seed ${SEED} iter ${i} len ${n}`;
      pa.buf.fill(0xa5, pa.off, pa.off + MAX_PKT + 128);
      pb.buf.fill(0x5a, pb.off, pb.off + MAX_PKT + 128);
      pa.buf.set(scratch.subarray(0, n), pa.off);
      pb.buf.set(scratch.subarray(0, n), pb.off);
      const ca = parsePacket(pa.buf, pa.dv, pa.off, n, ia);
      const cb = parsePacket(pb.buf, pb.dv, pb.off, n, ib);
      if (ca !== cb) assert.fail(`${ctx}: code differs between placements: ${ca} vs ${cb}`);
      lo = pa.off;
      hi = pa.off + n;
      let cs: number;
      try {
        cs = parsePacket(strict.buf, strict.dv, pa.off, n, is);
      } catch (e) {
        if (e instanceof OutOfWindow) assert.fail(`${ctx}: ${e.message}`);
        throw e;
      }
      if (cs !== ca) assert.fail(`${ctx}: strict parse code ${cs}, want ${ca}`);
      if (ca !== 0 && !isKnownDropCode(ca)) assert.fail(`${ctx}: unknown code ${ca}`);
      if (ca > 0) assert.fail(`${ctx}: positive code ${ca}`);
      codes.set(ca, (codes.get(ca) ?? 0) + 1);
      if (ca !== 0) continue;
      checkWindow(ia, pa.off, n, ctx);
      sameResult(ia, pa.off, ib, pb.off, ctx);
      if (ia.icmpInnerOff !== -1) {
        // Parse the quoted packet too, bounded by the outer packet.
        const endA = ia.l3Off + ia.totalLen;
        const endB = ib.l3Off + ib.totalLen;
        const ra = parseInner(pa.buf, pa.dv, ia.icmpInnerOff, endA - ia.icmpInnerOff, inA);
        const rb = parseInner(pb.buf, pb.dv, ib.icmpInnerOff, endB - ib.icmpInnerOff, inB);
        lo = ia.icmpInnerOff;
        hi = endA;
        try {
          const rs = parseInner(strict.buf, strict.dv, ia.icmpInnerOff, endA - ia.icmpInnerOff, is);
          if (rs !== ra) assert.fail(`${ctx}: strict inner parse code ${rs}, want ${ra}`);
        } catch (e) {
          if (e instanceof OutOfWindow) assert.fail(`${ctx} inner: ${e.message}`);
          throw e;
        }
        if (ra !== rb) assert.fail(`${ctx}: inner code differs between placements: ${ra} vs ${rb}`);
        if (ra !== 0 && !isKnownDropCode(ra)) assert.fail(`${ctx}: unknown inner code ${ra}`);
        if (ra === 0) {
          innerParsed++;
          checkWindow(inA, ia.icmpInnerOff, endA - ia.icmpInnerOff, `${ctx} inner`);
          sameResult(inA, ia.icmpInnerOff, inB, ib.icmpInnerOff, `${ctx} inner`);
        }
      }
      if (i % 10_000 === 0) {
        // Still correct on a valid packet, with the same (reused) PacketInfo.
        assert.equal(parsePacket(ref, new DataView(ref.buffer), 0, ref.length, ia), 0);
        sameResult(refInfo, 0, ia, 0, `${ctx} reference after fuzz`);
      }
    }
    // Afterwards: every valid corpus packet parses, and the reference gives the same fields.
    for (const p of base) {
      const c = parsePacket(p, new DataView(p.buffer), 0, p.length, ia);
      assert.equal(c, 0, `corpus packet after fuzz: got ${c} (${dropReasonText(c)}), want 0`);
    }
    assert.equal(parsePacket(ref, new DataView(ref.buffer), 0, ref.length, ia), 0);
    sameResult(refInfo, 0, ia, 0, 'reference after fuzz');
    // The fuzz must actually exercise both success and the main drop paths.
    for (const want of [0, -134, -135, -139, -156]) {
      assert.ok((codes.get(want) ?? 0) > 100, `code ${want} (${dropReasonText(want)}) seen ${codes.get(want) ?? 0} times, want > 100`);
    }
    assert.ok(innerParsed > 100, `inner packets parsed: got ${innerParsed}, want > 100`);
  });
});
