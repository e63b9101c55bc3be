import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PublishControl, WriteLog } from '../../src/tables/publish.js';
import { POLICY_MATCH_ALL, POLICY_MATCH_L3_L4, POLICY_MATCH_L3_ONLY, POLICY_MATCH_L3_PROTO, POLICY_MATCH_L4_ONLY, POLICY_MATCH_NONE, POLICY_MATCH_PROTO_ONLY, PolicyTable, PolicyTableWriter, portRangeToPrefixes, type PolicyEntry } from '../../src/tables/policy.js';
import { DIR_EGRESS, DIR_INGRESS } from '../../src/proto/direction.js';
import { Rand } from '../helpers/rand.js';

const TCP = 6;
const UDP = 17;
const ICMP = 1;
const A = 1000;
const B = 2000;
const EP = 3;

function setup(opts: { capacity?: number; maxEndpoints?: number } = {}) {
  const ctl = PublishControl.create();
  const log = new WriteLog(ctl);
  const table = PolicyTable.create({ capacity: opts.capacity ?? 1024, maxEndpoints: opts.maxEndpoints ?? 16 });
  const writer = new PolicyTableWriter(table, log);
  return { ctl, log, table, writer };
}

interface Result {
  v: number;
  cookie: number;
  match: number;
  plen: number;
  exact: number;
}

function snapshot(t: PolicyTable, v: number): Result {
  return { v, cookie: t.outCookie, match: t.outMatchType, plen: t.outPrefixLen, exact: t.outIdentityExact };
}

/** A reader's batch of one: enter, read, leave. */
function read(ctl: PublishControl, t: PolicyTable, ep: number, dir: number, id: number, proto: number, port: number): Result {
  const side = ctl.enter(0);
  t.useSide(side);
  const v = t.lookup(ep, dir, id, proto, port);
  const r = snapshot(t, v);
  ctl.leave(0);
  return r;
}

function entry(p: Partial<PolicyEntry>): PolicyEntry {
  return { ep: EP, dir: DIR_INGRESS, identity: 0, proto: 0, port: 0, prefixLen: 0, deny: false, cookie: 0, ...p };
}

interface Flow {
  ep?: number;
  dir?: number;
  id: number;
  proto: number;
  port: number;
  want: { v: number; cookie?: number; match: number };
}

interface Scenario {
  name: string;
  entries: PolicyEntry[];
  flows: Flow[];
}

const rangeEntries = portRangeToPrefixes(8000, 8100).map((b, i) =>
  entry({ identity: 0, proto: TCP, port: b.port, prefixLen: 8 + b.prefixLen, cookie: 70 + i }),
);

