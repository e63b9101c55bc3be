/**
 * Labs: a run config brought to life on this machine, like `containerlab deploy`.
 *
 * labUp(file):
 *   1. parse the file (the same YAML `tunswitch run -c` reads); refuse if a lab of that name
 *      runs; clean up after a lab of that name whose agent died
 *   2. refuse if a namespace `<name>-<node>` or the host port `<name>.h` already exists
 *   3. make a namespace per node (lo up), and the outside host if asked (src/lab/outside.ts)
 *   4. start the agent in the background (`tunswitch run`, detached, its own session), logs
 *      to /run/tunswitch/<name>/agent.log; it attaches every node
 *   5. wait until GET /v1/status answers and every node is a ready endpoint
 *   6. write /etc/netns/<ns>/hosts with the addresses the agent gave
 * Every step records what it made in /run/tunswitch/<name>/lab.json before the next one, so a
 * failure part-way, or a later labDown, removes exactly what was made.
 *
 * labDown(name|file): SIGTERM the agent (it removes its devices), SIGKILL after 10 s; stop
 * the processes left in the lab's namespaces; delete the namespaces, hosts files, the outside
 * veth and the run directory; restore net.ipv4.ip_forward.
 */
import { cliName } from '../text/hint.js';
import { checkPools } from '../runtime/pools.js';
import { spawn } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, openSync, readFileSync, rmSync, statSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { ApiClient } from '../api/client.js';
import type { EndpointInfo } from '../api/types.js';
import { loadRunConfig, type RunConfig } from '../runtime/config.js';
import { Ipam } from '../control/ipam.js';
import { removeHostsFiles, writeHostsFiles } from './hosts.js';
import { multiHostNamespace } from './multihost-state.js';
import { createOutside, outsidePlan, removeOutside, DEFAULT_OUTSIDE_CIDR } from './outside.js';
import { agentAlive, keptLogPath, labPaths, listLabNames, readLabState, writeLabState, type LabState } from './state.js';
import { LabError, ip, listNetns, netnsPids, readIpForward, rootLinkExists, run, sleep, terminate, writeIpForward } from './sys.js';

/** Progress lines ("creating namespace demo-web"); the CLI prints them, tests may not. */
export type LabLog = (msg: string) => void;

export interface LabUpOptions {
  /** Make the outside host; a string picks its /24 (default 10.99.0.0/24). */
  outside?: boolean | string;
  /** Prometheus address for the agent, or null (default) for none. */
  metricsAddr?: string | null;
  /** How long to wait for the agent to attach every node; default 30 s. */
  readyTimeoutMs?: number;
  log?: LabLog;
}

/** How long the agent gets to remove its devices after SIGTERM. */
const AGENT_STOP_GRACE_MS = 10_000;
const DEFAULT_READY_TIMEOUT_MS = 30_000;
const LAB_NAME_RE = /^[a-z0-9][a-z0-9-]{0,9}$/;

/** dist/src/lab/lab.js -> dist/src/cli/main.js */
export function cliMainPath(): string {
  return fileURLToPath(new URL('../cli/main.js', import.meta.url));
}

