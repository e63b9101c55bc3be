import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PacketInfo } from '../../src/datapath/packet.js';
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN } from '../../src/proto/ip.js';
import {
  ConntrackTable, CT_ESTABLISHED, CT_REOPENED, CT_REPLY, ctStateName,
  CTF_REPLY_SEEN, CTF_RX_CLOSING, CTF_SEEN_NON_SYN, CTF_TX_CLOSING, EVICT_WINDOW,
  ownerSlot, type CtEvictions,
} from '../../src/tables/conntrack.js';
import { Rand } from '../helpers/rand.js';

// ---- helpers ---------------------------------------------------------------------------------

type Addr = readonly [number, number, number, number];

function v4(a: number, b: number, c: number, d: number): Addr {
  return [((a << 24) | (b << 16) | (c << 8) | d) >>> 0, 0, 0, 0];
}
function v6(w0: number, w3: number): Addr {
  return [w0 >>> 0, 0, 0, w3 >>> 0];
}

interface Pkt {
  family: number; proto: number; src: Addr; dst: Addr; sport: number; dport: number;
  flags?: number; len?: number; icmpType?: number; icmpId?: number;
}

/** Fill a PacketInfo by hand (the parser is not used here). */
function fill(pi: PacketInfo, p: Pkt): PacketInfo {
  pi.reset();
  pi.family = p.family;
  pi.proto = p.proto;
  pi.src0 = p.src[0]; pi.src1 = p.src[1]; pi.src2 = p.src[2]; pi.src3 = p.src[3];
  pi.dst0 = p.dst[0]; pi.dst1 = p.dst[1]; pi.dst2 = p.dst[2]; pi.dst3 = p.dst[3];
  pi.sport = p.sport;
  pi.dport = p.dport;
  pi.tcpFlags = p.flags ?? 0;
  pi.totalLen = p.len ?? 60;
  if (p.icmpType !== undefined) pi.icmpType = p.icmpType;
  if (p.icmpId !== undefined) pi.icmpId = p.icmpId;
  return pi;
}
function pkt(p: Pkt): PacketInfo {
  return fill(new PacketInfo(), p);
}
function reverse(p: Pkt, flags = 0, len = 60): Pkt {
  return { ...p, src: p.dst, dst: p.src, sport: p.dport, dport: p.sport, flags, len };
}

function newTable(capacity = 1024, opts?: ConstructorParameters<typeof ConntrackTable>[3]): ConntrackTable {
  const sab = new SharedArrayBuffer(ConntrackTable.bytesFor(capacity) + 64);
  return new ConntrackTable(sab, 64, capacity, opts);
}

const A4 = v4(10, 0, 0, 1);
const B4 = v4(10, 0, 0, 2);
const A6 = v6(0xfd000000, 1);
const B6 = v6(0xfd000000, 2);

// ---- table-driven flow scenarios --------------------------------------------------------------

interface Step {
  /** 'c' client -> server (original direction), 's' server -> client. */
  from: 'c' | 's';
  flags: number;
  /** -1: expect a lookup miss followed by create. */
  state: number;
  lifetime: number;
  at?: number;
}

const L = { tcp: 21600, nonTcp: 60, syn: 60, close: 10 };
const handshake: Step[] = [
  { from: 'c', flags: TCP_SYN, state: -1, lifetime: L.syn },
  { from: 's', flags: TCP_SYN | TCP_ACK, state: CT_REPLY, lifetime: L.syn },
  { from: 'c', flags: TCP_ACK, state: CT_ESTABLISHED, lifetime: L.tcp },
  { from: 's', flags: TCP_ACK | TCP_PSH, state: CT_REPLY, lifetime: L.tcp },
];

