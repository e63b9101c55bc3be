/**
 * Fuzz of the whole lxc pipeline: seeded random and mutated packets, from endpoints, the host
 * port and unknown ports, in batches, with policy changes and the clock moving in between.
 *
 * The only acceptable outcomes are an output port of the world or a known drop code (with
 * the same reason reported), never an exception. Every packet is counted exactly once (as a
 * forward or a drop). Afterwards a valid allowed packet still forwards.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isKnownDropCode } from '../../src/datapath/drop.js';
import { TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN } from '../../src/proto/ip.js';
import { DIR_EGRESS, DIR_INGRESS } from '../../src/proto/direction.js';
import {
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
  ipv6Tcp,
  ipv6Udp,
  PacketSlab,
  PROTO_ICMP,
  PROTO_TCP,
  PROTO_UDP,
} from '../helpers/packets.js';
import { Rand } from '../helpers/rand.js';
import { ID_HOST, ID_WORLD, makeWorld, type World } from '../helpers/world.js';

const EPS = [
  { ep: 1, id: 1001, v4: '10.0.0.1', v6: 'fd00::1', port: 11 },
  { ep: 2, id: 1002, v4: '10.0.0.2', v6: 'fd00::2', port: 12 },
  { ep: 3, id: 1003, v4: '10.0.0.3', v6: 'fd00::3', port: 13 },
];
const HOST_PORT = 0;
const OUT_PORTS = new Set([HOST_PORT, ...EPS.map((e) => e.port)]);
const IN_PORTS = [HOST_PORT, 11, 12, 13, 99];
const V4 = ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.1.2.3', '192.168.1.1', '8.8.8.8', '0.0.0.0', '255.255.255.255'];
const V6 = ['fd00::1', 'fd00::2', 'fd00::3', 'fd01::7', '2001:db8::1', '::'];
const PORTS = [0, 22, 53, 80, 443, 8080, 65535];
const FLAGS = [TCP_SYN, TCP_SYN | TCP_ACK, TCP_ACK, TCP_FIN | TCP_ACK, TCP_RST, 0xff, 0];

function setup(seed: number): World {
  const w = makeWorld({ ctCapacity: 256, fragCapacity: 64, eventCapacity: 256 });
  const r = new Rand(seed ^ 0x5eed);
  for (const e of EPS) {
    w.endpoint({ ep: e.ep, identity: e.id, ipv4: e.v4, ipv6: e.v6, port: e.port, ingress: r.bool(), egress: r.bool(), audit: r.bool(0.2) });
  }
  w.ipcache('10.1.0.0/16', 2001, '192.168.50.2');
  w.ipcache('fd01::/64', 2002);
  w.hostPort(HOST_PORT, '192.168.1.1');
  // A base of allows so that a share of the traffic forwards whatever the random flags say.
  for (const e of EPS) {
    w.allow({ ep: e.ep, dir: DIR_EGRESS, identity: 0, cookie: 900 + e.ep });
    w.allow({ ep: e.ep, dir: DIR_INGRESS, identity: 1001, cookie: 950 + e.ep });
  }
  for (let i = 0; i < 12; i++) addRandomRule(w, r);
  w.commit();
  return w;
}

function addRandomRule(w: World, r: Rand): void {
  const e = r.pick(EPS);
  const ids = [0, 1001, 1002, 1003, 2001, 2002, ID_HOST, ID_WORLD];
  const proto = r.pick([0, PROTO_TCP, PROTO_UDP, PROTO_ICMP, 58]);
  const spec = {
    ep: e.ep,
    dir: (r.bool() ? DIR_EGRESS : DIR_INGRESS) as 0 | 1,
    identity: r.pick(ids),
    proto,
    port: proto === 0 ? 0 : r.pick(PORTS),
    prefixLen: proto === 0 ? 0 : r.pick([8, 16, 24]),
    cookie: r.u32(),
  };
  // Denies name an identity, so they narrow the base allows instead of cancelling them.
  if (r.bool(0.15) && spec.identity !== 0) w.deny(spec);
  else w.allow(spec);
}

type Sender = (typeof EPS)[number];

/** A valid packet of a random kind, usually with the sender's own source address. */
function validPacket(r: Rand, from: Sender): Uint8Array {
  const src4 = r.bool(0.85) ? from.v4 : r.pick(V4);
  const dst4 = r.pick(V4);
  const src6 = r.bool(0.85) ? from.v6 : r.pick(V6);
  const dst6 = r.pick(V6);
  const sport = r.pick(PORTS.concat([r.range(1024, 65535)]));
  const dport = r.pick(PORTS);
  const ttl = r.pick([0, 1, 2, 64, 64, 64, 255]);
  switch (r.int(12)) {
    case 0: return ipv4Tcp({ src: src4, dst: dst4, sport, dport, flags: r.pick(FLAGS), ttl });
    case 1: return ipv4Udp({ src: src4, dst: dst4, sport, dport, ttl, payload: r.bytes(r.int(64)) });
    case 2: return ipv4Icmp({ src: src4, dst: dst4, type: r.pick([0, 3, 8, 11, 13, 255]), id: r.int(0x10000), ttl });
    case 3: return icmpError4(r.pick([3, 4, 5, 11, 12]), r.int(16), ipv4Udp({ src: dst4, dst: src4, sport, dport }), { ttl });
    case 4: return ipv4Sctp({ src: src4, dst: dst4, sport, dport, ttl });
    case 5: return ipv4Raw({ src: src4, dst: dst4, proto: r.int(256), payload: r.bytes(r.int(40)), ttl });
    case 6: {
      const big = ipv4Udp({ src: src4, dst: dst4, sport, dport, payload: r.bytes(300), id: r.int(0x10000) });
      return r.pick(ipv4Fragments(big, 128));
    }
    case 7: return ipv6Tcp({ src: src6, dst: dst6, sport, dport, flags: r.pick(FLAGS), hopLimit: ttl });
    case 8: return ipv6Udp({ src: src6, dst: dst6, sport, dport, hopLimit: ttl, ext: r.bool(0.3) ? [{ type: 0 }] : [] });
    case 9: return ipv6Icmp({ src: src6, dst: dst6, type: r.pick([1, 128, 129, 135, 255]), id: r.int(0x10000), hopLimit: ttl });
    case 10: return icmpError6(r.pick([1, 2, 3, 4]), 0, ipv6Tcp({ src: dst6, dst: src6, sport, dport }), { quote: r.range(0, 80) });
    default: {
      const id = r.u32();
      const off = r.pick([0, 8, 64]);
      return ipv6Raw({ src: src6, dst: dst6, proto: r.pick([PROTO_TCP, PROTO_UDP, 58]), payload: r.bytes(r.range(0, 40)), ext: [{ type: 44, offset: off, more: r.bool(), id }] });
    }
  }
}

