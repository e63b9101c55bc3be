import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  csumFold,
  csumPartial,
  csumReplace16,
  csumReplace32,
  decrementHopLimit6,
  decrementTtl4,
  ipv4HeaderChecksum,
  l4Checksum4,
  l4Checksum6,
} from '../../src/datapath/checksum.js';
import { PacketInfo } from '../../src/datapath/packet.js';
import { parsePacket } from '../../src/datapath/parse.js';
import { Rand } from '../helpers/rand.js';
import { crc32c, icmpError4, icmpError6, ipv4Icmp, ipv4Sctp, ipv4Tcp, ipv4Udp, ipv6Icmp, ipv6Tcp, ipv6Udp } from '../helpers/packets.js';

const hex = (n: number): string => `0x${n.toString(16).padStart(4, '0')}`;

/** Naive reference: sum of 16-bit words with end-around carry after every addition. */
function naiveSum(bytes: readonly number[]): number {
  let s = 0;
  for (let i = 0; i < bytes.length; i += 2) {
    s += (bytes[i]! << 8) | (bytes[i + 1] ?? 0);
    if (s > 0xffff) s = (s & 0xffff) + 1;
  }
  return s;
}
const naiveCsum = (bytes: readonly number[]): number => ~naiveSum(bytes) & 0xffff;

/** A random IPv4 header (IHL 5..15) with a correct checksum. */
function randomHeader(r: Rand): { buf: Uint8Array; dv: DataView; hl: number } {
  const ihl = r.range(5, 15);
  const hl = ihl * 4;
  const buf = r.bytes(hl);
  buf[0] = 0x40 | ihl;
  const dv = new DataView(buf.buffer);
  dv.setUint16(10, 0);
  dv.setUint16(10, ipv4HeaderChecksum(buf, 0, hl));
  return { buf, dv, hl };
}

/** Set the ID field so that the header's checksum (field zero) comes out as `want` (0x0000 or other). */
function forceChecksum(buf: Uint8Array, dv: DataView, hl: number, want: number): void {
  dv.setUint16(4, 0);
  dv.setUint16(10, 0);
  const s = csumFold(csumPartial(buf, 0, hl, 0)); // 1..0xffff
  // Need s + id == ~want (one's complement); want = 0 -> sum 0xffff.
  const target = ~want & 0xffff;
  let id = target - s;
  if (id < 0) id += 0xffff;
  dv.setUint16(4, id);
  dv.setUint16(10, ipv4HeaderChecksum(buf, 0, hl));
}