const scenarios: { name: string; flow: Pkt; steps: Step[] }[] = [
  { name: 'tcp4 handshake', flow: { family: 4, proto: IPPROTO_TCP, src: A4, dst: B4, sport: 40000, dport: 80 }, steps: handshake },
  { name: 'tcp6 handshake', flow: { family: 6, proto: IPPROTO_TCP, src: A6, dst: B6, sport: 40000, dport: 443 }, steps: handshake },
  {
    name: 'tcp4 FIN both ways -> close lifetime',
    flow: { family: 4, proto: IPPROTO_TCP, src: A4, dst: B4, sport: 40001, dport: 80 },
    steps: [
      ...handshake,
      { from: 'c', flags: TCP_FIN | TCP_ACK, state: CT_ESTABLISHED, lifetime: L.tcp },
      { from: 's', flags: TCP_FIN | TCP_ACK, state: CT_REPLY, lifetime: L.close },
      { from: 'c', flags: TCP_ACK, state: CT_ESTABLISHED, lifetime: L.close },
    ],
  },
  {
    name: 'tcp6 RST from server -> close lifetime',
    flow: { family: 6, proto: IPPROTO_TCP, src: A6, dst: B6, sport: 40002, dport: 80 },
    steps: [...handshake, { from: 's', flags: TCP_RST, state: CT_REPLY, lifetime: L.close }],
  },
  {
    name: 'tcp4 SYN after RST -> reopened',
    flow: { family: 4, proto: IPPROTO_TCP, src: A4, dst: B4, sport: 40003, dport: 80 },
    steps: [
      ...handshake,
      { from: 'c', flags: TCP_RST | TCP_ACK, state: CT_ESTABLISHED, lifetime: L.close },
      { from: 'c', flags: TCP_SYN, state: CT_REOPENED, lifetime: L.syn, at: 3 },
      { from: 's', flags: TCP_SYN | TCP_ACK, state: CT_REPLY, lifetime: L.syn },
      { from: 'c', flags: TCP_ACK, state: CT_ESTABLISHED, lifetime: L.tcp },
    ],
  },
  {
    name: 'tcp4 SYN after FIN both ways -> reopened',
    flow: { family: 4, proto: IPPROTO_TCP, src: A4, dst: B4, sport: 40004, dport: 80 },
    steps: [
      ...handshake,
      { from: 'c', flags: TCP_FIN | TCP_ACK, state: CT_ESTABLISHED, lifetime: L.tcp },
      { from: 's', flags: TCP_FIN | TCP_ACK, state: CT_REPLY, lifetime: L.close },
      { from: 'c', flags: TCP_SYN, state: CT_REOPENED, lifetime: L.syn },
    ],
  },
  {
    name: 'tcp4 retransmitted SYN on a live flow is not a reopen',
    flow: { family: 4, proto: IPPROTO_TCP, src: A4, dst: B4, sport: 40005, dport: 80 },
    steps: [
      { from: 'c', flags: TCP_SYN, state: -1, lifetime: L.syn },
      { from: 'c', flags: TCP_SYN, state: CT_ESTABLISHED, lifetime: L.syn },
    ],
  },
  {
    name: 'udp4 request/reply',
    flow: { family: 4, proto: IPPROTO_UDP, src: A4, dst: B4, sport: 5353, dport: 53 },
    steps: [
      { from: 'c', flags: 0, state: -1, lifetime: L.nonTcp },
      { from: 's', flags: 0, state: CT_REPLY, lifetime: L.nonTcp },
      { from: 'c', flags: 0, state: CT_ESTABLISHED, lifetime: L.nonTcp, at: 30 },
    ],
  },
  {
    name: 'udp6 request/reply',
    flow: { family: 6, proto: IPPROTO_UDP, src: A6, dst: B6, sport: 5353, dport: 53 },
    steps: [
      { from: 'c', flags: 0, state: -1, lifetime: L.nonTcp },
      { from: 's', flags: 0, state: CT_REPLY, lifetime: L.nonTcp },
    ],
  },
  {
    name: 'icmp echo request/reply by id',
    flow: { family: 4, proto: IPPROTO_ICMP, src: A4, dst: B4, sport: 77, dport: 77, icmpType: 8, icmpId: 77 },
    steps: [
      { from: 'c', flags: 0, state: -1, lifetime: L.nonTcp },
      { from: 's', flags: 0, state: CT_REPLY, lifetime: L.nonTcp },
      { from: 'c', flags: 0, state: CT_ESTABLISHED, lifetime: L.nonTcp },
    ],
  },
  {
    name: 'icmpv6 echo request/reply by id',
    flow: { family: 6, proto: IPPROTO_ICMPV6, src: A6, dst: B6, sport: 9, dport: 9, icmpType: 128, icmpId: 9 },
    steps: [
      { from: 'c', flags: 0, state: -1, lifetime: L.nonTcp },
      { from: 's', flags: 0, state: CT_REPLY, lifetime: L.nonTcp },
    ],
  },
];

for (const sc of scenarios) {
  test(`conntrack scenario: ${sc.name}`, () => {
    const ct = newTable();
    const pi = new PacketInfo();
    let now = 1000;
    let idx = -1;
    sc.steps.forEach((st, i) => {
      now += st.at ?? 1;
      const p = st.from === 'c' ? { ...sc.flow, flags: st.flags, len: 100 + i } : reverse(sc.flow, st.flags, 100 + i);
      fill(pi, p);
      const got = ct.lookup(pi, now);
      if (st.state === -1) {
        assert.equal(got, -1, `step ${i}: lookup got ${got}, want miss`);
        idx = ct.create(pi, 1234, now);
        assert.ok(idx >= 0, `step ${i}: create got ${idx}, want an index`);
      } else {
        assert.equal(got, idx, `step ${i}: lookup got ${got}, want ${idx}`);
        const wantDir = st.from === 'c' ? 0 : 1;
        assert.equal(ct.lastDir, wantDir, `step ${i}: lastDir got ${ct.lastDir}, want ${wantDir}`);
        const state = ct.update(idx, pi, wantDir, now);
        assert.equal(state, st.state, `step ${i}: state got ${ctStateName(state)}, want ${ctStateName(st.state)}`);
      }
      assert.equal(ct.expires(idx) - now, st.lifetime, `step ${i}: lifetime got ${ct.expires(idx) - now}, want ${st.lifetime}`);
    });
    const nC = sc.steps.filter((s) => s.from === 'c').length;
    const nS = sc.steps.length - nC;
    assert.equal(ct.packets(idx, 0), nC, `packets[0] got ${ct.packets(idx, 0)}, want ${nC}`);
    assert.equal(ct.packets(idx, 1), nS, `packets[1] got ${ct.packets(idx, 1)}, want ${nS}`);
    const wantBytes0 = sc.steps.reduce((a, s, i) => a + (s.from === 'c' ? 100 + i : 0), 0);
    assert.equal(ct.bytes(idx, 0), wantBytes0, `bytes[0] got ${ct.bytes(idx, 0)}, want ${wantBytes0}`);
    assert.equal(ct.identity(idx), 1234, `identity got ${ct.identity(idx)}, want 1234`);
    assert.equal(ct.count, 1, `count got ${ct.count}, want 1`);
  });
}

