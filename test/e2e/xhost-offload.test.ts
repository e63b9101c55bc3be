/**
 * Offload with a VXLAN underlay, end to end (issue 11: "with GSO packets, segment for the
 * underlay"). A two-host lab through the CLI (`lab up`, lab xh, etcd on 23891/23901, pool
 * 10.89/16 and fd00:89::/32): host h1 with endpoint a (offload on), host h2 with b (offload
 * on) and q (offload off). The endpoints' kernels hand their switch 64 KiB TSO / USO
 * super-packets; the switch splits them for the tunnel (src/runtime/underlay.ts, offload).
 *   - TCP a -> b over IPv4 (64 MB) and IPv6 (24 MB), a -> q (offload on -> off, 24 MB), each
 *     sha256-exact at both ends;
 *   - UDP sent with UDP_SEGMENT (USO) a -> b, every datagram received intact;
 *   - h1's metrics show GSO super-packets were received and split for the tunnel
 *     (tunswitch_gso_packets_total{op="split"}, segments), so the test fails when offload
 *     is silently off; nothing was dropped as GSO_SPLIT / FRAG_NEEDED on h1, nor on h2 at its
 *     shard ring (230: the underlay is read only as far as the ring has room).
 * Then the lab again with TUNSWITCH_UNDERLAY_UDP_GSO=1 (the split frames leave with
 * UDP_SEGMENT, the kernel cuts the outer datagrams): TCP a -> b 32 MB and USO again.
 *
 * Run under the e2e lock: flock /tmp/tunswitch-e2e.lock node --test dist/test/e2e/xhost-offload.test.js
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI_MAIN, metricSum, nsRun, removeTempDir, requireE2e, sh, sha256File, sleep, tempDir } from './helpers.js';
import { etcdBinary } from '../kvstore/etcd-server.js';

const LAB = 'xh';

const LAB_YAML = `name: ${LAB}
underlay: 10.89.0.0/24
etcd: { port: 23891, peerPort: 23901 }
leaseTtl: 5
workers: 1
hosts:
  h1:
    pool: { ipv4: 10.89.1.0/24, ipv6: "fd00:89:1::/64" }
    nodes:
      a: { labels: { app: xa }, offload: true }
  h2:
    pool: { ipv4: 10.89.2.0/24, ipv6: "fd00:89:2::/64" }
    nodes:
      b: { labels: { app: xb }, offload: true }
      q: { labels: { app: xq }, offload: false }
`;

/** UDP_SEGMENT sender: argv host port sends segs size; datagram k carries k (u32) then a fill byte k & 0xff. */
const USO_SEND = `
import socket, struct, sys, time
host, port, sends, segs, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
fam = socket.AF_INET6 if ':' in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
k = 0
for i in range(sends):
    buf = b''.join(struct.pack('!I', k + j) + bytes([(k + j) & 0xff]) * (size - 4) for j in range(segs))
    s.sendmsg([buf], [(socket.SOL_UDP, 103, struct.pack('H', size))], 0, (host, port))
    k += segs
    time.sleep(0.002)
`;

/** Receiver: counts intact datagrams of `size` until idle for 2 s; prints "good bad". */
const USO_RECV = `
import socket, struct, sys
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fam = socket.AF_INET6 if ':' in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind((host, port))
s.settimeout(8)
good = bad = 0
first = True
while True:
    try:
        d = s.recv(65535)
    except socket.timeout:
        break
    if first:
        s.settimeout(2)
        first = False
    k = struct.unpack('!I', d[:4])[0] if len(d) >= 4 else 0
    if len(d) == size and d[4:] == bytes([k & 0xff]) * (size - 4):
        good += 1
    else:
        bad += 1
print(good, bad, flush=True)
`;

function forceCleanup(): void {
  try {
    execFileSync(process.execPath, [CLI_MAIN, 'lab', 'down', LAB], { stdio: 'ignore', timeout: 30_000 });
  } catch {
    /* nothing there */
  }
}

type Metrics = Record<string, { labels: Record<string, string>; value: number }[]>;

