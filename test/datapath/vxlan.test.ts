/**
 * VXLAN encap/decap: field by field against RFC 7348's layout, round trips, the drop codes
 * for every malformed input, and a fuzz of decap (only 0 or a known drop code, and decap
 * still works afterwards).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  INNER_IP_OFF,
  SPORT_MIN,
  SPORT_SPAN,
  TUNNEL_DST_MAC,
  TUNNEL_SRC_MAC,
  VXLAN_OVERHEAD,
  VXLAN_PAYLOAD_HDR,
  VXLAN_PORT,
  VxlanResult,
  vxlanDecap4,
  vxlanDecapPayload,
  vxlanEncap4,
  vxlanEncapPayload,
  vxlanSourcePort,
} from '../../src/datapath/vxlan.js';
import { DROP_FRAG_NEEDED, DROP_INVALID, DROP_INVALID_VNI, DROP_UNSUPPORTED_L2 } from '../../src/datapath/drop.js';
import { csumFold, csumPartial } from '../../src/datapath/checksum.js';
import { ip4, ipv4Tcp, ipv4Udp, ipv6Tcp } from '../helpers/packets.js';
import { Rand } from '../helpers/rand.js';

const SRC = ip4('10.99.0.1');
const DST = ip4('10.99.0.2');

function slab(pkt: Uint8Array, size = 2048, at = 64): { buf: Uint8Array; dv: DataView; off: number } {
  const buf = new Uint8Array(size);
  buf.set(pkt, at);
  return { buf, dv: new DataView(buf.buffer), off: at };
}

test('vxlanEncap4: outer IPv4/UDP/VXLAN/Ethernet fields, then decap gives the packet back', () => {
  const inner = ipv4Tcp({ src: '10.98.1.2', dst: '10.98.2.2', sport: 40000, dport: 5432, payload: new Uint8Array(100).fill(7) });
  const { buf, dv, off } = slab(inner);
  const n = vxlanEncap4(buf, dv, off, inner.length, 2048 - off, SRC, DST, 0x12345);
  assert.equal(n, inner.length + VXLAN_OVERHEAD, `got length ${n}, want ${inner.length + 50}`);
  const rows: [string, number, number][] = [
    ['version/IHL', buf[off] as number, 0x45],
    ['total length', dv.getUint16(off + 2), n],
    ['TTL', buf[off + 8] as number, 64],
    ['protocol', buf[off + 9] as number, 17],
    ['outer src', dv.getUint32(off + 12), SRC],
    ['outer dst', dv.getUint32(off + 16), DST],
    ['IPv4 header checksum verifies', ~csumFold(csumPartial(buf, off, 20, 0)) & 0xffff, 0],
    ['UDP dport', dv.getUint16(off + 22), VXLAN_PORT],
    ['UDP length', dv.getUint16(off + 24), n - 20],
    ['UDP checksum', dv.getUint16(off + 26), 0],
    ['VXLAN flags', buf[off + 28] as number, 0x08],
    ['VNI', dv.getUint32(off + 32) >>> 8, 0x12345],
    ['inner EtherType', dv.getUint16(off + 48), 0x0800],
  ];
  for (const [what, got, want] of rows) assert.equal(got, want, `${what}: got ${got}, want ${want}`);
  assert.deepEqual([...buf.subarray(off + 36, off + 42)], [...TUNNEL_DST_MAC]);
  assert.deepEqual([...buf.subarray(off + 42, off + 48)], [...TUNNEL_SRC_MAC]);
  const sport = dv.getUint16(off + 20);
  assert.ok(sport >= SPORT_MIN && sport < SPORT_MIN + SPORT_SPAN, `sport ${sport} out of range`);
  assert.deepEqual(buf.subarray(off + INNER_IP_OFF, off + n), inner, 'inner packet moved intact');

  const r = new VxlanResult();
  assert.equal(vxlanDecap4(buf, dv, off, n, r), 0);
  assert.equal(r.vni, 0x12345);
  assert.equal(r.outerSrc, SRC);
  assert.equal(r.sport, sport);
  assert.deepEqual(buf.subarray(r.innerOff, r.innerOff + r.innerLen), inner);
});

test('vxlanSourcePort: same flow same port, other flows spread', () => {
  const a = ipv4Udp({ src: '10.98.1.2', dst: '10.98.2.2', sport: 1000, dport: 53 });
  const b = ipv4Udp({ src: '10.98.1.2', dst: '10.98.2.2', sport: 1000, dport: 53, payload: new Uint8Array(30) });
  assert.equal(vxlanSourcePort(a, 0, a.length), vxlanSourcePort(b, 0, b.length), 'payload does not change the port');
  const ports = new Set<number>();
  for (let p = 0; p < 200; p++) {
    const x = ipv4Udp({ src: '10.98.1.2', dst: '10.98.2.2', sport: 1000 + p, dport: 53 });
    ports.add(vxlanSourcePort(x, 0, x.length));
  }
  assert.ok(ports.size > 150, `got ${ports.size} distinct ports for 200 flows, want > 150`);
  const v6 = ipv6Tcp({ src: 'fd00:98::1', dst: 'fd00:98::2', sport: 1, dport: 2 });
  const p6 = vxlanSourcePort(v6, 0, v6.length);
  assert.ok(p6 >= SPORT_MIN && p6 < SPORT_MIN + SPORT_SPAN);
});

test('vxlanEncapPayload + vxlanDecapPayload (the UDP socket path), IPv4 and IPv6 inner', () => {
  for (const inner of [ipv4Tcp({ src: '10.98.1.2', dst: '10.98.2.2', sport: 1, dport: 2 }), ipv6Tcp({ src: 'fd00:98::1', dst: 'fd00:98::2', sport: 1, dport: 2 })]) {
    const { buf, off } = slab(inner);
    const n = vxlanEncapPayload(buf, off, inner.length, 300);
    assert.equal(n, inner.length + VXLAN_PAYLOAD_HDR);
    const r = new VxlanResult();
    assert.equal(vxlanDecapPayload(buf, off - VXLAN_PAYLOAD_HDR, n, r), 0);
    assert.equal(r.vni, 300);
    assert.equal(r.innerOff, off);
    assert.equal(r.innerLen, inner.length);
  }
});

test('drop codes for what cannot be encapsulated or decapsulated', () => {
  const inner = ipv4Tcp({ src: '10.98.1.2', dst: '10.98.2.2', sport: 1, dport: 2 });
  const enc: [string, number, number][] = [];
  {
    const { buf, dv, off } = slab(inner);
    enc.push(['VNI 0', vxlanEncap4(buf, dv, off, inner.length, 2000, SRC, DST, 0), DROP_INVALID_VNI]);
    enc.push(['VNI > 24 bits (a local identity)', vxlanEncap4(buf, dv, off, inner.length, 2000, SRC, DST, 1 << 24 | 1), DROP_INVALID_VNI]);
    enc.push(['no room for 50 bytes', vxlanEncap4(buf, dv, off, inner.length, inner.length + 49, SRC, DST, 300), DROP_FRAG_NEEDED]);
    enc.push(['payload path VNI 0', vxlanEncapPayload(buf, off, inner.length, 0), DROP_INVALID_VNI]);
    buf[off] = 0x20;
    enc.push(['not IP', vxlanEncap4(buf, dv, off, inner.length, 2000, SRC, DST, 300), DROP_INVALID]);
  }
  for (const [what, got, want] of enc) assert.equal(got, want, `encap ${what}: got ${got}, want ${want}`);

  const good = slab(inner);
  const n = vxlanEncap4(good.buf, good.dv, good.off, inner.length, 2000, SRC, DST, 300);
  const mutate: [string, (b: Uint8Array, dv: DataView, o: number) => void, number][] = [
    ['I flag clear', (b, _d, o) => (b[o + 28] = 0), DROP_INVALID_VNI],
    ['VNI 0', (_b, d, o) => d.setUint32(o + 32, 0), DROP_INVALID_VNI],
    ['ARP inside', (_b, d, o) => d.setUint16(o + 48, 0x0806), DROP_UNSUPPORTED_L2],
    ['EtherType IPv6 with an IPv4 packet', (_b, d, o) => d.setUint16(o + 48, 0x86dd), DROP_UNSUPPORTED_L2],
    ['other UDP port', (_b, d, o) => d.setUint16(o + 22, 4789), DROP_INVALID],
    ['not UDP', (b, _d, o) => (b[o + 9] = 6), DROP_INVALID],
    ['outer fragment', (_b, d, o) => d.setUint16(o + 6, 0x2000), DROP_INVALID],
    ['UDP length beyond the packet', (_b, d, o) => d.setUint16(o + 24, 5000), DROP_INVALID],
    ['total length beyond the buffer', (_b, d, o) => d.setUint16(o + 2, 5000), DROP_INVALID],
  ];
  for (const [what, fn, want] of mutate) {
    const c = slab(good.buf.subarray(good.off, good.off + n));
    fn(c.buf, c.dv, c.off);
    const got = vxlanDecap4(c.buf, c.dv, c.off, n, new VxlanResult());
    assert.equal(got, want, `decap ${what}: got ${got}, want ${want}`);
  }
  assert.equal(vxlanDecap4(good.buf, good.dv, good.off, 27, new VxlanResult()), DROP_INVALID, 'truncated');
  assert.equal(vxlanDecapPayload(good.buf, good.off + 28, 30, new VxlanResult()), DROP_INVALID, 'payload too short for an inner header');
});

test('fuzz: decap of random and mutated input gives 0 or a known drop code, and still works after', () => {
  const known = new Set([0, DROP_INVALID, DROP_INVALID_VNI, DROP_UNSUPPORTED_L2]);
  const rnd = new Rand(0x7a11);
  const inner = ipv4Udp({ src: '10.98.1.2', dst: '10.98.2.2', sport: 5, dport: 6, payload: new Uint8Array(40) });
  const base = slab(inner, 512, 0);
  const n = vxlanEncap4(base.buf, base.dv, 0, inner.length, 512, SRC, DST, 777);
  const template = base.buf.slice(0, n);
  const buf = new Uint8Array(512);
  const dv = new DataView(buf.buffer);
  const r = new VxlanResult();
  for (let i = 0; i < 20000; i++) {
    let len: number;
    if (rnd.bool(0.3)) {
      len = rnd.int(200);
      buf.set(rnd.bytes(len));
    } else {
      buf.set(template);
      len = rnd.bool(0.2) ? rnd.int(n + 1) : n;
      const flips = 1 + rnd.int(4);
      for (let f = 0; f < flips; f++) buf[rnd.int(n)] = rnd.int(256);
    }
    const a = vxlanDecap4(buf, dv, 0, len, r);
    assert.ok(known.has(a), `decap4 iteration ${i}: got ${a}, want 0 or a known drop code`);
    if (a === 0) assert.ok(r.innerOff + r.innerLen <= len, `iteration ${i}: inner [${r.innerOff}, +${r.innerLen}) beyond ${len}`);
    const b = vxlanDecapPayload(buf, 0, len, r);
    assert.ok(known.has(b), `decapPayload iteration ${i}: got ${b}, want 0 or a known drop code`);
    if (b === 0) assert.ok(r.innerOff + r.innerLen <= len);
  }
  buf.set(template);
  assert.equal(vxlanDecap4(buf, dv, 0, n, r), 0, 'a valid packet still decapsulates after the fuzz');
  assert.equal(r.vni, 777);
});