test('conntrack: TCP flag bits per direction', () => {
  const ct = newTable();
  const flow: Pkt = { family: 4, proto: IPPROTO_TCP, src: A4, dst: B4, sport: 1, dport: 2 };
  const idx = ct.create(pkt({ ...flow, flags: TCP_SYN }), 1, 0);
  assert.equal(ct.tcpFlagsSeen(idx, 0), TCP_SYN, `dir0 flags got ${ct.tcpFlagsSeen(idx, 0)}, want SYN`);
  assert.equal(ct.replySeen(idx), false, 'replySeen got true, want false');
  ct.update(idx, pkt(reverse(flow, TCP_SYN | TCP_ACK)), 1, 0);
  ct.update(idx, pkt(reverse(flow, TCP_FIN | TCP_ACK)), 1, 0);
  const cases: [string, number, number][] = [
    ['dir1 flags', ct.tcpFlagsSeen(idx, 1), TCP_SYN | TCP_ACK | TCP_FIN],
    ['reply seen', ct.flags(idx) & CTF_REPLY_SEEN, CTF_REPLY_SEEN],
    ['seen non-SYN', ct.flags(idx) & CTF_SEEN_NON_SYN, CTF_SEEN_NON_SYN],
    ['rx closing', ct.flags(idx) & CTF_RX_CLOSING, CTF_RX_CLOSING],
    ['tx closing', ct.flags(idx) & CTF_TX_CLOSING, 0],
  ];
  for (const [name, got, want] of cases) assert.equal(got, want, `${name} got ${got}, want ${want}`);
});

test('conntrack: custom lifetimes are stored in the header and used', () => {
  const ct = newTable(64, { tcpLifetime: 500, nonTcpLifetime: 7, synLifetime: 11, closeLifetime: 3 });
  const cases: [string, number, number][] = [
    ['tcpLifetime', ct.tcpLifetime, 500], ['nonTcpLifetime', ct.nonTcpLifetime, 7],
    ['synLifetime', ct.synLifetime, 11], ['closeLifetime', ct.closeLifetime, 3],
  ];
  for (const [name, got, want] of cases) assert.equal(got, want, `${name} got ${got}, want ${want}`);
  const flow: Pkt = { family: 4, proto: IPPROTO_TCP, src: A4, dst: B4, sport: 1, dport: 2 };
  const idx = ct.create(pkt({ ...flow, flags: TCP_SYN }), 1, 100);
  assert.equal(ct.expires(idx), 111, `syn expires got ${ct.expires(idx)}, want 111`);
  ct.update(idx, pkt(reverse(flow, TCP_ACK)), 1, 100);
  assert.equal(ct.expires(idx), 600, `established expires got ${ct.expires(idx)}, want 600`);
  const u = ct.create(pkt({ ...flow, proto: IPPROTO_UDP }), 1, 100);
  assert.equal(ct.expires(u), 107, `udp expires got ${ct.expires(u)}, want 107`);
  assert.throws(() => newTable(64, { tcpLifetime: 0 }), /options\.tcpLifetime/);
  assert.throws(() => newTable(100), /power of two/);
});

test('conntrack: ICMP error finds the flow of its inner packet', () => {
  const ct = newTable();
  const udp: Pkt = { family: 4, proto: IPPROTO_UDP, src: A4, dst: B4, sport: 3333, dport: 53 };
  const echo: Pkt = { family: 6, proto: IPPROTO_ICMPV6, src: A6, dst: B6, sport: 5, dport: 5, icmpId: 5 };
  const iu = ct.create(pkt(udp), 1, 0);
  const ie = ct.create(pkt(echo), 1, 0);
  const cases: { name: string; inner: Pkt; want: number; dir: number }[] = [
    { name: 'inner as sent by originator', inner: udp, want: iu, dir: 1 },
    { name: 'inner as sent by responder', inner: reverse(udp), want: iu, dir: 0 },
    { name: 'inner echo request', inner: echo, want: ie, dir: 1 },
    { name: 'other port', inner: { ...udp, dport: 54 }, want: -1, dir: -1 },
    { name: 'other proto', inner: { ...udp, proto: IPPROTO_TCP }, want: -1, dir: -1 },
    { name: 'other host', inner: { ...udp, dst: v4(10, 0, 0, 3) }, want: -1, dir: -1 },
  ];
  for (const c of cases) {
    const got = ct.lookupRelated(pkt(c.inner), 1);
    assert.equal(got, c.want, `${c.name}: got ${got}, want ${c.want}`);
    if (c.dir >= 0) assert.equal(ct.lastDir, c.dir, `${c.name}: lastDir got ${ct.lastDir}, want ${c.dir}`);
  }
  assert.equal(ct.lookupRelated(pkt(udp), 61), -1, 'expired flow: got a hit, want -1');
});

test('conntrack: ICMP echo with another id is another flow', () => {
  const ct = newTable();
  const echo: Pkt = { family: 4, proto: IPPROTO_ICMP, src: A4, dst: B4, sport: 1, dport: 1, icmpId: 1 };
  ct.create(pkt(echo), 1, 0);
  const got = ct.lookup(pkt({ ...reverse(echo), sport: 2, dport: 2, icmpId: 2 }), 0);
  assert.equal(got, -1, `got ${got}, want -1`);
});

test('conntrack: expiry turns a hit into a miss and create reuses the slot', () => {
  const ct = newTable();
  const udp = pkt({ family: 4, proto: IPPROTO_UDP, src: A4, dst: B4, sport: 1, dport: 2 });
  const idx = ct.create(udp, 1, 100);
  const cases: [number, number][] = [[100, idx], [159, idx], [160, -1], [10000, -1]];
  for (const [now, want] of cases) {
    const got = ct.lookup(udp, now);
    assert.equal(got, want, `lookup at ${now} got ${got}, want ${want}`);
  }
  const again = ct.create(udp, 2, 200);
  assert.equal(again, idx, `re-create got slot ${again}, want ${idx}`);
  assert.equal(ct.count, 1, `count got ${ct.count}, want 1`);
  assert.equal(ct.packets(again, 0), 1, `packets got ${ct.packets(again, 0)}, want 1 (fresh entry)`);
  assert.equal(ct.identity(again), 2, `identity got ${ct.identity(again)}, want 2`);
});

