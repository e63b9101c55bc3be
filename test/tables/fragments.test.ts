import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PacketInfo } from '../../src/datapath/packet.js';
import { IPPROTO_TCP, IPPROTO_UDP } from '../../src/proto/ip.js';
import { FragmentTable, PROBE_WINDOW } from '../../src/tables/fragments.js';
import { ownerSlot } from '../../src/tables/conntrack.js';
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

function newTable(capacity = 256, lifetime?: number, endpointShare?: number): FragmentTable {
  const sab = new SharedArrayBuffer(FragmentTable.bytesFor(capacity) + 32);
  return new FragmentTable(sab, 32, capacity, { ...(lifetime === undefined ? {} : { lifetime }), ...(endpointShare === undefined ? {} : { endpointShare }) });
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

test('fragments: a full probe window overwrites the oldest record (LRU), never refuses', () => {
  const cap = 8; // window = min(capacity, PROBE_WINDOW) = 8: the whole table
  const ft = newTable(cap);
  const pi = new PacketInfo();
  // record i at t = 10 + i, except record 5 at t = 1: the oldest
  for (let i = 0; i < cap; i++) assert.ok(ft.record(fill(pi, { ...udp4, ipId: i }, true), i === 5 ? 1 : 10 + i), `record ${i} failed`);
  assert.ok(ft.record(fill(pi, { ...udp4, ipId: 99 }, true), 20), 'record into a full table failed, want the oldest overwritten');
  const cases: [string, number, boolean][] = [['new record 99', 99, true], ['oldest record 5', 5, false], ['record 4', 4, true], ['record 6', 6, true]];
  for (const [name, id, want] of cases) {
    const got = ft.lookup(fill(pi, { ...udp4, ipId: id }, false), 20);
    assert.equal(got, want, `${name}: found got ${got}, want ${want}`);
  }
  const counts: [string, number, number][] = [
    ['recordFailed', ft.recordFailed, 0], ['evictions.oldest', ft.evictions().oldest, 1], ['count', ft.count, cap],
  ];
  for (const [name, got, want] of counts) assert.equal(got, want, `${name} got ${got}, want ${want}`);
  ft.flush();
  assert.equal(ft.lookup(fill(pi, { ...udp4, ipId: 99 }, false), 20), false, 'found after flush');
  assert.ok(PROBE_WINDOW >= cap, `PROBE_WINDOW ${PROBE_WINDOW} smaller than the test assumes`);
});

test('fragments: an endpoint at its quota overwrites only its own records', () => {
  const ft = newTable(8, undefined, 25); // quota floor(8 * 25%) = 2 slots per owner
  assert.equal(ft.quota, 2, `quota got ${ft.quota}, want 2`);
  const pi = new PacketInfo();
  const flooder = ownerSlot(3);
  const other = ownerSlot(4);
  // six other endpoints hold one slot each (the table never empties a slot again)
  assert.ok(ft.record(fill(pi, { ...udp4, ipId: 1 }, true), 99, other), 'other record 1 failed');
  for (let e = 5; e < 10; e++) assert.ok(ft.record(fill(pi, { ...udp4, ipId: e }, true), 99, ownerSlot(e)), `record of endpoint ${e} failed`);
  for (let id = 100; id < 110; id++) assert.ok(ft.record(fill(pi, { ...udp4, ipId: id }, true), id, flooder), `flooder record ${id} failed`);
  const cases: [string, number, boolean][] = [
    ["other's record survives the flood", 1, true], ['flooder newest', 109, true], ['flooder second newest', 108, true], ['flooder older', 107, false],
    ['endpoint 5 survives', 5, true], ['endpoint 9 survives', 9, true],
  ];
  for (const [name, id, want] of cases) {
    const got = ft.lookup(fill(pi, { ...udp4, ipId: id }, false), 110);
    assert.equal(got, want, `${name}: found got ${got}, want ${want}`);
  }
  assert.equal(ft.ownerCount(flooder), 2, `flooder holds ${ft.ownerCount(flooder)}, want 2`);
  assert.equal(ft.evictions().quota, 8, `evictions.quota got ${ft.evictions().quota}, want 8`);
});

test('fragments: a full window costs the recording owner its own oldest record before anyone else\'s', () => {
  const cap = 8; // window = the whole table
  const ft = newTable(cap, 1000); // nothing expires during the test
  const pi = new PacketInfo();
  const flooder = ownerSlot(3);
  const other = ownerSlot(4);
  // the other endpoint's record is the oldest in the table; the flooder fills the rest
  assert.ok(ft.record(fill(pi, { ...udp4, ipId: 500 }, true), 1, other), 'record of the other endpoint failed');
  for (let i = 0; i < cap - 1; i++) assert.ok(ft.record(fill(pi, { ...udp4, ipId: i }, true), 10 + i, flooder), `flooder record ${i} failed`);
  for (let i = 100; i < 110; i++) assert.ok(ft.record(fill(pi, { ...udp4, ipId: i }, true), 20 + i, flooder), `flooder record ${i} failed`);
  const cases: [string, boolean, boolean][] = [
    ['the other endpoint\'s record', ft.lookup(fill(pi, { ...udp4, ipId: 500 }, false), 200), true],
    ['the flooder\'s newest record', ft.lookup(fill(pi, { ...udp4, ipId: 109 }, false), 200), true],
    ['the flooder\'s first record', ft.lookup(fill(pi, { ...udp4, ipId: 0 }, false), 200), false],
  ];
  for (const [name, got, want] of cases) assert.equal(got, want, `${name}: found got ${got}, want ${want}`);
  const counts: [string, number, number][] = [
    ['evictions.oldest', ft.evictions().oldest, 10], ['flooder slots', ft.ownerCount(flooder), cap - 1], ['other slots', ft.ownerCount(other), 1],
  ];
  for (const [name, got, want] of counts) assert.equal(got, want, `${name} got ${got}, want ${want}`);
  // a third owner with no record in the window still gets in: the oldest of any is overwritten
  assert.ok(ft.record(fill(pi, { ...udp4, ipId: 900 }, true), 200, ownerSlot(5)), 'a third owner was refused');
  assert.equal(ft.lookup(fill(pi, { ...udp4, ipId: 500 }, false), 200), false, 'the oldest record (the other endpoint\'s) survived a third owner\'s record');
});

test('fragments: an owner at its quota with none of its records in the window is refused', () => {
  const ft = newTable(1024, undefined, 1); // quota 10, window 16 of 1024
  const pi = new PacketInfo();
  let refused = 0;
  for (let id = 0; id < 300; id++) if (!ft.record(fill(pi, { ...udp4, ipId: id }, true), 0, ownerSlot(1))) refused++;
  assert.ok(ft.ownerCount(ownerSlot(1)) <= ft.quota, `owner holds ${ft.ownerCount(ownerSlot(1))}, quota ${ft.quota}`);
  assert.ok(refused > 0, `refused got ${refused}, want > 0`);
  assert.equal(ft.recordFailed, refused, `recordFailed got ${ft.recordFailed}, want ${refused}`);
  assert.equal(ft.evictions().quotaRefused, refused, `quotaRefused got ${ft.evictions().quotaRefused}, want ${refused}`);
  assert.ok(ft.record(fill(pi, { ...udp4, ipId: 5000 }, true), 0, ownerSlot(2)), 'another owner refused');
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

/** Model key of slot j, in the test's key() format. */
function slotKey(ft: FragmentTable, j: number): string {
  const w = (k: number): number => ft.keyWordAt(j, k);
  const fam = w(0) >>> 8;
  const proto = w(0) & 0xff;
  return `${fam}/${proto} ${[w(2), w(3), w(4), w(5)].join('.')} ${[w(6), w(7), w(8), w(9)].join('.')} #${w(1)}`;
}

for (const seed of [7, 8, 9]) {
  test(`fragments reference model, seed ${seed}`, () => {
    const r = new Rand(seed);
    const ft = newTable(128, 30, 40);
    const model = new Map<string, { sport: number; dport: number; expires: number; owner: number }>();
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
    let evicted = 0;
    for (let step = 0; step < 20000; step++) {
      const where = `seed ${seed} step ${step}`;
      const f = r.pick(flows);
      const op = r.int(10);
      if (op < 4) {
        const sport = r.int(65536);
        const dport = r.int(65536);
        // the source's owner: address word 0 or 3 (1..3), so one source floods more often
        const owner = f.family === 6 ? (f.src[3] as number) : (f.src[0] as number) - 0x0a000000;
        const atQuota = ft.ownerCount(owner) >= ft.quota;
        fill(pi, { ...f, sport, dport }, true);
        const before: (string | null)[] = [];
        for (let j = 0; j < ft.capacity; j++) before.push(ft.isUsed(j) ? slotKey(ft, j) : null);
        const ok = ft.record(pi, now, owner);
        // the window as the table held it before: candidates and the one the model evicts
        const home = ft.lastHome;
        const win: { key: string; expires: number; owner: number }[] = [];
        for (let k = 0; k < Math.min(PROBE_WINDOW, ft.capacity); k++) {
          const kk = before[(home + k) & (ft.capacity - 1)];
          if (kk === null || kk === undefined) break;
          const e = model.get(kk);
          if (e) win.push({ key: kk, expires: e.expires, owner: e.owner });
        }
        const present = new Set<string>();
        for (let j = 0; j < ft.capacity; j++) if (ft.isUsed(j)) present.add(slotKey(ft, j));
        const gone = [...model.entries()].filter(([k, e]) => k !== key(f) && e.expires > now && !present.has(k));
        assert.ok(gone.length <= 1, `${where}: record removed ${gone.length} live records, want at most 1`);
        if (ok) {
          if (gone.length === 1) {
            const [gk, ge] = gone[0] as [string, { expires: number; owner: number }];
            const cands = win.filter((x) => x.key !== key(f) && (!atQuota || x.owner === owner));
            assert.ok(cands.every((x) => x.expires > now), `${where}: evicted ${gk} although an expired candidate was in the window`);
            // the recording owner's own oldest goes first; with none of its own, the oldest of any
            const own = cands.filter((x) => x.owner === owner);
            const pool = own.length > 0 ? own : cands;
            let want = pool[0];
            for (const x of pool) if (want === undefined || x.expires < want.expires) want = x;
            assert.equal(gk, want?.key, `${where}: evicted ${gk}, want ${want?.key}`);
            if (atQuota) assert.equal(ge.owner, owner, `${where}: owner ${owner} at quota overwrote owner ${ge.owner}'s record`);
            model.delete(gk);
            evicted++;
          }
          model.set(key(f), { sport, dport, expires: now + 30, owner });
        } else {
          fails++;
          assert.ok(atQuota, `${where}: record refused for an owner below its quota`);
        }
        for (let o = 1; o < 4; o++) assert.ok(ft.ownerCount(o) <= ft.quota, `${where}: owner ${o} holds ${ft.ownerCount(o)}, quota ${ft.quota}`);
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
    assert.ok(evicted > 0, `seed ${seed}: nothing was evicted, the test exercises too little`);
    let live = 0;
    for (const e of model.values()) if (e.expires > now) live++;
    assert.equal(ft.liveCount(now), live, `liveCount got ${ft.liveCount(now)}, want ${live}`);
  });
}
