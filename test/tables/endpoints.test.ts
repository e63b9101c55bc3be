import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PublishControl, WriteLog } from '../../src/tables/publish.js';
import {
  EP_AUDIT,
  EP_ENFORCE_EGRESS,
  EP_ENFORCE_INGRESS,
  EP_VALID,
  EndpointTable,
  EndpointTableWriter,
  type EndpointRecord,
} from '../../src/tables/endpoints.js';
import { Rand } from '../helpers/rand.js';

function setup(maxEndpoints = 64) {
  const ctl = PublishControl.create();
  const log = new WriteLog(ctl);
  const table = EndpointTable.create({ maxEndpoints });
  const writer = new EndpointTableWriter(table, log);
  return { ctl, log, table, writer };
}

const ip4 = (a: number, b: number, c: number, d: number) => ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
const FD00 = [0xfd000000, 0, 0, 0];
const ip6 = (last: number) => [FD00[0] as number, 0, 0, last >>> 0];

interface Snapshot {
  flags: number;
  identity: number;
  ipv4: number;
  port: number;
  ipv6: number[];
}

/** Reads endpoint `ep` as a reader would: enter, read, leave. */
function readEp(ctl: PublishControl, t: EndpointTable, ep: number): Snapshot {
  const side = ctl.enter(0);
  t.useSide(side);
  const s = {
    flags: t.flags(ep),
    identity: t.identity(ep),
    ipv4: t.ipv4(ep),
    port: t.port(ep),
    ipv6: [0, 1, 2, 3].map((i) => t.ipv6Word(ep, i)),
  };
  ctl.leave(0);
  return s;
}

function by4(ctl: PublishControl, t: EndpointTable, a: number): number {
  const side = ctl.enter(0);
  t.useSide(side);
  const ep = t.byAddr4(a);
  ctl.leave(0);
  return ep;
}

function by6(ctl: PublishControl, t: EndpointTable, w: number[]): number {
  const side = ctl.enter(0);
  t.useSide(side);
  const ep = t.byAddr6(w[0] as number, w[1] as number, w[2] as number, w[3] as number);
  ctl.leave(0);
  return ep;
}

