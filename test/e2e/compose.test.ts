/**
 * Compose files as people write them, on the Docker network driver, with a real engine:
 *
 *   1. the README's Docker section: the switch from docker/switch.compose.yml, then the
 *      repository's docker-compose.yml (three-tier, 10.42.0.0/24); flows by service name;
 *      a restarted container re-joins; down leaves nothing behind;
 *   2. examples/compose/web-api-db: web -> api -> db through environment variables with
 *      service names, policy by compose service label;
 *   3. examples/compose/scale: --scale backend=3, one name returns all three, each answers;
 *   4. pool safety: a second switch, a Docker network and a lab on an overlapping pool are
 *      refused with an error naming the other user, and so is a pool under a host route.
 *
 * Tests 2-4 run a switch on the host (`tunswitch run --docker --docker-driver dk97`, pool
 * 10.97.0.0/26); the examples' networks get 10.97.0.64/26 and 10.97.0.128/26 and the driver
 * name dk97 through an override file, so the example files stay as a user would write them.
 * In CI every failure to run Docker is a failure; outside CI the file is skipped, loudly,
 * only without dockerd or root.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ApiClient } from '../../src/api/client.js';
import type { EndpointInfo, FlowEvent } from '../../src/api/types.js';

const DIST_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const REPO = dirname(DIST_ROOT);
const DIST_NAME = basename(DIST_ROOT);
const CLI = join(DIST_ROOT, 'src', 'cli', 'main.js');
const DRIVER = 'dk97';
const IN_CI = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false';
const DOCKER = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';

function which(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function skipReason(): string | null {
  if (IN_CI) return null;
  if (!which('dockerd') || !which('docker-compose')) return 'dockerd or docker-compose is not installed (run scripts/docker-ci.sh)';
  if (process.getuid?.() !== 0) return 'needs root';
  return null;
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string } = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      { cwd: opts.cwd ?? REPO, env: opts.env ?? process.env, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 16 << 20, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code as number) : -1;
        resolve({ code, stdout, stderr: err !== null && code === -1 ? `${stderr}${err.message}` : stderr });
      },
    );
  });
}

async function mustRun(file: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<string> {
  const r = await run(file, args, opts);
  if (r.code !== 0) throw new Error(`${file} ${args.join(' ')}: exit ${r.code}: ${(r.stderr || r.stdout).trim().split('\n').slice(-12).join('\n')}`);
  return r.stdout;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a !== null ? a.port : 0));
    });
  });
}

function devicesWithPrefix(prefix: string): string[] {
  const out = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
  return out
    .split('\n')
    .map((l) => (l.split(':')[1] ?? '').trim().split('@')[0] ?? '')
    .filter((n) => n.startsWith(prefix));
}

function routes(prefix: string): string {
  return execFileSync('ip', ['-4', 'route', 'show', 'root', prefix], { encoding: 'utf8' }).trim();
}

/** An override file: the driver's test name, and the subnet (docker-compose v1 replaces the whole network entry, ipam included). */
function overrideFile(dir: string, name: string, subnet?: string): string {
  const f = join(dir, `${name}.override.yml`);
  const ipam = subnet ? `\n    ipam:\n      config:\n        - subnet: ${subnet}` : '';
  writeFileSync(f, `version: "2.4"\nnetworks:\n  default:\n    driver: ${DRIVER}${ipam}\n`);
  return f;
}

/** Cleanups run last-in first-out (apps down before their switch stops). */
class Cleanup {
  private readonly fns: (() => Promise<void> | void)[] = [];
  constructor(t: { after(fn: () => Promise<void>): void }) {
    t.after(async () => {
      for (const fn of this.fns.reverse()) await Promise.resolve(fn()).catch(() => undefined);
    });
  }
  after(fn: () => Promise<void> | void): void {
    this.fns.push(fn);
  }
}

