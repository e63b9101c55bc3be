/**
 * The end-to-end benchmark: tunswitch next to its baselines, in one run.
 *
 *   1. Check the machine: root, /dev/net/tun and the tools the chosen systems need.
 *   2. Build the C forwarder into a private temporary directory.
 *   3. For each system in turn: build it (namespaces, wire, daemons), start iperf3's server in
 *      B, check that A reaches B, run every case (one progress tick each), tear it down.
 *      A failure is recorded against that system and the run goes on with the next one.
 *   4. Compare tunswitch with the baselines of this same run, mark the targets, write
 *      <outDir>/e2e.json and <outDir>/e2e.svg, and return the report.
 *
 * Cleanup: each system's namespaces, devices and processes are on an undo list that also runs
 * on exit and on SIGINT/SIGTERM (see proc.ts).
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import cliProgress from 'cli-progress';
import { CASES, CASE_LABELS, METRICS, runCase, type CaseId, type Measurement } from './cases.js';
import { Cleanup, haveTool, sh, waitTcpListen, type Background } from './proc.js';
import { renderProfile, summarizeProfileDir, type ProfileSummary } from './profile.js';
import { compare, renderComparisons, renderResults, targetTally, type Comparison, type ResultRow, type SystemOutcome } from './report.js';
import { BENCH_PORT, SYSTEMS, buildCBinary, buildSystem, checkReach, systemById, type SystemSpec } from './systems.js';

const here = dirname(fileURLToPath(import.meta.url));
/** <outDir>/bench/e2e -> the repository root. */
export const REPO_ROOT = resolve(here, '..', '..', '..');
export const CLI_MAIN = join(here, '..', '..', 'src', 'cli', 'main.js');
export const FWD_SRC = join(REPO_ROOT, 'bench', 'c', 'fwd.c');
export const TXCSUM_SRC = join(REPO_ROOT, 'bench', 'e2e', 'txcsum.c');

import { DEFAULT_IPCACHE_ENTRIES, DEFAULT_OUT_DIR, DEFAULT_SECONDS, QUICK, parseList } from './options.js';
export { DEFAULT_IPCACHE_ENTRIES, DEFAULT_OUT_DIR, DEFAULT_SECONDS, QUICK, parseList };

export interface BenchOptions {
  seconds: number;
  systems: string[];
  cases: CaseId[];
  ipcacheEntries: number;
  /** Where e2e.json and e2e.svg go; null writes nothing. */
  outDir: string | null;
  /** Profile the tunswitch agent (main thread and workers) into this directory. */
  cpuProfDir: string | null;
  /** Draw a progress bar on stderr. */
  progress: boolean;
  quick: boolean;
  log: (msg: string) => void;
  cliMain?: string;
  fwdSrc?: string;
}

export interface BenchReport {
  tool: 'tunswitch bench';
  startedAt: string;
  finishedAt: string;
  durationS: number;
  host: {
    cpus: number;
    cpuModel: string;
    kernel: string;
    node: string;
    loadBefore: number[];
    loadAfter: number[];
    uptimeBefore: string;
    uptimeAfter: string;
  };
  options: { seconds: number; quick: boolean; systems: string[]; cases: CaseId[]; ipcacheEntries: number };
  notes: string[];
  systems: SystemOutcome[];
  results: ResultRow[];
  comparisons: Comparison[];
  targets: { met: number; missed: number; unknown: number };
  profiles: Record<string, ProfileSummary[]>;
}

/** The warning printed before a run when the 1-minute load average is above the core count, else null. */
export function loadWarning(load1: number, cores: number): string | null {
  if (!(load1 > cores)) return null;
  return `warning: load average ${load1.toFixed(2)} is above the ${cores} cores before the run; the numbers will be low and noisy`;
}

/** Seconds left after `done` of `total` steps took `elapsedMs`, by the mean step so far (-1: unknown). */
export function etaSeconds(done: number, total: number, elapsedMs: number): number {
  if (done <= 0 || total <= done) return done >= total ? 0 : -1;
  return Math.round(((elapsedMs / done) * (total - done)) / 1000);
}

