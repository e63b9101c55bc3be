/**
 * Per-port offload end to end (issue 10, "GSO packets cross the switch byte-exact"): one
 * switch (1 worker, switch-wide offload off) with two offload ports (oa, ob: TSO/USO offered
 * to their kernels, set per node) and two plain ports (pa, pb).
 *
 *   - `endpoint list/get` show each port's offload; `endpoint add --offload=false|true` sets it;
 *   - TCP, 200 MB with socat, sha256 at both ends, offload->offload, plain->plain,
 *     offload->plain, plain->offload; the sender's interface counters show whether its kernel
 *     sent TSO packets (offload) or MTU-sized ones (plain);
 *   - UDP: same-flow datagrams from a plain port are coalesced into USO writes towards an
 *     offload port (tunswitch_gso_packets_total{op="coalesced",proto="udp"}); UDP GSO sent by
 *     an offload endpoint (UDP_SEGMENT) stays whole towards an offload port and is split for a
 *     plain one (op="split"); every datagram arrives, byte-exact;
 *   - a second switch with `gro: false`: TCP GSO packets from an offload port are split for a
 *     plain port (the receiver's interface sees MTU-sized packets), 200 MB byte-exact.
 *
 * Root, namespaces, TUN, socat, sha256sum and python3 are required: the test FAILS without
 * them. Address pool 10.82.0.0/24, names of82*. Run under the e2e lock:
 *   flock /tmp/tunswitch-e2e.lock node --test --test-concurrency=1 dist/test/e2e/offload-ports.test.js
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Lab, metricSum, nsRun, removeTempDir, requireE2e, sh, sha256File, sleep, tempDir } from './helpers.js';
import type { EndpointInfo } from '../../src/api/types.js';

const POOL = { v4: '10.82.0', v6: 'fd00:82::', prefix: 'of82' };
const MTU = 1500;
const FILE_MB = 200;

type MetricsJson = Record<string, { labels: Record<string, string>; value: number | string }[]>;

/** rx/tx packets and bytes of eth0 in a node's namespace. */
async function ifStats(lab: Lab, node: string): Promise<{ rxP: number; rxB: number; txP: number; txB: number }> {
  const d = '/sys/class/net/eth0/statistics';
  const r = await nsRun(lab.ns(node), ['cat', `${d}/rx_packets`, `${d}/rx_bytes`, `${d}/tx_packets`, `${d}/tx_bytes`]);
  assert.equal(r.code, 0, `interface counters in ${lab.ns(node)}: ${r.stderr}`);
  const [rxP, rxB, txP, txB] = r.stdout.trim().split('\n').map(Number) as [number, number, number, number];
  return { rxP, rxB, txP, txB };
}

async function gsoMetric(lab: Lab, op: string, proto: string): Promise<number> {
  const m = await lab.cliJson<MetricsJson>(['metrics']);
  return metricSum(m, 'tunswitch_gso_packets_total', (l) => l.op === op && (proto === '' || l.proto === proto));
}

/** 200 MB over TCP with socat; returns the receiver's sha256 and the seconds it took. */
async function tcpTransfer(lab: Lab, from: string, to: string, port: number, file: string): Promise<{ sha: string; s: number }> {
  const ip = lab.v4(to);
  const srv = lab.background(to, ['sh', '-c', `socat -u -b 262144 TCP-LISTEN:${port},bind=${ip},reuseaddr STDOUT | sha256sum`]);
  await lab.waitListening(to, 'tcp', port);
  const t0 = Date.now();
  const send = await nsRun(lab.ns(from), ['socat', '-u', '-b', '262144', `OPEN:${file}`, `TCP:${ip}:${port}`], 60_000);
  const recv = await Promise.race([srv.done, sleep(20_000).then(() => null)]);
  if (recv === null) srv.child.kill('SIGKILL');
  assert.equal(send.code, 0, `sender socat: got exit ${send.code} (${send.stderr.trim()}), want 0`);
  assert.ok(recv !== null && recv.code === 0, `receiver: ${recv === null ? 'no EOF after 20 s' : `exit ${recv.code} ${recv.stderr.trim()}`}`);
  return { sha: recv.stdout.split(/\s+/)[0] ?? '', s: (Date.now() - t0) / 1000 };
}

const UDP_RECV = `
import socket, hashlib, json, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE
s.bind((host, port))
s.settimeout(5)
h = hashlib.sha256(); got = 0; sizes = {}
try:
    while got < n:
        d = s.recv(65535); h.update(d); got += 1; sizes[len(d)] = sizes.get(len(d), 0) + 1
except socket.timeout:
    pass
print(json.dumps({"got": got, "sha": h.hexdigest(), "sizes": sizes}), flush=True)
`;