describe('checksum', () => {
  it('known vectors (RFC 1071 example, a textbook IPv4 header)', () => {
    const rfc = Uint8Array.from([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
    const got = csumFold(csumPartial(rfc, 0, rfc.length, 0));
    assert.equal(got, 0xddf2, `RFC 1071 sum: got ${hex(got)}, want 0xddf2`);
    const h = Uint8Array.from([0x45, 0, 0, 0x73, 0, 0, 0x40, 0, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0, 1, 0xc0, 0xa8, 0, 0xc7]);
    const c = ipv4HeaderChecksum(h, 0, 20);
    assert.equal(c, 0xb861, `IPv4 header checksum: got ${hex(c)}, want 0xb861`);
    // Odd length: last byte padded with zero.
    const odd = Uint8Array.from([0x12, 0x34, 0x56]);
    assert.equal(csumFold(csumPartial(odd, 0, 3, 0)), 0x1234 + 0x5600);
  });

  it('ipv4HeaderChecksum and csumPartial match a naive reference on random data', () => {
    const r = new Rand(1071);
    for (let i = 0; i < 2000; i++) {
      const { buf, hl } = randomHeader(r);
      const ref = [...buf];
      ref[10] = 0;
      ref[11] = 0;
      const want = naiveCsum(ref);
      const got = ipv4HeaderChecksum(buf, 0, hl);
      assert.equal(got, want, `seed 1071 iter ${i}: got ${hex(got)}, want ${hex(want)}`);
      const n = r.range(0, 300);
      const data = r.bytes(n);
      const gs = ~csumFold(csumPartial(data, 0, n, 0)) & 0xffff;
      assert.equal(gs, naiveCsum([...data]), `seed 1071 iter ${i} len ${n}`);
    }
  });

  it('decrementTtl4: incremental update equals a full recomputation (random headers, seeded)', () => {
    const r = new Rand(1624);
    let n = 0;
    for (let i = 0; i < 20000; i++) {
      const { buf, dv, hl } = randomHeader(r);
      if (buf[8] === 0) buf[8] = 1 + r.int(255);
      dv.setUint16(10, 0);
      dv.setUint16(10, ipv4HeaderChecksum(buf, 0, hl));
      const ttl = buf[8]!;
      // Walk the TTL down a few steps, checking each.
      for (let k = 0; k < 3 && buf[8]! > 0; k++) {
        const nt = decrementTtl4(buf, dv, 0);
        assert.equal(nt, ttl - k - 1, `iter ${i}: ttl got ${nt}, want ${ttl - k - 1}`);
        const want = ipv4HeaderChecksum(buf, 0, hl);
        const got = dv.getUint16(10);
        assert.equal(got, want, `seed 1624 iter ${i} step ${k}: got ${hex(got)}, want ${hex(want)}`);
        n++;
      }
    }
    assert.ok(n > 20000);
  });

  it('decrementTtl4 edge cases: checksum 0x0000 before or after, TTL 1 and 0', () => {
    const r = new Rand(65535);
    for (let i = 0; i < 2000; i++) {
      for (const phase of ['before', 'after'] as const) {
        const { buf, dv, hl } = randomHeader(r);
        const ttl = r.range(1, 255);
        // 'after': make the header with TTL-1 have checksum 0, then restore TTL.
        buf[8] = phase === 'before' ? ttl : ttl - 1;
        forceChecksum(buf, dv, hl, 0);
        if (phase === 'before') assert.equal(dv.getUint16(10), 0, 'setup: checksum should be 0');
        buf[8] = ttl;
        dv.setUint16(10, ipv4HeaderChecksum(buf, 0, hl));
        decrementTtl4(buf, dv, 0);
        const want = ipv4HeaderChecksum(buf, 0, hl);
        const got = dv.getUint16(10);
        assert.equal(got, want, `${phase} iter ${i} ttl ${ttl}: got ${hex(got)}, want ${hex(want)}`);
        if (phase === 'after') assert.equal(got, 0, `after iter ${i}: got ${hex(got)}, want 0x0000`);
        assert.notEqual(got, 0xffff, `iter ${i}: got 0xffff (negative zero)`);
      }
    }
    const { buf, dv } = randomHeader(r);
    buf[8] = 0;
    const before = dv.getUint16(10);
    assert.equal(decrementTtl4(buf, dv, 0), -1, 'TTL 0: want -1');
    assert.equal(dv.getUint16(10), before, 'TTL 0: checksum must not change');
    assert.equal(buf[8], 0, 'TTL 0: TTL must not change');
  });

  it('csumReplace16 / csumReplace32 equal a full recomputation for any word change', () => {
    const r = new Rand(2024);
    const special = [0x0000, 0xffff, 0x0001, 0xfffe, 0x8000];
    for (let i = 0; i < 20000; i++) {
      const words = 2 + r.int(30);
      const data = r.bytes(words * 2);
      data[0] = 0x45; // never all-zero data (whose only checksum is 0xffff)
      const c0 = naiveCsum([...data]);
      const w = 1 + r.int(words - 1);
      const oldW = (data[w * 2]! << 8) | data[w * 2 + 1]!;
      const newW = r.bool(0.3) ? r.pick(special) : r.u32() & 0xffff;
      data[w * 2] = newW >> 8;
      data[w * 2 + 1] = newW & 0xff;
      const want = naiveCsum([...data]);
      const got = csumReplace16(c0, oldW, newW);
      assert.equal(got, want, `seed 2024 iter ${i}: ${hex(oldW)}->${hex(newW)} got ${hex(got)}, want ${hex(want)}`);
      if (words >= 4) {
        const at = 2 * (1 + r.int(words - 2)); // 32-bit field at an even word index >= 2
        const d2 = data.slice();
        const dv = new DataView(d2.buffer);
        const c1 = naiveCsum([...d2]);
        const ov = dv.getUint32(at);
        const nv = r.bool(0.2) ? r.pick([0, 0xffffffff]) : r.u32();
        dv.setUint32(at, nv);
        const want32 = naiveCsum([...d2]);
        const got32 = csumReplace32(c1, ov, nv);
        assert.equal(got32, want32, `seed 2024 iter ${i} (32-bit): got ${hex(got32)}, want ${hex(want32)}`);
      }
    }
  });

  it('decrementHopLimit6', () => {
    const p = ipv6Tcp({ sport: 1, dport: 2, hopLimit: 2 });
    for (const want of [1, 0, -1]) {
      const got = decrementHopLimit6(p, 0);
      assert.equal(got, want, `got ${got}, want ${want}`);
      assert.equal(p[7], Math.max(want, 0), `hop limit byte: got ${p[7]}, want ${Math.max(want, 0)}`);
    }
  });

  it('builders produce packets whose checksums verify (L4 over the stored field gives 0)', () => {
    const r = new Rand(793);
    const info = new PacketInfo();
    for (let i = 0; i < 300; i++) {
      const payload = r.bytes(r.int(200));
      const sport = r.range(1, 65535);
      const dport = r.range(1, 65535);
      const pkts: [string, Uint8Array][] = [
        ['v4 tcp', ipv4Tcp({ sport, dport, payload, ttl: r.range(1, 255) })],
        ['v4 udp', ipv4Udp({ sport, dport, payload, options: r.bytes(4 * r.int(10)) })],
        ['v4 icmp', ipv4Icmp({ id: sport, seq: dport, payload })],
        ['v6 tcp', ipv6Tcp({ sport, dport, payload, ext: [{ type: 0 }, { type: 60, len: r.int(3) }] })],
        ['v6 udp', ipv6Udp({ sport, dport, payload })],
        ['v6 icmp', ipv6Icmp({ id: sport, payload })],
        ['v4 icmp error', icmpError4(3, 3, ipv4Udp({ sport, dport, payload }))],
        ['v6 icmp error', icmpError6(1, 0, ipv6Udp({ sport, dport, payload }))],
      ];
      for (const [name, p] of pkts) {
        const dv = new DataView(p.buffer);
        assert.equal(parsePacket(p, dv, 0, p.length, info), 0, `${name}: parse`);
        const l4Len = info.totalLen - (info.l4Off - info.l3Off);
        let c: number;
        if (info.family === 4) {
          const h = ipv4HeaderChecksum(p, 0, info.l3HdrLen);
          assert.equal(h, dv.getUint16(10), `${name}: header checksum got ${hex(dv.getUint16(10))}, want ${hex(h)}`);
          c = info.proto === 1 ? ~csumFold(csumPartial(p, info.l4Off, l4Len, 0)) & 0xffff : l4Checksum4(p, 0, info.l4Off, l4Len, info.proto);
        } else {
          c = l4Checksum6(p, 0, info.l4Off, l4Len, info.proto);
        }
        assert.equal(c, 0, `${name} iter ${i}: L4 verification got ${hex(c)}, want 0x0000`);
        // And against a naive pseudo-header sum.
        const ph: number[] = info.family === 4
          ? [...p.subarray(12, 20), 0, info.proto, l4Len >> 8, l4Len & 0xff]
          : [...p.subarray(8, 40), 0, 0, l4Len >> 8, l4Len & 0xff, 0, 0, 0, info.proto];
        const body = [...p.subarray(info.l4Off, info.l4Off + l4Len)];
        if (body.length & 1) body.push(0);
        const ref = naiveCsum(info.proto === 1 ? body : [...ph, ...body]);
        assert.equal(ref, 0, `${name} iter ${i}: naive verification got ${hex(ref)}, want 0x0000`);
      }
    }
  });

  it('SCTP CRC32c: known vector and builder', () => {
    const v = new TextEncoder().encode('123456789');
    assert.equal(crc32c(v), 0xe3069283, `crc32c("123456789"): got ${crc32c(v).toString(16)}, want e3069283`);
    const p = ipv4Sctp({ sport: 1, dport: 2, payload: [1, 2, 3, 4] });
    const dv = new DataView(p.buffer);
    const stored = dv.getUint32(28, true);
    dv.setUint32(28, 0);
    assert.equal(crc32c(p, 20), stored, `sctp crc: got ${stored.toString(16)}, want ${crc32c(p, 20).toString(16)}`);
  });
});
