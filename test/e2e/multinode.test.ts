/**
 * Multi-node end to end: two switches on two "hosts" (network namespaces mn98-h1, mn98-h2)
 * joined by an underlay bridge (namespace mn98-ul, 10.99.0.0/24) where a real etcd runs
 * (10.99.0.254:23795). Each switch is `tunswitch run --kvstore ... --node-ip ...` inside its
 * host namespace; endpoints are namespaces mn98h1-web, mn98h1-other, mn98h2-db. A Linux
 * vxlan device in mn98-kx (10.99.0.9) talks to the switch of h1 (interop).
 *
 *   h1 (10.99.0.1, pool 10.98.1.0/24): web 10.98.1.10 {app: web}, other 10.98.1.11 {app: other}
 *   h2 (10.99.0.2, pool 10.98.2.0/24): db 10.98.2.10 {app: db}      (io: readwrite; h1: auto)
 *   kx (10.99.0.9): kernel vxlan, inner address 10.98.9.9
 *
 * Every name starts with mn98, every address is in 10.98/16 or 10.99.0/24. Run under the e2e
 * lock: flock /tmp/tunswitch-e2e.lock node --test dist/test/e2e/multinode.test.js
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { writeFileSync, statSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { CLI_MAIN, nsRun, requireE2e, sh, sha256File, sleep, tempDir, removeTempDir } from './helpers.js';
import { EtcdServer, etcdBinary } from '../kvstore/etcd-server.js';
import { TUNNEL_DST_MAC_TEXT, TUNNEL_SRC_MAC_TEXT } from '../../src/datapath/vxlan.js';

const UL = 'mn98-ul';
const KX = 'mn98-kx';
const LEASE_TTL = 3;
const HOSTS = [
  { name: 'h1', ns: 'mn98-h1', ip: '10.99.0.1', pool: '10.98.1.0/24', eps: [['web', 'web', '10.98.1.10'], ['other', 'other', '10.98.1.11']] },
  { name: 'h2', ns: 'mn98-h2', ip: '10.99.0.2', pool: '10.98.2.0/24', eps: [['db', 'db', '10.98.2.10']] },
] as const;
const WEB = '10.98.1.10';
const DB = '10.98.2.10';
const KX_INNER = '10.98.9.9';

const ALLOW_WEB_TO_DB = `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: db-from-web }
spec:
  endpointSelector: { matchLabels: { app: db } }
  ingress:
    - fromEndpoints: [ { matchLabels: { app: web } } ]
      toPorts: [ { ports: [ { port: "5432", protocol: TCP }, { port: "5353", protocol: UDP } ] } ]
`;

interface Switch {
  host: (typeof HOSTS)[number];
  cfg: string;
  socket: string;
  proc: ChildProcess | null;
  log: string;
}

async function must(file: string, args: string[]): Promise<void> {
  const r = await sh(file, args);
  assert.equal(r.code, 0, `${file} ${args.join(' ')}: got exit ${r.code} (${r.stderr.trim()}), want 0`);
}

function allNamespaces(): string[] {
  return [UL, KX, ...HOSTS.map((h) => h.ns), ...HOSTS.flatMap((h) => h.eps.map(([n]) => `mn98${h.name}-${n}`))];
}

function cleanupSync(): void {
  for (const ns of allNamespaces()) {
    try {
      execFileSync('ip', ['netns', 'delete', ns], { stdio: 'ignore' });
    } catch {
      /* not there */
    }
  }
}

