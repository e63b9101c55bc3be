/**
 * The systems under test. Each one joins two namespaces, A (the client, 10.88.0.2) and
 * B (the server, 10.88.0.3), with its own kind of wire, and each is torn down before the
 * next one is built, so they can all use the same addresses:
 *
 *   veth        a veth pair straight between A and B (the kernel's own path, the upper bound)
 *   ovs         Open vSwitch, userspace (netdev) datapath: a bridge with two veth pairs,
 *               ovsdb-server and ovs-vswitchd started here with a private run dir under /tmp;
 *               no offload: tx checksum offload (hence TSO) off on the namespaces' veths
 *   ovs-tso     the same with OVS's userspace TSO (userspace-tso-enable=true) and the veths'
 *               offloads left on
 *   fwd         bench/c/fwd.c: read a packet from one TUN, write it to the other
 *   fwd-vnet    the same with IFF_VNET_HDR + TSO (64 KiB super-packets pass through)
 *   ts-w<N>     tunswitch with N shard workers, full pipeline: policy enforced on both
 *   ts-w<N>-tso endpoints and 100k extra ipcache entries; -tso turns on offload. Without a
 *               suffix the agent runs `io: uring` (the io_uring engine; where it cannot run the
 *               system is reported "n/a" with the agent's reason); -rw runs `io: readwrite`.
 *
 *   vxlan       A and B on two "hosts" joined by a veth underlay, through kernel vxlan
 *   ts-xhost    devices (the cross-host upper bound), or through two tunswitch switches in
 *   ts-xhost-tso  cluster mode (one per host, VXLAN between them; -tso offload on, -ugso
 *   ts-xhost-ugso also UDP_SEGMENT on the underlay): bench/e2e/xhost.ts
 *
 * The optional second sender C (10.88.0.4, for the `fair` case) sends to B at the same time
 * as A: veth gives B a second veth pair (eth1) to C; OVS gets a third port; fwd a third TUN
 * (it routes B's packets by destination address); tunswitch a third node `c` labelled like A.
 *
 * Names: namespaces `tsb-<tag><short>-a|b|c`, root devices `tsb<tag><short>...`, where <tag>
 * comes from the process id, so two runs at once do not collide.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ApiClient } from '../../src/api/client.js';
import { Cleanup, must, nsRun, sh, sleep, type Background } from './proc.js';
import { SYSTEM_IDS } from './options.js';
import { buildVxlan, buildXhost } from './xhost.js';

/** vxlan: kernel vxlan across two hosts; xhost: tunswitch across two hosts (bench/e2e/xhost.ts). */
export type SystemKind = 'veth' | 'ovs' | 'fwd' | 'tunswitch' | 'vxlan' | 'xhost';

export interface SystemSpec {
  id: string;
  label: string;
  kind: SystemKind;
  /** TSO/checksum offload on the TUN devices (fwd --vnet, tunswitch offload: true). */
  offload: boolean;
  /** tunswitch shard workers (0 for the others). */
  workers: number;
  /** Short name used in namespace and device names (at most 3 characters). */
  short: string;
  /**
   * tunswitch events: default on with nobody reading; 'off' runs the agent with --no-events;
   * 'follow' keeps a `tunswitch observe --follow -o json` client reading the flow stream.
   */
  events?: 'off' | 'follow';
  /** tunswitch I/O engine (run config `io`). */
  io?: 'auto' | 'uring' | 'readwrite';
  /** xhost: the switches send split GSO packets with UDP_SEGMENT (the config's underlayUdpGso). */
  udpGso?: boolean;
  /** Fixed chart colour, so a system looks the same in every run's chart. */
  colour: string;
}

