/** Cluster-mode settings: the YAML's kvstore: section and run's --kvstore flags (no etcd needed). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRunConfig } from '../../src/runtime/config.js';
import { applyKvstoreFlags, UsageError } from '../../src/cli/run-kvstore.js';
import { formatNodes } from '../../src/cli/node.js';
import { formatIpcache } from '../../src/cli/ipcache.js';
import { etcdUrl } from '../../src/kvstore/session.js';

const BASE = 'name: mn98a\npool: { ipv4: 10.98.1.0/24 }\n';

test('kvstore: section of the config', () => {
  const cfg = parseRunConfig(`${BASE}kvstore: { url: "etcd://127.0.0.1:23790", nodeIp: 10.99.0.1, leaseTtl: 3 }\n`, '/x/lab.yaml');
  assert.deepEqual(cfg.kvstore, { url: 'etcd://127.0.0.1:23790', nodeName: 'mn98a', nodeIp: '10.99.0.1', leaseTtl: 3 });
  assert.equal(parseRunConfig(BASE, '/x/lab.yaml').kvstore, undefined);
  const bad: [string, RegExp][] = [
    ['kvstore: { url: "http://h:1", nodeIp: 10.99.0.1 }', /lab\.yaml: kvstore\.url: "http:\/\/h:1" is not etcd:\/\/HOST:PORT/],
    ['kvstore: { url: "etcd://h:1", nodeIp: 10.99.0.300 }', /kvstore\.nodeIp: "10\.99\.0\.300" is not an IPv4 address/],
    ['kvstore: { url: "etcd://h:1", nodeIp: 10.99.0.1, leaseTtl: 0 }', /kvstore\.leaseTtl: 0 must be an integer from 1 to 3600/],
    ['kvstore: { url: "etcd://h:1", nodeIp: 10.99.0.1, nodeName: "A_B" }', /kvstore\.nodeName: "A_B" must be/],
    ['kvstore: { url: "etcd://h:1", nodeIp: 10.99.0.1, ttl: 3 }', /kvstore\.ttl: unknown field/],
  ];
  for (const [yaml, re] of bad) {
    assert.throws(() => parseRunConfig(`${BASE}${yaml}\n`, '/x/lab.yaml'), re, `got no error matching ${re} for ${yaml}`);
  }
});

test('run --kvstore/--node-name/--node-ip/--lease-ttl over the config', () => {
  const cfg = parseRunConfig(BASE, '/x/lab.yaml');
  assert.deepEqual(applyKvstoreFlags(cfg, { kvstore: 'etcd://127.0.0.1:23790', nodeName: 'host1', nodeIp: '10.99.0.1', leaseTtl: '5' }).kvstore, {
    url: 'etcd://127.0.0.1:23790',
    nodeName: 'host1',
    nodeIp: '10.99.0.1',
    leaseTtl: 5,
  });
  assert.equal(applyKvstoreFlags(cfg, {}), cfg, 'no flags: the config unchanged');
  const only = applyKvstoreFlags(cfg, { nodeIp: '10.99.0.1' });
  assert.deepEqual([only.kvstore, only.underlay], [undefined, { ip: '10.99.0.1' }], '--node-ip alone: underlay without kvstore');
  const off = parseRunConfig(`${BASE}offload: true\n`, '/x/lab.yaml');
  const offUl = applyKvstoreFlags(off, { nodeIp: '10.99.0.1' });
  assert.deepEqual([offUl.offload, offUl.underlay], [true, { ip: '10.99.0.1' }], `offload with --node-ip: got ${JSON.stringify([offUl.offload, offUl.underlay])}`);
  const bad: [Parameters<typeof applyKvstoreFlags>[1], RegExp][] = [
    [{ nodeName: 'h1' }, /^--node-name and --lease-ttl need --kvstore/],
    [{ nodeIp: '10.99.0.300' }, /^--node-ip: "10\.99\.0\.300" is not an IPv4 address$/],
    [{ kvstore: 'etcd://h:99999', nodeIp: '10.99.0.1' }, /^--kvstore: "etcd:\/\/h:99999" is not etcd:\/\/HOST:PORT$/],
    [{ kvstore: 'etcd://h:1' }, /^--node-ip: undefined is not an IPv4 address/],
    [{ kvstore: 'etcd://h:1', nodeIp: '10.99.0.1', leaseTtl: 'x' }, /^--lease-ttl: "x" must be an integer/],
  ];
  for (const [flags, re] of bad) {
    assert.throws(() => applyKvstoreFlags(cfg, flags), (e: unknown) => e instanceof UsageError && re.test(e.message), `got no usage error matching ${re}`);
  }
});

test('etcd URL forms', () => {
  assert.equal(etcdUrl('etcd://127.0.0.1:23790'), 'http://127.0.0.1:23790');
  assert.equal(etcdUrl('http://localhost:2379'), 'http://localhost:2379');
  assert.throws(() => etcdUrl('etcd://h'), /is not etcd:\/\/HOST:PORT/);
});

test('node list and ipcache list formatting in cluster mode', () => {
  const out = formatNodes([
    { name: 'host1', ip: '10.99.0.1', ipv4Cidr: '10.98.1.0/24', ipv6Cidr: null, self: true },
    { name: 'host2', ip: '10.99.0.2', ipv4Cidr: '10.98.2.0/24', ipv6Cidr: null, self: false },
  ]);
  assert.match(out, /^NAME\s+NODE IP\s+IPV4 CIDR\s+IPV6 CIDR\s+SELF$/m);
  assert.match(out, /^host1\s+10\.99\.0\.1\s+10\.98\.1\.0\/24\s+yes$/m);
  assert.match(formatNodes([]), /does not run in cluster mode/);
  const ipc = formatIpcache([
    { cidr: '10.98.1.2/32', identity: 256, source: 'endpoint' },
    { cidr: '10.98.2.2/32', identity: 257, source: 'kvstore', tunnel: '10.99.0.2', node: 'host2' },
  ]);
  assert.match(ipc, /^PREFIX\s+IDENTITY\s+SOURCE\s+TUNNEL\s+NODE$/m);
  assert.match(ipc, /^10\.98\.2\.2\/32\s+257\s+kvstore\s+10\.99\.0\.2\s+host2$/m);
});