/** n datagrams of `size` bytes (a counter, then a slice of a fixed random block) in bursts; gso: UDP_SEGMENT sends of 40. */
const UDP_SEND = `
import socket, hashlib, random, sys, time
host, port, n, size, gso = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
base = random.Random(82).randbytes(65536)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 32, 16 << 20)  # SO_SNDBUFFORCE
if gso:
    s.setsockopt(17, 103, size)  # UDP_SEGMENT
h = hashlib.sha256()
burst = 40 if gso else 16
for k in range(0, n, burst):
    ps = []
    for i in range(k, min(k + burst, n)):
        o = (i * 977) % (65536 - size)
        p = i.to_bytes(4, "big") + base[o:o + size - 4]
        h.update(p); ps.append(p)
    if gso:
        s.sendto(b"".join(ps), (host, port))
    else:
        for p in ps:
            s.sendto(p, (host, port))
    time.sleep(0.001 if gso else 0.002)
print(h.hexdigest(), flush=True)
`;

async function udpTransfer(lab: Lab, from: string, to: string, port: number, n: number, size: number, gso: boolean): Promise<void> {
  const ip = lab.v4(to);
  const srv = lab.background(to, ['python3', '-c', UDP_RECV, ip, String(port), String(n)]);
  await lab.waitListening(to, 'udp', port);
  const send = await nsRun(lab.ns(from), ['python3', '-c', UDP_SEND, ip, String(port), String(n), String(size), gso ? '1' : '0'], 60_000);
  assert.equal(send.code, 0, `UDP sender: got exit ${send.code} (${send.stderr.trim()}), want 0`);
  const recv = await srv.done;
  assert.equal(recv.code, 0, `UDP receiver: got exit ${recv.code} (${recv.stderr.trim()}), want 0`);
  const res = JSON.parse(recv.stdout) as { got: number; sha: string; sizes: Record<string, number> };
  if (res.got !== n) {
    const d = await nsRun(lab.ns(from), ['cat', '/sys/class/net/eth0/statistics/tx_dropped']);
    const m = await lab.cliJson<MetricsJson>(['metrics']);
    const drops = (m.cilium_drop_count_total ?? []).filter((x) => typeof x.value === 'number' && x.value > 0).map((x) => `${JSON.stringify(x.labels)}=${x.value}`);
    assert.fail(`datagrams at ${to}: got ${res.got}, want ${n}; sender tx_dropped ${d.stdout.trim()}; switch drops ${drops.join(' ')}`);
  }
  assert.deepEqual(res.sizes, { [size]: n }, `datagram sizes at ${to}: got ${JSON.stringify(res.sizes)}, want ${n} of ${size}`);
  assert.equal(res.got, n, `datagrams at ${to}: got ${res.got}, want ${n}`);
  assert.equal(res.sha, send.stdout.trim(), `sha256 of the datagrams: got ${res.sha}, want the sender's ${send.stdout.trim()}`);
}

let dir = '';
let file = '';
let want = '';

before(async () => {
  await requireE2e();
  dir = tempDir('tunswitch-of82-');
  file = join(dir, 'data');
  const r = await sh('sh', ['-c', `head -c ${FILE_MB}M /dev/urandom > '${file}'`], 30_000);
  assert.equal(r.code, 0, `making the ${FILE_MB} MB file: ${r.stderr}`);
  want = await sha256File(file);
});

after(() => {
  if (dir !== '') removeTempDir(dir);
});