/** A compose project: up/down/exec helpers; down is registered as a cleanup. */
function project(t: Cleanup, name: string, files: string[], env: NodeJS.ProcessEnv = process.env) {
  const args = ['-p', name, ...files.flatMap((f) => ['-f', f])];
  const compose = (a: string[], timeoutMs = 120_000): Promise<Run> => run('docker-compose', [...args, ...a], { env, timeoutMs });
  let up = false;
  const down = async (): Promise<Run> => {
    up = false;
    return compose(['down', '--remove-orphans', '-t', '5']);
  };
  t.after(async () => {
    if (up) await down();
  });
  return {
    compose,
    up: async (extra: string[] = []): Promise<void> => {
      up = true;
      const r = await compose(['up', '-d', '--no-build', ...extra]);
      assert.equal(r.code, 0, `${name}: got docker-compose up exit ${r.code}, want 0: ${r.stderr.trim().split('\n').slice(-8).join('\n')}`);
    },
    down,
    /** sh -c CMD in the service's container (replica n). */
    exec: (svc: string, cmd: string, n = 1, ms = 20_000): Promise<Run> => compose(['exec', '-T', '--index', String(n), svc, 'sh', '-c', cmd], ms),
  };
}

function cli(socket: string, args: string[], timeoutMs = 90_000): Promise<Run> {
  return run(process.execPath, [CLI, '--socket', socket, ...args], { timeoutMs });
}

