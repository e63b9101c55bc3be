/**
 * parse-v4: parsePacket() over a slab of BATCH IPv4 packets, a mix of TCP (70%, flags and
 * payload sizes varied), UDP (20%) and ICMP echo (10%), each in its own 2048-byte slot as the
 * I/O thread lays them out. One op = one packet parsed into the reused PacketInfo.
 */
import { PacketInfo } from '../../src/datapath/packet.js';
import { parsePacket } from '../../src/datapath/parse.js';
import { PacketSlab, ipv4Icmp, ipv4Tcp, ipv4Udp } from '../../test/helpers/packets.js';
import type { Rand } from '../../test/helpers/rand.js';
import type { MicroCase } from '../micro.js';

const kTcpFlags = [0x02, 0x12, 0x10, 0x18, 0x11, 0x04];

export function buildV4Mix(r: Rand, n: number): PacketSlab {
  const pkts: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    const src = (0x0a000000 | r.int(1 << 16)) >>> 0;
    const dst = (0x0a000000 | r.int(1 << 16)) >>> 0;
    const payload = new Uint8Array(r.int(1400));
    const k = r.int(10);
    if (k < 7) {
      pkts.push(ipv4Tcp({ src, dst, sport: 1024 + r.int(60000), dport: r.pick([80, 443, 8080]), flags: r.pick(kTcpFlags), payload }));
    } else if (k < 9) {
      pkts.push(ipv4Udp({ src, dst, sport: 1024 + r.int(60000), dport: 53, payload }));
    } else {
      pkts.push(ipv4Icmp({ src, dst, id: r.int(65536), seq: r.int(65536), payload }));
    }
  }
  return new PacketSlab(pkts);
}

export function parseCases(r: Rand, batch: number): MicroCase[] {
  const slab = buildV4Mix(r, batch);
  const offs = new Uint32Array(batch);
  for (let i = 0; i < batch; i++) offs[i] = slab.off(i);
  const lens = slab.lens;
  const buf = slab.buf;
  const dv = slab.dv;
  const pi = new PacketInfo();
  let failed = 0;
  let sink = 0;
  return [
    {
      name: 'parse-v4',
      opsPerCall: batch,
      fn: () => {
        let bad = 0;
        for (let i = 0; i < batch; i++) {
          if (parsePacket(buf, dv, offs[i] as number, lens[i] as number, pi) < 0) bad++;
        }
        failed += bad;
        sink ^= pi.sport;
      },
      check: () => (failed === 0 ? '' : `${failed} packets failed to parse (sink ${sink})`),
      note: `${batch} IPv4 packets in 2048-byte slots: 70% TCP, 20% UDP, 10% ICMP echo, payload 0..1399 bytes`,
    },
  ];
}