describe('per-port offload: mixed offload and plain ports on one switch', () => {
  const lab = new Lab({
    name: 'of82p',
    workers: 1,
    offload: false,
    pool: POOL,
    nodes: [
      { name: 'oa', labels: { app: 'oa' }, offload: true },
      { name: 'ob', labels: { app: 'ob' }, offload: true },
      { name: 'pa', labels: { app: 'pa' } },
      { name: 'pb', labels: { app: 'pb' } },
    ],
  });
  const extraNs = ['of82p-pc', 'of82p-pd'];

  before(async () => {
    await lab.create();
    assert.equal(await lab.start(), 4);
  });
  after(async () => {
    for (const ns of extraNs) await sh('ip', ['netns', 'delete', ns]);
    await lab.destroy();
  });

  it('endpoint list/get show each port\'s offload; endpoint add --offload sets it', async () => {
    const eps = await lab.cliJson<EndpointInfo[]>(['endpoint', 'list']);
    const by = new Map(eps.map((e) => [e.name, e]));
    for (const [name, on] of [['oa', true], ['ob', true], ['pa', false], ['pb', false]] as const) {
      const e = by.get(name);
      assert.equal(e?.offload, on, `${name}: got offload ${e?.offload}, want ${on}`);
      if (on) assert.ok(e.offloadFlags?.includes('tso4') && e.offloadFlags.includes('tso6'), `${name}: got flags ${e.offloadFlags}, want tso4 and tso6`);
      else assert.deepEqual(e?.offloadFlags, [], `${name}: got flags ${e?.offloadFlags}, want none`);
    }
    const table = await lab.cli(['endpoint', 'get', 'pa']);
    assert.match(table.stdout, /^Offload:\s+plain/m, `endpoint get pa: got ${table.stdout}`);
    for (const ns of extraNs) assert.equal((await sh('ip', ['netns', 'add', ns])).code, 0, `ip netns add ${ns}`);
    const pc = await lab.cliJson<EndpointInfo>(['endpoint', 'add', 'pc', '--netns', 'of82p-pc', '--offload=false']);
    assert.equal(pc.offload, false, `endpoint add --offload=false: got offload ${pc.offload}`);
    const pd = await lab.cliJson<EndpointInfo>(['endpoint', 'add', 'pd', '--netns', 'of82p-pd', '--offload', 'true']);
    assert.equal(pd.offload, true, `endpoint add --offload true: got offload ${pd.offload}`);
    const bad = await lab.cli(['endpoint', 'add', 'pe', '--netns', 'of82p-pc', '--offload=maybe']);
    assert.equal(bad.code, 2, `--offload=maybe: got exit ${bad.code}, want 2`);
    assert.match(bad.stderr, /--offload.*"maybe" is not true or false/, `got ${bad.stderr}`);
    for (const n of ['pc', 'pd']) assert.equal((await lab.cli(['endpoint', 'delete', n])).code, 0, `endpoint delete ${n}`);
  });

  const pairs: [string, string][] = [['oa', 'ob'], ['pa', 'pb'], ['oa', 'pb'], ['pa', 'ob']];
  pairs.forEach(([from, to], i) => {
    const kind = (n: string): string => (n.startsWith('o') ? 'offload' : 'plain');
    it(`TCP ${FILE_MB} MB ${kind(from)} -> ${kind(to)} (${from} -> ${to}): sha256 equal at both ends`, async (t) => {
      const s0 = await ifStats(lab, from);
      const r0 = await ifStats(lab, to);
      const res = await tcpTransfer(lab, from, to, 5100 + i, file);
      const s1 = await ifStats(lab, from);
      const r1 = await ifStats(lab, to);
      const txAvg = (s1.txB - s0.txB) / Math.max(1, s1.txP - s0.txP);
      const rxAvg = (r1.rxB - r0.rxB) / Math.max(1, r1.rxP - r0.rxP);
      t.diagnostic(`${from} -> ${to}: ${res.s.toFixed(1)} s (${((FILE_MB * 8 * 1.048576) / res.s / 1000).toFixed(2)} Gbit/s), sender packets ${txAvg.toFixed(0)} B on average, receiver writes ${rxAvg.toFixed(0)} B`);
      assert.equal(res.sha, want, `sha256 at ${to}: got ${res.sha}, want ${want}`);
      if (from.startsWith('o')) assert.ok(txAvg > MTU, `sender ${from} (offload): got ${txAvg.toFixed(0)} B per packet, want > ${MTU} (TSO)`);
      else assert.ok(txAvg <= MTU, `sender ${from} (plain): got ${txAvg.toFixed(0)} B per packet, want <= ${MTU} (no TSO offered)`);
      // TCP GSO packets stay whole towards every port while gro is on (gso-port.ts rule 2).
      if (from.startsWith('o')) assert.ok(rxAvg > MTU, `receiver ${to}: got ${rxAvg.toFixed(0)} B per write, want > ${MTU}`);
    });
  });

  it('UDP: datagrams from a plain port are coalesced (USO) towards an offload port, byte-exact', async (t) => {
    // The sender's TUN queue (txqueuelen 64, set by the switch) overflows under a burst when
    // the switch is slow on a loaded machine: make it long for this sender.
    // Likewise CoDel would drop a burst that waits: give ob's egress queue a long target.
    assert.equal((await nsRun(lab.ns('pa'), ['ip', 'link', 'set', 'eth0', 'txqueuelen', '4096'])).code, 0, 'txqueuelen');
    const q = await lab.cli(['endpoint', 'queue', 'ob', '--target', '5s', '--interval', '10s', '--limit-bytes', '64MiB']);
    assert.equal(q.code, 0, `endpoint queue ob: ${q.stderr}`);
    const c0 = await gsoMetric(lab, 'coalesced', 'udp');
    const r0 = await ifStats(lab, 'ob');
    await udpTransfer(lab, 'pa', 'ob', 6100, 10000, 1200, false);
    const r1 = await ifStats(lab, 'ob');
    const c1 = await gsoMetric(lab, 'coalesced', 'udp');
    const rxAvg = (r1.rxB - r0.rxB) / Math.max(1, r1.rxP - r0.rxP);
    t.diagnostic(`pa -> ob: ${c1 - c0} USO packets built, receiver writes ${rxAvg.toFixed(0)} B on average`);
    assert.ok(c1 - c0 > 0, `USO packets built: got ${c1 - c0}, want > 0`);
    assert.ok(rxAvg > 1228, `receiver ob: got ${rxAvg.toFixed(0)} B per write, want more than one datagram`);
  });

  it('UDP GSO from an offload endpoint: whole to an offload port, split for a plain one, byte-exact', async (t) => {
    const r0 = await ifStats(lab, 'ob');
    await udpTransfer(lab, 'oa', 'ob', 6101, 10000, 1200, true);
    const r1 = await ifStats(lab, 'ob');
    const wholeAvg = (r1.rxB - r0.rxB) / Math.max(1, r1.rxP - r0.rxP);
    const sp0 = await gsoMetric(lab, 'split', '');
    const p0 = await ifStats(lab, 'pb');
    await udpTransfer(lab, 'oa', 'pb', 6102, 10000, 1200, true);
    const p1 = await ifStats(lab, 'pb');
    const sp1 = await gsoMetric(lab, 'split', '');
    const splitAvg = (p1.rxB - p0.rxB) / Math.max(1, p1.rxP - p0.rxP);
    t.diagnostic(`oa -> ob ${wholeAvg.toFixed(0)} B per write; oa -> pb ${splitAvg.toFixed(0)} B per write, ${sp1 - sp0} GSO packets split`);
    assert.ok(wholeAvg > MTU, `offload receiver ob: got ${wholeAvg.toFixed(0)} B per write, want > ${MTU} (USO kept whole)`);
    assert.ok(splitAvg <= MTU, `plain receiver pb: got ${splitAvg.toFixed(0)} B per write, want <= ${MTU} (split)`);
    assert.ok(sp1 - sp0 > 0, `GSO packets split: got ${sp1 - sp0}, want > 0`);
  });
});