async function mustCli(socket: string, args: string[], timeoutMs = 90_000): Promise<string> {
  const r = await cli(socket, args, timeoutMs);
  assert.equal(r.code, 0, `tunswitch ${args.join(' ')}: got exit ${r.code}, want 0: ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

/** Connect from a container to HOST:PORT; the server's greeting or nothing. */
async function probe(exec: (cmd: string) => Promise<Run>, host: string, port: number): Promise<string> {
  const r = await exec(`nc -w 2 ${host} ${port} </dev/null`);
  return r.code === 0 ? r.stdout.trim() : '';
}

const skip = skipReason();
if (skip !== null) process.stderr.write(`\n**** SKIPPING test/e2e/compose.test.ts: ${skip} (in CI this test is mandatory) ****\n\n`);

let imagesReady = false;
async function images(): Promise<void> {
  if (imagesReady) return;
  await mustRun('bash', [join(REPO, 'scripts', 'docker-ci.sh'), '--dist', DIST_NAME], { timeoutMs: 300_000 });
  imagesReady = true;
}

test("README's Docker section: the switch from docker/switch.compose.yml, the three-tier compose file by service name", { skip: skip ?? false, timeout: 420_000 }, async (tt) => {
  const t = new Cleanup(tt);
  await images();
  assert.equal(routes('10.42.0.0/24'), '', `got a host route for 10.42.0.0/24 before the test (${routes('10.42.0.0/24')}), want none`);
  assert.deepEqual(devicesWithPrefix('dock.'), [], 'devices dock.* before the test: want none');
  const runDir = mkdtempSync(join(tmpdir(), 'dk97-readme-'));
  t.after(() => rmSync(runDir, { recursive: true, force: true }));
  const socket = join(runDir, 'tunswitch.sock');
  const env = { ...process.env, TUNSWITCH_RUN_DIR: runDir, TUNSWITCH_METRICS_ADDR: `127.0.0.1:${await freePort()}`, TUNSWITCH_DRIVER: DRIVER };
  // The switch first: the engine asks the driver when compose creates the network.
  const sw = project(t, 'dk97switch', [join(REPO, 'docker', 'switch.compose.yml')], env);
  await sw.up();
  await mustCli(socket, ['endpoint', 'wait', '--timeout', '60']);

  const app = project(t, 'dk97demo', [join(REPO, 'docker-compose.yml'), overrideFile(runDir, 'demo', '10.42.0.0/24')], env);
  await app.up();
  const waited = await mustCli(socket, ['endpoint', 'wait', 'frontend', 'backend', 'db', '--timeout', '60']);
  assert.match(waited, /ready: frontend, backend, db/, `endpoint wait: got ${JSON.stringify(waited)}`);

  const client = new ApiClient(socket, { timeoutMs: 10_000 });
  const eps = await client.get<EndpointInfo[]>('/v1/endpoint');
  const ep = new Map(eps.map((e) => [e.name, e]));
  for (const svc of ['frontend', 'backend', 'db']) {
    const e = ep.get(svc);
    assert.ok(e, `endpoint ${svc}: missing among ${eps.map((x) => x.name).join(',')}`);
    for (const want of [`container:app=${svc}`, `container:com.docker.compose.service=${svc}`, 'container:com.docker.compose.project=dk97demo']) {
      assert.ok(e.labels.includes(want), `endpoint ${svc}: got labels ${e.labels.join(',')}, want ${want}`);
    }
    assert.match(e.ipv4 ?? '', /^10\.42\.0\.\d+$/, `endpoint ${svc}: got ipv4 ${e.ipv4}, want one in 10.42.0.0/24`);
    assert.match(e.netns, /^\/var\/run\/docker\/netns\//, `endpoint ${svc}: got netns ${e.netns}, want the engine's sandbox`);
    // Inside: eth0 is the switch's port with the engine's address; lo and eth0 only.
    const r = await app.exec(svc, 'ip -4 -o addr show dev eth0; ip -o link show | wc -l');
    assert.ok(r.stdout.includes(`inet ${e.ipv4}/24`), `${svc}: got ${JSON.stringify(r.stdout.trim())}, want eth0 with ${e.ipv4}/24`);
    assert.match(r.stdout.trim(), /\n2$/, `${svc}: got ${JSON.stringify(r.stdout.trim())}, want two links (lo, eth0)`);
  }
  const ns = await app.exec('frontend', 'nslookup backend');
  assert.ok(ns.stdout.includes(`Address: ${ep.get('backend')?.ipv4}`), `nslookup backend: got ${JSON.stringify(ns.stdout.trim())}, want ${ep.get('backend')?.ipv4}`);

  const flows: [string, string, number, string | null][] = [
    ['frontend', 'backend', 8080, 'backend-api'],
    ['backend', 'db', 5432, 'db-5432'],
    ['frontend', 'backend', 9090, null],
    ['frontend', 'db', 5432, null],
    ['db', 'backend', 8080, null],
  ];
  for (const [from, to, port, greeting] of flows) {
    const got = await probe((c) => app.exec(from, c), to, port);
    if (greeting) assert.equal(got, greeting, `${from} -> ${to}:${port} by name: got ${JSON.stringify(got)}, want ${greeting} (allowed)`);
    else assert.equal(got, '', `${from} -> ${to}:${port} by name: got ${JSON.stringify(got)}, want no connection (denied)`);
  }
  const events = await client.get<FlowEvent[]>('/v1/events?last=2000');
  const dropped = events.some((e) => e.verdict === 'DROPPED' && e.IP.source === ep.get('frontend')?.ipv4 && e.IP.destination === ep.get('db')?.ipv4);
  assert.ok(dropped, `got no drop event frontend -> db among ${events.length} events, want one`);

  // A restarted container joins again (new sandbox) and is reachable by name.
  const before = ep.get('backend')?.netns;
  await mustRun('docker-compose', ['-p', 'dk97demo', '-f', join(REPO, 'docker-compose.yml'), '-f', join(runDir, 'demo.override.yml'), 'restart', '-t', '1', 'backend'], { env });
  await mustCli(socket, ['endpoint', 'wait', 'backend', '--timeout', '30']);
  const after = (await client.get<EndpointInfo>('/v1/endpoint/backend')).netns;
  assert.notEqual(after, before, `backend after restart: got the same sandbox ${after}, want a new one`);
  assert.equal(await probe((c) => app.exec('frontend', c), 'backend', 8080), 'backend-api', 'frontend -> backend:8080 after restart: want backend-api');

  // Down: the apps, then the switch; nothing left.
  const d1 = await app.down();
  assert.equal(d1.code, 0, `apps down: exit ${d1.code}: ${d1.stderr.trim()}`);
  const left = (await client.get<EndpointInfo[]>('/v1/endpoint')).map((e) => e.name);
  assert.deepEqual(left, [], `endpoints after the apps' down: got ${left.join(',')}, want none`);
  const d2 = await sw.down();
  assert.equal(d2.code, 0, `switch down: exit ${d2.code}: ${d2.stderr.trim()}`);
  assert.deepEqual(devicesWithPrefix('dock.'), [], `devices after down: got ${devicesWithPrefix('dock.').join(',')}, want none`);
  assert.equal(routes('10.42.0.0/24'), '', `routes after down: got ${routes('10.42.0.0/24')}, want none`);
  assert.ok(!existsSync(`/run/docker/plugins/${DRIVER}.sock`), `got /run/docker/plugins/${DRIVER}.sock after down, want it removed`);
});