export const SYSTEMS: readonly SystemSpec[] = [
  { id: 'veth', label: 'kernel veth', kind: 'veth', offload: true, workers: 0, short: 'v', colour: '#7f7f7f' },
  { id: 'ovs', label: 'OVS userspace', kind: 'ovs', offload: false, workers: 0, short: 'o', colour: '#8c564b' },
  { id: 'ovs-tso', label: 'OVS userspace tso', kind: 'ovs', offload: true, workers: 0, short: 'ot', colour: '#c49c94' },
  { id: 'fwd', label: 'C fwd', kind: 'fwd', offload: false, workers: 0, short: 'f', colour: '#2ca02c' },
  { id: 'fwd-vnet', label: 'C fwd --vnet', kind: 'fwd', offload: true, workers: 0, short: 'fv', colour: '#98df8a' },
  // Each tunswitch system with both I/O engines: io_uring (no suffix) and read/write (-rw).
  { id: 'ts-w1', label: 'tunswitch w1 uring', kind: 'tunswitch', offload: false, workers: 1, short: 't1', io: 'uring', colour: '#1f77b4' },
  { id: 'ts-w1-rw', label: 'tunswitch w1 rw', kind: 'tunswitch', offload: false, workers: 1, short: 't1r', io: 'readwrite', colour: '#aec7e8' },
  { id: 'ts-w1-tso', label: 'tunswitch w1 tso uring', kind: 'tunswitch', offload: true, workers: 1, short: 't1o', io: 'uring', colour: '#ff7f0e' },
  { id: 'ts-w1-tso-rw', label: 'tunswitch w1 tso rw', kind: 'tunswitch', offload: true, workers: 1, short: 't1p', io: 'readwrite', colour: '#ffbb78' },
  { id: 'ts-w2', label: 'tunswitch w2 uring', kind: 'tunswitch', offload: false, workers: 2, short: 't2', io: 'uring', colour: '#9467bd' },
  { id: 'ts-w2-rw', label: 'tunswitch w2 rw', kind: 'tunswitch', offload: false, workers: 2, short: 't2r', io: 'readwrite', colour: '#c5b0d5' },
  { id: 'ts-w2-tso', label: 'tunswitch w2 tso uring', kind: 'tunswitch', offload: true, workers: 2, short: 't2o', io: 'uring', colour: '#d62728' },
  { id: 'ts-w2-tso-rw', label: 'tunswitch w2 tso rw', kind: 'tunswitch', offload: true, workers: 2, short: 't2p', io: 'readwrite', colour: '#ff9896' },
  // The cost of observability: events off, and events on with an observe client following
  // (the default engine, `io: auto`; the report's info says which one ran).
  { id: 'ts-w1-noev', label: 'tunswitch w1 no events', kind: 'tunswitch', offload: false, workers: 1, short: 't1n', events: 'off', io: 'auto', colour: '#17becf' },
  { id: 'ts-w1-obs', label: 'tunswitch w1 observe -f', kind: 'tunswitch', offload: false, workers: 1, short: 't1f', events: 'follow', io: 'auto', colour: '#e377c2' },
  // Across two hosts (issue 11): the kernel's vxlan, and two tunswitch switches over VXLAN.
  { id: 'vxlan', label: 'kernel vxlan x-host', kind: 'vxlan', offload: true, workers: 0, short: 'xv', colour: '#393b79' },
  { id: 'ts-xhost', label: 'tunswitch x-host', kind: 'xhost', offload: false, workers: 1, short: 'xo', io: 'auto', colour: '#637939' },
  { id: 'ts-xhost-tso', label: 'tunswitch x-host tso', kind: 'xhost', offload: true, workers: 1, short: 'xt', io: 'auto', colour: '#bd9e39' },
  { id: 'ts-xhost-ugso', label: 'tunswitch x-host tso udp-gso', kind: 'xhost', offload: true, workers: 1, short: 'xu', io: 'auto', udpGso: true, colour: '#ad494a' },
];

// The CLI lists system ids without loading this module (options.ts); keep the two equal.
if (SYSTEMS.map((x) => x.id).join(',') !== SYSTEM_IDS.join(',')) {
  throw new Error(`bench: SYSTEM_IDS in options.ts (${SYSTEM_IDS.join(',')}) differ from SYSTEMS (${SYSTEMS.map((x) => x.id).join(',')})`);
}