describe('multi-node: two switches over etcd and VXLAN', { timeout: 280_000 }, () => {
  let dir = '';
  let etcd: EtcdServer | null = null;
  const sws: Switch[] = [];

  async function startSwitch(sw: Switch): Promise<void> {
    const child = spawn(
      'ip',
      ['netns', 'exec', sw.host.ns, process.execPath, CLI_MAIN, '--socket', sw.socket, 'run', '-c', sw.cfg, '--state-dir', join(dir, `state-${sw.host.name}`), '--no-metrics',
        '--kvstore', 'etcd://10.99.0.254:23795', '--node-name', sw.host.name, '--node-ip', sw.host.ip, '--lease-ttl', String(LEASE_TTL)],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    sw.proc = child;
    sw.log = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`switch ${sw.host.name} not ready after 30 s; log:\n${sw.log}`)), 30_000);
      child.stderr!.setEncoding('utf8').on('data', (s: string) => {
        sw.log += s;
        if (/ready: \d+ endpoints/.test(sw.log)) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`switch ${sw.host.name} exited (${code}) before ready; log:\n${sw.log}`));
      });
    });
  }

  async function cli<T>(sw: Switch, args: string[]): Promise<T> {
    const r = await sh(process.execPath, [CLI_MAIN, '--socket', sw.socket, ...args, '-o', 'json']);
    assert.equal(r.code, 0, `tunswitch ${args.join(' ')} on ${sw.host.name}: got exit ${r.code} (${r.stderr.trim()}), want 0`);
    return JSON.parse(r.stdout) as T;
  }

  async function waitFor(what: string, fn: () => Promise<boolean>, ms: number): Promise<number> {
    const t0 = Date.now();
    while (!(await fn())) {
      assert.ok(Date.now() - t0 < ms, `timed out after ${ms} ms waiting for ${what}`);
      await sleep(100);
    }
    return Date.now() - t0;
  }

  async function ping(ns: string, to: string, tries = 3): Promise<boolean> {
    for (let i = 0; i < tries; i++) {
      const r = await nsRun(ns, ['ping', '-c', '2', '-i', '0.2', '-W', '1', to], 10_000);
      if (r.code === 0) return true;
    }
    return false;
  }

  async function tcpOk(ns: string, to: string, port: number): Promise<boolean> {
    const r = await nsRun(ns, ['nc', '-z', '-w', '2', to, String(port)], 8000);
    return r.code === 0;
  }

  before(async () => {
    await requireE2e();
    assert.ok(etcdBinary(), 'got no etcd binary, want one (CI installs etcd-server)');
    const r = await sh('sh', ['-c', 'ip link add mn98probe type vxlan id 1 dstport 8472 && ip link del mn98probe']);
    assert.equal(r.code, 0, `got no vxlan support in the kernel (${r.stderr.trim()}), want it`);
    cleanupSync();
    process.on('exit', cleanupSync);
    dir = tempDir('mn98-e2e-');
    mkdirSync(join(dir, 'data'));
    // Underlay: a bridge in mn98-ul, one veth per host namespace.
    for (const ns of [UL, KX, ...HOSTS.map((h) => h.ns)]) await must('ip', ['netns', 'add', ns]);
    await must('ip', ['-n', UL, 'link', 'add', 'mn98br', 'type', 'bridge']);
    await must('ip', ['-n', UL, 'addr', 'add', '10.99.0.254/24', 'dev', 'mn98br']);
    await must('ip', ['-n', UL, 'link', 'set', 'mn98br', 'up']);
    await must('ip', ['-n', UL, 'link', 'set', 'lo', 'up']);
    const legs: [string, string, string][] = [...HOSTS.map((h) => [h.ns, h.name, h.ip] as [string, string, string]), [KX, 'kx', '10.99.0.9']];
    for (const [ns, tag, ip] of legs) {
      await must('ip', ['link', 'add', `mn98${tag}a`, 'netns', ns, 'type', 'veth', 'peer', 'name', `mn98${tag}b`, 'netns', UL]);
      await must('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', `mn98${tag}a`]);
      await must('ip', ['-n', ns, 'link', 'set', `mn98${tag}a`, 'up']);
      await must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      await must('ip', ['-n', UL, 'link', 'set', `mn98${tag}b`, 'master', 'mn98br']);
      await must('ip', ['-n', UL, 'link', 'set', `mn98${tag}b`, 'up']);
    }
    etcd = new EtcdServer(23795, 23805, { netns: UL, host: '10.99.0.254' });
    await etcd.start();
    for (const h of HOSTS) {
      for (const [n] of h.eps) await must('ip', ['netns', 'add', `mn98${h.name}-${n}`]);
      const cfg = join(dir, `${h.name}.yaml`);
      const lines = [
        `name: mn98${h.name}`,
        `pool: { ipv4: ${h.pool} }`,
        'workers: 2',
        'hostPort: false',
        // Both I/O engines carry the underlay: h1 io_uring, h2 read/write.
        `io: ${h.name === 'h2' ? 'readwrite' : 'uring'}`,
        'nodes:',
        ...h.eps.map(([n, app, ip]) => `  ${n}: { labels: { app: ${app} }, ipv4: ${ip}, defaultRoute: true }`),
      ];
      writeFileSync(cfg, lines.join('\n') + '\n');
      const sw: Switch = { host: h, cfg, socket: join(dir, `${h.name}.sock`), proc: null, log: '' };
      sws.push(sw);
      await startSwitch(sw);
    }
  });

  after(async () => {
    for (const sw of sws) {
      if (sw.proc && sw.proc.exitCode === null) {
        sw.proc.kill('SIGTERM');
        await Promise.race([new Promise((r) => sw.proc!.once('exit', r)), sleep(10_000)]);
        if (sw.proc.exitCode === null) sw.proc.kill('SIGKILL');
      }
    }
    if (etcd) await etcd.stop();
    cleanupSync();
    if (dir) removeTempDir(dir);
  });

  it('identities agree on both nodes; nodes and remote ipcache entries are listed', async () => {
    const [h1, h2] = sws as [Switch, Switch];
    await waitFor('h1 to see db in its ipcache', async () => (await cli<{ cidr: string }[]>(h1, ['ipcache', 'list'])).some((e) => e.cidr === `${DB}/32`), 10_000);
    const ids1 = await cli<{ id: number; labels: string[] }[]>(h1, ['identity', 'list']);
    const ids2 = await cli<{ id: number; labels: string[] }[]>(h2, ['identity', 'list']);
    const byLabels = (ids: { id: number; labels: string[] }[]): Map<string, number> => new Map(ids.filter((i) => i.id >= 256 && i.id < 65536).map((i) => [i.labels.join(';'), i.id]));
    const m1 = byLabels(ids1);
    const m2 = byLabels(ids2);
    for (const [l, id] of m1) assert.equal(m2.get(l), id, `identity of ${l}: got ${m2.get(l)} on h2, want ${id} (h1's)`);
    assert.ok(m1.size >= 3, `got ${m1.size} workload identities on h1, want >= 3 (web, other, db)`);
    const e1 = (await cli<{ ioEngine: string }>(h1, ['status'])).ioEngine;
    const e2 = (await cli<{ ioEngine: string }>(h2, ['status'])).ioEngine;
    assert.equal(e2, 'readwrite', `h2 engine: got ${e2}, want readwrite`);
    console.log(`# I/O engines: h1 ${e1}, h2 ${e2}`);
    const nodes = await cli<{ name: string; ip: string }[]>(h1, ['node', 'list']);
    assert.deepEqual(nodes.map((n) => [n.name, n.ip]), [['h1', '10.99.0.1'], ['h2', '10.99.0.2']]);
    const e = (await cli<{ cidr: string; tunnel?: string; node?: string; source: string }[]>(h1, ['ipcache', 'list'])).find((x) => x.cidr === `${DB}/32`);
    assert.deepEqual([e?.source, e?.tunnel, e?.node], ['kvstore', '10.99.0.2', 'h2']);
  });

  it('cross-host ping both ways, TCP sha256-exact, UDP', async () => {
    assert.ok(await ping('mn98h1-web', DB), 'ping web (h1) -> db (h2)');
    assert.ok(await ping('mn98h2-db', WEB), 'ping db (h2) -> web (h1)');
    // TCP: 2 MB from web to db, byte-exact.
    const src = join(dir, 'data', 'blob');
    const out = join(dir, 'data', 'blob.out');
    writeFileSync(src, randomBytes(2 << 20));
    const srv = spawn('ip', ['netns', 'exec', 'mn98h2-db', 'sh', '-c', `exec nc -d -l ${DB} 5432 > '${out}'`], { stdio: 'ignore' });
    try {
      await waitFor('db to listen on 5432', async () => (await nsRun('mn98h2-db', ['ss', '-ltnH', 'sport = :5432'])).stdout.trim() !== '', 5000);
      const s = await nsRun('mn98h1-web', ['sh', '-c', `exec nc -N -w 10 ${DB} 5432 < '${src}'`], 60_000);
      assert.equal(s.code, 0, `nc sender: got exit ${s.code} (${s.stderr.trim()}), want 0`);
      await waitFor('the receiver to finish', async () => srv.exitCode !== null, 10_000);
      assert.equal(await sha256File(out), await sha256File(src), 'TCP web -> db: sha256 differs');
    } finally {
      if (srv.exitCode === null) srv.kill('SIGKILL');
    }
    // UDP: one 1000-byte datagram db -> web.
    const uout = join(dir, 'data', 'udp.out');
    const usrc = join(dir, 'data', 'udp.in');
    writeFileSync(usrc, randomBytes(1000));
    const us = spawn('ip', ['netns', 'exec', 'mn98h1-web', 'socat', '-u', '-T', '3', `UDP4-RECV:6000,bind=${WEB}`, `OPEN:${uout},creat,trunc`], { stdio: 'ignore' });
    try {
      await waitFor('web to listen on udp 6000', async () => (await nsRun('mn98h1-web', ['ss', '-lunH', 'sport = :6000'])).stdout.trim() !== '', 5000);
      const s = await nsRun('mn98h2-db', ['socat', '-u', `OPEN:${usrc}`, `UDP4-SENDTO:${WEB}:6000`], 10_000);
      assert.equal(s.code, 0, `socat sender: got exit ${s.code}, want 0`);
      await waitFor('the datagram', async () => {
        try {
          return statSync(uout).size >= 1000;
        } catch {
          return false;
        }
      }, 5000);
      assert.equal(await sha256File(uout), await sha256File(usrc), 'UDP db -> web: sha256 differs');
    } finally {
      if (us.exitCode === null) us.kill('SIGKILL');
    }
  });

  it('a policy imported on h1 is enforced on h2 from the VNI identity: web allowed, other denied', async () => {
    const [h1, h2] = sws as [Switch, Switch];
    const f = join(dir, 'policy.yaml');
    writeFileSync(f, ALLOW_WEB_TO_DB);
    const r = await sh(process.execPath, [CLI_MAIN, '--socket', h1.socket, 'policy', 'import', f]);
    assert.equal(r.code, 0, `policy import on h1: got exit ${r.code} (${r.stderr.trim()}), want 0`);
    await waitFor('h2 to compile db-from-web', async () => (await cli<{ name: string }[]>(h2, ['policy', 'get'])).some((p) => p.name === 'db-from-web'), 10_000);
    const srv = spawn('ip', ['netns', 'exec', 'mn98h2-db', 'nc', '-k', '-l', DB, '5432'], { stdio: 'ignore' });
    try {
      await waitFor('db to listen', async () => (await nsRun('mn98h2-db', ['ss', '-ltnH', 'sport = :5432'])).stdout.trim() !== '', 5000);
      assert.ok(await tcpOk('mn98h1-web', DB, 5432), 'web (h1) -> db:5432 (h2) must connect');
      assert.equal(await tcpOk('mn98h1-other', DB, 5432), false, 'other (h1) -> db:5432 (h2) must be denied on h2');
      assert.equal(await ping('mn98h1-web', DB, 1), false, 'ICMP web -> db is not allowed by the policy');
    } finally {
      srv.kill('SIGKILL');
    }
    const st = await cli<{ counters: { dropped: number } }>(h2, ['status']);
    assert.ok(st.counters.dropped >= 1, `got ${st.counters.dropped} drops on h2, want >= 1 (ingress enforced on the receiving host)`);
  });

  it('a Linux vxlan device exchanges packets with the switch (interop)', async () => {
    const [h1] = sws as [Switch];
    const eps = await cli<{ name: string; identity: number }[]>(h1, ['endpoint', 'list']);
    const webId = eps.find((e) => e.name === 'web')?.identity as number;
    assert.ok(webId >= 256, `web identity ${webId}`);
    // The kernel device's VNI is web's identity: what the switch puts in the VNI for web's packets.
    await must('ip', ['-n', KX, 'link', 'add', 'mn98vx', 'address', TUNNEL_DST_MAC_TEXT, 'type', 'vxlan', 'id', String(webId), 'dstport', '8472', 'remote', '10.99.0.1', 'local', '10.99.0.9', 'dev', 'mn98kxa']);
    await must('ip', ['-n', KX, 'addr', 'add', `${KX_INNER}/32`, 'dev', 'mn98vx']);
    await must('ip', ['-n', KX, 'link', 'set', 'mn98vx', 'up']);
    await must('ip', ['-n', KX, 'route', 'add', '10.98.1.0/24', 'dev', 'mn98vx']);
    await must('ip', ['-n', KX, 'neigh', 'add', WEB, 'lladdr', TUNNEL_SRC_MAC_TEXT, 'dev', 'mn98vx', 'nud', 'permanent']);
    const put = await sh('sh', ['-c', `printf '%s' '{"entries":[{"cidr":"${KX_INNER}/32","identity":2,"tunnel":"10.99.0.9"}]}' | curl -sf --unix-socket ${h1.socket} -X PUT -H 'content-type: application/json' --data-binary @- http://x/v1/ipcache`]);
    assert.equal(put.code, 0, `PUT /v1/ipcache on h1: got exit ${put.code} (${put.stderr.trim()}), want 0`);
    assert.ok(await ping('mn98h1-web', KX_INNER), 'ping web (switch) -> kernel vxlan');
    assert.ok(await ping(KX, WEB), 'ping kernel vxlan -> web (switch)');
  });

  it('etcd stopped 10 s under traffic: the established flow survives and the state converges', async () => {
    const [h1, h2] = sws as [Switch, Switch];
    // A bounded flow: 75 pings at 0.2 s (15 s) from db to web, etcd away for 10 s of it.
    const flow = nsRun('mn98h2-db', ['ping', '-c', '75', '-i', '0.2', '-W', '1', WEB], 40_000);
    await sleep(2000);
    await (etcd as EtcdServer).halt();
    await sleep(10_000);
    await (etcd as EtcdServer).start();
    const r = await flow;
    const m = /(\d+) received/.exec(r.stdout);
    const got = m ? Number(m[1]) : 0;
    assert.ok(got >= 70, `got ${got} of 75 replies while etcd was away, want >= 70`);
    for (const sw of [h1, h2]) {
      await waitFor(`${sw.host.name} kvstore connected again`, async () => (await cli<{ kvstore?: { state: string } }>(sw, ['status'])).kvstore?.state === 'connected', 20_000);
    }
    assert.ok(await ping('mn98h1-web', KX_INNER), 'traffic still flows after etcd returned');
  });

  it('SIGKILL of h2: its ipcache entries vanish from h1 within TTL + 2 s, traffic to it is dropped (151 UNROUTABLE)', async () => {
    const [h1, h2] = sws as [Switch, Switch];
    h2.proc!.kill('SIGKILL');
    await new Promise((r) => h2.proc!.once('exit', r));
    const ms = await waitFor('db to vanish from h1', async () => !(await cli<{ cidr: string }[]>(h1, ['ipcache', 'list'])).some((e) => e.cidr === `${DB}/32`), (LEASE_TTL + 2) * 1000 + 1500);
    console.log(`# h2's entries gone from h1 ${ms} ms after SIGKILL (lease TTL ${LEASE_TTL} s)`);
    const t0 = Date.now();
    const r = await nsRun('mn98h1-web', ['nc', '-z', '-w', '2', DB, '5432'], 8000);
    assert.notEqual(r.code, 0, 'web -> db must fail once h2 is gone');
    const nodes = await cli<{ name: string }[]>(h1, ['node', 'list']);
    assert.deepEqual(nodes.map((n) => n.name), ['h1'], `got nodes ${nodes.map((n) => n.name).join(',')}, want h1 only`);
    console.log(`# connection attempt to the dead node's endpoint failed after ${Date.now() - t0} ms`);
  });

  it('h2 started again on its state directory after the SIGKILL: ready, db has the cluster\'s identity on both nodes, web -> db connects', async () => {
    const [h1, h2] = sws as [Switch, Switch];
    const t0 = Date.now();
    await startSwitch(h2); // the saved identity numbers must not clash with the ones synced from etcd
    const readyMs = Date.now() - t0;
    await waitFor('db back in h1\'s ipcache', async () => (await cli<{ cidr: string }[]>(h1, ['ipcache', 'list'])).some((e) => e.cidr === `${DB}/32`), 10_000);
    const onH2 = (await cli<{ name: string; identity: number }[]>(h2, ['endpoint', 'list'])).find((e) => e.name === 'db')?.identity;
    const onH1 = (await cli<{ cidr: string; identity: number }[]>(h1, ['ipcache', 'list'])).find((e) => e.cidr === `${DB}/32`)?.identity;
    assert.ok(onH2 !== undefined && onH2 >= 256, `db's identity on h2 got ${onH2}`);
    assert.equal(onH1, onH2, `db's identity: h1's ipcache says ${onH1}, h2 says ${onH2}`);
    await waitFor('h2 to compile db-from-web again', async () => (await cli<{ name: string }[]>(h2, ['policy', 'get'])).some((p) => p.name === 'db-from-web'), 10_000);
    const srv = spawn('ip', ['netns', 'exec', 'mn98h2-db', 'nc', '-k', '-l', DB, '5432'], { stdio: 'ignore' });
    try {
      await waitFor('db to listen', async () => (await nsRun('mn98h2-db', ['ss', '-ltnH', 'sport = :5432'])).stdout.trim() !== '', 5000);
      let ok = false;
      for (let i = 0; i < 5 && !ok; i++) ok = await tcpOk('mn98h1-web', DB, 5432);
      assert.ok(ok, 'web (h1) -> db:5432 (h2) after h2 came back');
    } finally {
      srv.kill('SIGKILL');
    }
    console.log(`# h2 ready again ${readyMs} ms after its start on the old state directory; db identity ${onH2} on both nodes`);
  });
});
