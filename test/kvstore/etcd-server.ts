/**
 * A real etcd for the kvstore tests: started on a loopback port with a data dir under a
 * mktemp folder, stopped (and its folder removed) by stop(). Each test file uses its own port
 * pair from 23790-23799 / 23800-23809 so files can run in parallel.
 *
 * The etcd binary comes from Debian's etcd-server. Without it a test is skipped locally and
 * FAILS under CI=true (CI installs it).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function etcdBinary(): string | null {
  const r = spawnSync('sh', ['-c', 'command -v etcd'], { encoding: 'utf8' });
  const p = r.stdout.trim();
  return r.status === 0 && p !== '' ? p : null;
}

/** undefined: run the test; a string: skip with this reason (never under CI=true). */
export function etcdSkip(): string | undefined {
  if (etcdBinary() !== null) return undefined;
  if (process.env.CI === 'true') assert.fail('got no etcd binary in PATH, want one: CI must install etcd-server');
  return 'etcd not installed (apt-get install etcd-server)';
}

export class EtcdServer {
  private proc: ChildProcess | null = null;
  private readonly dir: string;
  readonly url: string;
  readonly etcdUrl: string;

  /** `netns`/`host`: run inside a network namespace, listening on `host` (e2e underlay). */
  constructor(
    readonly clientPort: number,
    readonly peerPort: number,
    readonly opts: { netns?: string; host?: string } = {},
  ) {
    this.dir = mkdtempSync(join(tmpdir(), 'mn98-etcd-'));
    const host = opts.host ?? '127.0.0.1';
    this.url = `http://${host}:${clientPort}`;
    this.etcdUrl = `etcd://${host}:${clientPort}`;
  }

  private async healthy(): Promise<boolean> {
    if (this.opts.netns === undefined) {
      try {
        const r = await fetch(`${this.url}/health`);
        return ((await r.json()) as { health?: string }).health === 'true';
      } catch {
        return false;
      }
    }
    const r = spawnSync('ip', ['netns', 'exec', this.opts.netns, 'etcdctl', '--endpoints', this.url, '--dial-timeout=1s', 'endpoint', 'health'], { encoding: 'utf8', env: { ...process.env, ETCDCTL_API: '3' } });
    return r.status === 0;
  }

  async start(): Promise<void> {
    const bin = etcdBinary();
    assert.ok(bin, 'got no etcd binary, want one');
    const peer = `http://127.0.0.1:${this.peerPort}`;
    const pre = this.opts.netns !== undefined ? ['netns', 'exec', this.opts.netns, bin] : [];
    this.proc = spawn(
      this.opts.netns !== undefined ? 'ip' : bin,
      [
        ...pre,
        '--name', `mn98-${this.clientPort}`,
        '--data-dir', join(this.dir, 'data'),
        '--listen-client-urls', this.url,
        '--advertise-client-urls', this.url,
        '--listen-peer-urls', peer,
        '--initial-advertise-peer-urls', peer,
        '--initial-cluster', `mn98-${this.clientPort}=${peer}`,
        '--initial-cluster-state', 'new',
        '--log-level', 'error',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let err = '';
    this.proc.stderr?.on('data', (d: Buffer) => {
      if (err.length < 4000) err += d.toString();
    });
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (this.proc.exitCode !== null) assert.fail(`got etcd exit ${this.proc.exitCode}, want it running: ${err}`);
      if (await this.healthy()) return;
      if (Date.now() > deadline) assert.fail(`got no healthy etcd on ${this.url} within 15 s: ${err}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Stops etcd (SIGTERM, then SIGKILL), keeping its data: start() again resumes it. */
  async halt(): Promise<void> {
    const p = this.proc;
    this.proc = null;
    if (!p || p.exitCode !== null) return;
    const gone = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), 3000);
    await gone;
    clearTimeout(t);
  }

  async stop(): Promise<void> {
    await this.halt();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