for (const udpGso of [false, true]) describe(`offload with a VXLAN underlay: GSO packets are split for the tunnel${udpGso ? ', sent with UDP_SEGMENT' : ''}`, { timeout: 120_000 }, () => {
  let dir = '';
  const addr: Record<string, string> = {};

  async function cli(args: string[], timeoutMs = 60_000): Promise<{ code: number; stdout: string; stderr: string }> {
    return sh(process.execPath, [CLI_MAIN, ...args], timeoutMs);
  }

  async function metrics(host: string): Promise<Metrics> {
    const m = await cli(['--lab', `${LAB}-${host}`, 'metrics', '-o', 'json']);
    assert.equal(m.code, 0, `metrics on ${host}: ${m.stderr}`);
    return JSON.parse(m.stdout) as Metrics;
  }

  async function waitFor(what: string, fn: () => Promise<boolean>, ms: number): Promise<void> {
    const t0 = Date.now();
    while (Date.now() - t0 < ms) {
      if (await fn()) return;
      await sleep(100);
    }
    assert.fail(`timed out after ${ms} ms waiting for ${what}`);
  }

  /** `mb` MB of random bytes from node `from` to `to`'s address `ip`, port `port`, sha256-exact. */
  async function tcpTransfer(from: string, to: string, ip: string, port: number, mb: number): Promise<number> {
    const src = join(dir, `${from}-${to}-${port}.in`);
    const out = join(dir, `${from}-${to}-${port}.out`);
    writeFileSync(src, randomBytes(mb << 20));
    const srv = spawn('ip', ['netns', 'exec', `${LAB}-${to}`, 'sh', '-c', `exec nc -d -l ${ip} ${port} > '${out}'`], { stdio: 'ignore' });
    try {
      await waitFor(`${to} to listen on ${port}`, async () => (await nsRun(`${LAB}-${to}`, ['ss', '-ltnH', `sport = :${port}`])).stdout.trim() !== '', 5000);
      const t0 = Date.now();
      const s = await nsRun(`${LAB}-${from}`, ['sh', '-c', `exec nc -N -w 10 ${ip} ${port} < '${src}'`], 40_000);
      assert.equal(s.code, 0, `nc ${from} -> ${to}: got exit ${s.code} (${s.stderr.trim()}), want 0`);
      await waitFor(`the receiver ${to} to finish`, async () => srv.exitCode !== null, 10_000);
      const ms = Date.now() - t0;
      assert.equal(await sha256File(out), await sha256File(src), `TCP ${from} -> ${to} (${ip}): sha256 differs`);
      return ms;
    } finally {
      if (srv.exitCode === null) srv.kill('SIGKILL');
    }
  }

  before(async () => {
    await requireE2e();
    assert.ok(etcdBinary(), 'got no etcd binary, want one (CI installs etcd-server)');
    forceCleanup();
    process.on('exit', forceCleanup);
    dir = tempDir('xh-e2e-');
    const file = join(dir, 'lab.yaml');
    writeFileSync(file, LAB_YAML);
    // The switches inherit the environment of lab up (src/lab/multihost.ts spawns them).
    if (udpGso) process.env.TUNSWITCH_UNDERLAY_UDP_GSO = '1';
    const r = await cli(['lab', 'up', file, '-o', 'json'], 90_000);
    delete process.env.TUNSWITCH_UNDERLAY_UDP_GSO;
    assert.equal(r.code, 0, `lab up: got exit ${r.code}, want 0:\n${r.stderr}`);
    for (const n of ['b', 'q']) {
      addr[n] = (await nsRun(`${LAB}-a`, ['getent', 'ahostsv4', n])).stdout.split(/\s/)[0] as string;
      addr[`${n}6`] = (await nsRun(`${LAB}-a`, ['getent', 'ahostsv6', n])).stdout.split(/\s/)[0] as string;
    }
    assert.match(addr.b ?? '', /^10\.89\.2\.\d+$/, `address of b: got ${addr.b}`);
    assert.match(addr.b6 ?? '', /^fd00:89:2::/, `IPv6 address of b: got ${addr.b6}`);
    await waitFor('a to reach b and q across the tunnel', async () => {
      const p = await nsRun(`${LAB}-a`, ['ping', '-c', '1', '-W', '1', addr.b as string]);
      const p2 = await nsRun(`${LAB}-a`, ['ping', '-c', '1', '-W', '1', addr.q as string]);
      const p6 = await nsRun(`${LAB}-a`, ['ping', '-6', '-c', '1', '-W', '1', addr.b6 as string]);
      return p.code === 0 && p2.code === 0 && p6.code === 0;
    }, 15_000);
  });

  after(() => {
    forceCleanup();
    if (dir) removeTempDir(dir);
  });

  const mb4 = udpGso ? 32 : 64;
  it(`TCP a -> b (offload on -> on), IPv4 ${mb4} MB${udpGso ? '' : ' and IPv6 24 MB'}, sha256-exact; h1 split GSO packets`, async () => {
    const before1 = await metrics('h1');
    const ms4 = await tcpTransfer('a', 'b', addr.b as string, 5201, mb4);
    const ms6 = udpGso ? 0 : await tcpTransfer('a', 'b', addr.b6 as string, 5202, 24);
    console.log(`# a -> b${udpGso ? ' (UDP_SEGMENT)' : ''}: ${mb4} MB over IPv4 in ${ms4} ms (${((mb4 * 8) / ms4 * 1000).toFixed(0)} Mbit/s)${udpGso ? '' : `, 24 MB over IPv6 in ${ms6} ms`}`);
    const m1 = await metrics('h1');
    const split = metricSum(m1, 'tunswitch_gso_packets_total', (l) => l.op === 'split') - metricSum(before1, 'tunswitch_gso_packets_total', (l) => l.op === 'split');
    const segs = metricSum(m1, 'tunswitch_gso_segments_total') - metricSum(before1, 'tunswitch_gso_segments_total');
    console.log(`# h1: ${split} GSO packets split for the tunnel into ${segs} segments (${(segs / Math.max(split, 1)).toFixed(1)} per packet)`);
    // 32-88 MB in segments of <= 1450 - 52 bytes is > 24000 segments; with TSO most come in super-packets.
    assert.ok(split >= 300, `got ${split} GSO packets split on h1, want >= 300 (offload on a must hand the switch TSO packets)`);
    assert.ok(segs >= 2 * split, `got ${segs} segments from ${split} GSO packets, want at least 2 per packet`);
    const drops = metricSum(m1, 'cilium_drop_count_total', (l) => /Fragmentation needed|GSO packet/.test(l.reason ?? ''));
    assert.equal(drops, 0, `got ${drops} GSO_SPLIT / frag-needed drops on h1, want 0`);
    // The receiving host reads the underlay only as far as its shard has room: a TSO burst
    // (~45 datagrams per packet) waits in the socket buffer, never dropped at the ring (230).
    const full = metricSum(await metrics('h2'), 'cilium_drop_count_total', (l) => /shard queue full/.test(l.reason ?? ''));
    assert.equal(full, 0, `got ${full} shard-queue-full drops on h2, want 0`);
  });

  if (!udpGso) it('TCP a -> q (offload on -> off), 24 MB sha256-exact', async () => {
    const ms = await tcpTransfer('a', 'q', addr.q as string, 5203, 24);
    console.log(`# a -> q: 24 MB in ${ms} ms`);
  });

  it('UDP with UDP_SEGMENT (USO) a -> b: every datagram arrives intact, split on h1', async () => {
    const before1 = await metrics('h1');
    const size = 1200;
    const sends = 200;
    const segs = 10;
    const recv = spawn('ip', ['netns', 'exec', `${LAB}-b`, 'python3', '-c', USO_RECV, addr.b as string, '6001', String(size)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let outText = '';
    recv.stdout.on('data', (b: Buffer) => (outText += b.toString()));
    try {
      await waitFor('b to listen on udp 6001', async () => (await nsRun(`${LAB}-b`, ['ss', '-lunH', 'sport = :6001'])).stdout.trim() !== '', 5000);
      const s = await nsRun(`${LAB}-a`, ['python3', '-c', USO_SEND, addr.b as string, '6001', String(sends), String(segs), String(size)], 20_000);
      assert.equal(s.code, 0, `USO sender: got exit ${s.code} (${s.stderr.trim()})`);
      await waitFor('the UDP receiver to finish', async () => recv.exitCode !== null, 15_000);
    } finally {
      if (recv.exitCode === null) recv.kill('SIGKILL');
    }
    const [good, bad] = outText.trim().split(' ').map(Number) as [number, number];
    console.log(`# USO a -> b: ${good} of ${sends * segs} datagrams intact, ${bad} bad`);
    assert.equal(bad, 0, `got ${bad} damaged datagrams, want 0`);
    assert.ok(good >= sends * segs * 0.95, `got ${good} datagrams, want >= 95% of ${sends * segs}`);
    const m1 = await metrics('h1');
    const split = metricSum(m1, 'tunswitch_gso_packets_total', (l) => l.op === 'split') - metricSum(before1, 'tunswitch_gso_packets_total', (l) => l.op === 'split');
    assert.ok(split >= sends / 2, `got ${split} GSO packets split on h1, want >= ${sends / 2} (the USO sends)`);
  });
});
