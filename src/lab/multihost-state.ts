/**
 * The record of a multi-host lab (what `lab up` made, so that `lab down` removes exactly
 * that), at /run/tunswitch/<name>/multihost.json. Each host's switch has its socket at
 * /run/tunswitch/<name>-<host>/tunswitch.sock, so `tunswitch --lab <name>-<host> ...` talks to it.
 *
 *   /run/tunswitch/<name>/
 *     multihost.json   MultiHostState below
 *     <host>.yaml      the host's generated run config
 *     <host>.log       the host's switch log
 *     etcd.log         the lab etcd's log
 *   /run/tunswitch/<name>-<host>/tunswitch.sock, state/
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LAB_RUN_ROOT } from './root.js';
import { pidAlive, pidCmdline } from './sys.js';

export interface MultiHostHostState {
  name: string;
  netns: string;
  ip: string;
  pool: string;
  config: string;
  socket: string;
  stateDir: string;
  log: string;
  /** The switch's pid (0 until started). */
  pid: number;
  nodes: { name: string; netns: string; ipv4?: string; ipv6?: string }[];
}

export interface MultiHostState {
  kind: 'multihost';
  version: 1;
  name: string;
  file: string;
  startedAt: string;
  underlay: string;
  underlayNetns: string;
  bridgeIp: string;
  etcdUrl: string;
  /** The lab etcd (absent: the file named one of its own). */
  etcd?: { pid: number; dataDir: string; log: string };
  /** Every namespace `lab up` made, in order. */
  namespaces: string[];
  hosts: MultiHostHostState[];
}

export function multiHostRunDir(name: string): string {
  return join(LAB_RUN_ROOT, name);
}

export function multiHostStateFile(name: string): string {
  return join(multiHostRunDir(name), 'multihost.json');
}

/** The run directory of host `host`'s switch (socket, state). */
export function hostRunDir(name: string, host: string): string {
  return join(LAB_RUN_ROOT, `${name}-${host}`);
}

export function readMultiHostState(name: string): MultiHostState | null {
  const f = multiHostStateFile(name);
  if (!existsSync(f)) return null;
  try {
    const v = JSON.parse(readFileSync(f, 'utf8')) as MultiHostState;
    return v && v.kind === 'multihost' && v.version === 1 && v.name === name ? v : null;
  } catch {
    return null;
  }
}

export function writeMultiHostState(s: MultiHostState): void {
  mkdirSync(multiHostRunDir(s.name), { recursive: true, mode: 0o755 });
  const f = multiHostStateFile(s.name);
  writeFileSync(`${f}.tmp`, JSON.stringify(s, null, 2) + '\n', { mode: 0o644 });
  renameSync(`${f}.tmp`, f);
}

/** Names of the multi-host labs with a record. */
export function listMultiHostNames(): string[] {
  if (!existsSync(LAB_RUN_ROOT)) return [];
  return readdirSync(LAB_RUN_ROOT, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(LAB_RUN_ROOT, d.name, 'multihost.json')))
    .map((d) => d.name)
    .sort();
}

/** Whether `pid` is alive and still runs a command naming `marker` (a recycled pid does not count). */
export function ownedAlive(pid: number, marker: string): boolean {
  if (!pidAlive(pid)) return false;
  const argv = pidCmdline(pid);
  return argv === null || argv.some((a) => a.includes(marker));
}

/** The namespace of `node` in multi-host lab `name`, or null when the lab or node is unknown. */
export function multiHostNamespace(name: string, node: string): { netns: string } | { known: string[] } | null {
  const s = readMultiHostState(name);
  if (!s) return null;
  for (const h of s.hosts) {
    if (h.name === node) return { netns: h.netns };
    const n = h.nodes.find((x) => x.name === node);
    if (n) return { netns: n.netns };
  }
  return { known: [...s.hosts.map((h) => h.name), ...s.hosts.flatMap((h) => h.nodes.map((n) => n.name))] };
}
