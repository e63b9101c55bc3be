/**
 * The agent end to end without devices: endpoints, identities and CiliumNetworkPolicy go in
 * through the API methods, and the published tables (read the way a worker reads them) must
 * give Cilium's verdicts. Ports are made by a small in-memory PortManager (the layer below
 * the agent; the real one is covered by test/e2e).
 */
import { traceOf, upsertOf } from './agent-support.js';
import { checkConfigPatch } from '../../src/api/validate.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from '../../src/control/agent.js';
import { TableSet, TableSetWriter, M_POLICY_REVISION } from '../../src/tables/tableset.js';
import { tryParsePrefix, type Prefix } from '../../src/control/cidr.js';
import { EP_ENFORCE_INGRESS, EP_ENFORCE_EGRESS } from '../../src/tables/endpoints.js';
import { DIR_EGRESS, DIR_INGRESS } from '../../src/proto/direction.js';
import { isTunswitchError } from '../../src/control/errors.js';
import { MemPorts } from '../helpers/mem-ports.js';




function makeAgent(stateDir?: string): { agent: Agent; ports: MemPorts; tables: TableSet } {
  const ts = TableSet.create({ ipcache: { tbl8Groups: 16, leaves: 1024, v6Capacity: 256 }, policyCapacity: 1 << 12, maxEndpoints: 64 });
  const ports = new MemPorts();
  const opts: ConstructorParameters<typeof Agent>[0] = {
    name: 't',
    pool4: tryParsePrefix('10.42.0.0/24', false) as Prefix,
    pool6: tryParsePrefix('fd00:42::/64', false) as Prefix,
    maxEndpoints: 64,
    workers: 1,
    offload: false,
    config: { audit: false, enforcement: 'default' },
    version: 'test',
  };
  if (stateDir) opts.stateDir = stateDir;
  const agent = new Agent(opts, new TableSetWriter(ts), ports, null);
  return { agent, ports, tables: ts };
}

/** Reads the published tables as a worker would. */
function verdict(ts: TableSet, ep: number, dir: number, identity: number, proto: number, port: number): number {
  const side = ts.control.enter(7);
  ts.useSide(side);
  const v = ts.policy.lookup(ep, dir, identity, proto, port);
  ts.control.leave(7);
  return v;
}
function epFlags(ts: TableSet, ep: number): number {
  const side = ts.control.enter(7);
  ts.useSide(side);
  const f = ts.endpoints.flags(ep);
  ts.control.leave(7);
  return f;
}

const ALLOW_WEB = `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: allow-web }
spec:
  endpointSelector: { matchLabels: { app: db } }
  ingress:
    - fromEndpoints: [ { matchLabels: { app: web } } ]
      toPorts: [ { ports: [ { port: "5432", protocol: TCP } ] } ]
`;

test('endpoints get pool addresses, stable identities and ipcache entries', async () => {
  const { agent, ports } = makeAgent();
  const web = await agent.addEndpoint({ name: 'web', labels: { app: 'web' }, netns: 'x-web' });
  const db = await agent.addEndpoint({ name: 'db', labels: ['app=db'], netns: 'x-db', ipv4: '10.42.0.50' });
  const web2 = await agent.addEndpoint({ name: 'web2', labels: { app: 'web' }, netns: 'x-web2' });
  assert.equal(web.ipv4, '10.42.0.2', `web ipv4 got ${web.ipv4}, want 10.42.0.2`);
  assert.equal(db.ipv4, '10.42.0.50');
  assert.ok(web.identity >= 256, `identity ${web.identity} must be >= 256`);
  assert.equal(web2.identity, web.identity, 'same labels must give the same identity');
  assert.notEqual(db.identity, web.identity);
  // Every endpoint is in a namespace (default here), and gets the labels Cilium derives from it.
  assert.deepEqual(web.labels, ['k8s:app=web', 'k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=default', 'k8s:io.kubernetes.pod.namespace=default']);
  assert.equal(ports.attached.size, 3);
  const hit = agent.getIpcache('10.42.0.50');
  assert.equal(hit?.identity, db.identity, `ipcache 10.42.0.50 got ${JSON.stringify(hit)}, want identity ${db.identity}`);
  await agent.deleteEndpoint('web2');
  assert.equal(ports.attached.size, 2);
  assert.equal(agent.getIpcache('10.42.0.4'), null);
  assert.equal(agent.listIdentities().find((i) => i.id === web.identity)?.refs, 1);
});

