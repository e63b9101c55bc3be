/**
 * Helpers for the end-to-end tests of `tunswitch run`: a lab of real network namespaces, the
 * agent as a child process (the same CLI a user runs), commands inside namespaces, and
 * cleanup that runs even when a test fails or the test process dies.
 *
 * Paths come from import.meta.url, so the compiled helpers work from `dist/` and from any
 * `dist-*` outDir: <outDir>/test/e2e/helpers.js -> <outDir>/src/cli/main.js.
 *
 * Every address used lies in 10.77.0.0/24 and fd00:77::/64, and every lab name starts with
 * "e2e". Namespaces are `<lab>-<node>`, the agent's devices `<lab>.h` and `<lab>.<port>`.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
/** <outDir>/src/cli/main.js */
export const CLI_MAIN = join(here, '..', '..', 'src', 'cli', 'main.js');

export const POOL4 = '10.77.0.0/24';
export const POOL6 = 'fd00:77::/64';
/** Addresses the agent hands out in node order: .2, .3, ... (the host port has .1). */
export const addr4 = (i: number): string => `10.77.0.${i + 2}`;
export const addr6 = (i: number): string => `fd00:77::${(i + 2).toString(16)}`;

export interface RunResult {
  code: number;
  signal: string | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs a program to completion (never rejects); `timeoutMs` kills it with SIGKILL. */
export function sh(file: string, args: readonly string[], timeoutMs = 20_000): Promise<RunResult> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    execFile(file, [...args], { timeout: timeoutMs, killSignal: 'SIGKILL', encoding: 'utf8', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: number | string; signal?: string }) | null;
      let code = 0;
      if (e) code = typeof e.code === 'number' ? e.code : -1;
      resolve({ code, signal: e?.signal ?? null, stdout, stderr: e && typeof e.code === 'string' ? `${e.message}\n${stderr}` : stderr, ms: Date.now() - t0 });
    });
  });
}

/** Runs a program inside namespace `ns` (`ip netns exec`). */
export function nsRun(ns: string, args: readonly string[], timeoutMs = 20_000): Promise<RunResult> {
  return sh('ip', ['netns', 'exec', ns, ...args], timeoutMs);
}

/** Fails (never skips) unless we are root with the TUN binding, /dev/net/tun and the tools. */
export async function requireE2e(): Promise<void> {
  const uid = process.getuid ? process.getuid() : -1;
  assert.equal(uid, 0, `got uid ${uid}, want 0: the e2e tests need root (namespaces, TUN)`);
  const { loadBinding } = await import('../../src/io/native.js');
  assert.doesNotThrow(() => loadBinding(), 'the native TUN binding must be built (npm ci runs node-gyp)');
  for (const tool of ['ip', 'ping', 'nc', 'socat', 'iperf3', 'ss']) {
    const r = await sh('sh', ['-c', `command -v ${tool}`]);
    assert.equal(r.code, 0, `got no "${tool}" on PATH, want it installed (e2e tests use real clients)`);
  }
  const r = await sh('sh', ['-c', 'test -c /dev/net/tun']);
  assert.equal(r.code, 0, 'got no /dev/net/tun, want the TUN device node');
}

/** sha256 of a file, hex. */
export function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(path)
      .on('data', (b) => h.update(b))
      .on('error', reject)
      .on('end', () => resolve(h.digest('hex')));
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface NodeSpec {
  name: string;
  labels: Record<string, string>;
  /** Kubernetes namespace (declared in LabOptions.namespaces). */
  namespace?: string;
  ports?: { name: string; port: number; protocol: string }[];
  /** The node's own offload (absent: the lab's). */
  offload?: boolean;
}

export interface LabOptions {
  name: string;
  nodes: NodeSpec[];
  workers?: number;
  offload?: boolean;
  /** Extra top-level config lines (e.g. `io: readwrite`). */
  extraConfig?: string[];
  /** Extra environment for the agent (fault injection). */
  env?: Record<string, string>;
  /**
   * Another test's own pool (default POOL4/POOL6): the first three octets of the IPv4 /24 and
   * the IPv6 /64 prefix ending in "::", e.g. '10.94.0' and 'fd00:94::'; and its lab name prefix.
   */
  pool?: { v4: string; v6: string; prefix?: string };
  namespaces?: Record<string, Record<string, string>>;
}

