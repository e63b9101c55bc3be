/**
 * The test cases, each run from A to B over a built system, and the parsers of the tools'
 * output (pure, unit-tested):
 *
 *   tcp1   iperf3, one TCP stream, -t seconds, received Gbit/s
 *   tcp4   iperf3 -P 4
 *   udp64  64-byte IPv4/UDP packets (20 IP + 8 UDP + 36 payload) from trafgen on A's
 *          interface, 16 flows, as fast as it goes; delivered packets per second counted on
 *          B's interface (/proc/net/dev rx_packets). On an L2 wire (veth, OVS) the same IP
 *          packet gets a 14-byte Ethernet header.
 *   ping   ping -i 0.01 while one iperf3 TCP stream runs: RTT p50 and p99 in ms
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cleanup, nsRun, sleep } from './proc.js';
import { BENCH_PORT, type Topology } from './systems.js';

export type CaseId = 'tcp1' | 'tcp4' | 'udp64' | 'ping';
export const CASES: readonly CaseId[] = ['tcp1', 'tcp4', 'udp64', 'ping'];
export const CASE_LABELS: Readonly<Record<CaseId, string>> = {
  tcp1: 'TCP 1 stream',
  tcp4: 'TCP 4 streams',
  udp64: 'UDP 64 B',
  ping: 'ping under load',
};

/** A number a case produced. `better` says which way is good. */
export type MetricId = 'tcp1' | 'tcp4' | 'udp64' | 'rtt_p50' | 'rtt_p99';
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
  rtt_p50: { label: 'RTT p50 (loaded)', unit: 'ms', better: 'lower', case: 'ping' },
  rtt_p99: { label: 'RTT p99 (loaded)', unit: 'ms', better: 'lower', case: 'ping' },
};

export interface Measurement {
  metric: MetricId;
  value: number;
  /** Supporting numbers (retransmits, offered rate, loss, samples). */
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
  /** Makes sure iperf3's server listens in B (restarts it if something killed it). */
  ensureServer(): Promise<void>;
  /** Seconds per case. */
  seconds: number;
  /** A directory for trafgen's config. */
  tmp: string;
}

async function iperfClient(topo: Topology, env: CaseEnv, streams: number): Promise<IperfSummary> {
  const args = ['iperf3', '-c', topo.addrB, '-p', String(BENCH_PORT), '-t', String(env.seconds), '-J', '--connect-timeout', '5000'];
  if (streams > 1) args.push('-P', String(streams));
  let lastErr: Error | null = null;
  for (let attempt = 0; attempt < 3; attempt++) {
    await env.ensureServer();
    const r = await nsRun(topo.nsA, args, (env.seconds + 40) * 1000);
    try {
      return parseIperfJson(r.stdout);
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

export async function runTcp(topo: Topology, env: CaseEnv, streams: number): Promise<Measurement[]> {
  const s = await iperfClient(topo, env, streams);
  return [{ metric: streams === 1 ? 'tcp1' : 'tcp4', value: s.bitsPerSecond / 1e9, extra: { retransmits: s.retransmits, streams } }];
}

async function counters(ns: string, ifname: string): Promise<DevCounters> {
  const r = await nsRun(ns, ['cat', '/proc/net/dev']);
  const c = parseProcNetDev(r.stdout, ifname);
  if (!c) throw new Error(`no ${ifname} in /proc/net/dev of ${ns}`);
  return c;
}

export async function runUdp64(topo: Topology, env: CaseEnv): Promise<Measurement[]> {
  const conf = join(env.tmp, `trafgen-${topo.nsA}.cfg`);
  writeFileSync(conf, trafgenConfig(topo));
  const gen = env.cleanup.spawn('ip', ['netns', 'exec', topo.nsA, 'trafgen', '--dev', topo.ifname, '--conf', conf, '--cpus', '1', '--no-sock-mem']);
  try {
    await sleep(500); // start-up and queue fill
    if (gen.child.exitCode !== null) throw new Error(`trafgen exited: ${gen.output().stderr.trim().slice(-300)}`);
    const a0 = await counters(topo.nsA, topo.ifname);
    const b0 = await counters(topo.nsB, topo.ifname);
    const t0 = process.hrtime.bigint();
    await sleep(env.seconds * 1000);
    const b1 = await counters(topo.nsB, topo.ifname);
    const t1 = process.hrtime.bigint();
    const a1 = await counters(topo.nsA, topo.ifname);
    const secs = Number(t1 - t0) / 1e9;
    const delivered = (b1.rxPackets - b0.rxPackets) / secs;
    const offered = (a1.txPackets - a0.txPackets) / secs;
    return [{ metric: 'udp64', value: delivered / 1000, extra: { offeredKpps: offered / 1000, senderTxDroppedKpps: (a1.txDropped - a0.txDropped) / secs / 1000 } }];
  } finally {
    await gen.stop('SIGINT', 5000);
  }
}

export async function runPing(topo: Topology, env: CaseEnv): Promise<Measurement[]> {
  const count = Math.max(50, env.seconds * 100);
  await env.ensureServer();
  const load = env.cleanup.spawn('ip', ['netns', 'exec', topo.nsA, 'iperf3', '-c', topo.addrB, '-p', String(BENCH_PORT), '-t', String(env.seconds + 30), '--connect-timeout', '5000']);
  try {
    await sleep(1000); // let the stream ramp up
    if (load.child.exitCode !== null) throw new Error(`iperf3 load stream exited: ${load.output().stdout.trim().slice(-200)} ${load.output().stderr.trim().slice(-200)}`);
    const r = await nsRun(topo.nsA, ['ping', '-n', '-i', '0.01', '-W', '1', '-c', String(count), topo.addrB], (env.seconds * 3 + 30) * 1000);
    const p = parsePing(r.stdout);
    if (p.rtts.length === 0) throw new Error(`ping got no replies: ${(r.stdout + r.stderr).trim().slice(-200)}`);
    const loss = p.transmitted > 0 ? (p.transmitted - p.received) / p.transmitted : 0;
    const extra = { samples: p.rtts.length, lossPercent: loss * 100 };
    return [
      { metric: 'rtt_p50', value: percentile(p.rtts, 50), extra },
      { metric: 'rtt_p99', value: percentile(p.rtts, 99), extra },
    ];
  } finally {
    await load.stop('SIGINT', 5000);
    await sleep(300); // the server returns to listening
  }
}

export function runCase(id: CaseId, topo: Topology, env: CaseEnv): Promise<Measurement[]> {
  switch (id) {
    case 'tcp1':
      return runTcp(topo, env, 1);
    case 'tcp4':
      return runTcp(topo, env, 4);
    case 'udp64':
      return runUdp64(topo, env);
    case 'ping':
      return runPing(topo, env);
  }
}
