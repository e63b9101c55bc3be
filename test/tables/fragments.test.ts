import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PacketInfo, IPPROTO_TCP, IPPROTO_UDP } from '../../src/datapath/packet.js';
import { FragmentTable, PROBE_WINDOW } from '../../src/tables/fragments.js';
import { Rand } from '../helpers/rand.js';

type Addr = readonly [number, number, number, number];
const A4: Addr = [0x0a000001, 0, 0, 0];
const B4: Addr = [0x0a000002, 0, 0, 0];
const A6: Addr = [0xfd000000, 0, 0, 1];
const B6: Addr = [0xfd000000, 0, 0, 2];

interface Frag { family: number; proto: number; src: Addr; dst: Addr; ipId: number; sport?: number; dport?: number }

/** Fill a PacketInfo by hand; a first fragment has ports and L4, a later one neither. */
function fill(pi: PacketInfo, f: Frag, first: boolean): PacketInfo {
  pi.reset();
  pi.family = f.family;
  pi.proto = f.proto;
  pi.src0 = f.src[0]; pi.src1 = f.src[1]; pi.src2 = f.src[2]; pi.src3 = f.src[3];
  pi.dst0 = f.dst[0]; pi.dst1 = f.dst[1]; pi.dst2 = f.dst[2]; pi.dst3 = f.dst[3];
  pi.ipId = f.ipId;
  pi.isFragment = 1;
  pi.fragOffset = first ? 0 : 1480;
  pi.moreFragments = first ? 1 : 0;
  pi.l4Off = first ? 20 : -1;
  pi.sport = first ? (f.sport ?? 0) : 0;
  pi.dport = first ? (f.dport ?? 0) : 0;
  return pi;
}

function newTable(capacity = 256, lifetime?: number): FragmentTable {
  const sab = new SharedArrayBuffer(FragmentTable.bytesFor(capacity) + 32);
  return new FragmentTable(sab, 32, capacity, lifetime === undefined ? undefined : { lifetime });
}

const udp4: Frag = { family: 4, proto: IPPROTO_UDP, src: A4, dst: B4, ipId: 0x1234, sport: 5000, dport: 53 };
const tcp6: Frag = { family: 6, proto: IPPROTO_TCP, src: A6, dst: B6, ipId: 0xfedcba98, sport: 40000, dport: 443 };

test('fragments: later fragments get the ports of the first', () => {
  const ft = newTable();
  const pi = new PacketInfo();
  assert.ok(ft.record(fill(pi, udp4, true), 100), 'record udp4 failed');
  assert.ok(ft.record(fill(pi, tcp6, true), 100), 'record tcp6 failed');
  const cases: { name: string; f: Frag; now: number; found: boolean; sport: number; dport: number }[] = [
    { name: 'ipv4 later fragment', f: udp4, now: 101, found: true, sport: 5000, dport: 53 },
    { name: 'ipv6 later fragment (32-bit id)', f: tcp6, now: 159, found: true, sport: 40000, dport: 443 },
    { name: 'other ip id', f: { ...udp4, ipId: 0x1235 }, now: 101, found: false, sport: 0, dport: 0 },
    { name: 'other proto', f: { ...udp4, proto: IPPROTO_TCP }, now: 101, found: false, sport: 0, dport: 0 },
    { name: 'reversed addresses', f: { ...udp4, src: B4, dst: A4 }, now: 101, found: false, sport: 0, dport: 0 },
    { name: 'ipv6 id differing only in high bits', f: { ...tcp6, ipId: 0x7edcba98 }, now: 101, found: false, sport: 0, dport: 0 },
    { name: 'expired (lifetime 60)', f: udp4, now: 160, found: false, sport: 0, dport: 0 },
  ];
  for (const c of cases) {
    fill(pi, c.f, false);
    const got = ft.lookup(pi, c.now);
    assert.equal(got, c.found, `${c.name}: found got ${got}, want ${c.found}`);
    assert.equal(pi.sport, c.sport, `${c.name}: sport got ${pi.sport}, want ${c.sport}`);
    assert.equal(pi.dport, c.dport, `${c.name}: dport got ${pi.dport}, want ${c.dport}`);
  }
});

test('fragments: re-recording refreshes, custom lifetime, expired slots are reused', () => {
  const ft = newTable(64, 5);
  const pi = new PacketInfo();
  ft.record(fill(pi, udp4, true), 0);
  ft.record(fill(pi, { ...udp4, sport: 6000 }, true), 3);
  assert.equal(ft.count, 1, `count got ${ft.count}, want 1`);
  const found = ft.lookup(fill(pi, udp4, false), 7);
  assert.ok(found, 'refreshed record not found at t=7');
  assert.equal(pi.sport, 6000, `sport got ${pi.sport}, want 6000`);
  assert.equal(ft.lookup(fill(pi, udp4, false), 8), false, 'record still found at t=8, want expired');
  // the expired datagram recorded again takes its own slot back: count grows by the new one only
  ft.record(fill(pi, { ...udp4, ipId: 1 }, true), 100);
  ft.record(fill(pi, udp4, true), 100);
  const cases: [string, number, number][] = [['count', ft.count, 2], ['liveCount', ft.liveCount(100), 2], ['recordFailed', ft.recordFailed, 0]];
  for (const [name, got, want] of cases) assert.equal(got, want, `${name} got ${got}, want ${want}`);
  assert.throws(() => newTable(64, 0), /options\.lifetime/);
});

