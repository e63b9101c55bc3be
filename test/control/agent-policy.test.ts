/**
 * Policy semantics through the agent (no devices): trace by labels selects by subset, empty
 * imports, namespaces, live label changes, named ports and ipBlock on pod addresses. The
 * published tables are read the way a worker reads them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeTestAgent, traceOf } from './agent-support.js';

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
  agent.importPolicyText(ALLOW_C_TO_DB, 'p.yaml');
  const r = traceOf(agent, { src: { labels: ['app=c'] }, dst: { endpoint: 'db' }, dport: '5432/TCP' });
  assert.equal(r.verdict, 'ALLOWED', `verdict got ${r.verdict}, want ALLOWED (notes ${JSON.stringify(r.notes)})`);
  const considered = (r.considered ?? []).map((c) => `${c.source}->${c.destination}:${c.verdict}`);
  assert.deepEqual(considered, ['c1->db:ALLOWED', 'c2->db:ALLOWED'], `considered got ${JSON.stringify(considered)}`);
  // Exactly one identity has app=c,tier=db: no list, that identity.
  const one = traceOf(agent, { src: { labels: ['app=c', 'tier=db'] }, dst: { endpoint: 'db' }, dport: '5432/TCP' });
  assert.equal(one.considered, undefined, 'one identity: no considered list');
  assert.equal(one.source.name, 'c1');
  // No identity: identity 0 and a note.
  const none = traceOf(agent, { src: { labels: ['app=zz'] }, dst: { endpoint: 'db' }, dport: '5432/TCP' });
  assert.equal(none.verdict, 'DENIED');
  assert.ok(none.notes.some((n) => /no identity has the labels/.test(n)), `notes got ${JSON.stringify(none.notes)}`);
  // A mixed answer says so.
  agent.importPolicyText(ALLOW_C_TO_DB.replace('{ app: c }', '{ app: c, tier: db }').replace('allow-c', 'allow-c'), 'p.yaml');
  const mixed = traceOf(agent, { src: { labels: ['app=c'] }, dst: { endpoint: 'db' }, dport: '5432/TCP' });
  assert.ok(mixed.notes.some((n) => /1 ALLOWED, 1 DENIED/.test(n)), `notes got ${JSON.stringify(mixed.notes)}`);
});

test('an import with no policies is an error unless allowEmpty', () => {
  const { agent } = makeTestAgent();
  assert.throws(() => agent.importPolicyText('# nothing\n', 'e.yaml'), /e\.yaml: contains no policies/);
  assert.deepEqual(agent.importPolicyText('# nothing\n', 'e.yaml', true).policies, []);
});

function verdictOf(agent: ReturnType<typeof makeTestAgent>['agent'], src: string, dst: string, dport: string): string {
  return traceOf(agent, { src: { endpoint: src }, dst: { endpoint: dst }, dport }).verdict;
}

const NS_POLICY = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: from-team-a, namespace: x }
spec:
  podSelector: { matchLabels: { app: db } }
  ingress:
    - from:
        - namespaceSelector:
            matchExpressions: [ { key: team, operator: In, values: [a] } ]
          podSelector: { matchLabels: { app: web } }
`;

test('namespaces: objects with labels; endpoints get the labels Cilium derives; namespaced policy scope', async () => {
  const { agent } = makeTestAgent();
  agent.putNamespace('x', { labels: { team: 'a' } });
  agent.putNamespace('y', { labels: { team: 'b' } });
  const db = await agent.addEndpoint({ name: 'db', labels: { app: 'db' }, netns: 'n1', namespace: 'x' });
  await agent.addEndpoint({ name: 'dby', labels: { app: 'db' }, netns: 'n4', namespace: 'y' });
  await agent.addEndpoint({ name: 'webx', labels: { app: 'web' }, netns: 'n2', namespace: 'x' });
  await agent.addEndpoint({ name: 'weby', labels: { app: 'web' }, netns: 'n3', namespace: 'y' });
  const want = ['k8s:app=db', 'k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=x', 'k8s:io.cilium.k8s.namespace.labels.team=a', 'k8s:io.kubernetes.pod.namespace=x'];
  assert.deepEqual(db.labels, want, `labels got ${JSON.stringify(db.labels)}`);
  assert.equal(db.namespace, 'x');
  assert.deepEqual(agent.getNamespace('x').endpoints, ['db', 'webx']);
  assert.deepEqual(agent.getNamespace('x').labels, { team: 'a', 'kubernetes.io/metadata.name': 'x' });
  agent.importPolicyText(NS_POLICY, 'ns.yaml');
  const cases: [string, string, string][] = [
    ['webx', 'db', 'ALLOWED'], // team=a namespace, app=web
    ['weby', 'db', 'DENIED'], // team=b
    ['weby', 'dby', 'ALLOWED'], // the policy is in x: db in y is not selected
  ];
  for (const [s, d, w] of cases) assert.equal(verdictOf(agent, s, d, '80/TCP'), w, `${s} -> ${d}: got ${verdictOf(agent, s, d, '80/TCP')}, want ${w}`);
  // An undeclared namespace is an error naming the field; hand-written labels still work.
  await assert.rejects(agent.addEndpoint({ name: 'z', netns: 'n5', namespace: 'nope' }), /body\.namespace: namespace "nope" not found/);
  const old = await agent.addEndpoint({ name: 'old', labels: { 'io.kubernetes.pod.namespace': 'legacy', 'io.cilium.k8s.namespace.labels.team': 'a' }, netns: 'n6' });
  assert.equal(old.namespace, 'legacy');
  assert.deepEqual(agent.getNamespace('legacy').labels, { team: 'a', 'kubernetes.io/metadata.name': 'legacy' });
  assert.throws(() => agent.deleteNamespace('x'), /still has endpoints: db, webx/);
});

test('live label changes: endpoint and namespace labels recompute identity, ipcache entry and policy', async () => {
  const { agent } = makeTestAgent();
  agent.putNamespace('x', {});
  agent.putNamespace('y', {});
  await agent.addEndpoint({ name: 'db', labels: { app: 'db' }, netns: 'n1', namespace: 'x', ipv4: '10.42.0.10' });
  const a = await agent.addEndpoint({ name: 'a', labels: { app: 'other' }, netns: 'n2', namespace: 'y', ipv4: '10.42.0.11' });
  agent.importPolicyText(NS_POLICY, 'ns.yaml');
  assert.equal(verdictOf(agent, 'a', 'db', '80/TCP'), 'DENIED', 'before: a is app=other in y (no team)');
  const a2 = agent.labelEndpoint('a', { set: ['app=web'] });
  assert.notEqual(a2.identity, a.identity, 'a new identity');
  assert.equal(agent.getIpcache('10.42.0.11')?.identity, a2.identity, `ipcache got ${agent.getIpcache('10.42.0.11')?.identity}, want ${a2.identity}`);
  assert.equal(verdictOf(agent, 'a', 'db', '80/TCP'), 'DENIED', 'app=web but y has no team=a');
  agent.labelNamespace('y', { set: { team: 'a' } });
  const a3 = agent.getEndpoint('a');
  assert.ok(a3.labels.includes('k8s:io.cilium.k8s.namespace.labels.team=a'), `labels got ${JSON.stringify(a3.labels)}`);
  assert.equal(verdictOf(agent, 'a', 'db', '80/TCP'), 'ALLOWED', 'after namespace label team=a');
  agent.labelEndpoint('a', { remove: ['app'] });
  assert.equal(verdictOf(agent, 'a', 'db', '80/TCP'), 'DENIED', 'after removing app');
  agent.labelNamespace('y', { remove: ['team'] });
  assert.ok(!agent.getEndpoint('a').labels.some((l) => l.includes('team')), 'team label gone from the endpoint');
  // The old identities were released: only live ones remain.
  const live = agent.listIdentities().filter((i) => i.kind === 'workload').map((i) => i.refs);
  assert.deepEqual(live, [1, 1], `workload identity refs got ${JSON.stringify(live)}, want two identities with one ref each`);
  assert.throws(() => agent.labelEndpoint('a', { set: ['io.kubernetes.pod.namespace=x'] }), /comes from the endpoint's namespace/);
});

test('CiliumNetworkPolicy toCIDR keeps Cilium\'s meaning unless cidrMatchPods is on', async () => {
  const { agent } = makeTestAgent();
  await agent.addEndpoint({ name: 'a', labels: { app: 'a' }, netns: 'n1' });
  const b = await agent.addEndpoint({ name: 'b', labels: { app: 'b' }, netns: 'n2' });
  agent.importPolicyText(`apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: to-b}\nspec:\n  endpointSelector: {matchLabels: {app: a}}\n  egress:\n  - toCIDRSet: [{cidr: "${b.ipv4}/30"}]\n`, 'c.yaml');
  assert.equal(verdictOf(agent, 'a', 'b', '80/TCP'), 'DENIED', 'default: a CIDR rule does not select a pod identity');
  agent.setConfig({ cidrMatchPods: true });
  assert.equal(verdictOf(agent, 'a', 'b', '80/TCP'), 'ALLOWED', 'cidrMatchPods: the pod is selected by its address');
  assert.ok(agent.selectors().some((s) => s.selector.startsWith('cidr+pods(') && s.identities.includes(b.identity)), `selectors got ${JSON.stringify(agent.selectors())}`);
  agent.setConfig({ cidrMatchPods: false });
  assert.equal(verdictOf(agent, 'a', 'b', '80/TCP'), 'DENIED', 'off again');
});

test('named ports: resolution per peer, shown in selectors and trace', async () => {
  const { agent } = makeTestAgent();
  await agent.addEndpoint({ name: 'c', labels: { app: 'c' }, netns: 'n1' });
  const s1 = await agent.addEndpoint({ name: 's1', labels: { app: 's', v: '1' }, netns: 'n2', ports: [{ name: 'web', port: 8080, protocol: 'TCP' }] });
  await agent.addEndpoint({ name: 's2', labels: { app: 's', v: '2' }, netns: 'n3', ports: [{ name: 'web', port: 9090, protocol: 'TCP' }] });
  agent.importPolicyText(`apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: named}\nspec:\n  endpointSelector: {matchLabels: {app: c}}\n  egress:\n  - toEndpoints: [{matchLabels: {app: s}}]\n    toPorts: [{ports: [{port: web, protocol: TCP}]}]\n`, 'n.yaml');
  const cases: [string, string, string][] = [
    ['s1', '8080/TCP', 'ALLOWED'],
    ['s1', '9090/TCP', 'DENIED'], // "web" is 9090 only on s2
    ['s2', '9090/TCP', 'ALLOWED'],
    ['s2', '8080/TCP', 'DENIED'],
  ];
  for (const [dst, port, want] of cases) assert.equal(verdictOf(agent, 'c', dst, port), want, `c -> ${dst} ${port}: got ${verdictOf(agent, 'c', dst, port)}, want ${want}`);
  const sel = agent.selectors().find((s) => s.selector === 'port web/TCP');
  assert.deepEqual(sel?.ports?.[String(s1.identity)], [8080], `selectors got ${JSON.stringify(sel)}`);
  const t = traceOf(agent, { src: { endpoint: 'c' }, dst: { endpoint: 's1' }, dport: '8080/TCP' });
  assert.ok(t.notes.some((n) => /named port "web" \(TCP\) resolves to 8080 on s1/.test(n)), `notes got ${JSON.stringify(t.notes)}`);
  await assert.rejects(agent.addEndpoint({ name: 'bad', netns: 'n9', ports: [{ name: 'web', port: 70000, protocol: 'TCP' }] }), /body\.ports\[0\]\.port: 70000 is not a port/);
});
