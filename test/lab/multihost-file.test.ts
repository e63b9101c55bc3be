/** The multi-host lab file (src/lab/multihost-file.ts): defaults, generated host configs, errors naming the field. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { isMultiHostDoc, loadMultiHostLab, parseMultiHostLab } from '../../src/lab/multihost-file.js';
import { parse as parseYaml } from 'yaml';

const BASE = `name: mh83t
underlay: 10.84.0.0/24
etcd: { port: 23839, peerPort: 23849 }
hosts:
  a:
    pool: { ipv4: 10.83.1.0/24 }
    nodes: { web: { labels: { app: web } } }
  b:
    pool: { ipv4: 10.83.2.0/24 }
    nodes: { db: { labels: { app: db }, ipv4: 10.83.2.10 } }
`;

test('multi-host lab: underlay addresses, etcd URL and one run config per host', () => {
  const lab = parseMultiHostLab(BASE, '/x/lab.yaml');
  assert.equal(lab.bridgeIp, '10.84.0.254');
  assert.equal(lab.etcdUrl, 'etcd://10.84.0.254:23839');
  assert.deepEqual(lab.managedEtcd, { clientPort: 23839, peerPort: 23849 });
  assert.equal(lab.underlayNetns, 'mh83t-ul');
  assert.deepEqual(lab.hosts.map((h) => [h.name, h.ip, h.netns]), [['a', '10.84.0.1', 'mh83t-a'], ['b', '10.84.0.2', 'mh83t-b']]);
  const b = lab.hosts[1]!.config;
  assert.equal(b.name, 'mh83t', 'every host config has the lab name: endpoints are <lab>-<node>');
  assert.deepEqual(b.kvstore, { url: 'etcd://10.84.0.254:23839', nodeName: 'b', nodeIp: '10.84.0.2', leaseTtl: 5 });
  assert.deepEqual(b.underlay, { ip: '10.84.0.2' });
  assert.equal(b.hostPort, false);
  assert.deepEqual(b.nodes.map((n) => [n.name, n.ipv4, n.defaultRoute]), [['db', '10.83.2.10', true]]);
  const ext = parseMultiHostLab(BASE.replace('etcd: { port: 23839, peerPort: 23849 }', 'etcd: { url: "etcd://10.84.0.200:2379" }'), '/x/lab.yaml');
  assert.equal(ext.managedEtcd, null);
  assert.equal(ext.hosts[0]!.config.kvstore?.url, 'etcd://10.84.0.200:2379');
  assert.ok(isMultiHostDoc(parseYaml(BASE)));
  assert.ok(!isMultiHostDoc({ name: 'x', nodes: {} }));
});

test('multi-host lab: errors name the field', () => {
  const cases: [string, string, RegExp][] = [
    ['underlay: 10.84.0.0/24', 'underlay: 10.84.0.0/30', /lab\.yaml: underlay: "10\.84\.0\.0\/30" must be an IPv4 prefix of length 8-29/],
    ['etcd: { port: 23839, peerPort: 23849 }', 'etcd: { port: 23839, url: "etcd://h:1" }', /lab\.yaml: etcd\.url: give either url/],
    ['etcd: { port: 23839, peerPort: 23849 }', 'etcd: { port: 70000 }', /lab\.yaml: etcd\.port: 70000 is not a port/],
    ['pool: { ipv4: 10.83.2.0/24 }\n    nodes: { db: { labels: { app: db }, ipv4: 10.83.2.10 } }', 'pool: { ipv4: 10.83.1.128/25 }\n    nodes: { db: { labels: { app: db } } }', /lab\.yaml: hosts\.b\.pool\.ipv4: 10\.83\.1\.128\/25 overlaps host a's 10\.83\.1\.0\/24/],
    ['nodes: { db: { labels: { app: db }, ipv4: 10.83.2.10 } }', 'nodes: { web: { labels: { app: db } } }', /hosts\.b\.nodes\.web: node "web" is also on host a/],
    ['ipv4: 10.83.2.10', 'ipv4: 10.83.9.10', /lab\.yaml: hosts\.b: nodes\.db\.ipv4: .*10\.83\.9\.10/],
    ['  b:\n', '  b:\n    ip: 10.84.0.254\n', /hosts\.b\.ip: 10\.84\.0\.254 is not a host address of the underlay/],
    ['  b:\n', '  b:\n    ip: 10.84.0.1\n', /hosts\.b\.ip: 10\.84\.0\.1 is also host a's underlay address/],
    ['  b:\n', '  ul:\n', /hosts\.ul: "ul" is reserved/],
    ['name: mh83t', 'name: mh83t\nnodes: {}', /lab\.yaml: nodes: unknown field/],
  ];
  for (const [from, to, re] of cases) {
    const text = BASE.replace(from, to);
    assert.notEqual(text, BASE, `case ${to}: the replacement must apply`);
    assert.throws(() => parseMultiHostLab(text, '/x/lab.yaml'), re, `got no error matching ${re} for ${to}`);
  }
});

test('examples/multi-host/lab.yaml: three hosts, the three tiers on different hosts, the three-tier policies', () => {
  const file = fileURLToPath(new URL('../../../examples/multi-host/lab.yaml', import.meta.url));
  const lab = loadMultiHostLab(file);
  assert.deepEqual(lab.hosts.map((h) => [h.name, h.config.nodes.map((n) => n.name).join()]), [['host1', 'frontend'], ['host2', 'backend'], ['host3', 'db']]);
  for (const h of lab.hosts) {
    assert.equal(h.config.policies.length, 1);
    assert.match(h.config.policies[0]!, /examples\/three-tier\/policies\/?$/);
    assert.equal(h.config.kvstore?.nodeIp, h.ip);
  }
});