export function systemById(id: string): SystemSpec | undefined {
  return SYSTEMS.find((s) => s.id === id);
}

/** The benchmark's addresses: every packet stays between these two. */
export const ADDR_A = '10.88.0.2';
export const ADDR_B = '10.88.0.3';
/** The second sender (the `fair` case). */
export const ADDR_C = '10.88.0.4';
export const POOL4 = '10.88.0.0/24';
export const POOL6 = 'fd00:88::/64';
/** iperf3's port; the policy allows it (TCP and UDP) from A to B. */
export const BENCH_PORT = 5201;
/** The second iperf3 server in B (C's flow in the `fair` case); allowed like BENCH_PORT. */
export const BENCH_PORT2 = 5202;

/** What a test needs to know about a built system. */
export interface Topology {
  nsA: string;
  nsB: string;
  /** The second sender's namespace; null when the system was built without it. */
  nsC: string | null;
  addrA: string;
  addrB: string;
  addrC: string;
  /** Interface name inside both namespaces. */
  ifname: string;
  /** Ethernet addresses for an L2 wire (veth, OVS); null for a TUN (L3) wire. */
  l2: { srcMac: string; dstMac: string } | null;
  /** Facts worth recording (versions, ipcache size, profile dir). */
  info: Record<string, string | number | boolean>;
}

export interface BuiltSystem {
  topo: Topology;
  /** The agent's process, for tunswitch (its stderr is the log). */
  agent: Background | null;
  /** The process that forwards (agent, fwd, ovs-vswitchd), for the `cpu` case; null for veth. */
  switchPid: number | null;
  /** More forwarding processes whose CPU counts too (the second host's switch). */
  otherSwitchPids?: number[];
  /** More agents that must stay up (the second host's switch). */
  otherAgents?: Background[];
  teardown(): Promise<void>;
}

export interface SystemEnv {
  cleanup: Cleanup;
  /** From the process id: at most 3 characters of [0-9a-z]. */
  tag: string;
  /** A private temporary directory for this run. */
  tmp: string;
  /** <outDir>/src/cli/main.js, to run the agent. */
  cliMain: string;
  /** The compiled C forwarder. */
  fwdBin: string;
  /** The compiled txcsum helper (bench/e2e/txcsum.c). */
  txcsumBin: string;
  /** Extra ipcache entries to load into tunswitch. */
  ipcacheEntries: number;
  /** Build the second sender C too (the `fair` case needs it). */
  withC: boolean;
  /** When set, the agent runs with --cpu-prof into <cpuProfDir>/<system id>. */
  cpuProfDir: string | null;
  log(msg: string): void;
}

export function nsNames(spec: SystemSpec, tag: string): { base: string; a: string; b: string; c: string } {
  const base = `tsb-${tag}${spec.short}`;
  return { base, a: `${base}-a`, b: `${base}-b`, c: `${base}-c` };
}