function tail(file: string, lines = 8): string {
  try {
    const all = readFileSync(file, 'utf8').trimEnd().split('\n');
    return all.slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

function hostAddresses(cfg: RunConfig): { ipv4: string; ipv6?: string } {
  const ipam = new Ipam(cfg.pool.ipv4, cfg.pool.ipv6);
  const h6 = ipam.hostAddress6();
  return h6 ? { ipv4: ipam.hostAddress4(), ipv6: h6 } : { ipv4: ipam.hostAddress4() };
}

/** Brings a lab up (see the top of this file); resolves with its record once every node is ready. */
export async function labUp(file: string, opts: LabUpOptions = {}): Promise<LabState> {
  const log = opts.log ?? ((): void => undefined);
  const cfg = loadRunConfig(file);
  const name = cfg.name;
  const paths = labPaths(name);

  // 1. A running lab of this name wins; a dead one is cleaned up.
  const old = readLabState(name);
  if (old && agentAlive(old)) {
    throw new LabError('ELAB_RUNNING', `lab "${name}" is already running (agent pid ${old.pid}, socket ${old.socket}); run "${cliName()} lab down ${name}" first`);
  }
  if (old) {
    log(`lab "${name}": the agent (pid ${old.pid}) is gone; removing what it left`);
    await labDown(name, { log });
  }

  // 2. Nothing of ours may exist already.
  const wantNs = cfg.nodes.map((n) => `${name}-${n.name}`);
  const outside = opts.outside ? outsidePlan(name, typeof opts.outside === 'string' ? opts.outside : DEFAULT_OUTSIDE_CIDR) : undefined;
  if (outside && cfg.nodes.some((n) => n.name === 'outside')) {
    throw new LabError('ELAB_INVALID', `${cfg.file}: node "outside" clashes with the outside host's namespace ${outside.netns}; rename the node or drop --outside`);
  }
  const present = new Set(await listNetns());
  for (const ns of outside ? [...wantNs, outside.netns] : wantNs) {
    if (present.has(ns)) throw new LabError('ELAB_CONFLICT', `namespace ${ns} already exists and is not part of a running lab; remove it ("ip netns delete ${ns}") or run "${cliName()} lab down ${cfg.file}"`);
  }
  if (cfg.hostPort && (await rootLinkExists(`${name}.h`))) {
    throw new LabError('ELAB_CONFLICT', `device ${name}.h already exists: another "tunswitch run" with name "${name}" is running outside "lab up"`);
  }

  // Pool safety: refuse before anything is made if another switch, lab or Docker network
  // (or any host route) uses the pool; the agent claims it for real when it starts.
  try {
    checkPools(cfg.pool.ipv6 ? [cfg.pool.ipv4.text, cfg.pool.ipv6.text] : [cfg.pool.ipv4.text], `lab "${name}"`);
  } catch (e) {
    throw new LabError('ELAB_CONFLICT', (e as Error).message);
  }

  rmSync(paths.runDir, { recursive: true, force: true });
  mkdirSync(paths.runDir, { recursive: true, mode: 0o755 });
  const h = hostAddresses(cfg);
  const state: LabState = {
    version: 1,
    name,
    file: cfg.file,
    pid: 0,
    startedAt: new Date().toISOString(),
    socket: paths.socket,
    log: paths.log,
    stateDir: paths.stateDir,
    namespaces: [],
    nodes: [],
    hostIpv4: h.ipv4,
  };
  if (h.ipv6) state.hostIpv6 = h.ipv6;
  writeLabState(state);

  try {
    // 3. Namespaces, then the outside host.
    for (const ns of wantNs) {
      log(`creating namespace ${ns}`);
      await ip(['netns', 'add', ns]);
      state.namespaces.push(ns);
      writeLabState(state);
      await ip(['-n', ns, 'link', 'set', 'dev', 'lo', 'up']);
      // A TUN has no router to find: without this the kernel's router solicitations from the
      // link-local address show up as drops ("Invalid source ip") in every observe session.
      await run('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.default.router_solicitations=0', 'net.ipv6.conf.all.router_solicitations=0']);
    }
    if (outside) {
      log(`creating the outside host: namespace ${outside.netns} at ${outside.addr}, veth ${outside.rootIf} ${outside.rootAddr} in the root namespace`);
      await createOutside(outside, cfg.pool.ipv4.text);
      state.outside = outside;
      state.namespaces.push(outside.netns);
      const before = readIpForward();
      if (before !== '1') {
        state.ipForwardBefore = before;
        writeIpForward('1');
        log('net.ipv4.ip_forward=1 (restored by lab down)');
      }
      writeLabState(state);
    }

    // 4. The agent, in its own session so that it outlives this process.
    log(`starting the agent (log ${paths.log})`);
    const args = [cliMainPath(), '--socket', paths.socket, 'run', '-c', cfg.file, '--state-dir', paths.stateDir];
    if (opts.metricsAddr) args.push('--metrics-addr', opts.metricsAddr);
    else args.push('--no-metrics');
    const fd = openSync(paths.log, 'a', 0o644);
    const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', fd, fd] });
    closeSync(fd);
    let exited: string | null = null;
    child.on('exit', (code, sig) => {
      exited = sig ? `signal ${sig}` : `exit code ${code}`;
    });
    child.on('error', (e) => {
      exited = e.message;
    });
    if (child.pid === undefined) throw new LabError('ELAB_AGENT', `cannot start ${process.execPath} ${args.join(' ')}`);
    state.pid = child.pid;
    writeLabState(state);
    child.unref();

    // 5. Ready: the API answers and every node is an endpoint.
    const client = new ApiClient(paths.socket, { timeoutMs: 5000 });
    const deadline = Date.now() + (opts.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS);
    let eps: EndpointInfo[] = [];
    let lastProblem = 'the API socket did not appear';
    for (;;) {
      if (exited !== null) throw new LabError('ELAB_AGENT', `the agent stopped (${exited}) before it was ready; ${paths.log}:\n${tail(paths.log)}`);
      if (existsSync(paths.socket)) {
        try {
          await client.get('/v1/status');
          eps = await client.get<EndpointInfo[]>('/v1/endpoint');
          const missing = cfg.nodes.filter((n) => !eps.some((e) => e.name === n.name && e.state === 'ready')).map((n) => n.name);
          if (missing.length === 0) break;
          lastProblem = `nodes not attached yet: ${missing.join(', ')}`;
        } catch (e) {
          lastProblem = (e as Error).message;
        }
      }
      if (Date.now() > deadline) {
        throw new LabError('ELAB_AGENT', `the agent was not ready after ${(opts.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS) / 1000} s (${lastProblem}); ${paths.log}:\n${tail(paths.log)}`);
      }
      await sleep(100);
    }

    // 6. Names.
    state.nodes = cfg.nodes.map((n) => {
      const e = eps.find((x) => x.name === n.name) as EndpointInfo;
      const node: LabState['nodes'][number] = { name: n.name, netns: `${name}-${n.name}` };
      if (e.ipv4) node.ipv4 = e.ipv4;
      if (e.ipv6) node.ipv6 = e.ipv6;
      return node;
    });
    writeLabState(state);
    writeHostsFiles(state);
    log(`lab "${name}" is up: ${state.nodes.map((n) => `${n.name} ${n.ipv4 ?? ''}${n.ipv6 ? ` ${n.ipv6}` : ''}`).join(', ')}`);
    return state;
  } catch (e) {
    await labDown(name).catch(() => undefined);
    throw e;
  }
}

export interface LabDownResult {
  name: string;
  /** The agent was alive when down started. */
  wasRunning: boolean;
  /** Something was removed (a dead lab's leftovers count). */
  removed: string[];
}

/** Resolves a `name|file` argument to the lab name (and the config, when a file was given). */
export function resolveLabArg(target: string): { name: string; cfg?: RunConfig } {
  const looksLikeFile = target.includes('/') || /\.(ya?ml|json)$/.test(target);
  if (looksLikeFile || (existsSync(target) && statSync(target).isFile())) {
    const cfg = loadRunConfig(target);
    return { name: cfg.name, cfg };
  }
  if (!LAB_NAME_RE.test(target)) throw new LabError('ELAB_INVALID', `"${target}" is neither a lab name (1-10 of a-z, 0-9, "-") nor a lab file`);
  return { name: target };
}

/** Takes a lab down; removes leftovers of a dead one. Never fails because something is already gone. */
export async function labDown(target: string, opts: { log?: LabLog } = {}): Promise<LabDownResult> {
  const log = opts.log ?? ((): void => undefined);
  const { name } = resolveLabArg(target);
  const paths = labPaths(name);
  const s = readLabState(name);
  const removed: string[] = [];
  let wasRunning = false;
  // Only what lab up recorded: a namespace someone made by hand for "tunswitch run" is not ours.
  const namespaces = new Set(s?.namespaces ?? []);

  if (s && s.pid > 0) {
    wasRunning = agentAlive(s);
    if (wasRunning) {
      log(`stopping the agent (pid ${s.pid})`);
      const how = await terminate(s.pid, AGENT_STOP_GRACE_MS);
      if (how === 'killed') log(`the agent did not stop within ${AGENT_STOP_GRACE_MS / 1000} s; killed it`);
      removed.push(`agent pid ${s.pid}`);
    }
  }
  // Whatever still runs inside the lab (servers, `lab exec` shells) would keep the namespace alive.
  for (const ns of namespaces) {
    for (const pid of await netnsPids(ns)) {
      if (pid === process.pid) continue;
      await terminate(pid, 2000);
      removed.push(`process ${pid} in ${ns}`);
    }
  }
  if (s?.outside) {
    await removeOutside(s.outside);
    removed.push(`veth ${s.outside.rootIf}`);
  }
  const present = new Set(await listNetns());
  for (const ns of namespaces) {
    if (!present.has(ns)) continue;
    log(`deleting namespace ${ns}`);
    const r = await run('ip', ['netns', 'delete', ns]);
    if (r.code !== 0) log(`ip netns delete ${ns}: ${r.stderr.trim()}`);
    else removed.push(`namespace ${ns}`);
  }
  removeHostsFiles([...namespaces]);
  if (s && (await rootLinkExists(`${name}.h`)) && !agentAlive(s)) {
    // The agent was killed before it could close its host port (a TUN normally goes with its fd).
    await run('ip', ['link', 'del', 'dev', `${name}.h`]);
    removed.push(`device ${name}.h`);
  }
  if (s?.ipForwardBefore !== undefined) {
    const others = listLabNames().filter((n) => n !== name).map(readLabState).some((o) => o !== null && o.outside !== undefined && agentAlive(o));
    if (!others) {
      writeIpForward(s.ipForwardBefore);
      log(`net.ipv4.ip_forward=${s.ipForwardBefore} (as before lab up)`);
    }
  }
  if (existsSync(paths.log)) {
    // The troubleshooting text points at the agent's log: keep it where `lab logs` finds it.
    const kept = keptLogPath(name);
    try {
      mkdirSync(dirname(kept), { recursive: true });
      copyFileSync(paths.log, kept);
      log(`kept the agent's log in ${kept} ("${cliName()} lab logs ${name}")`);
    } catch (e) {
      log(`could not keep the agent's log in ${kept}: ${(e as Error).message}`);
    }
  }
  if (existsSync(paths.runDir)) {
    rmSync(paths.runDir, { recursive: true, force: true });
    removed.push(paths.runDir);
  }
  return { name, wasRunning, removed };
}

export interface LabStatus {
  name: string;
  pid: number;
  running: boolean;
  /** Endpoints the agent lists; null when it does not answer. */
  endpoints: number | null;
  socket: string;
  file: string;
  log: string;
  nodes: LabState['nodes'];
  outside?: string;
  startedAt: string;
}

/** Every lab with a run directory, running or not. */
export async function labStatus(): Promise<LabStatus[]> {
  const out: LabStatus[] = [];
  for (const name of listLabNames()) {
    const s = readLabState(name);
    if (!s) continue;
    const running = agentAlive(s);
    let endpoints: number | null = null;
    if (running) {
      try {
        endpoints = (await new ApiClient(s.socket, { timeoutMs: 2000 }).get<unknown[]>('/v1/endpoint')).length;
      } catch {
        endpoints = null;
      }
    }
    const st: LabStatus = { name, pid: s.pid, running, endpoints, socket: s.socket, file: s.file, log: s.log, nodes: s.nodes, startedAt: s.startedAt };
    if (s.outside) st.outside = `${s.outside.netns} ${s.outside.addr}`;
    out.push(st);
  }
  return out;
}

/** The namespace of `node` in lab `name`, checked against the lab's record. */
export function labNamespace(name: string, node: string): string {
  const s = readLabState(name);
  const multi = s ? null : multiHostNamespace(name, node); // a multi-host lab (src/lab/multihost.ts)
  if (multi && 'netns' in multi) return multi.netns;
  if (multi) throw new LabError('ELAB_INVALID', `lab "${name}" has no node or host "${node}" (${multi.known.join(', ')})`);
  if (!s) throw new LabError('ELAB_NOT_RUNNING', `lab "${name}" is not running (no ${labPaths(name).stateFile})`);
  const ns = `${name}-${node}`;
  if (!s.namespaces.includes(ns)) {
    const known = s.namespaces.map((n) => n.slice(name.length + 1));
    throw new LabError('ELAB_INVALID', `lab "${name}" has no node "${node}" (nodes: ${known.join(', ')})`);
  }
  return ns;
}

/**
 * Runs `argv` inside a lab node's namespace with this process's stdio; resolves with its exit
 * code (128 + signal number when a signal ended it, as shells do).
 */
export function labExec(name: string, node: string, argv: readonly string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    let ns: string;
    try {
      ns = labNamespace(name, node);
    } catch (e) {
      reject(e as Error);
      return;
    }
    if (argv.length === 0) {
      reject(new LabError('ELAB_INVALID', 'lab exec: no command given'));
      return;
    }
    const child = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: 'inherit' });
    const ignore = (): void => undefined; // Ctrl-C reaches the child (same process group); we wait for it
    process.on('SIGINT', ignore);
    child.on('error', (e) => {
      process.off('SIGINT', ignore);
      reject(new LabError('ELAB_COMMAND', `ip netns exec ${ns}: ${e.message}`));
    });
    child.on('exit', (code, sig) => {
      process.off('SIGINT', ignore);
      if (sig) {
        resolve(128 + (constants.signals[sig] ?? 0));
      } else {
        resolve(code ?? 1);
      }
    });
  });
}
