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
import { existsSync, readFileSync } from 'node:fs';
import type { ApiServerOptions } from '../api/server.js';
import { resolve } from 'node:path';
import { underlayDeviceMtu, tunnelInnerMtu } from './underlay-mtu.js';
import { MAX_PORTS, M_TUNNEL_MTU, M_TUNNEL_PORT, TableSet, TableSetWriter, UNDERLAY_PORT, type TableSetShared } from '../tables/tableset.js';
import { VXLAN_OVERHEAD } from '../datapath/vxlan.js';
import { Agent, type PortManager, type PortSpec } from '../control/agent.js';
import type { QueueSettings, RuntimeInfo } from '../api/types.js';
import { TunswitchError } from '../control/errors.js';
import { expandPolicyPaths } from '../control/policy/files.js';
import { decodePolicyBytes } from '../control/policy/parse.js';
import { DatapathView } from '../control/datapath-view.js';
import { toFlow } from '../observe/flow.js';
import { TunDevice } from '../io/tun.js';
import { addHostPortNetwork, attachEndpoint, netnsExists, prepareHandoff, removeHostPortNetwork, setupHostPort } from '../io/netns.js';
import type { NodeConfig, QueueConfig, RunConfig } from './config.js';
import { HEALTH_CRASH_LOOP, HEALTH_RESTARTS, HEALTH_STATE, HEALTH_WORDS, IO_ENGINE, IO_PACKETS_READ, SHARD_RUNNING, SHARD_STATE_NAMES, type RuntimeShared } from './shared.js';
import { PQ_INTERVAL, PQ_LIMIT, PQ_TARGET, PQ_WORDS } from './egress.js';
import { LinkTable } from './impair.js';
import { parseLinkSpec, type LinkParams } from './link-spec.js';
import { checkQueuePatch } from '../api/validate.js';
import type { StateEndpoint } from '../control/state-store.js';
import { claimPools, type PoolClaim } from './pools.js';
import { prefixContains, tryParsePrefix, type Prefix } from '../control/cidr.js';
import type { DriverHost, NetworkSubnet } from '../docker/driver.js';
import { buildMetrics } from '../observe/metrics.js';
import { CaptureController } from '../control/capture.js';
import { decodeMessage, postEncoded, type MainToControl, type ControlToMain } from './messages.js';
import { KvCluster } from '../kvstore/cluster.js';
import { registerKvMetrics, registerVxlanMetrics } from '../kvstore/metrics.js';
import { registerGsoMetrics } from '../observe/gso-metrics.js';
import { offloadFlagNames, offloadWanted } from './offload.js';
import { InternalError } from '../proto/errors.js';

export interface ControlInit {
  cfg: RunConfig;
  tables: TableSetShared;
  rt: RuntimeShared;
  socket: string;
  stateDir: string | null;
  forcePartialRestore?: boolean;
  metricsAddr: string | null;
  version: string;
  /**
   * Non-null: Docker mode (run --docker): attach labelled containers (network_mode: none)
   * and serve the network driver `driverName` (null: no driver) on `pluginDir`/NAME.sock.
   */
  docker?: { socketPath?: string; driverName?: string | null; pluginDir?: string } | null;
}