const scenarios: Scenario[] = [
  {
    name: 'L3-only allow',
    entries: [entry({ identity: A, cookie: 11 })],
    flows: [
      { id: A, proto: TCP, port: 80, want: { v: 1, cookie: 11, match: POLICY_MATCH_L3_ONLY } },
      { id: A, proto: UDP, port: 53, want: { v: 1, cookie: 11, match: POLICY_MATCH_L3_ONLY } },
      { id: B, proto: TCP, port: 80, want: { v: 0, cookie: 0, match: POLICY_MATCH_NONE } },
    ],
  },
  {
    name: 'L4-only allow on 80/TCP',
    entries: [entry({ identity: 0, proto: TCP, port: 80, prefixLen: 24, cookie: 12 })],
    flows: [
      { id: B, proto: TCP, port: 80, want: { v: 1, cookie: 12, match: POLICY_MATCH_L4_ONLY } },
      { id: A, proto: TCP, port: 80, want: { v: 1, cookie: 12, match: POLICY_MATCH_L4_ONLY } },
      { id: B, proto: TCP, port: 81, want: { v: 0, match: POLICY_MATCH_NONE } },
      { id: B, proto: UDP, port: 80, want: { v: 0, match: POLICY_MATCH_NONE } },
    ],
  },
  {
    name: 'L3+L4 allow on 443/TCP',
    entries: [entry({ identity: A, proto: TCP, port: 443, prefixLen: 24, cookie: 13 })],
    flows: [
      { id: A, proto: TCP, port: 443, want: { v: 1, cookie: 13, match: POLICY_MATCH_L3_L4 } },
      { id: B, proto: TCP, port: 443, want: { v: 0, match: POLICY_MATCH_NONE } },
    ],
  },
  {
    name: 'deny on identity beats allow on port',
    entries: [
      entry({ identity: A, deny: true, cookie: 21 }),
      entry({ identity: 0, proto: TCP, port: 80, prefixLen: 24, cookie: 22 }),
    ],
    flows: [
      { id: A, proto: TCP, port: 80, want: { v: -1, cookie: 21, match: POLICY_MATCH_L3_ONLY } },
      { id: B, proto: TCP, port: 80, want: { v: 1, cookie: 22, match: POLICY_MATCH_L4_ONLY } },
    ],
  },
  {
    name: 'deny with identity 0 beats exact-identity allow',
    entries: [
      entry({ identity: 0, proto: TCP, prefixLen: 8, deny: true, cookie: 31 }),
      entry({ identity: A, proto: TCP, port: 80, prefixLen: 24, cookie: 32 }),
    ],
    flows: [
      { id: A, proto: TCP, port: 80, want: { v: -1, cookie: 31, match: POLICY_MATCH_PROTO_ONLY } },
      { id: A, proto: UDP, port: 80, want: { v: 0, match: POLICY_MATCH_NONE } },
    ],
  },
  {
    name: 'deny on a port beats an L3-only allow',
    entries: [entry({ identity: A, cookie: 33 }), entry({ identity: A, proto: TCP, port: 22, prefixLen: 24, deny: true, cookie: 34 })],
    flows: [
      { id: A, proto: TCP, port: 22, want: { v: -1, cookie: 34, match: POLICY_MATCH_L3_L4 } },
      { id: A, proto: TCP, port: 23, want: { v: 1, cookie: 33, match: POLICY_MATCH_L3_ONLY } },
    ],
  },
  {
    name: 'the reported deny is the most specific one',
    entries: [
      entry({ identity: 0, deny: true, cookie: 35 }),
      entry({ identity: A, proto: TCP, port: 80, prefixLen: 24, deny: true, cookie: 36 }),
    ],
    flows: [
      { id: A, proto: TCP, port: 80, want: { v: -1, cookie: 36, match: POLICY_MATCH_L3_L4 } },
      { id: B, proto: TCP, port: 80, want: { v: -1, cookie: 35, match: POLICY_MATCH_ALL } },
    ],
  },
  {
    name: 'longer port prefix wins over L3-only',
    entries: [entry({ identity: A, cookie: 41 }), entry({ identity: 0, proto: TCP, port: 80, prefixLen: 24, cookie: 42 })],
    flows: [
      { id: A, proto: TCP, port: 80, want: { v: 1, cookie: 42, match: POLICY_MATCH_L4_ONLY } },
      { id: A, proto: TCP, port: 81, want: { v: 1, cookie: 41, match: POLICY_MATCH_L3_ONLY } },
    ],
  },
  {
    name: 'tie prefers L3',
    entries: [
      entry({ identity: A, proto: TCP, port: 80, prefixLen: 24, cookie: 51 }),
      entry({ identity: 0, proto: TCP, port: 80, prefixLen: 24, cookie: 52 }),
      entry({ identity: A, cookie: 53 }),
      entry({ identity: 0, cookie: 54 }),
    ],
    flows: [
      { id: A, proto: TCP, port: 80, want: { v: 1, cookie: 51, match: POLICY_MATCH_L3_L4 } },
      { id: B, proto: TCP, port: 80, want: { v: 1, cookie: 52, match: POLICY_MATCH_L4_ONLY } },
      { id: A, proto: UDP, port: 9, want: { v: 1, cookie: 53, match: POLICY_MATCH_L3_ONLY } },
      { id: B, proto: UDP, port: 9, want: { v: 1, cookie: 54, match: POLICY_MATCH_ALL } },
    ],
  },
  {
    name: 'port range via prefixes',
    entries: rangeEntries,
    flows: [
      { id: A, proto: TCP, port: 7999, want: { v: 0, match: POLICY_MATCH_NONE } },
      { id: A, proto: TCP, port: 8000, want: { v: 1, match: POLICY_MATCH_L4_ONLY } },
      { id: A, proto: TCP, port: 8050, want: { v: 1, match: POLICY_MATCH_L4_ONLY } },
      { id: A, proto: TCP, port: 8100, want: { v: 1, match: POLICY_MATCH_L4_ONLY } },
      { id: A, proto: TCP, port: 8101, want: { v: 0, match: POLICY_MATCH_NONE } },
      { id: A, proto: UDP, port: 8050, want: { v: 0, match: POLICY_MATCH_NONE } },
    ],
  },
  {
    name: 'partial port prefix (8080/20 covers 8080..8095)',
    entries: [entry({ identity: A, proto: TCP, port: 8080, prefixLen: 20, cookie: 55 })],
    flows: [
      { id: A, proto: TCP, port: 8095, want: { v: 1, cookie: 55, match: POLICY_MATCH_L3_L4 } },
      { id: A, proto: TCP, port: 8096, want: { v: 0, match: POLICY_MATCH_NONE } },
      { id: A, proto: TCP, port: 8079, want: { v: 0, match: POLICY_MATCH_NONE } },
    ],
  },
  {
    name: 'ICMP type in port',
    entries: [entry({ identity: 0, proto: ICMP, port: 8, prefixLen: 24, cookie: 61 })],
    flows: [
      { id: B, proto: ICMP, port: 8, want: { v: 1, cookie: 61, match: POLICY_MATCH_L4_ONLY } },
      { id: B, proto: ICMP, port: 0, want: { v: 0, match: POLICY_MATCH_NONE } },
      { id: B, proto: TCP, port: 8, want: { v: 0, match: POLICY_MATCH_NONE } },
    ],
  },
  {
    name: 'proto-only',
    entries: [entry({ identity: 0, proto: UDP, prefixLen: 8, cookie: 62 }), entry({ identity: A, proto: TCP, prefixLen: 8, cookie: 63 })],
    flows: [
      { id: B, proto: UDP, port: 53, want: { v: 1, cookie: 62, match: POLICY_MATCH_PROTO_ONLY } },
      { id: A, proto: UDP, port: 9999, want: { v: 1, cookie: 62, match: POLICY_MATCH_PROTO_ONLY } },
      { id: A, proto: TCP, port: 1, want: { v: 1, cookie: 63, match: POLICY_MATCH_L3_PROTO } },
      { id: B, proto: TCP, port: 1, want: { v: 0, match: POLICY_MATCH_NONE } },
    ],
  },
  {
    name: 'allow-all with identity 0',
    entries: [entry({ identity: 0, cookie: 64 })],
    flows: [
      { id: B, proto: TCP, port: 1, want: { v: 1, cookie: 64, match: POLICY_MATCH_ALL } },
      { id: 0, proto: UDP, port: 2, want: { v: 1, cookie: 64, match: POLICY_MATCH_ALL } },
    ],
  },
  {
    name: 'no entry -> 0',
    entries: [],
    flows: [{ id: A, proto: TCP, port: 80, want: { v: 0, cookie: 0, match: POLICY_MATCH_NONE } }],
  },
  {
    name: 'per-endpoint isolation',
    entries: [entry({ ep: EP, identity: 0, cookie: 65 })],
    flows: [
      { ep: EP, id: A, proto: TCP, port: 80, want: { v: 1, cookie: 65, match: POLICY_MATCH_ALL } },
      { ep: EP + 1, id: A, proto: TCP, port: 80, want: { v: 0, match: POLICY_MATCH_NONE } },
      { ep: EP - 1, id: A, proto: TCP, port: 80, want: { v: 0, match: POLICY_MATCH_NONE } },
      { ep: 1 << 20, id: A, proto: TCP, port: 80, want: { v: 0, match: POLICY_MATCH_NONE } },
    ],
  },
  {
    name: 'per-direction isolation',
    entries: [entry({ dir: DIR_EGRESS, identity: A, cookie: 66 })],
    flows: [
      { dir: DIR_EGRESS, id: A, proto: TCP, port: 80, want: { v: 1, cookie: 66, match: POLICY_MATCH_L3_ONLY } },
      { dir: DIR_INGRESS, id: A, proto: TCP, port: 80, want: { v: 0, match: POLICY_MATCH_NONE } },
    ],
  },
];

