/**
 * One real `tunswitch bench --quick` run (1 s per case) so the harness cannot rot: TCP, ping
 * under one TCP stream, two senders (fair) and CPU per GB over kernel veth, OVS userspace,
 * the C forwarder and tunswitch with both I/O engines (io_uring is "n/a" where it cannot
 * run). The unit tests of the parsers, targets and chart are test/bench/e2e.test.ts.
 *
 * Needs root, /dev/net/tun, iperf3, trafgen, Open vSwitch and a C compiler; it FAILS (never
 * skips) when they are missing. It uses namespaces tsb-<tag>*, addresses in 10.88.0.0/24,
 * and writes its report into a temporary directory.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import type { MetricId } from '../../bench/e2e/cases.js';
import type { BenchReport } from '../../bench/e2e/harness.js';
import { register } from '../../src/cli/bench.js';
import type { CliContext } from '../../src/cli/context.js';
import { ApiClient } from '../../src/api/client.js';
import { sh } from '../../bench/e2e/proc.js';

describe('tunswitch bench --quick (real namespaces)', () => {
  it('measures TCP, RTT under load, fairness and CPU over veth, OVS, the C forwarder and tunswitch, compares them and cleans up', { timeout: 170_000 }, async () => {
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
    const systems = ['veth', 'ovs', 'fwd', 'ts-w1-rw', 'ts-w1'];
    const t0 = Date.now();
    try {
      const argv = ['bench', '--quick', '-t', '1', '--systems', systems.join(','), '--cases', 'tcp1,ping,fair,cpu', '--out-dir', out, '--no-progress', '-o', 'json'];
      await program.parseAsync(argv, { from: 'user' });
      const report = JSON.parse(stdout) as BenchReport;
      const onDisk = JSON.parse(readFileSync(join(out, 'e2e.json'), 'utf8')) as BenchReport;
      assert.deepEqual(onDisk.results, report.results, 'got a different e2e.json than the -o json output, want the same results');
      assert.ok(existsSync(join(out, 'e2e.svg')), 'got no e2e.svg, want the chart');
      assert.equal(report.options.seconds, 1, `got ${report.options.seconds} s per case, want 1 (-t 1)`);
      assert.deepEqual(report.options.cases, ['tcp1', 'rtt1', 'fair', 'cpu'], `got cases ${report.options.cases}, want ping as rtt1`);
      // ts-w1 runs io: uring: either it ran with io_uring, or it is n/a with the agent's reason.
      const uring = report.systems.find((s) => s.id === 'ts-w1');
      const ran = systems.filter((s) => s !== 'ts-w1' || uring?.unavailable === undefined);
      if (uring?.unavailable !== undefined) assert.match(uring.unavailable, /io_uring|io: uring/, `got ts-w1 n/a because "${uring.unavailable}", want an io_uring reason`);
      else assert.equal(uring?.info.ioEngine, 'uring', `got ts-w1 engine ${uring?.info.ioEngine}, want uring`);
      const rw = report.systems.find((s) => s.id === 'ts-w1-rw');
      assert.equal(rw?.info.ioEngine, 'readwrite', `got ts-w1-rw engine ${rw?.info.ioEngine}, want readwrite`);
      const value = (s: string, m: MetricId): number | undefined => report.results.find((x) => x.system === s && x.metric === m)?.value;
      for (const s of ran) {
        const errs = report.systems.find((x) => x.id === s)?.errors ?? [];
        assert.deepEqual(errs, [], `${s}: got errors ${errs.join(' | ')}, want none`);
        for (const m of ['tcp1', 'rtt1_tcp', 'fair_a', 'fair_c'] as const) {
          const v = value(s, m);
          assert.ok(v !== undefined && v > 0.001, `${s} ${m}: got ${v} Gbit/s, want a positive TCP rate`);
        }
        for (const m of ['rtt1_p50', 'rtt1_p99'] as const) {
          const v = value(s, m);
          assert.ok(v !== undefined && v > 0 && v < 5000, `${s} ${m}: got ${v} ms, want an RTT`);
        }
        const j = value(s, 'fair_jain');
        assert.ok(j !== undefined && j >= 0.5 - 1e-9 && j <= 1 + 1e-9, `${s}: got Jain index ${j}, want within [0.5, 1] for two flows`);
        for (const m of ['cpu_tcp1', 'cpu_udp64'] as const) {
          const v = value(s, m);
          if (s === 'veth') assert.equal(v, undefined, `veth ${m}: got ${v}, want none (no switch process)`);
          else assert.ok(v !== undefined && v > 0, `${s} ${m}: got ${v} s/GB, want a positive CPU cost`);
        }
      }
      const veth = report.systems.find((s) => s.id === 'veth');
      assert.match(veth?.na?.cpu ?? '', /no switch process/, `got veth cpu n/a reason ${veth?.na?.cpu}, want "no switch process"`);
      const ts = report.systems.find((s) => s.id === 'ts-w1-rw');
      assert.equal(ts?.info.ipcacheAdded, 100_000, `got ${ts?.info.ipcacheAdded} ipcache entries added, want 100000`);
      assert.equal(ts?.info.policyEnforced, true, `got policy enforced ${ts?.info.policyEnforced}, want true on all three endpoints`);
      const c = report.comparisons.find((x) => x.system === 'ts-w1-rw' && x.metric === 'tcp1');
      assert.ok(c && c.fwd && c.ovs && c.veth, `got comparison ${JSON.stringify(c)}, want all three baselines`);
      const want = c.value / c.fwd.value;
      assert.ok(Math.abs(c.fwd.ratio - want) < 1e-9, `got x fwd ${c.fwd.ratio}, want ${want}`);
      const names = new Set(report.targets.filter((t) => t.system === 'ts-w1-rw').map((t) => t.id));
      for (const id of ['rtt1-ovs', 'rtt1-fwd', 'aqm-loss', 'tcp-plain', 'fair']) assert.ok(names.has(id), `got targets ${[...names].join(',')}, want ${id} for ts-w1-rw`);
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