const init = workerData as ControlInit;
const port = parentPort;
if (!port) throw new InternalError('control-thread must run as a worker_thread');

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
  private readonly portOffload: Int32Array;
  private readonly links: LinkTable;

  constructor(
    private readonly cfg: RunConfig,
    portQueue: SharedArrayBuffer,
    portOffload: SharedArrayBuffer,
    link: SharedArrayBuffer,
  ) {
    this.portQueue = new Float64Array(portQueue);
    this.portOffload = new Int32Array(portOffload);
    this.links = new LinkTable(link, MAX_PORTS);
  }

  /** Link impairments of port p (src/runtime/impair.ts), null when off; applied at the workers' next round. */
  getLink(p: number): LinkParams | null {
    return this.links.get(p);
  }

  setLink(p: number, lp: LinkParams | null): void {
    this.links.set(p, lp);
  }

  allocPort(): number {
    while (this.devs.has(this.next)) this.next++;
    return this.next++;
  }

  /**
   * Every port carries a virtio-net header; offload (the port's, else the config's) decides
   * whether the endpoint's kernel may send GSO. The worker reads the flags from portOffload.
   */
  open(name: string, p: number, offload?: boolean): TunDevice {
    const dev = TunDevice.open(name, { vnetHdr: true, offload: offloadWanted(this.cfg, offload) });
    Atomics.store(this.portOffload, p, dev.offload);
    return dev;
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

  async attach(spec: PortSpec): Promise<{ port: number; tun: string; ifname: string; offload: string[] }> {
    if (spec.netns !== undefined && !(await netnsExists(spec.netns))) {
      throw new TunswitchError('ENETNS_NOT_FOUND', `endpoint "${spec.name}": network namespace "${spec.netns}" does not exist (ip netns list)`);
    }
    if (spec.pid !== undefined && !existsSync(`/proc/${spec.pid}/ns/net`)) {
      throw new TunswitchError('ENETNS_NOT_FOUND', `endpoint "${spec.name}": process ${spec.pid} does not exist`);
    }
    const p = this.allocPort();
    const tunName = `${this.cfg.name}.${p}`;
    const dev = this.open(tunName, p, spec.offload);
    this.devs.set(p, dev);
    if (spec.handoff === true) {
      // Docker network driver: the engine moves, renames and addresses the device.
      try {
        await prepareHandoff(dev.name, this.cfg.mtu, this.cfg.txqueuelen);
      } catch (e) {
        this.devs.delete(p);
        dev.close();
        throw e;
      }
      if (stopping) {
        this.devs.delete(p);
        dev.close();
        throw new TunswitchError('ESTOPPING', `endpoint "${spec.name}": the switch is stopping`);
      }
      this.initQueue(p, undefined);
      this.links.set(p, null);
      send({ type: 'addPort', port: p, fd: dev.fd });
      return { port: p, tun: dev.name, ifname: 'eth0', offload: offloadFlagNames(dev.offload) };
    }
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
      throw new TunswitchError('ESTOPPING', `endpoint "${spec.name}": the switch is stopping`);
    }
    this.initQueue(p, this.cfg.nodes.find((n) => n.name === spec.name)?.queue);
    this.links.set(p, this.cfg.nodes.find((n) => n.name === spec.name)?.link ?? null); // the lab file's link: block
    send({ type: 'addPort', port: p, fd: dev.fd });
    return { port: p, tun: tunName, ifname: 'eth0', offload: offloadFlagNames(dev.offload) };
  }

  /** The host port's device name, or null when there is none. */
  hostPortName(): string | null {
    return this.devs.get(0)?.name ?? null;
  }

  async addHostPort(addrs: { ipv4: string; ipv6?: string }, routes: string[]): Promise<{ port: number; fd: number; name: string }> {
    const name = `${this.cfg.name}.h`;
    const dev = this.open(name, 0);
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
/** This switch's claims on the pool registry (src/runtime/pools.ts): released on any exit path. */
const poolClaims: PoolClaim[] = [];
/** Docker networks of the driver: their claim on the pool registry and host port routes. */
const dockerNets = new Map<string, { claim?: PoolClaim; extra: { p: Prefix; gw: string }[] }>();

async function main(): Promise<void> {
  const { cfg } = init;
  // Set once start-up reaches them; shutdown may run before (a start-up step failed).
  const started: {
    timer?: ReturnType<typeof setInterval>;
    server?: { close(): Promise<void> };
    docker?: { stop(): Promise<void> };
    driver?: { close(): Promise<void> };
    dns?: { close(): Promise<void> };
    kv?: KvCluster;
  } = {};
  const tables = TableSet.attach(init.tables);
  const writer = new TableSetWriter(tables);
  const view = new DatapathView(init.rt.conntrack, init.rt.counters, init.rt.events, init.rt.rings, init.rt.fragments);
  const ports = new TunPorts(cfg, init.rt.portQueue, init.rt.portOffload, init.rt.link);
  const agentOpts: ConstructorParameters<typeof Agent>[0] = {
    name: cfg.name,
    pool4: cfg.pool.ipv4,
    maxEndpoints: 4096,
    workers: cfg.workers,
    offload: cfg.offload,
    config: { audit: cfg.audit, enforcement: cfg.enforcement, cidrMatchPods: cfg.cidrMatchPods },
    version: init.version,
  };
  if (cfg.pool.ipv6) agentOpts.pool6 = cfg.pool.ipv6;
  if (init.stateDir) agentOpts.stateDir = init.stateDir;
  const restarts = { total: 0, last: '' };
  const rtInfo = runtimeInfo(init.rt);
  let metrics: ReturnType<typeof buildMetrics> | null = null; // built from the agent, below
  const agent = new Agent(agentOpts, writer, ports, view, {
    runtime: () => ({ ...rtInfo(), workerRestarts: restarts.total, lastWorkerRestart: restarts.last }),
    capture: init.rt.capture ? new CaptureController(init.rt.capture) : null, // tunswitch capture
    metrics: () => (metrics ? metrics.text() : Promise.resolve('')),
  });

  port!.on('message', (raw: unknown) => {
    const m = decodeMessage<MainToControl>(raw, 'control thread');
    if (m.type === 'portRemoved') ports.portRemoved(m.port);
    else if (m.type === 'workerRestart') {
      restarts.total = m.total;
      restarts.last = `shard ${m.shard}: ${m.reason}${m.crashLoop ? ' (crash loop: backing off)' : ''}`;
    }
    else if (m.type === 'shutdown') void shutdown();
  });

  // Pool safety: no other switch, lab or Docker network may use an overlapping prefix.
  {
    const prefixes = [cfg.pool.ipv4.text];
    if (cfg.pool.ipv6) prefixes.push(cfg.pool.ipv6.text);
    poolClaims.push(claimPools(prefixes, `switch "${cfg.name}" (pid ${process.pid}, API ${init.socket})`));
  }

  // VXLAN underlay port (opened by the main thread): packets to tunnel endpoints go there.
  if (cfg.underlay) {
    writer.setMeta(M_TUNNEL_PORT, UNDERLAY_PORT + 1);
    // Packets over the tunnel's inner MTU get ICMP frag-needed / packet too big (src/runtime/underlay-mtu.ts).
    const dev = underlayDeviceMtu(cfg.underlay.ip);
    const inner = tunnelInnerMtu(cfg.mtu, dev);
    writer.setMeta(M_TUNNEL_MTU, inner);
    log(`underlay: ${cfg.underlay.ip} on ${dev ? `${dev.dev} (mtu ${dev.mtu})` : 'an unknown device'}; packets over ${inner} bytes to other nodes get ICMP frag-needed / packet too big`);
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
    // Names: endpoints (and "host") answered by DNS on the host port's addresses.
    const { serveDns } = await import('./dns.js');
    const lookup = (n: string): { ipv4: string[]; ipv6: string[] } | null => {
      if (n === 'host') return { ipv4: [h4], ipv6: h6 ? [h6] : [] };
      const e = agent.listEndpoints().find((x) => x.name === n);
      return e ? { ipv4: e.ipv4 ? [e.ipv4] : [], ipv6: e.ipv6 ? [e.ipv6] : [] } : null;
    };
    try {
      started.dns = await serveDns(h6 ? [h4, h6] : [h4], cfg.name, lookup, log);
      log(`dns: endpoint names on ${h4}${h6 ? ` ${h6}` : ''} port 53 (NAME or NAME.${cfg.name})`);
    } catch (e) {
      log(`${(e as Error).message}; names resolve through hosts files only`);
    }
  }

  // Restore state, then the config's nodes (config wins for nodes it names).
  const restored = agent.restore({ forcePartial: init.forcePartialRestore === true, log, identitiesFromCluster: cfg.kvstore !== undefined });
  // Namespaces first: endpoints take their labels from them.
  for (const [ns, labels] of Object.entries(cfg.namespaces)) agent.putNamespace(ns, { labels });
  type Wanted = { labels: Record<string, string> | string[]; ipv4?: string; ipv6?: string; defaultRoute: boolean; netns: string; namespace?: string; ports?: NodeConfig['ports']; offload?: boolean };
  const wanted = new Map<string, Wanted>();
  for (const n of cfg.nodes) {
    const w: Wanted = {
      labels: n.labels,
      defaultRoute: n.defaultRoute,
      netns: `${cfg.name}-${n.name}`,
      namespace: n.namespace,
      ports: n.ports,
    };
    if (n.ipv4) w.ipv4 = n.ipv4;
    if (n.ipv6) w.ipv6 = n.ipv6;
    if (n.offload !== undefined) w.offload = n.offload;
    wanted.set(n.name, w);
  }
  for (const e of restored) {
    if (wanted.has(e.name) || !e.netns) continue;
    const w: Wanted = { labels: e.labels, defaultRoute: e.defaultRoute, netns: e.netns };
    if (e.offload !== undefined) w.offload = e.offload;
    if (e.ipv4) w.ipv4 = e.ipv4;
    if (e.ipv6) w.ipv6 = e.ipv6;
    wanted.set(e.name, w);
  }
  const saved = new Map(restored.map((e) => [e.name, e]));
  const missing: string[] = [];
  for (const [name, w] of wanted) {
    if (stopping) return; // SIGTERM during start-up: shutdown() removes what was made; attach no more
    if (!(await netnsExists(w.netns))) {
      missing.push(`${name} (namespace ${w.netns})`);
      continue;
    }
    try {
      const req: Parameters<Agent['addEndpoint']>[0] = { name, labels: w.labels, netns: w.netns, defaultRoute: w.defaultRoute };
      if (w.namespace !== undefined) req.namespace = w.namespace;
      if (w.ports !== undefined && w.ports.length > 0) req.ports = w.ports;
      if (w.ipv4) req.ipv4 = w.ipv4;
      if (w.ipv6) req.ipv6 = w.ipv6;
      if (w.offload !== undefined) req.offload = w.offload;
      const info = await agent.addEndpoint(req);
      log(`endpoint ${info.name}: ${info.ipv4 ?? ''}${info.ipv6 ? ` ${info.ipv6}` : ''} identity ${info.identity} port ${info.port}`);
      const s = saved.get(name);
      if (s) restorePortSettings(agent, s, cfg.nodes.find((n) => n.name === name), log);
    } catch (e) {
      log(`endpoint ${name}: not attached: ${(e as Error).message}`);
    }
  }
  if (missing.length > 0) log(`not attached, namespace missing: ${missing.join(', ')}`);

  const files = await expandPolicyPaths(
    cfg.policies.map((p) => resolve(cfg.baseDir, p)),
    { emptyFolderIsError: false },
  );
  if (files.length > 0) {
    // All files or none, one revision; a folder of policies may hold an empty file (e.g.
    // everything commented out) at start-up.
    const r = agent.importPolicies(files.map((f) => ({ text: decodePolicyBytes(readFileSync(f), f), fileName: f })), true);
    for (const f of r.files ?? []) log(`policy ${f.fileName}: ${f.policies.join(', ')} (revision ${r.revision})`);
  }

  // Events: drain the shard rings into the agent's flow log ten times a second.
  const names = {
    identityLabels: (id: number) => agent.identityLabels(id),
    endpointName: (ep: number) => agent.endpointByIndex(ep)?.name,
    ruleName: (c: number) => agent.ruleName(c),
    defaultDenyBy: (ep: number, dir: 'ingress' | 'egress') => agent.defaultDenyBy(ep, dir),
    // kvstore mode: node names for observe (src/kvstore/cluster.ts remoteNode)
    ...(started.kv ? { localNode: cfg.kvstore?.nodeName ?? cfg.name, remoteNode: (ip: string) => started.kv?.remoteNode(ip) } : {}),
  };
  started.timer = setInterval(() => view.drainEvents((r) => agent.pushEvent(toFlow(r, names))), 100);

  metrics = buildMetrics(agent, view, init.rt.ioStats);
  if (started.kv) registerKvMetrics(metrics.registry, started.kv);
  if (cfg.underlay) registerVxlanMetrics(metrics.registry, init.rt.counters);
  registerGsoMetrics(metrics.registry, init.rt.counters);

  const { startApiServer } = await import('../api/server.js');
  const srvOpts: ApiServerOptions = {
    socket: init.socket,
    // a bug behind an API request: the whole stack in the log, under the id the 500 carries
    onInternalError: (e, r) => log(`API internal error, request ${r.requestId} (${r.method} ${r.path}): ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`),
  };
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
    const { watchDocker } = await import('../docker/watcher.js');
    const dopts: Parameters<typeof watchDocker>[1] = { log };
    if (init.docker.socketPath) dopts.socketPath = init.docker.socketPath;
    started.docker = await watchDocker(agent, dopts); // rejects (fatal) if the engine is unreachable
    if (stopping) {
      // shutdown() ran while the watcher was starting and could not stop it.
      await started.docker.stop().catch(() => undefined);
      return;
    }
    const driverName = init.docker.driverName === undefined ? 'tunswitch' : init.docker.driverName;
    if (driverName !== null) {
      started.driver = await startDriver(driverName, init.docker.socketPath, init.docker.pluginDir);
      if (stopping) {
        await started.driver.close().catch(() => undefined);
        return;
      }
    }
  }
  send({ type: 'ready', endpoints: agent.listEndpoints().length, missing });

  /**
   * The Docker network driver's view of the switch. A network's subnet inside the switch's
   * own pool shares it (the gateway is the host port's address); any other subnet is claimed
   * like a pool (refused if someone else uses it) and routed through the host port.
   */
  async function startDriver(name: string, dockerSocket: string | undefined, pluginDir: string | undefined): Promise<{ close(): Promise<void> }> {
    const { NetworkDriver, serveDriver, dockerResolver, PLUGIN_DIR } = await import('../docker/driver.js');
    const { default: Docker } = await import('dockerode');
    const client = dockerSocket ? new Docker({ socketPath: dockerSocket }) : new Docker();
    const host: DriverHost = {
      addNetwork: async (id, what, v4, v6) => {
        if (dockerNets.has(id)) return;
        const subnets: NetworkSubnet[] = v6 ? [v4, v6] : [v4];
        const own: Prefix[] = [];
        const extra: { p: Prefix; gw: string }[] = [];
        for (const s of subnets) {
          const p = tryParsePrefix(s.pool, false);
          if (!p) throw new TunswitchError('ECIDR_INVALID', `${what}: subnet ${JSON.stringify(s.pool)} is not a prefix`);
          const mine = p.family === 4 ? cfg.pool.ipv4 : cfg.pool.ipv6;
          if (mine && prefixContains(mine, p)) own.push(p);
          else extra.push({ p, gw: s.gateway });
        }
        const hp = ports.hostPortName();
        if (extra.length > 0 && hp === null) throw new TunswitchError('EBAD_REQUEST', `${what}: subnet ${extra.map((x) => x.p.text).join(' ')} is outside the switch's pool and the switch has no host port (hostPort: false)`);
        const claim = extra.length > 0 ? claimPools(extra.map((x) => x.p.text), `Docker ${what} of switch "${cfg.name}" (pid ${process.pid})`, { ownDevices: hp ? [hp] : [] }) : undefined;
        try {
          for (const x of extra) {
            agent.ipam.addExtraPool(x.p);
            await addHostPortNetwork(hp as string, x.gw, x.p.text);
            if (x.gw !== '') agent.addHostAddress(x.p.family === 4 ? `${x.gw}/32` : `${x.gw}/128`);
          }
        } catch (e) {
          claim?.release();
          throw e;
        }
        const rec: { claim?: PoolClaim; extra: { p: Prefix; gw: string }[] } = { extra };
        if (claim) rec.claim = claim;
        dockerNets.set(id, rec);
      },
      removeNetwork: async (id) => {
        const n = dockerNets.get(id);
        if (!n) return;
        dockerNets.delete(id);
        const hp = ports.hostPortName();
        for (const x of n.extra) {
          agent.ipam.removeExtraPool(x.p);
          if (x.gw !== '') agent.removeHostAddress(x.p.family === 4 ? `${x.gw}/32` : `${x.gw}/128`);
          if (hp) await removeHostPortNetwork(hp, x.gw, x.p.text).catch(() => undefined);
        }
        n.claim?.release();
      },
      addHandoffEndpoint: async (req, sandbox) => {
        const info = await agent.addEndpoint(req, undefined, { sandbox });
        return { tun: info.tun };
      },
      deleteEndpoint: (n) => agent.deleteEndpoint(n),
      hasEndpoint: (n) => agent.listEndpoints().some((e) => e.name === n),
      setLink: (n, lp) => void agent.setEndpointLink(n, lp),
    };
    const driver = new NetworkDriver(name, host, dockerResolver(client as never), log);
    await driver.adoptExisting().catch((e: unknown) => log(`docker driver: cannot list the engine's networks: ${(e as Error).message}`));
    const sock = `${pluginDir ?? PLUGIN_DIR}/${name}.sock`;
    const srv = await serveDriver(driver, sock);
    log(`docker: network driver "${name}" on ${sock}`);
    return {
      close: async () => {
        await srv.close();
        await driver.stop();
      },
    };
  }

  async function shutdown(): Promise<void> {
    if (stopping) return;
    stopping = true;
    if (started.timer) clearInterval(started.timer);
    // First: no container may be attached while the devices are being removed.
    if (started.docker) await started.docker.stop().catch((e: unknown) => log(`docker: stop: ${(e as Error).message}`));
    if (started.driver) await started.driver.close().catch((e: unknown) => log(`docker driver: stop: ${(e as Error).message}`));
    if (started.server) await started.server.close().catch(() => undefined);
    if (started.dns) await started.dns.close().catch(() => undefined);
    await agent.detachAll();
    await ports.closeAll();
    for (const c of poolClaims) c.release();
    for (const n of dockerNets.values()) n.claim?.release();
    // Leave the cluster: revoking the lease deletes this node's keys at once.
    if (started.kv) await started.kv.stop(true).catch((e: unknown) => log(`kvstore: stop: ${(e as Error).message}`));
    send({ type: 'stopped' });
  }
}