test('endpoint records and address lookups', () => {
  const cases: {
    name: string;
    ops: ((w: EndpointTableWriter) => void)[];
    ep: number;
    want: Snapshot | null;
    addr4?: { a: number; want: number }[];
    addr6?: { a: number[]; want: number }[];
  }[] = [
    {
      name: 'IPv4-only endpoint with enforcement',
      ops: [(w) => w.upsert(1, { identity: 300, ipv4: ip4(10, 0, 0, 1), port: 5, flags: EP_ENFORCE_INGRESS | EP_ENFORCE_EGRESS })],
      ep: 1,
      want: { flags: EP_VALID | EP_ENFORCE_INGRESS | EP_ENFORCE_EGRESS, identity: 300, ipv4: ip4(10, 0, 0, 1), port: 5, ipv6: [0, 0, 0, 0] },
      addr4: [
        { a: ip4(10, 0, 0, 1), want: 1 },
        { a: ip4(10, 0, 0, 2), want: -1 },
      ],
      addr6: [{ a: [ip4(10, 0, 0, 1), 0, 0, 0], want: -1 }],
    },
    {
      name: 'dual-stack endpoint in audit mode',
      ops: [(w) => w.upsert(2, { identity: 301, ipv4: ip4(10, 0, 0, 2), ipv6: ip6(2), port: 6, flags: EP_ENFORCE_INGRESS | EP_AUDIT })],
      ep: 2,
      want: { flags: EP_VALID | EP_ENFORCE_INGRESS | EP_AUDIT, identity: 301, ipv4: ip4(10, 0, 0, 2), port: 6, ipv6: ip6(2) },
      addr4: [{ a: ip4(10, 0, 0, 2), want: 2 }],
      addr6: [
        { a: ip6(2), want: 2 },
        { a: ip6(3), want: -1 },
      ],
    },
    {
      name: 'IPv6-only endpoint with the top bit of every word set',
      ops: [(w) => w.upsert(3, { identity: 0xfffffff0, ipv6: [0xffffffff, 0x80000000, 0x80000001, 0xfffffffe], port: 0xffffffff, flags: 0 })],
      ep: 3,
      want: { flags: EP_VALID, identity: 0xfffffff0, ipv4: 0, port: 0xffffffff, ipv6: [0xffffffff, 0x80000000, 0x80000001, 0xfffffffe] },
      addr6: [{ a: [0xffffffff, 0x80000000, 0x80000001, 0xfffffffe], want: 3 }],
      addr4: [{ a: 0, want: -1 }],
    },
    {
      name: 'changing the address drops the old mapping',
      ops: [
        (w) => w.upsert(4, { identity: 302, ipv4: ip4(10, 0, 0, 4), ipv6: ip6(4), port: 1, flags: 0 }),
        (w) => w.upsert(4, { identity: 302, ipv4: ip4(10, 0, 0, 40), ipv6: ip6(40), port: 1, flags: 0 }),
      ],
      ep: 4,
      want: { flags: EP_VALID, identity: 302, ipv4: ip4(10, 0, 0, 40), port: 1, ipv6: ip6(40) },
      addr4: [
        { a: ip4(10, 0, 0, 4), want: -1 },
        { a: ip4(10, 0, 0, 40), want: 4 },
      ],
      addr6: [
        { a: ip6(4), want: -1 },
        { a: ip6(40), want: 4 },
      ],
    },
    {
      name: 'dropping an address family removes its mapping',
      ops: [
        (w) => w.upsert(5, { identity: 303, ipv4: ip4(10, 0, 0, 5), ipv6: ip6(5), port: 1, flags: 0 }),
        (w) => w.upsert(5, { identity: 303, ipv4: ip4(10, 0, 0, 5), port: 1, flags: 0 }),
      ],
      ep: 5,
      want: { flags: EP_VALID, identity: 303, ipv4: ip4(10, 0, 0, 5), port: 1, ipv6: [0, 0, 0, 0] },
      addr4: [{ a: ip4(10, 0, 0, 5), want: 5 }],
      addr6: [{ a: ip6(5), want: -1 }],
    },
    {
      name: 'removed endpoint reads as invalid and zero',
      ops: [
        (w) => w.upsert(6, { identity: 304, ipv4: ip4(10, 0, 0, 6), ipv6: ip6(6), port: 9, flags: EP_AUDIT }),
        (w) => assert.equal(w.remove(6), true),
        (w) => assert.equal(w.remove(6), false),
      ],
      ep: 6,
      want: { flags: 0, identity: 0, ipv4: 0, port: 0, ipv6: [0, 0, 0, 0] },
      addr4: [{ a: ip4(10, 0, 0, 6), want: -1 }],
      addr6: [{ a: ip6(6), want: -1 }],
    },
    {
      name: 'an address can move to another endpoint once released',
      ops: [
        (w) => w.upsert(7, { identity: 305, ipv4: ip4(10, 0, 0, 7), port: 1, flags: 0 }),
        (w) => w.remove(7),
        (w) => w.upsert(8, { identity: 306, ipv4: ip4(10, 0, 0, 7), port: 2, flags: 0 }),
      ],
      ep: 8,
      want: { flags: EP_VALID, identity: 306, ipv4: ip4(10, 0, 0, 7), port: 2, ipv6: [0, 0, 0, 0] },
      addr4: [{ a: ip4(10, 0, 0, 7), want: 8 }],
    },
    {
      name: 'an index out of range reads as invalid',
      ops: [],
      ep: 1 << 20,
      want: null,
    },
  ];
  for (const c of cases) {
    const { ctl, log, table, writer } = setup();
    for (const op of c.ops) op(writer);
    log.commit();
    if (c.want === null) {
      const side = ctl.enter(0);
      table.useSide(side);
      const f = table.flags(c.ep);
      ctl.leave(0);
      assert.equal(f, 0, `${c.name}: flags got ${f}, want 0`);
    } else {
      const got = readEp(ctl, table, c.ep);
      assert.deepEqual(got, c.want, `${c.name}: got ${JSON.stringify(got)}, want ${JSON.stringify(c.want)}`);
    }
    for (const a of c.addr4 ?? []) {
      const got = by4(ctl, table, a.a);
      assert.equal(got, a.want, `${c.name}: byAddr4(${a.a.toString(16)}) got ${got}, want ${a.want}`);
    }
    for (const a of c.addr6 ?? []) {
      const got = by6(ctl, table, a.a);
      assert.equal(got, a.want, `${c.name}: byAddr6(${a.a.map((x) => x.toString(16)).join(':')}) got ${got}, want ${a.want}`);
    }
  }
});

