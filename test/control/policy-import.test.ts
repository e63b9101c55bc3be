/**
 * Policy import is atomic and costs one revision: every file or none, one compile, one publish,
 * one revision that status, policy list, the published tables (workers) and trace all show.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeTestAgent, publishedVerdict, traceOf } from './agent-support.js';
import { M_POLICY_REVISION, type TableSet } from '../../src/tables/tableset.js';
import { isTunswitchError } from '../../src/proto/errors.js';

/** An ingress rule for `app` from web on each of `ports` (one policy entry per port). */
const polPorts = (name: string, app: string, ports: number[]): string => `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: ${name} }
spec:
  endpointSelector: { matchLabels: { app: ${app} } }
  ingress:
    - fromEndpoints: [ { matchLabels: { app: web } } ]
      toPorts: [ { ports: [ ${ports.map((p) => `{ port: "${p}", protocol: TCP }`).join(', ')} ] } ]
`;

const pol = (name: string, app: string): string => polPorts(name, app, [5432]);

/** The revision a worker sees: the published meta word. */
function published(ts: TableSet): number {
  const side = ts.control.enter(7);
  ts.useSide(side);
  const r = ts.meta[M_POLICY_REVISION] as number;
  ts.control.leave(7);
  return r;
}

test('a parse error in file 2 imports nothing from file 1 and leaves the revision alone', async () => {
  const { agent, tables } = makeTestAgent();
  await agent.addEndpoint({ name: 'db', labels: { app: 'db' }, netns: 'n1' });
  const before = agent.status().policyRevision;
  const pubBefore = published(tables);
  const cases: { what: string; files: { text: string; fileName: string }[]; re: RegExp }[] = [
    { what: 'parse error', files: [{ text: pol('p1', 'db'), fileName: 'one.yaml' }, { text: 'kind: CiliumNetworkPolicy\nmetadata: {name: p2}\nspec: [', fileName: 'two.yaml' }], re: /^two\.yaml: / },
    { what: 'empty file', files: [{ text: pol('p1', 'db'), fileName: 'one.yaml' }, { text: '# nothing\n', fileName: 'empty.yaml' }], re: /^empty\.yaml: contains no policies/ },
  ];
  for (const c of cases) {
    assert.throws(() => agent.importPolicies(c.files), (e: unknown) => isTunswitchError(e, 'EPOLICY_INVALID') && c.re.test((e as Error).message), `${c.what}: want EPOLICY_INVALID matching ${c.re}`);
    assert.deepEqual(agent.listPolicies(), [], `${c.what}: got policies ${JSON.stringify(agent.listPolicies())}, want none`);
    assert.equal(agent.status().policyRevision, before, `${c.what}: status revision got ${agent.status().policyRevision}, want ${before}`);
    assert.equal(published(tables), pubBefore, `${c.what}: published revision got ${published(tables)}, want ${pubBefore}`);
    assert.equal(agent.getEndpoint('db').policy.ingress, false, `${c.what}: db got ingress enforcement from a failed import`);
  }
});

test('an import of several files is one revision, shown alike by status, list, get, tables and trace', async () => {
  const { agent, tables } = makeTestAgent();
  await agent.addEndpoint({ name: 'web', labels: { app: 'web' }, netns: 'n1' });
  await agent.addEndpoint({ name: 'db', labels: { app: 'db' }, netns: 'n2' });
  await agent.addEndpoint({ name: 'cache', labels: { app: 'cache' }, netns: 'n3' });
  const before = agent.status().policyRevision;
  const r = agent.importPolicies([
    { text: pol('p-db', 'db'), fileName: 'db.yaml' },
    { text: pol('p-cache', 'cache'), fileName: 'cache.yaml' },
  ]);
  assert.equal(r.revision, before + 1, `import: got revision ${r.revision}, want ${before + 1} (one publish for both files)`);
  assert.deepEqual(r.files, [{ fileName: 'db.yaml', policies: ['p-db'] }, { fileName: 'cache.yaml', policies: ['p-cache'] }]);
  assert.equal(agent.status().policyRevision, r.revision, `status: got ${agent.status().policyRevision}, want ${r.revision}`);
  assert.equal(published(tables), r.revision, `tables: got ${published(tables)}, want ${r.revision}`);
  for (const p of agent.listPolicies()) assert.equal(p.revision, r.revision, `policy list ${p.name}: got revision ${p.revision}, want ${r.revision}`);
  const t = traceOf(agent, { src: { endpoint: 'web' }, dst: { endpoint: 'cache' }, dport: '5432/TCP' });
  assert.equal(t.verdict, 'ALLOWED');
  assert.equal(t.revision, r.revision, `trace: got revision ${t.revision}, want ${r.revision}`);
  const d = agent.deleteAllPolicies();
  assert.equal(d.revision, r.revision + 1, `delete all: got revision ${d.revision}, want ${r.revision + 1} (one publish)`);
});

