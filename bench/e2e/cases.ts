/**
 * The test cases, each run over a built system, and the parsers of the tools' output and
 * the computations on them (pure, unit-tested in test/bench/):
 *
 *   tcp1   iperf3 A -> B, one TCP stream, -t seconds, received Gbit/s
 *   tcp4   iperf3 -P 4
 *   udp64  64-byte IPv4/UDP packets (20 IP + 8 UDP + 36 payload) from trafgen on A's
 *          interface, 16 flows, as fast as it goes; delivered packets per second counted on
 *          B's interface (/proc/net/dev rx_packets). On an L2 wire (veth, OVS) the same IP
 *          packet gets a 14-byte Ethernet header.
 *   rtt1   ping -i 0.01 A -> B while one bulk iperf3 TCP stream A -> B runs: RTT p50 and
 *          p99 in ms, and the TCP rate the stream got meanwhile (to compare with tcp1: the
 *          throughput the egress queue's AQM costs). `ping` is the old name of rtt1.
 *   rtt4   the same with 4 bulk streams (iperf3 -P 4). `rtt` selects rtt1 and rtt4.
 *   fair   two TCP streams at once from two senders, A -> B and C -> B: each one's rate and
 *          Jain's fairness index (sum x)^2 / (n * sum x^2) of the two (1 = equal shares).
 *   cpu    CPU seconds of the switch process (utime + stime of all its threads, from
 *          /proc/PID/stat) per GB it delivered, during tcp1 and during udp64 (the same runs
 *          when those cases are selected, else its own). Kernel veth has no process: n/a.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cleanup, nsRun, sleep } from './proc.js';
import { BENCH_PORT, BENCH_PORT2, type Topology } from './systems.js';

import { CASES, CASE_ALIASES, parseCases, type CaseId } from './options.js';
export { CASES, CASE_ALIASES, parseCases, type CaseId };

export const CASE_LABELS: Readonly<Record<CaseId, string>> = {
  tcp1: 'TCP 1 stream',
  tcp4: 'TCP 4 streams',
  udp64: 'UDP 64 B',
  rtt1: 'ping under 1 TCP stream',
  rtt4: 'ping under 4 TCP streams',
  fair: 'two senders (fairness)',
  cpu: 'CPU per GB',
};

/** A number a case produced. `better` says which way is good. */
export type MetricId =
  | 'tcp1'
  | 'tcp4'
  | 'udp64'
  | 'rtt1_p50'
  | 'rtt1_p99'
  | 'rtt1_tcp'
  | 'rtt4_p50'
  | 'rtt4_p99'
  | 'rtt4_tcp'
  | 'fair_a'
  | 'fair_c'
  | 'fair_jain'
  | 'cpu_tcp1'
  | 'cpu_udp64';
export interface MetricInfo {
  label: string;
  unit: string;
  better: 'higher' | 'lower';
  case: CaseId;
}
export const METRICS: Readonly<Record<MetricId, MetricInfo>> = {
  tcp1: { label: 'TCP 1 stream', unit: 'Gbit/s', better: 'higher', case: 'tcp1' },
  tcp4: { label: 'TCP 4 streams', unit: 'Gbit/s', better: 'higher', case: 'tcp4' },
  udp64: { label: 'UDP 64 B', unit: 'kpps', better: 'higher', case: 'udp64' },
  rtt1_p50: { label: 'RTT p50, 1 stream', unit: 'ms', better: 'lower', case: 'rtt1' },
  rtt1_p99: { label: 'RTT p99, 1 stream', unit: 'ms', better: 'lower', case: 'rtt1' },
  rtt1_tcp: { label: 'TCP during rtt1', unit: 'Gbit/s', better: 'higher', case: 'rtt1' },
  rtt4_p50: { label: 'RTT p50, 4 streams', unit: 'ms', better: 'lower', case: 'rtt4' },
  rtt4_p99: { label: 'RTT p99, 4 streams', unit: 'ms', better: 'lower', case: 'rtt4' },
  rtt4_tcp: { label: 'TCP during rtt4', unit: 'Gbit/s', better: 'higher', case: 'rtt4' },
  fair_a: { label: 'fair: flow A->B', unit: 'Gbit/s', better: 'higher', case: 'fair' },
  fair_c: { label: 'fair: flow C->B', unit: 'Gbit/s', better: 'higher', case: 'fair' },
  fair_jain: { label: 'fair: Jain index', unit: 'index', better: 'higher', case: 'fair' },
  cpu_tcp1: { label: 'CPU per GB, tcp1', unit: 's/GB', better: 'lower', case: 'cpu' },
  cpu_udp64: { label: 'CPU per GB, udp64', unit: 's/GB', better: 'lower', case: 'cpu' },
};

