/**
 * Policy import is atomic and costs one revision: every file or none, one compile, one publish,
 * one revision that status, policy list, the published tables (workers) and trace all show.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeTestAgent, traceOf } from './agent-support.js';
import { M_POLICY_REVISION, type TableSet } from '../../src/tables/tableset.js';
import { isTunswitchError } from '../../src/proto/errors.js';

const pol = (name: string, app: string): string => `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: ${name} }
spec:
  endpointSelector: { matchLabels: { app: ${app} } }
  ingress:
    - fromEndpoints: [ { matchLabels: { app: web } } ]
      toPorts: [ { ports: [ { port: "5432", protocol: TCP } ] } ]
`;

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
