/**
 * The cross-host systems (issue 11): two "host" namespaces H1 and H2 joined by a veth pair,
 * the underlay (H1 eth0 10.88.1.1/24, H2 eth0 10.88.1.2/24, MTU 1500); A (and C) behind H1,
 * B behind H2, so every packet A -> B crosses a VXLAN tunnel (UDP 8472) on the underlay.
 *
 *   vxlan          the kernel's own path, the upper bound: in each host a vxlan device (id
 *                  XHOST_VNI, dstport 8472, local/remote the underlay addresses, MTU 1450) and
 *                  a bridge with the endpoints' veths; A 10.88.0.2, B 10.88.0.3, C 10.88.0.4
 *                  on one /24 (L2 across the tunnel), the endpoints' MTU 1450. Offloads on.
 *   ts-xhost       two tunswitch switches in cluster mode, one per host (`run` inside H1 and
 *   ts-xhost-tso   H2, kvstore on one etcd in H1 at 10.88.1.1:2379, node-ip the underlay
 *   ts-xhost-ugso  address), the bench policies on both, 100k extra ipcache entries on
 *                  both; A 10.88.0.2 (and C .4) in H1's pool 10.88.0.0/26, B 10.88.0.66 in
 *                  H2's pool 10.88.0.64/26 (pools of two hosts must not overlap). The
 *                  endpoints' MTU is 1450 (1500 - 50). -tso: offload on (GSO packets split
 *                  for the tunnel); -ugso: the same with `underlayUdpGso: true` (the
 *                  split frames leave with UDP_SEGMENT: the kernel cuts the outer datagrams).
 *
 * Names: namespaces `tsb-<tag><short>-a|b|c|h1|h2`, root devices `tsb<tag><short>...`.
 * The `cpu` case counts both switches (their CPU times add up).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ApiClient } from '../../src/api/client.js';
import { must, sh, sleep, type Background } from './proc.js';
import {
  ADDR_A,
  ADDR_B,
  ADDR_C,
  benchPolicies,
  engineUnavailable,
  ipcacheEntries,
  makeNs,
  nsNames,
  SystemUnavailable,
  type BuiltSystem,
  type SystemEnv,
  type SystemSpec,
  type Topology,
} from './systems.js';

/** Underlay addresses of the two hosts. */
export const UL_H1 = '10.88.1.1';
export const UL_H2 = '10.88.1.2';
/** The kernel vxlan system's VNI. */
export const XHOST_VNI = 42;
/** The switches' pools (disjoint) and B's address in H2's. */
export const XHOST_POOL_H1 = '10.88.0.0/26';
export const XHOST_POOL_H2 = '10.88.0.64/26';
export const XHOST_ADDR_B = '10.88.0.66';
const ETCD_CLIENT_PORT = 2379;
const ETCD_PEER_PORT = 2380;
const IPCACHE_CHUNK = 25_000;

export function xhostNames(spec: SystemSpec, tag: string): ReturnType<typeof nsNames> & { h1: string; h2: string } {
  const n = nsNames(spec, tag);
  return { ...n, h1: `${n.base}-h1`, h2: `${n.base}-h2` };
}