/** Every lab and temp dir alive in this process, so an exit handler can remove them. */
const liveLabs = new Set<Lab>();
const liveDirs = new Set<string>();

/** A temp dir removed by removeTempDir() or, at the latest, when the process exits. */
export function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  liveDirs.add(d);
  installExitHook();
  return d;
}

export function removeTempDir(d: string): void {
  rmSync(d, { recursive: true, force: true });
  liveDirs.delete(d);
}

let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  const all = (): void => {
    for (const lab of liveLabs) lab.destroySync();
    for (const d of liveDirs) rmSync(d, { recursive: true, force: true });
  };
  process.on('exit', all);
  // A signal skips 'exit': clean up, then die of the same signal (default action).
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      all();
      process.kill(process.pid, sig);
    });
  }
}

/**
 * A lab: namespaces, a config file, a state directory, the agent process and any background
 * clients/servers started in the namespaces. destroy() removes all of it.
 */
export class Lab {
  readonly dir: string;
  readonly socket: string;
  readonly configFile: string;
  readonly stateDir: string;
  agent: ChildProcess | null = null;
  agentLog = '';
  private exited: Promise<{ code: number | null; signal: string | null }> | null = null;
  private readonly bg = new Set<ChildProcess>();

  constructor(readonly opts: LabOptions) {
    const prefix = opts.pool?.prefix ?? (opts.pool ? 'rl94' : 'e2e');
    assert.ok(opts.name.startsWith(prefix) && /^[a-z0-9-]{1,10}$/.test(opts.name), `lab name ${opts.name} must start with ${prefix} and have at most 10 characters`);
    this.dir = tempDir(`tunswitch-${opts.name}-`);
    this.socket = join(this.dir, 'api.sock');
    this.configFile = join(this.dir, 'lab.yaml');
    this.stateDir = join(this.dir, 'state');
    liveLabs.add(this);
    installExitHook();
  }

  ns(node: string): string {
    return `${this.opts.name}-${node}`;
  }

  /** Node index in config order (its pool address is addr4(index)). */
  index(node: string): number {
    const i = this.opts.nodes.findIndex((n) => n.name === node);
    assert.ok(i >= 0, `no node ${node}`);
    return i;
  }

  v4(node: string): string {
    const i = this.index(node);
    return this.opts.pool ? `${this.opts.pool.v4}.${i + 2}` : addr4(i);
  }

  v6(node: string): string {
    const i = this.index(node);
    return this.opts.pool ? `${this.opts.pool.v6}${(i + 2).toString(16)}` : addr6(i);
  }

  /** Creates the namespaces (deleting stale ones of the same name first) and writes the config. */
  async create(): Promise<void> {
    for (const n of this.opts.nodes) {
      await sh('ip', ['netns', 'delete', this.ns(n.name)]);
      const r = await sh('ip', ['netns', 'add', this.ns(n.name)]);
      assert.equal(r.code, 0, `ip netns add ${this.ns(n.name)}: got exit ${r.code} (${r.stderr.trim()}), want 0`);
    }
    const lines = [
      `name: ${this.opts.name}`,
      this.opts.pool ? `pool: { ipv4: ${this.opts.pool.v4}.0/24, ipv6: "${this.opts.pool.v6}/64" }` : `pool: { ipv4: ${POOL4}, ipv6: "${POOL6}" }`,
      `workers: ${this.opts.workers ?? 2}`,
      `offload: ${this.opts.offload === true}`,
      ...(this.opts.namespaces ? ['namespaces:', ...Object.entries(this.opts.namespaces).map(([ns, l]) => `  ${ns}: { labels: ${JSON.stringify(l)} }`)] : []),
      'nodes:',
      ...this.opts.nodes.map((n) => {
        const extra = `${n.namespace ? `, namespace: ${n.namespace}` : ''}${n.ports ? `, ports: ${JSON.stringify(n.ports)}` : ''}${n.offload !== undefined ? `, offload: ${n.offload}` : ''}`;
        return `  ${n.name}: { labels: ${JSON.stringify(n.labels)}${extra} }`;
      }),
      ...(this.opts.extraConfig ?? []),
    ];
    writeFileSync(this.configFile, lines.join('\n') + '\n');
  }

