/**
 * The CLI as a new user meets it: switch discovery, hints that work when pasted, errors in the
 * user's words with "did you mean", exit codes, durations, terminal width, version and
 * completion, bench's load warning and ETA.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startApiServer, type ApiServer } from '../../src/api/server.js';
import { discoverSocket } from '../../src/cli/discover.js';
import { UsageError } from '../../src/proto/errors.js';
import { commandName } from '../../src/text/hint.js';
import { userWords } from '../../src/cli/errors.js';
import { didYouMean } from '../../src/cli/suggest.js';
import { durationMs, timeArg } from '../../src/cli/duration.js';
import { fitTable, truncate, wrapWords } from '../../src/text/width.js';
import { FakeApi } from '../api/fake-api.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}
function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { env: { ...process.env, TUNSWITCH_SOCKET: '', ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

function listen(path: string): Promise<Server> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(path, () => resolve(s));
  });
}

describe('switch discovery', () => {
  let root: string;
  const servers: Server[] = [];
  before(() => {
    root = mkdtempSync(join(tmpdir(), 'cl96-disc-'));
  });
  after(async () => {
    for (const s of servers) await new Promise((r) => s.close(r));
    rmSync(root, { recursive: true, force: true });
  });

  test('order: --socket, --lab, TUNSWITCH_SOCKET, the only one running, several is an error', async () => {
    // Nothing running: the default socket.
    assert.equal(discoverSocket({ root }), join(root, 'tunswitch.sock'), 'nothing running: want the default socket');
    mkdirSync(join(root, 'cl96a'));
    servers.push(await listen(join(root, 'cl96a', 'tunswitch.sock')));
    assert.equal(discoverSocket({ root }), join(root, 'cl96a', 'tunswitch.sock'), 'one lab running: want its socket');
    assert.equal(discoverSocket({ root, env: '/x.sock' }), '/x.sock', 'TUNSWITCH_SOCKET wins over discovery');
    assert.equal(discoverSocket({ root, env: '' }), join(root, 'cl96a', 'tunswitch.sock'), 'an empty TUNSWITCH_SOCKET counts as unset');
    assert.equal(discoverSocket({ root, socket: '/y.sock', lab: 'cl96a', env: '/x.sock' }), '/y.sock', '--socket wins');
    assert.equal(discoverSocket({ root, lab: 'cl96a', env: '/x.sock' }), join(root, 'cl96a', 'tunswitch.sock'), '--lab wins over the env');
    mkdirSync(join(root, 'cl96b'));
    servers.push(await listen(join(root, 'cl96b', 'tunswitch.sock')));
    assert.throws(
      () => discoverSocket({ root }),
      (e: unknown) => e instanceof UsageError && /2 switches are running; pick one: lab "cl96a" \(--lab cl96a\), lab "cl96b" \(--lab cl96b\)/.test(e.message),
      'two running: want an error listing both',
    );
    assert.throws(
      () => discoverSocket({ root, lab: 'cl96c' }),
      (e: unknown) => e instanceof UsageError && /--lab cl96c: no such lab \(did you mean "cl96a" or "cl96b"/.test(e.message),
      'unknown lab: want did you mean',
    );
    // Other directories under the run root (the pool registry) are not labs.
    mkdirSync(join(root, 'pools'));
    mkdirSync(join(root, 'cl96d'));
    writeFileSync(join(root, 'cl96d', 'lab.json'), '{}');
    assert.throws(
      () => discoverSocket({ root, lab: 'nosuch' }),
      (e: unknown) => e instanceof UsageError && /no such lab; labs: cl96a, cl96b, cl96d$/.test(e.message),
      'unknown lab: want the labs listed without "pools"',
    );
    assert.equal(discoverSocket({ root, lab: 'cl96d' }), join(root, 'cl96d', 'tunswitch.sock'), 'a lab that is down (state file, no socket): want its socket path');
    assert.throws(() => discoverSocket({ root, lab: 'pools' }), UsageError, '--lab pools: got a socket, want no such lab');
  });
});

describe('hints print the form that works', () => {
  test('tunswitch when on PATH (outside node_modules), else npx tunswitch', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cl96-path-'));
    try {
      const nm = join(dir, 'node_modules', '.bin');
      mkdirSync(nm, { recursive: true });
      writeFileSync(join(nm, 'tunswitch'), '#!/bin/sh\n');
      chmodSync(join(nm, 'tunswitch'), 0o755);
      assert.equal(commandName({ PATH: `${nm}:/nonexistent` }), 'npx tunswitch', 'only in node_modules/.bin: want npx tunswitch');
      const bin = join(dir, 'bin');
      mkdirSync(bin);
      writeFileSync(join(bin, 'tunswitch'), '#!/bin/sh\n');
      chmodSync(join(bin, 'tunswitch'), 0o755);
      assert.equal(commandName({ PATH: `${nm}:${bin}` }), 'tunswitch', 'on PATH: want tunswitch');
      writeFileSync(join(bin, 'tunswitch'), '');
      chmodSync(join(bin, 'tunswitch'), 0o644);
      assert.equal(commandName({ PATH: bin }), 'npx tunswitch', 'not executable: want npx tunswitch');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('the printed form runs: npx tunswitch --version in the repository', () => {
    // What a pasted hint runs. npx must find the project's own bin without rebuilding it.
    const repo = fileURLToPath(new URL('../../../', import.meta.url));
    const r = spawnSync('npx', ['--no-install', 'tunswitch', '--version'], { cwd: repo, encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, `npx tunswitch --version: got exit ${r.status} (${r.stderr}), want 0`);
    assert.match(r.stdout, /^\d+\.\d+\.\d+/, `got ${r.stdout}`);
  });
});

describe('errors in the user words', () => {
  const cases: [string, string][] = [
    ['body: needs netns or pid', 'give the network namespace with --netns NAME or --pid PID'],
    ['body.ipv4: "x" is not an IPv4 address', '--ipv4: "x" is not an IPv4 address'],
    ['body.labels.app: must be a string, got 1', '--label app: must be a string, got 1'],
    ['body.defaultRoute: must be true or false', '--default-route: must be true or false'],
    [
      'internal error: netns: ip link set dev ux.5 netns 23229 name eth0: RTNETLINK answers: File exists',
      'the network namespace (of pid 23229) already has a device named eth0; tunswitch names the endpoint\'s device eth0: delete it there ("ip link del eth0") or use another namespace',
    ],
    ['endpoint "x" not found', 'endpoint "x" not found'],
  ];
  for (const [api, want] of cases) {
    test(api, () => {
      const got = userWords(api);
      assert.equal(got, want, `got ${got}, want ${want}`);
      assert.ok(!/\bbody[.:]/.test(got), `got ${got}, want no API field path`);
    });
  }

  test('did you mean', () => {
    const cases: [string, string[], string][] = [
      ['fronted', ['frontend', 'backend', 'db'], ' (did you mean "frontend"?)'],
      ['bd', ['frontend', 'backend', 'db'], ' (did you mean "db"?)'],
      ['zzz', ['frontend', 'backend', 'db'], ''],
      ['allow-web', ['allow-web2', 'allow-db'], ' (did you mean "allow-web2" or "allow-db"?)'],
    ];
    for (const [typed, known, want] of cases) {
      const got = didYouMean(typed, known);
      assert.equal(got, want, `${typed}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
    }
  });
});

describe('exit codes and messages against a switch', () => {
  let dir: string;
  let sock: string;
  let server: ApiServer;
  let fake: FakeApi;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cl96-ux-'));
    sock = join(dir, 'tunswitch.sock');
    fake = new FakeApi(0x96);
    server = await startApiServer(fake, { socket: sock });
  });
  after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('usage 2, runtime 1, one line, no API field paths', async () => {
    const name = (fake.endpoints[0] as { name: string }).name;
    const typo = name.slice(0, -1);
    const cases: { args: string[]; code: number; match: RegExp }[] = [
      { args: ['endpoint', 'add', 'x'], code: 2, match: /^Error: endpoint add: give the network namespace with --netns NAME or --pid PID$/ },
      { args: ['endpoint', 'get', typo], code: 1, match: new RegExp(`^Error: endpoint "${typo}" not found \\(did you mean "${name}"`) },
      { args: ['--lab', 'cl96-none', 'status'], code: 2, match: /^Error: --lab cl96-none: no such lab/ },
      { args: ['observe', '--since', 'soon'], code: 2, match: /^Error: .*"soon" is neither a duration/ },
      { args: ['bench', '--systems', 'nope'], code: 2, match: /^Error: --systems: "nope" is not one of/ },
      { args: ['bench', '-t', '2x'], code: 2, match: /^Error: .*"2x" is not a duration \(e\.g\. 500ms, 10s/ },
      { args: ['run', '-c', '/nonexistent.yaml', '--metrics-addr', 'x'], code: 1, match: /^Error: / },
      { args: ['nosuchcommand'], code: 2, match: /^Error: unknown command/ },
    ];
    for (const c of cases) {
      const r = await cli(['--socket', sock, ...c.args].filter((a, i, all) => !(c.args[0] === '--lab' && (a === '--socket' || all[i - 1] === '--socket'))));
      assert.equal(r.code, c.code, `${c.args.join(' ')}: got exit ${r.code} (${r.stderr}), want ${c.code}`);
      const lines = r.stderr.split('\n').filter((l) => l !== '');
      assert.equal(lines.length, 1, `${c.args.join(' ')}: got ${lines.length} stderr lines (${r.stderr}), want 1`);
      assert.match(lines[0] as string, c.match, `${c.args.join(' ')}: got ${lines[0]}`);
      assert.ok(!/\bbody[.:]/.test(lines[0] as string), `${c.args.join(' ')}: got an API field path in ${lines[0]}`);
    }
  });

  test('endpoint add --default-route asks for the default route', async () => {
    const r = await cli(['--socket', sock, 'endpoint', 'add', 'cl96-dr', '--netns', 'cl96-ns', '--default-route']);
    assert.equal(r.code, 0, `got exit ${r.code} (${r.stderr})`);
    const call = fake.calls.filter((c) => c[0] === 'addEndpoint').at(-1)?.[1] as { defaultRoute?: boolean };
    assert.equal(call.defaultRoute, true, `got defaultRoute ${String(call.defaultRoute)}, want true`);
  });

  test('version: CLI, Node, kernel, I/O engine (from the status, else readwrite)', async () => {
    const r = await cli(['--socket', sock, 'version', '-o', 'json']);
    assert.equal(r.code, 0, `got exit ${r.code} (${r.stderr})`);
    const v = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.equal(v.node, process.version, `node: got ${String(v.node)}`);
    const want = (fake.status() as { ioEngine?: string }).ioEngine ?? 'readwrite';
    assert.equal(v.ioEngine, want, `ioEngine: got ${String(v.ioEngine)}, want ${want} (the status field, else readwrite)`);
    assert.ok(typeof v.kernel === 'string' && v.kernel !== '', `kernel: got ${String(v.kernel)}`);
    const { ioEngineOf } = await import('../../src/cli/version.js');
    assert.equal(ioEngineOf({}), 'readwrite', 'a status without ioEngine: want readwrite');
    assert.equal(ioEngineOf({ ioEngine: 'uring' }), 'uring', 'a status with ioEngine: want it');
    assert.ok(v.switchVersion !== null, `switchVersion: got null (${String(v.switchError)})`);
  });
});

describe('completion', () => {
  for (const shell of ['bash', 'zsh']) {
    test(`${shell}: parses and completes subcommands`, async () => {
      const r = await cli(['completion', shell]);
      assert.equal(r.code, 0, `got exit ${r.code} (${r.stderr})`);
      if (shell === 'zsh') {
        assert.match(r.stdout, /bashcompinit/, 'zsh script goes through bashcompinit');
        return;
      }
      const file = join(mkdtempSync(join(tmpdir(), 'cl96-comp-')), 'c.bash');
      writeFileSync(file, r.stdout);
      const probe = spawnSync('bash', ['-c', `source ${file}; COMP_WORDS=(tunswitch lab d); COMP_CWORD=2; _tunswitch; echo "\${COMPREPLY[@]}"; COMP_WORDS=(tunswitch observe --tcp); COMP_CWORD=2; _tunswitch; echo "\${COMPREPLY[@]}"`], { encoding: 'utf8' });
      assert.equal(probe.status, 0, `bash: got exit ${probe.status} (${probe.stderr})`);
      const [labD, obs] = probe.stdout.split('\n');
      assert.equal(labD, 'down demo', `lab d<TAB>: got ${labD}, want "down demo"`);
      assert.equal(obs, '--tcp-flags', `observe --tcp<TAB>: got ${obs}`);
      rmSync(file, { force: true });
    });
  }
  test('an unknown shell is a usage error', async () => {
    const r = await cli(['completion', 'fish']);
    assert.equal(r.code, 2, `got exit ${r.code}, want 2`);
  });
});

describe('durations and terminal width', () => {
  test('durations', () => {
    const cases: [string, number | null, number | null][] = [
      ['500ms', null, 500],
      ['10s', null, 10_000],
      ['1m30s', null, 90_000],
      ['2h', null, 7_200_000],
      ['1.5s', null, 1500],
      ['30', 1000, 30_000],
      ['30', null, null],
      ['10x', 1000, null],
      ['s', 1000, null],
    ];
    for (const [text, bare, want] of cases) {
      const got = durationMs(text, bare);
      assert.equal(got, want, `${text}: got ${got}, want ${want}`);
    }
    assert.equal(timeArg('1m', 100_000), 40_000, 'a duration is that long ago');
    assert.equal(timeArg('2024-05-01T10:00:00Z'), Date.parse('2024-05-01T10:00:00Z'), 'an RFC 3339 time');
  });

  test('truncate and wrap', () => {
    assert.equal(truncate('abcdef', 4), 'abc…', 'cut with a marker');
    assert.equal(truncate('abcdef', null), 'abcdef', 'not a TTY: unchanged');
    assert.equal(fitTable('aaaa\nbb\n', 3), 'aa…\nbb\n', 'each line');
    assert.deepEqual(wrapWords('the source endpoint is default-deny', 15), ['the source', 'endpoint is', 'default-deny'], 'at word boundaries');
    for (const l of wrapWords('a verylongwordthatdoesnotfit here', 10)) assert.ok(l.length <= 10, `got line ${l} longer than 10`);
  });
});

// The bench's load warning and ETA are tested with the harness (test/bench/e2e.test.ts).

describe('agent log lines', () => {
  test('levels and formats', async () => {
    const { levelOf, makeLogger } = await import('../../src/cli/log.js');
    const cases: [string, string][] = [
      ['ready: 2 endpoints, 1 shard workers', 'info'],
      ['shard 0: worker died (x); restarting (1 restarts)', 'warn'],
      ['control thread crashed: boom', 'error'],
    ];
    for (const [msg, want] of cases) assert.equal(levelOf(msg), want, `${msg}: got ${levelOf(msg)}, want ${want}`);
    const lines: string[] = [];
    const json = makeLogger('warn', 'json', (l) => lines.push(l));
    json.log('info', 'hidden');
    json.auto('shard 0: worker died');
    assert.equal(lines.length, 1, `got ${lines.length} lines, want 1 (info is below warn)`);
    const v = JSON.parse(lines[0] as string) as { level: string; msg: string };
    assert.deepEqual([v.level, v.msg], ['warn', 'shard 0: worker died'], `got ${lines[0]}`);
    const text: string[] = [];
    makeLogger('info', 'text', (l) => text.push(l)).log('info', 'ready: 1 endpoints');
    assert.match(text[0] as string, /^\d{4}-\d\d-\d\dT\S+Z INFO {2}ready: 1 endpoints\n$/, `got ${text[0]}`);
  });
});

describe('tables fit the terminal', () => {
  test('the last column wraps at word boundaries; unchanged without a width', async () => {
    const { formatTable } = await import('../../src/text/table.js');
    const rows = [['frontend', 'db', 'Policy denied at frontend egress: no rule allows this flow; the source endpoint is default-deny']];
    const plain = formatTable(['FROM', 'TO', 'REASON'], rows, null);
    assert.equal(plain.split('\n').length, 3, `no width: got ${JSON.stringify(plain)}, want header, one row, end`);
    const fit = formatTable(['FROM', 'TO', 'REASON'], rows, 60);
    const lines = fit.trimEnd().split('\n');
    for (const l of lines) assert.ok(l.length <= 60, `got a ${l.length}-character line ${JSON.stringify(l)}, want <= 60`);
    const reason = lines.slice(1).map((l) => l.slice(15).trim()).join(' ');
    assert.equal(reason, rows[0]?.[2], `wrapped text: got ${reason}, want the words unbroken`);
  });
});
