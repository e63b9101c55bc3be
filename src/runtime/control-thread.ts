/**
 * The control thread (a worker_thread outside the Piscina pool). It owns the agent (the
 * only writer of the published tables), makes and removes ports (TUN devices moved into
 * namespaces), serves the API on the unix socket and Prometheus metrics, and turns the
 * shards' event rings into flow events.
 *
 * File descriptors are per process, so the TUN fds it opens are handed to the main thread
 * by number ({type: 'addPort'}); the main thread polls and reads them, the shard workers
 * write to them.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { M_TUNNEL_PORT, TableSet, TableSetWriter, UNDERLAY_PORT, type TableSetShared } from '../tables/tableset.js';
import { VXLAN_OVERHEAD } from '../datapath/vxlan.js';
import { Agent, type PortManager, type PortSpec } from '../control/agent.js';
import type { QueueSettings, RuntimeInfo } from '../api/types.js';
import { TunswitchError } from '../control/errors.js';
import { expandPolicyPaths } from '../control/policy/files.js';
import { DatapathView } from '../control/datapath-view.js';
import { TunDevice } from '../io/tun.js';
import { attachEndpoint, netnsExists, setupHostPort } from '../io/netns.js';
import type { QueueConfig, RunConfig } from './config.js';
import { HEALTH_CRASH_LOOP, HEALTH_RESTARTS, HEALTH_STATE, HEALTH_WORDS, IO_ENGINE, IO_PACKETS_READ, SHARD_RUNNING, SHARD_STATE_NAMES, type RuntimeShared } from './shared.js';
import { PQ_INTERVAL, PQ_LIMIT, PQ_TARGET, PQ_WORDS } from './egress.js';
import { buildMetrics } from '../observe/metrics.js';
import { CaptureController } from '../control/capture.js';
import { decodeMessage, postEncoded, type MainToControl, type ControlToMain } from './messages.js';
import { KvCluster } from '../kvstore/cluster.js';
import { registerKvMetrics, registerVxlanMetrics } from '../kvstore/metrics.js';

export interface ControlInit {
  cfg: RunConfig;
  tables: TableSetShared;
  rt: RuntimeShared;
  socket: string;
  stateDir: string | null;
  metricsAddr: string | null;
  version: string;
  /** Non-null: watch the Docker engine and attach labelled containers (run --docker). */
  docker?: { socketPath?: string } | null;
}

const init = workerData as ControlInit;
const port = parentPort;
if (!port) throw new Error('control-thread must run as a worker_thread');

function send(m: ControlToMain): void {
  postEncoded(port as NonNullable<typeof port>, m);
}
function log(msg: string): void {
  send({ type: 'log', msg });
}

class TunPorts implements PortManager {
  private readonly devs = new Map<number, TunDevice>();
  private readonly pendingRemove = new Map<number, () => void>();
  private next = 1; // port 0 is the host port

  private readonly portQueue: Float64Array;

  constructor(
    private readonly cfg: RunConfig,
    portQueue: SharedArrayBuffer,
  ) {
    this.portQueue = new Float64Array(portQueue);
  }

  allocPort(): number {
    while (this.devs.has(this.next)) this.next++;
    return this.next++;
  }

  /** Every port carries a virtio-net header; `offload` decides whether the kernel may send GSO. */
  open(name: string): TunDevice {
    return TunDevice.open(name, { vnetHdr: true, offload: this.cfg.offload });
  }

  /** Egress queue settings of port p (0 words: the runtime's defaults, cfg.queue). */
  private initQueue(p: number, q: Partial<QueueConfig> | undefined): void {
    const b = p * PQ_WORDS;
    this.portQueue[b + PQ_LIMIT] = q?.limitBytes ?? 0;
    this.portQueue[b + PQ_TARGET] = q?.targetMs ?? 0;
    this.portQueue[b + PQ_INTERVAL] = q?.intervalMs ?? 0;
  }

  getQueue(p: number): QueueSettings {
    const b = p * PQ_WORDS;
    const d = this.cfg.queue;
    return {
      limitBytes: (this.portQueue[b + PQ_LIMIT] as number) || d.limitBytes,
      targetMs: (this.portQueue[b + PQ_TARGET] as number) || d.targetMs,
      intervalMs: (this.portQueue[b + PQ_INTERVAL] as number) || d.intervalMs,
    };
  }