test('bad input is refused with the field named and leaves the table untouched', () => {
  const { log, writer, ctl, table } = setup(8);
  writer.upsert(1, { identity: 300, ipv4: ip4(10, 0, 0, 1), ipv6: ip6(1), port: 1, flags: 0 });
  log.commit();
  const cases: { name: string; fn: () => void; re: RegExp }[] = [
    { name: 'index too big', fn: () => writer.upsert(8, { identity: 1, port: 0, flags: 0 }), re: /endpoint index 8 is outside 0\.\.7/ },
    { name: 'unknown flag', fn: () => writer.upsert(2, { identity: 1, port: 0, flags: 0x10 }), re: /flags 0x10 has unknown bits/ },
    { name: 'ipv6 length', fn: () => writer.upsert(2, { identity: 1, ipv6: [1, 2], port: 0, flags: 0 }), re: /ipv6 must be four/ },
    { name: 'identity', fn: () => writer.upsert(2, { identity: -5, port: 0, flags: 0 }), re: /identity -5/ },
    {
      name: 'IPv4 of another endpoint',
      fn: () => writer.upsert(2, { identity: 1, ipv4: ip4(10, 0, 0, 1), port: 0, flags: 0 }),
      re: /IPv4 10\.0\.0\.1 already belongs to endpoint 1/,
    },
    {
      name: 'IPv6 of another endpoint',
      fn: () => writer.upsert(2, { identity: 1, ipv4: ip4(10, 0, 0, 2), ipv6: ip6(1), port: 0, flags: 0 }),
      re: /IPv6 fd00:0:0:0:0:0:0:1 already belongs to endpoint 1/,
    },
  ];
  for (const c of cases) assert.throws(c.fn, c.re, c.name);
  assert.equal(log.pending, 0, `words written by refused upserts got ${log.pending}, want 0`);
  assert.equal(writer.get(2), undefined);
  assert.equal(by4(ctl, table, ip4(10, 0, 0, 2)), -1);
});

test('attach from a structured clone reads the same memory', () => {
  const { ctl, log, table, writer } = setup();
  writer.upsert(9, { identity: 777, ipv4: ip4(192, 168, 1, 9), port: 3, flags: EP_ENFORCE_EGRESS });
  log.commit();
  const other = EndpointTable.attach(structuredClone(table.shared));
  assert.equal(by4(ctl, other, ip4(192, 168, 1, 9)), 9);
  assert.equal(readEp(ctl, other, 9).identity, 777);
});

interface ModelEp {
  identity: number;
  ipv4: number;
  ipv6: number[];
  port: number;
  flags: number;
}