export interface Measurement {
  metric: MetricId;
  value: number;
  /** Supporting numbers (retransmits, offered rate, loss, samples, CPU seconds). */
  extra: Record<string, number>;
}

/** UDP payload bytes so that the IPv4 packet is 64 bytes. */
export const UDP64_PAYLOAD = 64 - 20 - 8;
export const UDP64_FLOWS = 16;

// ---------------------------------------------------------------- parsers

export interface IperfSummary {
  bitsPerSecond: number;
  retransmits: number;
}

/** The receiver's rate and the sender's retransmits from `iperf3 -J`; throws on its error. */
export function parseIperfJson(text: string): IperfSummary {
  let j: { error?: string; end?: { sum_received?: { bits_per_second?: number }; sum_sent?: { retransmits?: number } } };
  try {
    j = JSON.parse(text) as typeof j;
  } catch {
    throw new Error(`iperf3 printed no JSON: ${text.trim().slice(0, 200)}`);
  }
  if (typeof j.error === 'string') throw new Error(`iperf3: ${j.error}`);
  const bps = j.end?.sum_received?.bits_per_second;
  if (typeof bps !== 'number' || !Number.isFinite(bps)) throw new Error('iperf3 JSON has no end.sum_received.bits_per_second');
  return { bitsPerSecond: bps, retransmits: j.end?.sum_sent?.retransmits ?? 0 };
}

/** RTTs (ms) of every reply line of ping's output, and the transmitted/received counts. */
export function parsePing(text: string): { rtts: number[]; transmitted: number; received: number } {
  const rtts: number[] = [];
  for (const m of text.matchAll(/time[=<]([0-9.]+) ms/g)) rtts.push(Number(m[1]));
  const s = /(\d+) packets transmitted, (\d+) received/.exec(text);
  return { rtts, transmitted: s ? Number(s[1]) : 0, received: s ? Number(s[2]) : rtts.length };
}

/** Nearest-rank percentile (p in 0..100) of an unsorted list; NaN for an empty one. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * s.length));
  return s[Math.min(rank, s.length) - 1] as number;
}

export interface DevCounters {
  rxPackets: number;
  rxBytes: number;
  txPackets: number;
  txBytes: number;
  txDropped: number;
}

/** One interface's counters from the text of /proc/net/dev; null if it is not listed. */
export function parseProcNetDev(text: string, ifname: string): DevCounters | null {
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i < 0 || line.slice(0, i).trim() !== ifname) continue;
    const f = line.slice(i + 1).trim().split(/\s+/).map(Number);
    if (f.length < 16) return null;
    return { rxBytes: f[0] as number, rxPackets: f[1] as number, txBytes: f[8] as number, txPackets: f[9] as number, txDropped: f[11] as number };
  }
  return null;
}

/** CPU time of a process from the text of /proc/PID/stat, in clock ticks (all its threads). */
export interface ProcCpu {
  utime: number;
  stime: number;
}

/**
 * utime and stime (fields 14 and 15) of /proc/PID/stat. The command name (field 2) is in
 * parentheses and may hold spaces and parentheses itself, so fields are counted from the
 * last ")". Throws on text that is not a stat line.
 */