  setQueue(p: number, patch: Partial<QueueSettings>): QueueSettings {
    const next = { ...this.getQueue(p), ...patch };
    if (next.targetMs >= next.intervalMs) throw new TunswitchError('EBAD_REQUEST', `queue: target ${next.targetMs} ms must be shorter than interval ${next.intervalMs} ms`);
    // Each word is read by the worker per batch; a torn pair (new target, old interval) for one batch is harmless.
    const b = p * PQ_WORDS;
    this.portQueue[b + PQ_LIMIT] = next.limitBytes;
    this.portQueue[b + PQ_TARGET] = next.targetMs;
    this.portQueue[b + PQ_INTERVAL] = next.intervalMs;
    return next;
  }

  async attach(spec: PortSpec): Promise<{ port: number; tun: string; ifname: string }> {
    if (spec.netns !== undefined && !(await netnsExists(spec.netns))) {
      throw new Error(`endpoint "${spec.name}": network namespace "${spec.netns}" does not exist`);
    }
    const p = this.allocPort();
    const tunName = `${this.cfg.name}.${p}`;
    const dev = this.open(tunName);
    this.devs.set(p, dev);
    try {
      const opts: Parameters<typeof attachEndpoint>[0] = {
        tun: dev.name,
        netns: spec.netns !== undefined ? { name: spec.netns } : { pid: spec.pid as number },
        ifname: 'eth0',
        // With a VXLAN underlay the endpoint MTU leaves room for the 50-byte encapsulation.
        mtu: this.cfg.underlay ? this.cfg.mtu - VXLAN_OVERHEAD : this.cfg.mtu,
        txqueuelen: this.cfg.txqueuelen,
        routes: spec.routes,
        defaultRoute: spec.defaultRoute,
      };
      if (spec.ipv4) {
        opts.ipv4 = spec.ipv4;
        opts.ipv4Prefix = spec.ipv4Prefix;
      }
      if (spec.ipv6) {
        opts.ipv6 = spec.ipv6;
        opts.ipv6Prefix = spec.ipv6Prefix;
      }
      await attachEndpoint(opts);
    } catch (e) {
      this.devs.delete(p);
      dev.close();
      throw e;
    }
    // SIGTERM while this endpoint was being set up: closeAll() has closed the device (or is
    // about to); handing its fd to the I/O thread now would poll a closed descriptor.
    if (stopping || this.devs.get(p) !== dev) {
      if (this.devs.get(p) === dev) {
        this.devs.delete(p);
        dev.close();
      }
      throw new Error(`endpoint "${spec.name}": the switch is stopping`);
    }
    this.initQueue(p, this.cfg.nodes.find((n) => n.name === spec.name)?.queue);
    send({ type: 'addPort', port: p, fd: dev.fd });
    return { port: p, tun: tunName, ifname: 'eth0' };
  }

  async addHostPort(addrs: { ipv4: string; ipv6?: string }, routes: string[]): Promise<{ port: number; fd: number; name: string }> {
    const name = `${this.cfg.name}.h`;
    const dev = this.open(name);
    this.devs.set(0, dev);
    const ho: Parameters<typeof setupHostPort>[1] = { ipv4: `${addrs.ipv4}/32`, routes };
    if (addrs.ipv6) ho.ipv6 = `${addrs.ipv6}/128`;
    await setupHostPort(dev.name, ho);
    send({ type: 'addPort', port: 0, fd: dev.fd });
    return { port: 0, fd: dev.fd, name };
  }

  detach(p: number): Promise<void> {
    const dev = this.devs.get(p);
    if (!dev) return Promise.resolve();
    return new Promise<void>((res) => {
      this.pendingRemove.set(p, () => {
        this.devs.delete(p);
        try {
          dev.close(); // a non-persistent TUN disappears with its last fd, in any namespace
        } catch {
          /* already gone */
        }
        res();
      });
      send({ type: 'removePort', port: p });
    });
  }

  portRemoved(p: number): void {
    const fn = this.pendingRemove.get(p);
    this.pendingRemove.delete(p);
    if (fn) fn();
  }

  async closeAll(): Promise<void> {
    for (const p of [...this.devs.keys()]) await this.detach(p);
  }
}

let stopping = false;

