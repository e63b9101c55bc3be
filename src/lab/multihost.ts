/**
 * Multi-host labs: several switches in cluster mode on one machine, each in a namespace that
 * plays a host, joined by an underlay bridge, sharing one etcd (src/lab/multihost-file.ts
 * describes the file).
 *
 *   <name>-ul      the underlay: a bridge `br0` at the underlay's last address, one veth per
 *                  host (`h<i>`); the lab etcd listens there (its own namespace, so the root
 *                  namespace and its firewall are never involved)
 *   <name>-<host>  a host: `eth0` at its underlay address (veth to the bridge), its switch
 *                  (`tunswitch run -c <host>.yaml` with kvstore), endpoint TUNs made here
 *   <name>-<node>  an endpoint, as in a single-host lab
 *
 * multiHostUp(file):
 *   1. parse; refuse if a lab of that name runs (clean up a dead one) or a namespace exists,
 *      or a pool is in use
 *   2. the underlay namespace and bridge; the lab etcd (data dir under the OS temp dir) and
 *      wait until it is healthy
 *   3. per host: its namespace and veth, its endpoint namespaces
 *   4. start every switch at once (detached, own session), wait until each has all its
 *      endpoints ready and sees every host and every other host's endpoints (converged)
 *   5. hosts files in every namespace with all the lab's nodes
 * Every step is recorded in multihost.json before the next, so a failure part-way (or a
 * later multiHostDown) removes exactly what was made.
 *
 * multiHostDown(name): SIGTERM the switches (they leave the cluster and remove their
 * devices), then whatever else runs in the lab's namespaces (etcd, servers), delete the
 * namespaces, hosts files, the etcd data dir and the run directories.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ApiClient } from '../api/client.js';
import type { EndpointInfo, IpcacheInfo, NodeInfo } from '../api/types.js';
import { cliName } from '../text/hint.js';
import { checkPools } from '../runtime/pools.js';
import { removeHostsFiles, renderHosts, type HostEntry } from './hosts.js';
import { cliMainPath } from './lab.js';
import { loadMultiHostLab, type MultiHostLabFile } from './multihost-file.js';
import {
  hostRunDir,
  listMultiHostNames,
  multiHostRunDir,
  ownedAlive,
  readMultiHostState,
  writeMultiHostState,
  type MultiHostHostState,
  type MultiHostState,
} from './multihost-state.js';
import { LAB_LOG_DIR, NETNS_ETC } from './state.js';
import { LabError, ip, listNetns, netnsPids, run, sleep, terminate } from './sys.js';

export type LabLog = (msg: string) => void;

export interface MultiHostUpOptions {
  /** How long to wait for every switch to be ready and converged; default 60 s. */
  readyTimeoutMs?: number;
  log?: LabLog;
}

const DEFAULT_READY_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 10_000;
const BRIDGE = 'br0';

function tail(file: string, lines = 8): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Whether the etcd at http://host:port answers /health from inside `netns`. */
async function etcdHealthy(netns: string, hostPort: string): Promise<boolean> {
  const js = `fetch('http://${hostPort}/health',{signal:AbortSignal.timeout(1000)}).then(r=>r.json()).then(j=>process.exit(j.health==='true'?0:1),()=>process.exit(1))`;
  const r = await run('ip', ['netns', 'exec', netns, process.execPath, '-e', js], 5000);
  return r.code === 0;
}

function anyAlive(s: MultiHostState): boolean {
  return s.hosts.some((h) => h.pid > 0 && ownedAlive(h.pid, h.config)) || (s.etcd !== undefined && ownedAlive(s.etcd.pid, s.etcd.dataDir));
}

