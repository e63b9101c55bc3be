/**
 * Policy semantics through the agent (no devices): trace by labels selects by subset, empty
 * imports, namespaces, live label changes, named ports and ipBlock on pod addresses. The
 * published tables are read the way a worker reads them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeTestAgent } from './agent-support.js';

const ALLOW_C_TO_DB = `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: allow-c }
spec:
  endpointSelector: { matchLabels: { app: db } }
  ingress:
    - fromEndpoints: [ { matchLabels: { app: c } } ]
      toPorts: [ { ports: [ { port: "5432", protocol: TCP } ] } ]
`;

test('trace by labels selects identities by subset and lists the ones it considered', async () => {
  const { agent } = makeTestAgent();
  await agent.addEndpoint({ name: 'c1', labels: { app: 'c', tier: 'db' }, netns: 'n1' });
  await agent.addEndpoint({ name: 'c2', labels: { app: 'c', tier: 'web' }, netns: 'n2' });
  await agent.addEndpoint({ name: 'db', labels: { app: 'db' }, netns: 'n3' });
  agent.importPolicies(ALLOW_C_TO_DB, 'p.yaml');
  const r = agent.trace({ src: { labels: ['app=c'] }, dst: { endpoint: 'db' }, dport: '5432/TCP' });
  assert.equal(r.verdict, 'ALLOWED', `verdict got ${r.verdict}, want ALLOWED (notes ${JSON.stringify(r.notes)})`);
  const considered = (r.considered ?? []).map((c) => `${c.source}->${c.destination}:${c.verdict}`);
  assert.deepEqual(considered, ['c1->db:ALLOWED', 'c2->db:ALLOWED'], `considered got ${JSON.stringify(considered)}`);
  // Exactly one identity has app=c,tier=db: no list, that identity.
  const one = agent.trace({ src: { labels: ['app=c', 'tier=db'] }, dst: { endpoint: 'db' }, dport: '5432/TCP' });
  assert.equal(one.considered, undefined, 'one identity: no considered list');
  assert.equal(one.source.name, 'c1');
  // No identity: identity 0 and a note.
  const none = agent.trace({ src: { labels: ['app=zz'] }, dst: { endpoint: 'db' }, dport: '5432/TCP' });
  assert.equal(none.verdict, 'DENIED');
  assert.ok(none.notes.some((n) => /no identity has the labels/.test(n)), `notes got ${JSON.stringify(none.notes)}`);
  // A mixed answer says so.
  agent.importPolicies(ALLOW_C_TO_DB.replace('{ app: c }', '{ app: c, tier: db }').replace('allow-c', 'allow-c'), 'p.yaml');
  const mixed = agent.trace({ src: { labels: ['app=c'] }, dst: { endpoint: 'db' }, dport: '5432/TCP' });
  assert.ok(mixed.notes.some((n) => /1 ALLOWED, 1 DENIED/.test(n)), `notes got ${JSON.stringify(mixed.notes)}`);
});

test('an import with no policies is an error unless allowEmpty', () => {
  const { agent } = makeTestAgent();
  assert.throws(() => agent.importPolicies('# nothing\n', 'e.yaml'), /e\.yaml: contains no policies/);
  assert.deepEqual(agent.importPolicies('# nothing\n', 'e.yaml', true).policies, []);
});