describe('gro off: TCP GSO packets are split for a plain port', () => {
  const lab = new Lab({
    name: 'of82g',
    workers: 1,
    offload: false,
    pool: POOL,
    extraConfig: ['gro: false'],
    nodes: [
      { name: 'oa', labels: { app: 'oa' }, offload: true },
      { name: 'pb', labels: { app: 'pb' } },
    ],
  });

  before(async () => {
    await lab.create();
    assert.equal(await lab.start(), 2);
  });
  after(async () => {
    await lab.destroy();
  });

  it(`TCP ${FILE_MB} MB offload -> plain: the receiver sees MTU-sized packets, sha256 equal`, async (t) => {
    const sp0 = await gsoMetric(lab, 'split', '');
    const r0 = await ifStats(lab, 'pb');
    const res = await tcpTransfer(lab, 'oa', 'pb', 5200, file);
    const r1 = await ifStats(lab, 'pb');
    const sp1 = await gsoMetric(lab, 'split', '');
    const rxAvg = (r1.rxB - r0.rxB) / Math.max(1, r1.rxP - r0.rxP);
    t.diagnostic(`oa -> pb: ${res.s.toFixed(1)} s, ${sp1 - sp0} GSO packets split, receiver writes ${rxAvg.toFixed(0)} B on average`);
    assert.equal(res.sha, want, `sha256 at pb: got ${res.sha}, want ${want}`);
    assert.ok(sp1 - sp0 > 100, `GSO packets split: got ${sp1 - sp0}, want > 100`);
    assert.ok(rxAvg <= MTU, `plain receiver pb: got ${rxAvg.toFixed(0)} B per write, want <= ${MTU}`);
  });
});
