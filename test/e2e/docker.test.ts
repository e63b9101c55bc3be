/**
 * Docker label mode end to end, with a real engine: examples/compose/label-mode (the switch
 * with `run --docker` and the three-tier apps with network_mode: none) is brought up,
 * and the three-tier policy is checked from inside the containers with real TCP connections.
 *
 *   1. scripts/docker-ci.sh: engine up, images built offline (this dist in tunswitch:local)
 *   2. docker-compose up -d; wait until the agent lists frontend, backend and db
 *   3. each flow of the table: nc from one container to another's address; an allowed flow
 *      must get the server's greeting, a denied one must fail and show up as a policy drop
 *   4. container life cycle: a restarted container is re-attached, a stopped one detached
 *   5. docker-compose down; nothing is left: containers, networks, TUN devices, the host
 *      port's route, live namespaces (the engine's sandboxes), the API socket
 *
 * In CI (CI set) every failure to run Docker is a failure. Outside CI the test is skipped,
 * loudly, only when dockerd is not installed (or when not root).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ApiClient } from '../../src/api/client.js';
import type { EndpointInfo, FlowEvent } from '../../src/api/types.js';

/** <repo>/<outDir>/test/e2e/docker.test.js -> <repo>/<outDir> and <repo>. */
const DIST_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const REPO = dirname(DIST_ROOT);
const DIST_NAME = basename(DIST_ROOT);
const COMPOSE_FILE = join(REPO, 'examples', 'compose', 'label-mode', 'docker-compose.yml');
const PROJECT = `tswe2e${process.pid}`;
/** The switch's name in examples/three-tier/docker.yaml: devices dock.1 ..., host port dock.h. */
const SWITCH_NAME = 'dock';
const POOL = '10.42.0.0/24';
const SERVICES = ['frontend', 'backend', 'db'];

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
  if (!which('dockerd')) return 'dockerd is not installed (apt-get install docker.io docker-compose, or run scripts/docker-ci.sh)';
  if (process.getuid?.() !== 0) return 'needs root';
  return null;
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      { cwd: REPO, env: opts.env ?? process.env, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 16 << 20, encoding: 'utf8' },
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

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Host devices the switch names (dock.h, dock.1, ...). */
function switchDevices(): string[] {
  const out = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
  return out
    .split('\n')
    .map((l) => (l.split(':')[1] ?? '').trim().split('@')[0] ?? '')
    .filter((n) => n.startsWith(`${SWITCH_NAME}.`));
}

function poolRoutes(): string {
  return execFileSync('ip', ['-4', 'route', 'show', POOL], { encoding: 'utf8' }).trim();
}

/**
 * Live network namespaces that could be ours: the engine's sandboxes (nsfs mounts under
 * /run/docker/netns, one per container, network none included) and named ones that carry
 * the switch's or the project's name. The engine deletes the empty files of unmounted
 * sandboxes lazily (about once a minute), so a file alone is not a namespace: a mount is.
 */
function liveNamespaces(): string[] {
  const out: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    if (!line.includes(' - nsfs ')) continue;
    const at = f[4] ?? '';
    const name = basename(at);
    if (/\/docker\/netns\//.test(at) && name !== 'default') out.push(at);
    else if (name.startsWith(SWITCH_NAME) || name.includes(PROJECT)) out.push(at);
  }
  return out.sort();
}

const skip = skipReason();
if (skip !== null) {
  process.stderr.write(`\n**** SKIPPING test/e2e/docker.test.ts: ${skip} (in CI this test is mandatory) ****\n\n`);
}

