/**
 * Latency under load, as a lab user sees it: ping's RTT between two namespaces while a bulk
 * TCP stream (iperf3) runs between the same two, with and without offload. Before the egress
 * queue (flow-fair DRR + CoDel) this median was 19-139 ms; the bound here is generous (it is
 * an assertion of the design's spirit on a shared 2-core machine, not a benchmark: the
 * numbers are measured by `tunswitch bench --cases rtt`).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Lab, nsRun, requireE2e, sleep } from './helpers.js';

const TAG = (process.pid % 1000).toString(36);
/** Median RTT bound (ms) under one bulk stream. */
const P50_BOUND_MS = 25;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : (s[Math.floor(s.length / 2)] as number);
}

for (const offload of [false, true]) {
  describe(`ping under a bulk TCP stream (offload ${offload ? 'on' : 'off'})`, () => {
    const lab = new Lab({
      name: `e2e${TAG}l${offload ? 'o' : 'p'}`,
      workers: 1,
      offload,
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

    it(`keeps the median RTT under ${P50_BOUND_MS} ms while iperf3 saturates the path`, async (t) => {
      const b = lab.v4('b');
      const srv = lab.background('b', ['iperf3', '-s', '-1', '-B', b, '-p', '5301']);
      await sleep(500);
      const bulk = nsRun(lab.ns('a'), ['iperf3', '-c', b, '-p', '5301', '-t', '8', '-J'], 30_000);
      await sleep(1500); // let the stream fill whatever queue there is
      const p = await nsRun(lab.ns('a'), ['ping', '-i', '0.05', '-c', '80', '-W', '2', b], 20_000);
      const r = await bulk;
      await srv.done.catch(() => undefined);
      assert.equal(r.code, 0, `iperf3: ${r.stderr.trim()} ${r.stdout.slice(0, 200)}`);
      const bps = (JSON.parse(r.stdout) as { end?: { sum_received?: { bits_per_second?: number } } }).end?.sum_received?.bits_per_second ?? 0;
      const rtts = [...p.stdout.matchAll(/time=([0-9.]+) ms/g)].map((m) => Number(m[1]));
      const p50 = median(rtts);
      // where lost pings went: the switch's drop counters and each endpoint kernel's TUN tx drops
      const m = await lab.cliJson<Record<string, { labels: Record<string, string>; value: number }[]>>(['metrics']);
      const drops = (m.cilium_drop_count_total ?? []).filter((x) => Number(x.value) > 0).map((x) => `${x.labels.reason}/${x.labels.direction} ${x.value}`);
      const txd: string[] = [];
      for (const n of ['a', 'b']) txd.push(`${n} ${(await nsRun(lab.ns(n), ['cat', '/sys/class/net/eth0/statistics/tx_dropped'])).stdout.trim()}`);
      t.diagnostic(`offload ${offload}: switch drops: ${drops.join('; ') || 'none'}; endpoint TUN tx_dropped: ${txd.join(', ')}`);
      t.diagnostic(`offload ${offload}: RTT p50 ${p50.toFixed(2)} ms over ${rtts.length}/80 replies, bulk ${(bps / 1e9).toFixed(2)} Gbit/s`);
      // Enough replies for a median. Pings lost on the way are mostly lost in the sender's own
      // kernel: its TUN ring (txqueuelen 64) overflows whenever the switch's I/O thread is off
      // the CPU for a moment on this 2-core machine (tx_dropped above; 6-8% of the bulk
      // stream's packets), and a ping request shares that ring with the stream.
      assert.ok(rtts.length >= 40, `ping replies: got ${rtts.length}/80, want >= 40 (enough for a median)`);
      assert.ok(bps > 50e6, `bulk stream: got ${(bps / 1e6).toFixed(0)} Mbit/s, want > 50 (the path was not loaded)`);
      assert.ok(p50 < P50_BOUND_MS, `RTT p50 under load: got ${p50.toFixed(2)} ms, want < ${P50_BOUND_MS} ms`);
    });
  });
}