/** H1 and H2 and the veth pair between them, addressed. */
async function underlay(spec: SystemSpec, env: SystemEnv, h1: string, h2: string): Promise<void> {
  await makeNs(env, h1);
  await makeNs(env, h2);
  const u = `tsb${env.tag}${spec.short}u`;
  await sh('ip', ['link', 'delete', u]);
  await must('ip', ['link', 'add', u, 'mtu', '1500', 'type', 'veth', 'peer', 'name', `${u}p`, 'mtu', '1500']);
  env.cleanup.link(u);
  await must('ip', ['link', 'set', u, 'netns', h1, 'name', 'eth0']);
  await must('ip', ['link', 'set', `${u}p`, 'netns', h2, 'name', 'eth0']);
  for (const [ns, ip] of [[h1, UL_H1], [h2, UL_H2]] as const) {
    await must('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    await must('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
  }
}

// ---------------------------------------------------------------- kernel vxlan

export async function buildVxlan(spec: SystemSpec, env: SystemEnv): Promise<BuiltSystem> {
  const n = xhostNames(spec, env.tag);
  await underlay(spec, env, n.h1, n.h2);
  const sides: ['a' | 'b' | 'c', string, string][] = [
    ['a', n.h1, ADDR_A],
    ['b', n.h2, ADDR_B],
  ];
  if (env.withC) sides.push(['c', n.h1, ADDR_C]);
  for (const [host, local, remote] of [[n.h1, UL_H1, UL_H2], [n.h2, UL_H2, UL_H1]] as const) {
    await must('ip', ['-n', host, 'link', 'add', 'vx0', 'type', 'vxlan', 'id', String(XHOST_VNI), 'dstport', '8472', 'local', local, 'remote', remote, 'dev', 'eth0']);
    await must('ip', ['-n', host, 'link', 'add', 'br0', 'type', 'bridge']);
    await must('ip', ['-n', host, 'link', 'set', 'vx0', 'master', 'br0', 'up']);
    await must('ip', ['-n', host, 'link', 'set', 'br0', 'up']);
  }
  for (const [side, host, addr] of sides) {
    await makeNs(env, n[side]);
    const leg = `tsb${env.tag}${spec.short}${side}`;
    await sh('ip', ['link', 'delete', leg]);
    await must('ip', ['link', 'add', leg, 'mtu', '1450', 'type', 'veth', 'peer', 'name', `${leg}p`, 'mtu', '1450']);
    env.cleanup.link(leg);
    await must('ip', ['link', 'set', leg, 'netns', host, 'name', `ep${side}`]);
    await must('ip', ['-n', host, 'link', 'set', `ep${side}`, 'master', 'br0', 'up']);
    await must('ip', ['link', 'set', `${leg}p`, 'netns', n[side], 'name', 'eth0']);
    await must('ip', ['-n', n[side], 'addr', 'add', `${addr}/24`, 'dev', 'eth0']);
    await must('ip', ['-n', n[side], 'link', 'set', 'eth0', 'up']);
  }
  const topo: Topology = {
    nsA: n.a,
    nsB: n.b,
    nsC: env.withC ? n.c : null,
    addrA: ADDR_A,
    addrB: ADDR_B,
    addrC: ADDR_C,
    ifname: 'eth0',
    l2: { srcMac: await macOf(n.a), dstMac: await macOf(n.b) },
    info: {
      wire: `veth underlay ${UL_H1} - ${UL_H2}; per host a kernel vxlan (id ${XHOST_VNI}, dstport 8472) and a bridge with the endpoints' veths (MTU 1450)`,
    },
  };
  return { topo, agent: null, switchPid: null, teardown: () => env.cleanup.run() };
}

async function macOf(ns: string): Promise<string> {
  const j = JSON.parse(await must('ip', ['-n', ns, '-j', 'link', 'show', 'dev', 'eth0'])) as { address?: string }[];
  const a = j[0]?.address;
  if (!a) throw new Error(`no MAC address on eth0 in ${ns}`);
  return a;
}

// ---------------------------------------------------------------- tunswitch across two hosts

/** The run config of host 1 or 2 (pure; unit-tested). */
export function xhostConfig(spec: SystemSpec, tag: string, host: 1 | 2, withC = false): string {
  const n = nsNames(spec, tag);
  const nodes =
    host === 1
      ? [`  a: { labels: { app: bench-client, role: client }, ipv4: ${ADDR_A}, defaultRoute: true }`, ...(withC ? [`  c: { labels: { app: bench-client, role: client }, ipv4: ${ADDR_C}, defaultRoute: true }`] : [])]
      : [`  b: { labels: { app: bench-server, role: server }, ipv4: ${XHOST_ADDR_B}, defaultRoute: true }`];
  return [
    `name: ${n.base}`,
    `pool: { ipv4: ${host === 1 ? XHOST_POOL_H1 : XHOST_POOL_H2} }`,
    `workers: ${spec.workers}`,
    `offload: ${spec.offload}`,
    `io: ${spec.io ?? 'auto'}`,
    `underlayUdpGso: ${spec.udpGso === true}`,
    'hostPort: false',
    'nodes:',
    ...nodes,
    'policies: [ policies.yaml ]',
    `kvstore: { url: "etcd://${UL_H1}:${ETCD_CLIENT_PORT}", nodeName: h${host}, nodeIp: ${host === 1 ? UL_H1 : UL_H2}, leaseTtl: 10 }`,
    '',
  ].join('\n');
}

async function etcdHealthy(ns: string): Promise<boolean> {
  const js = `fetch('http://${UL_H1}:${ETCD_CLIENT_PORT}/health',{signal:AbortSignal.timeout(1000)}).then(r=>r.json()).then(j=>process.exit(j.health==='true'?0:1),()=>process.exit(1))`;
  return (await sh('ip', ['netns', 'exec', ns, process.execPath, '-e', js], 5000)).code === 0;
}

async function waitReady(agent: Background, spec: SystemSpec, want: number, what: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const log = agent.output().stderr;
    const m = /ready: (\d+) endpoints/.exec(log);
    if (m) {
      if (Number(m[1]) !== want) throw new Error(`${what}: tunswitch attached ${m[1]} endpoints, want ${want}; log: ${log.trim()}`);
      return;
    }
    if (agent.child.exitCode !== null || agent.child.signalCode !== null) {
      const why = engineUnavailable(spec, log);
      if (why !== null) throw new SystemUnavailable(why);
      throw new Error(`${what}: tunswitch exited before ready: ${log.trim()}`);
    }
    if (Date.now() > deadline) throw new Error(`${what}: tunswitch not ready after 60 s: ${log.trim()}`);
    await sleep(50);
  }
}