/** "1m05s", "42s", or "?" for an unknown ETA. */
export function formatEta(s: number): string {
  if (s < 0) return '?';
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

export const SYSTEM_IDS: readonly string[] = SYSTEMS.map((s) => s.id);
export { CASES };

async function uptime(): Promise<string> {
  const r = await sh('uptime', []);
  return r.stdout.trim();
}

/** Fails with one line naming what is missing. */
async function preflight(systems: readonly SystemSpec[], cases: readonly CaseId[]): Promise<void> {
  const uid = process.getuid ? process.getuid() : -1;
  if (uid !== 0) throw new Error(`tunswitch bench needs root (namespaces, TUN devices); running as uid ${uid}`);
  try {
    statSync('/dev/net/tun');
  } catch {
    throw new Error('tunswitch bench needs /dev/net/tun');
  }
  const tools = new Set(['ip', 'ss', 'iperf3', 'ping', 'cat']);
  if (cases.includes('udp64')) tools.add('trafgen');
  if (systems.some((s) => s.kind === 'fwd')) tools.add('cc');
  if (systems.some((s) => s.kind === 'ovs')) for (const t of ['ovs-vsctl', 'ovs-vswitchd', 'ovsdb-server', 'ovsdb-tool']) tools.add(t);
  const missing: string[] = [];
  for (const t of tools) if (!(await haveTool(t))) missing.push(t);
  if (missing.length > 0) {
    throw new Error(`tunswitch bench: missing ${missing.join(', ')} (apt-get install iproute2 iperf3 iputils-ping netsniff-ng openvswitch-switch gcc)`);
  }
}

export async function runBench(o: BenchOptions): Promise<BenchReport> {
  const t0 = Date.now();
  const systems = o.systems.map((id) => {
    const s = systemById(id);
    if (!s) throw new Error(`unknown system "${id}" (known: ${SYSTEM_IDS.join(', ')})`);
    return s;
  });
  await preflight(systems, o.cases);
  const report: BenchReport = {
    tool: 'tunswitch bench',
    startedAt: new Date(t0).toISOString(),
    finishedAt: '',
    durationS: 0,
    host: {
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? '',
      kernel: release(),
      node: process.version,
      loadBefore: loadavg().map((x) => Number(x.toFixed(2))),
      loadAfter: [],
      uptimeBefore: await uptime(),
      uptimeAfter: '',
    },
    options: { seconds: o.seconds, quick: o.quick, systems: o.systems, cases: o.cases, ipcacheEntries: o.ipcacheEntries },
    notes: [
      'ratios are "times as good": value/baseline for throughput, baseline/value for RTT; x fwd uses fwd for offload off and fwd-vnet for offload on',
      'udp64: 64-byte IPv4 packets (36-byte UDP payload, 16 flows) from trafgen on one CPU; kpps delivered = rx_packets on the receiver',
      'ovs: netdev (userspace) datapath, veth tx checksum (so TSO) off in the namespaces; ovs-tso: userspace-tso-enable=true with the veth offloads on; targets use ovs',
      'all systems share the same 2-core machine with the load generators (iperf3, trafgen) and whatever else runs; see host.load*',
    ],
    systems: [],
    results: [],
    comparisons: [],
    targets: { met: 0, missed: 0, unknown: 0 },
    profiles: {},
  };

  const busy = loadWarning(report.host.loadBefore[0] ?? 0, report.host.cpus);
  if (busy !== null) {
    o.log(busy);
    report.notes.push(busy);
  }

  const global = new Cleanup();
  global.hook();
  const tmp = mkdtempSync(join(tmpdir(), 'tsb-bench-'));
  global.add(
    `rm ${tmp}`,
    async () => rmSync(tmp, { recursive: true, force: true }),
    () => rmSync(tmp, { recursive: true, force: true }),
  );
  const tag = (process.pid % 46656).toString(36);
  const total = systems.length * o.cases.length;
  const bar = o.progress ? new cliProgress.SingleBar({ format: 'bench [{bar}] {value}/{total} | ETA {eta_formatted} | {status}', etaBuffer: 4, hideCursor: true, stream: process.stderr, barsize: 30 }) : null;
  bar?.start(total, 0, { status: 'starting' });
  const status = (s: string): void => {
    if (bar) bar.update(done, { status: s });
    else o.log(s);
  };
  let done = 0;
  const tick = (s: string): void => {
    done++;
    if (bar) bar.increment(1, { status: s });
    else o.log(`[${done}/${total}] ${s} (${formatEta(etaSeconds(done, total, Date.now() - t0))} left)`);
  };

  try {
    const fwdBin = join(tmp, 'fwd');
    const txcsumBin = join(tmp, 'txcsum');
    if (systems.some((s) => s.kind === 'fwd')) await buildCBinary(o.fwdSrc ?? FWD_SRC, fwdBin);
    if (systems.some((s) => s.kind === 'ovs' && !s.offload)) await buildCBinary(TXCSUM_SRC, txcsumBin);
    for (const spec of systems) {
      const outcome: SystemOutcome = { id: spec.id, label: spec.label, info: {}, errors: [] };
      report.systems.push(outcome);
      const cleanup = new Cleanup();
      cleanup.hook();
      let remaining = [...o.cases];
      try {
        status(`${spec.id}: setting up`);
        const built = await buildSystem(spec, {
          cleanup,
          tag,
          tmp,
          cliMain: o.cliMain ?? CLI_MAIN,
          fwdBin,
          txcsumBin,
          ipcacheEntries: o.ipcacheEntries,
          cpuProfDir: o.cpuProfDir,
          log: (m) => status(m),
        });
        outcome.info = built.topo.info;
        try {
          const topo = built.topo;
          // iperf3's server in B; restarted if it dies (a stray signal must not void the rest).
          let srv: Background | null = null;
          let restarts = 0;
          const ensureServer = async (): Promise<void> => {
            if (srv && srv.child.exitCode === null && srv.child.signalCode === null) return;
            if (srv) {
              restarts++;
              outcome.info.iperfServerRestarts = restarts;
            }
            const s = cleanup.spawn('ip', ['netns', 'exec', topo.nsB, 'iperf3', '-s', '-p', String(BENCH_PORT), '-B', topo.addrB]);
            srv = s;
            await waitTcpListen(topo.nsB, BENCH_PORT).catch((e: unknown) => {
              throw new Error(`${(e as Error).message}; iperf3: ${s.output().stderr.trim()}`);
            });
          };
          await ensureServer();
          await checkReach(topo);
          for (const c of o.cases) {
            status(`${spec.id}: ${CASE_LABELS[c]}`);
            let ms: Measurement[] = [];
            try {
              ms = await runCase(c, topo, { cleanup, ensureServer, seconds: o.seconds, tmp });
            } catch (e) {
              outcome.errors.push(`${c}: ${(e as Error).message.split('\n')[0]}`);
            }
            for (const m of ms) report.results.push({ system: spec.id, metric: m.metric, value: m.value, unit: METRICS[m.metric].unit, extra: m.extra });
            remaining = remaining.filter((x) => x !== c);
            tick(`${spec.id}: ${CASE_LABELS[c]} done`);
            if (built.agent && built.agent.child.exitCode !== null) throw new Error(`the agent exited: ${built.agent.output().stderr.trim().split('\n').slice(-3).join(' | ')}`);
          }
        } finally {
          status(`${spec.id}: tearing down`);
          await built.teardown();
        }
        if (o.cpuProfDir && spec.kind === 'tunswitch') {
          report.profiles[spec.id] = summarizeProfileDir(join(o.cpuProfDir, spec.id));
        }
      } catch (e) {
        outcome.errors.push((e as Error).message.split('\n')[0] as string);
      } finally {
        await cleanup.run();
        cleanup.unhook();
        for (const c of remaining) tick(`${spec.id}: ${CASE_LABELS[c]} skipped`);
      }
    }
  } finally {
    bar?.stop();
    await global.run();
    global.unhook();
  }

  report.comparisons = compare(report.results, systems);
  report.targets = targetTally(report.comparisons);
  report.host.loadAfter = loadavg().map((x) => Number(x.toFixed(2)));
  report.host.uptimeAfter = await uptime();
  report.finishedAt = new Date().toISOString();
  report.durationS = Math.round((Date.now() - t0) / 1000);

  if (o.outDir) {
    mkdirSync(o.outDir, { recursive: true });
    writeFileSync(join(o.outDir, 'e2e.json'), JSON.stringify(report, null, 2) + '\n');
    // vega and vega-lite are dev dependencies (only the chart needs them): without them the
    // report is complete and only e2e.svg is missing.
    try {
      writeFileSync(join(o.outDir, 'e2e.svg'), await chartFor(report, systems));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') throw e;
      o.log(`e2e.svg not written: the chart needs vega and vega-lite (dev dependencies: npm install --include=dev)`);
    }
  }
  return report;
}

export async function chartFor(report: BenchReport, systems: readonly SystemSpec[]): Promise<string> {
  const labels: Record<string, string> = {};
  for (const s of systems) labels[s.id] = s.label;
  const load = report.host.loadBefore[0] ?? 0;
  // vega and vega-lite load only here (about 0.3 s), so no other command pays for them.
  const { renderChartSvg } = await import('./chart.js');
  return renderChartSvg(report.results, {
    title: `tunswitch bench ${report.startedAt.slice(0, 16).replace('T', ' ')}, ${report.options.seconds} s per case, ${report.host.cpus} CPUs, load ${load}`,
    order: systems.map((s) => s.id),
    labels,
  });
}

/** The human-readable report. */
export function renderReport(r: BenchReport): string {
  const systems = r.options.systems.map((id) => systemById(id)).filter((s): s is SystemSpec => s !== undefined);
  const parts: string[] = [];
  parts.push(`tunswitch bench: ${r.options.seconds} s per case, ${r.durationS} s in all; ${r.host.cpus} CPUs; load before ${r.host.loadBefore.join(' ')}, after ${r.host.loadAfter.join(' ')}\n`);
  parts.push('\nResults\n' + renderResults(r.results, systems));
  if (r.comparisons.length > 0) parts.push('\ntunswitch against the baselines (ratio > 1: tunswitch is better)\n' + renderComparisons(r.comparisons));
  parts.push(`\ntargets: ${r.targets.met} met, ${r.targets.missed} missed${r.targets.unknown ? `, ${r.targets.unknown} without a baseline` : ''}\n`);
  const errs = r.systems.filter((s) => s.errors.length > 0);
  if (errs.length > 0) {
    parts.push('\nerrors\n');
    for (const s of errs) for (const e of s.errors) parts.push(`  ${s.id}: ${e}\n`);
  }
  for (const [id, profs] of Object.entries(r.profiles)) {
    parts.push(`\nCPU profile of ${id} (self time)\n`);
    for (const p of profs) parts.push(renderProfile(p));
  }
  return parts.join('');
}

/** Reads a report written by an earlier run. */
export function readReport(file: string): BenchReport {
  return JSON.parse(readFileSync(file, 'utf8')) as BenchReport;
}