async function main(): Promise<void> {
  const { cfg } = init;
  // Set once start-up reaches them; shutdown may run before (a start-up step failed).
  const started: { timer?: ReturnType<typeof setInterval>; server?: { close(): Promise<void> }; docker?: { stop(): Promise<void> }; kv?: KvCluster } = {};
  const tables = TableSet.attach(init.tables);
  const writer = new TableSetWriter(tables);
  const view = new DatapathView(init.rt.conntrack, init.rt.counters, init.rt.events, init.rt.rings);
  const ports = new TunPorts(cfg, init.rt.portQueue);
  const agentOpts: ConstructorParameters<typeof Agent>[0] = {
    name: cfg.name,
    pool4: cfg.pool.ipv4,
    maxEndpoints: 4096,
    workers: cfg.workers,
    offload: cfg.offload,
    config: { audit: cfg.audit, enforcement: cfg.enforcement },
    version: init.version,
  };
  if (cfg.pool.ipv6) agentOpts.pool6 = cfg.pool.ipv6;
  if (init.stateDir) agentOpts.stateDir = init.stateDir;
  const agent = new Agent(agentOpts, writer, ports, view);
  agent.runtimeInfo = runtimeInfo(init.rt);
  if (init.rt.capture) agent.capturer = new CaptureController(init.rt.capture); // tunswitch capture

  port!.on('message', (raw: unknown) => {
    const m = decodeMessage<MainToControl>(raw, 'control thread');
    if (m.type === 'portRemoved') ports.portRemoved(m.port);
    else if (m.type === 'workerRestart') {
      agent.workerRestarts = m.total;
      agent.lastWorkerRestart = `shard ${m.shard}: ${m.reason}${m.crashLoop ? ' (crash loop: backing off)' : ''}`;
    }
    else if (m.type === 'shutdown') void shutdown();
  });

  // VXLAN underlay port (opened by the main thread): packets to tunnel endpoints go there.
  if (cfg.underlay) {
    writer.setMeta(M_TUNNEL_PORT, UNDERLAY_PORT + 1);
    writer.bumpPolicyRevision();
    writer.commit();
  }

  // Cluster mode: join etcd before any endpoint, so endpoints get cluster-wide identities.
  if (cfg.kvstore) {
    const k = cfg.kvstore;
    const kv = new KvCluster(agent, { url: k.url, node: k.nodeName, nodeIp: k.nodeIp, leaseTtl: k.leaseTtl, log });
    started.kv = kv;
    await kv.start(); // rejects (fatal) when etcd does not answer within 10 s
  }

  // Host port: reserved:host traffic and the way to the world.
  if (cfg.hostPort) {
    const h4 = agent.ipam.hostAddress4();
    const h6 = agent.ipam.hostAddress6();
    const routes = [cfg.pool.ipv4.text];
    if (cfg.pool.ipv6) routes.push(cfg.pool.ipv6.text);
    const addrs: { ipv4: string; ipv6?: string } = { ipv4: h4 };
    if (h6) addrs.ipv6 = h6;
    const hp = await ports.addHostPort(addrs, routes);
    agent.setHostPort(0, h6 ? [`${h4}/32`, `${h6}/128`] : [`${h4}/32`]);
    log(`host port ${hp.name}: ${h4}${h6 ? ` ${h6}` : ''}`);
  }

  // Restore state, then the config's nodes (config wins for nodes it names).
  const restored = agent.restore();
  const wanted = new Map<string, { labels: Record<string, string> | string[]; ipv4?: string; ipv6?: string; defaultRoute: boolean; netns: string }>();
  for (const n of cfg.nodes) {
    const w: { labels: Record<string, string>; ipv4?: string; ipv6?: string; defaultRoute: boolean; netns: string } = {
      labels: n.labels,
      defaultRoute: n.defaultRoute,
      netns: `${cfg.name}-${n.name}`,
    };
    if (n.ipv4) w.ipv4 = n.ipv4;
    if (n.ipv6) w.ipv6 = n.ipv6;
    wanted.set(n.name, w);
  }
  for (const e of restored) {
    if (wanted.has(e.name) || !e.netns) continue;
    const w: { labels: string[]; ipv4?: string; ipv6?: string; defaultRoute: boolean; netns: string } = { labels: e.labels, defaultRoute: e.defaultRoute, netns: e.netns };
    if (e.ipv4) w.ipv4 = e.ipv4;
    if (e.ipv6) w.ipv6 = e.ipv6;
    wanted.set(e.name, w);
  }
  const missing: string[] = [];
  for (const [name, w] of wanted) {
    if (stopping) return; // SIGTERM during start-up: shutdown() removes what was made; attach no more
    if (!(await netnsExists(w.netns))) {
      missing.push(`${name} (namespace ${w.netns})`);
      continue;
    }
    try {
      const req: Parameters<Agent['addEndpoint']>[0] = { name, labels: w.labels, netns: w.netns, defaultRoute: w.defaultRoute };
      if (w.ipv4) req.ipv4 = w.ipv4;
      if (w.ipv6) req.ipv6 = w.ipv6;
      const info = await agent.addEndpoint(req);
      log(`endpoint ${info.name}: ${info.ipv4 ?? ''}${info.ipv6 ? ` ${info.ipv6}` : ''} identity ${info.identity} port ${info.port}`);
    } catch (e) {
      log(`endpoint ${name}: not attached: ${(e as Error).message}`);
    }
  }
  if (missing.length > 0) log(`not attached, namespace missing: ${missing.join(', ')}`);

  const files = await expandPolicyPaths(
    cfg.policies.map((p) => resolve(cfg.baseDir, p)),
    { emptyFolderIsError: false },
  );
  for (const f of files) {
    const r = agent.importPolicies(readFileSync(f, 'utf8'), f);
    log(`policy ${f}: ${r.policies.join(', ')} (revision ${r.revision})`);
  }

  // Events: drain the shard rings into the agent's flow log ten times a second.
  const names = {
    identityLabels: (id: number) => agent.identityLabels(id),
    endpointName: (ep: number) => agent.endpointByIndex(ep)?.name,
    ruleName: (c: number) => agent.ruleName(c),
    defaultDenyBy: (ep: number, dir: 'ingress' | 'egress') => agent.defaultDenyBy(ep, dir),
  };
  started.timer = setInterval(() => view.drainEvents(names, (e) => agent.pushEvent(e)), 100);

  const metrics = buildMetrics(agent, view, init.rt.ioStats);
  if (started.kv) registerKvMetrics(metrics.registry, started.kv);
  if (cfg.underlay) registerVxlanMetrics(metrics.registry, init.rt.counters);
  agent.metricsText = () => metrics.text();

  const { startApiServer } = await import('../api/server.js');
  const srvOpts: { socket: string; metricsAddr?: string } = { socket: init.socket };
  if (init.metricsAddr) srvOpts.metricsAddr = init.metricsAddr;
  if (stopping) return;
  started.server = await startApiServer(agent, srvOpts);
  if (stopping) {
    // shutdown() ran while the server was starting and could not close it.
    await started.server.close().catch(() => undefined);
    return;
  }
  log(`API on ${init.socket}${init.metricsAddr ? `, metrics on http://${init.metricsAddr}/metrics` : ''}`);

  // Docker mode: running labelled containers become endpoints, then the engine's events are
  // followed. After the policies, so a container's first packet already meets its policy.
  if (init.docker) {
    const { watchDocker } = await import('../lab/docker.js');
    const dopts: Parameters<typeof watchDocker>[1] = { log };
    if (init.docker.socketPath) dopts.socketPath = init.docker.socketPath;
    started.docker = await watchDocker(agent, dopts); // rejects (fatal) if the engine is unreachable
    if (stopping) {
      // shutdown() ran while the watcher was starting and could not stop it.
      await started.docker.stop().catch(() => undefined);
      return;
    }
  }
  send({ type: 'ready', endpoints: agent.listEndpoints().length, missing });

  async function shutdown(): Promise<void> {
    if (stopping) return;
    stopping = true;
    if (started.timer) clearInterval(started.timer);
    // First: no container may be attached while the devices are being removed.
    if (started.docker) await started.docker.stop().catch((e: unknown) => log(`docker: stop: ${(e as Error).message}`));
    if (started.server) await started.server.close().catch(() => undefined);
    await agent.detachAll();
    await ports.closeAll();
    // Leave the cluster: revoking the lease deletes this node's keys at once.
    if (started.kv) await started.kv.stop(true).catch((e: unknown) => log(`kvstore: stop: ${(e as Error).message}`));
    send({ type: 'stopped' });
  }
}

main().catch((e: unknown) => {
  send({ type: 'fatal', msg: (e as Error).message ?? String(e) });
});

/** The runtime facts `status` reports: engine, per-shard liveness (written by the supervisor). */
function runtimeInfo(rt: RuntimeShared): () => RuntimeInfo {
  const health = new Int32Array(rt.health);
  const io = rt.ioStats ? new Float64Array(rt.ioStats) : null;
  return () => {
    const shards: RuntimeInfo['shards'] = [];
    for (let k = 0; k < rt.rings.length; k++) {
      const b = k * HEALTH_WORDS;
      shards.push({
        shard: k,
        state: SHARD_STATE_NAMES[Atomics.load(health, b + HEALTH_STATE)] ?? 'unknown',
        restarts: Atomics.load(health, b + HEALTH_RESTARTS),
        crashLoop: Atomics.load(health, b + HEALTH_CRASH_LOOP) === 1,
      });
    }
    return {
      ioEngine: io !== null && io[IO_ENGINE] === 1 ? 'uring' : 'readwrite',
      packetsRead: io !== null ? (io[IO_PACKETS_READ] as number) : 0,
      shards,
      healthy: shards.every((s) => s.state === SHARD_STATE_NAMES[SHARD_RUNNING] && !s.crashLoop),
    };
  };
}
