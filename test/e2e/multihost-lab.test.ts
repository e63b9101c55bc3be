/**
 * The multi-host lab end to end, through the CLI a user runs: `lab up` of
 * examples/multi-host/lab.yaml (renamed mh83, etcd on 23831/23841: this test's pool is
 * 10.83/16 for endpoints and 10.84/16 for the underlay, its names start with mh83), `lab
 * status`, `lab matrix` across the three hosts against the three-tier policy, then `lab down`
 * and a check that nothing is left: processes, namespaces, hosts files, run directories,
 * the etcd data dir.
 *
 * Run under the e2e lock: flock /tmp/tunswitch-e2e.lock node --test dist/test/e2e/multihost-lab.test.js
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLI_MAIN, nsRun, removeTempDir, requireE2e, sh, tempDir } from './helpers.js';
import { etcdBinary } from '../kvstore/etcd-server.js';

const LAB = 'mh83';
const EXAMPLE = fileURLToPath(new URL('../../../examples/multi-host/lab.yaml', import.meta.url));
const POLICIES = fileURLToPath(new URL('../../../examples/three-tier/policies/', import.meta.url));

const ALLOW_FRONTEND_BACKEND_L3 = `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: mh83-icmp }
spec:
  endpointSelector: { matchLabels: { app: frontend } }
  egress: [ { toEndpoints: [ { matchLabels: { app: backend } } ] } ]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: mh83-icmp-in }
spec:
  endpointSelector: { matchLabels: { app: backend } }
  ingress: [ { fromEndpoints: [ { matchLabels: { app: frontend } } ] } ]
`;

function leftovers(): string[] {
  const out: string[] = [];
  const ns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n.startsWith(`${LAB}-`));
  out.push(...ns.map((n) => `namespace ${n}`));
  // The lab's run dirs (mh83, mh83-<host>), hosts files, and the lab etcd's data dir (tunswitch-mh83-etcd-*).
  for (const [dir, what, prefix] of [['/run/tunswitch', 'run dir', LAB], ['/etc/netns', 'netns etc', LAB], [tmpdir(), 'etcd data', `tunswitch-${LAB}-`]] as const) {
    if (!existsSync(dir)) continue;
    for (const f of readdirSync(dir)) if (f.startsWith(prefix)) out.push(`${what} ${join(dir, f)}`);
  }
  const ps = execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes(`/run/tunswitch/${LAB}/`) || l.includes(`tunswitch-${LAB}-etcd`));
  out.push(...ps.map((l) => `process ${l.trim()}`));
  return out;
}

function forceCleanup(): void {
  try {
    execFileSync(process.execPath, [CLI_MAIN, 'lab', 'down', LAB], { stdio: 'ignore', timeout: 30_000 });
  } catch {
    /* nothing there */
  }
}

