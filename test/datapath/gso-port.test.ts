/**
 * GsoPortWriter (src/datapath/gso-port.ts): what one output port gets from a transmit batch.
 *
 *   - table: every kind of input (TCP/UDP GSO packets, TCP segments, UDP datagrams) against
 *     every kind of port (offload with USO, offload without USO, plain) and gro on/off:
 *     kept whole, split, coalesced or passed, with the gso_type and segment count wanted;
 *   - every output is checked: split segments have a zero virtio header, fit the MTU and
 *     carry valid checksums, and the L4 payloads of the outputs, in order, are the inputs';
 *   - rule 2's shortcut: for seeded random TCP GSO packets, split(P) equals
 *     split(coalesce(split(P))) byte for byte (keeping P whole is what coalescing rebuilds);
 *   - USO with wireguard-go's udpGRO conditions: equal sizes, a shorter last datagram ends
 *     the group, another 5-tuple or a bigger datagram starts a new one, checksums valid;
 *   - rule 5: a batch of GSO packets larger than the arena is consumed in several calls;
 *   - a malformed GSO packet is reported dropped and the rest still goes out;
 *   - no heap growth over many calls.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { GsoPortWriter, MAX_SPLIT_SEGMENTS, SPLIT_ARENA_ROOM } from '../../src/datapath/gso-port.js';
import { GsoCoalescer } from '../../src/datapath/gso.js';
import { ipv4HeaderChecksum, l4Checksum4, l4Checksum6 } from '../../src/datapath/checksum.js';
import { ipv4Tcp, ipv4Udp, ipv6Tcp, ipv6Udp } from '../helpers/packets.js';
import { Rand } from '../helpers/rand.js';
import { exposeGc } from '../../bench/micro.js';

const VH = 12;
const SLOT = 66000;
const MTU = 1500;
const GSO_NONE = 0;
const GSO_TCPV4 = 1;
const GSO_TCPV6 = 4;
const GSO_UDP_L4 = 5;

/** A slab: `slots` packet slots, then an arena. */
class Batch {
  readonly buf: Uint8Array;
  readonly off: Int32Array;
  readonly len: Int32Array;
  n = 0;
  constructor(readonly slots: number, readonly arenaLen: number) {
    this.buf = new Uint8Array(slots * SLOT + arenaLen);
    this.off = new Int32Array(slots);
    this.len = new Int32Array(slots);
  }
  get arenaOff(): number {
    return this.slots * SLOT;
  }
  /** Adds a packet with a zero virtio header. */
  add(ip: Uint8Array): void {
    const o = this.n * SLOT;
    this.buf.fill(0, o, o + VH);
    this.buf.set(ip, o + VH);
    this.off[this.n] = o;
    this.len[this.n] = ip.length + VH;
    this.n++;
  }
  /** Adds one GSO packet built by coalescing `segs` (all must merge into one). */
  addGso(segs: Uint8Array[], udp: boolean): void {
    const tmp = new Batch(segs.length, 70000 + 64);
    for (const s of segs) tmp.add(s);
    const c = new GsoCoalescer(segs.length, { linux6644Safe: false });
    const m = c.coalesce(tmp.buf, tmp.off, tmp.len, tmp.n, tmp.arenaOff, 70000 + 64, udp);
    assert.equal(m, 1, `test set-up: ${segs.length} segments coalesced into ${m} packets, want 1`);
    const o = this.n * SLOT;
    this.buf.set(tmp.buf.subarray(c.outOff[0]!, c.outOff[0]! + c.outLen[0]!), o);
    this.off[this.n] = o;
    this.len[this.n] = c.outLen[0]!;
    this.n++;
  }
}

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

const TS = [1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7];

function tcpSegs(fam: 4 | 6, sizes: number[], seed: number, sport = 40000): Uint8Array[] {
  let seq = 1000 + seed;
  return sizes.map((size, i) => {
    const payload = pattern(size, seed * 100 + i);
    const f = { sport, dport: 80, flags: i === sizes.length - 1 ? 0x18 : 0x10, seq, ack: 77, window: 500, tcpOptions: TS, payload };
    seq += size;
    return fam === 4
      ? ipv4Tcp({ ...f, src: '10.82.0.2', dst: '10.82.0.3', df: true, ipId: 10 + i })
      : ipv6Tcp({ ...f, src: 'fd00:82::2', dst: 'fd00:82::3' });
  });
}

