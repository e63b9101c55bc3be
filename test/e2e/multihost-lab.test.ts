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
      .replace('../three-tier/policies/', POLICIES);
    for (const want of [`name: ${LAB}`, '23831', POLICIES]) assert.ok(mine.includes(want), `rewriting the example: got no "${want}"`);
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

  it('lab down removes everything: processes, namespaces, hosts files, run dirs, etcd data', async () => {
    const r = await cli(['lab', 'down', LAB]);
    assert.equal(r.code, 0, `lab down: got exit ${r.code}: ${r.stderr}`);
    assert.match(r.stdout, /is down/);
    assert.deepEqual(leftovers(), [], 'left behind by lab down');
  });
});
