/**
 * Micro benchmarks of the datapath and the tables (`npm run bench`), measured with tinybench.
 *
 * What runs, in order:
 *   1. Set-up (untimed): one TableSet holding 1M IPv4 and 1M IPv6 prefixes, two endpoints
 *      with enforced ingress and egress policy, a realistic policy set for ~100 endpoints,
 *      and the conntrack tables (see bench/datapath/pipeline.ts, bench/tables/*.ts).
 *   2. The per-op benchmarks (one tinybench run): parse-v4, gso-coalesce-64,
 *      gso-coalesce-64-verify, gso-split-64 (bench/datapath/gso.ts), ipcache-v4-1M, ipcache-v6-1M,
 *      policy-lookup, ct-hit, ct-create, pipeline-established-v4, pipeline-new-flow-v4,
 *      vxlan-encap-decap-v4, vxlan-encap4-decap4-v4 (bench/datapath/vxlan.ts); and
 *      ipcache-v4-1M-hot, ipcache-v6-1M-hot, ct-hit-hot, the same ops on a small working set,
 *      which separate the cost of the op from the cost of its cache and TLB misses.
 *   3. publish-100k-policy (a second tinybench run with a few long iterations): one op is
 *      "add 100k policy entries to an empty table and commit()".
 *   4. The heap check: pipeline.process() 5M times on established-flow packets, reporting
 *      heap growth per packet and the GCs seen (heap-growth-per-packet).
 * It prints a table and writes bench/results/micro.json: an array of MicroResult.
 *
 * How a per-op number is measured. Most ops cost 10-200 ns, about what tinybench spends
 * around one call of the task function (two timestamps, bookkeeping). So every task function
 * runs a batch of BATCH pre-built inputs (packets in a slab, addresses and keys in typed
 * arrays, PacketInfo objects) and the result is divided by the batch size:
 *
 *     nsPerOp = median latency of one call / opsPerCall
 *
 * The median, not the mean, because the machine is shared (other processes preempt us now and
 * then; a preempted sample moves the mean, not the median). `nsPerOpMean` and tinybench's
 * relative margin of error of the mean (`rme`) are reported next to it.
 * Anything a task needs between calls that is not part of the op (restoring the TTL the
 * pipeline decremented, draining the event ring the control thread would drain, flushing a
 * conntrack table before it fills) runs in tinybench's beforeEach/afterEach hooks, which are
 * outside the timed region. Inputs rotate through pools larger than the batch where cache
 * behaviour matters (lookups in big tables), so the numbers are not all-L1 numbers.
 *
 * Pipeline benchmarks call beginBatch()/endBatch() every MAX_BATCH packets, as the shard
 * worker does, so the per-batch cost (Atomics enter/leave) is included, amortised.
 *
 * Quick mode (env TUNSWITCH_BENCH_QUICK=1): tiny tables and time budgets, so the test suite
 * can run the whole harness in a few seconds (test/bench/micro.test.ts). The numbers are
 * meaningless then; the JSON shape is the same. Env TUNSWITCH_BENCH_OUT overrides the
 * output path.
 */
import { writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { PerformanceObserver, performance } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Bench, type Task } from 'tinybench';
import { parseCases } from './datapath/parse.js';
import { gsoCases } from './datapath/gso.js';
import { vxlanCases } from './datapath/vxlan.js';
import { PipelineScenario, pipelineCases } from './datapath/pipeline.js';
import { loadIpcache, ipcacheCases } from './tables/ipcache.js';
import { policyLookupCases, publishCases, populatePolicy } from './tables/policy.js';
import { conntrackCases } from './tables/conntrack.js';
import { TableSet } from '../src/tables/tableset.js';
import { Rand } from '../test/helpers/rand.js';

/** One benchmark as the sub-modules describe it. */
export interface MicroCase {
  name: string;
  /** Ops done by one call of fn (the batch size); nsPerOp = time per call / opsPerCall. */
  opsPerCall: number;
  fn: () => void;
  /** Untimed work before / after each call (tinybench hooks). */
  beforeEach?: () => void;
  afterEach?: () => void;
  /** Target from the issue, in ns per op. */
  target?: number;
  /** Returns a non-empty string when the benchmark did not measure what it claims (e.g. drops). */
  check?: () => string;
  /** What exactly is measured (sizes, mix), copied into the JSON. */
  note: string;
}