test('a CiliumNetworkPolicy import compiles into the published tables (L3+L4 allow, default deny)', async () => {
  const { agent, tables: ts } = makeAgent();
  const web = await agent.addEndpoint({ name: 'web', labels: { app: 'web' }, netns: 'n1' });
  const db = await agent.addEndpoint({ name: 'db', labels: { app: 'db' }, netns: 'n2' });
  const other = await agent.addEndpoint({ name: 'other', labels: { app: 'other' }, netns: 'n3' });
  assert.equal(epFlags(ts, db.id) & EP_ENFORCE_INGRESS, 0, 'no policy: ingress not enforced');
  const r = agent.importPolicyText(ALLOW_WEB, 'web.yaml');
  assert.deepEqual(r.policies, ['allow-web']);
  assert.ok((epFlags(ts, db.id) & EP_ENFORCE_INGRESS) !== 0, 'db ingress must be enforced after the import');
  assert.equal(epFlags(ts, db.id) & EP_ENFORCE_EGRESS, 0, 'db egress stays open (no egress section)');
  assert.equal(epFlags(ts, web.id) & EP_ENFORCE_INGRESS, 0, 'web is not selected');
  const rows: [string, number, number, number, number][] = [
    ['web -> db:5432/TCP', web.identity, 6, 5432, 1],
    ['web -> db:5433/TCP', web.identity, 6, 5433, 0],
    ['web -> db:5432/UDP', web.identity, 17, 5432, 0],
    ['other -> db:5432/TCP', other.identity, 6, 5432, 0],
  ];
  for (const [name, id, proto, port, want] of rows) {
    const got = verdict(ts, db.id, DIR_INGRESS, id, proto, port);
    assert.equal(got, want, `${name}: got ${got}, want ${want}`);
  }
  const meta = ts.meta[M_POLICY_REVISION];
  assert.ok((meta ?? 0) > 0, 'policy revision published');
  // Deleting the policy lifts enforcement.
  agent.deletePolicy('allow-web');
  assert.equal(epFlags(ts, db.id) & EP_ENFORCE_INGRESS, 0, 'enforcement gone with the policy');
  assert.equal(verdict(ts, db.id, DIR_INGRESS, web.identity, 6, 5432), 0);
});

test('an endpoint added after the policy is selected, and its peers resolve', async () => {
  const { agent, tables: ts } = makeAgent();
  agent.importPolicyText(ALLOW_WEB, 'web.yaml');
  const db = await agent.addEndpoint({ name: 'db', labels: { app: 'db' }, netns: 'n2' });
  const web = await agent.addEndpoint({ name: 'web', labels: { app: 'web' }, netns: 'n1' });
  assert.equal(verdict(ts, db.id, DIR_INGRESS, web.identity, 6, 5432), 1, 'web -> db:5432 allowed');
  assert.equal(verdict(ts, web.id, DIR_EGRESS, db.identity, 6, 5432), 0, 'web egress has no entries (not enforced)');
});

test('a bad policy file changes nothing and names the field', async () => {
  const { agent } = makeAgent();
  agent.importPolicyText(ALLOW_WEB, 'web.yaml');
  const bad = ALLOW_WEB.replace('"5432"', '"70000"').replace('allow-web', 'allow-web-2');
  assert.throws(
    () => agent.importPolicyText(bad, 'bad.yaml'),
    (e: unknown) => isTunswitchError(e, 'EPOLICY_INVALID') && /bad\.yaml/.test((e as Error).message) && /port/.test((e as Error).message) && /70000/.test((e as Error).message),
  );
  assert.deepEqual(agent.listPolicies().map((p) => p.name), ['allow-web']);
});