function udpFlowPkt(i: number): Pkt {
  return { family: 4, proto: IPPROTO_UDP, src: v4(10, 1, (i >> 8) & 0xff, i & 0xff), dst: B4, sport: 1000 + (i & 0xfff), dport: 53 };
}
function udpFlow(i: number): PacketInfo {
  return pkt(udpFlowPkt(i));
}

test('conntrack: a full table evicts: expired, then unreplied, then least recently seen', () => {
  // capacity 16: the eviction window (EVICT_WINDOW) covers the whole table
  interface Case { name: string; prepare: (ct: ConntrackTable) => void; at: number; victim: number; reason: keyof CtEvictions }
  const cases: Case[] = [
    // every entry created at t=0 (UDP, 60 s): at t=60 all have expired
    { name: 'expired first', prepare: () => {}, at: 60, victim: -1, reason: 'expired' },
    // flows 0..13 replied at t=5 except flow 9 (created t=0, unreplied) and 4 (unreplied, seen t=3)
    {
      name: 'unreplied before replied, least recently seen first',
      prepare: (ct) => {
        const pi = new PacketInfo();
        for (let i = 0; i < 14; i++) {
          if (i === 9) continue;
          const f = udpFlowPkt(i);
          if (i === 4) { ct.update(ct.lookup(fill(pi, f), 3), pi, 0, 3); continue; }
          ct.update(ct.lookup(fill(pi, reverse(f)), 5), pi, 1, 5);
        }
      },
      at: 10, victim: 9, reason: 'unreplied',
    },
    // every flow replied; flow 6 was seen last at t=1, all others at t=7
    {
      name: 'least recently seen when every flow saw a reply',
      prepare: (ct) => {
        const pi = new PacketInfo();
        for (let i = 0; i < 14; i++) {
          const f = udpFlowPkt(i);
          const t = i === 6 ? 1 : 7;
          ct.update(ct.lookup(fill(pi, reverse(f)), t), pi, 1, t);
        }
      },
      at: 10, victim: 6, reason: 'oldest',
    },
  ];
  for (const c of cases) {
    const ct = newTable(16);
    assert.equal(ct.maxEntries, 14, `${c.name}: maxEntries got ${ct.maxEntries}, want 14`);
    for (let i = 0; i < 14; i++) assert.ok(ct.create(udpFlow(i), 1, 0) >= 0, `${c.name}: create ${i} failed`);
    c.prepare(ct);
    const idx = ct.create(udpFlow(100), 1, c.at);
    assert.ok(idx >= 0, `${c.name}: create on a full table got ${idx}, want an index`);
    assert.equal(ct.count, 14, `${c.name}: count got ${ct.count}, want 14`);
    assert.equal(ct.createFailed, 0, `${c.name}: createFailed got ${ct.createFailed}, want 0`);
    assert.equal(ct.lookup(udpFlow(100), c.at), idx, `${c.name}: new entry not found`);
    const ev = ct.evictions();
    // an expired entry on the probe path is simply reused; one elsewhere in the window is evicted
    if (c.reason === 'expired') assert.equal(ev.unreplied + ev.oldest, 0, `${c.name}: live entries evicted (${JSON.stringify(ev)}), want none`);
    else assert.equal(ev[c.reason], 1, `${c.name}: evictions.${c.reason} got ${ev[c.reason]}, want 1 (${JSON.stringify(ev)})`);
    if (c.victim >= 0) {
      assert.equal(ct.lookup(udpFlow(c.victim), c.at), -1, `${c.name}: flow ${c.victim} still present, want it evicted`);
      for (let i = 0; i < 14; i++) {
        if (i !== c.victim) assert.ok(ct.lookup(udpFlow(i), c.at) >= 0, `${c.name}: flow ${i} was evicted, want flow ${c.victim}`);
      }
    }
  }
});

test('conntrack: per-endpoint quota: an owner at its quota replaces its own entries, or is refused', () => {
  // maxEntries 14, share 30% -> quota floor(14 * 30 / 100) = 4 entries per owner
  const ct = newTable(16, { endpointShare: 30 });
  assert.equal(ct.quota, 4, `quota got ${ct.quota}, want 4`);
  const flooder = ownerSlot(7);
  const other = ownerSlot(8);
  for (let i = 0; i < 4; i++) assert.ok(ct.create(udpFlow(i), 1, i, flooder) >= 0, `flooder create ${i} failed`);
  assert.equal(ct.ownerCount(flooder), 4, `flooder count got ${ct.ownerCount(flooder)}, want 4`);
  // the fifth replaces the flooder's least recently seen entry (flow 0), not another owner's
  for (let i = 10; i < 14; i++) assert.ok(ct.create(udpFlow(i), 1, 4, other) >= 0, `other create ${i} failed`);
  assert.ok(ct.create(udpFlow(4), 1, 5, flooder) >= 0, 'flooder create over quota failed, want its own entry replaced');
  const cases: [string, number, boolean][] = [
    ['flooder flow 0 (its oldest)', 0, false], ['flooder flow 1', 1, true], ['flooder flow 4', 4, true],
    ['other flow 10', 10, true], ['other flow 13', 13, true],
  ];
  for (const [name, f, want] of cases) {
    const got = ct.lookup(udpFlow(f), 5) >= 0;
    assert.equal(got, want, `${name}: present got ${got}, want ${want}`);
  }
  assert.equal(ct.ownerCount(flooder), 4, `flooder count got ${ct.ownerCount(flooder)}, want 4`);
  assert.equal(ct.ownerCount(other), 4, `other count got ${ct.ownerCount(other)}, want 4`);
  assert.equal(ct.evictions().quota, 1, `evictions.quota got ${ct.evictions().quota}, want 1`);
  // deleting and expiry give the slot back to the owner
  ct.delete(ct.lookup(udpFlow(4), 5));
  assert.equal(ct.ownerCount(flooder), 3, `flooder count after delete got ${ct.ownerCount(flooder)}, want 3`);
  ct.gc(1000, 16);
  assert.equal(ct.ownerCount(flooder), 0, `flooder count after gc got ${ct.ownerCount(flooder)}, want 0`);
  assert.equal(ct.ownerCount(other), 0, `other count after gc got ${ct.ownerCount(other)}, want 0`);
});