test('endpoint churn agrees with a model on both sides after each commit', () => {
  for (const seed of [31, 32, 33]) {
    const r = new Rand(seed);
    const MAX = 48;
    const { ctl, log, table, writer } = setup(MAX);
    const model = new Map<number, ModelEp>();
    let published = new Map<number, ModelEp>();
    // A small address pool, so re-addressing and conflicts happen often.
    const pool4 = Array.from({ length: 80 }, (_, i) => ip4(10, 1, i >> 8, i & 0xff) + 1);
    const pool6 = Array.from({ length: 80 }, (_, i) => ip6(0x1000 + i));
    const owner4 = (a: number) => [...model.entries()].find(([, e]) => e.ipv4 === a)?.[0];
    const owner6 = (a: number[]) => [...model.entries()].find(([, e]) => e.ipv6.every((w, i) => w === a[i]))?.[0];

    const check = (m: Map<number, ModelEp>, what: string, sideOverride: number) => {
      if (sideOverride >= 0) table.useSide(sideOverride);
      for (let ep = 0; ep < MAX; ep++) {
        const e = m.get(ep);
        const want = e ? e.flags | EP_VALID : 0;
        assert.equal(table.flags(ep), want, `${what}: ep ${ep} flags got ${table.flags(ep)}, want ${want}`);
        if (!e) continue;
        assert.equal(table.identity(ep), e.identity, `${what}: ep ${ep} identity`);
        assert.equal(table.ipv4(ep), e.ipv4, `${what}: ep ${ep} ipv4`);
        assert.equal(table.port(ep), e.port, `${what}: ep ${ep} port`);
        for (let i = 0; i < 4; i++) assert.equal(table.ipv6Word(ep, i), e.ipv6[i], `${what}: ep ${ep} ipv6 word ${i}`);
      }
      for (const a of pool4) {
        let want = -1;
        for (const [ep, e] of m) if (e.ipv4 === a) want = ep;
        const got = table.byAddr4(a);
        assert.equal(got, want, `${what}: byAddr4 ${a.toString(16)} got ${got}, want ${want}`);
      }
      for (const a of pool6) {
        let want = -1;
        for (const [ep, e] of m) if (e.ipv6.every((w, i) => w === a[i])) want = ep;
        const got = table.byAddr6(a[0] as number, a[1] as number, a[2] as number, a[3] as number);
        assert.equal(got, want, `${what}: byAddr6 got ${got}, want ${want}`);
      }
    };

    for (let step = 0; step < 3000; step++) {
      const ep = r.int(MAX);
      if (r.bool(0.7)) {
        const rec: EndpointRecord = {
          identity: r.range(256, 2000),
          port: r.int(64),
          flags: r.int(16) & ~EP_VALID,
        };
        if (r.bool(0.8)) rec.ipv4 = r.pick(pool4);
        if (r.bool(0.5)) rec.ipv6 = r.pick(pool6);
        const o4 = rec.ipv4 !== undefined ? owner4(rec.ipv4) : undefined;
        const o6 = rec.ipv6 !== undefined ? owner6(rec.ipv6) : undefined;
        const conflict = (o4 !== undefined && o4 !== ep) || (o6 !== undefined && o6 !== ep);
        if (conflict) {
          assert.throws(() => writer.upsert(ep, rec), /already belongs to endpoint/, `seed ${seed} step ${step}: conflict`);
        } else {
          writer.upsert(ep, rec);
          model.set(ep, {
            identity: rec.identity,
            ipv4: rec.ipv4 ?? 0,
            ipv6: rec.ipv6 ?? [0, 0, 0, 0],
            port: rec.port,
            flags: rec.flags,
          });
        }
      } else {
        const want = model.delete(ep);
        const got = writer.remove(ep);
        assert.equal(got, want, `seed ${seed} step ${step}: remove ${ep} got ${got}, want ${want}`);
      }
      if (step % 100 === 99) {
        // Before the commit a reader still sees the last published revision.
        const side = ctl.enter(2);
        table.useSide(side);
        check(published, `seed ${seed} step ${step} before commit`, -1);
        ctl.leave(2);
        log.commit();
        published = new Map(model);
        check(model, `seed ${seed} step ${step} side 0`, 0);
        check(model, `seed ${seed} step ${step} side 1`, 1);
        const n4 = [...model.values()].filter((e) => e.ipv4 !== 0).length;
        const n6 = [...model.values()].filter((e) => e.ipv6.some((w) => w !== 0)).length;
        assert.equal(writer.addressCount, n4 + n6, `seed ${seed} step ${step}: addresses got ${writer.addressCount}, want ${n4 + n6}`);
        const listed = [...writer.entries()].map((e) => e.ep);
        assert.deepEqual(listed, [...model.keys()].sort((a, b) => a - b), `seed ${seed} step ${step}: listed endpoints`);
      }
    }
  }
});