test('bad endpoint requests are refused with the field named', async () => {
  const { agent } = makeAgent();
  const rows: [string, Parameters<Agent['addEndpoint']>[0], RegExp][] = [
    ['bad name', { name: 'Web!', netns: 'a' }, /body\.name/],
    ['no namespace', { name: 'w' }, /needs netns or pid/],
    ['bad ipv4', { name: 'w', netns: 'a', ipv4: '10.42.0.300' }, /body\.ipv4/],
    ['ipv4 outside the pool', { name: 'w', netns: 'a', ipv4: '10.1.0.5' }, /outside the pool/],
    ['bad label list', { name: 'w', netns: 'a', labels: ['novalue'] }, /labels\[0\]/],
    ['bad pid', { name: 'w', pid: -1 }, /body\.pid/],
  ];
  for (const [name, req, re] of rows) {
    await assert.rejects(agent.addEndpoint(req), (e: unknown) => re.test((e as Error).message), name);
  }
  assert.equal(agent.listEndpoints().length, 0, 'nothing was added');
  await agent.addEndpoint({ name: 'w', netns: 'a', ipv4: '10.42.0.9' });
  await assert.rejects(agent.addEndpoint({ name: 'w', netns: 'b' }), /already exists/);
  await assert.rejects(agent.addEndpoint({ name: 'v', netns: 'b', ipv4: '10.42.0.9' }), /already in use/);
});

test('config: audit and enforcement modes reach the tables; bad keys are refused', async () => {
  const { agent, tables: ts } = makeAgent();
  const a = await agent.addEndpoint({ name: 'a', labels: { app: 'a' }, netns: 'n' });
  agent.setConfig({ enforcement: 'always' });
  assert.ok((epFlags(ts, a.id) & (EP_ENFORCE_INGRESS | EP_ENFORCE_EGRESS)) === (EP_ENFORCE_INGRESS | EP_ENFORCE_EGRESS), 'always: both directions enforced');
  agent.setConfig({ enforcement: 'never' });
  assert.equal(epFlags(ts, a.id) & (EP_ENFORCE_INGRESS | EP_ENFORCE_EGRESS), 0, 'never: nothing enforced');
  assert.throws(() => agent.setConfig({ bogus: 1 } as never), /body\.bogus: unknown setting/);
  // Values are checked where every request is (src/api/validate.ts).
  assert.throws(() => agent.setConfig(checkConfigPatch({ enforcement: 'sometimes' })), /body\.enforcement/);
});

test('a restart from the state directory restores endpoints, identity numbers and policies', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tunswitch-state-'));
  try {
    const first = makeAgent(dir);
    // Allocate an unrelated identity first so numbers are not simply "the first ones".
    await first.agent.addEndpoint({ name: 'tmp', labels: { app: 'tmp' }, netns: 'n0' });
    const db = await first.agent.addEndpoint({ name: 'db', labels: { app: 'db' }, netns: 'n2' });
    const web = await first.agent.addEndpoint({ name: 'web', labels: { app: 'web' }, netns: 'n1' });
    await first.agent.deleteEndpoint('tmp');
    first.agent.importPolicyText(ALLOW_WEB, 'web.yaml');
    first.agent.setConfig({ audit: true });

    const second = makeAgent(dir);
    const eps = second.agent.restore();
    assert.deepEqual(eps.map((e) => e.name).sort(), ['db', 'web']);
    for (const e of eps) {
      const req: Parameters<Agent['addEndpoint']>[0] = { name: e.name, labels: e.labels, netns: e.netns as string };
      if (e.ipv4) req.ipv4 = e.ipv4;
      await second.agent.addEndpoint(req);
    }
    const db2 = second.agent.getEndpoint('db');
    const web2 = second.agent.getEndpoint('web');
    assert.equal(db2.identity, db.identity, `db identity got ${db2.identity}, want ${db.identity}`);
    assert.equal(web2.identity, web.identity, `web identity got ${web2.identity}, want ${web.identity}`);
    assert.equal(db2.ipv4, db.ipv4);
    assert.deepEqual(second.agent.listPolicies().map((p) => p.name), ['allow-web']);
    assert.equal(second.agent.getConfig().audit, true);
    assert.equal(verdict(second.tables, db2.id, DIR_INGRESS, web2.identity, 6, 5432), 1, 'policy effective after restore');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});