/** Brings a multi-host lab up (see the top of this file). */
export async function multiHostUp(file: string, opts: MultiHostUpOptions = {}): Promise<MultiHostState> {
  const log = opts.log ?? ((): void => undefined);
  const lab = loadMultiHostLab(file);
  const name = lab.name;

  // 1. A running lab of this name wins; a dead one is cleaned up; nothing of ours may exist.
  const old = readMultiHostState(name);
  if (old && anyAlive(old)) throw new LabError('ELAB_RUNNING', `lab "${name}" is already running; run "${cliName()} lab down ${name}" first`);
  if (old) {
    log(`lab "${name}": its switches are gone; removing what they left`);
    await multiHostDown(name, { log });
  }
  if (existsSync(join(multiHostRunDir(name), 'lab.json'))) throw new LabError('ELAB_RUNNING', `a single-host lab "${name}" exists; run "${cliName()} lab down ${name}" first`);
  const nodeNs = lab.hosts.flatMap((h) => h.config.nodes.map((n) => `${name}-${n.name}`));
  const wantNs = [lab.underlayNetns, ...lab.hosts.map((h) => h.netns), ...nodeNs];
  const present = new Set(await listNetns());
  for (const ns of wantNs) {
    if (present.has(ns)) throw new LabError('ELAB_CONFLICT', `namespace ${ns} already exists and is not part of a running lab; remove it ("ip netns delete ${ns}") or run "${cliName()} lab down ${lab.file}"`);
  }
  try {
    for (const h of lab.hosts) {
      const pool = h.config.pool;
      checkPools(pool.ipv6 ? [pool.ipv4.text, pool.ipv6.text] : [pool.ipv4.text], `lab "${name}" host ${h.name}`);
    }
  } catch (e) {
    throw new LabError('ELAB_CONFLICT', (e as Error).message);
  }

  const runDir = multiHostRunDir(name);
  rmSync(runDir, { recursive: true, force: true });
  mkdirSync(runDir, { recursive: true, mode: 0o755 });
  const state: MultiHostState = {
    kind: 'multihost',
    version: 1,
    name,
    file: lab.file,
    startedAt: new Date().toISOString(),
    underlay: lab.underlay,
    underlayNetns: lab.underlayNetns,
    bridgeIp: lab.bridgeIp,
    etcdUrl: lab.etcdUrl,
    namespaces: [],
    hosts: lab.hosts.map((h) => {
      const dir = hostRunDir(name, h.name);
      return {
        name: h.name,
        netns: h.netns,
        ip: h.ip,
        pool: h.config.pool.ipv4.text,
        config: join(runDir, `${h.name}.yaml`),
        socket: join(dir, 'tunswitch.sock'),
        stateDir: join(dir, 'state'),
        log: join(runDir, `${h.name}.log`),
        pid: 0,
        nodes: h.config.nodes.map((n) => ({ name: n.name, netns: `${name}-${n.name}` })),
      };
    }),
  };
  writeMultiHostState(state);

  const addNs = async (ns: string): Promise<void> => {
    await ip(['netns', 'add', ns]);
    state.namespaces.push(ns);
    writeMultiHostState(state);
    await ip(['-n', ns, 'link', 'set', 'dev', 'lo', 'up']);
  };

  try {
    // 2. Underlay and etcd.
    log(`creating the underlay: namespace ${lab.underlayNetns}, bridge ${BRIDGE} ${lab.bridgeIp}/${lab.prefixLen}`);
    await addNs(lab.underlayNetns);
    await ip(['-n', lab.underlayNetns, 'link', 'add', BRIDGE, 'mtu', String(lab.underlayMtu), 'type', 'bridge']);
    await ip(['-n', lab.underlayNetns, 'addr', 'add', `${lab.bridgeIp}/${lab.prefixLen}`, 'dev', BRIDGE]);
    await ip(['-n', lab.underlayNetns, 'link', 'set', BRIDGE, 'up']);
    if (lab.managedEtcd) await startEtcd(lab, state, log);

    // 3. Hosts and endpoint namespaces.
    for (const [i, h] of lab.hosts.entries()) {
      log(`creating host ${h.name}: namespace ${h.netns}, eth0 ${h.ip}/${lab.prefixLen} on the underlay`);
      await addNs(h.netns);
      const leg = `h${i + 1}`;
      await ip(['link', 'add', leg, 'netns', lab.underlayNetns, 'mtu', String(lab.underlayMtu), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.netns, 'mtu', String(lab.underlayMtu)]);
      await ip(['-n', lab.underlayNetns, 'link', 'set', leg, 'master', BRIDGE, 'up']);
      await ip(['-n', h.netns, 'addr', 'add', `${h.ip}/${lab.prefixLen}`, 'dev', 'eth0']);
      await ip(['-n', h.netns, 'link', 'set', 'eth0', 'up']);
      for (const n of h.config.nodes) {
        const ns = `${name}-${n.name}`;
        await addNs(ns);
        await run('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.default.router_solicitations=0', 'net.ipv6.conf.all.router_solicitations=0']);
      }
    }
    if (!lab.managedEtcd) {
      const hostPort = lab.etcdUrl.slice('etcd://'.length);
      if (!(await etcdHealthy((lab.hosts[0] as MultiHostLabFile['hosts'][number]).netns, hostPort))) {
        throw new LabError('ELAB_AGENT', `etcd ${lab.etcdUrl} (etcd.url) does not answer from host ${lab.hosts[0]?.name}'s namespace; it must be reachable over the underlay ${lab.underlay}`);
      }
    }

    // 4. The switches, all at once, then ready and converged.
    const exits = new Map<string, string>();
    for (const [i, h] of lab.hosts.entries()) {
      const hs = state.hosts[i] as MultiHostHostState;
      writeFileSync(hs.config, h.configText, { mode: 0o644 });
      mkdirSync(dirname(hs.socket), { recursive: true, mode: 0o755 });
      log(`starting the switch of ${h.name} (log ${hs.log})`);
      const args = ['netns', 'exec', h.netns, process.execPath, cliMainPath(), '--socket', hs.socket, 'run', '-c', hs.config, '--state-dir', hs.stateDir, '--no-metrics'];
      const fd = openSync(hs.log, 'a', 0o644);
      const child = spawn('ip', args, { detached: true, stdio: ['ignore', fd, fd] });
      closeSync(fd);
      child.on('exit', (code, sig) => exits.set(h.name, sig ? `signal ${sig}` : `exit code ${code}`));
      child.on('error', (e) => exits.set(h.name, e.message));
      if (child.pid === undefined) throw new LabError('ELAB_AGENT', `cannot start the switch of ${h.name}`);
      hs.pid = child.pid; // `ip netns exec` execs node: the same pid
      writeMultiHostState(state);
      child.unref();
    }
    await waitConverged(state, exits, opts.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS);

    // 5. Names: every namespace knows every node of the lab.
    writeMultiHostHosts(state);
    log(`lab "${name}" is up: ${state.hosts.map((h) => `${h.name} (${h.nodes.map((n) => `${n.name} ${n.ipv4 ?? ''}`).join(', ')})`).join('; ')}`);
    return state;
  } catch (e) {
    await multiHostDown(name).catch(() => undefined);
    throw e;
  }
}

