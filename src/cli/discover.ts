/**
 * Which switch a command talks to, in this order:
 *   1. `--socket PATH`
 *   2. `--lab NAME`: /run/tunswitch/NAME/tunswitch.sock (an unknown lab is an error that lists
 *      the labs there are, with "did you mean")
 *   3. TUNSWITCH_SOCKET (an empty value counts as unset)
 *   4. the only switch running: the default socket /run/tunswitch/tunswitch.sock or a lab's
 *      /run/tunswitch/<lab>/tunswitch.sock whose socket file exists; with none the default
 *      socket (whose error says nobody listens), with several an error listing them.
 * Synchronous and cheap (a few stat calls), so every command can call it.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { didYouMean } from './suggest.js';
import { UsageError } from '../proto/errors.js';

export const SOCKET_NAME = 'tunswitch.sock';
/** A lab's state file in its run directory (src/lab/state.ts writes it). */
export const LAB_STATE_FILE = 'lab.json';

export interface DiscoverInput {
  /** --socket, when given on the command line. */
  socket?: string | undefined;
  /** --lab, when given. */
  lab?: string | undefined;
  /** The TUNSWITCH_SOCKET value. */
  env?: string | undefined;
  /** /run/tunswitch (tests pass a temporary folder). */
  root: string;
}

export interface RunningSwitch {
  /** The lab name, or null for the default socket. */
  lab: string | null;
  socket: string;
}


function isSocket(p: string): boolean {
  try {
    return statSync(p).isSocket();
  } catch {
    return false;
  }
}

/** Switches whose socket file exists under `root`: the default one first, then labs by name. */
export function runningSwitches(root: string): RunningSwitch[] {
  const out: RunningSwitch[] = [];
  const def = join(root, SOCKET_NAME);
  if (isSocket(def)) out.push({ lab: null, socket: def });
  if (!existsSync(root)) return out;
  let names: string[] = [];
  try {
    names = readdirSync(root, { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => d.name)
      .sort();
  } catch {
    return out;
  }
  for (const n of names) {
    const s = join(root, n, SOCKET_NAME);
    if (isSocket(s)) out.push({ lab: n, socket: s });
  }
  return out;
}

/** True when root/name is a lab's run directory (its state file or socket), not another tunswitch directory such as the pool registry. */
function isLabDir(root: string, name: string): boolean {
  return existsSync(join(root, name, LAB_STATE_FILE)) || isSocket(join(root, name, SOCKET_NAME));
}

/** Lab names with a run directory under root (running or not). */
function labNames(root: string): string[] {
  try {
    return readdirSync(root, { withFileTypes: true })
      .filter((d) => d.isDirectory() && isLabDir(root, d.name))
      .map((d) => d.name);
  } catch {
    return [];
  }
}

export function describeSwitch(s: RunningSwitch): string {
  return s.lab === null ? `the default switch (--socket ${s.socket})` : `lab "${s.lab}" (--lab ${s.lab})`;
}

/** The socket to use; throws UsageError (exit 2) for an unknown lab or several running switches. */
export function discoverSocket(i: DiscoverInput): string {
  if (i.socket !== undefined && i.socket !== '') return i.socket;
  if (i.lab !== undefined && i.lab !== '') {
    const s = join(i.root, i.lab, SOCKET_NAME);
    if (isLabDir(i.root, i.lab)) return s;
    const known = labNames(i.root);
    const list = known.length > 0 ? `; labs: ${known.sort().join(', ')}` : '; no labs are running ("tunswitch lab status")';
    throw new UsageError(`--lab ${i.lab}: no such lab${didYouMean(i.lab, known)}${list}`);
  }
  if (i.env !== undefined && i.env !== '') return i.env;
  const running = runningSwitches(i.root);
  if (running.length === 1) return (running[0] as RunningSwitch).socket;
  if (running.length > 1) {
    throw new UsageError(`${running.length} switches are running; pick one: ${running.map(describeSwitch).join(', ')}`);
  }
  return join(i.root, SOCKET_NAME);
}