export interface MicroResult {
  name: string;
  nsPerOp: number;
  opsPerSec: number;
  nsPerOpMean?: number;
  /** Relative margin of error of the mean, in percent. */
  rme?: number;
  samples?: number;
  opsPerCall?: number;
  target?: number;
  targetUnit?: 'ns/op' | 'bytes/packet';
  meetsTarget?: boolean;
  note?: string;
  error?: string;
  // heap-growth-per-packet only
  bytesPerPacket?: number;
  packets?: number;
  heapGrowthBytes?: number;
  gcCount?: number;
  gcMs?: number;
  wallNsPerPacket?: number;
}

export interface MicroConfig {
  quick: boolean;
  seed: number;
  /** tinybench time budget per task and warm-up time (ms). */
  timeMs: number;
  warmupMs: number;
  minIterations: number;
  /** Ops per task call (see the file comment). */
  batch: number;
  prefixes4: number;
  prefixes6: number;
  /** Shortest IPv4 prefix loaded (8 in the real run). */
  minLen4: number;
  /** Policy entries per scenario endpoint and direction. */
  policyPerDir: number;
  /** Entries of the publish benchmark, and its iteration count. */
  publishEntries: number;
  publishIterations: number;
  /** Packets of the heap check. */
  heapPackets: number;
  out: string;
}

/**
 * Ops per task call. Tuned with parse-v4 (the cheapest op) at batches of 16..4096, median
 * ns/op on the 2-core dev box under load: 15-19 (16), 17 (64), 17.5 (256), 18.4 (1024),
 * 20.2 (4096). So tinybench's per-call cost (two timestamps, tens of ns) is already lost in
 * the noise at 64; what grows with the batch is the inputs' cache footprint (4096 packets in
 * 2 KiB slots = 8 MiB, out of cache). 1024 keeps the per-call cost under 0.5% of every op here
 * while the inputs (a 2 MiB slab) stay near the size of a real slab.
 */
export const BATCH = 1024;

/** An allocation per packet is at least one heap object (>= 12 bytes); < 1 byte/packet means none. */
export const TARGET_HEAP_BYTES_PER_PACKET = 1;

const kDefaultOut = fileURLToPath(new URL('../../bench/results/micro.json', import.meta.url));

export function configFromEnv(env: NodeJS.ProcessEnv = process.env): MicroConfig {
  const quick = env.TUNSWITCH_BENCH_QUICK === '1';
  const out = env.TUNSWITCH_BENCH_OUT !== undefined && env.TUNSWITCH_BENCH_OUT !== '' ? env.TUNSWITCH_BENCH_OUT : kDefaultOut;
  if (quick) {
    return {
      quick, seed: 1, timeMs: 15, warmupMs: 5, minIterations: 4, batch: 256,
      prefixes4: 20_000, prefixes6: 20_000, minLen4: 20, policyPerDir: 40, publishEntries: 5_000, publishIterations: 2,
      heapPackets: 100_000, out,
    };
  }
  return {
    quick, seed: 1, timeMs: 1500, warmupMs: 300, minIterations: 64, batch: BATCH,
    prefixes4: 1_000_000, prefixes6: 1_000_000, minLen4: 8, policyPerDir: 200, publishEntries: 100_000, publishIterations: 8,
    heapPackets: 5_000_000, out,
  };
}

/** The reader slot the direct table benchmarks use (the pipelines use 0 and 1). */
const kBenchReaderSlot = 2;