test('policy lookup scenarios', () => {
  for (const sc of scenarios) {
    const { ctl, log, table, writer } = setup();
    for (const e of sc.entries) writer.add(e);
    log.commit();
    for (const f of sc.flows) {
      const ep = f.ep ?? EP;
      const dir = f.dir ?? DIR_INGRESS;
      const got = read(ctl, table, ep, dir, f.id, f.proto, f.port);
      const what = `${sc.name}: ep ${ep} dir ${dir} id ${f.id} ${f.proto}/${f.port}`;
      assert.equal(got.v, f.want.v, `${what}: verdict got ${got.v}, want ${f.want.v}`);
      assert.equal(got.match, f.want.match, `${what}: match type got ${got.match}, want ${f.want.match}`);
      if (f.want.cookie !== undefined) {
        assert.equal(got.cookie, f.want.cookie, `${what}: cookie got ${got.cookie}, want ${f.want.cookie}`);
      }
      if (got.v === 0) assert.equal(got.plen, -1, `${what}: prefix length got ${got.plen}, want -1`);
    }
  }
});

test('the match reports the prefix length and whether the identity was exact', () => {
  const { ctl, log, table, writer } = setup();
  writer.add(entry({ identity: A, proto: TCP, port: 8080, prefixLen: 20, cookie: 1 }));
  writer.add(entry({ identity: 0, proto: UDP, prefixLen: 8, cookie: 2 }));
  log.commit();
  const cases = [
    { id: A, proto: TCP, port: 8081, plen: 20, exact: 1 },
    { id: A, proto: UDP, port: 1, plen: 8, exact: 0 },
  ];
  for (const c of cases) {
    const got = read(ctl, table, EP, DIR_INGRESS, c.id, c.proto, c.port);
    assert.equal(got.plen, c.plen, `${c.proto}/${c.port}: prefix got ${got.plen}, want ${c.plen}`);
    assert.equal(got.exact, c.exact, `${c.proto}/${c.port}: exact got ${got.exact}, want ${c.exact}`);
  }
});

