import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stringify } from 'yaml';
import { Rand } from '../helpers/rand.js';
import { IdentityAllocator } from '../../src/control/identity.js';
import { LabelSet } from '../../src/control/labels.js';
import { parsePolicyFile } from '../../src/control/policy/parse.js';
import { PolicyCompiler, compileAll, l4KeysOf, COOKIE_DEFAULT_ALLOW, type PolicyEntry, type RuleInfo, type EndpointEnforcement } from '../../src/control/policy/compile.js';
import { evaluate, type FlowEnd } from './policy-reference.js';
import { DEFAULT_POLICY_CONFIG, type Direction, type Policy, type PolicyConfig } from '../../src/control/policy/types.js';
import { DIR_EGRESS, DIR_INGRESS } from '../../src/proto/direction.js';
import { EntryIndex, IPS, PROTOS, fixture, randomLabels, randomPolicyDoc, randomPort, resolveIp } from './support.js';

const TCP = 6;
const UDP = 17;
const SCTP = 132;
const ICMP = 1;
const ICMP6 = 58;

test('a port range compiles to the fewest aligned blocks (tables/policy.ts portRangeToPrefixes)', () => {
  const got = l4KeysOf({ protocol: 'TCP', port: 8080, endPort: 8090 });
  const want = [[TCP, 8080, 8 + 13], [TCP, 8088, 8 + 15], [TCP, 8090, 8 + 16]];
  assert.deepEqual(got, want, `got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
});

// ---------------------------------------------------------------------------------------
// Scenarios from the fixtures

const ENDPOINTS: Record<string, string[]> = {
  frontend: ['k8s:role=frontend', 'k8s:org=empire'],
  backend: ['k8s:role=backend'],
  myService: ['k8s:app=myService'],
  db: ['k8s:app=db'],
  deathstar: ['k8s:org=empire', 'k8s:class=deathstar'],
  restricted: ['k8s:role=restricted'],
  dev: ['k8s:env=dev'],
  kubeDns: ['k8s:k8s-app=kube-dns'],
  api: ['k8s:tier=api', 'k8s:env=dev'],
  apiProd: ['k8s:tier=api', 'k8s:env=prod'],
  teamA: ['k8s:team=a'],
  quarantined: ['k8s:team=a', 'container:quarantine=yes'],
  attacker: ['k8s:role=attacker'],
  rdb: ['k8s:role=db'],
  na: ['k8s:app=a'],
  nb: ['k8s:app=b', 'k8s:io.kubernetes.pod.namespace=team-b'],
  nb2: ['k8s:app=x', 'k8s:io.kubernetes.pod.namespace=team-b'],
  other: ['k8s:app=x', 'k8s:io.kubernetes.pod.namespace=other'],
  nc: ['k8s:app=c'],
};
const RESERVED_PEERS: Record<string, number> = { host: 1, health: 4, 'kube-apiserver': 7 };

interface World {
  alloc: IdentityAllocator;
  policies: Policy[];
  compiler: PolicyCompiler;
  index: EntryIndex;
  epIndex: Map<string, number>;
  end(name: string): FlowEnd;
}

function buildWorld(policies: Policy[], config: PolicyConfig = DEFAULT_POLICY_CONFIG): World {
  const alloc = new IdentityAllocator();
  const epIndex = new Map<string, number>();
  const eps = Object.entries(ENDPOINTS).map(([name, labels], i) => {
    epIndex.set(name, i);
    return { index: i, identity: alloc.allocate(labels).id };
  });
  const { compiler, entries, enforcement } = compileAll(policies, eps, alloc, config);
  const index = new EntryIndex(entries, enforcement);
  const end = (name: string): FlowEnd => {
    const ep = epIndex.get(name);
    if (ep !== undefined) {
      const id = eps[ep]!.identity;
      return { identity: id, labels: alloc.get(id)!.labels };
    }
    const rid = RESERVED_PEERS[name];
    if (rid !== undefined) return { identity: rid, labels: alloc.get(rid)!.labels };
    const id = resolveIp(compiler.ipcache(), name);
    return { identity: id, labels: alloc.get(id)!.labels, ip: name };
  };
  return { alloc, policies, compiler, index, epIndex, end };
}

/** Both halves of a flow: egress at the source endpoint, ingress at the destination endpoint. */
function flowVerdicts(w: World, src: string, dst: string, proto: number, port: number, config: PolicyConfig) {
  const s = w.end(src);
  const d = w.end(dst);
  const halves: { ep: number; dir: Direction; peer: number }[] = [];
  const se = w.epIndex.get(src);
  const de = w.epIndex.get(dst);
  if (se !== undefined) halves.push({ ep: se, dir: 'egress', peer: d.identity });
  if (de !== undefined) halves.push({ ep: de, dir: 'ingress', peer: s.identity });
  let compiled = true;
  let lpm = true;
  let reference = true;
  for (const h of halves) {
    compiled &&= w.index.naive(h.ep, h.dir, h.peer, proto, port).allowed;
    lpm &&= w.index.lpm(h.ep, h.dir, h.peer, proto, port).allowed;
    reference &&= evaluate(w.policies, config, s, d, h.dir, proto, port).allowed;
  }
  return { compiled, lpm, reference };
}

type Flow = [src: string, dst: string, proto: number, port: number, allowed: boolean];

const SCENARIOS: { fixture: string; flows: Flow[] }[] = [
  {
    fixture: 'l3-from-endpoints.yaml',
    flows: [
      ['frontend', 'backend', TCP, 80, true],
      ['frontend', 'backend', UDP, 9999, true],
      ['db', 'backend', TCP, 80, false],
      ['backend', 'db', TCP, 80, true],
      ['8.8.8.8', 'backend', TCP, 80, false],
      ['host', 'backend', TCP, 80, false],
    ],
  },
  {
    fixture: 'l4-to-ports.yaml',
    flows: [
      ['db', 'myService', TCP, 80, true],
      ['db', 'myService', TCP, 81, false],
      ['db', 'myService', UDP, 80, false],
      ['8.8.8.8', 'myService', TCP, 80, true],
      ['db', 'myService', ICMP, 8, false],
    ],
  },
  {
    fixture: 'l3-l4.yaml',
    flows: [
      ['frontend', 'deathstar', TCP, 80, true],
      ['frontend', 'deathstar', TCP, 81, false],
      ['db', 'deathstar', TCP, 80, false],
    ],
  },
  {
    fixture: 'entities.json',
    flows: [
      ['host', 'dev', TCP, 1, true],
      ['db', 'dev', TCP, 8080, true],
      ['health', 'dev', TCP, 8080, true],
      ['db', 'dev', TCP, 8081, false],
      ['8.8.8.8', 'dev', TCP, 8080, false],
      ['dev', '8.8.8.8', UDP, 53, true],
      ['dev', 'db', TCP, 80, false],
    ],
  },
  {
    fixture: 'cidr-except.yaml',
    flows: [
      ['myService', '20.1.1.1', TCP, 80, true],
      ['myService', '20.1.1.2', TCP, 80, false],
      ['myService', '10.1.1.1', UDP, 53, true],
      ['myService', '10.96.0.1', TCP, 80, false],
      ['myService', '10.111.255.1', TCP, 80, false],
      ['myService', '10.112.0.1', TCP, 80, true],
      ['myService', '2001:db8::1', TCP, 80, true],
      ['myService', '2001:db8:1::1', TCP, 80, false],
      ['myService', 'db', TCP, 80, false],
    ],
  },
  {
    fixture: 'deny.yaml',
    flows: [
      ['8.8.8.8', 'backend', TCP, 80, false],
      ['host', 'backend', TCP, 80, true],
      ['db', 'backend', TCP, 23, false], // db's egress: deny-telnet
      ['db', 'frontend', TCP, 80, false], // egressDeny alone turns on egress default deny
      ['8.8.8.8', 'db', TCP, 80, true],
    ],
  },
  {
    fixture: 'icmp.yaml',
    flows: [
      ['myService', 'db', ICMP, 8, true],
      ['myService', 'db', ICMP, 0, false],
      ['myService', 'db', TCP, 80, false],
      ['myService', '2001:db8::1', ICMP6, 128, true],
      ['myService', '2001:db8::1', ICMP6, 129, false],
      ['frontend', 'myService', ICMP, 8, true],
      ['frontend', 'myService', TCP, 8, false],
      ['db', 'myService', ICMP, 8, false],
    ],
  },
  {
    fixture: 'port-range.yaml',
    flows: [
      ['myService', 'db', TCP, 8080, true],
      ['myService', 'db', TCP, 8085, true],
      ['myService', 'db', TCP, 8090, true],
      ['myService', 'db', TCP, 8091, false],
      ['myService', 'db', TCP, 8079, false],
      ['myService', 'db', UDP, 8080, false],
    ],
  },
  {
    fixture: 'any-protocol.yaml',
    flows: [
      ['myService', 'kubeDns', UDP, 53, true],
      ['myService', 'kubeDns', TCP, 53, true],
      ['myService', 'kubeDns', SCTP, 53, true],
      ['myService', 'kubeDns', TCP, 54, false],
      ['myService', 'kubeDns', ICMP, 8, false],
    ],
  },
  {
    fixture: 'match-expressions.yaml',
    flows: [
      ['teamA', 'api', TCP, 80, true],
      ['quarantined', 'api', TCP, 80, false],
      ['db', 'api', TCP, 80, false],
      ['db', 'apiProd', TCP, 80, true],
    ],
  },
  {
    fixture: 'default-deny-off.yaml',
    flows: [
      ['attacker', 'myService', TCP, 80, false],
      ['db', 'myService', TCP, 80, true],
      ['myService', 'db', TCP, 80, true],
      ['myService', 'frontend', TCP, 80, true],
    ],
  },
  {
    fixture: 'default-deny-all.yaml',
    flows: [
      ['frontend', 'restricted', TCP, 80, false],
      ['restricted', 'frontend', TCP, 80, false],
      ['host', 'restricted', ICMP, 8, false],
    ],
  },
  {
    fixture: 'ccnp.yaml',
    flows: [
      ['frontend', 'kubeDns', UDP, 53, false], // kube-dns' ingress: only host and health
      ['host', 'db', TCP, 80, true],
      ['frontend', 'db', TCP, 80, false],
      ['frontend', '8.8.8.8', UDP, 53, false],
    ],
  },
  {
    fixture: 'k8s-networkpolicy.yaml',
    flows: [
      ['frontend', 'rdb', TCP, 6379, true],
      ['172.17.0.5', 'rdb', TCP, 6379, true],
      ['172.17.1.5', 'rdb', TCP, 6379, false],
      ['backend', 'rdb', TCP, 6379, false],
      ['frontend', 'rdb', TCP, 6380, false],
      ['rdb', '10.0.0.5', TCP, 32000, true],
      ['rdb', '10.0.0.5', TCP, 32768, true],
      ['rdb', '10.0.0.5', TCP, 32769, false],
      ['rdb', 'frontend', TCP, 80, false],
    ],
  },
  {
    fixture: 'list.yaml',
    flows: [
      ['nb', 'na', TCP, 80, false], // nb's egress only reaches team-b
      ['nb', 'nb2', TCP, 80, true],
      ['nb', 'other', TCP, 80, false],
      ['other', 'na', TCP, 80, false],
      ['nc', 'kube-apiserver', TCP, 443, true],
      ['nc', '8.8.8.8', TCP, 443, false],
    ],
  },
];

test('fixture scenarios: compiled entries, LPM lookup and reference agree with the expected verdicts', () => {
  for (const sc of SCENARIOS) {
    const w = buildWorld(parsePolicyFile(fixture(sc.fixture), sc.fixture));
    for (const [src, dst, proto, port, want] of sc.flows) {
      const got = flowVerdicts(w, src, dst, proto, port, DEFAULT_POLICY_CONFIG);
      const what = `${sc.fixture}: ${src} -> ${dst} proto ${proto} port ${port}`;
      assert.equal(got.reference, want, `${what}: reference got ${got.reference}, want ${want}`);
      assert.equal(got.compiled, want, `${what}: compiled got ${got.compiled}, want ${want}`);
      assert.equal(got.lpm, want, `${what}: LPM lookup got ${got.lpm}, want ${want}`);
    }
  }
});

test('compiled form: ANY expands, L4-only is identity 0, {} excludes world, except gets its own identity', () => {
  const w = buildWorld([...parsePolicyFile(fixture('any-protocol.yaml'), 'a'), ...parsePolicyFile(fixture('l4-to-ports.yaml'), 'b'), ...parsePolicyFile(fixture('list.yaml'), 'c'), ...parsePolicyFile(fixture('cidr-except.yaml'), 'd')]);
  const entries = w.compiler.entries();
  const kubeDnsId = w.end('kubeDns').identity;
  const dns = entries.filter((e) => e.ep === w.epIndex.get('myService') && e.dir === DIR_EGRESS && e.identity === kubeDnsId);
  assert.deepEqual(dns.map((e) => [e.proto, e.port, e.prefixLen]).sort(), [
    [SCTP, 53, 24],
    [TCP, 53, 24],
    [UDP, 53, 24],
  ].sort());
  const l4only = entries.filter((e) => e.ep === w.epIndex.get('myService') && e.dir === DIR_INGRESS);
  assert.deepEqual(l4only.map((e) => [e.identity, e.proto, e.port, e.prefixLen]), [[0, TCP, 80, 24]]);
  const nb = entries.filter((e) => e.ep === w.epIndex.get('nb') && e.dir === DIR_EGRESS);
  assert.ok(nb.length > 0 && nb.every((e) => e.identity >= 256 && e.identity < 65536), `toEndpoints [{}] entries: got identities ${nb.map((e) => e.identity)}, want workloads only`);
  const ipc = w.compiler.ipcache();
  const prefixes = ipc.map((e) => e.prefix.text).sort();
  assert.deepEqual(prefixes, ['10.0.0.0/8', '10.96.0.0/12', '20.1.1.1/32', '2001:db8:1::/48', '2001:db8::/32'].sort());
  const exceptId = ipc.find((e) => e.prefix.text === '10.96.0.0/12')!.identity;
  const allowedIds = new Set(entries.filter((e) => e.ep === w.epIndex.get('myService') && e.dir === DIR_EGRESS && !e.deny).map((e) => e.identity));
  assert.ok(!allowedIds.has(exceptId), 'the except prefix identity is not allowed');
  assert.ok(allowedIds.has(ipc.find((e) => e.prefix.text === '10.0.0.0/8')!.identity), 'the CIDR identity is allowed');
  // Every cookie names a rule.
  const rules = new Map(w.compiler.rules().map((r) => [r.cookie, r]));
  for (const e of entries) assert.ok(rules.has(e.cookie), `entry cookie ${e.cookie} has no rule`);
  const dnsRule = rules.get(dns[0]!.cookie)!;
  assert.equal(dnsRule.policyName, 'dns-any');
  assert.equal(dnsRule.section, 'egress');
  w.compiler.dispose();
  assert.equal(w.alloc.list().filter((i) => i.kind === 'cidr').length, 0, 'dispose releases CIDR identities');
});

test('enforcement modes and enableDefaultDeny', () => {
  const pols = parsePolicyFile(fixture('default-deny-off.yaml'), 'x');
  const never = buildWorld(pols, { enforcement: 'never', audit: false });
  assert.equal(never.compiler.entries().length, 0);
  assert.ok(never.compiler.enforcement().every((e) => !e.ingress && !e.egress), 'never: nothing enforced');
  const always = buildWorld([], { enforcement: 'always', audit: true });
  assert.equal(always.compiler.entries().length, 0);
  assert.ok(always.compiler.enforcement().every((e) => e.ingress && e.egress && e.audit), 'always: everything enforced');
  const def = buildWorld(pols);
  const ms = def.epIndex.get('myService')!;
  const enf = def.compiler.enforcement().find((e) => e.ep === ms)!;
  assert.deepEqual([enf.ingress, enf.egress], [true, true]);
  const allowAll = def.compiler.entries().filter((e) => e.ep === ms && e.identity === 0 && e.prefixLen === 0);
  assert.deepEqual(allowAll.map((e) => [e.dir, e.cookie, e.deny]).sort(), [
    [DIR_INGRESS, COOKIE_DEFAULT_ALLOW, false],
    [DIR_EGRESS, COOKIE_DEFAULT_ALLOW, false],
  ]);
  const others = def.compiler.enforcement().filter((e) => e.ep !== ms);
  assert.ok(others.every((e) => !e.ingress && !e.egress), 'unselected endpoints are not enforced');
});

// ---------------------------------------------------------------------------------------
// Random policies: compiled lookup == reference

function policiesFrom(r: Rand, n: number, prefix: string): Policy[] {
  const docs = [];
  for (let i = 0; i < n; i++) docs.push(randomPolicyDoc(r, `${prefix}${i}`));
  const text = r.bool() ? docs.map((d) => stringify(d)).join('---\n') : JSON.stringify(docs);
  return parsePolicyFile(text, 'random');
}

function randomConfig(r: Rand): PolicyConfig {
  return { enforcement: r.pick(['default', 'default', 'default', 'always', 'never'] as const), audit: r.bool(0.2) };
}

test('random policies: compiled entries agree with the reference evaluator (seeded)', () => {
  let flows = 0;
  let allowed = 0;
  let denied = 0;
  for (let seed = 1; seed <= 60; seed++) {
    const r = new Rand(seed);
    const alloc = new IdentityAllocator();
    const labels: string[][] = [];
    for (let i = 0; i < 10; i++) labels.push(randomLabels(r));
    const eps = labels.map((l, i) => ({ index: i, identity: alloc.allocate(l).id }));
    const policies = policiesFrom(r, r.range(1, 5), 'p');
    const config = randomConfig(r);
    const { entries, enforcement, ipcache } = compileAll(policies, eps, alloc, config);
    const idx = new EntryIndex(entries, enforcement);
    const ends: (FlowEnd & { ep?: number })[] = eps.map((e) => ({ identity: e.identity, labels: alloc.get(e.identity)!.labels, ep: e.index }));
    for (const ip of IPS) {
      const id = resolveIp(ipcache, ip);
      ends.push({ identity: id, labels: alloc.get(id)!.labels, ip });
    }
    for (const rid of [1, 3, 4, 5, 6, 7, 8]) ends.push({ identity: rid, labels: alloc.get(rid)!.labels });
    for (let f = 0; f < 400; f++) {
      const subj = r.pick(ends.slice(0, eps.length));
      const peer = r.pick(ends);
      const dir: Direction = r.bool() ? 'ingress' : 'egress';
      const proto = r.pick(PROTOS);
      const port = randomPort(r, proto);
      const [src, dst] = dir === 'egress' ? [subj, peer] : [peer, subj];
      const want = evaluate(policies, config, src, dst, dir, proto, port);
      const got = idx.naive(subj.ep!, dir, peer.identity, proto, port);
      const what = `seed ${seed}: ep ${subj.ep} ${dir} peer ${peer.identity}${peer.ip ? ` (${peer.ip})` : ''} proto ${proto} port ${port}`;
      assert.equal(idx.enforced(subj.ep!, dir), want.enforced, `${what}: enforced got ${idx.enforced(subj.ep!, dir)}, want ${want.enforced}`);
      assert.equal(got.allowed, want.allowed, `${what}: allowed got ${got.allowed}, want ${want.allowed}`);
      const lpm = idx.lpm(subj.ep!, dir, peer.identity, proto, port);
      assert.equal(lpm.allowed, want.allowed, `${what}: LPM allowed got ${lpm.allowed}, want ${want.allowed}`);
      flows++;
      if (want.allowed && want.enforced) allowed++;
      if (!want.allowed) denied++;
    }
  }
  // The generator must exercise both outcomes, or the comparison says little.
  assert.ok(allowed > flows / 20, `enforced-and-allowed flows: got ${allowed} of ${flows}, want more than 5%`);
  assert.ok(denied > flows / 20, `denied flows: got ${denied} of ${flows}, want more than 5%`);
});

// ---------------------------------------------------------------------------------------
// Incremental == full recompute

function coord(rules: Map<number, RuleInfo>, cookie: number): string {
  const r = rules.get(cookie);
  if (r === undefined) return `missing-${cookie}`;
  return `${r.kind}/${r.namespace}/${r.policyName}#${r.ruleIndex}/${r.section}/${r.elementIndex}`;
}

function normalised(entries: readonly PolicyEntry[], rules: readonly RuleInfo[]): string[] {
  const m = new Map(rules.map((r) => [r.cookie, r]));
  return entries.map((e) => `${e.ep}|${e.dir}|${e.identity}|${e.proto}|${e.port}|${e.prefixLen}|${e.deny}|${coord(m, e.cookie)}`).sort();
}

function entryKey(e: PolicyEntry): string {
  return `${e.ep}|${e.dir}|${e.identity}|${e.proto}|${e.port}|${e.prefixLen}`;
}

test('incremental changes give the same entries as a full recompute (seeded)', () => {
  for (let seed = 100; seed < 125; seed++) {
    const r = new Rand(seed);
    const alloc = new IdentityAllocator();
    let config = randomConfig(r);
    const c = new PolicyCompiler(alloc, config);
    const table = new Map<string, PolicyEntry>();
    const enf = new Map<number, EndpointEnforcement>();
    const ruleTable = new Map<number, RuleInfo>();
    const ipc = new Map<string, number>();
    const loaded = new Map<string, Policy>();
    const eps = new Map<number, number>(); // ep -> identity
    const extra: number[] = []; // identities allocated outside endpoints
    const apply = (d: ReturnType<PolicyCompiler['sync']>, what: string): void => {
      const any = d.added.length + d.removed.length + d.enforcement.length + d.ipcache.added.length + d.ipcache.removed.length + d.rules.added.length + d.rules.removed.length > 0;
      assert.equal(d.changed, any, `${what}: got changed ${d.changed}, want ${any}`);
      for (const e of d.removed) {
        const k = entryKey(e);
        assert.ok(table.has(k), `seed ${seed} ${what}: removed entry ${k} was not in the table`);
        table.delete(k);
      }
      for (const e of d.added) table.set(entryKey(e), e);
      for (const x of d.enforcement) enf.set(x.ep, x);
      for (const x of d.ipcache.removed) ipc.delete(x.prefix.text);
      for (const x of d.ipcache.added) ipc.set(x.prefix.text, x.identity);
      for (const k of d.rules.removed) ruleTable.delete(k);
      for (const x of d.rules.added) ruleTable.set(x.cookie, x);
    };
    apply(c.sync(), 'start');
    for (let step = 0; step < 60; step++) {
      const op = r.int(10);
      let what = '';
      if (op <= 2) {
        const p = policiesFrom(r, 1, `q${r.int(5)}-`)[0]!;
        what = `upsert ${p.key}`;
        loaded.set(p.key, p);
        apply(c.upsertPolicy(p), what);
      } else if (op === 3 && loaded.size > 0) {
        const k = r.pick([...loaded.keys()]);
        what = `delete ${k}`;
        loaded.delete(k);
        apply(c.deletePolicy(k), what);
      } else if (op <= 5) {
        const ep = r.int(8);
        const old = eps.get(ep);
        const id = alloc.allocate(randomLabels(r)).id;
        what = `upsert endpoint ${ep} identity ${id}`;
        eps.set(ep, id);
        apply(c.upsertEndpoint({ index: ep, identity: id }), what);
        // Identity changes made outside the compiler are picked up by the next call (sync).
        if (old !== undefined && alloc.release(old)) apply(c.sync(), `${what}, release ${old}`);
      } else if (op === 6 && eps.size > 0) {
        const ep = r.pick([...eps.keys()]);
        what = `delete endpoint ${ep}`;
        apply(c.deleteEndpoint(ep), what);
        enf.delete(ep);
        if (alloc.release(eps.get(ep)!)) apply(c.sync(), `${what}, release identity`);
        eps.delete(ep);
      } else if (op === 7) {
        if (extra.length > 0 && r.bool()) {
          alloc.release(extra.pop()!);
          what = 'release remote identity';
        } else {
          extra.push(alloc.allocate(randomLabels(r)).id);
          what = 'allocate remote identity';
        }
        apply(c.sync(), what);
      } else if (op === 8) {
        config = randomConfig(r);
        what = `config ${JSON.stringify(config)}`;
        apply(c.setConfig(config), what);
      } else {
        what = 'sync';
        apply(c.sync(), what);
      }
      const cur = c.entries();
      const tableSorted = [...table.values()];
      assert.deepEqual(normalised(tableSorted, [...ruleTable.values()]), normalised(cur, c.rules()), `seed ${seed} step ${step} (${what}): diffs applied != entries()`);
      assert.deepEqual([...enf.values()].sort((a, b) => a.ep - b.ep), c.enforcement(), `seed ${seed} step ${step} (${what}): enforcement diffs`);
      assert.deepEqual([...ipc.entries()].sort(), c.ipcache().map((e) => [e.prefix.text, e.identity]).sort(), `seed ${seed} step ${step} (${what}): ipcache diffs`);
      if (step % 10 === 9 || step === 59) {
        const full = compileAll([...loaded.values()], [...eps].map(([index, identity]) => ({ index, identity })), alloc, config);
        assert.deepEqual(normalised(cur, c.rules()), normalised(full.entries, full.rules), `seed ${seed} step ${step} (${what}): incremental != full recompute`);
        assert.deepEqual(c.enforcement(), full.enforcement, `seed ${seed} step ${step}: enforcement incremental != full`);
        assert.deepEqual(c.ipcache(), full.ipcache, `seed ${seed} step ${step}: ipcache incremental != full`);
        full.compiler.dispose();
      }
    }
  }
});

test('compiler errors carry codes', () => {
  const alloc = new IdentityAllocator();
  const c = new PolicyCompiler(alloc);
  assert.throws(() => c.deletePolicy('CiliumNetworkPolicy//nope'), { code: 'EPOLICY_NOT_FOUND' });
  assert.throws(() => c.deleteEndpoint(3), { code: 'EENDPOINT_NOT_FOUND' });
  assert.throws(() => c.upsertEndpoint({ index: 1, identity: 999 }), { code: 'EIDENTITY_NOT_FOUND' });
  assert.throws(() => c.setConfig({ enforcement: 'sometimes' as never, audit: false }), { code: 'ECONFIG_INVALID' });
  const id = alloc.allocate(LabelSet.from(['k8s:app=a'])).id;
  const d = c.upsertEndpoint({ index: 1, identity: id });
  assert.deepEqual(d.enforcement, [{ ep: 1, ingress: false, egress: false, audit: false }]);
});
