/**
 * The Docker watcher (src/docker/watcher.ts) without an engine: a small in-memory engine double
 * (containers, a list call, an events stream) drives the real Agent with in-memory ports.
 * The real engine is exercised by test/e2e/docker.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { Rand } from '../helpers/rand.js';
import { Agent } from '../../src/control/agent.js';
import { TableSet, TableSetWriter } from '../../src/tables/tableset.js';
import { tryParsePrefix, type Prefix } from '../../src/control/cidr.js';
import {
  endpointNameFor,
  endpointRequestFor,
  identityLabelsFor,
  sanitizeEndpointName,
  watchDocker,
  type ContainerFacts,
  type DockerClientLike,
} from '../../src/docker/watcher.js';
import { MemPorts } from '../helpers/mem-ports.js';


function makeAgent(): { agent: Agent; ports: MemPorts } {
  const ts = TableSet.create({ ipcache: { tbl8Groups: 16, leaves: 1024, v6Capacity: 256 }, policyCapacity: 1 << 12, maxEndpoints: 64 });
  const ports = new MemPorts();
  const agent = new Agent(
    {
      name: 't',
      pool4: tryParsePrefix('10.42.0.0/24', false) as Prefix,
      maxEndpoints: 64,
      workers: 1,
      offload: false,
      config: { audit: false, enforcement: 'default' },
      version: 'test',
    },
    new TableSetWriter(ts),
    ports,
    null,
  );
  return { agent, ports };
}

interface FakeContainer {
  id: string;
  name: string;
  labels: Record<string, string>;
  networkMode: string;
  running: boolean;
  pid: number;
}

/** An engine double: containers by id, and the events streams handed out. */
class FakeEngine implements DockerClientLike {
  readonly containers = new Map<string, FakeContainer>();
  readonly streams: PassThrough[] = [];
  nextPid = 1000;

  add(id: string, name: string, labels: Record<string, string>, networkMode = 'none'): FakeContainer {
    const c: FakeContainer = { id, name, labels: { 'tunswitch.enable': 'true', ...labels }, networkMode, running: false, pid: 0 };
    this.containers.set(id, c);
    return c;
  }
  start(id: string, emit = true): void {
    const c = this.containers.get(id) as FakeContainer;
    c.running = true;
    c.pid = this.nextPid++;
    if (emit) this.emit(id, 'start');
  }
  die(id: string, emit = true): void {
    const c = this.containers.get(id) as FakeContainer;
    c.running = false;
    c.pid = 0;
    if (emit) this.emit(id, 'die');
  }
  emit(id: string, action: string): void {
    const s = this.streams[this.streams.length - 1] as PassThrough;
    s.write(JSON.stringify({ Type: 'container', Action: action, status: action, id, Actor: { ID: id, Attributes: {} } }) + '\n');
  }
  async ping(): Promise<unknown> {
    return 'OK';
  }
  async listContainers(opts: { filters: Record<string, string[]> }): Promise<{ Id: string }[]> {
    assert.deepEqual(opts.filters.label, ['tunswitch.enable=true'], `list filter: got ${JSON.stringify(opts.filters)}, want the enable label`);
    return [...this.containers.values()].filter((c) => c.running && c.labels['tunswitch.enable'] === 'true').map((c) => ({ Id: c.id }));
  }
  getContainer(id: string): { inspect(): Promise<never> } {
    return {
      inspect: async () => {
        const c = this.containers.get(id);
        if (!c) throw Object.assign(new Error('no such container'), { json: { message: `No such container: ${id}` } });
        return {
          Id: c.id,
          Name: `/${c.name}`,
          Config: { Labels: { ...c.labels } },
          HostConfig: { NetworkMode: c.networkMode },
          State: { Running: c.running, Pid: c.pid },
        } as never;
      },
    };
  }
  async getEvents(): Promise<NodeJS.ReadableStream> {
    const s = new PassThrough();
    this.streams.push(s);
    return s;
  }
}

/** Waits until the watcher has applied what was written to the stream. */
async function settle(w: { idle(): Promise<void> }): Promise<void> {
  for (let i = 0; i < 3; i++) {
    await new Promise((r) => setImmediate(r));
    await w.idle();
  }
}

