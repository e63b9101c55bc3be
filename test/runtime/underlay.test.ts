/**
 * UnderlayShard.sendSlots with offload (src/runtime/underlay.ts, offload steps 2 and 3): GSO
 * and checksum-partial packets in slots are split, encapsulated and sent over a real UDP
 * socket on loopback (127.0.89.1 -> 127.0.89.2:8472); the receiver decapsulates every
 * datagram and checks VNI, sizes, checksums and that the payload is the original one in
 * order. Both send modes: one datagram per segment (sendmmsg) and UDP_SEGMENT.
 *
 * UnderlayReader.decapGro (the receive path with UDP_GRO): a UDP_SEGMENT send over loopback
 * reaches a UDP_GRO socket as one buffer with its segment size and becomes one TSO packet
 * again; buffers built by hand check the cutting rules (one flow per coalesced packet,
 * consecutive sequence only, one VNI, bad datagrams, no free slot left, IPv6).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadBinding, type TunBinding } from '../../src/io/native.js';
import { createRuntimeShared, type RuntimeShared } from '../../src/runtime/shared.js';
import { SLOT_TRAILER, UnderlayReader, UnderlayShard } from '../../src/runtime/underlay.js';
import { UNDERLAY_PORT } from '../../src/tables/tableset.js';
import { C_GSO_SPLIT_PKTS, C_GSO_SPLIT_SEGS, C_VXLAN_TX_PKTS, createCounters } from '../../src/tables/events.js';
import { VXLAN_PORT, VxlanResult, vxlanDecapPayload } from '../../src/datapath/vxlan.js';
import { csumFold, csumPartial, ipv4HeaderChecksum, l4Checksum4 } from '../../src/datapath/checksum.js';
import { ipv4Tcp, ipv4Udp, ipv6Tcp } from '../helpers/packets.js';
import { DROP_INVALID_VNI } from '../../src/datapath/drop.js';

const VH = 12;
const SLOT = 65600 + 64;
const SRC = (127 << 24) | (89 << 8) | 1; // 127.0.89.1
const DST = (127 << 24) | (89 << 8) | 2; // 127.0.89.2
const VNI = 4242;

interface Case {
  name: string;
  ip: Uint8Array;
  /** virtio gso_type (0: a checksum-partial packet, not GSO) and gso_size. */
  gsoType: number;
  gsoSize: number;
  /** Inner IP lengths of the datagrams the receiver must see. */
  want: number[];
}

function slotBytes(c: Case): Uint8Array {
  const out = new Uint8Array(VH + c.ip.length);
  out.set(c.ip, VH);
  const proto = c.ip[9]!;
  out[0] = 1; // NEEDS_CSUM at the L4 checksum field (the splitter completes it)
  out[1] = c.gsoType;
  out[4] = c.gsoSize & 0xff;
  out[5] = c.gsoSize >> 8;
  out[6] = 20;
  out[8] = proto === 6 ? 16 : 6;
  // The L4 checksum field holds the pseudo-header sum, as a sender with checksum offload leaves it.
  const co = VH + 20 + (proto === 6 ? 16 : 6);
  const seed = csumFold(csumPartial(c.ip, 12, 8, 0) + proto + (c.ip.length - 20));
  out[co] = seed >> 8;
  out[co + 1] = seed & 0xff;
  return out;
}

