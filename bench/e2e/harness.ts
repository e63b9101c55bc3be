/**
 * The end-to-end benchmark: tunswitch next to its baselines, in one run.
 *
 *   1. Check the machine: root, /dev/net/tun and the tools the chosen systems need.
 *   2. Build the C forwarder into a private temporary directory.
 *   3. For each system in turn: build it (namespaces, wire, daemons; the second sender C only
 *      when `fair` runs), start iperf3's server in B, check that A (and C) reach B, run every
 *      case (one progress tick each, with an ETA), tear it down. A failure is recorded against
 *      that system and the run goes on with the next one; a system that cannot run here (its
 *      I/O engine) or a case that does not apply (cpu on veth) is "n/a (why)", not a failure.
 *   4. Compare tunswitch with the baselines of this same run, mark the targets, write
 *      <outDir>/e2e.json and <outDir>/e2e.svg, and return the report.
 *
 * Cleanup: each system's namespaces, devices and processes are on an undo list that also runs
 * on exit and on SIGINT/SIGTERM (see proc.ts).
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { execFileSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import cliProgress from 'cli-progress';
import { CASES, CASE_LABELS, METRICS, NotApplicable, runCase, type CaseId, type Measurement } from './cases.js';
import { Cleanup, haveTool, sh, waitTcpListen, type Background } from './proc.js';
import { renderProfile, summarizeProfileDir, type ProfileSummary } from './profile.js';
import {
  compare,
  evaluateTargets,
  renderComparisons,
  renderResults,
  renderTargets,
  targetLines,
  targetTally,
  type Comparison,
  type ResultRow,
  type SystemOutcome,
  type Target,
} from './report.js';
import { BENCH_PORT, SystemUnavailable, buildCBinary, buildSystem, checkReach, systemById, type SystemSpec } from './systems.js';

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
  /** Every target of issue 10 for every tunswitch result, met or missed. */
  targets: Target[];
  targetTally: { met: number; missed: number; unknown: number };
  profiles: Record<string, ProfileSummary[]>;
}

export { SYSTEM_IDS } from './options.js';
import { SYSTEM_IDS } from './options.js';
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
  if (cases.includes('udp64') || cases.includes('cpu')) tools.add('trafgen');
  if (systems.some((s) => s.kind === 'fwd')) tools.add('cc');
  if (systems.some((s) => s.kind === 'ovs')) for (const t of ['ovs-vsctl', 'ovs-vswitchd', 'ovsdb-server', 'ovsdb-tool']) tools.add(t);
  if (systems.some((s) => s.kind === 'xhost')) tools.add('etcd');
  const missing: string[] = [];
  for (const t of tools) if (!(await haveTool(t))) missing.push(t);
  if (missing.length > 0) {
    throw new Error(`tunswitch bench: missing ${missing.join(', ')} (apt-get install iproute2 iperf3 iputils-ping netsniff-ng openvswitch-switch gcc)`);
  }
}

/** A warning when the machine is busier than its cores before the run; null when it is not. */
export function loadWarning(load1: number, ncpus: number): string | null {
  if (!(load1 > ncpus)) return null;
  return `warning: the 1-minute load average is ${load1.toFixed(2)}, above the ${ncpus} CPUs: the numbers will be low and noisy`;
}

/** Planned seconds of one case (for the ETA): its run time plus set-up and ramp-up. */
export function caseEstimateS(c: CaseId, seconds: number, cases: readonly CaseId[]): number {
  switch (c) {
    case 'tcp1':
    case 'tcp4':
    case 'fair':
      return seconds + 1.5;
    case 'udp64':
      return seconds + 1.5;
    case 'rtt1':
    case 'rtt4':
      return seconds + 3;
    case 'cpu':
      // Reuses tcp1 and udp64 when they run, else runs them.
      return (cases.includes('tcp1') ? 0 : seconds + 1.5) + (cases.includes('udp64') ? 0 : seconds + 1.5);
  }
}

/** Planned seconds to build and tear down a system (for the ETA). */
export function setupEstimateS(spec: SystemSpec, ipcacheEntries: number): number {
  if (spec.kind === 'tunswitch') return 4 + ipcacheEntries / 20_000;
  if (spec.kind === 'xhost') return 8 + ipcacheEntries / 10_000; // etcd, two switches, two ipcache loads
  return spec.kind === 'ovs' ? 3 : 1.5;
}

/**
 * Seconds left: the planned seconds left, scaled by how the run has kept to the plan so far
 * (elapsed / planned-done), so a slow machine gets a longer ETA.
 */
export function etaSeconds(plannedDone: number, plannedLeft: number, elapsed: number): number {
  if (plannedLeft <= 0) return 0;
  if (plannedDone <= 0 || elapsed <= 0) return plannedLeft;
  return plannedLeft * (elapsed / plannedDone);
}

