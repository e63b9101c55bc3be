/**
 * End to end: `tunswitch lab` on real namespaces, real TUN devices and a real agent process,
 * with the three-tier example (copied under another name and pool so a user's `demo` lab is
 * left alone). Needs root, `ip`, /dev/net/tun and ping; it fails (never skips) without them.
 *
 *   1. lab up (with an outside host) -> every node is an endpoint, hosts files name them
 *   2. a second up of the running lab is refused
 *   3. the connectivity matrix: allowed flows connect, denied ones fail, and each denied
 *      flow has a DROPPED event from the agent whose reason is "Policy denied"
 *   4. lab status -o json lists the lab; lab exec runs in the node's namespace
 *   5. lab down removes every namespace, device and file; a second down says "not running"
 * The pure helpers (hosts file, event matching) are checked first, without root.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { accessSync, constants, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { ApiClient } from '../../src/api/client.js';
import type { FlowEvent } from '../../src/api/types.js';
import type { CliContext } from '../../src/cli/context.js';
import { register as registerLab } from '../../src/cli/lab.js';
import { renderHosts } from '../../src/lab/hosts.js';
import { labDown, labExec, labUp, type LabStatus } from '../../src/lab/lab.js';
import { dropReason, eventMatches, judge, runMatrix, THREE_TIER_FLOWS, THREE_TIER_SERVERS, type ResolvedFlow } from '../../src/lab/matrix.js';
import { outsidePlan } from '../../src/lab/outside.js';
import { startServer, type ServerHandle } from '../../src/lab/probe.js';
import { labPaths, type LabState } from '../../src/lab/state.js';
import { LabError, readIpForward } from '../../src/lab/sys.js';
import { Rand } from '../helpers/rand.js';

const LAB = 'e2elab';
const POOL4 = '10.42.9.0/24';
const POOL6 = 'fd00:42::9:0/112';
const OUTSIDE = '10.99.9.0/24';
const EXAMPLE_DIR = fileURLToPath(new URL('../../../examples/three-tier/', import.meta.url));

// ---------------------------------------------------------------------------------------------
// Pure helpers (no root needed).

function flowEvent(over: { src: string; dst: string; proto: string; dport?: number; verdict: FlowEvent['verdict']; type: FlowEvent['event_type']; desc?: string }): FlowEvent {
  const e: FlowEvent = {
    time: new Date(0).toISOString(),
    verdict: over.verdict,
    event_type: over.type,
    traffic_direction: 'EGRESS',
    is_reply: false,
    IP: { ipVersion: over.src.includes(':') ? 'IPv6' : 'IPv4', source: over.src, destination: over.dst },
    l4: over.dport === undefined ? { protocol: over.proto, icmp_type: 8, icmp_code: 0 } : { protocol: over.proto, source_port: 40000, destination_port: over.dport },
    source: { identity: 256, labels: [], ip: over.src, endpoint: 'a' },
    destination: { identity: 257, labels: [], ip: over.dst, endpoint: 'b' },
    length: 60,
  };
  if (over.desc !== undefined) {
    e.drop_reason = 133;
    e.drop_reason_desc = over.desc;
    e.policy = { none: 'no rule allows this flow' };
  }
  return e;
}

describe('lab helpers', () => {
  test('renderHosts lists every entry under both names', () => {
    const rand = new Rand(12);
    for (let round = 0; round < 20; round++) {
      const n = rand.range(1, 6);
      const entries = Array.from({ length: n }, (_, i) => ({ name: `n${i}`, ipv4: `10.42.${rand.int(256)}.${rand.range(2, 254)}`, ipv6: rand.bool(0.5) ? `fd00:42::${i + 2}` : undefined }));
      const text = renderHosts('lab', entries.map((e) => (e.ipv6 ? e : { name: e.name, ipv4: e.ipv4 })));
      for (const e of entries) {
        const want4 = `${e.ipv4}\t${e.name} ${e.name}.lab`;
        assert.ok(text.split('\n').includes(want4), `got hosts without line ${JSON.stringify(want4)}, want it:\n${text}`);
        if (e.ipv6) assert.ok(text.includes(`${e.ipv6}\t${e.name} ${e.name}.lab`), `got no IPv6 line for ${e.name}, want one`);
      }
      const lines = text.trimEnd().split('\n').length;
      const want = 3 + entries.length + entries.filter((e) => e.ipv6).length;
      assert.equal(lines, want, `got ${lines} lines, want ${want}`);
    }
  });

  const flow: ResolvedFlow = { from: 'a', to: 'b', proto: 'tcp', port: 5432, expect: 'denied', fromNetns: 'x-a', srcIp: '10.42.0.2', dstIp: '10.42.0.3' };
  const cases: { name: string; e: FlowEvent; matches: boolean }[] = [
    { name: 'same flow', e: flowEvent({ src: '10.42.0.2', dst: '10.42.0.3', proto: 'TCP', dport: 5432, verdict: 'DROPPED', type: 'drop', desc: 'Policy denied' }), matches: true },
    { name: 'other port', e: flowEvent({ src: '10.42.0.2', dst: '10.42.0.3', proto: 'TCP', dport: 22, verdict: 'DROPPED', type: 'drop', desc: 'Policy denied' }), matches: false },
    { name: 'reverse direction', e: flowEvent({ src: '10.42.0.3', dst: '10.42.0.2', proto: 'TCP', dport: 5432, verdict: 'DROPPED', type: 'drop', desc: 'Policy denied' }), matches: false },
    { name: 'UDP, same port', e: flowEvent({ src: '10.42.0.2', dst: '10.42.0.3', proto: 'UDP', dport: 5432, verdict: 'DROPPED', type: 'drop', desc: 'Policy denied' }), matches: false },
    { name: 'ICMP', e: flowEvent({ src: '10.42.0.2', dst: '10.42.0.3', proto: 'ICMPv4', verdict: 'DROPPED', type: 'drop', desc: 'Policy denied' }), matches: false },
  ];
  for (const c of cases) {
    test(`eventMatches: ${c.name}`, () => {
      assert.equal(eventMatches(c.e, flow), c.matches, `got ${!c.matches}, want ${c.matches}`);
      const r = dropReason([c.e], flow);
      assert.equal(r !== null, c.matches, `got reason ${JSON.stringify(r)}, want ${c.matches ? 'one' : 'none'}`);
      if (r !== null) assert.match(r, /^Policy denied at a egress: no rule allows this flow$/, `got ${r}`);
    });
  }

  test('judge: outcome against expectation', () => {
    const drop = cases[0]?.e as FlowEvent;
    const table: { ok: boolean; expect: 'allowed' | 'denied'; wantGot: string; wantOk: boolean; wantReason: RegExp }[] = [
      { ok: false, expect: 'denied', wantGot: 'denied', wantOk: true, wantReason: /^Policy denied/ },
      { ok: true, expect: 'denied', wantGot: 'allowed', wantOk: false, wantReason: /^allowed/ },
      { ok: false, expect: 'allowed', wantGot: 'denied', wantOk: false, wantReason: /^Policy denied/ },
      { ok: true, expect: 'allowed', wantGot: 'allowed', wantOk: true, wantReason: /^allowed/ },
    ];
    for (const t of table) {
      const row = judge({ ...flow, expect: t.expect }, { ok: t.ok, detail: t.ok ? 'hello' : 'timeout' }, [drop]);
      assert.equal(row.got, t.wantGot, `probe ok=${t.ok}: got ${row.got}, want ${t.wantGot}`);
      assert.equal(row.ok, t.wantOk, `probe ok=${t.ok} expect ${t.expect}: got ok=${row.ok}, want ${t.wantOk}`);
      assert.match(row.reason, t.wantReason, `got reason ${row.reason}`);
    }
  });

  test('outsidePlan names and addresses', () => {
    const o = outsidePlan('demo', '10.99.3.0/24');
    assert.deepEqual(o, { netns: 'demo-outside', rootIf: 'demo.out', cidr: '10.99.3.0/24', rootAddr: '10.99.3.1', addr: '10.99.3.2' });
    for (const bad of ['10.99.3.0/16', '10.99.3.1/24', '300.1.1.0/24', 'x']) {
      assert.throws(() => outsidePlan('demo', bad), (e: unknown) => e instanceof LabError && e.code === 'ELAB_INVALID', `got no ELAB_INVALID for ${bad}, want one`);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// The lab, for real.

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8' });
}

function requireMachine(): void {
  const problems: string[] = [];
  if (typeof process.getuid === 'function' && process.getuid() !== 0) problems.push('not root');
  try {
    accessSync('/dev/net/tun', constants.R_OK | constants.W_OK);
  } catch {
    problems.push('no /dev/net/tun');
  }
  for (const tool of [['ip', '-V'], ['ping', '-V']] as const) {
    try {
      execFileSync(tool[0], [tool[1]], { stdio: 'ignore' });
    } catch {
      problems.push(`no ${tool[0]}`);
    }
  }
  if (problems.length > 0) throw new Error(`this end-to-end test needs root, /dev/net/tun, ip and ping: ${problems.join(', ')}`);
}

function netnsList(): string[] {
  return sh('ip', ['netns', 'list'])
    .split('\n')
    .map((l) => l.split(' ', 1)[0] as string)
    .filter((n) => n !== '');
}

/** A CliContext that collects output, for running the lab command group in-process. */
function captureCtx(): { ctx: CliContext; out: () => string } {
  let buf = '';
  const ctx: CliContext = {
    socket: () => labPaths(LAB).socket,
    client: () => new ApiClient(labPaths(LAB).socket),
    out: (t) => {
      buf += t;
    },
    warn: () => undefined,
  };
  return { ctx, out: () => buf };
}