export function parseProcStat(text: string): ProcCpu {
  const close = text.lastIndexOf(')');
  if (close < 0) throw new Error(`not a /proc/PID/stat line: ${text.trim().slice(0, 80)}`);
  // After ") ": field 3 (state) is index 0, so field k is index k - 3.
  const f = text.slice(close + 1).trim().split(/\s+/);
  const utime = Number(f[14 - 3]);
  const stime = Number(f[15 - 3]);
  if (f.length < 13 || !Number.isInteger(utime) || !Number.isInteger(stime) || utime < 0 || stime < 0) {
    throw new Error(`not a /proc/PID/stat line: ${text.trim().slice(0, 80)}`);
  }
  return { utime, stime };
}

/** Jain's fairness index (sum x)^2 / (n * sum x^2): 1 for equal shares, 1/n when one takes all. */
export function jainIndex(xs: readonly number[]): number {
  let sum = 0;
  let sq = 0;
  for (const x of xs) {
    sum += x;
    sq += x * x;
  }
  if (xs.length === 0 || sq === 0) return NaN;
  return (sum * sum) / (xs.length * sq);
}

/** CPU seconds per GB (1e9 bytes) from two stat samples; NaN when nothing was forwarded. */
export function cpuSecondsPerGb(before: ProcCpu, after: ProcCpu, clkTck: number, bytes: number): number {
  const secs = (after.utime + after.stime - before.utime - before.stime) / clkTck;
  return bytes > 0 ? secs / (bytes / 1e9) : NaN;
}

/**
 * IP bytes the switch delivered: the sum of the receivers' rx_bytes deltas, less the 14-byte
 * Ethernet header per packet on an L2 wire, so every system is charged for the same bytes.
 */
export function deliveredIpBytes(deltas: readonly { rxBytes: number; rxPackets: number }[], l2: boolean): number {
  let b = 0;
  for (const d of deltas) b += d.rxBytes - (l2 ? 14 * d.rxPackets : 0);
  return b;
}

/**
 * trafgen's packet description: `count`-free, 16 flows (source ports 10000-10015), a 64-byte
 * IPv4/UDP packet, with an Ethernet header when the wire is L2.
 */
export function trafgenConfig(topo: Pick<Topology, 'addrA' | 'addrB' | 'l2'>, port: number = BENCH_PORT): string {
  const eth = topo.l2 ? `eth(da=${topo.l2.dstMac}, sa=${topo.l2.srcMac}, type=0x0800), ` : '';
  return (
    `{ ${eth}ip4(saddr=${topo.addrA}, daddr=${topo.addrB}, ttl=64, df), ` +
    `udp(sp=dinc(10000, ${10000 + UDP64_FLOWS - 1}), dp=${port}), fill(0x42, ${UDP64_PAYLOAD}) }\n`
  );
}

// ---------------------------------------------------------------- runners

export interface CaseEnv {
  cleanup: Cleanup;
  /** Makes sure an iperf3 server listens in B on `port` (restarts it if something killed it). */
  ensureServer(port?: number): Promise<void>;
  /** Seconds per case. */
  seconds: number;
  /** A directory for trafgen's config. */
  tmp: string;
  /** The switch process (the `cpu` case); null: none (kernel veth). */
  switchPid: number | null;
  /** More switch processes whose CPU adds to switchPid's (the second host's). */
  otherSwitchPids?: readonly number[];
  /** The `cpu` case's n/a reason when switchPid is null. */
  noSwitch?: string;
  /** `getconf CLK_TCK`: the unit of /proc/PID/stat's times. */
  clkTck: number;
}

interface IperfRun {
  ns: string;
  port: number;
  streams: number;
  seconds: number;
}

