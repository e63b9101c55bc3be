/**
 * The Docker network driver (src/docker/driver.ts) without an engine: the calls libnetwork
 * makes, in its order, over the real unix-socket HTTP server, against the real Agent with
 * in-memory ports and a container resolver double. The real engine is exercised by
 * test/e2e/compose.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from '../../src/control/agent.js';
import { MemPorts } from '../helpers/mem-ports.js';
import { TableSet, TableSetWriter } from '../../src/tables/tableset.js';
import { tryParsePrefix, type Prefix } from '../../src/control/cidr.js';
import { NetworkDriver, serveDriver, type ContainerResolver, type DriverHost, type NetworkSubnet } from '../../src/docker/driver.js';


function setup() {
  const ts = TableSet.create({ ipcache: { tbl8Groups: 16, leaves: 1024, v6Capacity: 256 }, policyCapacity: 1 << 12, maxEndpoints: 64 });
  const ports = new MemPorts();
  const agent = new Agent(
    { name: 't', pool4: tryParsePrefix('10.42.0.0/24', false) as Prefix, maxEndpoints: 64, workers: 1, offload: false, config: { audit: false, enforcement: 'default' }, version: 'test' },
    new TableSetWriter(ts),
    ports,
    null,
  );
  const nets = new Map<string, NetworkSubnet>();
  const host: DriverHost = {
    addNetwork: async (id, _what, v4) => {
      if (v4.pool.startsWith('10.99.')) throw new Error(`pool ${v4.pool} overlaps 10.99.0.0/16 of switch "other"`);
      nets.set(id, v4);
      const p = tryParsePrefix(v4.pool, false) as Prefix;
      agent.ipam.addExtraPool(p);
    },
    removeNetwork: async (id) => {
      const v4 = nets.get(id);
      if (v4) agent.ipam.removeExtraPool(tryParsePrefix(v4.pool, false) as Prefix);
      nets.delete(id);
    },
    addHandoffEndpoint: async (req, sandbox) => ({ tun: (await agent.addEndpoint(req, undefined, { sandbox })).tun }),
    deleteEndpoint: (n) => agent.deleteEndpoint(n),
    hasEndpoint: (n) => agent.listEndpoints().some((e) => e.name === n),
  };
  const containers = new Map<string, { id: string; name: string; labels: Record<string, string> }>();
  const resolver: ContainerResolver = {
    byEndpoint: async (_nid, eid) => {
      const c = containers.get(eid);
      if (!c) throw new Error(`Join: the engine does not list endpoint ${eid}`);
      return c;
    },
    network: async (nid) => ({ name: `net-${nid}`, driver: 'tunswitch', v4: { pool: '10.77.0.0/24', gateway: '10.77.0.1' }, v6: null }),
    networksOfDriver: async () => [],
  };
  const logs: string[] = [];
  const driver = new NetworkDriver('tunswitch', host, resolver, (m) => logs.push(m));
  return { agent, ports, nets, containers, driver, logs };
}

function post(sock: string, method: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = request({ socketPath: sock, path: `/${method}`, method: 'POST', headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as Record<string, unknown> }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

test('driver over HTTP: activate, capabilities, network, endpoint, join, leave, delete in libnetwork order', async () => {
  const { agent, ports, containers, driver, nets } = setup();
  const dir = mkdtempSync(join(tmpdir(), 'tsw-driver-'));
  const sock = join(dir, 'tunswitch.sock');
  const srv = await serveDriver(driver, sock);
  try {
    const cases: [string, unknown, Record<string, unknown>][] = [
      ['Plugin.Activate', {}, { Implements: ['NetworkDriver'] }],
      ['NetworkDriver.GetCapabilities', {}, { Scope: 'local', ConnectivityScope: 'local' }],
      ['NetworkDriver.CreateNetwork', { NetworkID: 'n1', Options: {}, IPv4Data: [{ AddressSpace: 'LocalDefault', Pool: '10.77.0.0/24', Gateway: '10.77.0.1/24' }], IPv6Data: [] }, {}],
      ['NetworkDriver.CreateEndpoint', { NetworkID: 'n1', EndpointID: 'e1', Interface: { Address: '10.77.0.2/24', AddressIPv6: '', MacAddress: '' }, Options: {} }, {}],
    ];
    for (const [m, body, want] of cases) {
      const got = await post(sock, m, body);
      assert.equal(got.status, 200, `${m}: got status ${got.status}, want 200`);
      assert.deepEqual(got.json, want, `${m}: got ${JSON.stringify(got.json)}, want ${JSON.stringify(want)}`);
    }
    assert.equal(nets.get('n1')?.gateway, '10.77.0.1', `network gateway: got ${nets.get('n1')?.gateway}, want 10.77.0.1 (prefix stripped)`);

    containers.set('e1', { id: 'c0ffee000000aaaa', name: 'shop_web_1', labels: { app: 'web', 'com.docker.compose.service': 'web', 'com.docker.compose.project': 'shop', 'com.docker.compose.container-number': '1' } });
    const join1 = await post(sock, 'NetworkDriver.Join', { NetworkID: 'n1', EndpointID: 'e1', SandboxKey: '/var/run/docker/netns/abc', Options: {} });
    assert.deepEqual(join1.json, { InterfaceName: { SrcName: 'mem.1', DstPrefix: 'eth' }, Gateway: '10.77.0.1' }, `Join: got ${JSON.stringify(join1.json)}`);
    const ep = agent.getEndpoint('web');
    assert.equal(ep.ipv4, '10.77.0.2', `endpoint ipv4: got ${ep.ipv4}, want the engine's 10.77.0.2`);
    assert.equal(ep.netns, '/var/run/docker/netns/abc', `endpoint netns: got ${ep.netns}`);
    // Plus the labels of its namespace (default), as every endpoint gets.
    assert.deepEqual(
      ep.labels.filter((l) => !l.includes('namespace')),
      ['container:app=web', 'container:com.docker.compose.project=shop', 'container:com.docker.compose.service=web'],
      `labels: got ${ep.labels.join(',')}`,
    );
    assert.equal(ports.attached.get(1)?.handoff, true, 'the port was made for handoff (left in the switch namespace)');

    // A second project with the same service name: the endpoint falls back to the container name.
    await post(sock, 'NetworkDriver.CreateEndpoint', { NetworkID: 'n1', EndpointID: 'e2', Interface: { Address: '10.77.0.3/24' } });
    containers.set('e2', { id: 'beef00000000bbbb', name: 'other_web_1', labels: { 'com.docker.compose.service': 'web', 'com.docker.compose.project': 'other' } });
    const join2 = await post(sock, 'NetworkDriver.Join', { NetworkID: 'n1', EndpointID: 'e2', SandboxKey: '/var/run/docker/netns/def' });
    assert.equal((join2.json.InterfaceName as { SrcName: string }).SrcName, 'mem.2', `second join: got ${JSON.stringify(join2.json)}`);
    assert.ok(agent.listEndpoints().some((e) => e.name === 'other-web-1'), `names: got ${agent.listEndpoints().map((e) => e.name).join(',')}, want other-web-1`);

    // Leave removes the switch endpoint; DeleteEndpoint and DeleteNetwork forget the rest.
    for (const [m, body] of [
      ['NetworkDriver.RevokeExternalConnectivity', { NetworkID: 'n1', EndpointID: 'e1' }],
      ['NetworkDriver.Leave', { NetworkID: 'n1', EndpointID: 'e1' }],
      ['NetworkDriver.DeleteEndpoint', { NetworkID: 'n1', EndpointID: 'e1' }],
    ] as const) {
      const got = await post(sock, m, body);
      assert.deepEqual(got.json, {}, `${m}: got ${JSON.stringify(got.json)}, want {}`);
    }
    assert.deepEqual(agent.listEndpoints().map((e) => e.name), ['other-web-1'], 'after leave: web removed');
    assert.equal(ports.attached.has(1), false, 'after leave: port 1 detached');
    await post(sock, 'NetworkDriver.DeleteNetwork', { NetworkID: 'n1' });
    assert.deepEqual(agent.listEndpoints(), [], 'after DeleteNetwork: no endpoints');
    assert.equal(nets.size, 0, 'after DeleteNetwork: network removed from the host');
  } finally {
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('driver errors: one line in Err, naming the problem', async () => {
  const { driver, containers } = setup();
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['NetworkDriver.CreateNetwork', { NetworkID: 'n9', IPv4Data: [] }, /no IPv4 subnet/],
    ['NetworkDriver.CreateNetwork', { NetworkID: 'n9', IPv4Data: [{ Pool: '10.99.0.0/24' }] }, /overlaps 10\.99\.0\.0\/16 of switch "other"/],
    ['NetworkDriver.CreateNetwork', { NetworkID: 'n9', IPv4Data: [{ Pool: '10.1.0.0/24' }, { Pool: '10.2.0.0/24' }] }, /2 IPv4 subnets; tunswitch supports one/],
    ['NetworkDriver.CreateEndpoint', { NetworkID: 'n2', EndpointID: 'e9', Interface: {} }, /no IPv4 address/],
    ['NetworkDriver.Join', { NetworkID: 'n2', EndpointID: 'nope', SandboxKey: '/x' }, /was not created through this switch/],
    ['NetworkDriver.Join', { NetworkID: 'n2', EndpointID: 'e9' }, /SandboxKey: missing/],
    ['NetworkDriver.Bogus', {}, /unknown method NetworkDriver\.Bogus/],
  ];
  for (const [m, body, want] of cases) {
    const got = await driver.handle(m, body);
    assert.match(String(got.Err), want, `${m} ${JSON.stringify(body)}: got ${JSON.stringify(got)}, want Err matching ${want}`);
    assert.match(String(got.Err), /^tunswitch: [^\n]+$/, `${m}: got ${JSON.stringify(got.Err)}, want one line starting "tunswitch: "`);
  }
  // A network the engine had before the switch started: looked up on first use.
  await driver.handle('NetworkDriver.CreateEndpoint', { NetworkID: 'old', EndpointID: 'e5', Interface: { Address: '10.77.0.9/24' } });
  containers.set('e5', { id: 'x', name: 'solo', labels: {} });
  const j = await driver.handle('NetworkDriver.Join', { NetworkID: 'old', EndpointID: 'e5', SandboxKey: '/var/run/docker/netns/s' });
  assert.equal(j.Gateway, '10.77.0.1', `join on an adopted network: got ${JSON.stringify(j)}, want gateway 10.77.0.1`);
  // Leave of an unknown endpoint, DeleteEndpoint twice: no error (the engine retries cleanups).
  for (const m of ['NetworkDriver.Leave', 'NetworkDriver.DeleteEndpoint', 'NetworkDriver.DeleteEndpoint']) {
    const got = await driver.handle(m, { NetworkID: 'old', EndpointID: 'zzz' });
    assert.deepEqual(got, {}, `${m} of an unknown endpoint: got ${JSON.stringify(got)}, want {}`);
  }
});
