/**
 * UnderlayShard.sendSlots with offload (src/runtime/underlay.ts, offload steps 2 and 3): GSO
 * and checksum-partial packets in slots are split, encapsulated and sent over a real UDP
 * socket on loopback (127.0.89.1 -> 127.0.89.2:8472); the receiver decapsulates every
 * datagram and checks VNI, sizes, checksums and that the payload is the original one in
 * order. Both send modes: one datagram per segment (sendmmsg) and UDP_SEGMENT.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadBinding, type TunBinding } from '../../src/io/native.js';
import { createRuntimeShared, type RuntimeShared } from '../../src/runtime/shared.js';
import { SLOT_TRAILER, UnderlayShard } from '../../src/runtime/underlay.js';
import { UNDERLAY_PORT } from '../../src/tables/tableset.js';
import { C_GSO_SPLIT_PKTS, C_GSO_SPLIT_SEGS, C_VXLAN_TX_PKTS, createCounters } from '../../src/tables/events.js';
import { VXLAN_PORT, VxlanResult, vxlanDecapPayload } from '../../src/datapath/vxlan.js';
import { csumFold, csumPartial, ipv4HeaderChecksum, l4Checksum4 } from '../../src/datapath/checksum.js';
import { ipv4Tcp, ipv4Udp } from '../helpers/packets.js';

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