/** A switch on the host for tests 2-4; stopped (SIGTERM) in after(). */
async function hostSwitch(t: Cleanup): Promise<{ socket: string; dir: string; child: ChildProcess; log: () => string }> {
  const dir = mkdtempSync(join(tmpdir(), 'dk97-compose-'));
  const cfg = join(dir, 'switch.yaml');
  writeFileSync(cfg, 'name: dk97c\npool:\n  ipv4: 10.97.0.0/26\nworkers: 1\nhostPort: true\nnodes: {}\npolicies: []\n');
  const socket = join(dir, 'tunswitch.sock');
  const logFile = join(dir, 'switch.log');
  const out = (await import('node:fs')).openSync(logFile, 'a');
  const child = spawn(process.execPath, [CLI, '--socket', socket, 'run', '-c', cfg, '--state-dir', join(dir, 'state'), '--no-metrics', '--docker-driver', DRIVER], { stdio: ['ignore', out, out] });
  const log = (): string => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
  t.after(async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
    rmSync(dir, { recursive: true, force: true });
  });
  const r = await cli(socket, ['endpoint', 'wait', '--timeout', '30']);
  assert.equal(r.code, 0, `host switch: endpoint wait: exit ${r.code}: ${r.stderr.trim()}\nlog:\n${log()}`);
  return { socket, dir, child, log };
}

test('examples/compose/web-api-db: env vars with service names, policy by compose service label', { skip: skip ?? false, timeout: 300_000 }, async (tt) => {
  const t = new Cleanup(tt);
  await images();
  const sw = await hostSwitch(t);
  const ex = join(REPO, 'examples', 'compose', 'web-api-db');
  await mustCli(sw.socket, ['policy', 'import', join(ex, 'policy.yaml')]);
  const app = project(t, 'dk97wad', [join(ex, 'docker-compose.yml'), overrideFile(sw.dir, 'wad', '10.97.0.64/26')]);
  await app.up();
  await mustCli(sw.socket, ['endpoint', 'wait', 'web', 'api', 'db', '--timeout', '60']);
  const client = new ApiClient(sw.socket, { timeoutMs: 10_000 });
  const eps = new Map((await client.get<EndpointInfo[]>('/v1/endpoint')).map((e) => [e.name, e]));
  for (const svc of ['web', 'api', 'db']) {
    const e = eps.get(svc);
    assert.match(e?.ipv4 ?? '', /^10\.97\.0\.(6[5-9]|[7-9]\d|1[01]\d|12[0-6])$/, `endpoint ${svc}: got ipv4 ${e?.ipv4}, want one in 10.97.0.64/26 (the network's IPAM)`);
    assert.ok(e?.policy.ingress || e?.policy.egress, `endpoint ${svc}: got policy ${JSON.stringify(e?.policy)}, want enforced`);
  }
  // web -> api -> db, each hop by the name in an environment variable.
  const page = await app.exec('web', "printf 'GET /cgi-bin/index HTTP/1.0\\r\\n\\r\\n' | nc -w 8 localhost 80", 1, 30_000);
  assert.match(page.stdout, /web: api: db: 3 rows from shop\.items/, `web page: got ${JSON.stringify((page.stdout + page.stderr).trim())}, want web: api: db: 3 rows ...`);
  // Policy: web may not reach db; db may not call api.
  assert.equal(await probe((c) => app.exec('web', c), 'db', 5432), '', 'web -> db:5432: want no connection (denied by policy "web")');
  const r = await app.exec('db', "printf 'GET /cgi-bin/items HTTP/1.0\\r\\n\\r\\n' | nc -w 2 api 8080");
  assert.ok(!r.stdout.includes('200 OK'), `db -> api:8080: got ${JSON.stringify(r.stdout.trim())}, want no answer (denied by policy "api")`);
  const events = await client.get<FlowEvent[]>('/v1/events?last=2000');
  const drop = events.find((e) => e.verdict === 'DROPPED' && e.IP.source === eps.get('web')?.ipv4 && e.IP.destination === eps.get('db')?.ipv4);
  assert.ok(drop, `got no drop web -> db among ${events.length} events, want one`);
  const dn = await app.down();
  assert.equal(dn.code, 0, `down: exit ${dn.code}: ${dn.stderr.trim()}`);
  assert.equal(routes('10.97.0.64/26'), '', `route for the network after down: got ${routes('10.97.0.64/26')}, want none`);
});