test('docker-compose three-tier: run --docker attaches the containers and enforces the policy', { skip: skip ?? false, timeout: 360_000 }, async (t) => {
  // 1. engine and images
  await mustRun('bash', [join(REPO, 'scripts', 'docker-ci.sh'), '--dist', DIST_NAME], { timeoutMs: 300_000 });

  assert.equal(poolRoutes(), '', `got a host route for ${POOL} before the test (${poolRoutes()}), want none: another switch uses the pool`);
  assert.deepEqual(switchDevices(), [], `got devices ${switchDevices().join(', ')} before the test, want none`);
  const nsBefore = liveNamespaces();

  const runDir = mkdtempSync(join(tmpdir(), 'tsw-docker-e2e-'));
  const env = { ...process.env, TUNSWITCH_RUN_DIR: runDir, TUNSWITCH_METRICS_ADDR: `127.0.0.1:${await freePort()}`, DOCKER_BUILDKIT: '0' };
  const compose = (args: string[], timeoutMs = 120_000): Promise<Run> => run('docker-compose', ['-p', PROJECT, '-f', COMPOSE_FILE, ...args], { env, timeoutMs });
  const client = new ApiClient(join(runDir, 'tunswitch.sock'), { timeoutMs: 10_000 });
  const containerId = async (svc: string): Promise<string> => {
    const r = await compose(['ps', '-q', svc]);
    const id = r.stdout.trim();
    assert.ok(r.code === 0 && /^[0-9a-f]{12,}$/.test(id), `got container id ${JSON.stringify(id)} for ${svc}, want one id (${r.stderr.trim()})`);
    return id;
  };
  const switchLog = async (): Promise<string> => (await compose(['logs', '--no-color', '--tail', '40', 'switch'])).stdout;

  let down = false;
  const tearDown = async (): Promise<Run> => {
    down = true;
    return compose(['down', '--remove-orphans', '-t', '20']);
  };
  t.after(async () => {
    if (!down) await tearDown();
    rmSync(runDir, { recursive: true, force: true });
  });

  // 2. up, and wait for the three endpoints
  const up = await compose(['up', '-d', '--no-build']);
  assert.equal(up.code, 0, `got docker-compose up exit ${up.code}, want 0: ${up.stderr.trim()}`);

  const endpoints = async (): Promise<EndpointInfo[]> => {
    try {
      return await client.get<EndpointInfo[]>('/v1/endpoint');
    } catch {
      return [];
    }
  };
  const waitFor = async (what: string, ok: (eps: EndpointInfo[]) => boolean, ms: number): Promise<EndpointInfo[]> => {
    const deadline = Date.now() + ms;
    let eps: EndpointInfo[] = [];
    while (Date.now() < deadline) {
      eps = await endpoints();
      if (ok(eps)) return eps;
      await sleep(250);
    }
    assert.fail(`waited ${ms / 1000} s for ${what}; got endpoints ${JSON.stringify(eps.map((e) => [e.name, e.state, e.netns]))}\nswitch log:\n${await switchLog()}`);
  };
  const ready = (eps: EndpointInfo[], names: string[]): boolean => names.every((n) => eps.some((e) => e.name === n && e.state === 'ready'));
  const eps = await waitFor('frontend, backend and db', (e) => ready(e, SERVICES), 90_000);

  const ep = new Map(eps.map((e) => [e.name, e]));
  for (const svc of SERVICES) {
    const e = ep.get(svc) as EndpointInfo;
    assert.ok(e.labels.includes(`container:app=${svc}`), `endpoint ${svc}: got labels ${e.labels.join(',')}, want container:app=${svc}`);
    const engine = e.labels.filter((l) => (l.includes('com.docker') && !/com\.docker\.compose\.(service|project)=/.test(l)) || l.includes('tunswitch.'));
    assert.deepEqual(engine, [], `endpoint ${svc}: got labels ${e.labels.join(',')}, want no engine or tunswitch.* labels but the compose service and project`);
    assert.ok(e.labels.includes(`container:com.docker.compose.service=${svc}`), `endpoint ${svc}: got labels ${e.labels.join(',')}, want container:com.docker.compose.service=${svc}`);
    assert.match(e.ipv4 ?? '', /^10\.42\.0\.\d+$/, `endpoint ${svc}: got ipv4 ${e.ipv4}, want an address in ${POOL}`);
    assert.match(e.netns, /^\/proc\/\d+\/ns\/net$/, `endpoint ${svc}: got netns ${e.netns}, want /proc/PID/ns/net`);
    assert.ok(e.policy.ingress && e.policy.egress, `endpoint ${svc}: got policy ${JSON.stringify(e.policy)}, want ingress and egress enforced`);
  }
  assert.equal(new Set(eps.map((e) => e.identity)).size, eps.length, `got identities ${eps.map((e) => e.identity).join(',')}, want one per endpoint`);
  const addr = (svc: string): string => (ep.get(svc) as EndpointInfo).ipv4 as string;
  assert.equal(addr('backend'), '10.42.0.10', `backend: got ipv4 ${addr('backend')}, want the pinned 10.42.0.10 (label tunswitch.ipv4)`);

  // Inside a container: its only interface is the switch's eth0 with the endpoint's address.
  const ids = new Map<string, string>();
  for (const svc of SERVICES) ids.set(svc, await containerId(svc));
  const exec = (svc: string, cmd: string, ms = 15_000): Promise<Run> => run(DOCKER, ['exec', ids.get(svc) as string, 'sh', '-c', cmd], { timeoutMs: ms });
  for (const svc of SERVICES) {
    const r = await exec(svc, 'ip -4 -o addr show dev eth0; ip -o link show | wc -l');
    assert.ok(r.stdout.includes(`inet ${addr(svc)}/32`), `${svc}: got "${r.stdout.trim()}", want eth0 with ${addr(svc)}/32`);
    assert.match(r.stdout.trim(), /\n2$/, `${svc}: got "${r.stdout.trim()}", want exactly two links (lo, eth0)`);
  }

  // 3. the three-tier policy, flow by flow
  interface Flow {
    from: string;
    to: string;
    port: number;
    want: 'allow' | 'deny';
    greeting: string; // what the server sends on connect
  }
  const flows: Flow[] = [
    { from: 'frontend', to: 'backend', port: 8080, want: 'allow', greeting: 'backend-api' },
    { from: 'backend', to: 'db', port: 5432, want: 'allow', greeting: 'db-5432' },
    { from: 'frontend', to: 'backend', port: 9090, want: 'deny', greeting: 'backend-admin' },
    { from: 'frontend', to: 'db', port: 5432, want: 'deny', greeting: 'db-5432' },
    { from: 'db', to: 'backend', port: 8080, want: 'deny', greeting: 'backend-api' },
    { from: 'backend', to: 'frontend', port: 80, want: 'deny', greeting: 'HTTP/1.' },
  ];
  const probe = async (f: Flow): Promise<{ connected: boolean; out: string }> => {
    const req = f.port === 80 ? 'printf "GET / HTTP/1.0\\r\\n\\r\\n" | ' : '';
    const r = await exec(f.from, `${req}nc -w 2 ${addr(f.to)} ${f.port}${req ? '' : ' </dev/null'}`);
    return { connected: r.code === 0 && r.stdout.includes(f.greeting), out: `exit ${r.code} ${JSON.stringify((r.stdout + r.stderr).trim())}` };
  };
  for (const f of flows) {
    const got = await probe(f);
    const name = `${f.from} -> ${f.to}:${f.port}/TCP`;
    if (f.want === 'allow') assert.ok(got.connected, `${name}: got ${got.out}, want the greeting "${f.greeting}" (allowed)`);
    else assert.ok(!got.connected, `${name}: got ${got.out}, want no connection (denied)`);
  }
  // Every denied flow was dropped by the switch's policy, not lost elsewhere.
  const events = await client.get<FlowEvent[]>('/v1/events?last=2000');
  for (const f of flows.filter((x) => x.want === 'deny')) {
    const hit = events.some(
      (e) =>
        e.verdict === 'DROPPED' &&
        /policy/i.test(e.drop_reason_desc ?? '') &&
        e.IP.source === addr(f.from) &&
        e.IP.destination === addr(f.to) &&
        e.l4?.destination_port === f.port,
    );
    assert.ok(hit, `${f.from} -> ${f.to}:${f.port}: got no policy drop event among ${events.length}, want one`);
  }

  // 4. life cycle: restart re-attaches (new process, same name); stop detaches.
  const oldNetns = (ep.get('backend') as EndpointInfo).netns;
  await mustRun(DOCKER, ['restart', '-t', '1', ids.get('backend') as string]);
  await waitFor('backend re-attached after a restart', (e) => e.some((x) => x.name === 'backend' && x.state === 'ready' && x.netns !== oldNetns), 30_000);
  const eps2 = await endpoints();
  const be = eps2.find((e) => e.name === 'backend') as EndpointInfo;
  ep.set('backend', be);
  const again = await probe(flows[0] as Flow);
  assert.ok(again.connected, `frontend -> backend:8080 after restart: got ${again.out}, want the greeting`);
  await mustRun(DOCKER, ['stop', '-t', '1', ids.get('db') as string]);
  await waitFor('db detached after a stop', (e) => !e.some((x) => x.name === 'db') && e.length === 2, 30_000);

  // 5. down, and nothing left behind
  const dn = await tearDown();
  assert.equal(dn.code, 0, `got docker-compose down exit ${dn.code}, want 0: ${dn.stderr.trim()}`);
  const left = (await mustRun(DOCKER, ['ps', '-aq', '--filter', `label=com.docker.compose.project=${PROJECT}`])).trim();
  assert.equal(left, '', `got containers ${left.replace(/\n/g, ' ')} after down, want none`);
  const nets = (await mustRun(DOCKER, ['network', 'ls', '-q', '--filter', `label=com.docker.compose.project=${PROJECT}`])).trim();
  assert.equal(nets, '', `got networks ${nets} after down, want none`);
  assert.deepEqual(switchDevices(), [], `got devices ${switchDevices().join(', ')} after down, want none`);
  assert.equal(poolRoutes(), '', `got host route "${poolRoutes()}" after down, want none`);
  const nsAfter = liveNamespaces().filter((n) => !nsBefore.includes(n));
  assert.deepEqual(nsAfter, [], `got live namespaces ${nsAfter.join(', ')} after down, want none new`);
  assert.ok(!existsSync(join(runDir, 'tunswitch.sock')), `got ${join(runDir, 'tunswitch.sock')} after down, want the socket removed`);
});