test('policy trace reads the published tables: allowed, denied by default-deny, and the rule that decided', async () => {
  const { agent } = makeAgent();
  await agent.addEndpoint({ name: 'web', labels: { app: 'web' }, netns: 'n1' });
  await agent.addEndpoint({ name: 'db', labels: { app: 'db' }, netns: 'n2' });
  agent.importPolicyText(ALLOW_WEB, 'web.yaml');
  const ok = traceOf(agent, { src: { endpoint: 'web' }, dst: { endpoint: 'db' }, dport: '5432/TCP' });
  assert.equal(ok.verdict, 'ALLOWED', `got ${JSON.stringify(ok)}`);
  const ing = ok.steps.find((s) => s.direction === 'INGRESS');
  assert.equal(ing?.result, 'ALLOWED');
  assert.equal(ing?.match, 'L3-L4');
  assert.equal((ing?.rule as { name: string } | null)?.name, 'allow-web');
  const no = traceOf(agent, { src: { endpoint: 'web' }, dst: { endpoint: 'db' }, dport: '22/TCP' });
  assert.equal(no.verdict, 'DENIED');
  assert.equal(no.drop_reason, 133, `drop reason got ${no.drop_reason}, want 133`);
  const world = traceOf(agent, { src: { ip: '10.42.0.200' }, dst: { endpoint: 'db' }, dport: '5432/TCP' });
  assert.equal(world.source.identity, 2, 'unknown address is world');
  assert.ok(world.notes.some((n) => /not in the ipcache/.test(n)));
  assert.equal(world.verdict, 'DENIED');
  assert.throws(() => traceOf(agent, { src: { endpoint: 'web' }, dst: { endpoint: 'db' }, dport: '80/XTP' }), /body\.dport: protocol "XTP"/);
  assert.throws(() => traceOf(agent, { src: {}, dst: { endpoint: 'db' }, dport: '80' }), /body\.src: give exactly one/);
});

test('ipcache entries from the API: bulk add, longest match, bad entries named', async () => {
  const { agent } = makeAgent();
  const entries = [];
  for (let i = 0; i < 900; i++) entries.push({ cidr: `172.16.${i >> 8}.${i & 255}/32`, identity: 300 + (i % 7) });
  entries.push({ cidr: '172.16.0.0/12', identity: 2 });
  assert.deepEqual(upsertOf(agent, { entries }), { added: 901 });
  assert.equal(agent.getIpcache('172.16.3.4')?.identity, 300 + ((3 * 256 + 4) % 7));
  assert.equal(agent.getIpcache('172.20.0.1')?.cidr, '172.16.0.0/12');
  assert.throws(() => upsertOf(agent, { entries: [{ cidr: 'x', identity: 5 }] }), /body\.entries\[0\]\.cidr/);
  assert.throws(() => upsertOf(agent, { entries: [{ cidr: '1.2.3.4', identity: -1 }] }), /body\.entries\[0\]\.identity/);
  assert.deepEqual(agent.deleteIpcache('172.16.0.0/12'), { deleted: true });
  assert.equal(agent.getIpcache('172.20.0.1'), null);
});

test('an API-added IPv4-mapped prefix lists under its own text, with source api', () => {
  const { agent } = makeAgent();
  // The same prefix in hex and dotted spelling: one canonical text, so the owner the API
  // recorded is found when the ipcache lists the entry (the two used to print it differently).
  assert.deepEqual(upsertOf(agent, { entries: [{ cidr: '::ffff:a00:0/104', identity: 300 }] }), { added: 1 });
  const cases: [string, string, number][] = [['::ffff:a00:0/104', '::ffff:10.0.0.0/104', 300]];
  for (const [given, want, id] of cases) {
    const got = agent.listIpcache().find((e) => e.identity === id);
    assert.equal(got?.cidr, want, `${given}: listed as ${got?.cidr}, want ${want}`);
    assert.equal(got?.source, 'api', `${given}: source got ${got?.source}, want api`);
    assert.deepEqual(got?.owners, ['api'], `${given}: owners got ${JSON.stringify(got?.owners)}, want ["api"]`);
  }
  assert.deepEqual(agent.deleteIpcache('::ffff:10.0.0.0/104'), { deleted: true }, 'deleting by the dotted text removes the API claim');
});

