/**
 * Tests of `tunswitch bench` (bench/e2e): the parsers and the report logic on fixed and
 * seeded input, and one real quick run (2 s, TCP 1 stream) with one case per baseline —
 * kernel veth, OVS userspace, the C forwarder — and tunswitch, so the harness cannot rot.
 *
 * The real run needs root, /dev/net/tun, iperf3, Open vSwitch and a C compiler (tcp1 needs no
 * trafgen); it FAILS (never skips) when they are missing. It uses namespaces tsb-<tag>*, addresses in
 * 10.88.0.0/24, and writes its report into a temporary directory.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { Rand } from '../helpers/rand.js';
import { parseIperfJson, parsePing, parseProcNetDev, percentile, trafgenConfig, UDP64_PAYLOAD, type MetricId } from '../../bench/e2e/cases.js';
import { compare, targetTally, type ResultRow } from '../../bench/e2e/report.js';
import { summarizeProfile, type CpuProfile } from '../../bench/e2e/profile.js';
import { renderChartSvg } from '../../bench/e2e/chart.js';
import { parseList, SYSTEM_IDS, type BenchReport } from '../../bench/e2e/harness.js';
import { ipcacheEntries, tunswitchConfig, systemById } from '../../bench/e2e/systems.js';
import { register } from '../../src/cli/bench.js';
import { parseRunConfig } from '../../src/runtime/config.js';
import type { CliContext } from '../../src/cli/context.js';
import { ApiClient } from '../../src/api/client.js';
import { sh } from '../../bench/e2e/proc.js';

describe('bench parsers', () => {
  it('parseIperfJson reads the receiver rate and retransmits, and reports iperf3 errors', () => {
    const cases: { name: string; text: string; want: { bitsPerSecond: number; retransmits: number } | RegExp }[] = [
      { name: 'one stream', text: JSON.stringify({ end: { sum_received: { bits_per_second: 1.5e9 }, sum_sent: { retransmits: 7 } } }), want: { bitsPerSecond: 1.5e9, retransmits: 7 } },
      { name: 'no retransmit field', text: JSON.stringify({ end: { sum_received: { bits_per_second: 42 }, sum_sent: {} } }), want: { bitsPerSecond: 42, retransmits: 0 } },
      { name: 'iperf3 error', text: JSON.stringify({ error: 'unable to connect to server: Connection refused' }), want: /iperf3: unable to connect/ },
      { name: 'not JSON', text: 'iperf3: error - oops', want: /no JSON/ },
      { name: 'no end', text: '{}', want: /no end.sum_received/ },
    ];
    for (const c of cases) {
      if (c.want instanceof RegExp) {
        assert.throws(() => parseIperfJson(c.text), c.want, `${c.name}: got no matching error, want ${c.want}`);
      } else {
        const got = parseIperfJson(c.text);
        assert.deepEqual(got, c.want, `${c.name}: got ${JSON.stringify(got)}, want ${JSON.stringify(c.want)}`);
      }
    }
  });

  it('parsePing collects per-reply RTTs and the summary counts', () => {
    const text = [
      'PING 10.88.0.3 (10.88.0.3) 56(84) bytes of data.',
      '64 bytes from 10.88.0.3: icmp_seq=1 ttl=64 time=0.114 ms',
      '64 bytes from 10.88.0.3: icmp_seq=2 ttl=64 time=2.52 ms',
      '64 bytes from 10.88.0.3: icmp_seq=4 ttl=64 time<1 ms',
      '',
      '--- 10.88.0.3 ping statistics ---',
      '4 packets transmitted, 3 received, 25% packet loss, time 31ms',
    ].join('\n');
    const got = parsePing(text);
    const want = { rtts: [0.114, 2.52, 1], transmitted: 4, received: 3 };
    assert.deepEqual(got, want, `got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  });

  it('percentile matches a naive nearest-rank model on seeded input', () => {
    const r = new Rand(15);
    for (let round = 0; round < 200; round++) {
      const n = 1 + r.int(300);
      const xs = Array.from({ length: n }, () => r.range(0, 100000) / 1000);
      const p = r.pick([0, 1, 50, 90, 99, 99.9, 100]);
      const sorted = [...xs].sort((a, b) => a - b);
      let want = sorted[0] as number;
      // naive: the smallest value with at least p% of the values at or below it
      for (const v of sorted) {
        if (sorted.filter((x) => x <= v).length * 100 >= p * n) {
          want = v;
          break;
        }
      }
      const got = percentile(xs, p);
      assert.equal(got, want, `round ${round} n=${n} p=${p}: got ${got}, want ${want}`);
    }
    assert.ok(Number.isNaN(percentile([], 50)), `got ${percentile([], 50)} for an empty list, want NaN`);
  });

  it('parseProcNetDev finds one interface', () => {
    const text = [
      'Inter-|   Receive                                                |  Transmit',
      ' face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed',
      '    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0',
      '  eth0: 3971560   62055    0    1    0     0          0         0      860      10    0 1327259    0     0       0          0',
    ].join('\n');
    const cases: { ifname: string; want: ReturnType<typeof parseProcNetDev> }[] = [
      { ifname: 'eth0', want: { rxBytes: 3971560, rxPackets: 62055, txBytes: 860, txPackets: 10, txDropped: 1327259 } },
      { ifname: 'lo', want: { rxBytes: 0, rxPackets: 0, txBytes: 0, txPackets: 0, txDropped: 0 } },
      { ifname: 'eth1', want: null },
    ];
    for (const c of cases) {
      const got = parseProcNetDev(text, c.ifname);
      assert.deepEqual(got, c.want, `${c.ifname}: got ${JSON.stringify(got)}, want ${JSON.stringify(c.want)}`);
    }
  });

  it('trafgenConfig makes a 64-byte IPv4 packet, with an Ethernet header only on L2 wires', () => {
    const l3 = trafgenConfig({ addrA: '10.88.0.2', addrB: '10.88.0.3', l2: null });
    const l2 = trafgenConfig({ addrA: '10.88.0.2', addrB: '10.88.0.3', l2: { srcMac: '02:00:00:00:00:01', dstMac: '02:00:00:00:00:02' } });
    const cases: { name: string; text: string; eth: boolean }[] = [
      { name: 'tun', text: l3, eth: false },
      { name: 'veth', text: l2, eth: true },
    ];
    for (const c of cases) {
      assert.equal(c.text.includes('eth('), c.eth, `${c.name}: got eth header ${c.text.includes('eth(')}, want ${c.eth}`);
      assert.match(c.text, new RegExp(`fill\\(0x42, ${UDP64_PAYLOAD}\\)`), `${c.name}: got ${c.text}, want a ${UDP64_PAYLOAD}-byte payload`);
      assert.match(c.text, /daddr=10\.88\.0\.3/, `${c.name}: got ${c.text}, want daddr 10.88.0.3`);
    }
    assert.equal(UDP64_PAYLOAD + 28, 64, `got an IPv4 packet of ${UDP64_PAYLOAD + 28} bytes, want 64`);
  });

  it('parseList accepts known names and names the bad one', () => {
    assert.deepEqual(parseList('fwd, ts-w1,fwd', SYSTEM_IDS, 'systems'), ['fwd', 'ts-w1'], 'got a different list, want fwd,ts-w1 (deduplicated)');
    assert.throws(() => parseList('fwd,nope', SYSTEM_IDS, 'systems'), /--systems: "nope" is not one of/, 'got no error naming "nope"');
    assert.throws(() => parseList(' , ', SYSTEM_IDS, 'systems'), /empty/, 'got no error for an empty list');
  });
});

describe('bench report', () => {
  const row = (system: string, metric: MetricId, value: number): ResultRow => ({ system, metric, value, unit: 'x', extra: {} });

  it('compare picks the matching forwarder, inverts RTT ratios and marks the targets', () => {
    const rows: ResultRow[] = [
      row('veth', 'tcp1', 10),
      row('ovs', 'tcp1', 1),
      row('fwd', 'tcp1', 2),
      row('fwd-vnet', 'tcp1', 8),
      row('ts-w1', 'tcp1', 1.8),
      row('ts-w1-tso', 'tcp1', 6),
      row('fwd', 'rtt_p50', 0.5),
      row('ts-w1', 'rtt_p50', 1.0),
    ];
    const cmp = compare(rows);
    const get = (s: string, m: MetricId) => cmp.find((c) => c.system === s && c.metric === m);
    const cases: { s: string; m: MetricId; fwd: string | null; fwdRatio: number | null; targets: [string, boolean | null][] }[] = [
      { s: 'ts-w1', m: 'tcp1', fwd: 'fwd', fwdRatio: 0.9, targets: [['>= 0.9x fwd', true], ['>= 1.5x OVS', true]] },
      { s: 'ts-w1-tso', m: 'tcp1', fwd: 'fwd-vnet', fwdRatio: 0.75, targets: [['>= 0.9x fwd-vnet', false], ['>= 5x OVS', true], ['>= 0.6x veth', true]] },
      { s: 'ts-w1', m: 'rtt_p50', fwd: 'fwd', fwdRatio: 0.5, targets: [['>= 0.9x fwd', false]] },
    ];
    for (const c of cases) {
      const got = get(c.s, c.m);
      assert.ok(got, `${c.s} ${c.m}: got no comparison, want one`);
      assert.equal(got.fwd?.system ?? null, c.fwd, `${c.s} ${c.m}: got forwarder ${got.fwd?.system}, want ${c.fwd}`);
      assert.ok(Math.abs((got.fwd?.ratio ?? NaN) - (c.fwdRatio ?? NaN)) < 1e-9, `${c.s} ${c.m}: got x fwd ${got.fwd?.ratio}, want ${c.fwdRatio}`);
      const targets = got.targets.map((t) => [t.name, t.met] as [string, boolean | null]);
      assert.deepEqual(targets, c.targets, `${c.s} ${c.m}: got targets ${JSON.stringify(targets)}, want ${JSON.stringify(c.targets)}`);
    }
    const tally = targetTally(cmp);
    assert.deepEqual(tally, { met: 4, missed: 2, unknown: 0 }, `got tally ${JSON.stringify(tally)}, want 4 met, 2 missed`);
  });

  it('summarizeProfile sums self time per function and separates idle', () => {
    const p: CpuProfile = {
      nodes: [
        { id: 1, callFrame: { functionName: '(root)', url: '', lineNumber: -1 }, children: [2, 3, 4] },
        { id: 2, callFrame: { functionName: '(idle)', url: '', lineNumber: -1 } },
        { id: 3, callFrame: { functionName: 'pump', url: 'file:///w/dist-x/src/runtime/io-loop.js', lineNumber: 9 } },
        { id: 4, callFrame: { functionName: 'pump', url: 'file:///w/dist-x/src/runtime/io-loop.js', lineNumber: 9 }, children: [5] },
        { id: 5, callFrame: { functionName: 'readBatch', url: 'file:///w/dist-x/src/io/tun.js', lineNumber: 0 } },
      ],
      samples: [2, 3, 4, 5, 2, 5],
      timeDeltas: [1000, 2000, 3000, 1000, 1000, 2000],
      startTime: 0,
      endTime: 10000,
    };
    const s = summarizeProfile(p, 'x.cpuprofile');
    const got = s.top.map((t) => [t.fn, t.where, t.ms]);
    const want = [
      ['pump', 'src/runtime/io-loop.js:10', 5],
      ['readBatch', 'src/io/tun.js:1', 3],
      ['(idle)', '', 2],
    ];
    assert.deepEqual(got, want, `got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
    assert.equal(s.totalMs, 10, `got total ${s.totalMs} ms, want 10`);
    assert.equal(s.idleMs, 2, `got idle ${s.idleMs} ms, want 2`);
    assert.equal(s.top[0]?.busyPct, 62.5, `got busy share ${s.top[0]?.busyPct}%, want 62.5%`);
  });

  it('renderChartSvg draws one bar per result', async () => {
    const rows: ResultRow[] = [row('veth', 'tcp1', 10), row('fwd', 'tcp1', 2), row('veth', 'tcp4', 12), row('fwd', 'udp64', 100), row('fwd', 'rtt_p99', 3)];
    const svg = await renderChartSvg(rows, { title: 't', order: ['veth', 'fwd'], labels: { veth: 'kernel veth', fwd: 'C fwd' } });
    assert.match(svg, /^<svg /, `got ${svg.slice(0, 40)}, want an SVG document`);
    const bars = (svg.match(/class="mark-rect role-mark/g) ?? []).length;
    const items = (svg.match(/aria-roledescription="bar"/g) ?? []).length;
    assert.equal(bars, 3, `got ${bars} bar panels, want 3 (TCP, UDP, RTT)`);
    assert.equal(items, rows.length, `got ${items} bars, want ${rows.length}`);
  });

  it('tunswitchConfig is a valid run config in the benchmark pool, and ipcache entries are distinct /32s', () => {
    for (const id of ['ts-w1', 'ts-w2-tso']) {
      const spec = systemById(id);
      assert.ok(spec, `got no system ${id}`);
      const cfg = parseRunConfig(tunswitchConfig(spec, 'zzz'), '/tmp/run.yaml');
      assert.ok(cfg.name.startsWith('tsb-') && cfg.name.length <= 10, `got name ${cfg.name}, want tsb-... of at most 10 characters`);
      assert.equal(cfg.workers, spec.workers, `${id}: got ${cfg.workers} workers, want ${spec.workers}`);
      assert.equal(cfg.offload, spec.offload, `${id}: got offload ${cfg.offload}, want ${spec.offload}`);
      assert.equal(cfg.pool.ipv4.text, '10.88.0.0/24', `${id}: got pool ${cfg.pool.ipv4.text}, want 10.88.0.0/24`);
    }
    const e = ipcacheEntries(100_000);
    const distinct = new Set(e.map((x) => x.cidr)).size;
    assert.equal(distinct, 100_000, `got ${distinct} distinct prefixes, want 100000`);
    assert.equal(e[65_536]?.cidr, '10.101.0.0/32', `got ${e[65_536]?.cidr}, want 10.101.0.0/32`);
  });
});

describe('tunswitch bench --quick (real namespaces)', () => {
  it('measures TCP over veth, OVS, the C forwarder and tunswitch, compares them and cleans up', { timeout: 150_000 }, async () => {
    const uid = process.getuid ? process.getuid() : -1;
    assert.equal(uid, 0, `got uid ${uid}, want 0: the bench needs root`);
    const out = mkdtempSync(join(tmpdir(), 'tsb-bench-test-'));
    let stdout = '';
    const ctx: CliContext = {
      socket: () => '/nonexistent',
      client: () => new ApiClient('/nonexistent'),
      out: (t) => {
        stdout += t;
      },
      warn: () => undefined,
    };
    const program = new Command('tunswitch').exitOverride();
    register(program, ctx);
    const systems = ['veth', 'ovs', 'fwd', 'ts-w1'];
    const t0 = Date.now();
    try {
      await program.parseAsync(['bench', '--quick', '--systems', systems.join(','), '--cases', 'tcp1', '--out-dir', out, '--no-progress', '-o', 'json'], { from: 'user' });
      const report = JSON.parse(stdout) as BenchReport;
      const onDisk = JSON.parse(readFileSync(join(out, 'e2e.json'), 'utf8')) as BenchReport;
      assert.deepEqual(onDisk.results, report.results, 'got a different e2e.json than the -o json output, want the same results');
      assert.ok(existsSync(join(out, 'e2e.svg')), 'got no e2e.svg, want the chart');
      assert.equal(report.options.seconds, 2, `got ${report.options.seconds} s per case, want 2 with --quick`);
      for (const s of systems) {
        const r = report.results.find((x) => x.system === s && x.metric === 'tcp1');
        assert.ok(r && r.value > 0.01, `${s}: got ${r?.value} Gbit/s, want a positive TCP rate`);
      }
      const ts = report.systems.find((s) => s.id === 'ts-w1');
      assert.equal(ts?.info.ipcacheAdded, 100_000, `got ${ts?.info.ipcacheAdded} ipcache entries added, want 100000`);
      assert.equal(ts?.info.policyEnforced, true, `got policy enforced ${ts?.info.policyEnforced}, want true on both endpoints`);
      const c = report.comparisons.find((x) => x.system === 'ts-w1' && x.metric === 'tcp1');
      assert.ok(c && c.fwd && c.ovs && c.veth, `got comparison ${JSON.stringify(c)}, want all three baselines`);
      const want = c.value / c.fwd.value;
      assert.ok(Math.abs(c.fwd.ratio - want) < 1e-9, `got x fwd ${c.fwd.ratio}, want ${want}`);
      assert.ok(typeof report.host.loadBefore[0] === 'number', `got load ${report.host.loadBefore}, want the load average`);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
    const ms = Date.now() - t0;
    assert.ok(ms < 120_000, `got ${ms} ms, want the quick run under 120 s`);
    // Nothing left behind: no namespace of ours and no child process (forwarder, OVS, agent).
    const tag = (process.pid % 46656).toString(36);
    const ns = await sh('ip', ['netns', 'list']);
    const left = ns.stdout.split('\n').filter((l) => l.startsWith(`tsb-${tag}`));
    assert.deepEqual(left, [], `got namespaces ${left.join(', ')} left, want none`);
    const ps = await sh('ps', ['--ppid', String(process.pid), '-o', 'args=']);
    const procs = ps.stdout.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('ps '));
    assert.deepEqual(procs, [], `got processes ${procs.join(' | ')} left, want none`);
  });
});
