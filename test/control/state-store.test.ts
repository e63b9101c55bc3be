/**
 * The state directory: durable writes with private modes, whole-file validation before
 * anything is applied, and restores that refuse (or, with --force-partial-restore, skip and
 * log) entries they cannot bring back.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from '../../src/control/agent.js';
import { StateStore, type StateFile } from '../../src/control/state-store.js';
import { TableSet, TableSetWriter } from '../../src/tables/tableset.js';
import { tryParsePrefix, type Prefix } from '../../src/control/cidr.js';
import { MemPorts } from '../helpers/mem-ports.js';
import { parseLinkSpec } from '../../src/runtime/link-spec.js';

function makeAgent(stateDir: string): Agent {
  const ts = TableSet.create({ ipcache: { tbl8Groups: 16, leaves: 1024, v6Capacity: 256 }, policyCapacity: 1 << 12, maxEndpoints: 64 });
  const ports = new MemPorts();
  return new Agent({
    name: 't', pool4: tryParsePrefix('10.42.0.0/24', false) as Prefix, maxEndpoints: 64, workers: 1, offload: false,
    config: { audit: false, enforcement: 'default' }, version: 'test', stateDir,
  }, new TableSetWriter(ts), ports, null);
}

const POL = (name: string): string => `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: ${name} }
spec:
  endpointSelector: { matchLabels: { app: db } }
  ingress: [ { fromEndpoints: [ { matchLabels: { app: web } } ] } ]
`;

function withDir(fn: (dir: string) => Promise<void> | void): () => Promise<void> {
  return async () => {
    const base = mkdtempSync(join(tmpdir(), 'rl94-state-'));
    try {
      await fn(join(base, 'state'));
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  };
}

test('state: files are 0600 and the directory 0700, even when it existed with 0755', withDir(async (dir) => {
  mkdirSync(dir, { mode: 0o755 });
  chmodSync(dir, 0o755);
  writeFileSync(join(dir, 'state.json.tmp'), 'leftover', { mode: 0o644 });
  const a = makeAgent(dir);
  a.importPolicyText(POL('p1'), 'p1.yaml');
  const cases: [string, number, number][] = [
    ['directory', statSync(dir).mode & 0o777, 0o700],
    ['state.json', statSync(join(dir, 'state.json')).mode & 0o777, 0o600],
  ];
  for (const [what, got, want] of cases) assert.equal(got, want, `${what} mode got ${got.toString(8)}, want ${want.toString(8)}`);
  const doc = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as StateFile;
  assert.equal(doc.version, 1, `version got ${doc.version}, want 1`);
}));

test('state: a file without a version is read as schema version 1', withDir((dir) => {
  const s = new StateStore(dir);
  s.ensureDir();
  writeFileSync(s.file, JSON.stringify({ config: {}, identities: { version: 1, workload: [], cidr: [] }, endpoints: [], policies: {} }));
  const got = s.read();
  assert.equal(got?.version, 1, `version got ${got?.version}, want 1`);
}));

test('state: bad files are refused with the file and the entry named', withDir((dir) => {
  const s = new StateStore(dir);
  s.ensureDir();
  const ok = { version: 1, config: {}, identities: { version: 1, workload: [], cidr: [] }, endpoints: [], policies: {} };
  const cases: [string, string, RegExp][] = [
    ['null file', 'null', /state\.json: \(top\): must be an object, got null$/],
    ['not JSON', '{"version": 1', /state\.json: \(file\): not valid JSON/],
    ['missing policies', JSON.stringify({ ...ok, policies: undefined }), /state\.json: policies: missing/],
    ['missing endpoints', JSON.stringify({ ...ok, endpoints: undefined }), /state\.json: endpoints: missing/],
    ['future version', JSON.stringify({ ...ok, version: 2 }), /state\.json: version: 2 is not a schema version/],
    ['policy without text', JSON.stringify({ ...ok, policies: { 'default/p': { file: 'x' } } }), /state\.json: policies\["default\/p"\]\.text: missing/],
    ['endpoint without labels', JSON.stringify({ ...ok, endpoints: [{ id: 0, name: 'a', netns: 'n', defaultRoute: false }] }), /state\.json: endpoints\[0\] \(a\)\.labels: missing/],
    ['unknown key', JSON.stringify({ ...ok, extra: 1 }), /state\.json: extra: unknown key/],
    ['bad link delay', JSON.stringify({ ...ok, endpoints: [{ id: 0, name: 'a', netns: 'n', labels: [], defaultRoute: false, link: { delay: 'soon' } }] }), /state\.json: endpoints\[0\] \(a\)\.link\.delay: /],
    ['unknown queue field', JSON.stringify({ ...ok, endpoints: [{ id: 0, name: 'a', netns: 'n', labels: [], defaultRoute: false, queue: { size: 3 } }] }), /state\.json: endpoints\[0\] \(a\)\.queue\.size: unknown field/],
    ['negative queue target', JSON.stringify({ ...ok, endpoints: [{ id: 0, name: 'a', netns: 'n', labels: [], defaultRoute: false, queue: { targetMs: -1 } }] }), /state\.json: endpoints\[0\] \(a\)\.queue\.targetMs: must be a positive number/],
  ];
  for (const [name, text, re] of cases) {
    writeFileSync(s.file, text);
    assert.throws(() => s.read(), (e: Error & { code?: string }) => {
      assert.match(e.message, re, `${name}: got ${e.message}, want ${re}`);
      assert.equal(e.code, 'ESTATE_INVALID', `${name}: code got ${e.code}`);
      return true;
    });
  }
}));

test('state: an entry that cannot be restored stops the start; --force-partial-restore skips and logs it', withDir((dir) => {
  const first = makeAgent(dir);
  first.importPolicyText(POL('keep'), 'keep.yaml');
  first.importPolicyText(POL('lost'), 'lost.yaml');
  // the entry of default/lost now carries the text of another policy
  const file = join(dir, 'state.json');
  const doc = JSON.parse(readFileSync(file, 'utf8')) as StateFile;
  const lostKey = Object.keys(doc.policies).find((k) => k.endsWith('/lost')) as string;
  (doc.policies[lostKey] as { text: string }).text = POL('other');
  writeFileSync(file, JSON.stringify(doc));

  const strict = makeAgent(dir);
  assert.throws(() => strict.restore(), (e: Error & { code?: string }) => {
    assert.match(e.message, new RegExp(`state\\.json: policies\\["${lostKey.replace('/', '\\/')}"\\]: its text \\(from lost\\.yaml\\) defines "[^"]*other", not this one`), `got ${e.message}`);
    assert.equal(e.code, 'ESTATE_INVALID');
    return true;
  });
  assert.deepEqual(strict.listPolicies().map((p) => p.name), [], 'a refused restore applied policies');
  // the refused start did not rewrite the file: the entry is still there for the operator
  assert.ok(readFileSync(file, 'utf8').includes('other'), 'state file changed by a refused restore');

  const logs: string[] = [];
  const partial = makeAgent(dir);
  partial.restore({ forcePartial: true, log: (m) => logs.push(m) });
  assert.deepEqual(partial.listPolicies().map((p) => p.name), ['keep'], 'partial restore policies');
  assert.equal(logs.length, 1, `logged ${logs.length} skipped entries, want 1: ${logs.join(' | ')}`);
  assert.match(logs[0] as string, /skipped policies\["[^"]*lost"\]/);
}));

test('state: a state file without its policies key refuses to start (no silent open policy)', withDir((dir) => {
  const first = makeAgent(dir);
  first.importPolicyText(POL('keep'), 'keep.yaml');
  const file = join(dir, 'state.json');
  const doc = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  delete doc.policies;
  writeFileSync(file, JSON.stringify(doc));
  assert.throws(() => makeAgent(dir).restore(), /state\.json: policies: missing/);
}));

test('state: link impairments and queue fields set through the API are saved with the endpoint, a clear as null', withDir(async (dir) => {
  const a = makeAgent(dir);
  await a.addEndpoint({ name: 'x', labels: { app: 'x' }, netns: 'n-x' });
  await a.addEndpoint({ name: 'y', labels: { app: 'y' }, netns: 'n-y' });
  await a.addEndpoint({ name: 'z', labels: { app: 'z' }, netns: 'n-z' });
  a.setEndpointLink('x', parseLinkSpec({ delay: '20ms', loss: '1%', seed: 5 }, (k) => k, () => 0));
  a.setEndpointQueue('x', { targetMs: 2 });
  a.setEndpointQueue('x', { limitBytes: 65536 });
  a.setEndpointLink('y', parseLinkSpec({ delay: '5ms', seed: 1 }, (k) => k, () => 0));
  a.setEndpointLink('y', null);
  const doc = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as StateFile;
  const by = new Map(doc.endpoints.map((e) => [e.name, e]));
  assert.deepEqual(by.get('x')?.link, { delay: '20ms', loss: '1%', limit: '4MiB', seed: 5 }, `x link got ${JSON.stringify(by.get('x')?.link)}`);
  assert.deepEqual(by.get('x')?.queue, { targetMs: 2, limitBytes: 65536 }, `x queue got ${JSON.stringify(by.get('x')?.queue)}`);
  assert.equal(by.get('y')?.link, null, `y link got ${JSON.stringify(by.get('y')?.link)}, want null (cleared)`);
  assert.equal('link' in (by.get('z') ?? {}), false, 'z never had a link set, yet one was saved');
  assert.equal('queue' in (by.get('z') ?? {}), false, 'z never had a queue set, yet one was saved');
  // the restore hands them back as they were saved (the control thread applies them)
  const b = makeAgent(dir);
  const back = new Map(b.restore().map((e) => [e.name, e]));
  assert.deepEqual(back.get('x')?.link, by.get('x')?.link, 'restored x link');
  assert.deepEqual(back.get('x')?.queue, by.get('x')?.queue, 'restored x queue');
}));

test('state: in cluster mode the saved identity numbers are not loaded over the ones the kvstore synced', withDir(async (dir) => {
  const first = makeAgent(dir);
  const x = await first.addEndpoint({ name: 'x', labels: { app: 'x' }, netns: 'n-x' });
  first.importPolicyText(POL('keep'), 'keep.yaml');
  const xLabels = first.listIdentities().find((i) => i.id === x.identity)?.labels ?? [];
  assert.ok(xLabels.length > 0, 'x has no identity labels');
  // a restart: the kvstore sync has already put the cluster's identities into the allocator
  // (src/kvstore/cluster.ts allocateAs) when the state is restored
  const synced = (): Agent => {
    const a = makeAgent(dir);
    a.allocator.allocateAs(xLabels, x.identity);
    return a;
  };
  assert.throws(() => synced().restore(), /identities: identity snapshot: workload\[0\]: identity \d+ appears twice/, 'loading the saved numbers over the synced ones');
  const logs: string[] = [];
  const b = synced();
  const eps = b.restore({ identitiesFromCluster: true, log: (m) => logs.push(m) });
  assert.deepEqual(eps.map((e) => e.name), ['x'], 'endpoints to re-attach');
  assert.deepEqual(b.listPolicies().map((p) => p.name), ['keep'], 'policies restored');
  assert.ok(logs.some((l) => /identity numbers come from the kvstore/.test(l)), `log got ${JSON.stringify(logs)}`);
  const again = await b.addEndpoint({ name: 'x', labels: { app: 'x' }, netns: 'n-x' });
  assert.equal(again.identity, x.identity, `x's identity after the restart got ${again.identity}, want ${x.identity} (the cluster's)`);
}));