function udpDgrams(fam: 4 | 6, sizes: number[], seed: number, sport = 5000): Uint8Array[] {
  return sizes.map((size, i) => {
    const payload = pattern(size, seed * 100 + i);
    const f = { sport, dport: 53, payload };
    return fam === 4 ? ipv4Udp({ ...f, src: '10.82.0.2', dst: '10.82.0.3', ipId: 20 + i }) : ipv6Udp({ ...f, src: 'fd00:82::2', dst: 'fd00:82::3' });
  });
}

/** The L4 payload of an IP packet (no virtio header). */
function l4Payload(p: Uint8Array): Uint8Array {
  const v4 = p[0]! >> 4 === 4;
  const l4 = v4 ? (p[0]! & 15) * 4 : 40;
  const proto = v4 ? p[9]! : p[6]!;
  const hl = proto === 6 ? (p[l4 + 12]! >> 4) * 4 : 8;
  return p.subarray(l4 + hl);
}

interface Out {
  gsoType: number;
  gsoSize: number;
  ip: Uint8Array;
}

function outputs(w: GsoPortWriter, b: Batch): Out[] {
  const out: Out[] = [];
  for (let j = 0; j < w.m; j++) {
    const o = w.outOff[j]!;
    out.push({ gsoType: b.buf[o + 1]!, gsoSize: b.buf[o + 4]! | (b.buf[o + 5]! << 8), ip: b.buf.slice(o + VH, o + w.outLen[j]!) });
  }
  return out;
}

/** Concatenated L4 payloads, the segments a GSO output stands for included. */
function payloadOf(ps: Uint8Array[]): Buffer {
  return Buffer.concat(ps.map((p) => Buffer.from(l4Payload(p))));
}

/** Checks a non-GSO output as the receiving kernel would: lengths, IPv4 header and L4 checksums. */
function checkSegment(what: string, o: Out): void {
  const p = o.ip;
  assert.equal(o.gsoType, GSO_NONE, `${what}: got gso_type ${o.gsoType}, want 0`);
  assert.ok(p.length <= MTU, `${what}: got ${p.length} bytes, want <= MTU ${MTU}`);
  const v4 = p[0]! >> 4 === 4;
  if (v4) {
    assert.equal((p[2]! << 8) | p[3]!, p.length, `${what}: IPv4 total length`);
    assert.equal(ipv4HeaderChecksum(p, 0, 20), (p[10]! << 8) | p[11]!, `${what}: IPv4 header checksum`);
    assert.equal(l4Checksum4(p, 0, 20, p.length - 20, p[9]!), 0, `${what}: L4 checksum does not verify`);
  } else {
    assert.equal(((p[4]! << 8) | p[5]!) + 40, p.length, `${what}: IPv6 payload length`);
    assert.equal(l4Checksum6(p, 0, 40, p.length - 40, p[6]!), 0, `${what}: L4 checksum does not verify`);
  }
}