test('conntrack: an owner at its quota with none of its entries in the window is refused (155)', () => {
  // capacity 1024 (window 64 of 1024 slots), quota 1: the flooder's one entry is far away
  const ct = newTable(1024, { endpointShare: 1 });
  const q = ct.quota;
  assert.equal(q, 8, `quota got ${q}, want 8 (1% of ${ct.maxEntries})`);
  const pi = new PacketInfo();
  let refused = 0;
  let made = 0;
  for (let i = 0; i < 400; i++) {
    const c = ct.create(fill(pi, { family: 4, proto: IPPROTO_TCP, src: A4, dst: B4, sport: 2000 + i, dport: 80, flags: TCP_SYN }), 1, 0, ownerSlot(1));
    if (c < 0) refused++; else made++;
  }
  assert.ok(ct.ownerCount(ownerSlot(1)) <= q, `owner count got ${ct.ownerCount(ownerSlot(1))}, want <= ${q}`);
  assert.ok(refused > 0, `refused creates got ${refused}, want > 0`);
  assert.equal(ct.evictions().quotaRefused, refused, `quotaRefused got ${ct.evictions().quotaRefused}, want ${refused}`);
  assert.equal(ct.createFailed, refused, `createFailed got ${ct.createFailed}, want ${refused}`);
  // another owner is untouched by the flood
  assert.ok(ct.create(udpFlow(1), 1, 0, ownerSlot(2)) >= 0, 'another owner could not create');
  assert.ok(made >= q, `created got ${made}, want >= ${q}`);
});

test('conntrack: gc removes expired entries only, in small budgets', () => {
  for (const budget of [1, 7, 64, 1000]) {
    const ct = newTable(256);
    const rnd = new Rand(42 + budget);
    const live: PacketInfo[] = [];
    let expired = 0;
    for (let i = 0; i < 200; i++) {
      const p = udpFlow(i);
      ct.create(p, 1, rnd.bool(0.5) ? 0 : 50); // expires at 60 or 110
      if (ct.expires(ct.lookup(p, 0)) > 100) live.push(p); else expired++;
    }
    let deleted = 0;
    for (let swept = 0; swept < 256; swept += budget) deleted += ct.gc(100, budget);
    assert.equal(deleted, expired, `budget ${budget}: deleted got ${deleted}, want ${expired}`);
    assert.equal(ct.count, live.length, `budget ${budget}: count got ${ct.count}, want ${live.length}`);
    for (const p of live) assert.ok(ct.lookup(p, 100) >= 0, `budget ${budget}: a live entry was lost`);
    assert.equal(ct.gc(100, 256), 0, `budget ${budget}: second sweep deleted entries, want 0`);
  }
});

test('conntrack: flush, attach from another thread view, and adoption after restart', () => {
  const cap = 64;
  const sab = new SharedArrayBuffer(ConntrackTable.bytesFor(cap) + 128);
  const ct = new ConntrackTable(sab, 128, cap, { tcpLifetime: 999 });
  for (let i = 0; i < 10; i++) ct.create(udpFlow(i), 7, 0);
  const ro = ConntrackTable.attach(sab, 128);
  const cases: [string, number, number][] = [
    ['attach capacity', ro.capacity, cap], ['attach count', ro.count, 10], ['attach tcpLifetime', ro.tcpLifetime, 999],
  ];
  for (const [name, got, want] of cases) assert.equal(got, want, `${name} got ${got}, want ${want}`);
  const seen: number[] = [];
  ro.forEach((i) => seen.push(ro.identity(i)));
  assert.deepEqual(seen, new Array(10).fill(7), `attach identities got ${seen}, want ten 7s`);
  const snap = ro.snapshot(ro.lookup(udpFlow(3), 0));
  assert.equal(snap.sport, 1003, `snapshot sport got ${snap.sport}, want 1003`);
  // a restarted worker constructs again over the same region: the flows are still there
  const again = new ConntrackTable(sab, 128, cap, { tcpLifetime: 999 });
  assert.equal(again.count, 10, `after restart count got ${again.count}, want 10`);
  assert.ok(again.lookup(udpFlow(9), 1) >= 0, 'after restart: flow 9 lost');
  again.flush();
  assert.equal(ro.count, 0, `after flush count got ${ro.count}, want 0`);
  assert.equal(again.lookup(udpFlow(9), 1), -1, 'after flush: flow 9 still found');
  assert.throws(() => ConntrackTable.attach(new SharedArrayBuffer(1024), 0), /no conntrack table/);
});

test('conntrack: shouldTrace aggregates per flow', () => {
  const ct = newTable();
  const idx = ct.create(pkt({ family: 4, proto: IPPROTO_TCP, src: A4, dst: B4, sport: 1, dport: 2, flags: TCP_SYN }), 1, 0);
  const steps: [string, number, number, number, boolean][] = [
    ['first', 0, TCP_SYN, 100, true],
    ['same flags soon', 0, TCP_SYN, 101, false],
    ['new flag ACK', 0, TCP_ACK, 102, true],
    ['known flags', 0, TCP_ACK | TCP_SYN, 103, false],
    ['reply dir new flags', 1, TCP_SYN | TCP_ACK, 104, true],
    ['reply dir known', 1, TCP_ACK, 105, false],
    ['interval passed', 0, TCP_ACK, 109, true],
    ['just after', 0, TCP_ACK, 113, false],
    ['5 s later', 1, TCP_ACK, 114, true],
  ];
  for (const [name, dir, flags, now, want] of steps) {
    const got = ct.shouldTrace(idx, dir, flags, now);
    assert.equal(got, want, `${name}: got ${got}, want ${want}`);
  }
});