test('restored endpoints that are not attached yet stay in the state file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tunswitch-state-'));
  try {
    const first = makeAgent(dir);
    await first.agent.addEndpoint({ name: 'a', labels: { app: 'a' }, netns: 'na' });
    await first.agent.addEndpoint({ name: 'b', labels: { app: 'b' }, netns: 'nb' });
    // Second start: only a comes back (b's namespace is missing for now), then a change is saved.
    const second = makeAgent(dir);
    const eps = second.agent.restore();
    const a = eps.find((e) => e.name === 'a');
    await second.agent.addEndpoint({ name: 'a', labels: a?.labels ?? [], netns: 'na' });
    second.agent.importPolicyText(ALLOW_WEB, 'web.yaml');
    // Third start: b is still known.
    const third = makeAgent(dir);
    const names = third.agent.restore().map((e) => e.name).sort();
    assert.deepEqual(names, ['a', 'b'], `restored names: got ${names}, want a, b`);
    // Deleting a restored-only endpoint forgets it.
    await third.agent.deleteEndpoint('b');
    const fourth = makeAgent(dir);
    assert.deepEqual(fourth.agent.restore().map((e) => e.name), ['a'], 'b forgotten, a (never re-attached) kept');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('selectors: each peer selector in use with the identities it selects', async () => {
  const { agent } = makeAgent();
  const web = await agent.addEndpoint({ name: 'web', labels: { app: 'web' }, netns: 'n1' });
  await agent.addEndpoint({ name: 'db', labels: { app: 'db' }, netns: 'n2' });
  assert.deepEqual(agent.selectors(), [], 'no policy: no selectors');
  agent.importPolicyText(ALLOW_WEB, 'web.yaml');
  const sels = agent.selectors();
  const webSel = sels.find((s) => /app/.test(s.selector) && /web/.test(s.selector));
  assert.ok(webSel, `selectors: got ${JSON.stringify(sels)}, want one for app=web`);
  assert.deepEqual(webSel.identities, [web.identity], `app=web selects: got ${webSel.identities}, want [${web.identity}]`);
  const web2 = await agent.addEndpoint({ name: 'web2', labels: { app: 'web', tier: 'x' }, netns: 'n3' });
  const again = agent.selectors().find((s) => s.selector === webSel.selector);
  assert.deepEqual(again?.identities, [web.identity, web2.identity].sort((a, b) => a - b), 'a new matching identity joins the selection');
});

test('policy trace: the host reaches a default-deny endpoint through allow-localhost', async () => {
  const { agent } = makeAgent();
  agent.setHostPort(0, ['10.42.0.1/32']);
  await agent.addEndpoint({ name: 'db', labels: { app: 'db' }, netns: 'n2' });
  agent.importPolicyText(ALLOW_WEB, 'web.yaml');
  const t = traceOf(agent, { src: { ip: '10.42.0.1' }, dst: { endpoint: 'db' }, dport: '22/TCP' });
  assert.equal(t.source.identity, 1, `host identity: got ${t.source.identity}, want 1`);
  assert.equal(t.verdict, 'ALLOWED', `got ${JSON.stringify(t.steps)}`);
  assert.match(String((t.steps[0]?.rule as { name?: string } | null)?.name), /allow-localhost/);
});

test('endpoint add refuses addresses that belong to the host port, the pool edges or nobody (API)', async () => {
  const { agent } = makeAgent();
  agent.setHostPort(0, ['10.42.0.1/32', 'fd00:42::1/128']);
  const cases: [Record<string, string>, RegExp][] = [
    [{ ipv6: 'fd00:42::1' }, /^endpoint "d": ipv6 fd00:42::1 is the host port's address$/],
    [{ ipv6: '2001:db8::5' }, /^endpoint "d": ipv6 2001:db8::5 is outside the pool fd00:42::\/64$/],
    [{ ipv6: '::1' }, /^endpoint "d": ipv6 ::1 is a loopback address$/],
    [{ ipv6: 'fe80::1' }, /^endpoint "d": ipv6 fe80::1 is a link-local address$/],
    [{ ipv4: '10.42.0.0' }, /^endpoint "d": ipv4 10\.42\.0\.0 is the network address/],
    [{ ipv4: '10.42.0.255' }, /^endpoint "d": ipv4 10\.42\.0\.255 is the broadcast address/],
  ];
  for (const [addr, re] of cases) {
    await assert.rejects(agent.addEndpoint({ name: 'd', labels: { app: 'd' }, netns: 'nd', ...addr }), { message: re }, `${JSON.stringify(addr)} accepted`);
  }
  assert.equal(agent.getIpcache('fd00:42::1')?.identity, 1, 'the host port keeps its ipcache entry');
  const b = await agent.addEndpoint({ name: 'b', labels: { app: 'b' }, netns: 'nb', ipv6: 'fd00:42::b' });
  await assert.rejects(agent.addEndpoint({ name: 'd', labels: { app: 'd' }, netns: 'nd', ipv6: 'fd00:42:0::B' }), { message: /ipv6 fd00:42::b is already in use by endpoint "b"$/ });
  assert.equal(b.ipv6, 'fd00:42::b');
});