describe('UnderlayShard: offload packets split, encapsulated and sent', () => {
  let native: TunBinding;
  let rt: RuntimeShared;
  let txFd = -1;
  let rxFd = -1;

  before(() => {
    native = loadBinding();
    rt = { ...createRuntimeShared({ shards: 1, slots: 8, slotSize: SLOT, vnetHdr: true }) } as RuntimeShared;
    txFd = native.udpOpen(SRC >>> 0, VXLAN_PORT);
    rxFd = native.udpOpen(DST >>> 0, VXLAN_PORT);
    new Int32Array(rt.portFd)[UNDERLAY_PORT] = txFd;
  });
  after(() => {
    if (txFd >= 0) native.close(txFd);
    if (rxFd >= 0) native.close(rxFd);
  });

  const payload = new Uint8Array(4000).map((_, i) => (i * 7) & 0xff);
  const cases: Case[] = [
    // TCP GSO at gso_size 1400 (40 header bytes: within the 1450 MTU): 1400, 1400, 1200.
    { name: 'TCP TSO v4', ip: ipv4Tcp({ src: '10.89.1.2', dst: '10.89.2.2', sport: 40000, dport: 5201, flags: 0x18, seq: 1000, payload }), gsoType: 1, gsoSize: 1400, want: [1440, 1440, 1240] },
    // TCP GSO with gso_size over the MTU: cut to 1450 - 40 = 1410.
    { name: 'TCP TSO v4 cut to the MTU', ip: ipv4Tcp({ src: '10.89.1.2', dst: '10.89.2.2', sport: 40001, dport: 5201, flags: 0x18, seq: 7, payload }), gsoType: 1, gsoSize: 8000, want: [1450, 1450, 1220] },
    // UDP GSO: datagram boundaries kept (1000, 1000, 1000, 1000).
    { name: 'UDP USO v4', ip: ipv4Udp({ src: '10.89.1.2', dst: '10.89.2.2', sport: 40002, dport: 6000, payload }), gsoType: 5, gsoSize: 1000, want: [1028, 1028, 1028, 1028] },
    // Not GSO, checksum partial: one datagram with the checksum completed.
    { name: 'TCP checksum-partial', ip: ipv4Tcp({ src: '10.89.1.2', dst: '10.89.2.2', sport: 40003, dport: 5201, flags: 0x18, seq: 1, payload: payload.subarray(0, 300) }), gsoType: 0, gsoSize: 0, want: [340] },
  ];

  for (const udpGso of [false, true]) {
    for (const c of cases) {
      it(`${c.name}${udpGso ? ' (UDP_SEGMENT)' : ''}: got the segments, in order, checksums valid`, () => {
        const counters = createCounters();
        const sh = new UnderlayShard(rt, VH, counters, { innerMtu: 1450, udpGso });
        const buf = new Uint8Array(rt.slab);
        const dv = new DataView(rt.slab);
        const slot = 3;
        const bytes = slotBytes(c);
        buf.set(bytes, slot * SLOT);
        new Int32Array(rt.lens)[slot] = bytes.length;
        const end = slot * SLOT + SLOT;
        dv.setUint32(end - SLOT_TRAILER, DST >>> 0, true);
        dv.setInt32(end - 4, VNI, true);
        const slots = new Int32Array([slot]);
        sh.sendSlots(slots, 1, rt.arenaOff, 1 << 20);

        const rbuf = new Uint8Array(16 * 2048);
        const rslots = new Int32Array(16).map((_, i) => i);
        const rlens = new Int32Array(16);
        const n = native.udpRecvBatch(rxFd, rbuf, 2048, rslots, 0, 16, rlens, 0, 2048);
        assert.equal(n, c.want.length, `got ${n} datagrams, want ${c.want.length}`);
        const r = new VxlanResult();
        const got: number[] = [];
        const l4 = c.ip[9] === 6 ? 20 : 8;
        const hdrs = 20 + l4;
        const inner: number[] = [];
        for (let i = 0; i < n; i++) {
          const rc = vxlanDecapPayload(rbuf, i * 2048, rlens[i]!, r);
          assert.equal(rc, 0, `datagram ${i}: decap got ${rc}, want 0`);
          assert.equal(r.vni, VNI, `datagram ${i}: got VNI ${r.vni}, want ${VNI}`);
          got.push(r.innerLen);
          const ip = rbuf.subarray(r.innerOff, r.innerOff + r.innerLen);
          assert.equal(ipv4HeaderChecksum(ip, 0, 20), (ip[10]! << 8) | ip[11]!, `datagram ${i}: IPv4 header checksum`);
          assert.equal(l4Checksum4(ip, 0, 20, ip.length - 20, ip[9]!), 0, `datagram ${i}: L4 checksum does not verify`);
          for (const b of ip.subarray(hdrs)) inner.push(b);
        }
        assert.deepEqual(got, c.want, `got inner lengths ${got}, want ${c.want}`);
        const orig = Array.from(c.ip.subarray(hdrs));
        assert.deepEqual(inner.length, orig.length, `got ${inner.length} payload bytes, want ${orig.length}`);
        assert.ok(inner.every((b, i) => b === orig[i]), 'payload differs from the original');
        assert.equal(counters[C_VXLAN_TX_PKTS], c.want.length, `got C_VXLAN_TX_PKTS ${counters[C_VXLAN_TX_PKTS]}, want ${c.want.length}`);
        const gso = c.gsoType !== 0 ? 1 : 0;
        assert.deepEqual([counters[C_GSO_SPLIT_PKTS], counters[C_GSO_SPLIT_SEGS]], [gso, gso * c.want.length], 'split counters');
      });
    }
  }
});