  /** Starts `tunswitch run` and waits for its "ready: N endpoints" line. */
  async start(timeoutMs = 30_000): Promise<number> {
    assert.equal(this.agent, null, 'the agent is already running');
    const child = spawn(
      process.execPath,
      [CLI_MAIN, '--socket', this.socket, 'run', '-c', this.configFile, '--state-dir', this.stateDir, '--no-metrics'],
      { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...(this.opts.env ?? {}) } },
    );
    this.agent = child;
    this.agentLog = '';
    this.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    const ready = new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`agent not ready after ${timeoutMs} ms; log:\n${this.agentLog}`)), timeoutMs);
      child.stderr!.setEncoding('utf8');
      child.stderr!.on('data', (s: string) => {
        this.agentLog += s;
        const m = /ready: (\d+) endpoints/.exec(this.agentLog);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`agent exited before ready (code ${code}, signal ${signal}); log:\n${this.agentLog}`));
      });
    });
    return ready;
  }

  /** SIGKILL the agent (a crash: nothing is cleaned up by it) and wait for it to be gone. */
  async kill9(): Promise<void> {
    const child = this.agent;
    assert.ok(child && this.exited, 'the agent is not running');
    child.kill('SIGKILL');
    await this.exited;
    this.agent = null;
  }

  /** SIGTERM the agent and wait for it to exit; returns its exit status. */
  async stop(timeoutMs = 20_000): Promise<{ code: number | null; signal: string | null }> {
    const child = this.agent;
    assert.ok(child && this.exited, 'the agent is not running');
    child.kill('SIGTERM');
    const res = await Promise.race([this.exited, sleep(timeoutMs).then(() => null)]);
    if (res === null) {
      child.kill('SIGKILL');
      await this.exited;
      this.agent = null;
      throw new Error(`agent did not exit ${timeoutMs} ms after SIGTERM; log:\n${this.agentLog}`);
    }
    this.agent = null;
    return res;
  }

  /** Runs the CLI against this lab's agent; with json, parses stdout. */
  async cli(args: readonly string[]): Promise<RunResult> {
    return sh(process.execPath, [CLI_MAIN, '--socket', this.socket, ...args], 20_000);
  }

  async cliJson<T>(args: readonly string[]): Promise<T> {
    const r = await this.cli([...args, '-o', 'json']);
    assert.equal(r.code, 0, `tunswitch ${args.join(' ')}: got exit ${r.code} (${r.stderr.trim()}), want 0`);
    return JSON.parse(r.stdout) as T;
  }

  /** Starts a long-running program in a namespace; destroy() kills it if it is still running. */
  background(node: string, args: readonly string[]): { child: ChildProcess; done: Promise<RunResult> } {
    const t0 = Date.now();
    const child = spawn('ip', ['netns', 'exec', this.ns(node), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.bg.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const done = new Promise<RunResult>((resolve) => {
      child.on('error', (e) => {
        this.bg.delete(child);
        resolve({ code: -1, signal: null, stdout, stderr: stderr + e.message, ms: Date.now() - t0 });
      });
      child.on('exit', (code, signal) => {
        this.bg.delete(child);
        resolve({ code: code ?? -1, signal, stdout, stderr, ms: Date.now() - t0 });
      });
    });
    return { child, done };
  }

  /** Waits until something listens on `port` (proto tcp or udp) in the node's namespace. */
  async waitListening(node: string, proto: 'tcp' | 'udp', port: number, timeoutMs = 5_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const flag = proto === 'tcp' ? '-ltnH' : '-lunH';
    for (;;) {
      const r = await nsRun(this.ns(node), ['ss', flag, `sport = :${port}`]);
      if (r.code === 0 && r.stdout.trim() !== '') return;
      assert.ok(Date.now() < deadline, `nothing listens on ${proto} ${port} in ${this.ns(node)} after ${timeoutMs} ms`);
      await sleep(50);
    }
  }

  /**
   * ping from a node; retried up to `tries` times (each a few echo requests with -W 1) so one
   * lost packet on a loaded machine does not fail a test. Returns the last run.
   */
  async ping(from: string, to: string, extra: readonly string[] = [], tries = 3): Promise<RunResult> {
    let r: RunResult | null = null;
    for (let i = 0; i < tries; i++) {
      r = await nsRun(this.ns(from), ['ping', '-c', '2', '-i', '0.2', '-W', '1', ...extra, to], 10_000);
      if (r.code === 0 && /\b[12] received/.test(r.stdout)) return r;
    }
    return r as RunResult;
  }

  /**
   * TCP transfer of `file` from node `from` to `to`:`port` with nc; the receiver writes into
   * `outFile`. Returns the sender's run and the receiver's.
   */
  async tcpSend(from: string, to: string, port: number, file: string, outFile: string, timeoutMs = 60_000): Promise<{ send: RunResult; recv: RunResult }> {
    const srvNode = this.nodeOf(to);
    const srv = this.background(srvNode, ['sh', '-c', `exec nc -d -l ${to} ${port} > '${outFile}'`]);
    try {
      await this.waitListening(srvNode, 'tcp', port);
      const send = await nsRun(this.ns(from), ['sh', '-c', `exec nc -N -w 10 ${to} ${port} < '${file}'`], timeoutMs);
      const recv = await Promise.race([srv.done, sleep(10_000).then(() => null)]);
      if (recv === null) {
        srv.child.kill('SIGKILL');
        return { send, recv: await srv.done };
      }
      return { send, recv };
    } finally {
      if (srv.child.exitCode === null) srv.child.kill('SIGKILL');
    }
  }

  /** The node owning address `a` (one of ours). */
  nodeOf(a: string): string {
    for (const n of this.opts.nodes) if (this.v4(n.name) === a || this.v6(n.name) === a) return n.name;
    throw new Error(`no node has address ${a}`);
  }

  /** Kills background programs and the agent, deletes the namespaces and the temp dir. */
  async destroy(): Promise<void> {
    for (const c of this.bg) c.kill('SIGKILL');
    this.bg.clear();
    if (this.agent && this.exited) {
      this.agent.kill('SIGTERM');
      const r = await Promise.race([this.exited, sleep(10_000).then(() => null)]);
      if (r === null) {
        this.agent.kill('SIGKILL');
        await this.exited;
      }
      this.agent = null;
    }
    for (const n of this.opts.nodes) await sh('ip', ['netns', 'delete', this.ns(n.name)]);
    removeTempDir(this.dir);
    liveLabs.delete(this);
  }

  /** The same, synchronously, for process exit (a crashed or interrupted test run). */
  destroySync(): void {
    for (const c of this.bg) c.kill('SIGKILL');
    if (this.agent) this.agent.kill('SIGKILL');
    for (const n of this.opts.nodes) {
      try {
        execFileSync('ip', ['netns', 'delete', this.ns(n.name)], { stdio: 'ignore' });
      } catch {
        /* not there */
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
    liveLabs.delete(this);
  }
}

/** Devices in the root namespace whose name starts with `<lab>.` */
export async function labDevices(lab: string): Promise<string[]> {
  const r = await sh('ip', ['-o', 'link', 'show']);
  assert.equal(r.code, 0, `ip -o link show: got exit ${r.code}, want 0`);
  const out: string[] = [];
  for (const line of r.stdout.split('\n')) {
    const m = /^\d+:\s+([^:@\s]+)/.exec(line);
    if (m && (m[1] as string).startsWith(`${lab}.`)) out.push(m[1] as string);
  }
  return out;
}

/** Sum of a metric's samples, optionally only those whose labels match. */
export function metricSum(
  metrics: Record<string, { labels: Record<string, string>; value: number | string }[]>,
  name: string,
  match: (labels: Record<string, string>) => boolean = () => true,
): number {
  let s = 0;
  for (const x of metrics[name] ?? []) if (match(x.labels) && typeof x.value === 'number') s += x.value;
  return s;
}