main().catch((e: unknown) => {
  for (const c of poolClaims) c.release();
  for (const n of dockerNets.values()) n.claim?.release();
  send({ type: 'fatal', msg: (e as Error).message ?? String(e), code: e instanceof TunswitchError ? e.code : 'EINTERNAL' });
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

/**
 * Applies the link impairments and queue fields an endpoint had set through the API before
 * the restart (the state file keeps them). The config file wins for a node it gives a
 * `link:` or `queue:` block, as it wins for the nodes it names.
 */
function restorePortSettings(agent: Agent, saved: StateEndpoint, node: NodeConfig | undefined, logTo: (msg: string) => void): void {
  const name = saved.name;
  try {
    if (saved.link !== undefined && node?.link === undefined) {
      const lp = saved.link === null ? null : parseLinkSpec(saved.link, (k) => `endpoints (${name}).link${k === '' ? '' : `.${k}`}`, () => 0);
      agent.setEndpointLink(name, lp);
      if (lp !== null) logTo(`endpoint ${name}: link impairments restored`);
    }
    if (saved.queue !== undefined && node?.queue === undefined) {
      agent.setEndpointQueue(name, checkQueuePatch(saved.queue)); // the API's range checks
      logTo(`endpoint ${name}: egress queue settings restored`);
    }
  } catch (e) {
    logTo(`endpoint ${name}: saved link/queue settings not restored: ${(e as Error).message}`);
  }
}