test('conntrack: policy cache and its reset on reopen', () => {
  const ct = newTable();
  const flow: Pkt = { family: 4, proto: IPPROTO_TCP, src: A4, dst: B4, sport: 1, dport: 2 };
  const idx = ct.create(pkt({ ...flow, flags: TCP_SYN }), 1, 0);
  assert.equal(ct.policyRevision(idx), -1, `fresh revision got ${ct.policyRevision(idx)}, want -1`);
  ct.setPolicyCache(idx, 17, 0xdeadbeef, 3, true);
  const cases: [string, unknown, unknown][] = [
    ['revision', ct.policyRevision(idx), 17], ['cookie', ct.policyCookie(idx), 0xdeadbeef],
    ['matchType', ct.policyMatchType(idx), 3], ['audited', ct.policyAudited(idx), true],
  ];
  for (const [name, got, want] of cases) assert.equal(got, want, `${name} got ${got}, want ${want}`);
  ct.update(idx, pkt({ ...flow, flags: TCP_RST }), 0, 1);
  assert.equal(ct.policyRevision(idx), 17, 'RST dropped the cache, want it kept');
  const st = ct.update(idx, pkt({ ...flow, flags: TCP_SYN }), 0, 2);
  assert.equal(st, CT_REOPENED, `state got ${ctStateName(st)}, want reopened`);
  assert.equal(ct.policyRevision(idx), -1, `after reopen revision got ${ct.policyRevision(idx)}, want -1`);
});

test('conntrack: byte counters carry into the high word', () => {
  const ct = newTable();
  const p = pkt({ family: 4, proto: IPPROTO_UDP, src: A4, dst: B4, sport: 1, dport: 2, len: 65535 });
  const idx = ct.create(p, 1, 0);
  const n = 70000;
  for (let i = 1; i < n; i++) ct.update(idx, p, 0, 0);
  assert.equal(ct.bytes(idx, 0), n * 65535, `bytes got ${ct.bytes(idx, 0)}, want ${n * 65535}`);
  assert.equal(ct.packets(idx, 0), n, `packets got ${ct.packets(idx, 0)}, want ${n}`);
});

// ---- reference model --------------------------------------------------------------------------

interface MEntry {
  key: string; tcp: boolean;
  seen: [number, number]; txClosing: boolean; rxClosing: boolean; nonSyn: boolean; replySeen: boolean;
  expires: number; created: number; identity: number; pkts: [number, number]; bytes: [number, number];
  owner: number; lastSeen: number;
}

/** Naive model: a Map from the orientation string of the creating packet. */
class Model {
  m = new Map<string, MEntry>();
  constructor(readonly lt: typeof L) {}
  static key(p: Pkt): string {
    return `${p.family}/${p.proto} ${p.src.join('.')}:${p.sport} > ${p.dst.join('.')}:${p.dport}`;
  }
  liveCount(now: number): number {
    let n = 0;
    for (const e of this.m.values()) if (e.expires > now) n++;
    return n;
  }
  lookup(p: Pkt, now: number): [MEntry | undefined, number] {
    const f = this.m.get(Model.key(p));
    if (f && f.expires > now) return [f, 0];
    const r = this.m.get(Model.key(reverse(p)));
    if (r && r.expires > now) return [r, 1];
    return [undefined, -1];
  }
  create(p: Pkt, identity: number, now: number, owner: number): MEntry {
    const e: MEntry = {
      key: Model.key(p), tcp: p.proto === IPPROTO_TCP, seen: [0, 0], txClosing: false, rxClosing: false,
      nonSyn: false, replySeen: false, expires: 0, created: now, identity, pkts: [0, 0], bytes: [0, 0],
      owner, lastSeen: now,
    };
    this.m.set(e.key, e);
    this.update(e, p, 0, now);
    return e;
  }
  update(e: MEntry, p: Pkt, dir: number, now: number): number {
    let state = dir === 0 ? CT_ESTABLISHED : CT_REPLY;
    const fl = p.flags ?? 0;
    if (e.tcp) {
      const synOnly = (fl & TCP_SYN) !== 0 && (fl & TCP_ACK) === 0;
      if (synOnly && (e.txClosing || e.rxClosing)) {
        e.seen = [0, 0]; e.txClosing = false; e.rxClosing = false; e.nonSyn = false; e.replySeen = false;
        state = CT_REOPENED;
      }
      e.seen[dir] = (e.seen[dir] as number) | fl;
      if (fl & TCP_RST) { e.txClosing = true; e.rxClosing = true; }
      else if (fl & TCP_FIN) { if (dir === 0) e.txClosing = true; else e.rxClosing = true; }
      if (!(fl & TCP_SYN)) e.nonSyn = true;
    }
    if (dir === 1) e.replySeen = true;
    let lt: number;
    if (!e.tcp) lt = this.lt.nonTcp;
    else if (e.txClosing && e.rxClosing) lt = this.lt.close;
    else if (e.replySeen && e.nonSyn) lt = this.lt.tcp;
    else lt = this.lt.syn;
    e.expires = now + lt;
    e.lastSeen = now;
    e.pkts[dir] = (e.pkts[dir] as number) + 1;
    e.bytes[dir] = (e.bytes[dir] as number) + (p.len ?? 60);
    return state;
  }
}