test('malformed entries are refused with the field named', () => {
  const { writer } = setup({ maxEndpoints: 8 });
  const cases: { e: Partial<PolicyEntry>; re: RegExp }[] = [
    { e: { ep: 8 }, re: /ep 8 is outside 0\.\.7/ },
    { e: { dir: 2 as 0 }, re: /dir 2/ },
    { e: { prefixLen: 5 }, re: /prefixLen 5 is not 0 or 8\.\.24/ },
    { e: { prefixLen: 25 }, re: /prefixLen 25/ },
    { e: { port: 70000 }, re: /port 70000/ },
    { e: { proto: 256 }, re: /proto 256/ },
    { e: { identity: -1 }, re: /identity -1/ },
    { e: { cookie: 2 ** 32 }, re: /cookie/ },
  ];
  for (const c of cases) assert.throws(() => writer.add(entry({ ep: 0, ...c.e })), c.re, `entry ${JSON.stringify(c.e)}`);
  assert.equal(writer.size, 0, `size got ${writer.size}, want 0`);
});

test('portRangeToPrefixes: known ranges', () => {
  const cases = [
    { lo: 80, hi: 80, want: [{ port: 80, prefixLen: 16 }] },
    { lo: 0, hi: 65535, want: [{ port: 0, prefixLen: 0 }] },
    { lo: 8000, hi: 8003, want: [{ port: 8000, prefixLen: 14 }] },
    {
      lo: 1024,
      hi: 65535,
      want: [
        { port: 1024, prefixLen: 6 },
        { port: 2048, prefixLen: 5 },
        { port: 4096, prefixLen: 4 },
        { port: 8192, prefixLen: 3 },
        { port: 16384, prefixLen: 2 },
        { port: 32768, prefixLen: 1 },
      ],
    },
    { lo: 79, hi: 81, want: [{ port: 79, prefixLen: 16 }, { port: 80, prefixLen: 15 }] },
  ];
  for (const c of cases) {
    const got = portRangeToPrefixes(c.lo, c.hi);
    assert.deepEqual(got, c.want, `${c.lo}-${c.hi}: got ${JSON.stringify(got)}, want ${JSON.stringify(c.want)}`);
  }
  assert.throws(() => portRangeToPrefixes(10, 9), /port range 10-9/);
  assert.throws(() => portRangeToPrefixes(0, 65536), /port range/);
});