/** A VXLAN payload (VXLAN + inner Ethernet + ip) with this VNI (0: the I flag is cleared). */
function vxlanDatagram(ip: Uint8Array, vni: number): Uint8Array {
  const d = new Uint8Array(22 + ip.length);
  d[0] = vni === 0 ? 0 : 0x08;
  d[4] = (vni >> 16) & 0xff;
  d[5] = (vni >> 8) & 0xff;
  d[6] = vni & 0xff;
  const v6 = ip[0]! >> 4 === 6;
  d[8 + 12] = v6 ? 0x86 : 0x08;
  d[8 + 13] = v6 ? 0xdd : 0x00;
  d.set(ip, 22);
  return d;
}

interface Seg {
  flow: number;
  seq: number;
  vni: number;
  v6?: boolean;
  len?: number;
}

describe('UnderlayReader.decapGro: GRO buffers cut and coalesced', () => {
  const GSEG = 1000; // inner payload per segment
  let native: TunBinding;
  let rt: RuntimeShared;
  let reader: UnderlayReader;
  let txFd = -1;
  const SLOTS = 16;

  before(() => {
    native = loadBinding();
    rt = { ...createRuntimeShared({ shards: 1, slots: SLOTS, slotSize: SLOT, vnetHdr: true }) } as RuntimeShared;
    reader = new UnderlayReader(rt, VH, '127.0.89.3', false);
    txFd = native.udpOpen(SRC >>> 0, VXLAN_PORT + 1);
  });
  after(() => {
    reader?.close();
    if (txFd >= 0) native.close(txFd);
  });

  function tcp(sg: Seg): Uint8Array {
    const payload = new Uint8Array(sg.len ?? GSEG).map((_, i) => (sg.seq + i * 13 + sg.flow) & 0xff);
    const f = { sport: 40000 + sg.flow, dport: 5201, flags: 0x10, seq: sg.seq, ack: 77, window: 500, payload };
    return sg.v6 ? ipv6Tcp({ src: 'fd00:89::1', dst: 'fd00:89::2', ...f }) : ipv4Tcp({ src: '10.89.1.2', dst: '10.89.2.2', ...f });
  }

  /** Writes a GRO buffer of these segments into slot 0; returns its length and segment size. */
  function fill(segs: Seg[], corrupt = -1): [number, number] {
    const buf = new Uint8Array(rt.slab);
    const ds = segs.map((sg) => vxlanDatagram(tcp(sg), sg.vni));
    if (corrupt >= 0) ds[corrupt]![0] = 0; // I flag cleared: DROP_INVALID_VNI
    const g = ds[0]!.length;
    let at = 0;
    for (const d of ds) {
      buf.set(d, at);
      at += g;
    }
    return [at - g + ds[ds.length - 1]!.length, g];
  }

  interface Out {
    gsoType: number;
    gsoSize: number;
    ipLen: number;
    vni: number;
    payload: number[];
    sport: number;
  }

  function run(segs: Seg[], nFree = SLOTS - 1, corrupt = -1): { outs: Out[]; nFree: number; free: number[] } {
    const [len, g] = fill(segs, corrupt);
    const free = new Int32Array(SLOTS);
    for (let i = 0; i < nFree; i++) free[i] = SLOTS - 1 - i;
    const outSlot = new Int32Array(256);
    const outLen = new Int32Array(256);
    const c = reader.decapGro(0, len, g, free, nFree, outSlot, outLen, 0);
    const buf = new Uint8Array(rt.slab);
    const dv = new DataView(rt.slab);
    const outs: Out[] = [];
    const used = new Set<number>();
    for (let j = 0; j < c; j++) {
      const s = outSlot[j]!;
      assert.ok(!used.has(s), `slot ${s} used twice`);
      used.add(s);
      const b = s * SLOT;
      const ip = b + VH;
      const v6 = buf[ip]! >> 4 === 6;
      const ipLen = outLen[j]! - VH;
      const l4 = ip + (v6 ? 40 : 20);
      const vni = dv.getInt32(b + SLOT - 4, true);
      if (vni < 0) {
        outs.push({ gsoType: -1, gsoSize: 0, ipLen, vni, payload: [], sport: 0 });
        continue;
      }
      const tcpLen = (buf[l4 + 12]! >> 4) * 4;
      outs.push({
        gsoType: buf[b + 1]!,
        gsoSize: buf[b + 4]! | (buf[b + 5]! << 8),
        ipLen,
        vni,
        payload: Array.from(buf.subarray(l4 + tcpLen, ip + ipLen)),
        sport: dv.getUint16(l4),
      });
    }
    const left = Array.from(free.subarray(0, reader.nFree));
    for (const s of used) assert.ok(!left.includes(s), `slot ${s} is both output and free`);
    return { outs, nFree: reader.nFree, free: left };
  }

  const bytesOf = (segs: Seg[]): number[] => segs.flatMap((sg) => {
    const p = tcp(sg);
    const h = sg.v6 ? 60 : 40;
    return Array.from(p.subarray(h));
  });

  it('UDP_GRO on: a UDP_SEGMENT send over loopback arrives as one buffer and becomes one TSO packet', () => {
    assert.equal(reader.enableGro(), true, 'enableGro: got false, want true (UDP_GRO refused)');
    const segs: Seg[] = [0, 1, 2, 3].map((k) => ({ flow: 1, seq: 1000 + k * GSEG, vni: VNI }));
    const ds = segs.map((sg) => vxlanDatagram(tcp(sg), VNI));
    const tx = new Uint8Array(ds.reduce((a, d) => a + d.length, 0));
    let at = 0;
    for (const d of ds) {
      tx.set(d, at);
      at += d.length;
    }
    const sent = native.udpSendBatch(txFd, tx, new Int32Array([0]), new Int32Array([tx.length]), new Int32Array([(127 << 24) | (89 << 8) | 3]), 0, 1, VXLAN_PORT, new Int32Array([ds[0]!.length]));
    assert.equal(sent, 1, `sent ${sent}, want 1`);
    const buf = new Uint8Array(rt.slab);
    const lens = new Int32Array(rt.lens);
    const gso = new Int32Array(4);
    const slots = new Int32Array([0]);
    let n = 0;
    for (let i = 0; i < 100 && n === 0; i++) n = native.udpRecvBatch(reader.fd, buf, SLOT, slots, 0, 1, lens, 0, SLOT - SLOT_TRAILER, undefined, gso);
    assert.equal(n, 1, `got ${n} buffers, want 1`);
    assert.deepEqual([lens[0], gso[0]], [tx.length, ds[0]!.length], 'got [length, gso size], want the whole send and its segment size');
    const free = new Int32Array([5, 4]);
    const outSlot = new Int32Array(256);
    const outLen = new Int32Array(256);
    const c = reader.decapGro(0, lens[0]!, gso[0]!, free, 2, outSlot, outLen, 0);
    assert.equal(c, 1, `got ${c} packets, want 1`);
    assert.equal(outSlot[0], 4, `got slot ${outSlot[0]}, want 4 (the arena)`);
    assert.deepEqual([reader.nFree, free[0], free[1]], [2, 5, 0], 'free list: the arena used, the read slot given back');
    const b = 4 * SLOT;
    assert.deepEqual([buf[b + 1], buf[b + 4]! | (buf[b + 5]! << 8), outLen[0]! - VH], [1, GSEG, 40 + 4 * GSEG], 'got [gso_type, gso_size, IP length]');
    assert.deepEqual(Array.from(buf.subarray(b + VH + 40, b + outLen[0]!)), bytesOf(segs), 'coalesced payload differs');
    assert.equal(new DataView(rt.slab).getInt32(b + SLOT - 4, true), VNI, 'VNI in the trailer');
  });

  const cases: { name: string; segs: Seg[]; corrupt?: number; nFree?: number; want: { gsoType: number; sport?: number; vni: number; of: number[] }[] }[] = [
    {
      name: 'one flow, consecutive: one TSO packet',
      segs: [0, 1, 2].map((k) => ({ flow: 1, seq: 100 + k * GSEG, vni: VNI })),
      want: [{ gsoType: 1, sport: 40001, vni: VNI, of: [0, 1, 2] }],
    },
    {
      name: 'two flows interleaved: one packet per flow, never mixed',
      segs: [{ flow: 1, seq: 0, vni: VNI }, { flow: 2, seq: 0, vni: VNI }, { flow: 1, seq: GSEG, vni: VNI }, { flow: 2, seq: GSEG, vni: VNI }],
      want: [{ gsoType: 1, sport: 40001, vni: VNI, of: [0, 2] }, { gsoType: 1, sport: 40002, vni: VNI, of: [1, 3] }],
    },
    {
      name: 'a gap in the sequence: no merge across it',
      segs: [{ flow: 1, seq: 0, vni: VNI }, { flow: 1, seq: 2 * GSEG, vni: VNI }, { flow: 1, seq: 3 * GSEG, vni: VNI }],
      want: [{ gsoType: 0, sport: 40001, vni: VNI, of: [0] }, { gsoType: 1, sport: 40001, vni: VNI, of: [1, 2] }],
    },
    {
      name: 'two VNIs (senders): each datagram alone, its own VNI',
      segs: [{ flow: 1, seq: 0, vni: VNI }, { flow: 1, seq: GSEG, vni: VNI + 1 }],
      want: [{ gsoType: 0, vni: VNI, of: [0] }, { gsoType: 0, vni: VNI + 1, of: [1] }],
    },
    {
      name: 'a bad datagram: each alone, the bad one carries its drop code',
      segs: [0, 1, 2].map((k) => ({ flow: 1, seq: k * GSEG, vni: VNI })),
      corrupt: 1,
      want: [{ gsoType: 0, vni: VNI, of: [0] }, { gsoType: -1, vni: DROP_INVALID_VNI, of: [] }, { gsoType: 0, vni: VNI, of: [2] }],
    },
    {
      name: 'IPv6, one flow: one TSO packet (TCPV6)',
      segs: [0, 1, 2].map((k) => ({ flow: 3, seq: 5 + k * GSEG, vni: VNI, v6: true })),
      want: [{ gsoType: 4, sport: 40003, vni: VNI, of: [0, 1, 2] }],
    },
    {
      name: 'no free slot: the first datagram only, the rest dropped and counted',
      segs: [0, 1, 2].map((k) => ({ flow: 1, seq: k * GSEG, vni: VNI })),
      nFree: 0,
      want: [{ gsoType: 0, vni: VNI, of: [0] }],
    },
    {
      name: 'short last segment: merged as the tail',
      segs: [{ flow: 1, seq: 0, vni: VNI }, { flow: 1, seq: GSEG, vni: VNI }, { flow: 1, seq: 2 * GSEG, vni: VNI, len: 300 }],
      want: [{ gsoType: 1, sport: 40001, vni: VNI, of: [0, 1, 2] }],
    },
  ];

  for (const c of cases) {
    it(c.name, () => {
      const noSlot = reader.groDatagramsNoSlot;
      const nFree = c.nFree ?? SLOTS - 1;
      const { outs, nFree: left } = run(c.segs, nFree, c.corrupt ?? -1);
      assert.equal(outs.length, c.want.length, `got ${outs.length} packets, want ${c.want.length}`);
      for (let j = 0; j < c.want.length; j++) {
        const w = c.want[j]!;
        const o = outs[j]!;
        assert.equal(o.vni, w.vni, `packet ${j}: got VNI ${o.vni}, want ${w.vni}`);
        if (w.gsoType < 0) continue;
        assert.equal(o.gsoType, w.gsoType, `packet ${j}: got gso_type ${o.gsoType}, want ${w.gsoType}`);
        if (w.sport !== undefined) assert.equal(o.sport, w.sport, `packet ${j}: got sport ${o.sport}, want ${w.sport}`);
        const want = bytesOf(w.of.map((k) => c.segs[k]!));
        assert.deepEqual(o.payload.length, want.length, `packet ${j}: got ${o.payload.length} payload bytes, want ${want.length}`);
        assert.ok(o.payload.every((b, i) => b === want[i]), `packet ${j}: payload differs`);
        if (w.gsoType !== 0) assert.equal(o.gsoSize, GSEG, `packet ${j}: got gso_size ${o.gsoSize}, want ${GSEG}`);
      }
      // Every slot is accounted for: the outputs plus the free list are the read slot plus the free ones.
      assert.equal(left + outs.length, nFree + 1, `got ${left} free + ${outs.length} used, want ${nFree + 1}`);
      assert.equal(reader.groDatagramsNoSlot - noSlot, c.nFree === 0 ? c.segs.length - 1 : 0, 'datagrams dropped for want of a slot');
    });
  }
});
