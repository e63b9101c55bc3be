/**
 * Scenario tests of the lxc pipeline, in Cilium's shape: build a packet, set up the tables,
 * run the pipeline, check the verdict, the reason, the counters and the events.
 *
 * The cast (see base()):
 *   A  endpoint 1, identity 1001, 10.0.0.1 / fd00::1, port 11
 *   B  endpoint 2, identity 1002, 10.0.0.2 / fd00::2, port 12
 *   C  endpoint 3, identity 1003, 10.0.0.3,           port 13
 *   R  remote prefix 10.1.0.0/16 -> identity 2001 (tunnel endpoint 192.168.50.2)
 *   H  host port 0; host address 192.168.1.1 -> identity 1
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  DROP_CT_CREATE_FAILED,
  DROP_CT_INVALID_HDR,
  DROP_CT_UNKNOWN_PROTO,
  DROP_EP_NOT_READY,
  DROP_FRAG_NOSUPPORT,
  DROP_FRAG_NOT_FOUND,
  DROP_INVALID,
  DROP_INVALID_SIP,
  DROP_POLICY,
  DROP_POLICY_DENY,
  DROP_TTL_EXCEEDED,
  DROP_UNKNOWN_L3,
  DROP_UNROUTABLE,
} from '../../src/datapath/drop.js';
import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN } from '../../src/proto/ip.js';
import { ownerSlot } from '../../src/tables/conntrack.js';
import { ipv4HeaderChecksum } from '../../src/datapath/checksum.js';
import { CT_ESTABLISHED, CT_NEW, CT_RELATED, CT_REPLY } from '../../src/datapath/pipeline.js';
import { DIR_EGRESS, DIR_INGRESS } from '../../src/proto/direction.js';
import {
  POLICY_MATCH_ALL,
  POLICY_MATCH_L3_L4,
  POLICY_MATCH_L3_ONLY,
  POLICY_MATCH_L3_PROTO,
  POLICY_MATCH_L4_ONLY,
  POLICY_MATCH_NONE,
  POLICY_MATCH_PROTO_ONLY,
} from '../../src/tables/policy.js';
import {
  C_AUDITED,
  C_CT_CREATE_FAILED,
  C_DROP_EVENTS,
  C_POLICY_EVENTS,
  C_TRACE_EVENTS,
  EV_DROP,
  EV_POLICY,
  EV_TRACE,
  NO_INDEX,
  V_AUDIT,
  V_DROPPED,
  V_FORWARDED,
} from '../../src/tables/events.js';
import {
  icmpError4,
  ip4,
  ipv4Fragments,
  ipv4Icmp,
  ipv4Raw,
  ipv4Tcp,
  ipv4Udp,
  ipv6Icmp,
  ipv6Raw,
  ipv6Tcp,
  ipv6Udp,
  PROTO_ICMP,
  PROTO_TCP,
  PROTO_UDP,
} from '../helpers/packets.js';
import { ID_HOST, ID_WORLD, makeWorld, type RunResult, type World, type WorldOptions } from '../helpers/world.js';

const A = { ep: 1, id: 1001, v4: '10.0.0.1', v6: 'fd00::1', port: 11 };
const B = { ep: 2, id: 1002, v4: '10.0.0.2', v6: 'fd00::2', port: 12 };
const C = { ep: 3, id: 1003, v4: '10.0.0.3', port: 13 };
const R_ID = 2001;
const R_ADDR = '10.1.2.3';
const TUNNEL = '192.168.50.2';
const HOST_PORT = 0;
const HOST_ADDR = '192.168.1.1';

interface Enforce {
  aIn?: boolean;
  aOut?: boolean;
  bIn?: boolean;
  bOut?: boolean;
  cOut?: boolean;
  aAudit?: boolean;
  host?: boolean;
}

function base(e: Enforce = {}, opts: WorldOptions = {}): World {
  const w = makeWorld(opts);
  w.endpoint({ ep: A.ep, identity: A.id, ipv4: A.v4, ipv6: A.v6, port: A.port, ingress: e.aIn, egress: e.aOut, audit: e.aAudit });
  w.endpoint({ ep: B.ep, identity: B.id, ipv4: B.v4, ipv6: B.v6, port: B.port, ingress: e.bIn, egress: e.bOut });
  w.endpoint({ ep: C.ep, identity: C.id, ipv4: C.v4, port: C.port, egress: e.cOut });
  w.ipcache('10.1.0.0/16', R_ID, TUNNEL);
  if (e.host !== false) w.hostPort(HOST_PORT, HOST_ADDR);
  w.commit();
  return w;
}

function tcp(src: string, dst: string, sport: number, dport: number, flags = TCP_SYN, ttl = 64): Uint8Array {
  return ipv4Tcp({ src, dst, sport, dport, flags, ttl });
}

function expectForward(r: RunResult, port: number, what: string): void {
  assert.equal(r.out, port, `${what}: got out ${r.out} (reason ${r.reason}), want port ${port}`);
  assert.equal(r.reason, 0, `${what}: got reason ${r.reason}, want 0`);
}

function expectDrop(r: RunResult, code: number, what: string): void {
  assert.equal(r.out, code, `${what}: got out ${r.out}, want ${code}`);
  assert.equal(r.reason, -code, `${what}: got reason ${r.reason}, want ${-code}`);
}

describe('pipeline: forwarding without policy', () => {
  test('A -> B TCP forwards to B with identities, CT NEW, counters and events', () => {
    const w = base();
    const pkt = tcp(A.v4, B.v4, 40000, 80);
    const r = w.run(pkt, A.port);
    expectForward(r, B.port, 'A->B');
    assert.equal(r.srcId, A.id, `srcId: got ${r.srcId}, want ${A.id}`);
    assert.equal(r.dstId, B.id, `dstId: got ${r.dstId}, want ${B.id}`);
    assert.equal(r.ctState, CT_NEW, `ctState: got ${r.ctState}, want NEW`);
    assert.equal(r.srcEp, A.ep, `srcEp: got ${r.srcEp}, want ${A.ep}`);
    assert.equal(r.dstEp, B.ep, `dstEp: got ${r.dstEp}, want ${B.ep}`);
    assert.equal(r.matchType, POLICY_MATCH_NONE, `matchType: got ${r.matchType}, want NONE (not enforced)`);
    assert.equal(r.cookie, NO_INDEX, `cookie: got ${r.cookie}, want none`);
    assert.equal(w.forwards(DIR_INGRESS), 1, `forwards ingress: got ${w.forwards(DIR_INGRESS)}, want 1`);
    assert.equal(w.forwardBytes(DIR_INGRESS), pkt.length, `forward bytes: got ${w.forwardBytes(DIR_INGRESS)}, want ${pkt.length}`);
    assert.equal(w.totalDrops(), 0, `drops: got ${w.totalDrops()}, want 0`);
    const ev = w.drainEvents();
    const types = ev.map((e) => e.type);
    // No policy is enforced on either side: no policy-verdict event (as in Cilium), one trace.
    assert.deepEqual(types, [EV_TRACE], `event types: got ${types}, want [TRACE]`);
    const pol = ev[0]!;
    assert.equal(pol.verdict, V_FORWARDED, `trace verdict: got ${pol.verdict}, want FORWARDED`);
    assert.equal(pol.dir, DIR_INGRESS, `trace dir: got ${pol.dir}, want ingress (to the endpoint)`);
    assert.equal(pol.srcId, A.id, `event srcId: got ${pol.srcId}, want ${A.id}`);
    assert.equal(pol.dstId, B.id, `event dstId: got ${pol.dstId}, want ${B.id}`);
    assert.equal(pol.ports, ((40000 << 16) | 80) >>> 0, `event ports: got ${pol.ports}, want 40000:80`);
    assert.deepEqual(pol.src, [ip4(A.v4), 0, 0, 0], `event src: got ${pol.src}`);
    assert.equal(pol.proto, PROTO_TCP, `event proto: got ${pol.proto}, want 6`);
    assert.equal(pol.family, 4, `event family: got ${pol.family}, want 4`);
    assert.equal(pol.tcpFlags, TCP_SYN, `event tcp flags: got ${pol.tcpFlags}, want SYN`);
    assert.equal(pol.srcEp, A.ep, `event srcEp: got ${pol.srcEp}, want ${A.ep}`);
    assert.equal(pol.dstEp, B.ep, `event dstEp: got ${pol.dstEp}, want ${B.ep}`);
    assert.equal(pol.length, pkt.length, `event length: got ${pol.length}, want ${pkt.length}`);
    assert.equal(pol.timeS, w.now, `event time: got ${pol.timeS}, want ${w.now}`);
    assert.equal(w.counter(C_POLICY_EVENTS), 0, `policy events counter: got ${w.counter(C_POLICY_EVENTS)}, want 0`);
    assert.equal(w.counter(C_TRACE_EVENTS), 1, `trace events counter: got ${w.counter(C_TRACE_EVENTS)}, want 1`);
  });

  test('IPv6 A -> B forwards, hop limit decremented', () => {
    const w = base();
    const r = w.run(ipv6Tcp({ src: A.v6, dst: B.v6, sport: 40000, dport: 443, hopLimit: 9 }), A.port);
    expectForward(r, B.port, 'v6 A->B');
    assert.equal(r.dstId, B.id, `dstId: got ${r.dstId}, want ${B.id}`);
    assert.equal(r.bytes[7], 8, `hop limit: got ${r.bytes[7]}, want 8`);
  });

  test('UDP A -> C forwards', () => {
    const w = base();
    const r = w.run(ipv4Udp({ src: A.v4, dst: C.v4, sport: 5000, dport: 53 }), A.port);
    expectForward(r, C.port, 'udp A->C');
  });
});

describe('pipeline: drops before policy', () => {
  const truncated = tcp(A.v4, B.v4, 1, 2).slice(0, 12);
  const lying = tcp(A.v4, B.v4, 1, 2);
  lying[3] = 200; // total length larger than the packet
  const shortTcp = ipv4Raw({ src: A.v4, dst: B.v4, proto: PROTO_TCP, payload: [0, 1, 0, 2, 0, 0, 0, 0] });
  const cases: { name: string; pkt: Uint8Array; port: number; code: number; dir: number }[] = [
    { name: 'source IP spoofing (v4)', pkt: tcp('10.0.0.9', B.v4, 1, 80), port: A.port, code: DROP_INVALID_SIP, dir: DIR_EGRESS },
    { name: 'source IP of another endpoint', pkt: tcp(C.v4, B.v4, 1, 80), port: A.port, code: DROP_INVALID_SIP, dir: DIR_EGRESS },
    { name: 'source IP spoofing (v6)', pkt: ipv6Tcp({ src: 'fd00::99', dst: B.v6, sport: 1, dport: 80 }), port: A.port, code: DROP_INVALID_SIP, dir: DIR_EGRESS },
    { name: 'malformed: truncated IPv4 header', pkt: truncated, port: A.port, code: DROP_INVALID, dir: DIR_EGRESS },
    { name: 'malformed: total length beyond the packet', pkt: lying, port: A.port, code: DROP_INVALID, dir: DIR_EGRESS },
    { name: 'unknown L3 (version 5)', pkt: Uint8Array.from([0x50, 0, 0, 20, ...new Array<number>(16).fill(0)]), port: A.port, code: DROP_UNKNOWN_L3, dir: DIR_EGRESS },
    { name: 'empty packet', pkt: new Uint8Array(0), port: A.port, code: DROP_UNKNOWN_L3, dir: DIR_EGRESS },
    { name: 'truncated TCP header', pkt: shortTcp, port: A.port, code: DROP_CT_INVALID_HDR, dir: DIR_EGRESS },
    { name: 'unknown L4 (GRE)', pkt: ipv4Raw({ src: A.v4, dst: B.v4, proto: 47, payload: new Uint8Array(8) }), port: A.port, code: DROP_CT_UNKNOWN_PROTO, dir: DIR_EGRESS },
    { name: 'ICMPv4 inside IPv6', pkt: ipv6Raw({ src: A.v6, dst: B.v6, proto: PROTO_ICMP, payload: new Uint8Array(8) }), port: A.port, code: DROP_CT_UNKNOWN_PROTO, dir: DIR_EGRESS },
    { name: 'unknown L4 from the host port', pkt: ipv4Raw({ src: R_ADDR, dst: B.v4, proto: 47, payload: new Uint8Array(8) }), port: HOST_PORT, code: DROP_CT_UNKNOWN_PROTO, dir: DIR_INGRESS },
  ];
  for (const c of cases) {
    test(`${c.name} -> ${-c.code}`, () => {
      const w = base();
      const r = w.run(c.pkt, c.port);
      expectDrop(r, c.code, c.name);
      assert.equal(w.drops(c.code, c.dir), 1, `drops[${-c.code}][dir ${c.dir}]: got ${w.drops(c.code, c.dir)}, want 1`);
      assert.equal(w.dropBytes(c.code, c.dir), c.pkt.length, `drop bytes: got ${w.dropBytes(c.code, c.dir)}, want ${c.pkt.length}`);
      assert.equal(w.totalDrops(), 1, `total drops: got ${w.totalDrops()}, want 1`);
      assert.equal(w.forwards(0) + w.forwards(1), 0, 'no forward counted');
      const ev = w.drainEvents();
      assert.equal(ev.length, 1, `events: got ${ev.length}, want 1`);
      assert.equal(ev[0]!.type, EV_DROP, `event type: got ${ev[0]!.type}, want DROP`);
      assert.equal(ev[0]!.reason, -c.code, `event reason: got ${ev[0]!.reason}, want ${-c.code}`);
      assert.equal(ev[0]!.verdict, V_DROPPED, `event verdict: got ${ev[0]!.verdict}, want DROPPED`);
      assert.equal(w.counter(C_DROP_EVENTS), 1, `drop events counter: got ${w.counter(C_DROP_EVENTS)}, want 1`);
      assert.equal(w.ct.count, 0, `conntrack entries: got ${w.ct.count}, want 0`);
    });
  }
});

describe('pipeline: policy', () => {
  test('egress enforced, no matching entry -> 133 with a policy event', () => {
    const w = base({ aOut: true });
    const r = w.run(tcp(A.v4, B.v4, 40000, 80), A.port);
    expectDrop(r, DROP_POLICY, 'no entry');
    assert.equal(r.dir, DIR_EGRESS, `dir: got ${r.dir}, want egress`);
    assert.equal(w.drops(DROP_POLICY, DIR_EGRESS), 1, `drops[133][egress]: got ${w.drops(DROP_POLICY, DIR_EGRESS)}, want 1`);
    const ev = w.drainEvents();
    const pol = ev.filter((e) => e.type === EV_POLICY);
    assert.equal(pol.length, 1, `policy events: got ${pol.length}, want 1`);
    assert.equal(pol[0]!.verdict, V_DROPPED, `verdict: got ${pol[0]!.verdict}, want DROPPED`);
    assert.equal(pol[0]!.reason, -DROP_POLICY, `reason: got ${pol[0]!.reason}, want 133`);
    assert.equal(pol[0]!.dir, DIR_EGRESS, `event dir: got ${pol[0]!.dir}, want egress`);
    assert.equal(pol[0]!.dstId, B.id, `event dstId: got ${pol[0]!.dstId}, want ${B.id}`);
    assert.equal(ev.filter((e) => e.type === EV_DROP).length, 1, 'one drop event');
    assert.equal(w.ct.count, 0, `no conntrack entry for a dropped new flow: got ${w.ct.count}`);
  });

  test('a deny entry -> 181, reporting its cookie; deny beats a longer allow', () => {
    const w = base({ aOut: true });
    w.allow({ ep: A.ep, dir: DIR_EGRESS, identity: B.id, proto: PROTO_TCP, port: 80, cookie: 10 });
    w.deny({ ep: A.ep, dir: DIR_EGRESS, identity: B.id, cookie: 11 });
    const r = w.run(tcp(A.v4, B.v4, 40000, 80), A.port);
    expectDrop(r, DROP_POLICY_DENY, 'deny');
    assert.equal(r.cookie, 11, `cookie: got ${r.cookie}, want 11`);
    assert.equal(r.matchType, POLICY_MATCH_L3_ONLY, `matchType: got ${r.matchType}, want L3_ONLY`);
    assert.equal(w.drops(DROP_POLICY_DENY, DIR_EGRESS), 1, 'drops[181][egress] = 1');
    const pol = w.drainEvents().filter((e) => e.type === EV_POLICY);
    assert.equal(pol[0]?.reason, -DROP_POLICY_DENY, `policy event reason: got ${pol[0]?.reason}, want 181`);
    assert.equal(pol[0]?.cookie, 11, `policy event cookie: got ${pol[0]?.cookie}, want 11`);
  });

  const kinds: { name: string; rule: { identity?: number; proto?: number; port?: number; prefixLen?: number }; match: number; miss: Uint8Array }[] = [
    { name: 'L3-only', rule: { identity: B.id }, match: POLICY_MATCH_L3_ONLY, miss: tcp(A.v4, C.v4, 40000, 80) },
    { name: 'L3+L4', rule: { identity: B.id, proto: PROTO_TCP, port: 80 }, match: POLICY_MATCH_L3_L4, miss: tcp(A.v4, B.v4, 40000, 81) },
    { name: 'L4-only', rule: { proto: PROTO_TCP, port: 80 }, match: POLICY_MATCH_L4_ONLY, miss: ipv4Udp({ src: A.v4, dst: B.v4, sport: 40000, dport: 80 }) },
    { name: 'ALL', rule: {}, match: POLICY_MATCH_ALL, miss: new Uint8Array(0) },
    { name: 'L3_PROTO', rule: { identity: B.id, proto: PROTO_TCP }, match: POLICY_MATCH_L3_PROTO, miss: ipv4Udp({ src: A.v4, dst: B.v4, sport: 40000, dport: 80 }) },
    { name: 'PROTO_ONLY', rule: { proto: PROTO_TCP }, match: POLICY_MATCH_PROTO_ONLY, miss: ipv4Udp({ src: A.v4, dst: C.v4, sport: 40000, dport: 80 }) },
    { name: 'port range 64..127 (prefix 18)', rule: { identity: B.id, proto: PROTO_TCP, port: 64, prefixLen: 18 }, match: POLICY_MATCH_L3_L4, miss: tcp(A.v4, B.v4, 40000, 128) },
  ];
  for (const k of kinds) {
    test(`${k.name} allow reports its match type and cookie`, () => {
      const w = base({ aOut: true });
      const cookie = 500 + k.match;
      w.allow({ ep: A.ep, dir: DIR_EGRESS, cookie, ...k.rule });
      const r = w.run(tcp(A.v4, B.v4, 40000, 80), A.port);
      expectForward(r, B.port, k.name);
      assert.equal(r.matchType, k.match, `matchType: got ${r.matchType}, want ${k.match}`);
      assert.equal(r.cookie, cookie, `cookie: got ${r.cookie}, want ${cookie}`);
      const pol = w.drainEvents().filter((e) => e.type === EV_POLICY);
      assert.equal(pol[0]?.matchType, k.match, `event matchType: got ${pol[0]?.matchType}, want ${k.match}`);
      assert.equal(pol[0]?.cookie, cookie, `event cookie: got ${pol[0]?.cookie}, want ${cookie}`);
      if (k.miss.length > 0) {
        const m = w.run(k.miss, A.port);
        expectDrop(m, DROP_POLICY, `${k.name}: a packet outside the rule`);
      }
    });
  }

  test('ingress policy of the destination is checked with the source identity', () => {
    const w = base({ bIn: true });
    w.allow({ ep: B.ep, dir: DIR_INGRESS, identity: A.id, proto: PROTO_TCP, port: 80, cookie: 21 });
    const ok = w.run(tcp(A.v4, B.v4, 40000, 80), A.port);
    expectForward(ok, B.port, 'A->B:80');
    assert.equal(ok.matchType, POLICY_MATCH_L3_L4, `matchType: got ${ok.matchType}, want L3_L4`);
    assert.equal(ok.cookie, 21, `cookie: got ${ok.cookie}, want 21`);
    const bad = w.run(tcp(C.v4, B.v4, 40000, 80), C.port);
    expectDrop(bad, DROP_POLICY, 'C->B:80');
    assert.equal(bad.dir, DIR_INGRESS, `dir: got ${bad.dir}, want ingress`);
    assert.equal(bad.srcId, C.id, `srcId: got ${bad.srcId}, want ${C.id}`);
    assert.equal(w.drops(DROP_POLICY, DIR_INGRESS), 1, 'drops[133][ingress] = 1');
    assert.equal(w.drops(DROP_POLICY, DIR_EGRESS), 0, 'drops[133][egress] = 0');
    const pol = w.drainEvents().filter((e) => e.type === EV_POLICY && e.verdict === V_DROPPED);
    assert.equal(pol[0]?.dir, DIR_INGRESS, `policy drop event dir: got ${pol[0]?.dir}, want ingress`);
  });

  test('egress of the source and ingress of the destination must both allow', () => {
    const w = base({ aOut: true, bIn: true });
    w.allow({ ep: A.ep, dir: DIR_EGRESS, identity: B.id, proto: PROTO_TCP, port: 80, cookie: 1 });
    expectDrop(w.run(tcp(A.v4, B.v4, 40000, 80), A.port), DROP_POLICY, 'egress only');
    w.allow({ ep: B.ep, dir: DIR_INGRESS, identity: A.id, cookie: 2 });
    const r = w.run(tcp(A.v4, B.v4, 40001, 80), A.port);
    expectForward(r, B.port, 'both');
    // The ingress entry decides what is reported (it is the last check).
    assert.equal(r.cookie, 2, `cookie: got ${r.cookie}, want 2`);
    assert.equal(r.matchType, POLICY_MATCH_L3_ONLY, `matchType: got ${r.matchType}, want L3_ONLY`);
  });

  test('reply packets skip policy (CT_REPLY)', () => {
    const w = base({ aOut: true, aIn: true });
    w.allow({ ep: A.ep, dir: DIR_EGRESS, identity: B.id, proto: PROTO_TCP, port: 80, cookie: 3 });
    expectForward(w.run(tcp(A.v4, B.v4, 40000, 80, TCP_SYN), A.port), B.port, 'SYN');
    const synack = w.run(tcp(B.v4, A.v4, 80, 40000, TCP_SYN | TCP_ACK), B.port);
    expectForward(synack, A.port, 'SYN/ACK');
    assert.equal(synack.ctState, CT_REPLY, `ctState: got ${synack.ctState}, want REPLY`);
    const ack = w.run(tcp(A.v4, B.v4, 40000, 80, TCP_ACK), A.port);
    expectForward(ack, B.port, 'ACK');
    assert.equal(ack.ctState, CT_ESTABLISHED, `ctState: got ${ack.ctState}, want ESTABLISHED`);
    // A's ingress really is enforced: a new connection from B to A is refused.
    const fresh = w.run(tcp(B.v4, A.v4, 80, 40001, TCP_SYN), B.port);
    expectDrop(fresh, DROP_POLICY, 'new B->A');
    assert.equal(fresh.dir, DIR_INGRESS, `dir: got ${fresh.dir}, want ingress`);
  });

  test('an established flow is re-checked after a policy change, not while the revision is unchanged', () => {
    const w = base({ aOut: true });
    const rule = { ep: A.ep, dir: DIR_EGRESS as 0 | 1, identity: B.id, proto: PROTO_TCP, port: 80, cookie: 4 };
    w.allow(rule);
    expectForward(w.run(tcp(A.v4, B.v4, 40000, 80, TCP_SYN), A.port), B.port, 'SYN');
    const est = w.run(tcp(A.v4, B.v4, 40000, 80, TCP_ACK), A.port);
    expectForward(est, B.port, 'ACK');
    assert.equal(est.ctState, CT_ESTABLISHED, `ctState: got ${est.ctState}, want ESTABLISHED`);
    assert.equal(est.cookie, 4, `cached cookie: got ${est.cookie}, want 4`);
    assert.equal(est.matchType, POLICY_MATCH_L3_L4, `cached matchType: got ${est.matchType}, want L3_L4`);

    // Remove the entry without bumping the revision: the cached verdict still holds for the
    // established flow, while a new flow sees the table as it is.
    const rev = w.revision;
    w.writer.policy.remove({ ...rule, prefixLen: 24 });
    w.writer.commit();
    assert.equal(w.revision, rev, `revision: got ${w.revision}, want unchanged ${rev}`);
    expectForward(w.run(tcp(A.v4, B.v4, 40000, 80, TCP_ACK), A.port), B.port, 'cached verdict');
    expectDrop(w.run(tcp(A.v4, B.v4, 40001, 80, TCP_SYN), A.port), DROP_POLICY, 'new flow');

    // Now publish a new revision: the next packet of the established flow is re-checked.
    w.writer.bumpPolicyRevision();
    w.writer.commit();
    const after = w.run(tcp(A.v4, B.v4, 40000, 80, TCP_ACK), A.port);
    expectDrop(after, DROP_POLICY, 'after policy change');
    assert.equal(after.ctState, CT_ESTABLISHED, `ctState: got ${after.ctState}, want ESTABLISHED`);
    // Putting the entry back restores the flow.
    w.allow(rule);
    expectForward(w.run(tcp(A.v4, B.v4, 40000, 80, TCP_ACK), A.port), B.port, 'allowed again');
    assert.equal(w.drops(DROP_POLICY, DIR_EGRESS), 2, `drops[133][egress]: got ${w.drops(DROP_POLICY, DIR_EGRESS)}, want 2`);
  });

  test('an established flow that is still allowed after a revision change keeps forwarding', () => {
    const w = base({ aOut: true });
    w.allow({ ep: A.ep, dir: DIR_EGRESS, identity: B.id, cookie: 5 });
    expectForward(w.run(tcp(A.v4, B.v4, 40000, 80, TCP_SYN), A.port), B.port, 'SYN');
    w.allow({ ep: A.ep, dir: DIR_EGRESS, identity: B.id, proto: PROTO_TCP, port: 80, cookie: 6 });
    const r = w.run(tcp(A.v4, B.v4, 40000, 80, TCP_ACK), A.port);
    expectForward(r, B.port, 'after adding a more specific rule');
    assert.equal(r.cookie, 6, `cookie: got ${r.cookie}, want 6 (re-checked)`);
  });
});

describe('pipeline: ICMP', () => {
  test('echo request/reply match by id; the ICMP type is the policy port', () => {
    const w = base({ aOut: true, aIn: true });
    w.allow({ ep: A.ep, dir: DIR_EGRESS, identity: B.id, proto: PROTO_ICMP, port: 8, cookie: 30 });
    const req = w.run(ipv4Icmp({ src: A.v4, dst: B.v4, type: 8, id: 0x77 }), A.port);
    expectForward(req, B.port, 'echo request');
    assert.equal(req.matchType, POLICY_MATCH_L3_L4, `matchType: got ${req.matchType}, want L3_L4`);
    assert.equal(req.cookie, 30, `cookie: got ${req.cookie}, want 30`);
    const rep = w.run(ipv4Icmp({ src: B.v4, dst: A.v4, type: 0, id: 0x77 }), B.port);
    expectForward(rep, A.port, 'echo reply');
    assert.equal(rep.ctState, CT_REPLY, `ctState: got ${rep.ctState}, want REPLY`);
    const other = w.run(ipv4Icmp({ src: B.v4, dst: A.v4, type: 0, id: 0x78 }), B.port);
    expectDrop(other, DROP_POLICY, 'echo reply with another id');
    assert.equal(other.ctState, CT_NEW, `ctState: got ${other.ctState}, want NEW`);
    const ts = w.run(ipv4Icmp({ src: A.v4, dst: B.v4, type: 13, id: 0x79 }), A.port);
    expectDrop(ts, DROP_POLICY, 'timestamp request (type 13)');
  });

  test('ICMPv6 echo with a type-128 rule', () => {
    const w = base({ aOut: true });
    w.allow({ ep: A.ep, dir: DIR_EGRESS, proto: 58, port: 128, cookie: 31 });
    expectForward(w.run(ipv6Icmp({ src: A.v6, dst: B.v6, type: 128, id: 5 }), A.port), B.port, 'echo request v6');
    const rep = w.run(ipv6Icmp({ src: B.v6, dst: A.v6, type: 129, id: 5 }), B.port);
    expectForward(rep, A.port, 'echo reply v6');
    assert.equal(rep.ctState, CT_REPLY, `ctState: got ${rep.ctState}, want REPLY`);
  });

  test('ICMP error for an existing flow is RELATED and passes without policy', () => {
    const w = base({ aOut: true, aIn: true });
    w.allow({ ep: A.ep, dir: DIR_EGRESS, identity: B.id, proto: PROTO_UDP, port: 53, cookie: 32 });
    const q = ipv4Udp({ src: A.v4, dst: B.v4, sport: 5353, dport: 53 });
    expectForward(w.run(q, A.port), B.port, 'query');
    const err = w.run(icmpError4(3, 3, q), B.port);
    expectForward(err, A.port, 'port unreachable');
    assert.equal(err.ctState, CT_RELATED, `ctState: got ${err.ctState}, want RELATED`);
    assert.equal(err.matchType, POLICY_MATCH_NONE, `matchType: got ${err.matchType}, want NONE (policy skipped)`);
    // The same error about a flow that never existed is policed: A's ingress has no entry.
    const stray = w.run(icmpError4(3, 3, ipv4Udp({ src: A.v4, dst: B.v4, sport: 5354, dport: 53 })), B.port);
    expectDrop(stray, DROP_POLICY, 'error for an unknown flow');
    assert.equal(stray.ctState, CT_NEW, `ctState: got ${stray.ctState}, want NEW`);
  });

  test('time exceeded from a router (host port) for a flow to the world is RELATED', () => {
    const w = base({ aOut: true, aIn: true });
    w.allow({ ep: A.ep, dir: DIR_EGRESS, identity: ID_WORLD, cookie: 33 });
    const p = tcp(A.v4, '8.8.8.8', 40000, 443);
    expectForward(w.run(p, A.port), HOST_PORT, 'to world');
    const err = w.run(icmpError4(11, 0, p, { src: '172.16.0.1' }), HOST_PORT);
    expectForward(err, A.port, 'time exceeded');
    assert.equal(err.ctState, CT_RELATED, `ctState: got ${err.ctState}, want RELATED`);
    assert.equal(err.srcId, ID_WORLD, `srcId: got ${err.srcId}, want world`);
  });
});

describe('pipeline: fragments', () => {
  function frags(dport: number, id: number): Uint8Array[] {
    const big = ipv4Udp({ src: A.v4, dst: B.v4, sport: 7000, dport, payload: new Uint8Array(2400).fill(7), id });
    const fs = ipv4Fragments(big, 1000);
    assert.ok(fs.length >= 3, `fragments: got ${fs.length}, want >= 3`);
    return fs;
  }

  test('first fragment allowed records ports; later fragments pass with the same verdict', () => {
    const w = base({ aOut: true });
    w.allow({ ep: A.ep, dir: DIR_EGRESS, identity: B.id, proto: PROTO_UDP, port: 53, cookie: 40 });
    const fs = frags(53, 0x4242);
    const first = w.run(fs[0]!, A.port);
    expectForward(first, B.port, 'first fragment');
    assert.equal(first.ctState, CT_NEW, `first ctState: got ${first.ctState}, want NEW`);
    for (let i = 1; i < fs.length; i++) {
      const r = w.run(fs[i]!, A.port);
      expectForward(r, B.port, `fragment ${i}`);
      assert.equal(r.ctState, CT_ESTABLISHED, `fragment ${i} ctState: got ${r.ctState}, want ESTABLISHED`);
      assert.equal(r.cookie, 40, `fragment ${i} cookie: got ${r.cookie}, want 40`);
    }
    assert.equal(w.forwards(DIR_INGRESS), fs.length, `forwards: got ${w.forwards(DIR_INGRESS)}, want ${fs.length}`);
  });

  test('a denied first fragment is not recorded: later fragments find no first (175)', () => {
    const w = base({ aOut: true });
    w.allow({ ep: A.ep, dir: DIR_EGRESS, identity: B.id, proto: PROTO_UDP, port: 53, cookie: 41 });
    const fs = frags(54, 0x4343);
    expectDrop(w.run(fs[0]!, A.port), DROP_POLICY, 'first fragment');
    assert.equal(w.frags.count, 0, `fragment records after a denied first fragment: got ${w.frags.count}, want 0`);
    for (let i = 1; i < fs.length; i++) expectDrop(w.run(fs[i]!, A.port), DROP_FRAG_NOT_FOUND, `fragment ${i}`);
    assert.equal(w.drops(DROP_POLICY, DIR_EGRESS), 1, `drops[133]: got ${w.drops(DROP_POLICY, DIR_EGRESS)}, want 1`);
  });

  test('a first-fragment flood from one endpoint leaves other endpoints\' datagrams working', () => {
    // 64 slots, each endpoint may hold 50%; A sends 2000 first fragments with fresh IDs
    const w = base({}, { fragCapacity: 64, frag: { endpointShare: 50 } });
    for (let id = 1; id <= 2000; id++) {
      const big = ipv4Udp({ src: A.v4, dst: B.v4, sport: 7000, dport: 9, payload: new Uint8Array(1200), id });
      w.run(ipv4Fragments(big, 1000)[0]!, A.port);
    }
    assert.ok(w.frags.ownerCount(ownerSlot(A.ep)) <= 32, `A holds ${w.frags.ownerCount(ownerSlot(A.ep))} fragment slots, want <= 32`);
    const refused = w.drops(DROP_FRAG_NOSUPPORT, DIR_EGRESS);
    // C's fragmented datagrams to B (the same shard in the switch) still pass whole
    for (let id = 1; id <= 20; id++) {
      const big = ipv4Udp({ src: C.v4, dst: B.v4, sport: 7001, dport: 9, payload: new Uint8Array(2400).fill(id), id: 0x8000 + id });
      const fs = ipv4Fragments(big, 1000);
      for (let i = 0; i < fs.length; i++) expectForward(w.run(fs[i]!, C.port), B.port, `C datagram ${id} fragment ${i} (A's refused first fragments: ${refused})`);
    }
    const ev = w.frags.evictions();
    assert.ok(ev.quota > 0, `evictions.quota got ${ev.quota}, want > 0`);
  });

  test('a SYN flood from one endpoint leaves other endpoints\' new flows working', () => {
    // 256 conntrack slots (maxEntries 224), each endpoint may hold 50% (112)
    const w = base({}, { ctCapacity: 256, ct: { endpointShare: 50 } });
    for (let i = 0; i < 5000; i++) w.run(tcp(A.v4, B.v4, 1024 + (i % 60000), 80 + (i >> 14)), A.port);
    assert.ok(w.ct.ownerCount(ownerSlot(A.ep)) <= 112, `A holds ${w.ct.ownerCount(ownerSlot(A.ep))} conntrack slots, want <= 112`);
    for (let i = 0; i < 100; i++) expectForward(w.run(tcp(C.v4, B.v4, 2000 + i, 443), C.port), B.port, `C new flow ${i}`);
    assert.equal(w.drops(DROP_CT_CREATE_FAILED, DIR_EGRESS), 0, `drops[155] got ${w.drops(DROP_CT_CREATE_FAILED, DIR_EGRESS)}, want 0`);
    const ev = w.ct.evictions();
    assert.ok(ev.quota > 0, `evictions.quota got ${ev.quota}, want > 0 (${JSON.stringify(ev)})`);
  });

  test('policy on later fragments uses the first fragment ports even after a revision change', () => {
    const w = base({ aOut: true });
    w.allow({ ep: A.ep, dir: DIR_EGRESS, identity: B.id, proto: PROTO_UDP, port: 53, cookie: 42 });
    const fs = frags(53, 0x4444);
    expectForward(w.run(fs[0]!, A.port), B.port, 'first');
    w.allow({ ep: A.ep, dir: DIR_EGRESS, identity: B.id, proto: PROTO_UDP, port: 9999, cookie: 43 });
    const r = w.run(fs[1]!, A.port);
    expectForward(r, B.port, 'later fragment after a revision change');
    assert.equal(r.cookie, 42, `cookie: got ${r.cookie}, want 42`);
  });

  // Known gap (reported to the lead): the fragment table keeps ports only, so a later ICMP
  // fragment has no ICMP type, and a policy re-check (new revision) looks up port -1.
  test('ICMP echo fragments: later fragments re-checked after a revision change', () => {
    const w = base({ aOut: true });
    w.allow({ ep: A.ep, dir: DIR_EGRESS, identity: B.id, proto: PROTO_ICMP, port: 8, cookie: 45 });
    const big = ipv4Icmp({ src: A.v4, dst: B.v4, type: 8, id: 9, payload: new Uint8Array(2000), ipId: 0x4646 });
    const fs = ipv4Fragments(big, 1000);
    expectForward(w.run(fs[0]!, A.port), B.port, 'first');
    expectForward(w.run(fs[1]!, A.port), B.port, 'second, same revision');
    w.allow({ ep: A.ep, dir: DIR_EGRESS, identity: B.id, proto: PROTO_UDP, port: 1, cookie: 46 });
    expectForward(w.run(fs[2]!, A.port), B.port, 'third, after a revision change');
  });

  test('a later fragment with no first -> 175', () => {
    const w = base();
    const fs = frags(53, 0x4545);
    const r = w.run(fs[1]!, A.port);
    expectDrop(r, DROP_FRAG_NOT_FOUND, 'orphan fragment');
    assert.equal(w.drops(DROP_FRAG_NOT_FOUND, DIR_EGRESS), 1, 'drops[175][egress] = 1');
  });

  test('IPv6 fragments: later fragment found through the first', () => {
    const w = base({ aOut: true });
    w.allow({ ep: A.ep, dir: DIR_EGRESS, identity: B.id, proto: PROTO_UDP, port: 53, cookie: 44 });
    const id = 0xabcdef;
    const first = ipv6Udp({ src: A.v6, dst: B.v6, sport: 7000, dport: 53, payload: new Uint8Array(64), ext: [{ type: 44, offset: 0, more: true, id }] });
    const later = ipv6Raw({ src: A.v6, dst: B.v6, proto: PROTO_UDP, payload: new Uint8Array(64), ext: [{ type: 44, offset: 80, more: false, id }] });
    const orphan = ipv6Raw({ src: A.v6, dst: B.v6, proto: PROTO_UDP, payload: new Uint8Array(64), ext: [{ type: 44, offset: 80, more: false, id: id + 1 }] });
    expectForward(w.run(first, A.port), B.port, 'v6 first fragment');
    expectForward(w.run(later, A.port), B.port, 'v6 later fragment');
    expectDrop(w.run(orphan, A.port), DROP_FRAG_NOT_FOUND, 'v6 orphan fragment');
  });
});

describe('pipeline: TTL and hop limit', () => {
  test('TTL 1 -> 196; TTL 0 -> 196', () => {
    for (const ttl of [1, 0]) {
      const w = base();
      const r = w.run(tcp(A.v4, B.v4, 40000, 80, TCP_SYN, ttl), A.port);
      expectDrop(r, DROP_TTL_EXCEEDED, `ttl ${ttl}`);
      assert.equal(w.drops(DROP_TTL_EXCEEDED, DIR_EGRESS), 1, `drops[196]: got ${w.drops(DROP_TTL_EXCEEDED, DIR_EGRESS)}, want 1`);
    }
  });

  test('TTL decremented and the IPv4 header checksum still valid', () => {
    for (const ttl of [2, 64, 128, 255]) {
      const w = base();
      const pkt = ipv4Tcp({ src: A.v4, dst: B.v4, sport: 1, dport: 2, ttl, options: [1, 1, 1, 1] });
      const r = w.run(pkt, A.port);
      expectForward(r, B.port, `ttl ${ttl}`);
      const hl = (r.bytes[0]! & 0xf) << 2;
      assert.equal(r.bytes[8], ttl - 1, `ttl: got ${r.bytes[8]}, want ${ttl - 1}`);
      const stored = (r.bytes[10]! << 8) | r.bytes[11]!;
      const want = ipv4HeaderChecksum(r.bytes, 0, hl);
      assert.equal(stored, want, `checksum: got 0x${stored.toString(16)}, want 0x${want.toString(16)}`);
      // Nothing but TTL and checksum changed.
      for (let i = 0; i < pkt.length; i++) {
        if (i === 8 || i === 10 || i === 11) continue;
        assert.equal(r.bytes[i], pkt[i], `byte ${i}: got ${r.bytes[i]}, want ${pkt[i]}`);
      }
    }
  });

  test('IPv6 hop limit 1 -> 196; otherwise decremented', () => {
    const w = base();
    expectDrop(w.run(ipv6Udp({ src: A.v6, dst: B.v6, sport: 1, dport: 2, hopLimit: 1 }), A.port), DROP_TTL_EXCEEDED, 'hop limit 1');
    const r = w.run(ipv6Udp({ src: A.v6, dst: B.v6, sport: 1, dport: 3, hopLimit: 2 }), A.port);
    expectForward(r, B.port, 'hop limit 2');
    assert.equal(r.bytes[7], 1, `hop limit: got ${r.bytes[7]}, want 1`);
  });
});

describe('pipeline: audit mode', () => {
  const modes: { name: string; enforce: Enforce; agent: boolean }[] = [
    { name: 'per-endpoint audit flag', enforce: { aOut: true, aAudit: true }, agent: false },
    { name: 'agent-wide CFG_AUDIT', enforce: { aOut: true }, agent: true },
  ];
  for (const m of modes) {
    test(`${m.name}: a missing allow and a deny become audited forwards`, () => {
      const w = base(m.enforce);
      if (m.agent) w.audit(true);
      const r = w.run(tcp(A.v4, B.v4, 40000, 80), A.port);
      expectForward(r, B.port, 'no entry, audited');
      assert.equal(r.audited, 1, `audited: got ${r.audited}, want 1`);
      w.deny({ ep: A.ep, dir: DIR_EGRESS, identity: C.id, cookie: 50 });
      const d = w.run(tcp(A.v4, C.v4, 40000, 80), A.port);
      expectForward(d, C.port, 'deny, audited');
      assert.equal(d.audited, 1, `audited: got ${d.audited}, want 1`);
      assert.equal(d.cookie, 50, `cookie of the audited deny: got ${d.cookie}, want 50`);
      assert.equal(w.counter(C_AUDITED), 2, `audited counter: got ${w.counter(C_AUDITED)}, want 2`);
      assert.equal(w.totalDrops(), 0, `drops: got ${w.totalDrops()}, want 0`);
      const ev = w.drainEvents();
      const pol = ev.filter((e) => e.type === EV_POLICY);
      assert.equal(pol.length, 2, `policy events: got ${pol.length}, want 2`);
      for (const e of pol) {
        assert.equal(e.verdict, V_AUDIT, `policy verdict: got ${e.verdict}, want AUDIT`);
        assert.equal(e.audited, 1, `audited bit: got ${e.audited}, want 1`);
      }
      const tr = ev.filter((e) => e.type === EV_TRACE);
      assert.ok(tr.length > 0 && tr.every((e) => e.verdict === V_AUDIT), `trace verdicts: got ${tr.map((e) => e.verdict)}, want all AUDIT`);
      // The established flow keeps its audited mark from the cache.
      const est = w.run(tcp(A.v4, B.v4, 40000, 80, TCP_ACK), A.port);
      expectForward(est, B.port, 'established, audited');
      assert.equal(est.audited, 1, `cached audited: got ${est.audited}, want 1`);
    });
  }

  test('audit off again: the same new flow is dropped', () => {
    const w = base({ aOut: true });
    w.audit(true);
    expectForward(w.run(tcp(A.v4, B.v4, 40000, 80), A.port), B.port, 'audited');
    w.audit(false);
    expectDrop(w.run(tcp(A.v4, B.v4, 40001, 80), A.port), DROP_POLICY, 'enforced');
  });
});

describe('pipeline: destinations outside the switch', () => {
  test('destination not in the ipcache is world with ipcacheMiss, forwarded to the host port', () => {
    const w = base();
    const r = w.run(tcp(A.v4, '8.8.8.8', 40000, 53), A.port);
    expectForward(r, HOST_PORT, 'to world');
    assert.equal(r.dstId, ID_WORLD, `dstId: got ${r.dstId}, want 2`);
    assert.equal(r.ipcacheMiss, 1, `ipcacheMiss: got ${r.ipcacheMiss}, want 1`);
    assert.equal(r.dstEp, -1, `dstEp: got ${r.dstEp}, want -1`);
    assert.equal(w.forwards(DIR_EGRESS), 1, `forwards egress: got ${w.forwards(DIR_EGRESS)}, want 1`);
    const ev = w.drainEvents();
    assert.ok(ev.length > 0 && ev.every((e) => e.ipcacheMiss === 1), 'events carry the ipcache miss bit');
  });

  test('no host port: a non-local destination -> 151', () => {
    const w = base({ host: false });
    const r = w.run(tcp(A.v4, '8.8.8.8', 40000, 53), A.port);
    expectDrop(r, DROP_UNROUTABLE, 'no host port');
    assert.equal(w.drops(DROP_UNROUTABLE, DIR_EGRESS), 1, 'drops[151][egress] = 1');
  });

  test('a remote prefix gives its identity and tunnel endpoint; egress policy sees it', () => {
    const w = base({ aOut: true });
    w.allow({ ep: A.ep, dir: DIR_EGRESS, identity: R_ID, proto: PROTO_TCP, port: 443, cookie: 60 });
    const r = w.run(tcp(A.v4, R_ADDR, 40000, 443), A.port);
    expectForward(r, HOST_PORT, 'to remote');
    assert.equal(r.dstId, R_ID, `dstId: got ${r.dstId}, want ${R_ID}`);
    assert.equal(r.ipcacheMiss, 0, `ipcacheMiss: got ${r.ipcacheMiss}, want 0`);
    assert.equal(r.tunnel, ip4(TUNNEL), `tunnel: got ${r.tunnel}, want ${ip4(TUNNEL)}`);
    assert.equal(r.cookie, 60, `cookie: got ${r.cookie}, want 60`);
    expectDrop(w.run(tcp(A.v4, R_ADDR, 40000, 80), A.port), DROP_POLICY, 'remote port 80');
  });

  test('the host address has identity host (1)', () => {
    const w = base({ aOut: true });
    w.allow({ ep: A.ep, dir: DIR_EGRESS, identity: ID_HOST, cookie: 61 });
    const r = w.run(tcp(A.v4, HOST_ADDR, 40000, 22), A.port);
    expectForward(r, HOST_PORT, 'to host');
    assert.equal(r.dstId, ID_HOST, `dstId: got ${r.dstId}, want 1`);
  });
});

describe('pipeline: packets from the host port', () => {
  const srcs: { name: string; src: string; id: number }[] = [
    { name: 'remote prefix', src: R_ADDR, id: R_ID },
    { name: 'host address', src: HOST_ADDR, id: ID_HOST },
    { name: 'unknown address (world)', src: '8.8.4.4', id: ID_WORLD },
  ];
  for (const s of srcs) {
    test(`source identity from the ipcache: ${s.name}`, () => {
      const w = base({ bIn: true });
      w.allow({ ep: B.ep, dir: DIR_INGRESS, identity: s.id, proto: PROTO_TCP, port: 443, cookie: 70 });
      const r = w.run(tcp(s.src, B.v4, 40000, 443), HOST_PORT);
      expectForward(r, B.port, s.name);
      assert.equal(r.srcId, s.id, `srcId: got ${r.srcId}, want ${s.id}`);
      assert.equal(r.srcEp, -1, `srcEp: got ${r.srcEp}, want -1`);
      assert.equal(r.dir, DIR_INGRESS, `dir: got ${r.dir}, want ingress`);
      assert.equal(r.cookie, 70, `cookie: got ${r.cookie}, want 70`);
      const d = w.run(tcp(s.src, B.v4, 40000, 80), HOST_PORT);
      expectDrop(d, DROP_POLICY, `${s.name}: port 80`);
      assert.equal(w.drops(DROP_POLICY, DIR_INGRESS), 1, 'drops[133][ingress] = 1');
      const pol = w.drainEvents().filter((e) => e.type === EV_POLICY);
      assert.ok(pol.every((e) => e.dir === DIR_INGRESS && e.srcEp === NO_INDEX), 'policy events are ingress, no source endpoint');
    });
  }

  test('from the host port, the sender egress policy is not applied', () => {
    // B's egress is enforced with no entries; a packet from the host port to B still passes.
    const w = base({ bOut: true });
    expectForward(w.run(tcp(R_ADDR, B.v4, 40000, 443), HOST_PORT), B.port, 'host -> B');
  });

  test('from the host port, a destination that is not local -> 151', () => {
    const w = base();
    const r = w.run(tcp(R_ADDR, '10.1.9.9', 40000, 443), HOST_PORT);
    expectDrop(r, DROP_UNROUTABLE, 'host -> remote');
    assert.equal(w.drops(DROP_UNROUTABLE, DIR_INGRESS), 1, 'drops[151][ingress] = 1');
  });

  test('the reply of an endpoint to a host-port flow is REPLY', () => {
    const w = base({ bIn: true, bOut: true });
    w.allow({ ep: B.ep, dir: DIR_INGRESS, identity: R_ID, proto: PROTO_TCP, port: 443, cookie: 71 });
    expectForward(w.run(tcp(R_ADDR, B.v4, 40000, 443), HOST_PORT), B.port, 'SYN in');
    const r = w.run(tcp(B.v4, R_ADDR, 443, 40000, TCP_SYN | TCP_ACK), B.port);
    expectForward(r, HOST_PORT, 'SYN/ACK out');
    assert.equal(r.ctState, CT_REPLY, `ctState: got ${r.ctState}, want REPLY`);
  });
});

describe('pipeline: conntrack, events and counters', () => {
  test('an endpoint at its conntrack quota with none of its entries near -> 155, counted', () => {
    // a full table evicts instead; 155 remains for an endpoint at its quota (1% of 896 = 8
    // entries) whose own entries lie outside the eviction window of the new flow's home slot
    const w = base({}, { ctCapacity: 1024, ct: { endpointShare: 1 } });
    let first = -1;
    for (let i = 0; i < 500 && first < 0; i++) {
      const r = w.run(tcp(A.v4, B.v4, 1000 + i, 80), A.port);
      if (r.out < 0) { expectDrop(r, DROP_CT_CREATE_FAILED, `flow ${i}`); first = i; }
    }
    assert.ok(first >= 8, `first 155 at flow ${first}, want one after the quota of 8 was reached`);
    assert.equal(w.counter(C_CT_CREATE_FAILED), 1, `ct create failed counter: got ${w.counter(C_CT_CREATE_FAILED)}, want 1`);
    assert.equal(w.drops(DROP_CT_CREATE_FAILED, DIR_EGRESS), 1, 'drops[155][egress] = 1');
    assert.equal(w.ct.createFailed, 1, `ct.createFailed: got ${w.ct.createFailed}, want 1`);
    // Other endpoints are not held to A's quota.
    expectForward(w.run(tcp(C.v4, B.v4, 3000, 80), C.port), B.port, 'C new flow');
    // Once A's entries expire and gc (run by the shard loop every batch) collects them, its new flows get in again.
    w.advance(61);
    w.ct.gc(w.now, 1024);
    expectForward(w.run(tcp(A.v4, B.v4, 1000 + first, 80), A.port), B.port, 'after expiry');
  });

  test('trace events: at most one per flow per 5 s unless new TCP flags', () => {
    const w = base();
    const seq: { flags: number; dt: number; want: boolean; from: 'A' | 'B' }[] = [
      { flags: TCP_SYN, dt: 0, want: true, from: 'A' },
      { flags: TCP_SYN | TCP_ACK, dt: 0, want: true, from: 'B' },
      { flags: TCP_ACK, dt: 0, want: true, from: 'A' }, // ACK is new in this direction
      { flags: TCP_ACK, dt: 1, want: false, from: 'A' },
      { flags: TCP_ACK | TCP_PSH, dt: 1, want: true, from: 'A' }, // PSH is new
      { flags: TCP_ACK | TCP_PSH, dt: 1, want: false, from: 'A' },
      { flags: TCP_ACK, dt: 0, want: false, from: 'B' },
      { flags: TCP_ACK, dt: 5, want: true, from: 'A' }, // interval elapsed
      { flags: TCP_ACK, dt: 1, want: false, from: 'A' },
      { flags: TCP_FIN | TCP_ACK, dt: 0, want: true, from: 'A' },
    ];
    let i = 0;
    for (const s of seq) {
      w.advance(s.dt);
      const r = s.from === 'A' ? w.run(tcp(A.v4, B.v4, 40000, 80, s.flags), A.port) : w.run(tcp(B.v4, A.v4, 80, 40000, s.flags), B.port);
      expectForward(r, s.from === 'A' ? B.port : A.port, `packet ${i}`);
      const traces = w.drainEvents().filter((e) => e.type === EV_TRACE);
      assert.equal(traces.length, s.want ? 1 : 0, `packet ${i} (flags 0x${s.flags.toString(16)} from ${s.from}): got ${traces.length} traces, want ${s.want ? 1 : 0}`);
      if (s.want) {
        assert.equal(traces[0]!.tcpFlags, s.flags, `trace flags: got ${traces[0]!.tcpFlags}, want ${s.flags}`);
        assert.equal(traces[0]!.isReply, s.from === 'B' ? 1 : 0, `trace isReply: got ${traces[0]!.isReply}`);
      }
      i++;
    }
  });

  test('UDP flow: one trace per 5 s', () => {
    const w = base();
    let traces = 0;
    for (let t = 0; t < 20; t++) {
      expectForward(w.run(ipv4Udp({ src: A.v4, dst: B.v4, sport: 1, dport: 2 }), A.port), B.port, `udp ${t}`);
      traces += w.drainEvents().filter((e) => e.type === EV_TRACE).length;
      w.advance(1);
    }
    assert.equal(traces, 4, `traces over 20 s: got ${traces}, want 4`);
  });

  test('a full event ring loses events but never packets', () => {
    const w = base({}, { eventCapacity: 4 });
    const n = 10;
    for (let i = 0; i < n; i++) expectForward(w.run(tcp(A.v4, B.v4, 3000 + i, 80), A.port), B.port, `flow ${i}`);
    // No policy is enforced: each new flow emits one trace, n events for a ring of 4.
    assert.equal(w.events.available(), 4, `events in ring: got ${w.events.available()}, want 4`);
    assert.equal(w.events.lost(), n - 4, `lost: got ${w.events.lost()}, want ${n - 4}`);
    assert.equal(w.forwards(DIR_INGRESS), n, `forwards: got ${w.forwards(DIR_INGRESS)}, want ${n}`);
    // Drops with a full ring are still counted.
    expectDrop(w.run(tcp('10.9.9.9', B.v4, 1, 80), A.port), DROP_INVALID_SIP, 'spoof with a full ring');
    assert.equal(w.drops(DROP_INVALID_SIP, DIR_EGRESS), 1, 'drops[132] = 1');
    assert.equal(w.events.lost(), n - 3, `lost: got ${w.events.lost()}, want ${n - 3}`);
    w.drainEvents();
    expectForward(w.run(tcp(A.v4, B.v4, 4000, 80), A.port), B.port, 'after draining');
    assert.equal(w.events.available(), 1, `events after draining: got ${w.events.available()}, want 1`);
  });

  test('counters by reason and direction over a mixed run', () => {
    const w = base({ aOut: true, bIn: true });
    w.allow({ ep: A.ep, dir: DIR_EGRESS, identity: B.id, cookie: 1 });
    w.allow({ ep: A.ep, dir: DIR_EGRESS, identity: ID_WORLD, cookie: 2 });
    w.allow({ ep: B.ep, dir: DIR_INGRESS, identity: A.id, proto: PROTO_TCP, port: 80, cookie: 3 });
    const want = { fwdIn: 0, fwdOut: 0, pol: [0, 0], sip: 0 };
    for (let i = 0; i < 5; i++) { w.run(tcp(A.v4, B.v4, 100 + i, 80), A.port); want.fwdIn++; }
    for (let i = 0; i < 3; i++) { w.run(tcp(A.v4, B.v4, 200 + i, 81), A.port); want.pol[DIR_INGRESS]!++; }
    for (let i = 0; i < 4; i++) { w.run(tcp(A.v4, C.v4, 300 + i, 80), A.port); want.pol[DIR_EGRESS]!++; }
    for (let i = 0; i < 2; i++) { w.run(tcp(A.v4, '1.1.1.1', 400 + i, 80), A.port); want.fwdOut++; }
    for (let i = 0; i < 6; i++) { w.run(tcp('10.0.0.77', B.v4, 500 + i, 80), A.port); want.sip++; }
    assert.equal(w.forwards(DIR_INGRESS), want.fwdIn, `fwd ingress: got ${w.forwards(DIR_INGRESS)}, want ${want.fwdIn}`);
    assert.equal(w.forwards(DIR_EGRESS), want.fwdOut, `fwd egress: got ${w.forwards(DIR_EGRESS)}, want ${want.fwdOut}`);
    assert.equal(w.drops(DROP_POLICY, DIR_INGRESS), want.pol[DIR_INGRESS], `133 ingress: got ${w.drops(DROP_POLICY, DIR_INGRESS)}, want ${want.pol[DIR_INGRESS]}`);
    assert.equal(w.drops(DROP_POLICY, DIR_EGRESS), want.pol[DIR_EGRESS], `133 egress: got ${w.drops(DROP_POLICY, DIR_EGRESS)}, want ${want.pol[DIR_EGRESS]}`);
    assert.equal(w.drops(DROP_INVALID_SIP, DIR_EGRESS), want.sip, `132 egress: got ${w.drops(DROP_INVALID_SIP, DIR_EGRESS)}, want ${want.sip}`);
    const total = want.pol[0]! + want.pol[1]! + want.sip;
    assert.equal(w.totalDrops(), total, `total drops: got ${w.totalDrops()}, want ${total}`);
    assert.equal(w.counter(C_DROP_EVENTS), total, `drop events: got ${w.counter(C_DROP_EVENTS)}, want ${total}`);
  });
});

describe('pipeline: endpoints with missing addresses and stale ports', () => {
  test('an endpoint without an IPv4 address cannot send IPv4 from 0.0.0.0', () => {
    const w = base();
    w.endpoint({ ep: 5, identity: 1005, ipv6: 'fd00::5', port: 15 });
    const r = w.run(ipv4Udp({ src: '0.0.0.0', dst: B.v4, sport: 68, dport: 67 }), 15);
    expectDrop(r, DROP_INVALID_SIP, 'v4 from a v6-only endpoint');
  });

  test('an endpoint without an IPv6 address cannot send IPv6 from ::', () => {
    const w = base();
    const r = w.run(ipv6Udp({ src: '::', dst: B.v6, sport: 1, dport: 2 }), C.port);
    expectDrop(r, DROP_INVALID_SIP, 'v6 from a v4-only endpoint');
  });

  test('a port mapped to no endpoint is not the host port -> 203', () => {
    const cases: { name: string; host: boolean; port: number }[] = [
      { name: 'unmapped port with a host port configured', host: true, port: 99 },
      { name: 'port 0 without a host port configured', host: false, port: 0 },
    ];
    for (const c of cases) {
      const w = base({ host: c.host });
      const r = w.run(tcp(R_ADDR, B.v4, 40000, 443), c.port);
      expectDrop(r, DROP_EP_NOT_READY, c.name);
      assert.equal(w.drops(DROP_EP_NOT_READY, DIR_INGRESS), 1, `${c.name}: drops[203][ingress] = 1`);
    }
  });

  test('a port whose endpoint was removed forwards nothing', () => {
    const w = base();
    w.removeEndpoint(C.ep);
    for (const src of [C.v4, '0.0.0.0']) {
      const r = w.run(ipv4Udp({ src, dst: B.v4, sport: 1, dport: 2 }), C.port);
      assert.ok(r.out < 0, `src ${src} from a removed endpoint's port: got out ${r.out}, want a drop`);
    }
  });
});

describe('pipeline: policy-verdict events per enforcement point', () => {
  test('egress of the sender and ingress of the receiver each report their own rule', () => {
    const w = base({ aOut: true, bIn: true });
    w.allow({ ep: A.ep, dir: DIR_EGRESS, identity: B.id, proto: PROTO_TCP, port: 80, prefixLen: 24, cookie: 71 });
    w.allow({ ep: B.ep, dir: DIR_INGRESS, identity: 0, proto: PROTO_TCP, port: 80, prefixLen: 24, cookie: 72 });
    w.commit();
    w.drainEvents();
    expectForward(w.run(tcp(A.v4, B.v4, 40001, 80), A.port), B.port, 'A->B:80');
    const pol = w.drainEvents().filter((e) => e.type === EV_POLICY);
    const got = pol.map((e) => `${e.dir === DIR_EGRESS ? 'egress' : 'ingress'}:${e.cookie}`);
    assert.deepEqual(got, ['egress:71', 'ingress:72'], `policy events: got ${got}, want [egress:71, ingress:72]`);
  });

  test('an ingress deny still reports the egress allow that came before it', () => {
    const w = base({ aOut: true, bIn: true });
    w.allow({ ep: A.ep, dir: DIR_EGRESS, identity: B.id, proto: PROTO_TCP, port: 81, prefixLen: 24, cookie: 73 });
    w.commit();
    w.drainEvents();
    const r = w.run(tcp(A.v4, B.v4, 40002, 81), A.port);
    assert.equal(r.reason, 133, `reason: got ${r.reason}, want 133`);
    const pol = w.drainEvents().filter((e) => e.type === EV_POLICY);
    const got = pol.map((e) => `${e.dir === DIR_EGRESS ? 'egress' : 'ingress'}:${e.verdict}`);
    assert.deepEqual(got, [`egress:${V_FORWARDED}`, `ingress:${V_DROPPED}`], `policy events: got ${got}`);
  });
});

describe('pipeline: allow-localhost', () => {
  const fromHost = (dport: number): Uint8Array => tcp(HOST_ADDR, B.v4, 50000 + dport, dport);

  test('the host reaches an ingress-enforced endpoint when no rule decides', () => {
    const w = base({ bIn: true }).allowLocalhost(true);
    w.commit();
    const r = w.run(fromHost(22), HOST_PORT);
    expectForward(r, B.port, 'host -> B:22 with allow-localhost');
    assert.equal(r.srcId, ID_HOST, `srcId: got ${r.srcId}, want host (1)`);
    assert.equal(r.cookie, 0xfffffffe, `cookie: got ${r.cookie}, want the allow-localhost cookie`);
  });

  test('a deny rule for the host still wins', () => {
    const w = base({ bIn: true }).allowLocalhost(true);
    w.deny({ ep: B.ep, dir: DIR_INGRESS, identity: ID_HOST, prefixLen: 0, cookie: 90 });
    w.commit();
    const r = w.run(fromHost(23), HOST_PORT);
    assert.equal(r.reason, 181, `reason: got ${r.reason}, want 181 (denylist)`);
  });

  test('without allow-localhost the host is policed like any identity', () => {
    const w = base({ bIn: true }).allowLocalhost(false);
    w.commit();
    const r = w.run(fromHost(24), HOST_PORT);
    assert.equal(r.reason, 133, `reason: got ${r.reason}, want 133`);
  });

  test('other identities are not affected', () => {
    const w = base({ bIn: true }).allowLocalhost(true);
    w.commit();
    const r = w.run(tcp(R_ADDR, B.v4, 40000, 22), HOST_PORT);
    assert.equal(r.reason, 133, `world -> B:22: got reason ${r.reason}, want 133`);
  });
});