describe('GsoPortWriter: what a port gets, by what it offers', () => {
  // [what, build the batch, tso, uso, gro, want: [gso_type, count] of the outputs in order]
  type Want = [number, number][];
  const tcpGso = (b: Batch, fam: 4 | 6): void => b.addGso(tcpSegs(fam, [1448, 1448, 1448, 1448, 900], 1), false);
  const udpGso = (b: Batch, fam: 4 | 6): void => b.addGso(udpDgrams(fam, [1200, 1200, 1200, 300], 2), true);
  const tcpPlain = (b: Batch): void => tcpSegs(4, [1448, 1448, 1448, 1000], 3).forEach((p) => b.add(p));
  const udpPlain = (b: Batch): void => udpDgrams(4, [1000, 1000, 1000, 1000, 400], 4).forEach((p) => b.add(p));
  const cases: [string, (b: Batch) => void, boolean, boolean, boolean, Want][] = [
    ['TCP GSO to an offload port: whole', (b) => tcpGso(b, 4), true, true, true, [[GSO_TCPV4, 1]]],
    ['TCP GSO (IPv6) to an offload port, gro off: whole', (b) => tcpGso(b, 6), true, true, false, [[GSO_TCPV6, 1]]],
    ['TCP GSO to a plain port, gro on: whole (rule 2)', (b) => tcpGso(b, 4), false, false, true, [[GSO_TCPV4, 1]]],
    ['TCP GSO to a plain port, gro off: split', (b) => tcpGso(b, 4), false, false, false, [[GSO_NONE, 5]]],
    ['TCP GSO (IPv6) to a plain port, gro off: split', (b) => tcpGso(b, 6), false, false, false, [[GSO_NONE, 5]]],
    ['UDP GSO to a USO port: whole', (b) => udpGso(b, 4), true, true, true, [[GSO_UDP_L4, 1]]],
    ['UDP GSO to an offload port without USO: split', (b) => udpGso(b, 4), true, false, true, [[GSO_NONE, 4]]],
    ['UDP GSO (IPv6) to a plain port: split', (b) => udpGso(b, 6), false, false, true, [[GSO_NONE, 4]]],
    ['TCP segments to a plain port, gro on: coalesced', tcpPlain, false, false, true, [[GSO_TCPV4, 1]]],
    ['TCP segments, gro off: passed', tcpPlain, true, true, false, [[GSO_NONE, 4]]],
    ['UDP datagrams to a USO port: one USO packet', udpPlain, true, true, true, [[GSO_UDP_L4, 1]]],
    ['UDP datagrams to a plain port: passed', udpPlain, false, false, true, [[GSO_NONE, 5]]],
    ['UDP datagrams to a TSO-only port: passed', udpPlain, true, false, true, [[GSO_NONE, 5]]],
    ['UDP datagrams to a USO port, gro off: passed', udpPlain, true, true, false, [[GSO_NONE, 5]]],
    ['mixed: UDP GSO then TCP segments to a plain port', (b) => { udpGso(b, 4); tcpPlain(b); }, false, false, true, [[GSO_NONE, 4], [GSO_TCPV4, 1]]],
  ];
  for (const [what, build, tso, uso, gro, want] of cases) {
    it(what, () => {
      const b = new Batch(16, 1 << 20);
      build(b);
      const inputs: Uint8Array[] = [];
      for (let i = 0; i < b.n; i++) inputs.push(b.buf.slice(b.off[i]! + VH, b.off[i]! + b.len[i]!));
      const w = new GsoPortWriter(1024, { gro, mtu: MTU, linux6644Safe: true });
      const used = w.write(b.buf, b.off, b.len, 0, b.n, tso, uso, b.arenaOff, 1 << 20, 1024);
      assert.equal(used, b.n, `got ${used} inputs consumed, want ${b.n}`);
      assert.equal(w.nDropped, 0, `got ${w.nDropped} dropped, want 0`);
      const out = outputs(w, b);
      const got: [number, number][] = [];
      for (const o of out) {
        const last = got[got.length - 1];
        if (last && last[0] === o.gsoType && o.gsoType === GSO_NONE) last[1]++;
        else got.push([o.gsoType, 1]);
      }
      assert.deepEqual(got, want, `got outputs ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
      out.forEach((o, j) => {
        if (o.gsoType === GSO_NONE) checkSegment(`output ${j}`, o);
      });
      assert.ok(payloadOf(out.map((o) => o.ip)).equals(payloadOf(inputs)), 'got other payload bytes than the inputs, in order');
    });
  }
});

describe('GsoPortWriter: keeping a TCP GSO packet whole is what split + coalesce rebuilds (rule 2)', () => {
  it('seeded random TCP GSO packets: split(P) equals split(coalesce(split(P)))', () => {
    const r = new Rand(82);
    for (let round = 0; round < 100; round++) {
      const fam: 4 | 6 = r.bool() ? 4 : 6;
      const mss = r.range(600, 1448);
      const n = r.range(2, 40);
      const sizes = Array.from({ length: n }, (_, i) => (i === n - 1 ? r.range(1, mss) : mss));
      const b = new Batch(1, 200000);
      b.addGso(tcpSegs(fam, sizes, round), false);
      const plain = new GsoPortWriter(1024, { gro: false, mtu: 0, linux6644Safe: false });
      plain.write(b.buf, b.off, b.len, 0, 1, false, false, b.arenaOff, 200000, 1024);
      const direct = outputs(plain, b).map((o) => o.ip);
      assert.equal(direct.length, n, `round ${round}: got ${direct.length} segments, want ${n}`);
      // Coalesce the segments again (gro towards a plain port), then split that.
      const b2 = new Batch(n, 200000);
      for (const s of direct) b2.add(s);
      const c = new GsoCoalescer(n, { linux6644Safe: false });
      const m = c.coalesce(b2.buf, b2.off, b2.len, n, b2.arenaOff, 200000, false);
      assert.equal(m, 1, `round ${round}: got ${m} packets from coalescing, want 1`);
      const b3 = new Batch(1, 200000);
      b3.buf.set(b2.buf.subarray(c.outOff[0]!, c.outOff[0]! + c.outLen[0]!), 0);
      b3.off[0] = 0;
      b3.len[0] = c.outLen[0]!;
      b3.n = 1;
      plain.write(b3.buf, b3.off, b3.len, 0, 1, false, false, b3.arenaOff, 200000, 1024);
      const again = outputs(plain, b3).map((o) => o.ip);
      assert.equal(again.length, direct.length, `round ${round}: got ${again.length} segments, want ${direct.length}`);
      for (let i = 0; i < n; i++) {
        assert.ok(Buffer.from(again[i]!).equals(Buffer.from(direct[i]!)), `round ${round} segment ${i}: differs`);
      }
    }
  });
});

describe('GsoPortWriter: UDP coalescing (USO) follows udpGRO', () => {
  // [what, datagrams as [sport, size], want gso_size per output (0: passed alone)]
  const cases: [string, [number, number][], number[]][] = [
    ['equal sizes', [[1, 800], [1, 800], [1, 800]], [800]],
    ['a shorter last datagram joins and ends the group', [[1, 800], [1, 800], [1, 200], [1, 800], [1, 800]], [800, 800]],
    ['a bigger datagram starts a new group', [[1, 500], [1, 500], [1, 900], [1, 900]], [500, 900]],
    ['another 5-tuple is another group, order kept per flow', [[1, 700], [2, 700], [1, 700], [2, 700]], [700, 700]],
    ['a lone datagram of a flow is passed as it is', [[1, 700], [2, 700], [1, 700]], [700, 0]],
  ];
  for (const [what, dgs, want] of cases) {
    it(what, () => {
      const b = new Batch(dgs.length, 1 << 20);
      const per = new Map<number, Uint8Array[]>();
      dgs.forEach(([flow, size], i) => {
        const p = udpDgrams(4, [size], i + 1, 5000 + flow)[0]!;
        b.add(p);
        per.set(flow, [...(per.get(flow) ?? []), p]);
      });
      const w = new GsoPortWriter(1024, { gro: true, mtu: MTU, linux6644Safe: false });
      w.write(b.buf, b.off, b.len, 0, b.n, true, true, b.arenaOff, 1 << 20, 1024);
      const out = outputs(w, b);
      assert.deepEqual(out.map((o) => (o.gsoType === GSO_UDP_L4 ? o.gsoSize : 0)), want, `got ${JSON.stringify(out.map((o) => [o.gsoType, o.gsoSize]))}`);
      // Per flow, split the outputs back and compare with what went in.
      const splitter = new GsoPortWriter(1024, { gro: false, mtu: MTU, linux6644Safe: false });
      const back = new Map<number, Uint8Array[]>();
      for (const o of out) {
        const sb = new Batch(1, 1 << 20);
        const hdr = new Uint8Array(VH);
        hdr[0] = o.gsoType === GSO_UDP_L4 ? 1 : 0;
        hdr[1] = o.gsoType;
        hdr[4] = o.gsoSize & 255;
        hdr[5] = o.gsoSize >> 8;
        hdr[6] = 20;
        hdr[8] = 6;
        sb.buf.set(hdr, 0);
        sb.buf.set(o.ip, VH);
        sb.off[0] = 0;
        sb.len[0] = VH + o.ip.length;
        sb.n = 1;
        splitter.write(sb.buf, sb.off, sb.len, 0, 1, false, false, sb.arenaOff, 1 << 20, 1024);
        for (const s of outputs(splitter, sb)) {
          checkSegment(what, s);
          const flow = ((s.ip[20]! << 8) | s.ip[21]!) - 5000;
          back.set(flow, [...(back.get(flow) ?? []), s.ip]);
        }
      }
      for (const [flow, ps] of per) {
        assert.ok(payloadOf(back.get(flow) ?? []).equals(payloadOf(ps)), `flow ${flow}: datagrams differ after USO and split`);
        assert.deepEqual((back.get(flow) ?? []).map((p) => p.length), ps.map((p) => p.length), `flow ${flow}: datagram sizes`);
      }
    });
  }
});

describe('GsoPortWriter: room and refusals', () => {
  it('a batch of GSO packets larger than the arena is consumed in several calls (rule 5)', () => {
    const n = 12;
    const b = new Batch(n, 1 << 20);
    const inputs: Uint8Array[] = [];
    for (let i = 0; i < n; i++) {
      const segs = tcpSegs(4, Array<number>(40).fill(1448), i + 5, 41000 + i);
      inputs.push(...segs);
      b.addGso(segs, false);
    }
    const w = new GsoPortWriter(1024, { gro: false, mtu: MTU, linux6644Safe: true });
    const arenaLen = 3 * SPLIT_ARENA_ROOM; // room for a few splits per call
    const got: Uint8Array[] = [];
    let done = 0;
    let calls = 0;
    while (done < n) {
      const used = w.write(b.buf, b.off, b.len, done, n - done, false, false, b.arenaOff, arenaLen, 1024);
      assert.ok(w.arenaUsed <= arenaLen, `got arena use ${w.arenaUsed}, want <= ${arenaLen}`);
      for (const o of outputs(w, b)) got.push(o.ip);
      done += used;
      calls++;
      assert.ok(calls <= n, `no progress after ${calls} calls`);
    }
    assert.ok(calls > 1, `got ${calls} call, want several`);
    assert.equal(got.length, n * 40, `got ${got.length} segments, want ${n * 40}`);
    assert.ok(payloadOf(got).equals(payloadOf(inputs)), 'payload differs');
  });

  it('an output room too small for a split stops before the packet, then takes it', () => {
    const b = new Batch(2, 1 << 20);
    b.addGso(tcpSegs(4, Array<number>(30).fill(1000), 1), false);
    b.addGso(tcpSegs(4, Array<number>(30).fill(1000), 2, 42000), false);
    const w = new GsoPortWriter(MAX_SPLIT_SEGMENTS, { gro: false, mtu: MTU, linux6644Safe: true });
    assert.equal(w.write(b.buf, b.off, b.len, 0, 2, false, false, b.arenaOff, 1 << 20, 40), 1, 'want 1 packet consumed with room for 40 outputs');
    assert.equal(w.m, 30, `got ${w.m} outputs, want 30`);
    assert.equal(w.write(b.buf, b.off, b.len, 1, 1, false, false, b.arenaOff, 1 << 20, 40), 1, 'want the second one next');
  });

  it('a malformed GSO packet is dropped, the rest goes out', () => {
    const b = new Batch(4, 1 << 20);
    b.addGso(udpDgrams(4, [1000, 1000, 500], 7), true);
    b.addGso(udpDgrams(4, [1000, 1000, 500], 8), true);
    b.buf[b.off[1]! + 4] = 0; // gso_size 0
    b.buf[b.off[1]! + 5] = 0;
    tcpSegs(4, [100], 9).forEach((p) => b.add(p));
    const w = new GsoPortWriter(1024, { gro: true, mtu: MTU, linux6644Safe: true });
    assert.equal(w.write(b.buf, b.off, b.len, 0, b.n, false, false, b.arenaOff, 1 << 20, 1024), 3);
    assert.deepEqual([...w.dropped.subarray(0, w.nDropped)], [1], `got dropped ${[...w.dropped.subarray(0, w.nDropped)]}, want [1]`);
    assert.equal(w.m, 4, `got ${w.m} outputs, want 3 datagrams + 1 segment`);
  });

  it('heap does not grow over 200k calls', () => {
    const gc = exposeGc();
    assert.ok(gc !== undefined, 'got no gc(), want --expose-gc to work');
    const b = new Batch(8, 1 << 20);
    b.addGso(udpDgrams(4, [1000, 1000, 500], 1), true);
    udpDgrams(4, [800, 800, 800], 2).forEach((p) => b.add(p));
    tcpSegs(4, [1448, 1448], 3).forEach((p) => b.add(p));
    const w = new GsoPortWriter(1024, { gro: true, mtu: MTU, linux6644Safe: true });
    const saved = b.buf.slice();
    let x = 0;
    for (let i = 0; i < 20000; i++) x += w.write(b.buf, b.off, b.len, 0, b.n, false, true, b.arenaOff, 1 << 20, 1024);
    b.buf.set(saved);
    gc();
    const before = process.memoryUsage().heapUsed;
    for (let i = 0; i < 200000; i++) {
      x += w.write(b.buf, b.off, b.len, 0, b.n, (i & 1) === 0, (i & 2) === 0, b.arenaOff, 1 << 20, 1024);
      if ((i & 1023) === 0) b.buf.set(saved);
    }
    gc();
    const grew = process.memoryUsage().heapUsed - before;
    assert.ok(x > 0);
    assert.ok(grew < 1 << 20, `got heap growth ${grew} bytes, want < 1 MiB`);
  });
});