test('examples/compose/scale: --scale backend=3, one name, three endpoints, each answers', { skip: skip ?? false, timeout: 300_000 }, async (tt) => {
  const t = new Cleanup(tt);
  await images();
  const sw = await hostSwitch(t);
  const ex = join(REPO, 'examples', 'compose', 'scale');
  await mustCli(sw.socket, ['policy', 'import', join(ex, 'policy.yaml')]);
  const app = project(t, 'dk97scl', [join(ex, 'docker-compose.yml'), overrideFile(sw.dir, 'scl', '10.97.0.128/26')]);
  await app.up(['--scale', 'backend=3']);
  await mustCli(sw.socket, ['endpoint', 'wait', 'client', 'backend', 'backend-2', 'backend-3', '--timeout', '60']);
  const client = new ApiClient(sw.socket, { timeoutMs: 10_000 });
  const eps = await client.get<EndpointInfo[]>('/v1/endpoint');
  const backends = eps.filter((e) => e.name.startsWith('backend'));
  assert.equal(backends.length, 3, `backend endpoints: got ${backends.map((e) => e.name).join(',')}, want 3`);
  assert.equal(new Set(backends.map((e) => e.identity)).size, 1, `backend identities: got ${backends.map((e) => e.identity).join(',')}, want one shared identity`);
  const want = backends.map((e) => e.ipv4 as string).sort();
  const ns = await app.exec('client', 'nslookup backend');
  const got = [...ns.stdout.matchAll(/Address: (10\.97\.0\.\d+)/g)].map((m) => m[1] as string).sort();
  assert.deepEqual(got, want, `nslookup backend: got ${got.join(',')}, want the three replicas ${want.join(',')}`);
  const hostnames = new Set<string>();
  for (const a of want) {
    const h = await probe((c) => app.exec('client', c), a, 8080);
    assert.notEqual(h, '', `client -> ${a}:8080: got no answer, want the replica's hostname`);
    hostnames.add(h);
  }
  assert.equal(hostnames.size, 3, `hostnames: got ${[...hostnames].join(',')}, want three different replicas`);
  assert.notEqual(await probe((c) => app.exec('client', c), 'backend', 8080), '', 'client -> backend:8080 by name: want an answer');
  // A backend calls nobody (egress {}), whatever the name.
  const back = await app.exec('backend', 'ping -c 1 -W 2 client', 2);
  assert.notEqual(back.code, 0, `backend-2 -> client: got exit 0, want no reply (denied): ${back.stdout.trim()}`);
  // Scale down: the replicas leave the switch.
  const r = await app.compose(['up', '-d', '--no-build', '--scale', 'backend=1']);
  assert.equal(r.code, 0, `scale down: exit ${r.code}: ${r.stderr.trim()}`);
  const names = (await client.get<EndpointInfo[]>('/v1/endpoint')).map((e) => e.name).sort();
  assert.deepEqual(names, ['backend', 'client'], `after --scale backend=1: got ${names.join(',')}, want backend,client`);
});

