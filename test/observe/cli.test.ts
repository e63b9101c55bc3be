import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startApiServer, type ApiServer } from '../../src/api/server.js';
import type { FlowEvent } from '../../src/api/types.js';
import { parseFilters } from '../../src/observe/filter.js';
import { formatCompact, formatMonitor } from '../../src/observe/format.js';
import { FakeApi, waitFor } from '../api/fake-api.js';
import { CANNED, EV } from './events.js';

// The expected compact lines are made here and in the child with the same time zone.
process.env.TZ = 'UTC';

const ENTRY = fileURLToPath(new URL('./cli-entry.js', import.meta.url));
const ENV = { ...process.env, TZ: 'UTC', TUNSWITCH_SOCKET: '' };

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function cli(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [ENTRY, ...args], { env: ENV }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

/** Starts a following command; `stop()` sends SIGINT and waits for the exit. */
interface Exit {
  code: number | null;
  signal: string | null;
}

function follow(args: string[]): { out: () => string; err: () => string; exited: Promise<Exit>; stop: () => Promise<Exit> } {
  const child = spawn(process.execPath, [ENTRY, ...args], { env: ENV, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<Exit>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return {
    out: () => out,
    err: () => err,
    exited,
    stop: async () => {
      child.kill('SIGINT');
      return exited;
    },
  };
}

function jsonLines(s: string): FlowEvent[] {
  return s
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as FlowEvent);
}

describe('tunswitch observe / monitor against the API server', () => {
  let dir: string;
  let sock: string;
  let fake: FakeApi;
  let server: ApiServer;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tsw-observe-'));
    sock = join(dir, 'tunswitch.sock');
    fake = new FakeApi(0x0b5);
    fake.events = CANNED.slice();
    server = await startApiServer(fake, { socket: sock });
  });
  after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('observe --last 5 -o json: the last five events, one JSON object a line', async () => {
    const r = await cli(['--socket', sock, 'observe', '--last', '5', '-o', 'json']);
    assert.equal(r.code, 0, `got exit ${r.code} (${r.stderr}), want 0`);
    const got = jsonLines(r.stdout);
    assert.deepEqual(got, CANNED.slice(-5), `got ${r.stdout}`);
  });

  test('observe with filters prints the matching events, compact, oldest first', async () => {
    const cases: { args: string[]; opts: Parameters<typeof parseFilters>[0] }[] = [
      { args: ['--verdict', 'DROPPED'], opts: { verdict: ['DROPPED'] } },
      { args: ['--verdict', 'DROPPED', '--type', 'drop', '--to-label', 'app=db'], opts: { verdict: ['DROPPED'], type: ['drop'], toLabel: ['app=db'] } },
      { args: ['--drop-reason-desc', 'POLICY_DENIED', '--drop-reason-desc', 'POLICY_DENY'], opts: { dropReasonDesc: ['POLICY_DENIED', 'POLICY_DENY'] } },
      { args: ['--ip', '8.8.8.8'], opts: { ip: ['8.8.8.8'] } },
      { args: ['--endpoint', 'db', '--protocol', 'icmp'], opts: { endpoint: ['db'], protocol: ['icmp'] } },
    ];
    for (const c of cases) {
      const r = await cli(['observe', '--socket', sock, ...c.args]);
      assert.equal(r.code, 0, `${c.args.join(' ')}: got exit ${r.code} (${r.stderr}), want 0`);
      const p = parseFilters(c.opts);
      const want = CANNED.filter(p)
        .slice(-20)
        .map((e) => formatCompact(e) + '\n')
        .join('');
      assert.ok(want !== '', `${c.args.join(' ')}: the case selects nothing; pick another`);
      assert.equal(r.stdout, want, `${c.args.join(' ')}: got\n${r.stdout}want\n${want}`);
    }
  });

  test('observe --last 2 keeps the last two *matching* events', async () => {
    const r = await cli(['observe', '--socket', sock, '--last', '2', '--verdict', 'FORWARDED', '-o', 'json']);
    assert.equal(r.code, 0, `got exit ${r.code} (${r.stderr}), want 0`);
    const want = CANNED.filter((e) => e.verdict === 'FORWARDED').slice(-2);
    assert.deepEqual(jsonLines(r.stdout), want, `got ${r.stdout}`);
  });

  test('observe -o table: header and one row per event', async () => {
    const r = await cli(['observe', '--socket', sock, '-o', 'table', '--type', 'policy-verdict']);
    assert.equal(r.code, 0, `got exit ${r.code} (${r.stderr}), want 0`);
    const lines = r.stdout.trimEnd().split('\n');
    const want = CANNED.filter((e) => e.event_type === 'policy-verdict').length;
    assert.match(lines[0] as string, /^TIME\s+SOURCE\s+DESTINATION\s+TYPE\s+VERDICT\s+SUMMARY$/, `got header ${lines[0]}`);
    assert.equal(lines.length, want + 1, `got ${lines.length} lines, want ${want + 1}:\n${r.stdout}`);
  });

  test('bad filter values and options are one-line usage errors (exit 2)', async () => {
    const cases: { args: string[]; want: string }[] = [
      { args: ['observe', '--verdict', 'DENY'], want: 'Error: --verdict: "DENY" is not one of FORWARDED, DROPPED, AUDIT' },
      { args: ['observe', '--port', '70000'], want: 'Error: --port: "70000" is not a port (0-65535)' },
      { args: ['monitor', '--type', 'l7'], want: 'Error: --type: "l7" is not one of drop, trace, policy-verdict' },
      { args: ['observe', '-o', 'yaml'], want: 'Error: option \'-o, --output <format>\' argument \'yaml\' is invalid. Allowed choices are compact, dict, json, jsonpb, table.' },
    ];
    for (const c of cases) {
      const r = await cli(['--socket', sock, ...c.args]);
      assert.equal(r.code, 2, `${c.args.join(' ')}: got exit ${r.code} (${r.stderr}), want 2`);
      assert.equal(r.stderr, c.want + '\n', `${c.args.join(' ')}: got ${r.stderr}, want ${c.want}`);
      assert.equal(r.stdout, '', `${c.args.join(' ')}: got stdout ${r.stdout}, want none`);
    }
  });

  test('no agent: one error line, exit 1', async () => {
    const r = await cli(['--socket', join(dir, 'nothing.sock'), 'observe']);
    assert.equal(r.code, 1, `got exit ${r.code}, want 1`);
    assert.match(r.stderr, /^Error: cannot reach tunswitch at .*nothing\.sock: is "tunswitch run" running\?\n$/, `got ${r.stderr}`);
  });

  test('observe --follow prints new matching events until Ctrl-C, then exits 0', async () => {
    const c = follow(['--socket', sock, 'observe', '--follow', '--verdict', 'DROPPED', '-o', 'json']);
    try {
      assert.ok(await waitFor(() => fake.subscribers === 1, 5000), `got ${fake.subscribers} subscribers, want 1 (stderr ${c.err()})`);
      const fresh = [EV.forward, EV.drop133, EV.allowed, EV.drop181].map((e, i) => ({ ...e, time: new Date(Date.UTC(2025, 0, 1, 0, 0, i)).toISOString() }));
      for (const e of fresh) fake.emit(e);
      const want = fresh.filter((e) => e.verdict === 'DROPPED');
      assert.ok(await waitFor(() => c.out().split('\n').length > want.length, 5000), `got ${c.out()}, want ${want.length} lines`);
      const { code, signal } = await c.stop();
      assert.equal(code, 0, `got exit ${code} (signal ${signal}, stderr ${c.err()}), want 0`);
      // Without --last, --follow shows only new events (as hubble observe -f).
      assert.deepEqual(jsonLines(c.out()), want, `got ${c.out()}`);
      assert.ok(await waitFor(() => fake.subscribers === 0), `got ${fake.subscribers} subscribers after exit, want 0`);
    } finally {
      await c.stop();
      fake.events = CANNED.slice();
    }
  });

  test('observe --follow --last 3: the last three matching, then new ones, none twice', async () => {
    const c = follow(['--socket', sock, 'observe', '--follow', '--last', '3', '--type', 'drop', '-o', 'json']);
    try {
      assert.ok(await waitFor(() => fake.subscribers === 1, 5000), `got ${fake.subscribers} subscribers, want 1 (stderr ${c.err()})`);
      const fresh = [EV.drop181, EV.forward, EV.v6].map((e, i) => ({ ...e, time: new Date(Date.UTC(2025, 0, 2, 0, 0, i)).toISOString() }));
      for (const e of fresh) fake.emit(e);
      const want = [...CANNED.filter((e) => e.event_type === 'drop').slice(-3), ...fresh.filter((e) => e.event_type === 'drop')];
      assert.ok(await waitFor(() => c.out().split('\n').length > want.length, 5000), `got ${c.out()}, want ${want.length} lines`);
      const { code } = await c.stop();
      assert.equal(code, 0, `got exit ${code} (stderr ${c.err()}), want 0`);
      assert.deepEqual(jsonLines(c.out()), want, `got ${c.out()}`);
    } finally {
      await c.stop();
      fake.events = CANNED.slice();
    }
  });

  test('monitor --type drop prints cilium-monitor lines for new drops until Ctrl-C', async () => {
    const c = follow(['monitor', '--socket', sock, '--type', 'drop']);
    try {
      assert.ok(await waitFor(() => fake.subscribers === 1, 5000), `got ${fake.subscribers} subscribers, want 1 (stderr ${c.err()})`);
      const fresh = [EV.forward, EV.drop133, EV.verdict133, EV.v6];
      for (const e of fresh) fake.emit(e);
      const want = fresh.filter((e) => e.event_type === 'drop').map((e) => formatMonitor(e) + '\n');
      assert.ok(await waitFor(() => c.out().split('\n').length > want.length, 5000), `got ${c.out()}, want ${want.length} lines`);
      const { code } = await c.stop();
      assert.equal(code, 0, `got exit ${code} (stderr ${c.err()}), want 0`);
      assert.equal(c.out(), want.join(''), `got ${c.out()}, want ${want.join('')}`);
      assert.match(c.err(), /^Listening for events on .*tunswitch\.sock\nPress Ctrl-C to quit\n$/, `got stderr ${c.err()}`);
    } finally {
      await c.stop();
      fake.events = CANNED.slice();
    }
  });

  test('monitor -o json: every new event as JSON', async () => {
    const c = follow(['monitor', '--socket', sock, '-o', 'json']);
    try {
      assert.ok(await waitFor(() => fake.subscribers === 1, 5000), `got ${fake.subscribers} subscribers, want 1`);
      const fresh = [EV.icmp, EV.audit];
      for (const e of fresh) fake.emit(e);
      assert.ok(await waitFor(() => c.out().split('\n').length > fresh.length, 5000), `got ${c.out()}, want ${fresh.length} lines`);
      const { code } = await c.stop();
      assert.equal(code, 0, `got exit ${code} (stderr ${c.err()}), want 0`);
      assert.deepEqual(jsonLines(c.out()), fresh, `got ${c.out()}`);
      assert.equal(c.err(), '', `got stderr ${c.err()}, want none`);
    } finally {
      await c.stop();
      fake.events = CANNED.slice();
    }
  });

  test('observe --follow: the agent going away is an error (exit 1)', async () => {
    const dir2 = await mkdtemp(join(tmpdir(), 'tsw-observe2-'));
    const sock2 = join(dir2, 'tunswitch.sock');
    const fake2 = new FakeApi(7);
    const server2 = await startApiServer(fake2, { socket: sock2 });
    const c = follow(['observe', '--socket', sock2, '--follow']);
    try {
      assert.ok(await waitFor(() => fake2.subscribers === 1, 5000), `got ${fake2.subscribers} subscribers, want 1`);
      await server2.close();
      // It exits by itself; no Ctrl-C (the timer only guards against a hang).
      const timer = setTimeout(() => void c.stop(), 5000);
      const { code } = await c.exited;
      clearTimeout(timer);
      assert.equal(code, 1, `got exit ${code} (stderr ${c.err()}), want 1`);
      assert.match(c.err(), /^Error: (tunswitch at .* ended the event stream|tunswitch at .* closed the stream)/, `got ${c.err()}`);
    } finally {
      await server2.close();
      await rm(dir2, { recursive: true, force: true });
    }
  });
});