test('endpointNameFor: tunswitch.name, compose service (and replica), container name, sanitised', () => {
  const cases: [Record<string, string>, string, string][] = [
    [{ 'com.docker.compose.service': 'frontend' }, 'proj_frontend_1', 'frontend'],
    [{ 'com.docker.compose.service': 'web', 'com.docker.compose.container-number': '3' }, 'proj_web_3', 'web-3'],
    [{ 'com.docker.compose.service': 'web', 'com.docker.compose.container-number': '1' }, 'proj_web_1', 'web'],
    [{ 'tunswitch.name': 'API_v2', 'com.docker.compose.service': 'backend' }, 'x', 'api-v2'],
    [{}, 'My_Container.Name', 'my-container-name'],
    [{}, '--a--b--', 'a-b'],
    [{}, 'x'.repeat(40), 'x'.repeat(32)],
    [{}, `${'a'.repeat(31)}_b`, 'a'.repeat(31)],
    [{}, '___', 'c-0123456789ab'],
  ];
  for (const [labels, name, want] of cases) {
    const got = endpointNameFor({ id: '0123456789abcdef', name, labels });
    assert.equal(got, want, `name ${JSON.stringify(name)} labels ${JSON.stringify(labels)}: got ${got}, want ${want}`);
  }
  const r = new Rand(14);
  for (let i = 0; i < 500; i++) {
    const s = String.fromCharCode(...Array.from({ length: r.range(0, 50) }, () => r.range(32, 126)));
    const got = sanitizeEndpointName(s);
    assert.ok(got === '' || /^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/.test(got), `sanitize(${JSON.stringify(s)}): got ${JSON.stringify(got)}, want an agent-valid name or ""`);
  }
});

