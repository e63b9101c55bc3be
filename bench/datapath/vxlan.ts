/**
 * VXLAN micro benchmarks over the parse-v4 packet mix (payload 0..1399 bytes), each packet
 * 64 bytes into its own 2048-byte slot:
 *   vxlan-encap-decap-v4          the socket path, what the switch does per cross-host packet:
 *                                 vxlanEncapPayload (22 bytes of headers in front, the packet
 *                                 does not move) on the sender, vxlanDecapPayload on the receiver.
 *   vxlan-encap4-decap4-v4        the full outer IPv4/UDP encap (packet moved 50 bytes up,
 *                                 header checksum), decap, and the move back (untimed would need
 *                                 a second slab; the memmove is part of the number).
 * One op = one packet encapsulated and decapsulated.
 */
import { VxlanResult, vxlanDecap4, vxlanDecapPayload, vxlanEncap4, vxlanEncapPayload, VXLAN_PAYLOAD_HDR } from '../../src/datapath/vxlan.js';
import { buildV4Mix } from './parse.js';
import type { Rand } from '../../test/helpers/rand.js';
import type { MicroCase } from '../micro.js';

const SLOT = 2048;
const HEADROOM = 64;

export function vxlanCases(r: Rand, batch: number): MicroCase[] {
  const src = buildV4Mix(r, batch);
  const buf = new Uint8Array(batch * SLOT);
  const dv = new DataView(buf.buffer);
  const offs = new Int32Array(batch);
  const lens = new Int32Array(batch);
  for (let i = 0; i < batch; i++) {
    const len = src.lens[i] as number;
    const off = i * SLOT + HEADROOM;
    buf.set(src.buf.subarray(src.off(i), src.off(i) + len), off);
    offs[i] = off;
    lens[i] = len;
  }
  const res = new VxlanResult();
  let bad = 0;
  let sink = 0;
  return [
    {
      name: 'vxlan-encap-decap-v4',
      opsPerCall: batch,
      fn: () => {
        for (let i = 0; i < batch; i++) {
          const off = offs[i] as number;
          const n = vxlanEncapPayload(buf, off, lens[i] as number, 256 + (i & 1023));
          if (n < 0 || vxlanDecapPayload(buf, off - VXLAN_PAYLOAD_HDR, n, res) !== 0) bad++;
          sink ^= res.vni;
        }
      },
      check: () => (bad === 0 ? '' : `${bad} packets failed (sink ${sink})`),
      note: `${batch} IPv4 packets (parse-v4 mix): VXLAN+Ethernet headers written in front (UDP socket path), then decapsulated`,
    },
    {
      name: 'vxlan-encap4-decap4-v4',
      opsPerCall: batch,
      fn: () => {
        for (let i = 0; i < batch; i++) {
          const off = offs[i] as number;
          const len = lens[i] as number;
          const n = vxlanEncap4(buf, dv, off, len, SLOT - HEADROOM, 0x0a630001, 0x0a630002, 256 + (i & 1023));
          if (n < 0 || vxlanDecap4(buf, dv, off, n, res) !== 0) {
            bad++;
            continue;
          }
          buf.copyWithin(off, res.innerOff, res.innerOff + res.innerLen);
          sink ^= res.sport;
        }
      },
      check: () => (bad === 0 ? '' : `${bad} packets failed (sink ${sink})`),
      note: `${batch} IPv4 packets (parse-v4 mix): full outer IPv4/UDP/VXLAN/Ethernet encap in place (50-byte move), decap, move back`,
    },
  ];
}
