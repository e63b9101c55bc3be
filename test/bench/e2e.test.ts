/**
 * Unit tests of `tunswitch bench` (bench/e2e): the parsers, the computations (Jain index,
 * CPU per GB, /proc/PID/stat, targets, ETA) and the chart, on fixed and seeded input. The
 * real run is test/e2e/bench.test.ts.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rand } from '../helpers/rand.js';
import {
  cpuSecondsPerGb,
  deliveredIpBytes,
  jainIndex,
  parseCases,
  parseIperfJson,
  parsePing,
  parseProcNetDev,
  parseProcStat,
  percentile,
  trafgenConfig,
  UDP64_PAYLOAD,
  METRICS,
  type MetricId,
} from '../../bench/e2e/cases.js';
import { compare, evaluateTargets, measure, renderResults, renderTargets, targetLines, targetTally, twinOf, type ResultRow } from '../../bench/e2e/report.js';
import { summarizeProfile, type CpuProfile } from '../../bench/e2e/profile.js';
import { chartSpec, logDomain, renderChartSvg } from '../../bench/e2e/chart.js';
import { caseEstimateS, etaSeconds, fmtDuration, loadWarning, parseList, SYSTEM_IDS } from '../../bench/e2e/harness.js';
import { engineUnavailable, ipcacheEntries, SYSTEMS, systemById, tunswitchConfig } from '../../bench/e2e/systems.js';
import { xhostConfig, xhostNames, UL_H1, UL_H2, XHOST_ADDR_B } from '../../bench/e2e/xhost.js';
import { DEFAULT_SYSTEM_IDS } from '../../bench/e2e/options.js';
import { parseRunConfig } from '../../src/runtime/config.js';

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

  it('compare picks the matching forwarder and inverts RTT ratios', () => {
    const rows: ResultRow[] = [
      row('veth', 'tcp1', 10),
      row('ovs', 'tcp1', 1),
      row('fwd', 'tcp1', 2),
      row('fwd-vnet', 'tcp1', 8),
      row('ts-w1', 'tcp1', 1.8),
      row('ts-w1-tso', 'tcp1', 6),
      row('fwd', 'rtt1_p50', 0.5),
      row('ts-w1', 'rtt1_p50', 1.0),
    ];
    const cmp = compare(rows);
    const cases: { s: string; m: MetricId; fwd: string; fwdRatio: number; veth: number | null }[] = [
      { s: 'ts-w1', m: 'tcp1', fwd: 'fwd', fwdRatio: 0.9, veth: 0.18 },
      { s: 'ts-w1-tso', m: 'tcp1', fwd: 'fwd-vnet', fwdRatio: 0.75, veth: 0.6 },
      { s: 'ts-w1', m: 'rtt1_p50', fwd: 'fwd', fwdRatio: 0.5, veth: null },
    ];
    for (const c of cases) {
      const got = cmp.find((x) => x.system === c.s && x.metric === c.m);
      assert.ok(got, `${c.s} ${c.m}: got no comparison, want one`);
      assert.equal(got.fwd?.system, c.fwd, `${c.s} ${c.m}: got forwarder ${got.fwd?.system}, want ${c.fwd}`);
      assert.ok(Math.abs((got.fwd?.ratio ?? NaN) - c.fwdRatio) < 1e-9, `${c.s} ${c.m}: got x fwd ${got.fwd?.ratio}, want ${c.fwdRatio}`);
      const veth = got.veth?.ratio ?? null;
      assert.ok(veth === c.veth || (veth !== null && c.veth !== null && Math.abs(veth - c.veth) < 1e-9), `${c.s} ${c.m}: got x veth ${veth}, want ${c.veth}`);
    }
    assert.equal(cmp.length, 3, `got ${cmp.length} comparisons, want 3 (baselines are not compared)`);
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

  it('tunswitchConfig is a valid run config in the benchmark pool, and ipcache entries are distinct /32s', () => {
    for (const [id, withC] of [
      ['ts-w1', false],
      ['ts-w2-tso-rw', true],
      ['ts-w1-obs', true],
    ] as const) {
      const spec = systemById(id);
      assert.ok(spec, `got no system ${id}`);
      const cfg = parseRunConfig(tunswitchConfig(spec, 'zzz', withC), '/tmp/run.yaml');
      assert.equal(cfg.io, spec.io, `${id}: got io ${cfg.io}, want ${spec.io}`);
      const nodes = cfg.nodes.map((n) => n.name).join(',');
      assert.equal(nodes, withC ? 'a,b,c' : 'a,b', `${id}: got nodes ${nodes}, want ${withC ? 'a,b,c' : 'a,b'}`);
      if (withC) {
        const a = cfg.nodes.find((n) => n.name === 'a');
        const c = cfg.nodes.find((n) => n.name === 'c');
        assert.deepEqual(c?.labels, a?.labels, `${id}: got C labels ${JSON.stringify(c?.labels)}, want A's ${JSON.stringify(a?.labels)} (the same policy)`);
        assert.equal(c?.ipv4, '10.88.0.4', `${id}: got C address ${c?.ipv4}, want 10.88.0.4`);
      }
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


describe('bench computations (issue 10 cases)', () => {
  const row = (system: string, metric: MetricId, value: number): ResultRow => ({ system, metric, value, unit: METRICS[metric].unit, extra: {} });
  it('parseCases expands the aliases, keeps CASES order and names a bad name', () => {
    const cases: { in: string; want: string[] | RegExp }[] = [
      { in: 'ping', want: ['rtt1'] },
      { in: 'rtt', want: ['rtt1', 'rtt4'] },
      { in: 'cpu,rtt,tcp1,rtt1', want: ['tcp1', 'rtt1', 'rtt4', 'cpu'] },
      { in: 'fair', want: ['fair'] },
      { in: 'tcp1,nope', want: /--cases: "nope" is not one of .*ping, rtt/ },
      { in: ' , ', want: /empty/ },
    ];
    for (const c of cases) {
      if (c.want instanceof RegExp) assert.throws(() => parseCases(c.in), c.want, `${c.in}: got no matching error, want ${c.want}`);
      else assert.deepEqual(parseCases(c.in), c.want, `${c.in}: got ${parseCases(c.in).join(',')}, want ${c.want.join(',')}`);
    }
  });

  it('parseProcStat reads utime and stime after the last ")" of the command name', () => {
    const tail = 'S 1 1234 1234 0 -1 4194560 5000 0 0 0 731 269 0 0 20 0 12 0 100 1000000 2000 18446744073709551615';
    const cases: { name: string; text: string; want: { utime: number; stime: number } | RegExp }[] = [
      { name: 'plain', text: `4242 (node) ${tail}\n`, want: { utime: 731, stime: 269 } },
      { name: 'spaces and parens in comm', text: `4242 (ovs (vswitchd) x) ${tail}`, want: { utime: 731, stime: 269 } },
      { name: 'truncated', text: '4242 (node) S 1 2 3', want: /not a \/proc\/PID\/stat line/ },
      { name: 'no comm', text: 'garbage', want: /not a \/proc\/PID\/stat line/ },
    ];
    for (const c of cases) {
      if (c.want instanceof RegExp) assert.throws(() => parseProcStat(c.text), c.want, `${c.name}: got no matching error, want ${c.want}`);
      else assert.deepEqual(parseProcStat(c.text), c.want, `${c.name}: got ${JSON.stringify(parseProcStat(c.text))}, want ${JSON.stringify(c.want)}`);
    }
  });

  it('parseProcStat reads this process\'s own /proc/self/stat', async () => {
    const { readFileSync } = await import('node:fs');
    const got = parseProcStat(readFileSync('/proc/self/stat', 'utf8'));
    assert.ok(got.utime + got.stime > 0, `got ${JSON.stringify(got)}, want some CPU time for a running test`);
  });

  it('jainIndex: fixed cases and a naive model on seeded input', () => {
    const cases: { xs: number[]; want: number }[] = [
      { xs: [1, 1], want: 1 },
      { xs: [1, 0], want: 0.5 },
      { xs: [3, 1], want: 0.8 },
      { xs: [2, 2, 2, 2], want: 1 },
      { xs: [5, 0, 0, 0], want: 0.25 },
    ];
    for (const c of cases) {
      const got = jainIndex(c.xs);
      assert.ok(Math.abs(got - c.want) < 1e-12, `${c.xs.join(',')}: got ${got}, want ${c.want}`);
    }
    assert.ok(Number.isNaN(jainIndex([])) && Number.isNaN(jainIndex([0, 0])), 'got a number for no rates, want NaN');
    const r = new Rand(10);
    for (let round = 0; round < 200; round++) {
      const n = 1 + r.int(8);
      const xs = Array.from({ length: n }, () => 0.001 + r.range(0, 10000) / 100);
      const mean = xs.reduce((a, b) => a + b, 0) / n;
      const meanSq = xs.reduce((a, b) => a + b * b, 0) / n;
      const want = (mean * mean) / meanSq; // the same index as mean^2 / mean of squares
      const got = jainIndex(xs);
      assert.ok(Math.abs(got - want) < 1e-9, `round ${round}: got ${got}, want ${want}`);
      assert.ok(got >= 1 / n - 1e-12 && got <= 1 + 1e-12, `round ${round}: got ${got}, want within [1/${n}, 1]`);
      const scaled = jainIndex(xs.map((x) => x * 7));
      assert.ok(Math.abs(scaled - got) < 1e-9, `round ${round}: got ${scaled} for scaled rates, want ${got} (scale-free)`);
    }
  });

  it('cpuSecondsPerGb and deliveredIpBytes', () => {
    const got = cpuSecondsPerGb({ utime: 100, stime: 50 }, { utime: 300, stime: 150 }, 100, 2e9);
    assert.equal(got, 1.5, `got ${got} s/GB, want 3 s over 2 GB = 1.5`);
    assert.ok(Number.isNaN(cpuSecondsPerGb({ utime: 0, stime: 0 }, { utime: 1, stime: 0 }, 100, 0)), 'got a number for 0 bytes, want NaN');
    const deltas = [
      { rxBytes: 78_000, rxPackets: 1000 },
      { rxBytes: 140, rxPackets: 2 },
    ];
    const cases: { l2: boolean; want: number }[] = [
      { l2: false, want: 78_140 },
      { l2: true, want: 78_140 - 14 * 1002 },
    ];
    for (const c of cases) {
      const b = deliveredIpBytes(deltas, c.l2);
      assert.equal(b, c.want, `l2=${c.l2}: got ${b} bytes, want ${c.want}`);
    }
  });

  it('measure forms the target quantity', () => {
    const cases: { q: Parameters<typeof measure>[0]; m: MetricId; v: number; ref: number | null; want: number | null }[] = [
      { q: 'multiple', m: 'rtt1_p50', v: 3, ref: 2, want: 1.5 },
      { q: 'loss', m: 'rtt1_tcp', v: 0.9, ref: 1, want: 0.1 },
      { q: 'timesAsGood', m: 'tcp1', v: 2, ref: 4, want: 0.5 },
      { q: 'timesAsGood', m: 'rtt1_p50', v: 2, ref: 4, want: 2 },
      { q: 'value', m: 'fair_jain', v: 0.97, ref: null, want: 0.97 },
      { q: 'multiple', m: 'tcp1', v: 1, ref: 0, want: null },
      { q: 'multiple', m: 'tcp1', v: 1, ref: null, want: null },
    ];
    for (const c of cases) {
      const got = measure(c.q, c.m, c.v, c.ref);
      const ok = got === c.want || (got !== null && c.want !== null && Math.abs(got - c.want) < 1e-12);
      assert.ok(ok, `${c.q} ${c.m} ${c.v}/${c.ref}: got ${got}, want ${c.want}`);
    }
  });

  it('evaluateTargets marks each issue-10 target met or missed, in the issue\'s words', () => {
    const rows: ResultRow[] = [
      row('veth', 'tcp1', 10),
      row('ovs', 'rtt1_p50', 1),
      row('ovs', 'rtt4_p99', 10),
      row('fwd', 'rtt1_p50', 8),
      row('fwd', 'tcp1', 2),
      row('fwd', 'udp64', 100),
      row('fwd-vnet', 'udp64', 200),
      row('ts-w1', 'tcp1', 3.2), // 1.6x fwd: met (moonshot 2x: not)
      row('ts-w1', 'rtt1_p50', 1.5), // 1.5x OVS: met; 0.1875x fwd: met
      row('ts-w1', 'rtt4_p99', 31), // 3.1x OVS: missed
      row('ts-w1', 'rtt1_tcp', 3.1), // lost 3.1%: met
      row('ts-w1', 'udp64', 99), // 0.99x fwd: missed
      row('ts-w1', 'fair_jain', 0.96), // met
      row('ts-w1-tso', 'tcp1', 5.9), // 0.59x veth: missed
      row('ts-w1-tso', 'udp64', 310), // 1.55x fwd-vnet: met, moonshot too
      row('ts-w2', 'tcp1', 3.0), // 0.9375x ts-w1: missed
      row('ts-w2', 'rtt1_p50', 1.55), // 1.5/1.55 = 0.968x: met
      row('ts-w2', 'rtt1_tcp', 2.0), // lost 33%: missed
      row('ts-w2-rw', 'tcp1', 3.0), // no ts-w1-rw tcp1: the workers target has no reference
    ];
    const ts = evaluateTargets(rows);
    const got = ts.map((t) => `${t.system} ${t.id} ${t.metric} ${t.met === null ? 'n/a' : t.met ? (t.moonshotMet ? 'met+' : 'met') : 'MISSED'}`);
    const want = [
      'ts-w1 rtt1-ovs rtt1_p50 met',
      'ts-w1 rtt1-fwd rtt1_p50 met',
      'ts-w1 rtt4-ovs rtt4_p99 MISSED',
      'ts-w1 aqm-loss rtt1_tcp met',
      'ts-w1 udp64-fwd udp64 MISSED',
      'ts-w1 tcp-plain tcp1 met',
      'ts-w1 fair fair_jain met',
      'ts-w1-tso udp64-fwd udp64 met+',
      'ts-w1-tso tcp-offload tcp1 MISSED',
      'ts-w2 rtt1-ovs rtt1_p50 met',
      'ts-w2 rtt1-fwd rtt1_p50 met',
      'ts-w2 aqm-loss rtt1_tcp MISSED',
      'ts-w2 tcp-plain tcp1 met',
      'ts-w2 workers tcp1 MISSED',
      'ts-w2 workers rtt1_p50 met',
      'ts-w2-rw tcp-plain tcp1 met',
      'ts-w2-rw workers tcp1 n/a',
    ];
    assert.deepEqual(got, want, `got\n${got.join('\n')}\nwant\n${want.join('\n')}`);
    const names = new Set(ts.map((t) => t.name));
    for (const n of [
      'RTT p50 under one TCP stream ≤ 2× OVS userspace',
      'RTT p50 under one TCP stream ≤ 0.25× the C forwarder',
      'RTT p99 under 4 streams ≤ 3× OVS',
      'TCP throughput lost to AQM ≤ 5%',
      'UDP 64 B ≥ 1.0× the C forwarder',
      'TCP one stream, plain ≥ 1.5× C forwarder',
      'TCP one stream, offload ≥ 0.6× kernel veth',
      'fair Jain index ≥ 0.95',
      '2 workers vs 1 never worse than 0.95×',
    ]) {
      assert.ok(names.has(n), `got no target named "${n}", want one`);
    }
    const aqm = ts.find((t) => t.system === 'ts-w1' && t.id === 'aqm-loss');
    assert.ok(aqm && Math.abs((aqm.measured ?? NaN) - 0.03125) < 1e-12, `got AQM loss ${aqm?.measured}, want 0.03125`);
    assert.equal(aqm?.reference, 'ts-w1 tcp1', `got reference ${aqm?.reference}, want the system's own tcp1`);
    const tally = targetTally(ts);
    assert.deepEqual(tally, { met: 11, missed: 5, unknown: 1 }, `got tally ${JSON.stringify(tally)}, want 11 met, 5 missed, 1 unknown`);
    const text = renderTargets(ts);
    assert.match(text, /TCP throughput lost to AQM ≤ 5%.*3\.1%\s+met/, `got targets table\n${text}\nwant the AQM row with 3.1% met`);
    assert.match(text, /ts-w1-tso .*met \(moonshot too\)/, `got targets table\n${text}\nwant a moonshot mark`);
  });

  it('cross-host: the offload target against kernel vxlan, and x vxlan in the comparisons', () => {
    const rows: ResultRow[] = [
      row('veth', 'tcp1', 10),
      row('vxlan', 'tcp1', 8),
      row('ts-xhost', 'tcp1', 1),
      row('ts-xhost-tso', 'tcp1', 4.4), // 0.55x vxlan: met
      row('ts-xhost-ugso', 'tcp1', 3.6), // 0.45x vxlan: missed
    ];
    const ts = evaluateTargets(rows);
    const got = ts.map((t) => `${t.system} ${t.id} ${t.reference} ${t.measured?.toFixed(2)} ${t.met === null ? 'n/a' : t.met ? 'met' : 'MISSED'}`);
    const want = ['ts-xhost-tso xhost-vxlan vxlan 0.55 met', 'ts-xhost-ugso xhost-vxlan vxlan 0.45 MISSED'];
    assert.deepEqual(got, want, `got\n${got.join('\n')}\nwant\n${want.join('\n')}`);
    assert.match(renderTargets(ts), /Cross-host TCP one stream, offload ≥ 0\.5× kernel vxlan/, 'the target in the issue\'s words');
    const cmp = compare(rows);
    const x = cmp.find((c) => c.system === 'ts-xhost');
    assert.equal(x?.vxlan?.ratio, 1 / 8, `ts-xhost x vxlan: got ${x?.vxlan?.ratio}, want 0.125`);
    assert.equal(x?.veth?.ratio, 1 / 10, `ts-xhost x veth: got ${x?.veth?.ratio}, want 0.1`);
    assert.equal(cmp.some((c) => c.system === 'vxlan'), false, 'the kernel baseline is not compared with itself');
    assert.deepEqual(DEFAULT_SYSTEM_IDS.filter((id) => /xhost|vxlan/.test(id)), ['vxlan', 'ts-xhost', 'ts-xhost-tso'], 'the UDP_SEGMENT experiment runs only by name');
  });

  it('xhostConfig: two valid cluster-mode run configs, disjoint pools, B in host 2\'s pool, A and C in host 1\'s', () => {
    for (const id of ['ts-xhost', 'ts-xhost-tso', 'ts-xhost-ugso']) {
      const spec = systemById(id);
      assert.ok(spec && spec.kind === 'xhost', `got no xhost system ${id}`);
      const c1 = parseRunConfig(xhostConfig(spec, 'zzz', 1, true), '/tmp/h1.yaml');
      const c2 = parseRunConfig(xhostConfig(spec, 'zzz', 2, true), '/tmp/h2.yaml');
      const got = [c1.nodes.map((n) => `${n.name} ${n.ipv4}`).join(','), c2.nodes.map((n) => `${n.name} ${n.ipv4}`).join(','), c1.pool.ipv4.text, c2.pool.ipv4.text];
      const want = ['a 10.88.0.2,c 10.88.0.4', `b ${XHOST_ADDR_B}`, '10.88.0.0/26', '10.88.0.64/26'];
      assert.deepEqual(got, want, `${id}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
      assert.deepEqual([c1.underlay?.ip, c2.underlay?.ip, c1.kvstore?.nodeName, c2.kvstore?.nodeName], [UL_H1, UL_H2, 'h1', 'h2'], `${id}: underlay and node names`);
      assert.equal(c1.kvstore?.url, c2.kvstore?.url, `${id}: both hosts on one etcd`);
      assert.deepEqual([c1.offload, c2.offload], [spec.offload, spec.offload], `${id}: got offload ${c1.offload}/${c2.offload}, want ${spec.offload}`);
      const ugso = id === 'ts-xhost-ugso';
      assert.deepEqual([c1.underlayUdpGso, c2.underlayUdpGso], [ugso, ugso], `${id}: got underlayUdpGso ${c1.underlayUdpGso}/${c2.underlayUdpGso}, want ${ugso}`);
      assert.equal(c1.name, c2.name, `${id}: one lab name on both hosts`);
      const n = xhostNames(spec, 'zzz');
      assert.deepEqual([n.a, n.b, n.h1, n.h2].map((x) => x.startsWith(`${c1.name}-`)), [true, true, true, true], `${id}: namespaces ${JSON.stringify(n)} under ${c1.name}`);
    }
  });

  it('twinOf maps a 2-worker system to its 1-worker twin', () => {
    for (const [id, want] of [
      ['ts-w2', 'ts-w1'],
      ['ts-w2-tso-rw', 'ts-w1-tso-rw'],
    ]) {
      assert.equal(twinOf(id as string), want, `${id}: got ${twinOf(id as string)}, want ${want}`);
      assert.ok(systemById(want as string), `got no system ${want}`);
    }
  });

  it('targetLines puts each per-run target value on its metric', () => {
    const rows: ResultRow[] = [row('ovs', 'rtt1_p50', 1), row('fwd', 'rtt1_p50', 8), row('fwd', 'tcp1', 2), row('ts-w1', 'rtt1_p50', 3), row('ts-w1', 'tcp1', 1), row('ts-w1-rw', 'tcp1', 1), row('ts-w1', 'fair_jain', 0.9)];
    const got = targetLines(rows).map((l) => `${l.metric} ${l.value} ${l.label}`);
    const want = ['rtt1_p50 2 ≤2× ovs', 'rtt1_p50 2 ≤0.25× fwd', 'tcp1 3 ≥1.5× fwd', 'fair_jain 0.95 ≥ 0.95'];
    assert.deepEqual(got, want, `got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  });

  it('renderResults shows n/a for unavailable systems and cases that do not apply', () => {
    const rows: ResultRow[] = [row('veth', 'tcp1', 10), row('fwd', 'cpu_tcp1', 2), row('veth', 'cpu_udp64', NaN)].filter((r) => Number.isFinite(r.value));
    const systems = ['veth', 'fwd', 'ts-w1'].map((id) => systemById(id)!);
    const text = renderResults(rows, systems, [
      { id: 'veth', label: '', info: {}, errors: [], na: { cpu: 'kernel veth has no switch process' } },
      { id: 'ts-w1', label: '', info: {}, errors: [], unavailable: 'io: uring: no io_uring here' },
    ]);
    assert.match(text, /CPU per GB, tcp1 \(s\/GB\)\s+n\/a\s+2\.00\s+n\/a/, `got\n${text}\nwant n/a for veth and ts-w1`);
    assert.match(text, /ts-w1: n\/a \(io: uring: no io_uring here\)/, `got\n${text}\nwant the reason`);
  });

  it('engineUnavailable finds the agent\'s io_uring reason only for io: uring systems', () => {
    const log = '2026-12-01T00:00:00Z starting\nError: io: uring: the io_uring engine cannot run here: binding has no io_uring engine\n';
    const cases: { io: 'uring' | 'auto' | 'readwrite'; log: string; want: string | null }[] = [
      { io: 'uring', log, want: 'io: uring: the io_uring engine cannot run here: binding has no io_uring engine' },
      { io: 'readwrite', log, want: null },
      { io: 'uring', log: 'Error: namespace missing', want: null },
    ];
    for (const c of cases) {
      const got = engineUnavailable({ io: c.io }, c.log);
      assert.equal(got, c.want, `${c.io}: got ${got}, want ${c.want}`);
    }
  });

  it('every tunswitch system has both engines, and every system a distinct fixed colour', () => {
    const ts = SYSTEMS.filter((s) => s.kind === 'tunswitch' && !s.events);
    for (const s of ts) {
      const twin = s.io === 'readwrite' ? s.id.replace(/-rw$/, '') : `${s.id}-rw`;
      const t = systemById(twin);
      assert.ok(t, `${s.id}: got no engine twin ${twin}, want one`);
      assert.deepEqual([t.workers, t.offload], [s.workers, s.offload], `${s.id}: got twin ${twin} with other workers/offload`);
      assert.notEqual(t.io, s.io, `${s.id}: got twin ${twin} with the same engine ${s.io}`);
    }
    const colours = SYSTEMS.map((s) => s.colour.toLowerCase());
    assert.equal(new Set(colours).size, colours.length, `got colours ${colours.join(',')}, want all distinct`);
    const shorts = SYSTEMS.map((s) => s.short);
    assert.equal(new Set(shorts).size, shorts.length, `got short names ${shorts.join(',')}, want all distinct`);
    for (const s of shorts) assert.ok(s.length <= 3, `got short name ${s}, want at most 3 characters`);
  });

  it('loadWarning, ETA and durations', () => {
    assert.equal(loadWarning(1.5, 2), null, 'got a warning at load 1.5 on 2 CPUs, want none');
    assert.match(loadWarning(7.25, 2) ?? '', /load average is 7\.25, above the 2 CPUs/, 'got no warning at load 7.25 on 2 CPUs');
    const eta: { done: number; left: number; elapsed: number; want: number }[] = [
      { done: 0, left: 100, elapsed: 0, want: 100 },
      { done: 50, left: 50, elapsed: 100, want: 100 }, // running at half the planned speed
      { done: 50, left: 50, elapsed: 25, want: 25 },
      { done: 100, left: 0, elapsed: 120, want: 0 },
    ];
    for (const c of eta) {
      const got = etaSeconds(c.done, c.left, c.elapsed);
      assert.equal(got, c.want, `eta(${c.done}, ${c.left}, ${c.elapsed}): got ${got}, want ${c.want}`);
    }
    for (const [s, want] of [
      [42.4, '42s'],
      [185, '3m05s'],
      [3720, '1h02m'],
    ] as const) {
      assert.equal(fmtDuration(s), want, `${s}: got ${fmtDuration(s)}, want ${want}`);
    }
    const withRuns = caseEstimateS('cpu', 10, ['tcp1', 'udp64', 'cpu']);
    const alone = caseEstimateS('cpu', 10, ['cpu']);
    assert.ok(withRuns === 0 && alone > 20, `got cpu estimates ${withRuns} (reusing tcp1/udp64) and ${alone} (alone), want 0 and > 20`);
  });
});

describe('bench chart', () => {
  const row = (system: string, metric: MetricId, value: number): ResultRow => ({ system, metric, value, unit: 'x', extra: {} });
  const labels = { veth: 'kernel veth', fwd: 'C fwd', 'ts-w1-rw': 'tunswitch w1 rw' };
  const colours = { veth: '#7f7f7f', fwd: '#2ca02c', 'ts-w1-rw': '#aec7e8' };

  it('draws one bar per result, and the target lines', async () => {
    const rows: ResultRow[] = [row('veth', 'tcp1', 10), row('fwd', 'tcp1', 2), row('veth', 'tcp4', 12), row('fwd', 'udp64', 100), row('fwd', 'rtt1_p99', 3), row('veth', 'rtt1_p99', 0.05)];
    const svg = await renderChartSvg(rows, { title: 't', order: ['veth', 'fwd'], labels, colours, lines: [{ metric: 'tcp1', value: 3, label: '≥1.5× fwd' }] });
    assert.match(svg, /^<svg /, `got ${svg.slice(0, 40)}, want an SVG document`);
    const items = (svg.match(/aria-roledescription="bar"/g) ?? []).length;
    assert.equal(items, rows.length, `got ${items} bars, want ${rows.length}`);
    const rules = (svg.match(/aria-roledescription="rule mark"/g) ?? []).length;
    assert.equal(rules, 1, `got ${rules} target lines, want 1`);
    assert.ok(svg.includes('≥1.5× fwd'), 'got no target label in the SVG, want "≥1.5× fwd"');
  });

  it('keeps each system\'s colour whatever else is in the run, and draws RTT on a log scale', () => {
    const a = chartSpec([row('veth', 'tcp1', 1), row('ts-w1-rw', 'tcp1', 1)], { title: '', order: ['veth', 'fwd', 'ts-w1-rw'], labels, colours });
    const b = chartSpec([row('fwd', 'tcp1', 1), row('ts-w1-rw', 'tcp1', 1), row('ts-w1-rw', 'rtt1_p50', 0.3), row('veth', 'rtt1_p50', 0.04)], { title: '', order: ['veth', 'fwd', 'ts-w1-rw'], labels, colours });
    const colourOf = (spec: object, label: string): string | undefined => {
      const text = JSON.stringify(spec);
      const m = /"scale":\{"domain":(\[[^\]]*\]),"range":(\[[^\]]*\])\}/.exec(text);
      if (!m) return undefined;
      const d = JSON.parse(m[1] as string) as string[];
      const r = JSON.parse(m[2] as string) as string[];
      return r[d.indexOf(label)];
    };
    for (const spec of [a, b]) {
      const got = colourOf(spec, 'tunswitch w1 rw');
      assert.equal(got, '#aec7e8', `got colour ${got} for ts-w1-rw, want its fixed #aec7e8`);
    }
    const text = JSON.stringify(b);
    assert.match(text, /"type":"log"/, 'got no log scale, want the RTT panel on a log scale');
    assert.deepEqual(logDomain([0.04, 0.3]), [0.01, 1], `got ${JSON.stringify(logDomain([0.04, 0.3]))}, want [0.01, 1]`);
    assert.deepEqual(logDomain([100]), [100, 1000], `got ${JSON.stringify(logDomain([100]))}, want [100, 1000]`);
  });
});