export async function runMicro(cfg: MicroConfig, log: (s: string) => void = console.log): Promise<MicroResult[]> {
  const r = new Rand(cfg.seed);
  const t0 = performance.now();
  const tables = TableSet.create({
    ipcache: {
      tbl8Groups: 16384,
      leaves: cfg.prefixes4 + cfg.prefixes6 + 1024,
      v6Capacity: pow2AtLeast(Math.ceil((cfg.prefixes6 * 8) / 7) + 64),
    },
    policyCapacity: 1 << 18,
    maxEndpoints: 4096,
  });
  const scenario = new PipelineScenario(tables);
  const ipc = loadIpcache(scenario.writer, r, cfg.prefixes4, cfg.prefixes6, cfg.minLen4);
  const t1 = performance.now();
  const pol = populatePolicy(scenario.writer, r, cfg.policyPerDir);
  const t2 = performance.now();
  scenario.commit();
  const t3 = performance.now();
  log(
    `set-up: ipcache load ${sec(t1 - t0)} s (${cfg.prefixes4} IPv4 /${cfg.minLen4}../32 + ${cfg.prefixes6} IPv6 prefixes), ` +
      `policy ${sec(t2 - t1)} s (${pol.entries} entries), commit ${sec(t3 - t2)} s`,
  );

  // The direct table benchmarks read one side for the whole run: nothing commits after this.
  tables.useSide(tables.control.enter(kBenchReaderSlot));
  const cases: MicroCase[] = [
    ...parseCases(r, cfg.batch),
    ...gsoCases(new Rand(cfg.seed + 0x650)), // its own stream: the other cases keep their inputs
    ...vxlanCases(new Rand(cfg.seed + 11), cfg.batch), // its own stream: the other cases keep their inputs
    ...ipcacheCases(tables.ipcache, ipc, r, cfg.batch),
    ...policyLookupCases(tables.policy, pol, r, cfg.batch),
    ...conntrackCases(r, cfg.batch, cfg.quick),
    ...pipelineCases(scenario, cfg.batch),
  ];
  const results = runCases(cases, {
    time: cfg.timeMs, warmupTime: cfg.warmupMs, iterations: cfg.minIterations, warmupIterations: 4,
  }, log);
  tables.control.leave(kBenchReaderSlot);

  results.push(...runCases(publishCases(r, cfg.publishEntries), {
    time: 0, warmupTime: 0, iterations: cfg.publishIterations, warmupIterations: 1,
  }, log));

  results.push(await heapCheck(scenario, cfg.heapPackets));
  return results;
}

function runCases(
  cases: MicroCase[],
  opts: { time: number; warmupTime: number; iterations: number; warmupIterations: number },
  log: (s: string) => void,
): MicroResult[] {
  const bench = new Bench({ ...opts, throws: true });
  for (const c of cases) {
    const hooks: { beforeEach?: () => void; afterEach?: () => void } = {};
    if (c.beforeEach !== undefined) hooks.beforeEach = c.beforeEach;
    if (c.afterEach !== undefined) hooks.afterEach = c.afterEach;
    bench.add(c.name, c.fn, hooks);
  }
  const out: MicroResult[] = [];
  for (const c of cases) {
    const task = bench.getTask(c.name) as Task;
    task.runSync();
    out.push(toResult(c, task));
    const last = out[out.length - 1] as MicroResult;
    log(`  ${c.name}: ${fmtNs(last.nsPerOp)} ns/op${last.error !== undefined ? `  ERROR ${last.error}` : ''}`);
  }
  return out;
}

function toResult(c: MicroCase, task: Task): MicroResult {
  const res = task.result;
  if (res.state !== 'completed' && res.state !== 'aborted-with-statistics') {
    const err = res.state === 'errored' ? res.error.message : res.state;
    return { name: c.name, nsPerOp: NaN, opsPerSec: NaN, error: err, note: c.note };
  }
  // tinybench latencies are in milliseconds per call.
  const nsPerOp = (res.latency.p50 * 1e6) / c.opsPerCall;
  const out: MicroResult = {
    name: c.name,
    nsPerOp: round(nsPerOp),
    opsPerSec: Math.round(1e9 / nsPerOp),
    nsPerOpMean: round((res.latency.mean * 1e6) / c.opsPerCall),
    rme: round(res.latency.rme),
    samples: res.latency.samplesCount,
    opsPerCall: c.opsPerCall,
    note: c.note,
  };
  if (c.target !== undefined) {
    out.target = c.target;
    out.targetUnit = 'ns/op';
    out.meetsTarget = nsPerOp <= c.target;
  }
  const problem = c.check === undefined ? '' : c.check();
  if (problem !== '') out.error = problem;
  return out;
}

/** global.gc, made available at run time (--expose-gc), or undefined where V8 refuses. */
export function exposeGc(): (() => void) | undefined {
  try {
    setFlagsFromString('--expose-gc');
    return runInNewContext('gc') as () => void;
  } catch {
    return undefined;
  }
}

/**
 * Runs pipeline.process() `packets` times over established-flow packets and reports the heap
 * growth per packet and the GCs that happened meanwhile. A forced GC before the timed loop
 * (through --expose-gc set at run time) gives a clean baseline; none during or after it, so
 * garbage made by the loop shows up as growth or as scavenges.
 */