async function cli(args: string[]): Promise<string> {
  const { ctx, out } = captureCtx();
  const program = new Command('tunswitch').exitOverride();
  registerLab(program, ctx);
  await program.parseAsync(['node', 'tunswitch', ...args]);
  return out();
}

describe('tunswitch lab (three-tier example, real namespaces)', () => {
  let dir = '';
  let file = '';
  let lab: LabState | null = null;
  let forwardBefore = '';
  const servers: ServerHandle[] = [];

  before(async () => {
    requireMachine();
    await labDown(LAB); // leftovers of an interrupted run
    forwardBefore = readIpForward();
    dir = mkdtempSync(join(tmpdir(), 'tunswitch-lab-'));
    const doc = parseYaml(readFileSync(join(EXAMPLE_DIR, 'lab.yaml'), 'utf8')) as Record<string, unknown>;
    doc.name = LAB;
    doc.pool = { ipv4: POOL4, ipv6: POOL6 };
    doc.policies = [join(EXAMPLE_DIR, 'policies')];
    file = join(dir, 'lab.yaml');
    writeFileSync(file, stringifyYaml(doc));
  });

  after(async () => {
    for (const s of servers) await s.stop().catch(() => undefined);
    await labDown(LAB).catch(() => undefined);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('lab up attaches every node and writes hosts files', async () => {
    lab = await labUp(file, { outside: OUTSIDE, readyTimeoutMs: 60_000 });
    const names = lab.nodes.map((n) => n.name);
    assert.deepEqual(names, ['frontend', 'backend', 'db'], `got nodes ${names.join(',')}, want frontend,backend,db`);
    const present = netnsList();
    for (const ns of [`${LAB}-frontend`, `${LAB}-backend`, `${LAB}-db`, `${LAB}-outside`]) {
      assert.ok(present.includes(ns), `got no namespace ${ns}, want it (have ${present.join(', ')})`);
    }
    const eps = await new ApiClient(lab.socket).get<{ name: string; ipv4?: string; state: string }[]>('/v1/endpoint');
    assert.equal(eps.length, 3, `got ${eps.length} endpoints, want 3`);
    for (const n of lab.nodes) {
      assert.ok(n.ipv4?.startsWith('10.42.9.'), `got ${n.name} ipv4 ${n.ipv4}, want one in ${POOL4}`);
      const hosts = readFileSync(`/etc/netns/${n.netns}/hosts`, 'utf8');
      for (const m of lab.nodes) assert.ok(hosts.includes(`${m.ipv4}\t${m.name} ${m.name}.${LAB}`), `got ${n.netns} hosts without ${m.name}, want it`);
    }
  });

  test('a second lab up of the running lab is refused', async () => {
    await assert.rejects(labUp(file), (e: unknown) => e instanceof LabError && e.code === 'ELAB_RUNNING' && /already running/.test(e.message), 'got no ELAB_RUNNING, want it');
  });

  test('connectivity matrix: allowed flows connect, denied ones are policy drops', async () => {
    assert.ok(lab, 'lab up failed');
    for (const [node, ports] of Object.entries(THREE_TIER_SERVERS)) servers.push(await startServer(`${LAB}-${node}`, node, ports));
    const rows = await runMatrix(lab, THREE_TIER_FLOWS, { timeoutMs: 2000 });
    assert.equal(rows.length, THREE_TIER_FLOWS.length, `got ${rows.length} rows, want ${THREE_TIER_FLOWS.length} (IPv6 and outside included)`);
    for (const r of rows) {
      const what = `${r.from} -> ${r.to} ${r.proto}/${r.port ?? ''} v${r.family ?? 4}`;
      assert.equal(r.got, r.expect, `${what}: got ${r.got} (${r.probe.detail}; ${r.reason}), want ${r.expect}`);
      if (r.expect === 'allowed') assert.match(r.probe.detail, r.proto === 'tcp' ? new RegExp(`^hello from ${r.to}:${r.port}$`) : /reply/, `${what}: got answer ${r.probe.detail}`);
      else assert.match(r.reason, /^Policy denied at \w+ (egress|ingress): /, `${what}: got reason ${r.reason}, want a "Policy denied" drop event`);
    }
    // The drop events themselves, as the API serves them.
    const events = await new ApiClient(lab.socket).get<FlowEvent[]>('/v1/events?last=500');
    const drops = events.filter((e) => e.verdict === 'DROPPED' && e.event_type === 'drop' && e.drop_reason_desc === 'Policy denied');
    const deniedTcp = rows.filter((r) => r.expect === 'denied' && r.proto === 'tcp');
    for (const r of deniedTcp) {
      assert.ok(drops.some((e) => eventMatches(e, r)), `got no DROPPED "Policy denied" event for ${r.from} -> ${r.to}:${r.port}, want one`);
    }
  });

  test('lab status -o json lists the running lab', async () => {
    const labs = JSON.parse(await cli(['lab', 'status', '-o', 'json'])) as LabStatus[];
    const mine = labs.find((l) => l.name === LAB);
    assert.ok(mine, `got labs ${labs.map((l) => l.name).join(',')}, want ${LAB}`);
    assert.equal(mine.running, true, `got running ${mine.running}, want true`);
    assert.equal(mine.endpoints, 3, `got ${mine.endpoints} endpoints, want 3`);
    assert.equal(mine.socket, labPaths(LAB).socket, `got socket ${mine.socket}`);
  });

  test('lab exec runs in the node namespace and passes the exit code through', async () => {
    assert.ok(lab);
    const fe = lab.nodes.find((n) => n.name === 'frontend');
    const be = lab.nodes.find((n) => n.name === 'backend');
    const cases: { argv: string[]; want: number }[] = [
      { argv: ['sh', '-c', `ip -o addr show dev eth0 | grep -q "inet ${fe?.ipv4}/32"`], want: 0 },
      { argv: ['sh', '-c', `getent ahostsv4 backend.${LAB} | grep -q "${be?.ipv4}"`], want: 0 },
      { argv: ['sh', '-c', 'exit 7'], want: 7 },
    ];
    for (const c of cases) {
      const code = await labExec(LAB, 'frontend', c.argv);
      assert.equal(code, c.want, `${c.argv.join(' ')}: got exit ${code}, want ${c.want}`);
    }
    await assert.rejects(labExec(LAB, 'nosuchnode', ['true']), (e: unknown) => e instanceof LabError && e.code === 'ELAB_INVALID', 'got no ELAB_INVALID for an unknown node');
  });

  test('lab down removes everything it made; a second down reports not running', async () => {
    for (const s of servers.splice(0)) s.release(); // lab down must stop processes left in the namespaces
    const r = await labDown(LAB);
    assert.equal(r.wasRunning, true, `got wasRunning ${r.wasRunning}, want true`);
    const present = netnsList().filter((n) => n.startsWith(`${LAB}-`));
    assert.deepEqual(present, [], `got namespaces ${present.join(', ')} after down, want none`);
    const links = sh('ip', ['-o', 'link', 'show']);
    for (const dev of [`${LAB}.h`, `${LAB}.out`]) assert.ok(!links.includes(` ${dev}:`) && !links.includes(` ${dev}@`), `got device ${dev} after down, want none`);
    for (const f of [labPaths(LAB).runDir, `/etc/netns/${LAB}-frontend`, `/etc/netns/${LAB}-outside`]) assert.ok(!existsSync(f), `got ${f} after down, want it gone`);
    const routes = sh('ip', ['-4', 'route', 'show']);
    assert.ok(!routes.includes(POOL4) && !routes.includes(OUTSIDE), `got routes for the lab after down:\n${routes}`);
    assert.equal(readIpForward(), forwardBefore, `got ip_forward ${readIpForward()}, want ${forwardBefore} as before`);

    const again = await labDown(LAB);
    assert.deepEqual({ wasRunning: again.wasRunning, removed: again.removed }, { wasRunning: false, removed: [] }, `got ${JSON.stringify(again)}, want nothing to do`);
    const said = await cli(['lab', 'down', LAB]);
    assert.equal(said, `lab "${LAB}" is not running\n`, `got ${JSON.stringify(said)}`);
  });
});