function iperfArgs(topo: Topology, r: IperfRun): string[] {
  const args = ['iperf3', '-c', topo.addrB, '-p', String(r.port), '-t', String(r.seconds), '-J', '--connect-timeout', '5000'];
  if (r.streams > 1) args.push('-P', String(r.streams));
  return args;
}

async function iperfClient(topo: Topology, env: CaseEnv, r: IperfRun): Promise<IperfSummary> {
  let lastErr: Error | null = null;
  for (let attempt = 0; attempt < 3; attempt++) {
    await env.ensureServer(r.port);
    const out = await nsRun(r.ns, iperfArgs(topo, r), (r.seconds + 40) * 1000);
    try {
      return parseIperfJson(out.stdout);
    } catch (e) {
      lastErr = e as Error;
      // The server may still be finishing the previous test ("busy"), or may have been killed
      // from outside ("terminated"): wait, make sure it runs, and retry.
      if (!/busy|unable to connect|Connection refused|control socket|terminated/i.test(lastErr.message)) break;
      await sleep(1000);
    }
  }
  throw lastErr ?? new Error('iperf3 failed');
}

async function counters(ns: string, ifname: string): Promise<DevCounters> {
  const r = await nsRun(ns, ['cat', '/proc/net/dev']);
  const c = parseProcNetDev(r.stdout, ifname);
  if (!c) throw new Error(`no ${ifname} in /proc/net/dev of ${ns}`);
  return c;
}

function readProcCpu(pid: number): ProcCpu {
  return parseProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
}

/** The CPU times of the switch and the others, added up. */
function readSwitchesCpu(pid: number, others: readonly number[]): ProcCpu {
  const p = readProcCpu(pid);
  for (const o of others) {
    const q = readProcCpu(o);
    p.utime += q.utime;
    p.stime += q.stime;
  }
  return p;
}

/**
 * The switch's CPU time and the receivers' counters around a measurement; `stop()` returns
 * { cpuS, bytes, cpuPerGb } (cpuPerGb NaN without a switch process).
 */
async function cpuWindow(topo: Topology, env: CaseEnv): Promise<() => Promise<Record<string, number>>> {
  const nss = [topo.nsA, topo.nsB];
  const c0 = await Promise.all(nss.map((ns) => counters(ns, topo.ifname)));
  const p0 = env.switchPid !== null ? readSwitchesCpu(env.switchPid, env.otherSwitchPids ?? []) : null;
  return async (): Promise<Record<string, number>> => {
    const p1 = env.switchPid !== null ? readSwitchesCpu(env.switchPid, env.otherSwitchPids ?? []) : null;
    const c1 = await Promise.all(nss.map((ns) => counters(ns, topo.ifname)));
    const deltas = c1.map((c, i) => ({ rxBytes: c.rxBytes - (c0[i] as DevCounters).rxBytes, rxPackets: c.rxPackets - (c0[i] as DevCounters).rxPackets }));
    const bytes = deliveredIpBytes(deltas, topo.l2 !== null);
    if (!p0 || !p1) return { deliveredBytes: bytes };
    return {
      cpuS: (p1.utime + p1.stime - p0.utime - p0.stime) / env.clkTck,
      deliveredBytes: bytes,
      cpuPerGb: cpuSecondsPerGb(p0, p1, env.clkTck, bytes),
    };
  };
}

export async function runTcp(topo: Topology, env: CaseEnv, streams: number): Promise<Measurement[]> {
  const win = await cpuWindow(topo, env);
  const s = await iperfClient(topo, env, { ns: topo.nsA, port: BENCH_PORT, streams, seconds: env.seconds });
  const cpu = await win();
  return [{ metric: streams === 1 ? 'tcp1' : 'tcp4', value: s.bitsPerSecond / 1e9, extra: { retransmits: s.retransmits, streams, ...cpu } }];
}

