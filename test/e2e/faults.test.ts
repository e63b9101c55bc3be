/**
 * Fault injection against a real `tunswitch run` with real namespaces and TUN devices:
 *
 *   1. SIGKILL of the whole switch under traffic, then a restart: state (policies, identities)
 *      comes back and traffic flows again.
 *   2. A corrupt state file: the start fails at once (non-zero, the file named), without a
 *      10 s wait.
 *   3. One endpoint floods first fragments (fresh IP IDs) and then TCP SYNs at a fourth while
 *      two other endpoints open new connections and exchange fragmented pings: theirs must all
 *      work (a ping lost while the overloaded shard counted queue drops is tried again and
 *      reported; the tables are under test, not the queue). One shard, so the flooder and the
 *      others share every table.
 *
 * Each case is bounded in time and prints its figures (t.diagnostic). Addresses: 10.94.0.0/24
 * and fd00:94::/64 only; namespaces rl94<tag>-<node>. Packets are crafted with python3 raw
 * sockets (no scapy needed), from the flooding endpoint's own address.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI_MAIN, Lab, metricSum, nsRun, requireE2e, sh, sleep } from './helpers.js';

const TAG = (process.pid % 1000).toString(36);
const POOL = { v4: '10.94.0', v6: 'fd00:94::' };
const POLICY = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: b-from-a }
spec:
  endpointSelector: { matchLabels: { app: b } }
  ingress: [ { fromEndpoints: [ { matchLabels: { app: a } } ] } ]
`;

/** A raw-socket packet generator: first fragments with fresh IDs, or SYNs from fresh ports. */
const FLOOD_PY = String.raw`
import socket, struct, sys, time
mode, src, dst, count, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
S, D = socket.inet_aton(src), socket.inet_aton(dst)
def csum(b):
    if len(b) % 2: b += b'\0'
    t = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while t >> 16: t = (t & 0xffff) + (t >> 16)
    return (~t) & 0xffff
def ip(ident, proto, flags_off, payload):
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), ident, flags_off, 64, proto, 0, S, D)
    return struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), ident, flags_off, 64, proto, csum(h), S, D) + payload
sent, t0 = 0, time.time()
for i in range(count):
    if mode == 'frag':
        # first fragment (MF=1, offset 0) of a UDP datagram that never completes
        udp = struct.pack('!HHHH', 40000, 9, 8 + 1400, 0) + b'x' * 32
        pkt = ip(i & 0xffff, 17, 0x2000, udp)
    else:
        sport = 1024 + (i % 64000)
        seq = i * 7919
        tcp = struct.pack('!HHIIBBHHH', sport, 9, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
        pseudo = S + D + struct.pack('!BBH', 0, 6, len(tcp))
        tcp = tcp[:16] + struct.pack('!H', csum(pseudo + tcp)) + tcp[18:]
        pkt = ip((i * 31) & 0xffff, 6, 0x4000, tcp)
    try:
        s.sendto(pkt, (dst, 0)); sent += 1
    except OSError:
        time.sleep(0.0005)
    if (i & 1023) == 0 and time.time() - t0 > limit: break
print(sent, round(time.time() - t0, 3))
`;