test('identityLabelsFor: every workload label as container:, the compose service and project too, other engine and tunswitch labels left out', () => {
  const cases: [Record<string, string>, string[]][] = [
    [{ app: 'web', tier: 'front' }, ['container:app=web', 'container:tier=front']],
    [
      { 'com.docker.compose.project': 'p', 'com.docker.compose.service': 's', 'com.docker.compose.container-number': '1', 'tunswitch.enable': 'true', app: 'db' },
      ['container:app=db', 'container:com.docker.compose.project=p', 'container:com.docker.compose.service=s'],
    ],
    [{ 'org.opencontainers.image.title': 'x', 'io.example/role': 'api', flag: '' }, ['container:flag=', 'container:io.example/role=api']],
    [{}, []],
  ];
  for (const [labels, want] of cases) {
    const got = identityLabelsFor(labels);
    assert.deepEqual(got, want, `labels ${JSON.stringify(labels)}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  }
});

test('endpointRequestFor: address, default route and the network mode check', () => {
  const base: ContainerFacts = { id: 'abc', name: 'c1', labels: { app: 'x' }, networkMode: 'none', running: true, pid: 42 };
  const ok = endpointRequestFor({ ...base, labels: { app: 'x', 'tunswitch.ipv4': '10.42.0.9', 'tunswitch.defaultRoute': 'true' } });
  assert.deepEqual(ok, { name: 'c1', labels: ['container:app=x'], pid: 42, defaultRoute: true, ipv4: '10.42.0.9' }, `got ${JSON.stringify(ok)}`);
  const bad: [Partial<ContainerFacts>, RegExp][] = [
    [{ networkMode: 'bridge' }, /network_mode: none/],
    [{ networkMode: 'container:abc' }, /network_mode: none/],
    [{ running: false, pid: 0 }, /not running/],
    [{ labels: { 'tunswitch.defaultRoute': 'maybe' } }, /tunswitch\.defaultRoute: "maybe" must be true or false/],
  ];
  for (const [patch, want] of bad) {
    assert.throws(() => endpointRequestFor({ ...base, ...patch }), want, `patch ${JSON.stringify(patch)}: want an error matching ${want}`);
  }
});

test('watchDocker: attaches running containers, follows start/die, logs and survives bad ones', async () => {
  const { agent, ports } = makeAgent();
  const eng = new FakeEngine();
  const logs: string[] = [];
  eng.add('aaa111', 'p_frontend_1', { 'com.docker.compose.service': 'frontend', app: 'frontend' });
  eng.add('bbb222', 'p_backend_1', { 'com.docker.compose.service': 'backend', app: 'backend', 'tunswitch.ipv4': '10.42.0.77' });
  eng.add('ccc333', 'bridged', { app: 'x' }, 'bridge');
  eng.start('aaa111', false);
  eng.start('bbb222', false);
  eng.start('ccc333', false);
  const w = await watchDocker(agent, { log: (m) => logs.push(m), client: eng });

  const names = (): string[] => agent.listEndpoints().map((e) => e.name).sort();
  assert.deepEqual(names(), ['backend', 'frontend'], `after start: got ${names().join(',')}, want backend,frontend`);
  const be = agent.getEndpoint('backend');
  assert.equal(be.ipv4, '10.42.0.77', `backend ipv4: got ${be.ipv4}, want the label's 10.42.0.77`);
  // Plus the labels of its namespace (default), as every endpoint gets.
  const own = be.labels.filter((l) => !l.includes('namespace'));
  assert.deepEqual(own, ['container:app=backend', 'container:com.docker.compose.service=backend'], `backend labels: got ${be.labels.join(',')}`);
  assert.equal(be.netns, `/proc/${eng.containers.get('bbb222')?.pid}/ns/net`, `backend netns: got ${be.netns}`);
  assert.equal(logs.filter((l) => l.includes('bridged') && l.includes('network_mode: none')).length, 1, `got logs ${JSON.stringify(logs)}, want one line for the bridged container`);

  // die then start again: detached, then attached into the new process.
  eng.die('bbb222');
  await settle(w);
  assert.deepEqual(names(), ['frontend'], `after die: got ${names().join(',')}, want frontend`);
  eng.start('bbb222');
  await settle(w);
  assert.equal(agent.getEndpoint('backend').netns, `/proc/${eng.containers.get('bbb222')?.pid}/ns/net`, 'backend re-attached into the new pid');

  // A name clash is one log line; the watcher goes on with the next container.
  eng.add('ddd444', 'other', { 'tunswitch.name': 'frontend' });
  eng.add('eee555', 'p_db_1', { 'com.docker.compose.service': 'db', app: 'db' });
  eng.start('ddd444');
  eng.start('eee555');
  // An event split across two chunks, and a stop after a die (already detached: no-op).
  eng.die('eee555', false);
  const s = eng.streams[eng.streams.length - 1] as PassThrough;
  const line = JSON.stringify({ Type: 'container', Action: 'die', Actor: { ID: 'eee555' } }) + '\n';
  s.write(line.slice(0, 10));
  s.write(line.slice(10));
  eng.emit('eee555', 'stop');
  await settle(w);
  assert.deepEqual(names(), ['backend', 'frontend'], `after clash and db die: got ${names().join(',')}, want backend,frontend`);
  assert.ok(logs.some((l) => l.includes('ddd444') && l.includes('already exists')), `got logs ${JSON.stringify(logs)}, want the clash logged`);
  assert.equal(ports.attached.size, 2, `ports: got ${ports.attached.size}, want 2`);

  await w.stop();
  eng.start('eee555');
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(names(), ['backend', 'frontend'], `after stop: got ${names().join(',')}, want no change`);
});

test('watchDocker: a lost events stream is reopened and the containers re-listed', async () => {
  const { agent } = makeAgent();
  const eng = new FakeEngine();
  const logs: string[] = [];
  eng.add('a1', 'one', { app: 'one' });
  eng.add('b2', 'two', { app: 'two' });
  eng.start('a1', false);
  const w = await watchDocker(agent, { log: (m) => logs.push(m), client: eng, retryMs: 5 });
  assert.equal(eng.streams.length, 1, `streams: got ${eng.streams.length}, want 1`);
  (eng.streams[0] as PassThrough).end(); // engine restart
  // While disconnected: one dies, the other starts (no events reach the watcher).
  eng.die('a1', false);
  eng.start('b2', false);
  const deadline = Date.now() + 2000;
  while (Date.now() < deadline && agent.listEndpoints().map((e) => e.name).join(',') !== 'two') {
    await new Promise((r) => setTimeout(r, 10));
    await w.idle();
  }
  const got = agent.listEndpoints().map((e) => e.name).join(',');
  assert.equal(got, 'two', `after reconnect: got ${got}, want two (logs ${JSON.stringify(logs)})`);
  assert.equal(eng.streams.length, 2, `streams: got ${eng.streams.length}, want 2`);
  await w.stop();
});

test('watchDocker: random start/die sequences end with exactly the running containers attached', async () => {
  for (const seed of [1, 2, 3, 4, 5]) {
    const r = new Rand(seed);
    const { agent } = makeAgent();
    const eng = new FakeEngine();
    const ids = Array.from({ length: 6 }, (_, i) => `c${i}`);
    for (const id of ids) eng.add(id, `svc-${id}`, { app: id });
    for (const id of ids) if (r.bool()) eng.start(id, false);
    const w = await watchDocker(agent, { log: () => undefined, client: eng });
    for (let step = 0; step < 60; step++) {
      const id = r.pick(ids);
      const c = eng.containers.get(id) as FakeContainer;
      if (c.running) eng.die(id);
      else eng.start(id);
      if (r.bool(0.3)) await settle(w);
    }
    await settle(w);
    const want = ids.filter((id) => eng.containers.get(id)?.running).map((id) => `svc-${id}`).sort();
    const got = agent.listEndpoints().map((e) => e.name).sort();
    assert.deepEqual(got, want, `seed ${seed}: got ${got.join(',')}, want ${want.join(',')}`);
    for (const e of agent.listEndpoints()) {
      const id = e.name.slice(4);
      assert.equal(e.netns, `/proc/${eng.containers.get(id)?.pid}/ns/net`, `seed ${seed}: ${e.name} netns got ${e.netns}, want the current pid`);
    }
    await w.stop();
  }
});
