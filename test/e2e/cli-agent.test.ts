/**
 * The agent as the CLI runs it (root): `run --log-format json --log-level`, SIGHUP shuts down
 * cleanly (devices and socket gone, exit 0), and a socket left by a crashed agent (SIGKILL) is
 * detected as stale and replaced by the next `run`. Pool 10.96.0.0/24, names cl96*.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI_MAIN, requireE2e, sh } from './helpers.js';

const NAME = 'cl96s';
const NS = `${NAME}-a`;

interface Agent {
  child: ChildProcess;
  log: () => string;
  ready: Promise<void>;
  exited: Promise<{ code: number | null; signal: string | null }>;
}

function startAgent(dir: string, extra: string[] = []): Agent {
  const child = spawn(
    process.execPath,
    [CLI_MAIN, '--socket', join(dir, 'tunswitch.sock'), 'run', '-c', join(dir, 'lab.yaml'), '--state-dir', join(dir, 'state'), '--no-metrics', ...extra],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const ready = new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`agent not ready after 30 s; log:\n${log}`)), 30_000);
    child.stderr!.setEncoding('utf8').on('data', (s: string) => {
      log += s;
      if (/ready: \d+ endpoints/.test(log)) {
        clearTimeout(t);
        resolve();
      }
    });
    child.on('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`agent exited (code ${code}) before ready; log:\n${log}`));
    });
  });
  ready.catch(() => undefined);
  return { child, log: () => log, ready, exited };
}

describe('tunswitch run: logs, SIGHUP, stale socket', () => {
  let dir: string;
  const agents: Agent[] = [];

  before(async () => {
    await requireE2e();
    dir = mkdtempSync(join(tmpdir(), 'cl96-agent-'));
    writeFileSync(join(dir, 'lab.yaml'), `name: ${NAME}\npool: { ipv4: 10.96.0.0/24, ipv6: "fd00:96::/64" }\nworkers: 1\nnodes:\n  a: { labels: { app: cl96 } }\n`);
    await sh('ip', ['netns', 'delete', NS]);
    const r = await sh('ip', ['netns', 'add', NS]);
    assert.equal(r.code, 0, `ip netns add ${NS}: ${r.stderr}`);
  });
  after(async () => {
    for (const a of agents) if (a.child.exitCode === null && a.child.signalCode === null) a.child.kill('SIGKILL');
    await sh('ip', ['netns', 'delete', NS]);
    await sh('ip', ['link', 'del', 'dev', `${NAME}.h`]);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('--log-format json --log-level info: one JSON object per line; SIGHUP stops cleanly', async () => {
    const a = startAgent(dir, ['--log-format', 'json', '--log-level', 'info']);
    agents.push(a);
    await a.ready;
    a.child.kill('SIGHUP');
    const res = await Promise.race([a.exited, new Promise<null>((r) => setTimeout(() => r(null), 20_000))]);
    assert.notEqual(res, null, `the agent did not exit 20 s after SIGHUP; log:\n${a.log()}`);
    assert.deepEqual(res, { code: 0, signal: null }, `SIGHUP: got ${JSON.stringify(res)}, want exit 0; log:\n${a.log()}`);
    const lines = a.log().split('\n').filter((l) => l !== '');
    for (const l of lines) {
      const v = JSON.parse(l) as { time?: string; level?: string; msg?: string };
      assert.ok(typeof v.time === 'string' && typeof v.level === 'string' && typeof v.msg === 'string', `got log line ${l}, want {time, level, msg}`);
    }
    assert.ok(lines.some((l) => /SIGHUP: stopping/.test(l)), `got no SIGHUP line in ${a.log()}`);
    assert.ok(!existsSync(join(dir, 'tunswitch.sock')), 'got the socket left after SIGHUP, want it removed');
    const link = await sh('ip', ['netns', 'exec', NS, 'ip', 'link', 'show', 'eth0']);
    assert.notEqual(link.code, 0, `got eth0 still in ${NS} after SIGHUP, want the device removed`);
  });

  it('a socket left by a crashed agent is replaced', async () => {
    const a = startAgent(dir, ['--log-level', 'warn']);
    agents.push(a);
    // --log-level warn hides the info lines (ready is info), so wait until the API answers.
    const sock = join(dir, 'tunswitch.sock');
    let up = false;
    for (let i = 0; i < 300 && !up; i++) {
      await new Promise((r) => setTimeout(r, 100));
      up = existsSync(sock) && (await sh(process.execPath, [CLI_MAIN, '--socket', sock, 'status', '-o', 'json'])).code === 0;
    }
    assert.ok(up, `got no answering socket after 30 s; log:\n${a.log()}`);
    a.child.kill('SIGKILL');
    await a.exited;
    assert.ok(statSync(sock).isSocket(), 'the crashed agent left its socket behind (the case under test)');
    assert.ok(!/INFO/.test(a.log()), `--log-level warn: got info lines in ${a.log()}`);
    await sh('ip', ['netns', 'exec', NS, 'ip', 'link', 'del', 'eth0']);
    await sh('ip', ['link', 'del', 'dev', `${NAME}.h`]);
    const b = startAgent(dir);
    agents.push(b);
    await b.ready;
    const st = await sh(process.execPath, [CLI_MAIN, '--socket', sock, 'status', '-o', 'json']);
    assert.equal(st.code, 0, `status against the new agent: got exit ${st.code} (${st.stderr})`);
    b.child.kill('SIGTERM');
    const res = await b.exited;
    assert.equal(res.code, 0, `SIGTERM: got ${JSON.stringify(res)}, want exit 0`);
  });
});