async function startEtcd(lab: MultiHostLabFile, state: MultiHostState, log: LabLog): Promise<void> {
  const m = lab.managedEtcd as NonNullable<MultiHostLabFile['managedEtcd']>;
  const bin = await run('sh', ['-c', 'command -v etcd']);
  if (bin.code !== 0 || bin.stdout.trim() === '') throw new LabError('ELAB_AGENT', 'etcd is not installed (Debian: apt-get install etcd-server); or give etcd.url of your own');
  const dataDir = mkdtempSync(join(tmpdir(), `tunswitch-${lab.name}-etcd-`));
  const logFile = join(multiHostRunDir(lab.name), 'etcd.log');
  const client = `http://${lab.bridgeIp}:${m.clientPort}`;
  const peer = `http://127.0.0.1:${m.peerPort}`;
  const member = `${lab.name}-etcd`;
  log(`starting etcd on ${client} (data ${dataDir})`);
  const fd = openSync(logFile, 'a', 0o644);
  const child = spawn(
    'ip',
    ['netns', 'exec', lab.underlayNetns, bin.stdout.trim(), '--name', member, '--data-dir', dataDir, '--listen-client-urls', client, '--advertise-client-urls', client,
      '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `${member}=${peer}`, '--initial-cluster-state', 'new', '--log-level', 'error'],
    { detached: true, stdio: ['ignore', fd, fd] },
  );
  closeSync(fd);
  let exited: string | null = null;
  child.on('exit', (code, sig) => {
    exited = sig ? `signal ${sig}` : `exit code ${code}`;
  });
  state.etcd = { pid: child.pid ?? 0, dataDir, log: logFile };
  writeMultiHostState(state);
  child.unref();
  const deadline = Date.now() + 20_000;
  while (!(await etcdHealthy(lab.underlayNetns, `${lab.bridgeIp}:${m.clientPort}`))) {
    if (exited !== null) throw new LabError('ELAB_AGENT', `etcd stopped (${exited}) before it was healthy; ${logFile}:\n${tail(logFile)}`);
    if (Date.now() > deadline) throw new LabError('ELAB_AGENT', `etcd was not healthy on ${client} after 20 s; ${logFile}:\n${tail(logFile)}`);
    await sleep(200);
  }
}

/** Waits until every switch has its endpoints, every node record and every other host's endpoints. */
async function waitConverged(state: MultiHostState, exits: Map<string, string>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const done = new Set<string>();
  let problem = 'no switch answered yet';
  for (;;) {
    for (const h of state.hosts) {
      const why = exits.get(h.name);
      if (why !== undefined) throw new LabError('ELAB_AGENT', `the switch of ${h.name} stopped (${why}) before it was ready; ${h.log}:\n${tail(h.log)}`);
    }
    for (const h of state.hosts) {
      if (done.has(h.name)) continue;
      if (!existsSync(h.socket)) {
        problem = `${h.name}: the API socket did not appear`;
        continue;
      }
      try {
        const c = new ApiClient(h.socket, { timeoutMs: 5000 });
        const eps = await c.get<EndpointInfo[]>('/v1/endpoint');
        const missing = h.nodes.filter((n) => !eps.some((e) => e.name === n.name && e.state === 'ready')).map((n) => n.name);
        if (missing.length > 0) {
          problem = `${h.name}: endpoints not attached yet: ${missing.join(', ')}`;
          continue;
        }
        for (const n of h.nodes) {
          const e = eps.find((x) => x.name === n.name) as EndpointInfo;
          if (e.ipv4) n.ipv4 = e.ipv4;
          if (e.ipv6) n.ipv6 = e.ipv6;
        }
        const nodes = await c.get<NodeInfo[]>('/v1/nodes');
        const absent = state.hosts.filter((o) => !nodes.some((n) => n.name === o.name)).map((o) => o.name);
        if (absent.length > 0) {
          problem = `${h.name}: does not see host(s) ${absent.join(', ')} in etcd yet`;
          continue;
        }
        done.add(h.name);
      } catch (e) {
        problem = `${h.name}: ${(e as Error).message}`;
      }
    }
    if (done.size === state.hosts.length) {
      // Addresses are known now: every switch must hold the others' endpoints in its ipcache.
      const lagging = await ipcacheLagging(state);
      if (lagging === null) {
        writeMultiHostState(state);
        return;
      }
      problem = lagging;
    }
    if (Date.now() > deadline) {
      const h = state.hosts.find((x) => !done.has(x.name)) ?? (state.hosts[0] as MultiHostHostState);
      throw new LabError('ELAB_AGENT', `the lab was not ready after ${timeoutMs / 1000} s (${problem}); ${h.log}:\n${tail(h.log)}`);
    }
    await sleep(200);
  }
}

/** null when every switch's ipcache holds every other host's endpoint addresses; else what is missing. */
async function ipcacheLagging(state: MultiHostState): Promise<string | null> {
  for (const h of state.hosts) {
    const entries = await new ApiClient(h.socket, { timeoutMs: 5000 }).get<IpcacheInfo[]>('/v1/ipcache');
    const have = new Set(entries.map((e) => e.cidr));
    for (const o of state.hosts) {
      if (o === h) continue;
      for (const n of o.nodes) {
        if (n.ipv4 && !have.has(`${n.ipv4}/32`)) return `${h.name}: ipcache has no ${n.ipv4} (${n.name} on ${o.name}) yet`;
      }
    }
  }
  return null;
}

/** Every namespace of the lab gets a hosts file naming every node (and every host on its underlay address). */
export function writeMultiHostHosts(s: MultiHostState): void {
  const entries: HostEntry[] = [];
  for (const h of s.hosts) {
    for (const n of h.nodes) {
      const e: HostEntry = { name: n.name };
      if (n.ipv4) e.ipv4 = n.ipv4;
      if (n.ipv6) e.ipv6 = n.ipv6;
      entries.push(e);
    }
  }
  for (const h of s.hosts) entries.push({ name: h.name, ipv4: h.ip });
  const text = renderHosts(s.name, entries);
  for (const ns of s.namespaces) {
    const dir = join(NETNS_ETC, ns);
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    writeFileSync(join(dir, 'hosts'), text, { mode: 0o644 });
  }
}

export interface MultiHostDownResult {
  name: string;
  wasRunning: boolean;
  removed: string[];
}

/** Takes a multi-host lab down; never fails because something is already gone. */
export async function multiHostDown(name: string, opts: { log?: LabLog } = {}): Promise<MultiHostDownResult> {
  const log = opts.log ?? ((): void => undefined);
  const s = readMultiHostState(name);
  const removed: string[] = [];
  if (!s) return { name, wasRunning: false, removed };
  const wasRunning = anyAlive(s);
  // Switches first (in parallel): they leave the cluster while etcd is still there.
  await Promise.all(
    s.hosts.map(async (h) => {
      if (h.pid > 0 && ownedAlive(h.pid, h.config)) {
        log(`stopping the switch of ${h.name} (pid ${h.pid})`);
        const how = await terminate(h.pid, STOP_GRACE_MS);
        if (how === 'killed') log(`the switch of ${h.name} did not stop within ${STOP_GRACE_MS / 1000} s; killed it`);
        removed.push(`switch ${h.name} pid ${h.pid}`);
      }
    }),
  );
  if (s.etcd && ownedAlive(s.etcd.pid, s.etcd.dataDir)) {
    log(`stopping etcd (pid ${s.etcd.pid})`);
    await terminate(s.etcd.pid, 5000);
    removed.push(`etcd pid ${s.etcd.pid}`);
  }
  // Whatever still runs inside the lab (servers, lab exec shells) would keep a namespace alive.
  for (const ns of s.namespaces) {
    for (const pid of await netnsPids(ns)) {
      if (pid === process.pid) continue;
      await terminate(pid, 2000);
      removed.push(`process ${pid} in ${ns}`);
    }
  }
  const present = new Set(await listNetns());
  for (const ns of [...s.namespaces].reverse()) {
    if (!present.has(ns)) continue;
    log(`deleting namespace ${ns}`);
    const r = await run('ip', ['netns', 'delete', ns]);
    if (r.code !== 0) log(`ip netns delete ${ns}: ${r.stderr.trim()}`);
    else removed.push(`namespace ${ns}`);
  }
  removeHostsFiles(s.namespaces);
  if (s.etcd && existsSync(s.etcd.dataDir)) {
    rmSync(s.etcd.dataDir, { recursive: true, force: true });
    removed.push(s.etcd.dataDir);
  }
  // Keep the switches' logs where `lab logs <name>-<host>` finds them.
  for (const h of s.hosts) {
    if (existsSync(h.log)) {
      try {
        mkdirSync(LAB_LOG_DIR, { recursive: true });
        copyFileSync(h.log, join(LAB_LOG_DIR, `${name}-${h.name}.log`));
      } catch {
        /* best effort */
      }
    }
    const dir = hostRunDir(name, h.name);
    if (existsSync(dir)) {
      rmSync(dir, { recursive: true, force: true });
      removed.push(dir);
    }
  }
  const runDir = multiHostRunDir(name);
  if (existsSync(runDir)) {
    rmSync(runDir, { recursive: true, force: true });
    removed.push(runDir);
  }
  return { name, wasRunning, removed };
}

export interface MultiHostStatusHost {
  name: string;
  netns: string;
  ip: string;
  pool: string;
  pid: number;
  running: boolean;
  socket: string;
  /** The cluster nodes this switch sees (null: it does not answer). */
  clusterNodes: string[] | null;
  nodes: MultiHostHostState['nodes'];
}

export interface MultiHostStatus {
  name: string;
  kind: 'multihost';
  file: string;
  startedAt: string;
  underlay: string;
  etcd: string;
  etcdRunning: boolean | null;
  hosts: MultiHostStatusHost[];
}

export async function multiHostStatus(): Promise<MultiHostStatus[]> {
  const out: MultiHostStatus[] = [];
  for (const name of listMultiHostNames()) {
    const s = readMultiHostState(name);
    if (!s) continue;
    const hosts: MultiHostStatusHost[] = [];
    for (const h of s.hosts) {
      const running = h.pid > 0 && ownedAlive(h.pid, h.config);
      let clusterNodes: string[] | null = null;
      if (running) {
        try {
          clusterNodes = (await new ApiClient(h.socket, { timeoutMs: 2000 }).get<NodeInfo[]>('/v1/nodes')).map((n) => n.name);
        } catch {
          clusterNodes = null;
        }
      }
      hosts.push({ name: h.name, netns: h.netns, ip: h.ip, pool: h.pool, pid: h.pid, running, socket: h.socket, clusterNodes, nodes: h.nodes });
    }
    out.push({
      name,
      kind: 'multihost',
      file: s.file,
      startedAt: s.startedAt,
      underlay: `${s.underlay} (${s.underlayNetns})`,
      etcd: s.etcdUrl,
      etcdRunning: s.etcd ? ownedAlive(s.etcd.pid, s.etcd.dataDir) : null,
      hosts,
    });
  }
  return out;
}
