/**
 * Where a lab keeps its run-time files, and the record of what `lab up` made, so that
 * `lab down` removes exactly that and `lab status` can list labs without asking anyone.
 *
 *   /run/tunswitch/<name>/
 *     lab.json        LabState below (written by up, updated as steps finish)
 *     agent.pid       the agent's pid (also in lab.json; kept for scripts)
 *     agent.log       the agent's stdout and stderr
 *     tunswitch.sock  the agent's API socket
 *     state/          the agent's --state-dir
 *   /etc/netns/<name>-<node>/hosts   name resolution inside the lab (ip netns exec mounts it)
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pidAlive, pidCmdline } from './sys.js';

import { LAB_RUN_ROOT } from './root.js';

/** Parent of every lab's run directory. */
export { LAB_RUN_ROOT };
/** Where `lab down` keeps a lab's agent.log (the run directory goes): <dir>/<name>.log. */
export const LAB_LOG_DIR = '/var/log/tunswitch';

/** The agent log `lab down` kept for lab `name`. */
export function keptLogPath(name: string): string {
  return join(LAB_LOG_DIR, `${name}.log`);
}

/** `ip netns exec` bind-mounts files from here over /etc. */
export const NETNS_ETC = '/etc/netns';

export interface LabPaths {
  runDir: string;
  stateFile: string;
  pidFile: string;
  log: string;
  socket: string;
  stateDir: string;
}

export function labPaths(name: string): LabPaths {
  const runDir = join(LAB_RUN_ROOT, name);
  return {
    runDir,
    stateFile: join(runDir, 'lab.json'),
    pidFile: join(runDir, 'agent.pid'),
    log: join(runDir, 'agent.log'),
    socket: join(runDir, 'tunswitch.sock'),
    stateDir: join(runDir, 'state'),
  };
}

export interface LabNode {
  name: string;
  netns: string;
  ipv4?: string;
  ipv6?: string;
}

export interface LabOutside {
  /** Namespace of the outside host: `<lab>-outside`. */
  netns: string;
  /** The veth end in the root namespace (`<lab>.out`); its peer is eth0 in `netns`. */
  rootIf: string;
  /** The /24 between them, e.g. 10.99.0.0/24. */
  cidr: string;
  /** Root side address (.1) and the outside host's address (.2). */
  rootAddr: string;
  addr: string;
}

export interface LabState {
  version: 1;
  name: string;
  /** Absolute path of the lab (run config) file. */
  file: string;
  pid: number;
  startedAt: string;
  socket: string;
  log: string;
  stateDir: string;
  /** Namespaces `lab up` created (nodes, and the outside host's). */
  namespaces: string[];
  /** Filled in once the agent reports its endpoints. */
  nodes: LabNode[];
  outside?: LabOutside;
  /** net.ipv4.ip_forward before `lab up` changed it; restored by `lab down`. */
  ipForwardBefore?: string;
  /** The host port's addresses (the pool's first addresses). */
  hostIpv4?: string;
  hostIpv6?: string;
}

export function readLabState(name: string): LabState | null {
  const f = labPaths(name).stateFile;
  if (!existsSync(f)) return null;
  try {
    const v = JSON.parse(readFileSync(f, 'utf8')) as LabState;
    return v && v.version === 1 && v.name === name ? v : null;
  } catch {
    return null;
  }
}

/** Writes lab.json atomically (rename), so a reader never sees half a file. */
export function writeLabState(s: LabState): void {
  const p = labPaths(s.name);
  mkdirSync(p.runDir, { recursive: true, mode: 0o755 });
  const tmp = `${p.stateFile}.tmp`;
  writeFileSync(tmp, JSON.stringify(s, null, 2) + '\n', { mode: 0o644 });
  renameSync(tmp, p.stateFile);
  if (s.pid > 0) writeFileSync(p.pidFile, `${s.pid}\n`);
}

/** Names of the labs with a run directory holding a lab.json. */
export function listLabNames(): string[] {
  if (!existsSync(LAB_RUN_ROOT)) return [];
  return readdirSync(LAB_RUN_ROOT, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(LAB_RUN_ROOT, d.name, 'lab.json')))
    .map((d) => d.name)
    .sort();
}

/**
 * Whether the lab's agent is alive: its pid lives and still runs `... run -c <file>` (a
 * recycled pid that runs something else does not count).
 */
export function agentAlive(s: LabState): boolean {
  if (!pidAlive(s.pid)) return false;
  const argv = pidCmdline(s.pid);
  if (argv === null) return true;
  return argv.includes('run') && argv.includes(s.file);
}