/** "1h02m", "3m05s", "42s". */
export function fmtDuration(s: number): string {
  const t = Math.max(0, Math.round(s));
  if (t >= 3600) return `${Math.floor(t / 3600)}h${String(Math.floor((t % 3600) / 60)).padStart(2, '0')}m`;
  if (t >= 60) return `${Math.floor(t / 60)}m${String(t % 60).padStart(2, '0')}s`;
  return `${t}s`;
}

function clockTicks(): number {
  try {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    if (Number.isInteger(n) && n > 0) return n;
  } catch {
    /* fall through */
  }
  return 100;
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
      'rtt1/rtt4: ping every 10 ms under 1/4 bulk TCP streams; rttN_tcp is the streams\' rate meanwhile; "lost to AQM" compares rtt1_tcp with tcp1 of the same system',
      'fair: A->B and C->B at once (C labelled like A); Jain index (sum x)^2/(n sum x^2)',
      'cpu: utime+stime of the switch process (agent, fwd, ovs-vswitchd; all threads) per GB of IP bytes delivered, during tcp1 and udp64',
      'ts-*: no suffix runs io: uring (n/a where io_uring cannot run), -rw io: readwrite; -noev/-obs run io: auto (info.ioEngine says which)',
      'vxlan / ts-xhost*: two host namespaces on a veth underlay, A behind host 1 and B behind host 2 (MTU 1450); vxlan through kernel vxlan devices and bridges, ts-xhost* through a tunswitch per host (kvstore on one etcd, VXLAN between them; -tso offload on, -ugso also UDP_SEGMENT on the underlay); their cpu counts both switches; x vxlan compares with the kernel',
      'all systems share the same 2-core machine with the load generators (iperf3, trafgen) and whatever else runs; see host.load*',
    ],
    systems: [],
    results: [],
    comparisons: [],
    targets: [],
    targetTally: { met: 0, missed: 0, unknown: 0 },
    profiles: {},
  };
  const warn = loadWarning(report.host.loadBefore[0] ?? 0, report.host.cpus);
  if (warn) {
    o.log(warn);
    report.notes.push(warn);
  }
  const clkTck = clockTicks();
  const withC = o.cases.includes('fair');

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
  // ETA: the planned seconds of what is left, scaled by how the run kept to the plan so far
  // (a payload token of our own: cli-progress's {eta} is its own count-based estimate).
  const caseS = (c: CaseId): number => caseEstimateS(c, o.seconds, o.cases);
  const plannedTotal = systems.reduce((a, sp) => a + setupEstimateS(sp, o.ipcacheEntries) + o.cases.reduce((b, c) => b + caseS(c), 0), 0);
  let plannedDone = 0;
  const eta = (): string => fmtDuration(etaSeconds(plannedDone, plannedTotal - plannedDone, (Date.now() - t0) / 1000));
  const bar = o.progress
    ? new cliProgress.SingleBar({ format: 'bench [{bar}] {value}/{total} | ETA {etaPlan} | {status}', hideCursor: true, stream: process.stderr, barsize: 30 })
    : null;
  bar?.start(total, 0, { status: 'starting', etaPlan: fmtDuration(plannedTotal) });
  const status = (s: string): void => {
    if (bar) bar.update(done, { status: s, etaPlan: eta() });
    else o.log(s);
  };
  let done = 0;
  const tick = (s: string, planned: number): void => {
    done++;
    plannedDone += planned;
    if (bar) bar.increment(1, { status: s, etaPlan: eta() });
    else o.log(`[${done}/${total}] ${s} (ETA ${eta()})`);
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
      let setupTicked = false;
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
          withC,
          cpuProfDir: o.cpuProfDir,
          log: (m) => status(m),
        });
        plannedDone += setupEstimateS(spec, o.ipcacheEntries);
        setupTicked = true;
        outcome.info = built.topo.info;
        try {
          const topo = built.topo;
          // iperf3's servers in B (one per port); restarted if one dies (a stray signal must
          // not void the rest).
          const servers = new Map<number, Background>();
          let restarts = 0;
          const ensureServer = async (port: number = BENCH_PORT): Promise<void> => {
            const srv = servers.get(port);
            if (srv && srv.child.exitCode === null && srv.child.signalCode === null) return;
            if (srv) {
              restarts++;
              outcome.info.iperfServerRestarts = restarts;
            }
            const s = cleanup.spawn('ip', ['netns', 'exec', topo.nsB, 'iperf3', '-s', '-p', String(port), '-B', topo.addrB]);
            servers.set(port, s);
            await waitTcpListen(topo.nsB, port).catch((e: unknown) => {
              throw new Error(`${(e as Error).message}; iperf3: ${s.output().stderr.trim()}`);
            });
          };
          await ensureServer();
          await checkReach(topo);
          const measured: Measurement[] = [];
          const caseEnv = { cleanup, ensureServer, seconds: o.seconds, tmp, switchPid: built.switchPid, otherSwitchPids: built.otherSwitchPids ?? [], noSwitch: `${spec.label} has no switch process`, clkTck };
          for (const c of o.cases) {
            status(`${spec.id}: ${CASE_LABELS[c]}`);
            let ms: Measurement[] = [];
            try {
              ms = await runCase(c, topo, caseEnv, measured);
            } catch (e) {
              if (e instanceof NotApplicable) (outcome.na ??= {})[c] = e.message;
              else outcome.errors.push(`${c}: ${(e as Error).message.split('\n')[0]}`);
            }
            measured.push(...ms);
            for (const m of ms) report.results.push({ system: spec.id, metric: m.metric, value: m.value, unit: METRICS[m.metric].unit, extra: m.extra });
            remaining = remaining.filter((x) => x !== c);
            tick(`${spec.id}: ${CASE_LABELS[c]} done`, caseS(c));
            for (const ag of [built.agent, ...(built.otherAgents ?? [])]) {
              if (ag && ag.child.exitCode !== null) throw new Error(`the agent exited: ${ag.output().stderr.trim().split('\n').slice(-3).join(' | ')}`);
            }
          }
        } finally {
          status(`${spec.id}: tearing down`);
          await built.teardown();
        }
        if (o.cpuProfDir && spec.kind === 'tunswitch') {
          report.profiles[spec.id] = summarizeProfileDir(join(o.cpuProfDir, spec.id));
        }
        if (o.cpuProfDir && spec.kind === 'xhost') {
          for (const h of ['h1', 'h2']) report.profiles[`${spec.id}-${h}`] = summarizeProfileDir(join(o.cpuProfDir, `${spec.id}-${h}`));
        }
      } catch (e) {
        if (e instanceof SystemUnavailable) outcome.unavailable = e.reason;
        else outcome.errors.push((e as Error).message.split('\n')[0] as string);
      } finally {
        await cleanup.run();
        cleanup.unhook();
        if (!setupTicked) plannedDone += setupEstimateS(spec, o.ipcacheEntries);
        const why = outcome.unavailable !== undefined ? `n/a (${outcome.unavailable})` : 'skipped';
        for (const c of remaining) tick(`${spec.id}: ${CASE_LABELS[c]} ${why}`, caseS(c));
      }
    }
  } finally {
    bar?.stop();
    await global.run();
    global.unhook();
  }

  report.comparisons = compare(report.results, systems);
  report.targets = evaluateTargets(report.results, systems);
  report.targetTally = targetTally(report.targets);
  report.host.loadAfter = loadavg().map((x) => Number(x.toFixed(2)));
  report.host.uptimeAfter = await uptime();
  report.finishedAt = new Date().toISOString();
  report.durationS = Math.round((Date.now() - t0) / 1000);

  if (o.outDir) {
    mkdirSync(o.outDir, { recursive: true });
    writeFileSync(join(o.outDir, 'e2e.json'), JSON.stringify(report, null, 2) + '\n');
    writeFileSync(join(o.outDir, 'e2e.svg'), await chartFor(report, systems));
  }
  return report;
}