async function heapCheck(s: PipelineScenario, packets: number): Promise<MicroResult> {
  const gc = exposeGc();
  // Warm-up so compilation (which allocates) is over before measuring.
  s.runEstablished(Math.min(packets, 200_000));
  let gcCount = 0;
  let gcMs = 0;
  let tStart = 0;
  let tEnd = Infinity;
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (e.startTime >= tStart && e.startTime <= tEnd) {
        gcCount++;
        gcMs += e.duration;
      }
    }
  });
  obs.observe({ entryTypes: ['gc'] });
  if (gc !== undefined) gc();
  await new Promise((res) => setImmediate(res)); // deliver the forced GC's entry before tStart
  const bad0 = s.established.bad;
  const cpu0 = process.cpuUsage();
  tStart = performance.now();
  const h0 = process.memoryUsage().heapUsed;
  s.runEstablished(packets);
  const h1 = process.memoryUsage().heapUsed;
  tEnd = performance.now();
  const cpu = process.cpuUsage(cpu0);
  await new Promise((res) => setImmediate(res)); // the observer is called asynchronously
  obs.disconnect();
  const growth = h1 - h0;
  const bytesPerPacket = growth / packets;
  // CPU time of the process (user + system) rather than wall time: on a shared machine the
  // loop is preempted, and a 5M-packet loop cannot take a median the way tinybench does.
  const nsPerOp = ((cpu.user + cpu.system) * 1e3) / packets;
  const wallNs = ((tEnd - tStart) * 1e6) / packets;
  const out: MicroResult = {
    name: 'heap-growth-per-packet',
    nsPerOp: round(nsPerOp),
    opsPerSec: Math.round(1e9 / nsPerOp),
    target: TARGET_HEAP_BYTES_PER_PACKET,
    targetUnit: 'bytes/packet',
    meetsTarget: bytesPerPacket < TARGET_HEAP_BYTES_PER_PACKET,
    bytesPerPacket: round(bytesPerPacket),
    packets,
    heapGrowthBytes: growth,
    gcCount,
    gcMs: round(gcMs),
    wallNsPerPacket: round(wallNs),
    note: `pipeline.process() ${packets} times on ${s.established.opsPerCall} established TCP flows; heapUsed growth (no GC forced in between) / packets; nsPerOp is the process CPU time of that loop per packet`,
  };
  if (s.established.bad !== bad0) out.error = `${s.established.bad - bad0} packets were not forwarded`;
  return out;
}

// ---- output ----

function sec(ms: number): string {
  return (ms / 1000).toFixed(1);
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}

function fmtNs(ns: number): string {
  if (!Number.isFinite(ns)) return String(ns);
  if (ns >= 1e4) return Math.round(ns).toLocaleString('en-US');
  return ns >= 100 || Number.isInteger(ns) ? ns.toFixed(0) : ns.toFixed(1);
}

export function formatTable(results: readonly MicroResult[]): string {
  const head = ['name', 'ns/op', 'ops/s', 'samples', '±rme', 'target', 'ok'];
  const rows = results.map((x) => [
    x.name,
    x.name === 'heap-growth-per-packet' ? `${fmtNs(x.nsPerOp)} (${x.bytesPerPacket} B/pkt, ${x.gcCount} GCs)` : fmtNs(x.nsPerOp),
    Number.isFinite(x.opsPerSec) ? x.opsPerSec.toLocaleString('en-US') : '-',
    x.samples === undefined ? '-' : String(x.samples),
    x.rme === undefined ? '-' : `${x.rme.toFixed(2)}%`,
    x.target === undefined ? '-' : x.targetUnit === 'bytes/packet' ? `< ${x.target} B/pkt` : `<= ${fmtNs(x.target)} ns`,
    x.error !== undefined ? 'ERROR' : x.meetsTarget === undefined ? '' : x.meetsTarget ? 'yes' : 'NO',
  ]);
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] as string).length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(width[i] as number) : c.padStart(width[i] as number))).join('  ');
  return [line(head), line(width.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

function pow2AtLeast(n: number): number {
  let p = 2;
  while (p < n) p *= 2;
  return p;
}

async function main(): Promise<void> {
  const cfg = configFromEnv();
  const results = await runMicro(cfg);
  console.log(`\n${formatTable(results)}`);
  for (const x of results) if (x.error !== undefined) console.log(`${x.name}: ${x.error}`);
  mkdirSync(dirname(cfg.out), { recursive: true });
  writeFileSync(cfg.out, `${JSON.stringify(results, null, 2)}\n`);
  console.log(`\nwrote ${cfg.out}${cfg.quick ? ' (quick mode: numbers are not meaningful)' : ''}`);
  if (results.some((x) => x.error !== undefined)) process.exitCode = 1;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e: unknown) => {
    console.error(e instanceof Error ? e.stack : e);
    process.exit(1);
  });
}
