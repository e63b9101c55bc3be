/**
 * Hubble compatibility: `observe -o jsonpb` against Hubble's flow schema, Hubble's observe
 * flags, and the Observer gRPC API read by a gRPC client built from our .proto definitions.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { startApiServer, type ApiServer } from '../../src/api/server.js';
import type { FlowEvent } from '../../src/api/types.js';
import { splitNot } from '../../src/cli/observe.js';
import { hubbleDropReason as hubbleDropName, hubbleFlow, toProtoJson } from '../../src/observe/hubble.js';
import { flowFilterPredicate, loadObserverProto, startHubbleServer, type HubbleServer } from '../../src/observe/hubble-server.js';
import { FakeApi, waitFor } from '../api/fake-api.js';
import { CANNED, EV, flow } from './events.js';

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

describe('jsonpb: Hubble flow schema', () => {
  test('a policy drop, field by field', () => {
    const j = toProtoJson({ flow: hubbleFlow(EV.drop133, 'node-a', 'TCP Flags: SYN'), node_name: 'node-a' }) as { flow: Record<string, unknown>; node_name: string };
    const f = j.flow;
    const want: [string, unknown][] = [
      ['time', EV.drop133.time],
      ['verdict', 'DROPPED'],
      ['drop_reason', 133],
      ['drop_reason_desc', 'POLICY_DENIED'],
      ['Type', 'L3_L4'],
      ['node_name', 'node-a'],
      ['traffic_direction', 'INGRESS'],
      ['is_reply', false],
      ['Summary', 'TCP Flags: SYN'],
    ];
    for (const [k, v] of want) assert.deepEqual(f[k], v, `flow.${k}: got ${JSON.stringify(f[k])}, want ${JSON.stringify(v)}`);
    assert.deepEqual(f.IP, { source: '10.42.0.10', destination: '10.42.0.11', ipVersion: 'IPv4' }, `got IP ${JSON.stringify(f.IP)}`);
    assert.deepEqual(f.l4, { TCP: { source_port: 41235, destination_port: 5432, flags: { SYN: true } } }, `got l4 ${JSON.stringify(f.l4)}`);
    assert.deepEqual(f.source, { identity: 256, labels: ['k8s:app=web'], pod_name: 'web' }, `got source ${JSON.stringify(f.source)}`);
    assert.deepEqual(f.event_type, { type: 1, sub_type: 133 }, `got event_type ${JSON.stringify(f.event_type)}`);
    assert.equal(j.node_name, 'node-a', `got node_name ${j.node_name}`);
  });

  test('drop reasons use flow.proto names, not the datapath names', () => {
    const cases: [number, string][] = [
      [181, 'POLICY_DENY'],
      [132, 'INVALID_SOURCE_IP'],
      [175, 'FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND'],
      [196, 'TTL_EXCEEDED'],
      [155, 'CT_MAP_INSERTION_FAILED'],
    ];
    for (const [code, name] of cases) {
      const e = flow({ type: 'drop', verdict: 'DROPPED', reason: [code, 'x'], src: [256, [], '10.0.0.1', 1, 'a'], dst: [257, [], '10.0.0.2', 2, 'b'] });
      const got = (toProtoJson(hubbleFlow(e, '', '')) as { drop_reason_desc?: string }).drop_reason_desc;
      assert.equal(got, name, `code ${code}: got ${got}, want ${name}`);
    }
  });
});

describe('--not splits the raw arguments', () => {
  const cases: { raw: string[]; parsed: Record<string, string[]>; include: Record<string, string[]>; exclude: Record<string, string[]> }[] = [
    { raw: ['observe', '--not', '--from-pod', 'web'], parsed: { fromPod: ['web'] }, include: {}, exclude: { fromPod: ['web'] } },
    { raw: ['observe', '-t', 'drop', '--not', '-t', 'trace'], parsed: { type: ['drop', 'trace'] }, include: { type: ['drop'] }, exclude: { type: ['trace'] } },
    { raw: ['observe', '--not', '--to-port=80', '--verdict', 'DROPPED'], parsed: { toPort: ['80'], verdict: ['DROPPED'] }, include: { verdict: ['DROPPED'] }, exclude: { toPort: ['80'] } },
  ];
  for (const c of cases) {
    test(c.raw.join(' '), () => {
      const got = splitNot(c.raw, c.parsed);
      assert.deepEqual(got.include, c.include, `include: got ${JSON.stringify(got.include)}, want ${JSON.stringify(c.include)}`);
      assert.deepEqual(got.exclude, c.exclude, `exclude: got ${JSON.stringify(got.exclude)}, want ${JSON.stringify(c.exclude)}`);
    });
  }
});

describe('FlowFilter → predicate', () => {
  const cases: { f: Record<string, unknown>; want: (keyof typeof EV)[] }[] = [
    { f: { verdict: ['DROPPED'], event_type: [{ type: 1 }] }, want: ['drop133', 'drop181'] },
    { f: { destination_port: ['6379'] }, want: ['drop181'] },
    { f: { tcp_flags: [{ SYN: true, ACK: true }] }, want: ['reply'] },
    { f: { reply: [true] }, want: ['reply'] },
  ];
  for (const c of cases) {
    test(JSON.stringify(c.f), () => {
      const p = flowFilterPredicate(c.f);
      const got = (Object.keys(EV) as (keyof typeof EV)[]).filter((k) => p(EV[k]));
      for (const w of c.want) assert.ok(got.includes(w), `got ${got.join(',')}, want it to include ${w}`);
      assert.ok(!got.includes('forward') || c.want.includes('forward'), `got forward in ${got.join(',')}, want not`);
    });
  }
  test('an L7 filter is refused', () => {
    assert.throws(() => flowFilterPredicate({ http_method: ['GET'] }), /http_method is not supported/);
  });
});

describe('observe with Hubble flags and the Observer gRPC API', () => {
  let dir: string;
  let sock: string;
  let fake: FakeApi;
  let server: ApiServer;
  let hubble: HubbleServer;
  let client: grpc.Client & Record<string, (...a: unknown[]) => unknown>;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cl96-hubble-'));
    sock = join(dir, 'tunswitch.sock');
    fake = new FakeApi(0x96);
    fake.events = CANNED.slice();
    server = await startApiServer(fake, { socket: sock });
    hubble = await startHubbleServer({ socket: sock, listen: `unix://${join(dir, 'hubble.sock')}`, nodeName: 'cl96-node' });
    const pkg = loadObserverProto();
    const Observer = (pkg.observer as grpc.GrpcObject).Observer as grpc.ServiceClientConstructor;
    client = new Observer(hubble.address, grpc.credentials.createInsecure()) as unknown as typeof client;
  });
  after(async () => {
    client.close();
    await hubble.close();
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('-t drop --not --to-port 6379 -o jsonpb', async () => {
    const r = await cli(['--socket', sock, 'observe', '-t', 'drop', '--not', '--to-port', '6379', '-o', 'jsonpb']);
    assert.equal(r.code, 0, `got exit ${r.code} (${r.stderr}), want 0`);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { flow: { drop_reason_desc: string; l4: { TCP: { destination_port: number } } } });
    const got = lines.map((l) => `${l.flow.drop_reason_desc}:${l.flow.l4.TCP.destination_port}`);
    const want = CANNED.filter((e) => e.event_type === 'drop' && e.destination.port !== 6379 && e.l4?.protocol === 'TCP').map((e) => `${hubbleDropName(e.drop_reason ?? 0)}:${e.l4?.destination_port}`);
    assert.ok(want.length >= 1, 'the canned events have a TCP drop');
    assert.deepEqual(got, want, `got ${got.join(' ')}, want ${want.join(' ')}`);
  });

  test('--first 2, --since/--until, --tcp-flags, -6, --pod', async () => {
    const t0 = CANNED[0] as FlowEvent;
    const t2 = CANNED[2] as FlowEvent;
    const cases: { args: string[]; want: number }[] = [
      { args: ['--first', '2'], want: 2 },
      { args: ['--since', t0.time, '--until', t2.time], want: 3 },
      { args: ['--since', '1s'], want: 0 },
      { args: ['--tcp-flags', 'SYN,ACK'], want: CANNED.filter((e) => /SYN/.test(e.l4?.tcp_flags ?? '') && /ACK/.test(e.l4?.tcp_flags ?? '')).length },
      { args: ['-6'], want: CANNED.filter((e) => e.IP.ipVersion === 'IPv6').length },
      { args: ['--pod', 'default/we', '--all'], want: CANNED.filter((e) => e.source.endpoint?.startsWith('we') || e.destination.endpoint?.startsWith('we')).length },
    ];
    for (const c of cases) {
      const r = await cli(['--socket', sock, 'observe', ...c.args, '-o', 'json']);
      assert.equal(r.code, 0, `${c.args.join(' ')}: got exit ${r.code} (${r.stderr}), want 0`);
      const n = r.stdout.trim() === '' ? 0 : r.stdout.trim().split('\n').length;
      assert.equal(n, c.want, `${c.args.join(' ')}: got ${n} events, want ${c.want}`);
    }
  });

  test('bad Hubble flags are usage errors (exit 2)', async () => {
    for (const args of [['--first', '2', '--follow'], ['--since', 'yesterday'], ['--tcp-flags', 'SYNN'], ['-o', 'yaml']]) {
      const r = await cli(['--socket', sock, 'observe', ...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: got exit ${r.code} (${r.stderr}), want 2`);
    }
  });

  test('-o dict', async () => {
    const r = await cli(['--socket', sock, 'observe', '--last', '1', '-o', 'dict']);
    assert.equal(r.code, 0, `got exit ${r.code} (${r.stderr})`);
    for (const k of ['TIMESTAMP:', 'SOURCE:', 'DESTINATION:', 'TYPE:', 'VERDICT:', 'SUMMARY:']) assert.ok(r.stdout.includes(k), `got ${r.stdout}, want a ${k} line`);
  });

  test('gRPC ServerStatus', async () => {
    const st = await new Promise<Record<string, unknown>>((resolve, reject) =>
      client.ServerStatus({}, (err: Error | null, v: Record<string, unknown>) => (err ? reject(err) : resolve(v))),
    );
    assert.equal(st.num_flows, CANNED.length, `num_flows: got ${String(st.num_flows)}, want ${CANNED.length}`);
    assert.match(String(st.version), /^tunswitch /, `version: got ${String(st.version)}`);
    assert.deepEqual(st.num_connected_nodes, { value: 1 }, `num_connected_nodes: got ${JSON.stringify(st.num_connected_nodes)}`);
  });

  test('gRPC GetFlows: last 3 drops, then follow a new one', async () => {
    const call = client.GetFlows({ number: 3, follow: true, whitelist: [{ verdict: ['DROPPED'] }], blacklist: [{ destination_port: ['6379'] }] }) as grpc.ClientReadableStream<Record<string, unknown>>;
    const got: Record<string, unknown>[] = [];
    call.on('data', (d: Record<string, unknown>) => got.push(d));
    call.on('error', () => undefined);
    const history = CANNED.filter((e) => e.verdict === 'DROPPED' && e.destination.port !== 6379).slice(-3);
    await waitFor(() => got.length >= history.length, 5000);
    const live = flow({ time: new Date().toISOString(), type: 'drop', verdict: 'DROPPED', reason: [181, 'Policy denied by denylist'], dir: 'EGRESS', src: [300, ['k8s:app=cl96'], '10.96.0.5', 40000, 'cl96-a'], dst: [301, [], '10.96.0.6', 8080, 'cl96-b'] });
    await waitFor(() => fake.subscribers > 0, 5000);
    fake.emit(live);
    await waitFor(() => got.length >= history.length + 1, 5000);
    call.cancel();
    const last = got[got.length - 1] as { flow: Record<string, unknown>; node_name: string; time: { seconds: number } };
    const f = last.flow;
    assert.equal(last.node_name, 'cl96-node', `node_name: got ${last.node_name}`);
    assert.equal(f.verdict, 'DROPPED', `verdict: got ${String(f.verdict)}`);
    assert.equal(f.drop_reason_desc, 'POLICY_DENY', `drop_reason_desc: got ${String(f.drop_reason_desc)}`);
    assert.equal(f.traffic_direction, 'EGRESS', `traffic_direction: got ${String(f.traffic_direction)}`);
    assert.deepEqual(f.IP, { source: '10.96.0.5', destination: '10.96.0.6', ipVersion: 'IPv4' }, `IP: got ${JSON.stringify(f.IP)}`);
    assert.deepEqual((f.l4 as { TCP: unknown }).TCP, { source_port: 40000, destination_port: 8080, flags: { SYN: true } }, `l4: got ${JSON.stringify(f.l4)}`);
    assert.deepEqual(f.source, { identity: 300, labels: ['k8s:app=cl96'], pod_name: 'cl96-a' }, `source: got ${JSON.stringify(f.source)}`);
    assert.deepEqual(f.is_reply, { value: false }, `is_reply: got ${JSON.stringify(f.is_reply)}`);
    assert.equal(last.time.seconds, Math.floor(Date.parse(live.time) / 1000), `time: got ${JSON.stringify(last.time)}`);
    const historyGot = got.slice(0, history.length).map((g) => (g.flow as { drop_reason: number }).drop_reason);
    assert.deepEqual(historyGot, history.map((e) => e.drop_reason), `history drop reasons: got ${historyGot.join(',')}`);
  });

  test('monitor --from / --related-to / -j / -v', async () => {
    const cases: { args: string[]; want: string[]; json: boolean }[] = [
      { args: ['--from', 'cl96-a', '-j'], want: ['cl96-a>cl96-b'], json: true },
      { args: ['--related-to', 'cl96-c', '-j'], want: ['cl96-c>cl96-b'], json: true },
      { args: ['--to', 'cl96-a', '-v'], want: ['cl96-b>cl96-a'], json: false },
    ];
    for (const c of cases) {
      // Earlier followers (the gRPC stream, the previous case) must have let go of the stream.
      assert.ok(await waitFor(() => fake.subscribers === 0, 5000), `got ${fake.subscribers} subscribers left, want 0`);
      const before = 0;
      const child = spawn(process.execPath, [ENTRY, '--socket', sock, 'monitor', ...c.args], { env: ENV, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
      const exited = new Promise((r) => child.on('exit', r));
      try {
        assert.ok(await waitFor(() => fake.subscribers > before, 5000), `${c.args.join(' ')}: the monitor never subscribed (subscribers ${fake.subscribers}, before ${before}; ${err})`);
        const ev = (a: string, b: string): FlowEvent => flow({ time: new Date().toISOString(), src: [300, [], '10.96.0.5', 40000, a], dst: [301, [], '10.96.0.6', 80, b] });
        for (const [a, b] of [['cl96-a', 'cl96-b'], ['cl96-c', 'cl96-b'], ['cl96-b', 'cl96-a']] as const) fake.emit(ev(a, b));
        const n = c.want.length;
        await waitFor(() => (c.json ? out.trim().split('\n').filter((l) => l !== '').length >= n : out.includes('cl96-a')), 5000);
        await new Promise((r) => setTimeout(r, 300));
      } finally {
        child.kill('SIGINT');
        await exited;
      }
      if (c.json) {
        const got = out.trim().split('\n').map((l) => JSON.parse(l) as FlowEvent).map((e) => `${e.source.endpoint}>${e.destination.endpoint}`);
        assert.deepEqual(got, c.want, `${c.args.join(' ')}: got ${got.join(' ')}, want ${c.want.join(' ')}`);
      } else {
        assert.match(out, /identity 300->301/, `${c.args.join(' ')}: got ${out}`);
        assert.match(out, /\n {2}verdict +FORWARDED/, `-v: got ${out}, want the fields`);
        assert.ok(!out.includes('source       cl96-c'), `${c.args.join(' ')}: got an event of cl96-c in ${out}`);
      }
    }
  });
});
