/**
 * Supervision: a shard worker that dies is restarted by the main thread, the restart is
 * counted, traffic keeps flowing, and the shard's conntrack (shared memory) survives.
 * `tunswitch run` ends one shard worker thread on SIGUSR2 (fault injection).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Lab, metricSum, nsRun, requireE2e, sleep } from './helpers.js';

const TAG = (process.pid % 1000).toString(36);

describe('tunswitch run: a crashed shard worker is restarted with its state', () => {
  const lab = new Lab({
    name: `e2e${TAG}s`,
    workers: 1,
    nodes: [
      { name: 'a', labels: { app: 'a' } },
      { name: 'b', labels: { app: 'b' } },
    ],
  });

  before(async () => {
    await requireE2e();
    await lab.create();
    const n = await lab.start();
    assert.equal(n, 2, `ready: got ${n} endpoints, want 2`);
  });

  after(async () => {
    await lab.destroy();
  });

  it('restarts the worker, counts it, keeps conntrack, keeps forwarding', async () => {
    const p1 = await lab.ping('a', lab.v4('b'));
    assert.equal(p1.code, 0, `ping before: ${p1.stdout}${p1.stderr}`);
    const ctBefore = await lab.cliJson<unknown[]>(['ct', 'list', '-o', 'json']);
    assert.ok(ctBefore.length >= 1, `conntrack before: got ${ctBefore.length} entries, want >= 1`);
    const st0 = await lab.cliJson<{ workerRestarts: number }>(['status', '-o', 'json']);
    assert.equal(st0.workerRestarts, 0);

    assert.ok(lab.agent, 'agent running');
    lab.agent.kill('SIGUSR2');
    let restarts = 0;
    for (let i = 0; i < 50 && restarts === 0; i++) {
      await sleep(100);
      restarts = (await lab.cliJson<{ workerRestarts: number }>(['status', '-o', 'json'])).workerRestarts;
    }
    assert.equal(restarts, 1, `worker restarts: got ${restarts}, want 1; log:\n${lab.agentLog}`);
    assert.match(lab.agentLog, /shard 0: worker died/);

    const ctAfter = await lab.cliJson<unknown[]>(['ct', 'list', '-o', 'json']);
    assert.ok(ctAfter.length >= ctBefore.length, `conntrack after restart: got ${ctAfter.length} entries, want >= ${ctBefore.length}`);
    const p2 = await lab.ping('a', lab.v4('b'));
    assert.equal(p2.code, 0, `ping after the restart: ${p2.stdout}${p2.stderr}`);
  });
});

type MetricsJson = Record<string, { labels: Record<string, string>; value: number | string }[]>;

/**
 * Sends `before` datagrams, the fault packet, then `after` datagrams, in bursts of 16 (so
 * the fault packet sits inside a batch), pausing 2 ms between bursts so that the sender's
 * short TUN queue does not overflow on a busy machine.
 */
const UDP_BURST = `
import socket, sys, time
dst, before, after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
pkts = [b"seq%05d" % i + b"x" * 24 for i in range(before)] + [bytes.fromhex("deadbeef") + b"y" * 28] + [b"seq%05d" % (before + i) + b"x" * 24 for i in range(after)]
for i, p in enumerate(pkts):
    s.sendto(p, (dst, 7001))
    if i % 16 == 15: time.sleep(0.002)
`;

/** tx_dropped of eth0 in a namespace (packets its kernel dropped before the switch read them). */
async function txDropped(ns: string): Promise<number> {
  const r = await nsRun(ns, ['cat', '/sys/class/net/eth0/statistics/tx_dropped']);
  return Number(r.stdout.trim());
}
/** Counts datagrams on port 7001 until `secs` pass without one (prints the count). */
const UDP_COUNT = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind(("0.0.0.0", 7001)); s.settimeout(float(sys.argv[1]))
n = 0
try:
    while True:
        s.recv(2048); n += 1
except socket.timeout:
    pass
