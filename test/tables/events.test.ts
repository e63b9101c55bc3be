import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  EV_DROP,
  EV_POLICY,
  EventReader,
  EventRing,
  EventWriter,
  NO_INDEX,
  V_AUDIT,
  countDrop,
  countForward,
  createCounters,
  dropBytesSlot,
  dropPacketsSlot,
  forwardBytesSlot,
  forwardPacketsSlot,
  totalDropped,
} from '../../src/tables/events.js';
import { PacketInfo } from '../../src/datapath/packet.js';
import { DROP_POLICY_DENY, DROP_WRITE_ERROR } from '../../src/datapath/drop.js';
import { IPPROTO_ICMPV6, IPPROTO_TCP, TCP_ACK, TCP_SYN } from '../../src/proto/ip.js';
import { DIR_EGRESS, DIR_INGRESS } from '../../src/proto/direction.js';

function tuple(fill: (t: PacketInfo) => void): PacketInfo {
  const t = new PacketInfo();
  fill(t);
  return t;
}

test('EventWriter writes what EventReader reads, field by field', () => {
  const ring = EventRing.create(4);
  const w = new EventWriter(ring);
  const tcp = tuple((t) => {
    t.family = 4; t.proto = IPPROTO_TCP; t.src0 = 0x0a000001; t.dst0 = 0x0a000002; t.sport = 40000; t.dport = 80; t.tcpFlags = TCP_SYN | TCP_ACK;
  });
  const icmp = tuple((t) => {
    t.family = 6; t.proto = IPPROTO_ICMPV6; t.src0 = 0xfd000000; t.src3 = 1; t.dst0 = 0xfd000000; t.dst3 = 0xffffffff; t.icmpType = 128; t.icmpCode = 0; t.icmpId = 0xbeef;
  });
  assert.equal(w.begin(EV_DROP, 1_700_000_000, 123), true);
  w.verdict(-DROP_POLICY_DENY, 1, DIR_EGRESS);
  w.peers(256, 2, 3, -1);
  w.flow(tcp);
  w.state(tcp.tcpFlags, 5, 2, true, 1, 0, 77);
  w.commit(60);
  assert.equal(w.begin(EV_POLICY, 5, 999), true);
  w.verdict(0, V_AUDIT, DIR_INGRESS);
  w.peers(1, 300, -1, 7);
  w.flow(icmp);
  w.state(0, 0, 4, false, 0, 1, NO_INDEX);
  w.commit(104);

  const got: string[] = [];
  const n = new EventReader(ring).drain((r) => {
    got.push(JSON.stringify([r.type, r.timeS, r.timeMs, r.reason, r.verdict, r.dir, r.srcId, r.dstId, r.srcEp, r.dstEp, r.family, r.proto,
      r.sport, r.dport, r.icmpType, r.icmpCode, r.icmpId, [r.src(0), r.src(3)], [r.dst(0), r.dst(3)], r.tcpFlags, r.ctState, r.matchType,
      r.isReply, r.ipcacheMiss, r.audited, r.cookie, r.length, r.seq]));
  });
  const want = [
    JSON.stringify([EV_DROP, 1_700_000_000, 123, 181, 1, DIR_EGRESS, 256, 2, 3, NO_INDEX, 4, IPPROTO_TCP,
      40000, 80, 0, 80, 40000, [0x0a000001, 0], [0x0a000002, 0], TCP_SYN | TCP_ACK, 5, 2, true, true, false, 77, 60, 0]),
    JSON.stringify([EV_POLICY, 5, 999, 0, V_AUDIT, DIR_INGRESS, 1, 300, NO_INDEX, 7, 6, IPPROTO_ICMPV6,
      0xbeef, (128 << 8) | 0, 128, 0, 0xbeef, [0xfd000000, 1], [0xfd000000, 0xffffffff], 0, 0, 4, false, false, true, NO_INDEX, 104, 1]),
  ];
  assert.equal(n, 2, `drained got ${n}, want 2`);
  assert.deepEqual(got, want);
  assert.equal(ring.available(), 0, 'drain consumes what it read');
});

test('a full ring refuses the record and counts it lost; the reader rejects a bad base', () => {
  const ring = EventRing.create(2);
  const w = new EventWriter(ring);
  const t = new PacketInfo();
  for (let i = 0; i < 3; i++) {
    const ok = w.begin(EV_DROP, 0, 0);
    assert.equal(ok, i < 2, `record ${i}: begin got ${ok}, want ${i < 2}`);
    if (!ok) continue;
    w.verdict(1, 1, 0);
    w.peers(0, 0, -1, -1);
    w.flow(t);
    w.state(0, 0, 0, false, 0, 0, 0);
    w.commit(1);
  }
  assert.equal(ring.lost(), 1, `lost got ${ring.lost()}, want 1`);
  assert.throws(() => new EventReader(ring).at(5), RangeError);
});

test('counter helpers address the slots of the documented layout', () => {
  const c = createCounters();
  countDrop(c, DROP_WRITE_ERROR, DIR_INGRESS, 3, 300);
  countDrop(c, -DROP_WRITE_ERROR, DIR_EGRESS, 1, 50);
  countForward(c, DIR_EGRESS, 1500);
  const r = -DROP_WRITE_ERROR;
  const cases: [string, number, number][] = [
    ['drop pkts ingress', dropPacketsSlot(r, DIR_INGRESS), 3],
    ['drop bytes ingress', dropBytesSlot(r, DIR_INGRESS), 300],
    ['drop pkts egress', dropPacketsSlot(r, DIR_EGRESS), 1],
    ['drop bytes egress', dropBytesSlot(r, DIR_EGRESS), 50],
    ['fwd pkts egress', forwardPacketsSlot(DIR_EGRESS), 1],
    ['fwd bytes egress', forwardBytesSlot(DIR_EGRESS), 1500],
    ['fwd pkts ingress', forwardPacketsSlot(DIR_INGRESS), 0],
  ];
  for (const [name, slot, want] of cases) assert.equal(c[slot], want, `${name}: got ${c[slot]}, want ${want}`);
  assert.equal(totalDropped(c), 4, `totalDropped got ${totalDropped(c)}, want 4`);
});
