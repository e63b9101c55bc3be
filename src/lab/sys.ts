/**
 * The lab's few system calls: child processes (iproute2, the agent), process liveness and
 * sysctl files. Everything the lab changes on the machine goes through here, so the list of
 * side effects is short and readable.
 */
import { runCommand } from '../io/exec.js';
import { oneLine } from '../text/oneline.js';
import { readFileSync, writeFileSync } from 'node:fs';
import { TunswitchError } from '../proto/errors.js';

/** Lab error codes (in the one table, src/proto/errors.ts). */
export type LabErrorCode = 'ELAB_RUNNING' | 'ELAB_NOT_RUNNING' | 'ELAB_CONFLICT' | 'ELAB_AGENT' | 'ELAB_COMMAND' | 'ELAB_INVALID';

export class LabError extends TunswitchError {
  constructor(code: LabErrorCode, message: string) {
    super(code, message);
    this.name = 'LabError';
  }
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Per command; an `ip` invocation takes milliseconds, a hung one is a bug worth an error. */
const COMMAND_TIMEOUT_MS = 15_000;

/** Runs a command without a shell; never rejects because of the exit code. */
export async function run(cmd: string, args: readonly string[], timeoutMs = COMMAND_TIMEOUT_MS): Promise<RunResult> {
  const r = await runCommand(cmd, args, timeoutMs);
  return { code: r.code, stdout: r.stdout, stderr: r.stderr };
}

/** Runs `ip ARGS` and returns stdout; a non-zero exit is an ELAB_COMMAND error naming the command. */
export async function ip(args: readonly string[]): Promise<string> {
  const r = await run('ip', args);
  if (r.code !== 0) throw new LabError('ELAB_COMMAND', `ip ${args.join(' ')}: ${oneLine(r.stderr) || `exit ${r.code}`}`);
  return r.stdout;
}

/** The names `ip netns list` shows. */
export async function listNetns(): Promise<string[]> {
  const out = await ip(['netns', 'list']);
  return out
    .split('\n')
    .map((l) => l.split(' ', 1)[0] as string)
    .filter((n) => n !== '');
}

/** Whether a device of that name exists in the root namespace. */
export async function rootLinkExists(name: string): Promise<boolean> {
  const r = await run('ip', ['-o', 'link', 'show', 'dev', name]);
  return r.code === 0;
}

/** Process ids inside a named namespace (`ip netns pids`); [] if none or no namespace. */
export async function netnsPids(ns: string): Promise<number[]> {
  const r = await run('ip', ['netns', 'pids', ns]);
  if (r.code !== 0) return [];
  return r.stdout
    .split(/\s+/)
    .filter((s) => /^\d+$/.test(s))
    .map(Number);
}

/** Whether `pid` is alive (a zombie counts as dead). */
export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return true;
  }
}

/** The command line of a process (NUL-separated in /proc), or null. */
export function pidCmdline(pid: number): string[] | null {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((s) => s !== '');
  } catch {
    return null;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Sends `sig` if the process lives; true if it was alive. */
export function signal(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

/** SIGTERM, wait up to `graceMs`, then SIGKILL and wait a little more. Returns how it ended. */
export async function terminate(pid: number, graceMs: number): Promise<'exited' | 'killed' | 'gone'> {
  if (!pidAlive(pid)) return 'gone';
  signal(pid, 'SIGTERM');
  const until = Date.now() + graceMs;
  while (Date.now() < until) {
    if (!pidAlive(pid)) return 'exited';
    await sleep(50);
  }
  signal(pid, 'SIGKILL');
  for (let i = 0; i < 40 && pidAlive(pid); i++) await sleep(50);
  return 'killed';
}

const IP_FORWARD = '/proc/sys/net/ipv4/ip_forward';

export function readIpForward(): string {
  return readFileSync(IP_FORWARD, 'utf8').trim();
}

export function writeIpForward(v: string): void {
  writeFileSync(IP_FORWARD, `${v}\n`);
}