test('portRangeToPrefixes: random ranges are covered exactly by aligned blocks', () => {
  const r = new Rand(7);
  for (let i = 0; i < 2000; i++) {
    const a = r.bool(0.1) ? 0 : r.int(65536);
    const b = r.bool(0.1) ? 65535 : r.int(65536);
    const lo = Math.min(a, b);
    const hi = Math.max(a, b);
    const blocks = portRangeToPrefixes(lo, hi);
    let next = lo;
    for (const blk of blocks) {
      const size = 2 ** (16 - blk.prefixLen);
      assert.equal(blk.port, next, `${lo}-${hi}: block start got ${blk.port}, want ${next}`);
      assert.equal(blk.port % size, 0, `${lo}-${hi}: block ${blk.port}/${blk.prefixLen} is not aligned`);
      next += size;
    }
    assert.equal(next, hi + 1, `${lo}-${hi}: blocks end at ${next - 1}, want ${hi}`);
    // At most two blocks per prefix length: the greedy split is minimal.
    assert.ok(blocks.length <= 32, `${lo}-${hi}: ${blocks.length} blocks`);
  }
});

// ---- reference model ----

function l4Mask(len: number): number {
  let m = 0;
  for (let i = 0; i < len; i++) m |= 1 << (23 - i);
  return m;
}

function keyOf(e: Pick<PolicyEntry, 'ep' | 'dir' | 'identity' | 'proto' | 'port' | 'prefixLen'>): string {
  return `${e.ep}/${e.dir}/${e.identity}/${e.prefixLen}/${((e.proto << 16) | e.port) & l4Mask(e.prefixLen)}`;
}

/** Scans every entry and applies the documented precedence. */
function naive(model: Map<string, PolicyEntry>, ep: number, dir: number, id: number, proto: number, port: number): Result {
  const full = (proto << 16) | port;
  let best: PolicyEntry | undefined;
  let bestRank = -1;
  for (const e of model.values()) {
    if (e.ep !== ep || e.dir !== dir) continue;
    if (e.identity !== 0 && e.identity !== id) continue;
    const m = l4Mask(e.prefixLen);
    if ((full & m) !== (((e.proto << 16) | e.port) & m)) continue;
    const exact = e.identity !== 0 ? 1 : 0;
    // Deny above every allow; then longer prefix; then exact identity.
    const rank = (e.deny ? 1000 : 0) + e.prefixLen * 2 + exact;
    if (rank > bestRank) {
      best = e;
      bestRank = rank;
    }
  }
  if (best === undefined) return { v: 0, cookie: 0, match: POLICY_MATCH_NONE, plen: -1, exact: 0 };
  const exact = best.identity !== 0 ? 1 : 0;
  const len = best.prefixLen;
  const match = exact
    ? len > 8
      ? POLICY_MATCH_L3_L4
      : len > 0
        ? POLICY_MATCH_L3_PROTO
        : POLICY_MATCH_L3_ONLY
    : len > 8
      ? POLICY_MATCH_L4_ONLY
      : len > 0
        ? POLICY_MATCH_PROTO_ONLY
        : POLICY_MATCH_ALL;
  return { v: best.deny ? -1 : 1, cookie: best.cookie, match, plen: len, exact };
}