describe('multi-host lab: examples/multi-host up, matrix across hosts, down', { timeout: 150_000 }, () => {
  let dir = '';
  let file = '';

  async function cli(args: string[], timeoutMs = 90_000): Promise<{ code: number; stdout: string; stderr: string }> {
    return sh(process.execPath, [CLI_MAIN, ...args], timeoutMs);
  }

  before(async () => {
    await requireE2e();
    assert.ok(etcdBinary(), 'got no etcd binary, want one (CI installs etcd-server)');
    forceCleanup();
    assert.deepEqual(leftovers(), [], 'leftovers of an earlier run');
    process.on('exit', forceCleanup);
    dir = tempDir('mh83-e2e-');
    const text = readFileSync(EXAMPLE, 'utf8');
    const mine = text
      .replace(/^name: mh$/m, `name: ${LAB}`)
      .replace('port: 2379, peerPort: 2380', 'port: 23831, peerPort: 23841')
      .replace('../three-tier/policies/', POLICIES)
      // The underlay links carry 1400 bytes while the switches are configured for 1500:
      // endpoints send up to 1450, the tunnel fits 1350 inside (frag-needed test below).
      .replace(/^leaseTtl: 5/m, 'underlayMtu: 1400\nleaseTtl: 5');
    for (const want of [`name: ${LAB}`, '23831', POLICIES, 'underlayMtu: 1400']) assert.ok(mine.includes(want), `rewriting the example: got no "${want}"`);
    file = join(dir, 'lab.yaml');
    writeFileSync(file, mine);
  });

  after(() => {
    forceCleanup();
    if (dir) removeTempDir(dir);
  });

  it('lab up brings up three hosts, each switch sees all three', async () => {
    const t0 = Date.now();
    const r = await cli(['lab', 'up', file, '-o', 'json']);
    assert.equal(r.code, 0, `lab up: got exit ${r.code}, want 0:\n${r.stderr}`);
    console.log(`# lab up of three hosts in ${Date.now() - t0} ms`);
    const st = await cli(['lab', 'status', '-o', 'json']);
    assert.equal(st.code, 0, st.stderr);
    const lab = (JSON.parse(st.stdout) as { name: string; kind?: string; hosts?: { name: string; running: boolean; clusterNodes: string[] | null; nodes: { name: string }[] }[] }[]).find((l) => l.name === LAB);
    assert.ok(lab?.hosts, `lab status: got no multi-host lab ${LAB}`);
    assert.deepEqual(lab.hosts.map((h) => [h.name, h.running, h.nodes.map((n) => n.name).join()]), [['host1', true, 'frontend'], ['host2', true, 'backend'], ['host3', true, 'db']]);
    for (const h of lab.hosts) assert.deepEqual(h.clusterNodes, ['host1', 'host2', 'host3'], `nodes seen by ${h.name}`);
    const nodes = await cli(['--lab', `${LAB}-host2`, 'node', 'list', '-o', 'json']);
    assert.equal(nodes.code, 0, `--lab ${LAB}-host2 node list: ${nodes.stderr}`);
    // Names resolve across hosts (hosts files).
    const ping = await nsRun(`${LAB}-frontend`, ['getent', 'ahostsv4', 'db']);
    assert.match(ping.stdout, /^10\.83\.3\.\d+\s/, `getent hosts db in frontend: got ${ping.stdout.trim()}`);
  });

  it('lab matrix: the three-tier policy holds across hosts, every verdict explained', async () => {
    const r = await cli(['lab', 'matrix', LAB, '-o', 'json']);
    const rows = JSON.parse(r.stdout || '[]') as { from: string; to: string; expect: string; got: string; ok: boolean; reason: string; family?: number }[];
    const bad = rows.filter((x) => !x.ok).map((x) => `${x.from}->${x.to}: got ${x.got}, want ${x.expect} (${x.reason})`);
    assert.deepEqual(bad, [], 'matrix mismatches');
    assert.equal(r.code, 0, `lab matrix: got exit ${r.code}, want 0: ${r.stderr}`);
    assert.equal(rows.length, 9, `got ${rows.length} rows, want 9 (the three-tier flows without the outside host)`);
    const row = (from: string, to: string, expect: string): (typeof rows)[number] | undefined => rows.find((x) => x.from === from && x.to === to && x.expect === expect && (x.family ?? 4) === 4);
    assert.match(row('frontend', 'backend', 'allowed')?.reason ?? '', /backend \(ingress\)/, 'the ingress verdict comes from the receiving host (host2)');
    assert.match(row('backend', 'db', 'allowed')?.reason ?? '', /db \(ingress\)/);
    assert.match(row('db', 'backend', 'denied')?.reason ?? '', /Policy denied at db egress/);
  });

  it('observe on the receiving host names the node of each side', async () => {
    const r = await cli(['--lab', `${LAB}-host2`, 'observe', '--last', '200', '--to-port', '8080', '-o', 'json']);
    assert.equal(r.code, 0, `observe on host2: ${r.stderr}`);
    const evs = r.stdout.trim().split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as { node_name?: string; source: { node?: string; ip: string }; destination: { node?: string; endpoint?: string } });
    const e = evs.find((x) => x.destination.endpoint === 'backend' && x.source.ip.startsWith('10.83.1.'));
    assert.ok(e, `got no flow frontend (host1) -> backend on host2 among ${evs.length} events`);
    assert.deepEqual([e.node_name, e.source.node, e.destination.node], ['host2', 'host1', 'host2']);
    const c = await cli(['--lab', `${LAB}-host1`, 'observe', '--last', '200', '--to-port', '8080']);
    assert.match(c.stdout, /frontend:\d+ \[host1\] \(ID:\d+\) -> 10\.83\.2\.\d+:8080 \[host2\] \(ID:\d+\) /, `compact observe on host1: got\n${c.stdout.slice(0, 600)}`);
  });

  it('a packet too big for the underlay gets ICMP frag-needed / packet too big with the MTU, counted', async () => {
    // ICMP between frontend and backend is denied by the three-tier policy: allow it (all L3) for this test.
    const pol = join(dir, 'icmp.yaml');
    writeFileSync(pol, ALLOW_FRONTEND_BACKEND_L3);
    const imp = await cli(['--lab', `${LAB}-host1`, 'policy', 'import', pol]);
    assert.equal(imp.code, 0, `policy import: ${imp.stderr}`);
    const fe = `${LAB}-frontend`;
    const be = (await nsRun(fe, ['getent', 'ahostsv4', 'backend'])).stdout.split(/\s/)[0] as string;
    const be6 = (await nsRun(fe, ['getent', 'ahostsv6', 'backend'])).stdout.split(/\s/)[0] as string;
    let ok = false;
    for (let i = 0; i < 20 && !ok; i++) ok = (await nsRun(fe, ['ping', '-c', '1', '-W', '1', '-s', '1300', '-M', 'do', be])).code === 0;
    assert.ok(ok, 'ping -s 1300 (1328 bytes: fits the tunnel) frontend -> backend must work once the policy is on host2');
    const big = await nsRun(fe, ['ping', '-c', '3', '-i', '0.3', '-W', '1', '-s', '1400', '-M', 'do', be]);
    assert.notEqual(big.code, 0, 'ping -s 1400 -M do must fail');
    assert.match(big.stdout + big.stderr, /(Frag needed and DF set \(mtu = 1350\)|message too long, mtu=1350)/, `ping -s 1400 -M do: got\n${big.stdout}${big.stderr}`);
    const big6 = await nsRun(fe, ['ping', '-6', '-c', '3', '-i', '0.3', '-W', '1', '-s', '1400', '-M', 'do', be6]);
    assert.match(big6.stdout + big6.stderr, /(Packet too big: mtu=1350|message too long, mtu=1350)/, `ping -6 -s 1400 -M do: got\n${big6.stdout}${big6.stderr}`);
    const drops = await cli(['--lab', `${LAB}-host1`, 'observe', '--last', '500', '--verdict', 'DROPPED', '-o', 'json']);
    assert.match(drops.stdout, /"drop_reason":136/, 'observe on host1 shows the drop (136 Fragmentation needed)');
    const m = await cli(['--lab', `${LAB}-host1`, 'metrics', '-o', 'json']);
    const series = (JSON.parse(m.stdout) as Record<string, { labels: Record<string, string>; value: number }[]>).tunswitch_vxlan_packets_total ?? [];
    const tooBig = series.find((x) => x.labels.direction === 'too_big')?.value ?? 0;
    assert.ok(tooBig >= 2, `got tunswitch_vxlan_packets_total{direction="too_big"} ${tooBig} on host1, want >= 2 (IPv4 and IPv6)`);
    console.log(`# packets answered with frag-needed / packet too big on host1: ${tooBig}`);
    await cli(['--lab', `${LAB}-host1`, 'policy', 'delete', 'mh83-icmp']);
  });

  it('lab down removes everything: processes, namespaces, hosts files, run dirs, etcd data', async () => {
    const r = await cli(['lab', 'down', LAB]);
    assert.equal(r.code, 0, `lab down: got exit ${r.code}: ${r.stderr}`);
    assert.match(r.stdout, /is down/);
    assert.deepEqual(leftovers(), [], 'left behind by lab down');
  });
});