/** Until `api`'s ipcache holds `cidr` as a remote (tunnel) entry. */
async function waitRemote(api: ApiClient, cidr: string, what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const list = await api.get<{ cidr: string; tunnel?: string }[]>('/v1/ipcache');
    if (list.some((e) => e.cidr === cidr && e.tunnel !== undefined)) return;
    if (Date.now() > deadline) throw new Error(`${what}: ${cidr} not in its ipcache as a remote entry after 30 s`);
    await sleep(200);
  }
}

export async function buildXhost(spec: SystemSpec, env: SystemEnv): Promise<BuiltSystem> {
  const n = xhostNames(spec, env.tag);
  const dir = join(env.tmp, spec.id);
  mkdirSync(dir, { recursive: true });
  await underlay(spec, env, n.h1, n.h2);
  await makeNs(env, n.a);
  await makeNs(env, n.b);
  if (env.withC) await makeNs(env, n.c);

  // etcd in H1 on the underlay address (its peer port on H1's loopback), a private data dir.
  const etcdBin = (await sh('sh', ['-c', 'command -v etcd'])).stdout.trim();
  if (etcdBin === '') throw new SystemUnavailable('etcd is not installed (Debian: etcd-server)');
  const client = `http://${UL_H1}:${ETCD_CLIENT_PORT}`;
  const peer = `http://127.0.0.1:${ETCD_PEER_PORT}`;
  const etcd = env.cleanup.spawn('ip', [
    'netns', 'exec', n.h1, etcdBin, '--name', 'bench', '--data-dir', join(dir, 'etcd'), '--listen-client-urls', client, '--advertise-client-urls', client,
    '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `bench=${peer}`, '--initial-cluster-state', 'new', '--log-level', 'error',
  ]);
  for (let i = 0; !(await etcdHealthy(n.h1)); i++) {
    if (etcd.child.exitCode !== null || i > 100) throw new Error(`etcd did not become healthy on ${client}: ${etcd.output().stderr.trim().split('\n').slice(-3).join(' | ')}`);
    await sleep(200);
  }

  const agentEnv: NodeJS.ProcessEnv = { ...process.env };
  delete agentEnv.TUNSWITCH_UNDERLAY_UDP_GSO; // the config's underlayUdpGso says which
  const agents: Background[] = [];
  const apis: ApiClient[] = [];
  for (const host of [1, 2] as const) {
    const hd = join(dir, `h${host}`);
    mkdirSync(hd, { recursive: true });
    writeFileSync(join(hd, 'run.yaml'), xhostConfig(spec, env.tag, host, env.withC));
    writeFileSync(join(hd, 'policies.yaml'), benchPolicies());
    const socket = join(hd, 'api.sock');
    // --cpu-prof: each host's agent into <cpuProfDir>/<system id>-h<host>
    const prof: string[] = [];
    if (env.cpuProfDir) {
      const pd = join(env.cpuProfDir, `${spec.id}-h${host}`);
      mkdirSync(pd, { recursive: true });
      prof.push('--cpu-prof', `--cpu-prof-dir=${pd}`);
    }
    agents.push(
      env.cleanup.spawn(
        'ip',
        ['netns', 'exec', host === 1 ? n.h1 : n.h2, process.execPath, ...prof, env.cliMain, '--socket', socket, 'run', '-c', join(hd, 'run.yaml'), '--state-dir', join(hd, 'state'), '--no-metrics'],
        agentEnv,
      ),
    );
    apis.push(new ApiClient(socket, { timeoutMs: 120_000 }));
  }
  const [ag1, ag2] = agents as [Background, Background];
  const [api1, api2] = apis as [ApiClient, ApiClient];
  await waitReady(ag1, spec, env.withC ? 2 : 1, 'host 1');
  await waitReady(ag2, spec, 1, 'host 2');
  await waitRemote(api1, `${XHOST_ADDR_B}/32`, 'host 1');
  await waitRemote(api2, `${ADDR_A}/32`, 'host 2');

  const topo: Topology = { nsA: n.a, nsB: n.b, nsC: env.withC ? n.c : null, addrA: ADDR_A, addrB: XHOST_ADDR_B, addrC: ADDR_C, ifname: 'eth0', l2: null, info: {} };
  let added = 0;
  const t0 = Date.now();
  for (const api of apis) {
    for (let first = 0; first < env.ipcacheEntries; first += IPCACHE_CHUNK) {
      const count = Math.min(IPCACHE_CHUNK, env.ipcacheEntries - first);
      added += (await api.put<{ added: number }>('/v1/ipcache', { entries: ipcacheEntries(count, first) })).added;
    }
  }
  topo.info.ipcacheAdded = added;
  topo.info.ipcacheLoadMs = Date.now() - t0;
  const eps = [...(await api1.get<{ policy?: { ingress: boolean; egress: boolean } }[]>('/v1/endpoint')), ...(await api2.get<{ policy?: { ingress: boolean; egress: boolean } }[]>('/v1/endpoint'))];
  topo.info.policyEnforced = eps.every((e) => e.policy?.ingress === true && e.policy?.egress === true);
  topo.info.workers = spec.workers;
  topo.info.offload = spec.offload;
  topo.info.underlayUdpGso = spec.udpGso === true;
  topo.info.io = spec.io ?? 'auto';
  topo.info.ioEngine = (await api1.get<{ ioEngine?: string }>('/v1/status')).ioEngine ?? 'unknown';
  topo.info.wire = `veth underlay ${UL_H1} - ${UL_H2}; a switch per host (kvstore etcd ${client}), VXLAN between them; endpoints' MTU 1450`;
  const teardown = async (): Promise<void> => {
    for (const [i, ag] of agents.entries()) {
      const r = await ag.stop('SIGTERM', 20_000);
      if (r.signal === 'SIGKILL') env.log(`${spec.id}: agent of host ${i + 1} needed SIGKILL; log tail: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
    }
    await etcd.stop('SIGTERM', 5_000);
    await env.cleanup.run();
  };
  return { topo, agent: ag1, switchPid: ag1.child.pid ?? null, otherSwitchPids: ag2.child.pid !== undefined ? [ag2.child.pid] : [], otherAgents: [ag2], teardown };
}
