/**
 * Processes and cleanup for the end-to-end benchmark.
 *
 * Everything the benchmark creates on the machine (namespaces, veth pairs, an OVS bridge and
 * its two daemons, the C forwarder, the agent, iperf3 and trafgen) is registered here the
 * moment it exists, and `Cleanup.run()` removes it in reverse order. The same list is
 * replayed synchronously on process exit and on SIGINT/SIGTERM, so a failed or interrupted
 * run leaves nothing behind.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';

export interface RunResult {
  code: number;
  signal: string | null;
  stdout: string;
  stderr: string;
}

/** Runs a program to completion without a shell; never rejects (timeout: SIGKILL). */
export function sh(file: string, args: readonly string[], timeoutMs = 20_000): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(file, [...args], { timeout: timeoutMs, killSignal: 'SIGKILL', encoding: 'utf8', maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: number | string; signal?: string }) | null;
      let code = 0;
      if (e) code = typeof e.code === 'number' ? e.code : -1;
      resolve({ code, signal: e?.signal ?? null, stdout, stderr: e && typeof e.code === 'string' ? `${e.message}\n${stderr}` : stderr });
    });
  });
}

/** Like sh, but a non-zero exit rejects with one line naming the command. */
export async function must(file: string, args: readonly string[], timeoutMs = 20_000): Promise<string> {
  const r = await sh(file, args, timeoutMs);
  if (r.code !== 0) {
    const why = (r.stderr || r.stdout).replace(/\s*\n\s*/g, ' ').trim() || `exit ${r.code}${r.signal ? ` (${r.signal})` : ''}`;
    throw new Error(`${file} ${args.join(' ')}: ${why}`);
  }
  return r.stdout;
}

/** Runs a program inside a named namespace. */
export function nsRun(ns: string, args: readonly string[], timeoutMs = 20_000): Promise<RunResult> {
  return sh('ip', ['netns', 'exec', ns, ...args], timeoutMs);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A long-running child; `done` resolves when it exits (never rejects). */
export interface Background {
  readonly child: ChildProcess;
  readonly done: Promise<RunResult>;
  /** What it printed so far. */
  output(): { stdout: string; stderr: string };
  /** Sends `sig`, waits up to `graceMs`, then SIGKILL; resolves with its result. */
  stop(sig?: NodeJS.Signals, graceMs?: number): Promise<RunResult>;
}

interface CleanupStep {
  label: string;
  async: () => Promise<unknown>;
  sync: () => void;
}

/**
 * The undo list. `add` registers a step (an async form for the normal path and a sync form
 * for process exit); `run` performs them newest first and never throws.
 */
export class Cleanup {
  private readonly steps: CleanupStep[] = [];
  private hooked = false;
  private readonly onExit = (): void => this.runSync();
  private readonly onSignal = (sig: NodeJS.Signals): void => {
    process.stderr.write(`\n${sig}: cleaning up benchmark namespaces and processes\n`);
    this.runSync();
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };

  /** Installs exit and signal handlers (once). */
  hook(): void {
    if (this.hooked) return;
    this.hooked = true;
    process.on('exit', this.onExit);
    process.on('SIGINT', this.onSignal);
    process.on('SIGTERM', this.onSignal);
  }

  unhook(): void {
    if (!this.hooked) return;
    this.hooked = false;
    process.off('exit', this.onExit);
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
  }

  add(label: string, asyncStep: () => Promise<unknown>, syncStep: () => void): () => void {
    const step: CleanupStep = { label, async: asyncStep, sync: syncStep };
    this.steps.push(step);
    return () => {
      const i = this.steps.indexOf(step);
      if (i >= 0) this.steps.splice(i, 1);
    };
  }

  /** A namespace: `ip netns delete` (which also removes the devices inside it). */
  netns(name: string): void {
    this.add(
      `netns ${name}`,
      () => sh('ip', ['netns', 'delete', name]),
      () => quiet('ip', ['netns', 'delete', name]),
    );
  }

  /** A device in the root namespace. */
  link(name: string): void {
    this.add(
      `link ${name}`,
      () => sh('ip', ['link', 'delete', name]),
      () => quiet('ip', ['link', 'delete', name]),
    );
  }

  /**
   * Starts a child (stdin ignored, output collected) and registers its termination. With
   * `group`, the child leads a process group of its own and every signal goes to the whole
   * group: trafgen forks a worker per CPU that outlives a parent killed alone (and when the
   * bench runs as a background job, SIGINT is ignored and inherited, so only SIGTERM/SIGKILL
   * stop it).
   */
  spawn(file: string, args: readonly string[], env?: NodeJS.ProcessEnv, opts: { group?: boolean } = {}): Background {
    const group = opts.group === true;
    const child = spawn(file, [...args], { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env, detached: group });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      stdout = (stdout + s).slice(-(1 << 20));
    });
    child.stderr!.setEncoding('utf8').on('data', (s: string) => {
      stderr = (stderr + s).slice(-(1 << 20));
    });
    const done = new Promise<RunResult>((resolve) => {
      child.on('error', (e) => resolve({ code: -1, signal: null, stdout, stderr: stderr + e.message }));
      child.on('exit', (code, signal) => resolve({ code: code ?? -1, signal, stdout, stderr }));
    });
    const alive = (): boolean => child.exitCode === null && child.signalCode === null;
    const signal = (sig: NodeJS.Signals): void => {
      if (group && child.pid !== undefined) {
        try {
          process.kill(-child.pid, sig);
        } catch {
          /* the group is gone */
        }
      } else if (alive()) child.kill(sig);
    };
    const stop = async (sig: NodeJS.Signals = 'SIGTERM', graceMs = 5_000): Promise<RunResult> => {
      if (alive()) signal(sig);
      const r = await Promise.race([done, sleep(graceMs).then(() => null)]);
      if (r === null) signal('SIGKILL');
      const res = await done;
      if (group) signal('SIGKILL'); // workers that outlived their parent
      return res;
    };
    const remove = this.add(
      `process ${file} ${args.slice(0, 4).join(' ')}`,
      () => stop(),
      () => signal('SIGKILL'),
    );
    void done.then(() => {
      if (!group) remove();
    });
    return { child, done, output: () => ({ stdout, stderr }), stop };
  }

  async run(): Promise<void> {
    while (this.steps.length > 0) {
      const s = this.steps.pop() as CleanupStep;
      try {
        await s.async();
      } catch {
        /* best effort: the next step still runs */
      }
    }
  }

  runSync(): void {
    while (this.steps.length > 0) {
      const s = this.steps.pop() as CleanupStep;
      try {
        s.sync();
      } catch {
        /* best effort */
      }
    }
  }
}

function quiet(file: string, args: readonly string[]): void {
  try {
    execFileSync(file, [...args], { stdio: 'ignore', timeout: 10_000 });
  } catch {
    /* not there */
  }
}

/** Whether `tool` is on PATH. */
export async function haveTool(tool: string): Promise<boolean> {
  const r = await sh('sh', ['-c', `command -v ${tool}`]);
  return r.code === 0;
}

/** Polls until something listens on TCP `port` in namespace `ns`. */
export async function waitTcpListen(ns: string, port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await nsRun(ns, ['ss', '-ltnH', `sport = :${port}`]);
    if (r.code === 0 && r.stdout.trim() !== '') return;
    if (Date.now() > deadline) throw new Error(`nothing listens on TCP ${port} in ${ns} after ${timeoutMs} ms`);
    await sleep(50);
  }
}