export async function runUdp64(topo: Topology, env: CaseEnv): Promise<Measurement[]> {
  const conf = join(env.tmp, `trafgen-${topo.nsA}.cfg`);
  writeFileSync(conf, trafgenConfig(topo));
  // Its own process group: trafgen's forked sender must stop with it (see Cleanup.spawn).
  const gen = env.cleanup.spawn('ip', ['netns', 'exec', topo.nsA, 'trafgen', '--dev', topo.ifname, '--conf', conf, '--cpus', '1', '--no-sock-mem'], undefined, { group: true });
  try {
    await sleep(500); // start-up and queue fill
    if (gen.child.exitCode !== null) throw new Error(`trafgen exited: ${gen.output().stderr.trim().slice(-300)}`);
    const a0 = await counters(topo.nsA, topo.ifname);
    const win = await cpuWindow(topo, env);
    const b0 = await counters(topo.nsB, topo.ifname);
    const t0 = process.hrtime.bigint();
    await sleep(env.seconds * 1000);
    const b1 = await counters(topo.nsB, topo.ifname);
    const t1 = process.hrtime.bigint();
    const cpu = await win();
    const a1 = await counters(topo.nsA, topo.ifname);
    const secs = Number(t1 - t0) / 1e9;
    const delivered = (b1.rxPackets - b0.rxPackets) / secs;
    const offered = (a1.txPackets - a0.txPackets) / secs;
    return [{ metric: 'udp64', value: delivered / 1000, extra: { offeredKpps: offered / 1000, senderTxDroppedKpps: (a1.txDropped - a0.txDropped) / secs / 1000, ...cpu } }];
  } finally {
    await gen.stop('SIGTERM', 5000);
  }
}

/** Seconds the bulk stream runs before ping starts. */
const RTT_RAMP_S = 1;

/**
 * rtt1 / rtt4: `streams` bulk TCP streams A -> B for ramp + seconds + 1 s, ping A -> B every
 * 10 ms for `seconds` after the ramp; RTT percentiles, and the streams' rate over their run.
 */
export async function runRtt(topo: Topology, env: CaseEnv, streams: number): Promise<Measurement[]> {
  const count = Math.max(50, env.seconds * 100);
  const loadSeconds = RTT_RAMP_S + env.seconds + 1;
  const prefix = streams === 1 ? 'rtt1' : 'rtt4';
  for (let attempt = 0; ; attempt++) {
    await env.ensureServer(BENCH_PORT);
    const load = env.cleanup.spawn('ip', ['netns', 'exec', topo.nsA, ...iperfArgs(topo, { ns: topo.nsA, port: BENCH_PORT, streams, seconds: loadSeconds })]);
    try {
      await sleep(RTT_RAMP_S * 1000); // let the streams ramp up
      if (load.child.exitCode !== null) {
        const out = load.output().stdout;
        // As in iperfClient: a server still busy with the previous test, or a lost connect.
        if (attempt < 2 && /busy|unable to connect|Connection refused|control socket|terminated/i.test(out)) {
          await sleep(1000);
          continue;
        }
        let why = out.trim().slice(-200);
        try {
          parseIperfJson(out);
        } catch (e) {
          why = (e as Error).message;
        }
        throw new Error(`iperf3 load exited before ping started: ${why}`);
      }
      const r = await nsRun(topo.nsA, ['ping', '-n', '-i', '0.01', '-W', '1', '-c', String(count), topo.addrB], (env.seconds * 3 + 30) * 1000);
      const loadedToTheEnd = load.child.exitCode === null;
      const p = parsePing(r.stdout);
      if (p.rtts.length === 0) throw new Error(`ping got no replies: ${(r.stdout + r.stderr).trim().slice(-200)}`);
      const done = await Promise.race([load.done, sleep((loadSeconds + 30) * 1000).then(() => null)]);
      if (done === null) throw new Error(`iperf3 load did not finish within ${loadSeconds + 30} s`);
      const tcp = parseIperfJson(done.stdout);
      const loss = p.transmitted > 0 ? (p.transmitted - p.received) / p.transmitted : 0;
      const extra = { samples: p.rtts.length, lossPercent: loss * 100, streams, loadedToTheEnd: loadedToTheEnd ? 1 : 0 };
      return [
        { metric: `${prefix}_p50`, value: percentile(p.rtts, 50), extra },
        { metric: `${prefix}_p99`, value: percentile(p.rtts, 99), extra },
        { metric: `${prefix}_tcp`, value: tcp.bitsPerSecond / 1e9, extra: { retransmits: tcp.retransmits, streams, seconds: loadSeconds } },
      ];
    } finally {
      await load.stop('SIGINT', 5000);
      await sleep(300); // the server returns to listening
    }
  }
}