describe('fault injection', { timeout: 240_000 }, () => {
  const lab = new Lab({
    name: `rl94${TAG}`,
    workers: 1, // one shard: the flooder and the others share every table
    pool: POOL,
    // one endpoint may hold 5% of the shard's conntrack (5734 of 114688 entries): a SYN flood
    // that the machine can push through the TUN queues reaches it (the default is 50%)
    extraConfig: ['quotas: { conntrack: 5, fragments: 50 }'],
    nodes: [
      { name: 'a', labels: { app: 'a' } },
      { name: 'b', labels: { app: 'b' } },
      { name: 'c', labels: { app: 'c' } },
      // the flood's target: a's flood must not share b's egress queue with c's traffic (a
      // queue that drops under load is not what this test is about; the tables are)
      { name: 'd', labels: { app: 'd' } },
    ],
  });

  before(async () => {
    await requireE2e();
    const py = await sh('python3', ['-c', 'import socket']);
    assert.equal(py.code, 0, 'got no python3, want it (raw-socket packet generator)');
    await lab.create();
    const n = await lab.start();
    assert.equal(n, 4, `ready: got ${n} endpoints, want 4`);
  });

  after(async () => {
    await lab.destroy();
  });

  it('SIGKILL of the whole switch under traffic: a restart restores state and traffic flows again', { timeout: 90_000 }, async (t) => {
    const polFile = join(lab.dir, 'b-from-a.yaml');
    writeFileSync(polFile, POLICY);
    const imp = await lab.cli(['policy', 'import', polFile]);
    assert.equal(imp.code, 0, `policy import: ${imp.stderr}`);
    const idsBefore = await lab.cliJson<{ name: string; identity: number }[]>(['endpoint', 'list']);
    const p0 = await lab.ping('a', lab.v4('b'));
    assert.equal(p0.code, 0, `ping a -> b before: ${p0.stdout}${p0.stderr}`);

    // traffic: 20 pings a second from a to b for at most 25 s, across the kill and restart
    const bg = lab.background('a', ['ping', '-i', '0.05', '-W', '1', '-w', '25', lab.v4('b')]);
    await sleep(1500);
    const tKill = Date.now();
    await lab.kill9();
    await sleep(500);
    const n = await lab.start();
    const readyMs = Date.now() - tKill;
    assert.equal(n, 4, `ready after restart: got ${n} endpoints, want 4`);
    // the first ping that gets through after the restart
    let firstOkMs = -1;
    for (let i = 0; i < 40 && firstOkMs < 0; i++) {
      const r = await nsRun(lab.ns('a'), ['ping', '-c', '1', '-W', '1', lab.v4('b')], 5_000);
      if (r.code === 0) firstOkMs = Date.now() - tKill;
    }
    bg.child.kill('SIGINT');
    const pr = await bg.done;
    const m = /(\d+) packets transmitted, (\d+) received/.exec(pr.stdout);
    const sentN = m ? Number(m[1]) : -1;
    const recvN = m ? Number(m[2]) : -1;
    assert.ok(firstOkMs >= 0, `no ping a -> b got through after the restart; log:\n${lab.agentLog}`);

    const pols = await lab.cliJson<{ name: string }[]>(['policy', 'get']);
    assert.deepEqual(pols.map((p) => p.name), ['b-from-a'], `policies after restart: got ${JSON.stringify(pols)}, want b-from-a`);
    const idsAfter = await lab.cliJson<{ name: string; identity: number }[]>(['endpoint', 'list']);
    for (const e of idsBefore) {
      const a = idsAfter.find((x) => x.name === e.name);
      assert.equal(a?.identity, e.identity, `endpoint ${e.name} identity after restart: got ${a?.identity}, want ${e.identity}`);
    }
    // the restored policy is enforced: c is not allowed into b
    const denied = await nsRun(lab.ns('c'), ['ping', '-c', '1', '-W', '1', lab.v4('b')], 5_000);
    assert.notEqual(denied.code, 0, 'ping c -> b passed after restart, want it denied by the restored policy');
    t.diagnostic(`SIGKILL under traffic: restarted and ready ${readyMs} ms after the kill, first ping through at ${firstOkMs} ms; ` +
      `background ping ${recvN}/${sentN} answered (${sentN - recvN} lost across the outage); policies restored 1/1, identities kept ${idsBefore.length}/${idsBefore.length}`);
  });

  it('a corrupt state file: the start fails at once, non-zero, naming the file', { timeout: 60_000 }, async (t) => {
    const st = await lab.stop();
    assert.equal(st.code, 0, `stop: exit ${st.code}`);
    const stateFile = join(lab.stateDir, 'state.json');
    const cases: [string, string, RegExp][] = [
      ['null', 'null', /state\.json: \(top\): must be an object, got null/],
      ['truncated', '{"version": 1, "config": {', /state\.json: \(file\): not valid JSON/],
      ['policies key missing', JSON.stringify({ version: 1, config: {}, identities: { version: 1, workload: [], cidr: [] }, endpoints: [] }), /state\.json: policies: missing/],
    ];
    const { readFileSync } = await import('node:fs');
    const good = readFileSync(stateFile, 'utf8');
    const figures: string[] = [];
    for (const [name, text, re] of cases) {
      writeFileSync(stateFile, text);
      const r = await sh(process.execPath, [CLI_MAIN, '--socket', lab.socket, 'run', '-c', lab.configFile, '--state-dir', lab.stateDir, '--no-metrics'], 30_000);
      assert.notEqual(r.code, 0, `${name}: exit got ${r.code}, want non-zero`);
      assert.equal(r.signal, null, `${name}: killed by the test's timeout (${r.ms} ms), want a prompt exit`);
      assert.match(r.stderr, re, `${name}: stderr got ${r.stderr}`);
      assert.ok(r.ms < 8_000, `${name}: exited after ${r.ms} ms, want promptly (no 10 s stop timer)`);
      figures.push(`${name}: exit ${r.code} in ${r.ms} ms`);
    }
    writeFileSync(stateFile, good);
    const n = await lab.start();
    assert.equal(n, 4, `ready with the good state again: got ${n} endpoints`);
    t.diagnostic(`corrupt state file: ${figures.join('; ')}`);
  });

  it('a fragment flood and a SYN flood from a (to d): b and c keep opening flows and exchanging fragments', { timeout: 90_000 }, async (t) => {
    const del = await lab.cli(['policy', 'delete', 'b-from-a']);
    assert.equal(del.code, 0, `policy delete: ${del.stderr}`);
    // the receiver's kernel must not be what runs out: d gets every unfinished datagram of
    // the flood, and its reassembly memory (4 MiB by default) would refuse fragments
    for (const n of ['b', 'c', 'd']) {
      const r = await nsRun(lab.ns(n), ['sysctl', '-q', '-w', 'net.ipv4.ipfrag_high_thresh=268435456', 'net.ipv4.ipfrag_time=5']);
      assert.equal(r.code, 0, `sysctl in ${n}: ${r.stderr}`);
    }
    const script = join(lab.dir, 'flood.py');
    writeFileSync(script, FLOOD_PY);
    const srv = lab.background('b', ['socat', `TCP-LISTEN:7000,bind=${lab.v4('b')},fork,reuseaddr`, 'SYSTEM:echo ok']);
    await lab.waitListening('b', 'tcp', 7000);

    /** Packets the switch dropped for a full queue (I/O backlog, CoDel, byte limit). */
    async function queueDrops(): Promise<number> {
      const m = await lab.cliJson<Record<string, { labels: Record<string, string>; value: number }[]>>(['metrics']);
      return metricSum(m, 'cilium_drop_count_total', (l) => /queue/i.test(l.reason ?? ''));
    }

    /**
     * c's work during a flood: new TCP connections to b and fragmented pings to b. What this
     * test is about is the tables (conntrack and fragment quotas): a ping lost while the
     * switch counted queue drops (the one shard is overloaded by the flood, and a full queue
     * drops whoever arrives) is tried again, at most 3 times, and reported; a ping lost with no
     * queue drop counted fails the test at once.
     */
    async function others(label: string): Promise<{ conns: number; connOk: number; frags: number; fragOk: number; queueRetries: number }> {
      const res = { conns: 0, connOk: 0, frags: 0, fragOk: 0, queueRetries: 0 };
      for (let i = 0; i < 10; i++) {
        res.conns++;
        const r = await nsRun(lab.ns('c'), ['sh', '-c', `nc -w 2 ${lab.v4('b')} 7000 </dev/null`], 5_000);
        if (r.code === 0 && r.stdout.includes('ok')) res.connOk++;
        res.frags++;
        for (let attempt = 0; ; attempt++) {
          const q0 = await queueDrops();
          const p = await nsRun(lab.ns('c'), ['ping', '-c', '1', '-W', '2', '-s', '3000', lab.v4('b')], 5_000);
          if (p.code === 0) { res.fragOk++; break; }
          if (attempt >= 3 || (await queueDrops()) === q0) break;
          res.queueRetries++;
        }
      }
      assert.equal(res.connOk, res.conns, `${label}: c -> b new connections got ${res.connOk}/${res.conns}, want all`);
      if (res.fragOk !== res.frags) {
        const drops = await lab.cli(['observe', '--verdict', 'DROPPED', '--endpoint', 'c', '--endpoint', 'b', '--last', '10']);
        const m = await lab.cliJson<Record<string, { labels: Record<string, string>; value: number }[]>>(['metrics']);
        const dropLines = Object.entries(m).filter(([k]) => /drop|lost|evict|refus|queue/.test(k))
          .flatMap(([k, xs]) => xs.filter((x) => Number(x.value) !== 0).map((x) => `${k}${JSON.stringify(x.labels)} ${x.value}`)).join('\n');
        assert.fail(`${label}: c -> b fragmented pings got ${res.fragOk}/${res.frags}, want all; last drops of b and c:\n${drops.stdout}\nnon-zero drop counters:\n${dropLines}`);
      }
      return res;
    }

    async function metric(name: string, label?: string): Promise<number> {
      const m = await lab.cliJson<Record<string, { labels: Record<string, string>; value: number }[]>>(['metrics']);
      return metricSum(m, name, (l) => label === undefined || l.reason === label);
    }

    const figures: string[] = [];
    for (const [mode, count] of [['frag', 20000], ['syn', 70000]] as const) {
      const flood = lab.background('a', ['python3', script, mode, lab.v4('a'), lab.v4('d'), String(count), '20']);
      await sleep(300);
      const res = await others(`${mode} flood`);
      const fr = await flood.done;
      assert.equal(fr.code, 0, `${mode} flood generator: ${fr.stderr}`);
      const [sentS, secs] = fr.stdout.trim().split(/\s+/);
      // after the flood as well
      await others(`after the ${mode} flood`);
      const ev = mode === 'frag'
        ? `fragment evictions oldest ${await metric('tunswitch_fragment_evictions_total', 'oldest')}, quota ${await metric('tunswitch_fragment_evictions_total', 'quota')}, refused ${await metric('tunswitch_fragment_quota_refused_total')}`
        : `conntrack entries ${await metric('tunswitch_conntrack_entries')}, evictions unreplied ${await metric('tunswitch_conntrack_evictions_total', 'unreplied')}, oldest ${await metric('tunswitch_conntrack_evictions_total', 'oldest')}, quota ${await metric('tunswitch_conntrack_evictions_total', 'quota')}, refused ${await metric('tunswitch_conntrack_quota_refused_total')}`;
      figures.push(`${mode} flood of ${sentS} packets in ${secs} s from a: c -> b new connections ${res.connOk}/${res.conns}, fragmented pings ${res.fragOk}/${res.frags} (${res.queueRetries} tried again after a queue drop); queue drops so far ${await queueDrops()}; ${ev}`);
    }
    srv.child.kill('SIGKILL');
    for (const f of figures) t.diagnostic(f);
  });
});
