/**
 * `tunswitch bench`: end-to-end throughput and latency of tunswitch next to its baselines
 * (kernel veth, Open vSwitch userspace, the C TUN forwarder), measured in one run on this
 * machine. Needs root. Always writes bench/results/e2e.json and e2e.svg (or --out-dir).
 *
 *   tunswitch bench                       # every system and case, 10 s per case
 *   tunswitch bench --cases rtt,fair,cpu  # latency under load, fairness, CPU per GB
 *   tunswitch bench --quick               # 2 s per case, a subset
 *   tunswitch bench --systems fwd,ts-w1 --cases tcp1 -t 5 -o json
 *   tunswitch bench --cpu-prof /tmp/prof  # also profile the agent, summarise self time
 */
import { durationParser } from './duration.js';
import { Option, type Command } from 'commander';
import type { CliContext } from './context.js';
import { outputOf, parseNonNegativeInt, UsageError, withOutput } from './context.js';
// The harness (and through it cli-progress and, for the chart, vega) loads only when bench runs.
import type { BenchOptions } from '../../bench/e2e/harness.js';
import { CASES, CASE_ALIASES, DEFAULT_IPCACHE_ENTRIES, DEFAULT_OUT_DIR, DEFAULT_SECONDS, DEFAULT_SYSTEM_IDS, QUICK, SYSTEM_IDS, parseCases, parseList } from '../../bench/e2e/options.js';
import { TunswitchError } from '../proto/errors.js';



interface BenchFlags {
  time?: number;
  quick?: boolean;
  systems?: string;
  cases?: string;
  ipcache: number;
  outDir: string;
  write: boolean;
  cpuProf?: string;
  progress: boolean;
}

/** The harness options for the parsed flags (exported for tests). */
export function benchOptions(f: BenchFlags, log: (m: string) => void): BenchOptions {
  const quick = f.quick === true;
  return {
    seconds: f.time ?? (quick ? QUICK.seconds : DEFAULT_SECONDS),
    systems: f.systems !== undefined ? parseList(f.systems, SYSTEM_IDS, 'systems') : quick ? [...QUICK.systems] : [...DEFAULT_SYSTEM_IDS],
    cases: f.cases !== undefined ? parseCases(f.cases) : quick ? [...QUICK.cases] : [...CASES],
    ipcacheEntries: f.ipcache,
    outDir: f.write ? f.outDir : null,
    cpuProfDir: f.cpuProf ?? null,
    progress: f.progress && process.stderr.isTTY === true,
    quick,
    log,
  };
}

export function register(program: Command, ctx: CliContext): void {
  const cmd = program
    .command('bench')
    .description('measure tunswitch end to end against kernel veth, OVS userspace, a C TUN forwarder, and kernel vxlan across two hosts (root)')
    .option('-t, --time <duration>', `time per case, whole seconds: 10s, 1m (a bare number is in seconds; default ${DEFAULT_SECONDS}s, ${QUICK.seconds}s with --quick)`, (v: string) => Math.max(1, Math.ceil(durationParser('s')(v) / 1000)))
    .option('--quick', `${QUICK.seconds} s per case, systems ${QUICK.systems.join(',')}, cases ${QUICK.cases.join(',')}`)
    .option('--systems <list>', `comma-separated systems (${SYSTEM_IDS.join(', ')})`)
    .option(
      '--cases <list>',
      `comma-separated cases (${CASES.join(', ')}; ${Object.entries(CASE_ALIASES)
        .map(([k, v]) => `${k} = ${v.join(',')}`)
        .join(', ')})`,
    )
    .option('--ipcache <n>', 'extra ipcache entries loaded into tunswitch', parseNonNegativeInt, DEFAULT_IPCACHE_ENTRIES)
    .option('--out-dir <dir>', 'where e2e.json and e2e.svg are written', DEFAULT_OUT_DIR)
    .option('--no-write', 'do not write e2e.json and e2e.svg')
    .addOption(new Option('--cpu-prof <dir>', 'profile the tunswitch agent (node --cpu-prof) into this directory and summarise it'))
    .option('--no-progress', 'no progress bar (one log line per case instead)');
  withOutput(cmd).action(async (f: BenchFlags, c: Command) => {
    let opts: BenchOptions;
    try {
      opts = benchOptions(f, (m) => ctx.warn(m));
    } catch (e) {
      throw new UsageError((e as Error).message); // a bad --systems/--cases list
    }
    const { renderReport, runBench } = await import('../../bench/e2e/harness.js');
    const report = await runBench(opts);
    if (outputOf(c) === 'json') ctx.out(JSON.stringify(report, null, 2) + '\n');
    else ctx.out(renderReport(report));
    if (opts.outDir) ctx.warn(`wrote ${opts.outDir}/e2e.json and ${opts.outDir}/e2e.svg`);
    const failed = report.systems.filter((s) => s.errors.length > 0).map((s) => s.id);
    if (failed.length > 0) throw new TunswitchError('EFAILED', `bench: errors in ${failed.join(', ')} (see the report)`);
  });
}