/** A valid packet, mutated: flipped bytes, truncated, extended, or pure noise. */
function fuzzPacket(r: Rand, from: Sender): Uint8Array {
  const kind = r.int(10);
  if (kind === 0) {
    const b = r.bytes(r.int(80));
    if (b.length > 0) b[0] = (r.pick([4, 6, r.int(16)]) << 4) | (b[0]! & 0x0f);
    return b;
  }
  let p = validPacket(r, from);
  if (kind <= 3) return p; // some valid traffic so that flows get established
  if (kind <= 6) {
    p = p.slice();
    const n = r.range(1, 4);
    for (let i = 0; i < n && p.length > 0; i++) {
      // Mostly beyond the addresses, so that mutated packets get past the source check.
      const at = r.bool(0.7) && p.length > 20 ? r.range(20, p.length - 1) : r.int(p.length);
      p[at] = r.u32() & 0xff;
    }
    return p;
  }
  if (kind <= 8) return p.slice(0, r.int(p.length + 1));
  const q = new Uint8Array(p.length + r.range(1, 32));
  q.set(p);
  q.set(r.bytes(q.length - p.length), p.length);
  return q;
}

const SEEDS = [1, 2, 3, 0xdecafbad];
const BATCHES = 120;
const BATCH = 32;

for (const seed of SEEDS) {
  test(`pipeline fuzz, seed ${seed}: only ports or known drop codes; every packet counted once`, () => {
    const w = setup(seed);
    const r = new Rand(seed);
    const p = w.pipeline;
    let total = 0;
    let forwarded = 0;
    let dropped = 0;
    const codes = new Set<number>();
    for (let b = 0; b < BATCHES; b++) {
      if (r.bool(0.1)) addRandomRule(w, r);
      w.commit();
      if (r.bool(0.2)) w.advance(r.range(1, 30));
      const pkts: Uint8Array[] = [];
      const ports: number[] = [];
      for (let i = 0; i < BATCH; i++) {
        const from = r.pick(EPS);
        pkts.push(fuzzPacket(r, from));
        ports.push(r.bool(0.8) ? from.port : r.pick(IN_PORTS));
      }
      const slab = new PacketSlab(pkts, 2048, { fill: 0xa5 });
      p.beginBatch(w.now, 0);
      try {
        for (let i = 0; i < BATCH; i++) {
          let out: number;
          try {
            out = p.process(slab.buf, slab.dv, slab.off(i), slab.len(i), ports[i]!);
          } catch (err) {
            const hex = Buffer.from(pkts[i]!).toString('hex');
            assert.fail(`seed ${seed} batch ${b} packet ${i} (port ${ports[i]}, ${hex}): threw ${String(err)}`);
          }
          total++;
          if (out >= 0) {
            forwarded++;
            assert.ok(OUT_PORTS.has(out), `seed ${seed} batch ${b} packet ${i}: got output port ${out}, want one of ${[...OUT_PORTS]}`);
            assert.equal(p.outReason, 0, `forward with reason ${p.outReason}`);
          } else {
            dropped++;
            codes.add(-out);
            assert.ok(isKnownDropCode(out), `seed ${seed} batch ${b} packet ${i}: got unknown drop code ${out}`);
            assert.equal(p.outReason, -out, `reason: got ${p.outReason}, want ${-out}`);
          }
        }
      } finally {
        p.endBatch();
      }
      if (r.bool(0.3)) w.drainEvents();
      w.ct.gc(w.now, 16);
    }
    assert.ok(forwarded > total / 20, `forwarded ${forwarded} of ${total}: want a real share of forwards`);
    assert.ok(dropped > total / 20, `dropped ${dropped} of ${total}: want a real share of drops`);
    assert.ok(codes.size >= 6, `distinct drop codes: got ${[...codes].sort((x, y) => x - y)}, want >= 6`);
    const counted = w.forwards(DIR_INGRESS) + w.forwards(DIR_EGRESS) + w.totalDrops();
    assert.equal(counted, total, `counted packets: got ${counted}, want ${total}`);

    // Still working: an allowed flow between two endpoints forwards (old flows expired and
    // collected first, and the random rules of the two endpoints replaced by known ones).
    w.advance(100_000);
    w.ct.gc(w.now, w.ct.capacity);
    assert.equal(w.ct.count, 0, `conntrack after a full gc: got ${w.ct.count}, want 0`);
    w.clearPolicy(1).clearPolicy(2);
    w.allow({ ep: 1, dir: DIR_EGRESS, identity: 1002, proto: PROTO_TCP, port: 4242, cookie: 77 });
    w.allow({ ep: 2, dir: DIR_INGRESS, identity: 1001, proto: PROTO_TCP, port: 4242, cookie: 78 });
    const after = w.run(ipv4Tcp({ src: '10.0.0.1', dst: '10.0.0.2', sport: 61000, dport: 4242 }), 11);
    assert.equal(after.out, 12, `after fuzz: got out ${after.out} (reason ${after.reason}), want 12`);
    const back = w.run(ipv4Tcp({ src: '10.0.0.2', dst: '10.0.0.1', sport: 4242, dport: 61000, flags: TCP_SYN | TCP_ACK }), 12);
    assert.equal(back.out, 11, `reply after fuzz: got out ${back.out} (reason ${back.reason}), want 11`);
  });
}