const IDS = [0, 300, 301, 302, 303];
const PROTOS = [TCP, UDP, ICMP];

function randomEntry(r: Rand, nEp: number, cookie: number): PolicyEntry {
  const pick = r.int(10);
  const prefixLen = pick === 0 ? 0 : pick === 1 ? 8 : pick < 5 ? 24 : r.range(9, 23);
  return {
    ep: r.int(nEp),
    dir: r.int(2) as 0 | 1,
    identity: r.pick(IDS),
    proto: r.pick(PROTOS),
    port: r.int(512),
    prefixLen,
    deny: r.bool(0.12),
    cookie,
  };
}

function checkFlows(r: Rand, t: PolicyTable, model: Map<string, PolicyEntry>, nEp: number, n: number, what: string): void {
  for (let i = 0; i < n; i++) {
    const ep = r.int(nEp);
    const dir = r.int(2);
    const id = r.bool(0.1) ? 0 : r.pick(IDS.slice(1).concat([999]));
    const proto = r.pick(PROTOS);
    const port = r.int(512);
    const v = t.lookup(ep, dir, id, proto, port);
    const got = snapshot(t, v);
    const want = naive(model, ep, dir, id, proto, port);
    assert.deepEqual(got, want, `${what}: flow ep ${ep} dir ${dir} id ${id} ${proto}/${port}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  }
}

test('policy lookup agrees with a naive scan on seeded random entry sets', () => {
  for (const seed of [11, 12, 13, 14, 15]) {
    const r = new Rand(seed);
    const { log, table, writer } = setup({ capacity: 4096, maxEndpoints: 4 });
    const model = new Map<string, PolicyEntry>();
    const n = r.range(20, 400);
    for (let i = 0; i < n; i++) {
      const e = randomEntry(r, 4, i + 1);
      writer.add(e);
      model.set(keyOf(e), e);
    }
    log.commit();
    assert.equal(writer.size, model.size, `seed ${seed}: size got ${writer.size}, want ${model.size}`);
    for (const side of [0, 1]) {
      table.useSide(side);
      checkFlows(r, table, model, 4, 3000, `seed ${seed} side ${side}`);
    }
  }
});

test('policy churn: add, replace, remove, clearEndpoint; both sides agree after each commit', () => {
  for (const seed of [21, 22, 23]) {
    const r = new Rand(seed);
    const { ctl, log, table, writer } = setup({ capacity: 2048, maxEndpoints: 3 });
    const model = new Map<string, PolicyEntry>();
    let published = new Map<string, PolicyEntry>();
    let cookie = 1;
    for (let step = 0; step < 4000; step++) {
      const op = r.int(100);
      if (op < 55 && model.size < 1000) {
        const e = randomEntry(r, 3, cookie++);
        writer.add(e);
        model.set(keyOf(e), e);
      } else if (op < 97) {
        // Remove: half the time an existing key, else a random (probably absent) one.
        const keys = [...model.values()];
        const e = keys.length > 0 && r.bool(0.5) ? r.pick(keys) : randomEntry(r, 3, 0);
        const want = model.delete(keyOf(e));
        const got = writer.remove(e);
        assert.equal(got, want, `seed ${seed} step ${step}: remove got ${got}, want ${want}`);
      } else {
        const ep = r.int(3);
        writer.clearEndpoint(ep);
        for (const [k, e] of model) if (e.ep === ep) model.delete(k);
      }
      if (step % 50 === 49) {
        // Before the commit, readers still see the last published revision.
        const side = ctl.enter(1);
        table.useSide(side);
        checkFlows(r, table, published, 3, 100, `seed ${seed} step ${step} before commit`);
        ctl.leave(1);
        log.commit();
        published = new Map(model);
        assert.equal(writer.size, model.size, `seed ${seed} step ${step}: size got ${writer.size}, want ${model.size}`);
        for (const s of [0, 1]) {
          table.useSide(s);
          checkFlows(r, table, model, 3, 150, `seed ${seed} step ${step} side ${s}`);
        }
      }
    }
    // The writer's listing is the model.
    const listed = new Map<string, PolicyEntry>();
    for (const e of writer.entries()) listed.set(keyOf(e), e);
    assert.equal(listed.size, model.size, `seed ${seed}: listed ${listed.size}, want ${model.size}`);
    for (const [k, e] of model) {
      const l = listed.get(k);
      assert.ok(l !== undefined, `seed ${seed}: ${k} missing from entries()`);
      assert.equal(l.cookie, e.cookie, `seed ${seed}: ${k} cookie got ${l.cookie}, want ${e.cookie}`);
      assert.equal(l.deny, e.deny, `seed ${seed}: ${k} deny got ${l.deny}, want ${e.deny}`);
    }
  }
});

test('replacing an allow with a deny at the same key flips the verdict', () => {
  const { ctl, log, table, writer } = setup();
  const e = entry({ identity: A, proto: TCP, port: 80, prefixLen: 24, cookie: 1 });
  writer.add(e);
  log.commit();
  assert.equal(read(ctl, table, EP, DIR_INGRESS, A, TCP, 80).v, 1);
  writer.add({ ...e, deny: true, cookie: 2 });
  log.commit();
  const got = read(ctl, table, EP, DIR_INGRESS, A, TCP, 80);
  assert.equal(got.v, -1, `verdict got ${got.v}, want -1`);
  assert.equal(got.cookie, 2, `cookie got ${got.cookie}, want 2`);
  assert.equal(writer.size, 1, `size got ${writer.size}, want 1`);
  assert.equal(writer.remove(e), true);
  log.commit();
  assert.equal(read(ctl, table, EP, DIR_INGRESS, A, TCP, 80).v, 0);
});

test('attach from a structured clone shares memory; a new writer rebuilds its counts', () => {
  const { ctl, log, table, writer } = setup();
  writer.add(entry({ identity: A, cookie: 5 }));
  writer.add(entry({ identity: 0, proto: TCP, port: 80, prefixLen: 24, cookie: 6 }));
  log.commit();
  const other = PolicyTable.attach(structuredClone(table.shared));
  let got = read(ctl, other, EP, DIR_INGRESS, A, TCP, 80);
  assert.equal(got.cookie, 6, `attached reader cookie got ${got.cookie}, want 6`);
  // A second writer over the same table must know the /24 length exists, so that removing
  // the only /24 entry clears it from the mask and the L3 entry decides again.
  // (Same log: a PublishControl has exactly one WriteLog.)
  const w2 = new PolicyTableWriter(table, log);
  assert.equal(w2.size, 2, `new writer size got ${w2.size}, want 2`);
  assert.equal(w2.remove(entry({ identity: 0, proto: TCP, port: 80, prefixLen: 24 })), true);
  log.commit();
  got = read(ctl, other, EP, DIR_INGRESS, A, TCP, 80);
  assert.equal(got.cookie, 5, `after remove cookie got ${got.cookie}, want 5`);
  assert.equal(got.match, POLICY_MATCH_L3_ONLY, `after remove match got ${got.match}, want ${POLICY_MATCH_L3_ONLY}`);
});

test('100k entries are added and published; every sampled entry reads back on both sides', (t) => {
  const { log, table, writer } = setup({ capacity: 1 << 18, maxEndpoints: 4096 });
  const N = 100_000;
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    writer.add({
      ep: i % 4096,
      dir: (i >> 12) & 1 ? 1 : 0,
      identity: 256 + (i >> 13),
      proto: TCP,
      port: 1000 + (i % 7),
      prefixLen: 24,
      deny: false,
      cookie: i + 1,
    });
  }
  const t1 = performance.now();
  log.commit();
  const t2 = performance.now();
  t.diagnostic(`100k adds ${(t1 - t0).toFixed(1)} ms, commit ${(t2 - t1).toFixed(1)} ms`);
  assert.equal(writer.size, N, `size got ${writer.size}, want ${N}`);
  for (const side of [0, 1]) {
    table.useSide(side);
    for (let i = 0; i < N; i += 97) {
      const v = table.lookup(i % 4096, (i >> 12) & 1, 256 + (i >> 13), TCP, 1000 + (i % 7));
      assert.equal(v, 1, `side ${side} entry ${i}: verdict got ${v}, want 1`);
      assert.equal(table.outCookie, i + 1, `side ${side} entry ${i}: cookie got ${table.outCookie}, want ${i + 1}`);
    }
  }
});

test('removing every entry leaves every length mask empty on both sides', () => {
  const r = new Rand(41);
  const { log, table, writer } = setup({ capacity: 2048, maxEndpoints: 4 });
  const added: PolicyEntry[] = [];
  for (let i = 0; i < 500; i++) {
    const e = randomEntry(r, 4, i + 1);
    writer.add(e);
    added.push(e);
  }
  log.commit();
  writer.clearEndpoint(2);
  for (const e of added) writer.remove(e);
  log.commit();
  assert.equal(writer.size, 0, `size got ${writer.size}, want 0`);
  for (const side of [0, 1]) {
    const masks = table.shared.masks[side] as Uint32Array;
    const nonzero = masks.findIndex((m) => m !== 0);
    assert.equal(nonzero, -1, `side ${side}: mask word ${nonzero} got ${masks[nonzero]}, want 0`);
  }
});

test('checkRoom counts removals, replacements and changed keys before any write', () => {
  // Capacity 8 holds 7 entries (7/8).
  const { writer, log } = setup({ capacity: 8, maxEndpoints: 4 });
  const e = (ep: number, port: number): PolicyEntry => ({ ep, dir: DIR_INGRESS, identity: 300, proto: 6, port, prefixLen: 24, deny: false, cookie: 2 });
  for (let p = 1; p <= 5; p++) writer.add(e(1, p));
  const cases: { what: string; removed: PolicyEntry[]; added: PolicyEntry[]; full: boolean }[] = [
    { what: 'two new fit (7)', removed: [], added: [e(2, 1), e(2, 2)], full: false },
    { what: 'three new do not (8)', removed: [], added: [e(2, 1), e(2, 2), e(2, 3)], full: true },
    { what: 'replacing present keys costs nothing', removed: [], added: [e(1, 1), e(1, 2), e(1, 3), e(2, 1), e(2, 2)], full: false },
    { what: 'a removal makes room', removed: [e(1, 5)], added: [e(2, 1), e(2, 2), e(2, 3)], full: false },
    { what: 'removing an absent key makes none', removed: [e(3, 9)], added: [e(2, 1), e(2, 2), e(2, 3)], full: true },
    { what: 'a changed key (in both lists) costs nothing', removed: [e(1, 5)], added: [e(1, 5), e(2, 1), e(2, 2)], full: false },
  ];
  for (const c of cases) {
    const pending = log.pending;
    let err: unknown = null;
    try {
      writer.checkRoom(c.removed, c.added);
    } catch (x) {
      err = x;
    }
    assert.equal(err !== null, c.full, `${c.what}: got ${err === null ? 'room' : String(err)}, want ${c.full ? 'ETABLE_FULL' : 'room'}`);
    if (c.full) assert.match((err as Error).message, /^policy table full: the change needs 8 entries, the table holds 7 \(capacity 8, filled to 7\/8\); endpoint 2 gains the most \(3 new entries\)$/, c.what);
    assert.equal(log.pending, pending, `${c.what}: checkRoom wrote ${log.pending - pending} words, want none`);
    assert.equal(writer.size, 5, `${c.what}: size got ${writer.size}, want 5`);
  }
});