function tableKey(ct: ConntrackTable, idx: number): string {
  const s = [0, 1, 2, 3].map((i) => ct.srcWord(idx, i));
  const d = [0, 1, 2, 3].map((i) => ct.dstWord(idx, i));
  return `${ct.family(idx)}/${ct.proto(idx)} ${s.join('.')}:${ct.sport(idx)} > ${d.join('.')}:${ct.dport(idx)}`;
}

function compareAll(ct: ConntrackTable, model: Model, now: number, where: string): void {
  let live = 0;
  ct.forEach((idx) => {
    if (ct.expires(idx) <= now) return;
    live++;
    const k = tableKey(ct, idx);
    const e = model.m.get(k);
    assert.ok(e && e.expires > now, `${where}: table has live ${k}, model does not`);
    const f = ct.flags(idx);
    const pairs: [string, unknown, unknown][] = [
      ['expires', ct.expires(idx), e.expires], ['created', ct.created(idx), e.created],
      ['identity', ct.identity(idx), e.identity],
      ['pkts0', ct.packets(idx, 0), e.pkts[0]], ['pkts1', ct.packets(idx, 1), e.pkts[1]],
      ['bytes0', ct.bytes(idx, 0), e.bytes[0]], ['bytes1', ct.bytes(idx, 1), e.bytes[1]],
      ['seen0', ct.tcpFlagsSeen(idx, 0), e.seen[0]], ['seen1', ct.tcpFlagsSeen(idx, 1), e.seen[1]],
      ['txClosing', (f & CTF_TX_CLOSING) !== 0, e.txClosing], ['rxClosing', (f & CTF_RX_CLOSING) !== 0, e.rxClosing],
      ['replySeen', (f & CTF_REPLY_SEEN) !== 0, e.replySeen],
      ['owner', ct.owner(idx), e.owner], ['seen', ct.seen(idx), e.lastSeen],
    ];
    for (const [name, got, want] of pairs) assert.equal(got, want, `${where}: ${k} ${name} got ${got}, want ${want}`);
  });
  const want = model.liveCount(now);
  assert.equal(live, want, `${where}: live entries got ${live}, want ${want}`);
}

function makePool(r: Rand, n: number): Pkt[] {
  const addrs4 = [v4(10, 0, 0, 1), v4(10, 0, 0, 2), v4(10, 0, 0, 3), v4(192, 168, 1, 1)];
  const addrs6 = [v6(0xfd000000, 1), v6(0xfd000000, 2), v6(0x20010db8, 0xffffffff)];
  const pool: Pkt[] = [];
  for (let i = 0; i < n; i++) {
    const fam = r.bool(0.6) ? 4 : 6;
    const addrs = fam === 4 ? addrs4 : addrs6;
    const proto = r.pick([IPPROTO_TCP, IPPROTO_TCP, IPPROTO_UDP, fam === 4 ? IPPROTO_ICMP : IPPROTO_ICMPV6]);
    const src = r.pick(addrs);
    const dst = r.pick(addrs);
    let sport = r.pick([53, 80, 443, r.range(1024, 1100), r.range(30000, 30040)]);
    let dport = r.pick([53, 80, 443, r.range(1024, 1100)]);
    if (proto === IPPROTO_ICMP || proto === IPPROTO_ICMPV6) { sport = r.range(0, 20); dport = sport; }
    pool.push({ family: fam, proto, src, dst, sport, dport });
  }
  return pool;
}

const TCP_FLAG_CHOICES = [TCP_SYN, TCP_SYN | TCP_ACK, TCP_ACK, TCP_ACK | TCP_PSH, TCP_FIN | TCP_ACK, TCP_RST, TCP_RST | TCP_ACK];