test('pool safety: an overlapping switch, Docker network, lab or host route is refused, naming the other user', { skip: skip ?? false, timeout: 120_000 }, async (tt) => {
  const t = new Cleanup(tt);
  const sw = await hostSwitch(t);
  // 1. a second switch on a pool that contains the first one's
  const cfg2 = join(sw.dir, 'second.yaml');
  writeFileSync(cfg2, 'name: dk97d\npool:\n  ipv4: 10.97.0.0/24\nworkers: 1\nhostPort: true\nnodes: {}\npolicies: []\n');
  const r1 = await cli(join(sw.dir, 'second.sock'), ['run', '-c', cfg2, '--state-dir', join(sw.dir, 'state2'), '--no-metrics', '--docker-driver', 'none'], 30_000);
  assert.equal(r1.code, 1, `second switch: got exit ${r1.code}, want 1 (${r1.stderr.trim()})`);
  assert.match(r1.stderr, /pool 10\.97\.0\.0\/24 overlaps 10\.97\.0\.0\/26 of switch "dk97c"/, `second switch: got ${JSON.stringify(r1.stderr.trim())}, want the other switch named`);
  assert.deepEqual(devicesWithPrefix('dk97d.'), [], 'second switch: want no devices left');
  // 2. a Docker network of the driver whose subnet overlaps the switch's pool without lying inside it
  const r2 = await run(DOCKER, ['network', 'create', '-d', DRIVER, '--subnet', '10.97.0.0/25', 'dk97overlap']);
  if (r2.code === 0) await run(DOCKER, ['network', 'rm', 'dk97overlap']);
  assert.notEqual(r2.code, 0, 'docker network create 10.97.0.0/25: got success, want a refusal');
  assert.match(r2.stderr, /overlaps 10\.97\.0\.0\/26 of switch "dk97c"/, `docker network create: got ${JSON.stringify(r2.stderr.trim())}, want the switch named`);
  // 3. a lab on the same pool
  const lab = join(sw.dir, 'lab.yaml');
  writeFileSync(lab, 'name: dk97l\npool:\n  ipv4: 10.97.0.0/26\nnodes:\n  a: {}\npolicies: []\n');
  const r3 = await cli(join(sw.dir, 'lab.sock'), ['lab', 'up', lab], 30_000);
  assert.notEqual(r3.code, 0, `lab up on the switch's pool: got exit 0, want a refusal`);
  assert.match(r3.stderr, /lab "dk97l": pool 10\.97\.0\.0\/26 overlaps 10\.97\.0\.0\/26 of switch "dk97c"/, `lab up: got ${JSON.stringify(r3.stderr.trim())}`);
  const nsList = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  assert.ok(!nsList.includes('dk97l-'), `lab up refused: got namespaces ${nsList.trim()}, want none of dk97l`);
  // 4. a host route inside a pool (someone else routes part of it)
  execFileSync('ip', ['route', 'add', '10.97.0.200/29', 'dev', 'lo']);
  t.after(async () => {
    await run('ip', ['route', 'del', '10.97.0.200/29', 'dev', 'lo']);
  });
  const cfg4 = join(sw.dir, 'fourth.yaml');
  writeFileSync(cfg4, 'name: dk97e\npool:\n  ipv4: 10.97.0.192/26\nworkers: 1\nhostPort: true\nnodes: {}\npolicies: []\n');
  const r4 = await cli(join(sw.dir, 'fourth.sock'), ['run', '-c', cfg4, '--state-dir', join(sw.dir, 'state4'), '--no-metrics', '--docker-driver', 'none'], 30_000);
  assert.equal(r4.code, 1, `switch under a host route: got exit ${r4.code}, want 1 (${r4.stderr.trim()})`);
  assert.match(r4.stderr, /pool 10\.97\.0\.192\/26 overlaps the host route "10\.97\.0\.200\/29 dev lo/, `got ${JSON.stringify(r4.stderr.trim())}, want the route named`);
});