export async function chartFor(report: BenchReport, systems: readonly SystemSpec[]): Promise<string> {
  const labels: Record<string, string> = {};
  const colours: Record<string, string> = {};
  for (const s of systems) {
    labels[s.id] = s.label;
    colours[s.id] = s.colour;
  }
  const load = report.host.loadBefore[0] ?? 0;
  // vega and vega-lite load only here (about 0.3 s), so no other command pays for them.
  const { renderChartSvg } = await import('./chart.js');
  return renderChartSvg(report.results, {
    title: `tunswitch bench ${report.startedAt.slice(0, 16).replace('T', ' ')}, ${report.options.seconds} s per case, ${report.host.cpus} CPUs, load ${load}`,
    order: systems.map((s) => s.id),
    labels,
    colours,
    lines: targetLines(report.results, systems),
  });
}

/** The human-readable report. */
export function renderReport(r: BenchReport): string {
  const systems = r.options.systems.map((id) => systemById(id)).filter((s): s is SystemSpec => s !== undefined);
  const parts: string[] = [];
  parts.push(`tunswitch bench: ${r.options.seconds} s per case, ${r.durationS} s in all; ${r.host.cpus} CPUs; load before ${r.host.loadBefore.join(' ')}, after ${r.host.loadAfter.join(' ')}\n`);
  for (const n of r.notes) if (n.startsWith('warning:')) parts.push(`${n}\n`);
  parts.push('\nResults\n' + renderResults(r.results, systems, r.systems));
  if (r.comparisons.length > 0) parts.push('\ntunswitch against the baselines (ratio > 1: tunswitch is better)\n' + renderComparisons(r.comparisons));
  if (r.targets.length > 0) parts.push('\nTargets (issues 10 and 11)\n' + renderTargets(r.targets));
  const t = r.targetTally;
  parts.push(`\ntargets: ${t.met} met, ${t.missed} missed${t.unknown ? `, ${t.unknown} without a reference` : ''}\n`);
  const ran = r.systems.filter((s) => typeof s.info.ioEngine === 'string').map((s) => `${s.id} ${s.info.ioEngine}`);
  if (ran.length > 0) parts.push(`I/O engine that ran: ${ran.join(', ')}\n`);
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