for (const seed of [1, 2, 3, 0xc0ffee]) {
  test(`conntrack reference model, seed ${seed}`, () => {
    const r = new Rand(seed);
    const lt = { tcp: 3000, nonTcp: 60, syn: 20, close: 10 };
    const ct = newTable(256, { tcpLifetime: lt.tcp, nonTcpLifetime: lt.nonTcp, synLifetime: lt.syn, closeLifetime: lt.close, endpointShare: 40 });
    const model = new Model(lt);
    const pool = makePool(r, 600);
    const pi = new PacketInfo();
    let now = 1;
    let failures = 0;
    let evicted = 0;
    let quotaEvicted = 0;
    const states = [0, 0, 0, 0, 0];
    const STEPS = 30000;
    for (let step = 0; step < STEPS; step++) {
      const where = `seed ${seed} step ${step}`;
      const op = r.int(100);
      if (op < 55) {
        const base = r.pick(pool);
        let p: Pkt = r.bool(0.5) ? base : reverse(base);
        p = { ...p, flags: p.proto === IPPROTO_TCP ? r.pick(TCP_FLAG_CHOICES) : 0, len: r.range(20, 1500) };
        fill(pi, p);
        const idx = ct.lookup(pi, now);
        const [me, mdir] = model.lookup(p, now);
        assert.equal(idx >= 0, me !== undefined, `${where}: lookup hit got ${idx >= 0}, want ${me !== undefined}`);
        if (me) {
          assert.equal(ct.lastDir, mdir, `${where}: lastDir got ${ct.lastDir}, want ${mdir}`);
          assert.equal(tableKey(ct, idx), me.key, `${where}: entry key got ${tableKey(ct, idx)}, want ${me.key}`);
          const st = ct.update(idx, pi, mdir, now);
          const want = model.update(me, p, mdir, now);
          assert.equal(st, want, `${where}: state got ${ctStateName(st)}, want ${ctStateName(want)}`);
          states[st] = (states[st] as number) + 1;
          assert.equal(ct.expires(idx), me.expires, `${where}: expires got ${ct.expires(idx)}, want ${me.expires}`);
        } else if (r.bool(0.8)) {
          const id = r.range(256, 300);
          // owner 1 creates most flows, so it keeps running into its quota
          const owner = r.bool(0.6) ? 1 : r.range(2, 4);
          const atQuota = ct.ownerCount(owner) >= ct.quota;
          // the eviction window as the table holds it before the create (lookup set lastHash)
          const win: { key: string; live: boolean }[] = [];
          for (let k = 0; k < Math.min(EVICT_WINDOW, ct.capacity); k++) {
            const j = (ct.lastHash + k) & (ct.capacity - 1);
            if (ct.isUsed(j) && (!atQuota || ct.owner(j) === owner)) win.push({ key: tableKey(ct, j), live: ct.expires(j) > now });
          }
          const c = ct.create(pi, id, now, owner);
          // which live model entry did the create take away?
          const after = new Set<string>();
          ct.forEach((j) => { if (ct.expires(j) > now) after.add(tableKey(ct, j)); });
          const gone = [...model.m.values()].filter((e) => e.expires > now && !after.has(e.key) && e.key !== Model.key(p));
          assert.ok(gone.length <= 1, `${where}: create removed ${gone.length} live entries, want at most 1`);
          if (c < 0) {
            failures++;
            assert.ok(atQuota, `${where}: create failed for an owner below its quota (count ${ct.count})`);
            assert.equal(win.length, 0, `${where}: create refused with ${win.length} own entries in the window, want one replaced`);
          } else {
            if (gone.length === 1) {
              const v = gone[0] as MEntry;
              // the model's choice: no expired candidate, then the least recently seen
              // unreplied one, else the least recently seen (first in window order on ties)
              assert.ok(win.every((x) => x.live), `${where}: evicted live ${v.key} although an expired entry was in the window`);
              const cands = win.map((x) => model.m.get(x.key) as MEntry);
              const unr = cands.filter((e) => !e.replySeen);
              const pool2 = unr.length > 0 ? unr : cands;
              let want = pool2[0] as MEntry;
              for (const e of pool2) if (e.lastSeen < want.lastSeen) want = e;
              assert.equal(v.key, want.key, `${where}: evicted ${v.key}, want ${want.key}`);
              if (atQuota) assert.equal(v.owner, owner, `${where}: owner ${owner} at quota evicted owner ${v.owner}'s entry`);
              model.m.delete(v.key);
              evicted++;
              if (atQuota) quotaEvicted++;
            }
            const e = model.create(p, id, now, owner);
            assert.equal(ct.expires(c), e.expires, `${where}: new expires got ${ct.expires(c)}, want ${e.expires}`);
          }
          for (let o = 1; o < 4; o++) {
            let held = 0;
            ct.forEach((j) => { if (ct.owner(j) === o) held++; });
            assert.equal(ct.ownerCount(o), held, `${where}: ownerCount(${o}) got ${ct.ownerCount(o)}, want ${held}`);
            assert.ok(held <= ct.quota, `${where}: owner ${o} holds ${held}, quota ${ct.quota}`);
          }
        }
      } else if (op < 62) {
        const keys = [...model.m.values()].filter((e) => e.expires > now);
        if (keys.length > 0) {
          const e = r.pick(keys);
          const p = pool.find((q) => Model.key(q) === e.key || Model.key(reverse(q)) === e.key) as Pkt;
          const orient = Model.key(p) === e.key ? p : reverse(p);
          const idx = ct.lookup(fill(pi, orient), now);
          assert.ok(idx >= 0, `${where}: model entry ${e.key} not found for delete`);
          ct.delete(idx);
          model.m.delete(e.key);
          assert.equal(ct.lookup(pi, now), -1, `${where}: deleted entry still found`);
        }
      } else if (op < 72) {
        const before = ct.count;
        const n = ct.gc(now, r.range(1, 64));
        assert.equal(ct.count, before - n, `${where}: gc count got ${ct.count}, want ${before - n}`);
      } else if (op < 82) {
        // alternate calm phases (time nearly stops: the table fills up) and busy phases
        // (time runs: entries expire, gc and eviction work)
        const calm = Math.floor(step / 3000) % 2 === 0;
        if (!calm) now += r.bool(0.05) ? r.range(100, 4000) : r.range(0, 5);
        else if (r.bool(0.1)) now += 1;
      } else if (op < 92) {
        const base = r.pick(pool);
        const inner = r.bool(0.5) ? base : reverse(base);
        const idx = ct.lookupRelated(fill(pi, inner), now);
        const [me, mdir] = model.lookup(inner, now);
        assert.equal(idx >= 0, me !== undefined, `${where}: related hit got ${idx >= 0}, want ${me !== undefined}`);
        if (me) assert.equal(ct.lastDir, 1 - mdir, `${where}: related dir got ${ct.lastDir}, want ${1 - mdir}`);
      } else if (op < 93) {
        compareAll(ct, model, now, where);
      }
      const ml = model.liveCount(now);
      assert.ok(ct.count >= ml && ct.count <= ct.maxEntries, `${where}: count ${ct.count} outside [${ml}, ${ct.maxEntries}]`);
    }
    compareAll(ct, model, now, `seed ${seed} end`);
    ct.gc(now, 256);
    assert.equal(ct.count, model.liveCount(now), `seed ${seed}: count after a full sweep got ${ct.count}, want ${model.liveCount(now)}`);
    assert.equal(ct.createFailed, failures, `seed ${seed}: createFailed got ${ct.createFailed}, want ${failures}`);
    // the run must have exercised the interesting paths, or it proves little
    assert.ok(evicted > 0, `seed ${seed}: nothing was ever evicted`);
    assert.ok(quotaEvicted > 0, `seed ${seed}: the quota never forced an eviction`);
    for (const s of [CT_ESTABLISHED, CT_REPLY, CT_REOPENED]) {
      assert.ok((states[s] as number) > 0, `seed ${seed}: state ${ctStateName(s)} never seen`);
    }
  });
}