export async function makeNs(env: SystemEnv, name: string): Promise<void> {
  await sh('ip', ['netns', 'delete', name]); // a stale one from a killed run
  await must('ip', ['netns', 'add', name]);
  env.cleanup.netns(name);
  await must('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
}

async function mac(ns: string, ifname: string): Promise<string> {
  const out = await must('ip', ['-n', ns, '-j', 'link', 'show', 'dev', ifname]);
  const j = JSON.parse(out) as { address?: string }[];
  const a = j[0]?.address;
  if (!a) throw new Error(`no MAC address on ${ifname} in ${ns}`);
  return a;
}

/** Address and route setup for one side of a point-to-point wire. */
async function address(ns: string, ifname: string, addr: string, peer: string, l2: boolean): Promise<void> {
  if (l2) {
    await must('ip', ['-n', ns, 'addr', 'add', `${addr}/24`, 'dev', ifname]);
    await must('ip', ['-n', ns, 'link', 'set', ifname, 'up']);
  } else {
    await must('ip', ['-n', ns, 'addr', 'add', `${addr}/32`, 'dev', ifname]);
    await must('ip', ['-n', ns, 'link', 'set', ifname, 'up']);
    await must('ip', ['-n', ns, 'route', 'add', `${peer}/32`, 'dev', ifname]);
  }
}

/** ping from A (and C) to B until it answers (a few tries: the machine may be loaded). */
export async function checkReach(topo: Topology, tries = 6): Promise<void> {
  for (const ns of topo.nsC !== null ? [topo.nsA, topo.nsC] : [topo.nsA]) {
    let last = '';
    let ok = false;
    for (let i = 0; i < tries && !ok; i++) {
      const r = await nsRun(ns, ['ping', '-c', '2', '-i', '0.2', '-W', '1', topo.addrB], 10_000);
      ok = r.code === 0;
      if (!ok) {
        last = (r.stdout + r.stderr).trim().split('\n').slice(-2).join(' ');
        await sleep(300);
      }
    }
    if (!ok) throw new Error(`${ns} cannot reach ${topo.addrB}: ${last}`);
  }
}

function baseTopo(spec: SystemSpec, env: Pick<SystemEnv, 'tag' | 'withC'>, l2: { srcMac: string; dstMac: string } | null): Topology {
  const n = nsNames(spec, env.tag);
  return { nsA: n.a, nsB: n.b, nsC: env.withC ? n.c : null, addrA: ADDR_A, addrB: ADDR_B, addrC: ADDR_C, ifname: 'eth0', l2, info: {} };
}

// ---------------------------------------------------------------- kernel veth

async function buildVeth(spec: SystemSpec, env: SystemEnv): Promise<BuiltSystem> {
  const n = nsNames(spec, env.tag);
  await makeNs(env, n.a);
  await makeNs(env, n.b);
  const ta = `tsb${env.tag}${spec.short}a`;
  const tb = `tsb${env.tag}${spec.short}b`;
  await sh('ip', ['link', 'delete', ta]);
  await must('ip', ['link', 'add', ta, 'type', 'veth', 'peer', 'name', tb]);
  env.cleanup.link(ta);
  await must('ip', ['link', 'set', ta, 'netns', n.a, 'name', 'eth0']);
  await must('ip', ['link', 'set', tb, 'netns', n.b, 'name', 'eth0']);
  await address(n.a, 'eth0', ADDR_A, ADDR_B, true);
  await address(n.b, 'eth0', ADDR_B, ADDR_A, true);
  if (env.withC) {
    // C: a second veth pair, B's end is eth1 with B's address as a /32 and a route to C.
    await makeNs(env, n.c);
    const tc = `tsb${env.tag}${spec.short}c`;
    await sh('ip', ['link', 'delete', tc]);
    await must('ip', ['link', 'add', tc, 'type', 'veth', 'peer', 'name', `${tc}p`]);
    env.cleanup.link(tc);
    await must('ip', ['link', 'set', tc, 'netns', n.c, 'name', 'eth0']);
    await must('ip', ['link', 'set', `${tc}p`, 'netns', n.b, 'name', 'eth1']);
    await address(n.c, 'eth0', ADDR_C, ADDR_B, false);
    await address(n.b, 'eth1', ADDR_B, ADDR_C, false);
  }
  const topo = baseTopo(spec, env, { srcMac: await mac(n.a, 'eth0'), dstMac: await mac(n.b, 'eth0') });
  topo.info.wire = env.withC ? 'veth pair (and a second pair C-B)' : 'veth pair';
  return { topo, agent: null, switchPid: null, teardown: () => env.cleanup.run() };
}

// ---------------------------------------------------------------- Open vSwitch (netdev)

const OVS_SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema';

async function buildOvs(spec: SystemSpec, env: SystemEnv): Promise<BuiltSystem> {
  const n = nsNames(spec, env.tag);
  const dir = join(env.tmp, spec.id);
  mkdirSync(dir, { recursive: true });
  // Everything OVS writes goes under `dir`, never /var/run/openvswitch or /etc/openvswitch.
  const ovsEnv: NodeJS.ProcessEnv = { ...process.env, OVS_RUNDIR: dir, OVS_DBDIR: dir, OVS_LOGDIR: dir, OVS_SYSCONFDIR: dir };
  const db = `unix:${join(dir, 'db.sock')}`;
  const vsctl = (args: string[]): Promise<string> => must('ovs-vsctl', [`--db=${db}`, '--timeout=20', ...args], 30_000);
  await must('ovsdb-tool', ['create', join(dir, 'conf.db'), OVS_SCHEMA]);
  const ovsdb = env.cleanup.spawn(
    'ovsdb-server',
    [join(dir, 'conf.db'), `--remote=punix:${join(dir, 'db.sock')}`, `--unixctl=${join(dir, 'ovsdb.ctl')}`, `--log-file=${join(dir, 'ovsdb.log')}`, '--no-chdir'],
    ovsEnv,
  );
  for (let i = 0; !existsSync(join(dir, 'db.sock')); i++) {
    if (i > 100 || ovsdb.child.exitCode !== null) throw new Error(`ovsdb-server did not start: ${ovsdb.output().stderr.trim()}`);
    await sleep(50);
  }
  await vsctl(['--no-wait', 'init']);
  // With offload: OVS's userspace TSO (virtio-net headers on its AF_PACKET sockets) takes the
  // veths' CHECKSUM_PARTIAL/GSO packets as they are. Without: the namespaces' veths compute
  // checksums themselves (txcsum off, which also turns TSO off), as OVS's netdev datapath on
  // veth ports has always needed.
  await vsctl(['--no-wait', 'set', 'Open_vSwitch', '.', `other_config:userspace-tso-enable=${spec.offload}`]);
  const vswitchd = env.cleanup.spawn(
    'ovs-vswitchd',
    [db, `--unixctl=${join(dir, 'vswitchd.ctl')}`, `--log-file=${join(dir, 'vswitchd.log')}`, '--no-chdir'],
    ovsEnv,
  );
  const br = `tsb${env.tag}br`;
  await vsctl(['--may-exist', 'add-br', br, '--', 'set', 'bridge', br, 'datapath_type=netdev']);
  env.cleanup.add(
    `ovs bridge ${br}`,
    () => sh('ovs-vsctl', [`--db=${db}`, '--timeout=5', '--if-exists', 'del-br', br]),
    () => undefined, // the bridge lives only in the private database, which is removed
  );
  const sides = env.withC ? (['a', 'b', 'c'] as const) : (['a', 'b'] as const);
  for (const side of sides) {
    await makeNs(env, n[side]);
    const host = `tsb${env.tag}${spec.short}${side}`;
    await sh('ip', ['link', 'delete', host]);
    await must('ip', ['link', 'add', host, 'type', 'veth', 'peer', 'name', `${host}p`]);
    env.cleanup.link(host);
    await must('ip', ['link', 'set', `${host}p`, 'netns', n[side], 'name', 'eth0']);
    await must('ip', ['link', 'set', host, 'up']);
    await vsctl(['add-port', br, host]);
  }
  await address(n.a, 'eth0', ADDR_A, ADDR_B, true);
  await address(n.b, 'eth0', ADDR_B, ADDR_A, true);
  if (env.withC) await address(n.c, 'eth0', ADDR_C, ADDR_B, true);
  if (!spec.offload) for (const side of sides) await must('ip', ['netns', 'exec', n[side], env.txcsumBin, 'eth0', 'off']);
  const topo = baseTopo(spec, env, { srcMac: await mac(n.a, 'eth0'), dstMac: await mac(n.b, 'eth0') });
  const ver = await sh('ovs-vswitchd', ['--version']);
  topo.info.ovs = ver.stdout.split('\n')[0]?.trim() ?? '';
  topo.info.datapath = `netdev (userspace), NORMAL action, userspace-tso-enable=${spec.offload}${spec.offload ? '' : ', veth tx checksum/TSO off'}`;
  return { topo, agent: null, switchPid: vswitchd.child.pid ?? null, teardown: () => env.cleanup.run() };
}

// ---------------------------------------------------------------- C forwarder

/** Compiles one of the benchmark's C helpers (fwd.c, txcsum.c). */
export async function buildCBinary(src: string, out: string): Promise<void> {
  await must('cc', ['-O2', '-o', out, src], 60_000);
}

async function waitLink(name: string, proc: Background): Promise<void> {
  for (let i = 0; ; i++) {
    const r = await sh('ip', ['link', 'show', 'dev', name]);
    if (r.code === 0) return;
    if (i > 100 || proc.child.exitCode !== null) throw new Error(`fwd did not create ${name}: ${proc.output().stderr.trim()}`);
    await sleep(30);
  }
}

async function buildFwd(spec: SystemSpec, env: SystemEnv): Promise<BuiltSystem> {
  const n = nsNames(spec, env.tag);
  const ta = `tsb${env.tag}${spec.short}a`;
  const tb = `tsb${env.tag}${spec.short}b`;
  const tc = `tsb${env.tag}${spec.short}c`;
  const devs: [string, string][] = [
    [ta, n.a],
    [tb, n.b],
  ];
  if (env.withC) devs.push([tc, n.c]);
  for (const [, ns] of devs) await makeNs(env, ns);
  const proc = env.cleanup.spawn(env.fwdBin, [...devs.map(([d]) => d), ...(spec.offload ? ['--vnet'] : [])]);
  for (const [d, ns] of devs) {
    await waitLink(d, proc);
    await must('ip', ['link', 'set', d, 'netns', ns, 'name', 'eth0']);
    await must('ip', ['-n', ns, 'link', 'set', 'eth0', 'txqueuelen', '1000']);
  }
  await address(n.a, 'eth0', ADDR_A, ADDR_B, false);
  await address(n.b, 'eth0', ADDR_B, ADDR_A, false);
  if (env.withC) {
    await address(n.c, 'eth0', ADDR_C, ADDR_B, false);
    await must('ip', ['-n', n.b, 'route', 'add', `${ADDR_C}/32`, 'dev', 'eth0']);
  }
  const topo = baseTopo(spec, env, null);
  topo.info.forwarder = `fwd${spec.offload ? ' --vnet' : ''} (one read + one write syscall per packet)`;
  return { topo, agent: null, switchPid: proc.child.pid ?? null, teardown: () => env.cleanup.run() };
}

// ---------------------------------------------------------------- tunswitch

/**
 * The policy set: both endpoints enforce, A's egress and B's ingress each allow the benchmark
 * ports (TCP and UDP; C is labelled like A) and ICMP echo between the two, plus rules that are never hit but make the
 * compiled tables look like a real namespace (CIDR egress, DNS, a metrics scraper).
 */
export function benchPolicies(): string {
  const cidrs = Array.from({ length: 32 }, (_, i) => `      - 198.18.${i * 4}.0/22`).join('\n');
  return `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: bench-server
spec:
  description: "the server accepts the client on the benchmark ports and the scraper on 9090"
  endpointSelector:
    matchLabels:
      app: bench-server
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: bench-client
    toPorts:
    - ports:
      - port: "${BENCH_PORT}"
        protocol: TCP
      - port: "${BENCH_PORT}"
        protocol: UDP
      - port: "${BENCH_PORT2}"
        protocol: TCP
  - fromEndpoints:
    - matchLabels:
        app: bench-client
    icmps:
    - fields:
      - type: 8
        family: IPv4
  - fromEndpoints:
    - matchLabels:
        app: scraper
    toPorts:
    - ports:
      - port: "9090"
        protocol: TCP
  egress:
  - toEndpoints:
    - matchLabels:
        app: bench-client
    toPorts:
    - ports:
      - port: "8443"
        protocol: TCP
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: bench-client
spec:
  description: "the client may reach the server's benchmark ports, DNS and a set of CIDRs on 443"
  endpointSelector:
    matchLabels:
      app: bench-client
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: bench-server
    toPorts:
    - ports:
      - port: "8443"
        protocol: TCP
  egress:
  - toEndpoints:
    - matchLabels:
        app: bench-server
    toPorts:
    - ports:
      - port: "${BENCH_PORT}"
        protocol: TCP
      - port: "${BENCH_PORT}"
        protocol: UDP
      - port: "${BENCH_PORT2}"
        protocol: TCP
  - toEndpoints:
    - matchLabels:
        app: bench-server
    icmps:
    - fields:
      - type: 8
        family: IPv4
  - toEndpoints:
    - matchLabels:
        k8s-app: kube-dns
    toPorts:
    - ports:
      - port: "53"
        protocol: UDP
  - toCIDR:
${cidrs}
    toPorts:
    - ports:
      - port: "443"
        protocol: TCP
`;
}

/**
 * The extra ipcache entries: `count` remote pod /32s in 10.100.0.0/15 (256 per /24, like
 * per-node pod CIDRs), spread over 1000 workload identities. Nothing is ever sent to them.
 */
export function ipcacheEntries(count: number, first = 0): { cidr: string; identity: number }[] {
  const out: { cidr: string; identity: number }[] = [];
  for (let i = first; i < first + count; i++) {
    out.push({ cidr: `10.${100 + (i >>> 16)}.${(i >>> 8) & 255}.${i & 255}/32`, identity: 10_000 + (i % 1000) });
  }
  return out;
}

const IPCACHE_CHUNK = 25_000;

export function tunswitchConfig(spec: SystemSpec, tag: string, withC = false): string {
  const n = nsNames(spec, tag);
  return [
    `name: ${n.base}`,
    `pool: { ipv4: ${POOL4}, ipv6: "${POOL6}" }`,
    `workers: ${spec.workers}`,
    `offload: ${spec.offload}`,
    `io: ${spec.io ?? 'auto'}`,
    'hostPort: false',
    'nodes:',
    `  a: { labels: { app: bench-client, role: client }, ipv4: ${ADDR_A} }`,
    `  b: { labels: { app: bench-server, role: server }, ipv4: ${ADDR_B} }`,
    // The second sender: the same labels (so the same policy) as A.
    ...(withC ? [`  c: { labels: { app: bench-client, role: client }, ipv4: ${ADDR_C} }`] : []),
    'policies: [ policies.yaml ]',
    '',
  ].join('\n');
}

async function buildTunswitch(spec: SystemSpec, env: SystemEnv): Promise<BuiltSystem> {
  const n = nsNames(spec, env.tag);
  const dir = join(env.tmp, spec.id);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'run.yaml'), tunswitchConfig(spec, env.tag, env.withC));
  writeFileSync(join(dir, 'policies.yaml'), benchPolicies());
  await makeNs(env, n.a);
  await makeNs(env, n.b);
  if (env.withC) await makeNs(env, n.c);
  const want = env.withC ? 3 : 2;
  const socket = join(dir, 'api.sock');
  // node 20 refuses --cpu-prof in NODE_OPTIONS, so the flags go on the command line.
  const nodeFlags: string[] = [];
  let profDir = '';
  if (env.cpuProfDir) {
    profDir = join(env.cpuProfDir, spec.id);
    mkdirSync(profDir, { recursive: true });
    nodeFlags.push('--cpu-prof', `--cpu-prof-dir=${profDir}`);
  }
  const agent = env.cleanup.spawn(process.execPath, [
    ...nodeFlags,
    env.cliMain,
    '--socket',
    socket,
    'run',
    '-c',
    join(dir, 'run.yaml'),
    '--state-dir',
    join(dir, 'state'),
    '--no-metrics',
    ...(spec.events === 'off' ? ['--no-events'] : []),
  ]);
  const deadline = Date.now() + 60_000;
  for (;;) {
    const log = agent.output().stderr;
    const m = /ready: (\d+) endpoints/.exec(log);
    if (m) {
      if (Number(m[1]) !== want) throw new Error(`tunswitch attached ${m[1]} endpoints, want ${want}; log: ${log.trim()}`);
      break;
    }
    if (agent.child.exitCode !== null || agent.child.signalCode !== null) {
      const why = engineUnavailable(spec, log);
      if (why !== null) throw new SystemUnavailable(why);
      throw new Error(`tunswitch exited before ready: ${log.trim()}`);
    }
    if (Date.now() > deadline) throw new Error(`tunswitch not ready after 60 s: ${log.trim()}`);
    await sleep(50);
  }
  const topo = baseTopo(spec, env, null);
  const api = new ApiClient(socket, { timeoutMs: 120_000 });
  let added = 0;
  const t0 = Date.now();
  for (let first = 0; first < env.ipcacheEntries; first += IPCACHE_CHUNK) {
    const count = Math.min(IPCACHE_CHUNK, env.ipcacheEntries - first);
    const r = await api.put<{ added: number }>('/v1/ipcache', { entries: ipcacheEntries(count, first) });
    added += r.added;
  }
  topo.info.ipcacheAdded = added;
  topo.info.ipcacheLoadMs = Date.now() - t0;
  if (spec.events === 'follow') {
    // A Hubble-style client reading every flow event for the whole run (stopped with the agent).
    env.cleanup.spawn(process.execPath, [env.cliMain, '--socket', socket, 'observe', '--follow', '-o', 'json']);
  }
  const eps = await api.get<{ name: string; policy?: { ingress: boolean; egress: boolean } }[]>('/v1/endpoint');
  topo.info.policyEnforced = eps.length === want && eps.every((e) => e.policy?.ingress === true && e.policy?.egress === true);
  topo.info.workers = spec.workers;
  topo.info.offload = spec.offload;
  topo.info.io = spec.io ?? 'auto';
  const st = await api.get<{ ioEngine?: string }>('/v1/status');
  topo.info.ioEngine = st.ioEngine ?? 'unknown';
  if (profDir) topo.info.cpuProfDir = profDir;
  // A SIGTERM first, so the agent removes its devices and (with --cpu-prof) writes its profile.
  const teardown = async (): Promise<void> => {
    const r = await agent.stop('SIGTERM', 20_000);
    if (r.signal === 'SIGKILL') env.log(`${spec.id}: agent needed SIGKILL; log tail: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
    await env.cleanup.run();
  };
  return { topo, agent, switchPid: agent.child.pid ?? null, teardown };
}

/** A system that cannot run on this machine (not a failure of the run): reported as "n/a (why)". */
export class SystemUnavailable extends Error {
  constructor(readonly reason: string) {
    super(reason);
  }
}

/**
 * Why the agent could not start with the system's I/O engine, from its log; null when the
 * failure is something else. Only `io: uring` can be unavailable (auto falls back).
 */
export function engineUnavailable(spec: Pick<SystemSpec, 'io'>, log: string): string | null {
  if (spec.io !== 'uring') return null;
  const line = log.split('\n').find((l) => /io_uring|io: uring/.test(l));
  if (!line) return null;
  return line.replace(/^.*?(io: uring)/, '$1').trim();
}

export function buildSystem(spec: SystemSpec, env: SystemEnv): Promise<BuiltSystem> {
  switch (spec.kind) {
    case 'veth':
      return buildVeth(spec, env);
    case 'ovs':
      return buildOvs(spec, env);
    case 'fwd':
      return buildFwd(spec, env);
    case 'tunswitch':
      return buildTunswitch(spec, env);
    case 'vxlan':
      return buildVxlan(spec, env);
    case 'xhost':
      return buildXhost(spec, env);
  }
}