print(n, flush=True)
`;

async function slabWhole(lab: Lab, timeoutMs: number): Promise<{ free: number; slots: number }> {
  let free = -1;
  let slots = -2;
  for (let t = 0; t < timeoutMs; t += 200) {
    const m = await lab.cliJson<MetricsJson>(['metrics', '-o', 'json']);
    free = metricSum(m, 'tunswitch_slab_free_slots');
    slots = metricSum(m, 'tunswitch_slab_slots');
    if (free === slots && slots > 0) break;
    await sleep(200);
  }
  return { free, slots };
}

for (const io of ['readwrite', 'uring']) {
  describe(`a shard worker killed in the middle of a batch (io: ${io})`, () => {
    const lab = new Lab({
      name: `e2e${TAG}k${io[0]}`,
      workers: 1,
      nodes: [
        { name: 'a', labels: { app: 'a' } },
        { name: 'b', labels: { app: 'b' } },
      ],
      extraConfig: [`io: ${io}`],
      env: { TUNSWITCH_FAULT_CRASH_MAGIC: 'deadbeef' },
    });

    before(async () => {
      await requireE2e();
      await lab.create();
      assert.equal(await lab.start(), 2);
    });
    after(async () => {
      await lab.destroy();
    });

    it('returns every slot to the slab and drops only the packet it died on', async () => {
      const p = await lab.ping('a', lab.v4('b'));
      assert.equal(p.code, 0, `ping before: ${p.stdout}${p.stderr}`);
      const rx = lab.background('b', ['python3', '-c', UDP_COUNT, '6']);
      await sleep(300);
      const drops0 = await txDropped(lab.ns('a'));
      const tx = await nsRun(lab.ns('a'), ['python3', '-c', UDP_BURST, lab.v4('b'), '100', '100']);
      assert.equal(tx.code, 0, `sender: ${tx.stderr}`);
      const got = Number((await rx.done).stdout.trim());
      const kernelDrops = (await txDropped(lab.ns('a'))) - drops0;

      const st = await lab.cliJson<{ workerRestarts: number; healthy: boolean }>(['status', '-o', 'json']);
      assert.equal(st.workerRestarts, 1, `restarts: got ${st.workerRestarts}, want 1; log:\n${lab.agentLog}`);
      const m = await lab.cliJson<MetricsJson>(['metrics', '-o', 'json']);
      const crashDrops = metricSum(m, 'cilium_drop_count_total', (l) => /died on this packet/.test(l.reason ?? ''));
      assert.equal(crashDrops, 1, `drops with reason 235: got ${crashDrops}, want 1`);
      assert.equal(got + kernelDrops, 200, `datagrams received: got ${got} (+ ${kernelDrops} dropped by the sender's kernel before the switch), want 200 (every packet but the one the worker died on)`);
      const slab = await slabWhole(lab, 3000);
      assert.equal(slab.free, slab.slots, `free slots after recovery: got ${slab.free}, want ${slab.slots} (the whole slab)`);
      console.log(`# fault: worker killed mid-batch (${io}): 1 restart, ${got}/201 datagrams delivered (${kernelDrops} lost in the sender's TUN queue), 1 dropped (reason 235), slab ${slab.free}/${slab.slots} free`);
      const p2 = await lab.ping('a', lab.v4('b'));
      assert.equal(p2.code, 0, `ping after: ${p2.stdout}${p2.stderr}`);
    });
  });
}

describe('a shard worker killed every 50 ms for 20 s under traffic', () => {
  const lab = new Lab({
    name: `e2e${TAG}m`,
    workers: 2,
    nodes: [
      { name: 'a', labels: { app: 'a' } },
      { name: 'b', labels: { app: 'b' } },
    ],
  });

  before(async () => {
    await requireE2e();
    await lab.create();
    assert.equal(await lab.start(), 2);
  });
  after(async () => {
    await lab.destroy();
  });

  it('keeps forwarding afterwards, reports health honestly, and the slab is whole', async () => {
    const pinger = lab.background('a', ['ping', '-i', '0.05', '-w', '22', '-W', '1', lab.v4('b')]);
    const t0 = Date.now();
    let kills = 0;
    let sawUnhealthy = false;
    while (Date.now() - t0 < 20_000) {
      assert.ok(lab.agent, 'agent running');
      lab.agent.kill('SIGUSR2');
      kills++;
      await sleep(50);
      if (kills % 40 === 0) {
        const h = await lab.cliJson<{ healthy: boolean }>(['status', '-o', 'json']);
        if (!h.healthy) sawUnhealthy = true;
      }
    }
    const pr = await pinger.done;
    const m = /(\d+) packets transmitted, (\d+) received/.exec(pr.stdout);
    const sent = m ? Number(m[1]) : 0;
    const recv = m ? Number(m[2]) : 0;
    // After the storm: healthy again (crash-loop back-off ends), forwarding, slab whole.
    let st = await lab.cliJson<{ workerRestarts: number; healthy: boolean; shards: { state: string }[] }>(['status', '-o', 'json']);
    for (let i = 0; i < 60 && !st.healthy; i++) {
      await sleep(100);
      st = await lab.cliJson<typeof st>(['status', '-o', 'json']);
    }
    assert.ok(st.healthy, `status after the storm: got ${JSON.stringify(st.shards)}, want every shard running; log tail:\n${lab.agentLog.slice(-2000)}`);
    assert.ok(sawUnhealthy, 'status never reported a shard down during the storm; want it to say so');
    assert.ok(st.workerRestarts >= 20, `restarts: got ${st.workerRestarts}, want >= 20`);
    const p2 = await lab.ping('a', lab.v4('b'));
    assert.equal(p2.code, 0, `ping after the storm: ${p2.stdout}${p2.stderr}`);
    const slab = await slabWhole(lab, 3000);
    assert.equal(slab.free, slab.slots, `free slots after the storm: got ${slab.free}, want ${slab.slots}`);
    console.log(`# fault: ${kills} kills in 20 s, ${st.workerRestarts} restarts survived; ping during the storm ${recv}/${sent}; slab ${slab.free}/${slab.slots} free afterwards`);
  });
});