test('fragments: a full probe window refuses records until they expire', () => {
  const cap = 8; // window = min(capacity, PROBE_WINDOW) = 8: the whole table
  const ft = newTable(cap);
  const pi = new PacketInfo();
  for (let i = 0; i < cap; i++) assert.ok(ft.record(fill(pi, { ...udp4, ipId: i }, true), 0), `record ${i} failed`);
  assert.equal(ft.record(fill(pi, { ...udp4, ipId: 99 }, true), 59), false, 'record into a full table succeeded');
  assert.equal(ft.recordFailed, 1, `recordFailed got ${ft.recordFailed}, want 1`);
  assert.ok(ft.record(fill(pi, { ...udp4, ipId: 99 }, true), 60), 'record after expiry failed');
  assert.ok(ft.lookup(fill(pi, { ...udp4, ipId: 99 }, false), 60), 'new record not found');
  assert.equal(ft.count, cap, `count got ${ft.count}, want ${cap} (an expired slot was reused)`);
  ft.flush();
  assert.equal(ft.lookup(fill(pi, { ...udp4, ipId: 99 }, false), 60), false, 'found after flush');
  assert.ok(PROBE_WINDOW >= cap, `PROBE_WINDOW ${PROBE_WINDOW} smaller than the test assumes`);
});

test('fragments: state survives a new FragmentTable over the same region', () => {
  const sab = new SharedArrayBuffer(FragmentTable.bytesFor(64));
  const pi = new PacketInfo();
  new FragmentTable(sab, 0, 64).record(fill(pi, tcp6, true), 10);
  const again = new FragmentTable(sab, 0, 64);
  const got = again.lookup(fill(pi, tcp6, false), 11);
  assert.ok(got, 'record lost after re-construction');
  assert.equal(pi.dport, 443, `dport got ${pi.dport}, want 443`);
});

for (const seed of [7, 8, 9]) {
  test(`fragments reference model, seed ${seed}`, () => {
    const r = new Rand(seed);
    const ft = newTable(128, 30);
    const model = new Map<string, { sport: number; dport: number; expires: number }>();
    const pi = new PacketInfo();
    const flows: Frag[] = [];
    for (let i = 0; i < 300; i++) {
      const v6 = r.bool(0.4);
      flows.push({
        family: v6 ? 6 : 4, proto: r.pick([IPPROTO_TCP, IPPROTO_UDP]),
        src: v6 ? [0xfd000000, 0, 0, r.range(1, 4)] : [0x0a000000 + r.range(1, 4), 0, 0, 0],
        dst: v6 ? [0xfd000000, 0, 0, r.range(1, 4)] : [0x0a000000 + r.range(1, 4), 0, 0, 0],
        ipId: v6 ? r.u32() : r.int(65536),
      });
    }
    const key = (f: Frag): string => `${f.family}/${f.proto} ${f.src.join('.')} ${f.dst.join('.')} #${f.ipId}`;
    let now = 0;
    let fails = 0;
    let hits = 0;
    for (let step = 0; step < 20000; step++) {
      const where = `seed ${seed} step ${step}`;
      const f = r.pick(flows);
      const op = r.int(10);
      if (op < 4) {
        const sport = r.int(65536);
        const dport = r.int(65536);
        const ok = ft.record(fill(pi, { ...f, sport, dport }, true), now);
        if (ok) model.set(key(f), { sport, dport, expires: now + 30 });
        else {
          fails++;
          let live = 0;
          for (const e of model.values()) if (e.expires > now) live++;
          assert.ok(live >= PROBE_WINDOW, `${where}: record failed with only ${live} live records`);
        }
      } else if (op < 9) {
        const got = ft.lookup(fill(pi, f, false), now);
        const e = model.get(key(f));
        const want = e !== undefined && e.expires > now;
        assert.equal(got, want, `${where}: lookup ${key(f)} got ${got}, want ${want}`);
        if (e && want) {
          hits++;
          assert.equal(pi.sport, e.sport, `${where}: sport got ${pi.sport}, want ${e.sport}`);
          assert.equal(pi.dport, e.dport, `${where}: dport got ${pi.dport}, want ${e.dport}`);
        }
      } else {
        now += r.range(0, 2);
      }
    }
    assert.equal(ft.recordFailed, fails, `recordFailed got ${ft.recordFailed}, want ${fails}`);
    assert.ok(hits > 1000, `seed ${seed}: only ${hits} hits, the test exercises too little`);
    let live = 0;
    for (const e of model.values()) if (e.expires > now) live++;
    assert.equal(ft.liveCount(now), live, `liveCount got ${ft.liveCount(now)}, want ${live}`);
  });
}