/** Copies of both sides of the published policy table (entries and length masks). */
function policyWords(ts: TableSet): Uint32Array[] {
  const s = ts.policy.shared;
  return [s.entries[0], s.entries[1], s.masks[0], s.masks[1]].map((a) => a.slice());
}

test('an import whose entries do not fit the policy table changes nothing and says why', async () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'tunswitch-s16-'));
  try {
    // Capacity 64 holds 56 entries (7/8).
    const { agent, tables } = makeTestAgent({ policyCapacity: 64, stateDir });
    await agent.addEndpoint({ name: 'web', labels: { app: 'web' }, netns: 'n1' });
    await agent.addEndpoint({ name: 'db', labels: { app: 'db' }, netns: 'n2' });
    const db = agent.getEndpoint('db');
    const web = agent.getEndpoint('web');
    const first = agent.importPolicies([{ text: polPorts('p1', 'db', [5432, 5433]), fileName: 'p1.yaml' }]);
    const words = policyWords(tables);
    const stateText = readFileSync(join(stateDir, 'state.json'), 'utf8');
    // Replaces p1 (30 ports) and adds p2 (30 ports): 60 entries for db, over 56.
    const many = (from: number): number[] => Array.from({ length: 30 }, (_, i) => from + i);
    assert.throws(
      () => agent.importPolicies([{ text: polPorts('p1', 'db', many(6000)), fileName: 'p1.yaml' }, { text: polPorts('p2', 'db', many(7000)), fileName: 'p2.yaml' }]),
      (e: unknown) => {
        const m = (e as Error).message;
        assert.ok(isTunswitchError(e, 'ETABLE_FULL'), `got ${String(e)}, want ETABLE_FULL`);
        assert.match(m, /^policy import refused, nothing changed: policy table full: the change needs 60 entries, the table holds 56 \(capacity 64, filled to 7\/8\); endpoint \d+ gains the most \(\d+ new entries\)$/);
        assert.ok(m.includes(`endpoint ${db.id} `), `got "${m}", want it to name endpoint ${db.id} (db)`);
        return true;
      },
    );
    assert.equal(agent.status().policyRevision, first.revision, `status revision: got ${agent.status().policyRevision}, want ${first.revision}`);
    assert.equal(published(tables), first.revision, `published revision: got ${published(tables)}, want ${first.revision}`);
    assert.deepEqual(agent.listPolicies().map((p) => [p.name, p.revision]), [['p1', first.revision]]);
    assert.deepEqual(policyWords(tables), words, 'policy table words changed by a refused import');
    assert.equal(readFileSync(join(stateDir, 'state.json'), 'utf8'), stateText, 'state.json changed by a refused import');
    const want: [number, number][] = [[5432, 1], [5433, 1], [6000, 0], [7000, 0]];
    for (const [port, v] of want) assert.equal(publishedVerdict(tables, db.id, 0, web.identity, 6, port), v, `port ${port}: got verdict ${publishedVerdict(tables, db.id, 0, web.identity, 6, port)}, want ${v}`);
    const t = traceOf(agent, { src: { endpoint: 'web' }, dst: { endpoint: 'db' }, dport: '5433/TCP' });
    assert.equal(t.verdict, 'ALLOWED');
    const rule = t.steps.find((s) => s.direction === 'INGRESS')?.rule as { name?: string } | null | undefined;
    assert.equal(rule?.name, 'p1', `trace ingress rule: got ${JSON.stringify(rule)}, want p1 (cookie kept)`);
    // The compiler is back where it was: a fitting change replaces exactly the old entries.
    const next = agent.importPolicies([{ text: polPorts('p1', 'db', [5433, 5434]), fileName: 'p1.yaml' }]);
    assert.equal(next.revision, first.revision + 1);
    const after: [number, number][] = [[5432, 0], [5433, 1], [5434, 1]];
    for (const [port, v] of after) assert.equal(publishedVerdict(tables, db.id, 0, web.identity, 6, port), v, `after the next import, port ${port}: got verdict ${publishedVerdict(tables, db.id, 0, web.identity, 6, port)}, want ${v}`);
  } finally {
    rmSync(stateDir, { recursive: true, force: true });
  }
});