/** fair: A -> B (port BENCH_PORT) and C -> B (BENCH_PORT2) at once, one TCP stream each. */
export async function runFair(topo: Topology, env: CaseEnv): Promise<Measurement[]> {
  if (topo.nsC === null) throw new Error('fair needs the second sender C, and the system was built without it');
  const nsC = topo.nsC;
  await env.ensureServer(BENCH_PORT);
  await env.ensureServer(BENCH_PORT2);
  const [a, c] = await Promise.all([
    iperfClient(topo, env, { ns: topo.nsA, port: BENCH_PORT, streams: 1, seconds: env.seconds }),
    iperfClient(topo, env, { ns: nsC, port: BENCH_PORT2, streams: 1, seconds: env.seconds }),
  ]);
  const ga = a.bitsPerSecond / 1e9;
  const gc = c.bitsPerSecond / 1e9;
  const extra = { rateA: ga, rateC: gc, retransmitsA: a.retransmits, retransmitsC: c.retransmits };
  return [
    { metric: 'fair_a', value: ga, extra: { retransmits: a.retransmits } },
    { metric: 'fair_c', value: gc, extra: { retransmits: c.retransmits } },
    { metric: 'fair_jain', value: jainIndex([ga, gc]), extra },
  ];
}

/**
 * cpu: CPU seconds per GB from the tcp1 and udp64 measurements given (the same runs as those
 * cases), running them here when they were not run.
 */
export async function runCpu(topo: Topology, env: CaseEnv, have: { tcp1?: Measurement; udp64?: Measurement }): Promise<Measurement[]> {
  if (env.switchPid === null) throw new NotApplicable(env.noSwitch ?? 'kernel veth has no switch process');
  const tcp = have.tcp1 ?? (await runTcp(topo, env, 1))[0];
  const udp = have.udp64 ?? (await runUdp64(topo, env))[0];
  const out: Measurement[] = [];
  for (const [metric, m] of [
    ['cpu_tcp1', tcp],
    ['cpu_udp64', udp],
  ] as const) {
    if (!m || typeof m.extra.cpuPerGb !== 'number' || !Number.isFinite(m.extra.cpuPerGb)) continue;
    out.push({ metric, value: m.extra.cpuPerGb, extra: { cpuS: m.extra.cpuS ?? NaN, deliveredBytes: m.extra.deliveredBytes ?? NaN, rate: m.value } });
  }
  return out;
}

/** A case that does not apply to a system (reported "n/a (reason)", not an error). */
export class NotApplicable extends Error {}

export function runCase(id: CaseId, topo: Topology, env: CaseEnv, earlier: readonly Measurement[] = []): Promise<Measurement[]> {
  switch (id) {
    case 'tcp1':
      return runTcp(topo, env, 1);
    case 'tcp4':
      return runTcp(topo, env, 4);
    case 'udp64':
      return runUdp64(topo, env);
    case 'rtt1':
      return runRtt(topo, env, 1);
    case 'rtt4':
      return runRtt(topo, env, 4);
    case 'fair':
      return runFair(topo, env);
    case 'cpu':
      return runCpu(topo, env, { tcp1: earlier.find((m) => m.metric === 'tcp1'), udp64: earlier.find((m) => m.metric === 'udp64') });
  }
}
