/**
 * The agent: endpoints, identities, policies and the ipcache, compiled into the published
 * datapath tables. It implements the API contract (src/api/types.ts) and runs in the
 * control thread; ports (TUN devices in namespaces) are made through a PortManager so the
 * agent itself does no device I/O and is tested without root.
 *
 * Every change follows one path:
 *   1. validate the request (errors name the field, nothing changes on error)
 *   2. update identities / the compiler (labels -> identity, policies -> entries)
 *   3. write the diff into the tables through one WriteLog and commit (one new revision)
 *   4. persist the state directory (endpoints, identity numbers, policy sources, config)
 */
import { StateStore, type PolicySource, type StateFile } from './state-store.js';
import { TunswitchError } from './errors.js';
import { IdentityAllocator, type Identity } from './identity.js';
import { LabelSet, formatLabel, parseLabel, makeLabel, type Label } from './labels.js';
import { PolicyCompiler, type CompilerEndpoint, type PolicyDiff } from './policy/compile.js';
import { parsePolicyFile } from './policy/parse.js';
import { NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX, type Policy, type PolicyConfig } from './policy/types.js';
import { formatV4, tryParsePrefix, type Prefix } from './cidr.js';
import { Ipam } from './ipam.js';
import { IpcacheOwners } from './ipcache-owners.js';
import { Namespaces, checkNamespaceLabels, type NamespaceInfo } from './namespaces.js';
import { EP_AUDIT, EP_ENFORCE_EGRESS, EP_ENFORCE_INGRESS } from '../tables/endpoints.js';
import { CFG_ALLOW_LOCALHOST, CFG_AUDIT, CFG_HOST_PORT, COOKIE_ALLOW_LOCALHOST, M_CONFIG_FLAGS, M_HOST_PORT, NO_EP, type TableSetWriter } from '../tables/tableset.js';
import type {
  AgentConfig,
  ControlApi,
  CtEntryInfo,
  EndpointAddRequest,
  EndpointInfo,
  FlowEvent,
  IdentityInfo,
  IpcacheInfo,
  LabelChangeRequest,
  NamedPort,
  NodeInfo,
  PolicyImportResult,
  PolicyInfo,
  StatusInfo,
  RuntimeInfo,
  QueueSettings,
  LinkInfo,
} from '../api/types.js';
import type { DatapathView } from './datapath-view.js';
import { CONTROL_READER_SLOT, traceFlow, type TraceEnd, type TraceResult } from './trace.js';
import type { CaptureController, CaptureHandle, CaptureRequest, CaptureSink } from './capture.js';
import type { AgentHooks } from './agent-hooks.js';
import { securityLabels } from './labels.js';
import { formatLinkSpec, type LinkParams } from '../runtime/link-spec.js';

export interface TraceRequest {
  src: { endpoint?: string; labels?: string[]; ip?: string };
  dst: { endpoint?: string; labels?: string[]; ip?: string };
  /** "80/TCP", "5432", "8/ICMP" (ICMP type), "53/UDP". */
  dport: string;
}

/** At most this many identity pairs are traced for ends given by labels. */
const MAX_TRACE_PAIRS = 64;

const TRACE_PROTOS: Record<string, number> = { TCP: 6, UDP: 17, SCTP: 132, ICMP: 1, ICMPV4: 1, ICMPV6: 58 };

export interface PortSpec {
  name: string;
  netns?: string;
  pid?: number;
  ipv4?: string;
  ipv4Prefix: number;
  ipv6?: string;
  ipv6Prefix: number;
  routes: string[];
  defaultRoute: boolean;
  /**
   * Docker network driver mode: make the TUN in the switch's namespace and leave it there,
   * unaddressed; the engine moves it into the container, renames and addresses it.
   */
  handoff?: boolean;
  /** Offer TSO/USO to the endpoint's kernel; absent: the switch's default. */
  offload?: boolean;
}

export interface PortManager {
  /** Creates the endpoint's TUN, moves it into its namespace, addresses it; returns its port. */
  attach(spec: PortSpec): Promise<{ port: number; tun: string; ifname: string; offload?: string[] }>;
  detach(port: number): Promise<void>;
  /** The egress queue settings in force at a port, and a change to them. */
  getQueue(port: number): QueueSettings;
  setQueue(port: number, patch: Partial<QueueSettings>): QueueSettings;
  /** Link impairments of a port (src/runtime/impair.ts), null when off. */
  getLink?(port: number): LinkParams | null;
  setLink?(port: number, lp: LinkParams | null): void;
}

interface EndpointRec {
  id: number;
  name: string;
  labels: LabelSet;
  identity: number;
  ipv4?: string;
  ipv6?: string;
  netns: string;
  pid?: number;
  ifname: string;
  port: number;
  tun: string;
  defaultRoute: boolean;
  state: 'ready' | 'attaching' | 'detached';
  /** A Docker network driver endpoint (not persisted: the engine re-joins it). */
  handoff?: boolean;
  /** Kubernetes namespace; `labels` = `own` + the labels the namespace derives. */
  namespace: string;
  own: LabelSet;
  ports: NamedPort[];
  /** TUN_F_* flag names the port offers ([]: plain); `offloadAsked`: the request's choice (persisted). */
  offloadFlags: string[];
  offloadAsked?: boolean;
}

/** How restore() treats entries it cannot restore. */
export interface RestoreOptions {
  /** Skip (and log) entries that cannot be restored instead of refusing to start. */
  forcePartial?: boolean;
  log?: (msg: string) => void;
}

export interface AgentOptions {
  name: string;
  pool4: Prefix;
  pool6?: Prefix;
  maxEndpoints: number;
  stateDir?: string;
  workers: number;
  offload: boolean;
  config: AgentConfig;
  version: string;
}

const LABEL_KEY_RE = /^([a-z]+:)?[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$/;

export class Agent implements ControlApi {
  readonly allocator = new IdentityAllocator();
  readonly compiler: PolicyCompiler;
  readonly ipam: Ipam;
  private readonly endpoints = new Map<number, EndpointRec>();
  private readonly byName = new Map<string, number>();
  private readonly policySources = new Map<string, PolicySource>();
  private readonly policyRevision = new Map<string, number>();
  /** Endpoints from the state file not attached (yet): kept in the state until they are. */
  private readonly pendingRestore = new Map<string, StateFile['endpoints'][number]>();
  /** Every ipcache claim by owner (endpoint > host > kvstore > cidr-policy > api). */
  readonly ipc: IpcacheOwners;
  readonly namespaces = new Namespaces();
  private config: AgentConfig;
  private readonly started = Date.now();
  /** Host port's ipcache entries (address -> identity 1). */
  private hostPort = -1;
  workerRestarts = 0;
  lastWorkerRestart = '';
  /** Runtime facts (engine, shard liveness); set by the control thread. */
  runtimeInfo: () => RuntimeInfo = () => ({ ioEngine: 'none', packetsRead: 0, shards: [], healthy: true });
  private readonly eventLog: FlowEvent[] = [];
  private readonly eventSubs = new Set<(e: FlowEvent) => void>();
  metricsText: () => Promise<string> = async () => '';
  /** Packet capture over the shards' capture rings; set by the control thread (null: none). */
  capturer: CaptureController | null = null;
  /** Cluster mode (src/kvstore/cluster.ts) plugs in here; empty: a single switch. */
  hooks: AgentHooks = {};

  constructor(
    readonly opts: AgentOptions,
    readonly tables: TableSetWriter,
    readonly ports: PortManager,
    readonly view: DatapathView | null,
  ) {
    this.config = { ...opts.config };
    this.compiler = new PolicyCompiler(this.allocator, this.policyConfig());
    this.ipam = new Ipam(opts.pool4, opts.pool6);
    this.ipc = new IpcacheOwners(tables.ipcache);
    this.publishConfig();
    this.apply(this.compiler.sync());
  }

  private policyConfig(): PolicyConfig {
    return { enforcement: this.config.enforcement, audit: this.config.audit, cidrMatchPods: this.config.cidrMatchPods === true };
  }

  // ---------------------------------------------------------------- host port

  /** Registers the host port: its addresses get identity 1 (reserved:host) in the ipcache. */
  setHostPort(port: number, addrs: string[]): void {
    this.hostPort = port;
    for (const a of addrs) this.ipc.set(a, 'host', { identity: 1, flags: 0 });
    this.tables.setPortEndpoint(port, NO_EP);
    this.tables.setMeta(M_HOST_PORT, port);
    this.publishConfig();
    this.tables.bumpPolicyRevision();
    this.tables.commit();
  }

  /** A further host address (a Docker network's gateway on the host port): identity 1. */
  addHostAddress(prefix: string): void {
    this.tables.ipcache.upsert(prefix, { identity: 1, flags: 0 });
    this.tables.bumpPolicyRevision();
    this.tables.commit();
  }

  removeHostAddress(prefix: string): void {
    this.tables.ipcache.delete(prefix);
    this.tables.bumpPolicyRevision();
    this.tables.commit();
  }

  private publishConfig(): void {
    // allow-localhost is always on, as in Cilium's default: the host reaches local endpoints
    // unless a rule denies it.
    let flags = CFG_ALLOW_LOCALHOST;
    if (this.config.audit) flags |= CFG_AUDIT;
    if (this.hostPort >= 0) flags |= CFG_HOST_PORT;
    this.tables.setMeta(M_CONFIG_FLAGS, flags);
  }

  // ---------------------------------------------------------------- publishing

  /** Writes a compiler diff into the tables and commits one revision. */
  private apply(diff: PolicyDiff): void {
    const pw = this.tables.policy;
    for (const e of diff.removed) {
      pw.remove({ ep: e.ep, dir: e.dir === 'ingress' ? 0 : 1, identity: e.identity, proto: e.proto, port: e.port, prefixLen: e.prefixLen });
    }
    for (const e of diff.added) {
      pw.add({ ep: e.ep, dir: e.dir === 'ingress' ? 0 : 1, identity: e.identity, proto: e.proto, port: e.port, prefixLen: e.prefixLen, deny: e.deny, cookie: e.cookie });
    }
    for (const c of diff.ipcache.removed) this.ipc.clear(c.prefix, 'cidr-policy');
    for (const c of diff.ipcache.added) this.ipc.set(c.prefix, 'cidr-policy', { identity: c.identity });
    for (const enf of diff.enforcement) this.writeEndpoint(enf.ep);
    // Every publish gets a new datapath revision, whatever changed (policy entries, endpoint
    // flags, ipcache identities, audit): established flows cache their verdict per revision.
    this.tables.bumpPolicyRevision();
    this.tables.commit();
  }

  private enforcementOf(ep: number): { ingress: boolean; egress: boolean; audit: boolean } {
    const e = this.compiler.enforcement().find((x) => x.ep === ep);
    return e ? { ingress: e.ingress, egress: e.egress, audit: e.audit } : { ingress: false, egress: false, audit: false };
  }

  private writeEndpoint(ep: number): void {
    const rec = this.endpoints.get(ep);
    if (!rec) return;
    const enf = this.enforcementOf(ep);
    let flags = 0;
    if (enf.ingress) flags |= EP_ENFORCE_INGRESS;
    if (enf.egress) flags |= EP_ENFORCE_EGRESS;
    if (enf.audit) flags |= EP_AUDIT;
    const r: { identity: number; ipv4?: number; ipv6?: number[]; port: number; flags: number } = { identity: rec.identity, port: rec.port, flags };
    if (rec.ipv4) r.ipv4 = (tryParsePrefix(rec.ipv4) as Prefix).words[0] as number;
    if (rec.ipv6) r.ipv6 = [...(tryParsePrefix(rec.ipv6) as Prefix).words];
    this.tables.endpoints.upsert(ep, r);
  }

  // ---------------------------------------------------------------- endpoints

  private parseLabels(input: EndpointAddRequest['labels'], where: string): LabelSet {
    const out: Label[] = [];
    if (input === undefined) return LabelSet.EMPTY;
    if (Array.isArray(input)) {
      input.forEach((s, i) => {
        if (typeof s !== 'string' || !s.includes('=')) throw new TunswitchError('EBAD_REQUEST', `${where}.labels[${i}]: ${JSON.stringify(s)} is not "key=value"`);
        const l = parseLabel(s, 'k8s');
        out.push(l.source === 'unspec' ? makeLabel('k8s', l.key, l.value) : l);
      });
    } else if (typeof input === 'object' && input !== null) {
      for (const [k, v] of Object.entries(input)) {
        if (!LABEL_KEY_RE.test(k)) throw new TunswitchError('EBAD_REQUEST', `${where}.labels.${k}: not a valid label key`);
        if (typeof v !== 'string') throw new TunswitchError('EBAD_REQUEST', `${where}.labels.${k}: ${JSON.stringify(v)} must be a string`);
        const l = parseLabel(`${k}=${v}`, 'k8s');
        out.push(l.source === 'unspec' ? makeLabel('k8s', l.key, l.value) : l);
      }
    } else {
      throw new TunswitchError('EBAD_REQUEST', `${where}.labels: must be a mapping or a list of "key=value"`);
    }
    return LabelSet.from(out);
  }

  private freeIndex(): number {
    for (let i = 0; i < this.opts.maxEndpoints; i++) if (!this.endpoints.has(i)) return i;
    throw new TunswitchError('EBAD_REQUEST', `endpoint table is full (${this.opts.maxEndpoints} endpoints)`);
  }

  /**
   * Adds an endpoint. `handoff` (the Docker network driver): the port's TUN stays in the
   * switch's namespace for the engine to move; `sandbox` is the engine's namespace path.
   */
  async addEndpoint(req: EndpointAddRequest, fixedId?: number, handoff?: { sandbox: string }): Promise<EndpointInfo> {
    if (typeof req !== 'object' || req === null) throw new TunswitchError('EBAD_REQUEST', 'body: must be an object');
    if (typeof req.name !== 'string' || !/^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/.test(req.name)) {
      throw new TunswitchError('EBAD_REQUEST', `body.name: ${JSON.stringify(req.name)} must be 1-32 characters of a-z, 0-9 and "-"`);
    }
    if (this.byName.has(req.name)) throw new TunswitchError('EENDPOINT_EXISTS', `endpoint "${req.name}" already exists`);
    const where = `endpoint "${req.name}"`;
    const placed = this.namespaces.placeEndpoint(this.parseLabels(req.labels, 'body'), req.namespace, 'body');
    const labels = this.namespaces.endpointLabels(placed.own, placed.namespace);
    const ports = this.parsePorts(req.ports, 'body');
    if (req.netns !== undefined && (typeof req.netns !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(req.netns))) {
      throw new TunswitchError('EBAD_REQUEST', `body.netns: ${JSON.stringify(req.netns)} is not a namespace name`);
    }
    if (req.pid !== undefined && (!Number.isInteger(req.pid) || req.pid <= 0)) throw new TunswitchError('EBAD_REQUEST', `body.pid: ${JSON.stringify(req.pid)} is not a process id`);
    if (req.netns === undefined && req.pid === undefined && handoff === undefined) throw new TunswitchError('EBAD_REQUEST', 'body: needs netns or pid');
    if (req.ipv4 !== undefined) {
      const p = typeof req.ipv4 === 'string' ? tryParsePrefix(req.ipv4, true) : null;
      if (!p || p.family !== 4 || p.bits !== 32) throw new TunswitchError('EBAD_REQUEST', `body.ipv4: ${JSON.stringify(req.ipv4)} is not an IPv4 address`);
    }
    if (req.ipv6 !== undefined) {
      const p = typeof req.ipv6 === 'string' ? tryParsePrefix(req.ipv6, true) : null;
      if (!p || p.family !== 6 || p.bits !== 128) throw new TunswitchError('EBAD_REQUEST', `body.ipv6: ${JSON.stringify(req.ipv6)} is not an IPv6 address`);
    }
    const id = fixedId ?? this.freeIndex();
    let ipv4: string | undefined;
    let ipv6: string | undefined;
    if (req.ipv4) {
      this.ipam.claim4(req.ipv4, where);
      ipv4 = req.ipv4;
    } else {
      ipv4 = this.ipam.allocate4(where);
    }
    try {
      if (req.ipv6) {
        ipv6 = this.ipam.claim6(req.ipv6, where);
      } else if (this.opts.pool6) {
        ipv6 = this.ipam.allocate6(ipv4, where);
      }
    } catch (e) {
      this.ipam.release4(ipv4);
      throw e;
    }
    const rec: EndpointRec = {
      id,
      name: req.name,
      labels,
      identity: 0,
      netns: handoff?.sandbox ?? req.netns ?? `/proc/${req.pid}/ns/net`,
      ifname: 'eth0',
      port: -1,
      tun: '',
      defaultRoute: req.defaultRoute === true,
      state: 'attaching',
      namespace: placed.namespace,
      own: placed.own,
      ports,
      offloadFlags: [],
    };
    if (req.offload !== undefined) rec.offloadAsked = req.offload;
    if (ipv4) rec.ipv4 = ipv4;
    if (ipv6) rec.ipv6 = ipv6;
    if (req.pid !== undefined) rec.pid = req.pid;
    if (handoff) rec.handoff = true;
    this.endpoints.set(id, rec);
    this.byName.set(req.name, id);
    let identity: Identity | undefined;
    try {
      const routes = [this.opts.pool4.text];
      if (this.opts.pool6) routes.push(this.opts.pool6.text);
      const spec: PortSpec = {
        name: req.name,
        ipv4Prefix: 32,
        ipv6Prefix: 128,
        routes,
        defaultRoute: rec.defaultRoute,
      };
      if (req.netns !== undefined) spec.netns = req.netns;
      if (req.pid !== undefined) spec.pid = req.pid;
      if (handoff) spec.handoff = true;
      if (req.offload !== undefined) spec.offload = req.offload;
      if (ipv4) spec.ipv4 = ipv4;
      if (ipv6) spec.ipv6 = ipv6;
      const att = await this.ports.attach(spec);
      rec.port = att.port;
      rec.tun = att.tun;
      rec.ifname = att.ifname;
      rec.offloadFlags = att.offload ?? [];
      identity = await this.allocateIdentity(rec.labels);
      rec.identity = identity.id;
      rec.state = 'ready';
      // Publish: endpoint record, port mapping, ipcache entries, then policy for it.
      this.writeEndpoint(id);
      this.tables.setPortEndpoint(rec.port, id);
      if (ipv4) this.ipc.set(`${ipv4}/32`, 'endpoint', { identity: rec.identity, flags: 1 });
      if (ipv6) this.ipc.set(`${ipv6}/128`, 'endpoint', { identity: rec.identity, flags: 1 });
      this.apply(this.compiler.upsertEndpoint(this.compilerEndpoint(rec)));
      this.hooks.endpointReady?.(this.info(rec));
    } catch (e) {
      this.endpoints.delete(id);
      this.byName.delete(req.name);
      if (ipv4) this.ipam.release4(ipv4);
      if (ipv6) this.ipam.release6(ipv6);
      if (identity) this.releaseIdentity(identity.id, labels);
      if (rec.port >= 0) await this.ports.detach(rec.port).catch(() => undefined);
      throw e;
    }
    this.pendingRestore.delete(req.name);
    this.persist();
    return this.info(rec);
  }

  /** Local numbering, or the cluster's through hooks.identityNumber (kvstore mode). */
  private async allocateIdentity(labels: LabelSet): Promise<Identity> {
    const number = this.hooks.identityNumber;
    if (!number) return this.allocator.allocate(labels);
    const set = securityLabels(labels);
    return this.allocator.allocateAs(set, await number(set.canonical));
  }

  private releaseIdentity(id: number, labels: LabelSet): boolean {
    this.hooks.identityReleased?.(securityLabels(labels).canonical);
    return this.allocator.release(id);
  }

  private find(idOrName: string): EndpointRec {
    const byName = this.byName.get(idOrName);
    const id = byName ?? (/^\d+$/.test(idOrName) ? Number(idOrName) : -1);
    const rec = this.endpoints.get(id);
    if (!rec) throw new TunswitchError('EENDPOINT_NOT_FOUND', `endpoint "${idOrName}" not found`);
    return rec;
  }

  getEndpointQueue(idOrName: string): QueueSettings {
    return this.ports.getQueue(this.readyPort(idOrName));
  }

  setEndpointQueue(idOrName: string, patch: Partial<QueueSettings>): QueueSettings {
    return this.ports.setQueue(this.readyPort(idOrName), patch);
  }

  /** Link impairments of an endpoint's port (`tunswitch link`); `null` clears them. */
  getEndpointLink(idOrName: string): LinkInfo {
    this.readyPort(idOrName);
    return this.linkOf(this.find(idOrName));
  }

  private linkOf(rec: EndpointRec): LinkInfo {
    const lp = this.ports.getLink?.(rec.port) ?? null;
    return { endpoint: rec.name, id: rec.id, link: lp === null ? null : formatLinkSpec(lp) };
  }

  setEndpointLink(idOrName: string, lp: LinkParams | null): LinkInfo {
    if (!this.ports.setLink) throw new TunswitchError('ENOT_SUPPORTED', 'link impairments are not available in this switch');
    this.ports.setLink(this.readyPort(idOrName), lp);
    return this.getEndpointLink(idOrName);
  }

  listLinks(): LinkInfo[] {
    return [...this.endpoints.values()].filter((r) => r.port >= 0).map((r) => this.linkOf(r));
  }

  private readyPort(idOrName: string): number {
    const rec = this.find(idOrName);
    if (rec.port < 0) throw new TunswitchError('EBAD_REQUEST', `endpoint "${rec.name}" has no port yet (state ${rec.state})`);
    return rec.port;
  }

  async deleteEndpoint(idOrName: string): Promise<void> {
    if (!this.byName.has(idOrName) && this.forgetRestored(idOrName)) return;
    const rec = this.find(idOrName);
    this.endpoints.delete(rec.id);
    this.byName.delete(rec.name);
    const diff = this.compiler.deleteEndpoint(rec.id);
    this.tables.endpoints.remove(rec.id);
    if (rec.port >= 0) this.tables.setPortEndpoint(rec.port, NO_EP);
    if (rec.ipv4) this.ipc.clear(`${rec.ipv4}/32`, 'endpoint');
    if (rec.ipv6) this.ipc.clear(`${rec.ipv6}/128`, 'endpoint');
    this.apply(diff);
    // Releasing the identity may remove it from other endpoints' selections: sync those.
    this.hooks.endpointRemoved?.(this.info(rec));
    if (this.releaseIdentity(rec.identity, rec.labels)) this.apply(this.compiler.sync());
    if (rec.ipv4) this.ipam.release4(rec.ipv4);
    if (rec.ipv6) this.ipam.release6(rec.ipv6);
    if (rec.port >= 0) await this.ports.detach(rec.port);
    this.persist();
  }

  /** Detaches every endpoint's port without forgetting the endpoints (shutdown). */
  async detachAll(): Promise<void> {
    for (const rec of this.endpoints.values()) {
      if (rec.port >= 0) {
        this.tables.setPortEndpoint(rec.port, NO_EP);
        await this.ports.detach(rec.port).catch(() => undefined);
        rec.port = -1;
        rec.state = 'detached';
      }
    }
    this.tables.commit();
  }

  private info(rec: EndpointRec): EndpointInfo {
    const out: EndpointInfo = {
      id: rec.id,
      name: rec.name,
      labels: rec.labels.labels.map(formatLabel),
      identity: rec.identity,
      netns: rec.netns,
      ifname: rec.ifname,
      port: rec.port,
      tun: rec.tun,
      policy: this.enforcementOf(rec.id),
      state: rec.state,
    };
    if (rec.ipv4) out.ipv4 = rec.ipv4;
    if (rec.ipv6) out.ipv6 = rec.ipv6;
    out.namespace = rec.namespace;
    if (rec.ports.length > 0) out.ports = rec.ports;
    out.offload = rec.offloadFlags.some((f) => f.startsWith('tso'));
    out.offloadFlags = rec.offloadFlags;
    return out;
  }

  listEndpoints(): EndpointInfo[] {
    return [...this.endpoints.values()].sort((a, b) => a.id - b.id).map((r) => this.info(r));
  }

  getEndpoint(idOrName: string): EndpointInfo {
    return this.info(this.find(idOrName));
  }

  endpointByIndex(ep: number): EndpointRec | undefined {
    return this.endpoints.get(ep);
  }

  // ---------------------------------------------------------------- labels and namespaces

  /** Named ports of an endpoint request: `[{name, port, protocol}]`, names unique per protocol. */
  private parsePorts(v: unknown, where: string): NamedPort[] {
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) throw new TunswitchError('EBAD_REQUEST', `${where}.ports: must be a list of {name, port, protocol}`);
    const out: NamedPort[] = [];
    v.forEach((x: unknown, i: number) => {
      const at = `${where}.ports[${i}]`;
      const o = x as Partial<NamedPort> | null;
      if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new TunswitchError('EBAD_REQUEST', `${at}: must be {name, port, protocol}`);
      for (const k of Object.keys(o)) if (!['name', 'port', 'protocol'].includes(k)) throw new TunswitchError('EBAD_REQUEST', `${at}.${k}: unknown field (known: name, port, protocol)`);
      // Kubernetes IANA_SVC_NAME: 1-15 of a-z, 0-9 and "-", with a letter, no "--", not at the ends.
      if (typeof o.name !== 'string' || !/^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$/.test(o.name) || !/[a-z]/.test(o.name) || o.name.includes('--')) {
        throw new TunswitchError('EBAD_REQUEST', `${at}.name: ${JSON.stringify(o.name)} is not a port name (1-15 of a-z, 0-9 and "-", with a letter)`);
      }
      if (!Number.isInteger(o.port) || (o.port as number) < 1 || (o.port as number) > 65535) throw new TunswitchError('EBAD_REQUEST', `${at}.port: ${JSON.stringify(o.port)} is not a port (1-65535)`);
      const protocol = o.protocol === undefined ? 'TCP' : o.protocol;
      if (protocol !== 'TCP' && protocol !== 'UDP' && protocol !== 'SCTP') throw new TunswitchError('EBAD_REQUEST', `${at}.protocol: ${JSON.stringify(o.protocol)} is not TCP, UDP or SCTP`);
      if (out.some((p) => p.name === o.name && p.protocol === protocol)) throw new TunswitchError('EBAD_REQUEST', `${at}.name: "${o.name}" is declared twice for ${protocol}`);
      out.push({ name: o.name, port: o.port as number, protocol });
    });
    return out;
  }

  /** `{set, remove}` of a label change: set as a mapping or "key=value" list, remove as keys. */
  private labelChange(body: unknown, where: string): { set: Label[]; remove: string[] } {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new TunswitchError('EBAD_REQUEST', `${where}: must be {set, remove}`);
    const b = body as LabelChangeRequest;
    for (const k of Object.keys(b)) if (k !== 'set' && k !== 'remove') throw new TunswitchError('EBAD_REQUEST', `${where}.${k}: unknown field (known: set, remove)`);
    const set = this.parseLabels(b.set, where).labels.slice();
    const remove: string[] = [];
    if (b.remove !== undefined) {
      if (!Array.isArray(b.remove)) throw new TunswitchError('EBAD_REQUEST', `${where}.remove: must be a list of label keys`);
      b.remove.forEach((k, i) => {
        if (typeof k !== 'string' || k === '') throw new TunswitchError('EBAD_REQUEST', `${where}.remove[${i}]: ${JSON.stringify(k)} is not a label key`);
        remove.push(k.startsWith('k8s:') ? k.slice(4) : k);
      });
    }
    return { set, remove };
  }

  /**
   * Gives an endpoint new own labels and/or namespace: new identity, ipcache entry and policy
   * in one revision; the old identity is released (and selections that held it are synced).
   * Established flows are re-checked at their next packet (the revision changes).
   */
  private retag(rec: EndpointRec, own: LabelSet, namespace: string): void {
    const labels = this.namespaces.endpointLabels(own, namespace);
    rec.own = own;
    rec.namespace = namespace;
    if (labels.canonical === rec.labels.canonical) return;
    rec.labels = labels;
    if (rec.state !== 'ready') return;
    const old = rec.identity;
    const ident = this.allocator.allocate(labels);
    rec.identity = ident.id;
    this.writeEndpoint(rec.id);
    if (rec.ipv4) this.ipc.set(`${rec.ipv4}/32`, 'endpoint', { identity: rec.identity, flags: 1 });
    if (rec.ipv6) this.ipc.set(`${rec.ipv6}/128`, 'endpoint', { identity: rec.identity, flags: 1 });
    this.apply(this.compiler.upsertEndpoint(this.compilerEndpoint(rec)));
    if (this.allocator.release(old)) this.apply(this.compiler.sync());
  }

  /** What the policy compiler knows of an endpoint: identity, named ports, addresses. */
  private compilerEndpoint(rec: EndpointRec): CompilerEndpoint {
    const addrs: string[] = [];
    if (rec.ipv4) addrs.push(rec.ipv4);
    if (rec.ipv6) addrs.push(rec.ipv6);
    return { index: rec.id, identity: rec.identity, ports: rec.ports, addrs };
  }

  /** `endpoint label EP key=value key-`: changes an endpoint's own labels while it runs. */
  labelEndpoint(idOrName: string, body: unknown): EndpointInfo {
    const rec = this.find(idOrName);
    const { set, remove } = this.labelChange(body, 'body');
    for (const l of [...set.map((x) => x.key), ...remove]) {
      if (l === NAMESPACE_LABEL || l.startsWith(NAMESPACE_LABELS_PREFIX)) throw new TunswitchError('EBAD_REQUEST', `body: ${l} comes from the endpoint's namespace; change the namespace's labels instead`);
    }
    const keep = rec.own.labels.filter((l) => !remove.includes(l.key) && !set.some((s) => s.key === l.key));
    this.retag(rec, LabelSet.from([...keep, ...set]), rec.namespace);
    this.persist();
    return this.info(rec);
  }

  private namespaceInfo(name: string): NamespaceInfo {
    const eps = [...this.endpoints.values()].filter((r) => r.namespace === name).map((r) => r.name).sort();
    return { name, labels: this.namespaces.labels(name), endpoints: eps };
  }

  listNamespaces(): NamespaceInfo[] {
    return this.namespaces.names().map((n) => this.namespaceInfo(n));
  }

  getNamespace(name: string): NamespaceInfo {
    return this.namespaceInfo(name);
  }

  /** Creates a namespace or replaces its labels (`{labels: {key: value}}`). */
  putNamespace(name: string, body: unknown): NamespaceInfo {
    const b = (body ?? {}) as { labels?: unknown };
    if (typeof b !== 'object' || Array.isArray(b)) throw new TunswitchError('EBAD_REQUEST', 'body: must be {labels}');
    for (const k of Object.keys(b)) if (k !== 'labels') throw new TunswitchError('EBAD_REQUEST', `body.${k}: unknown field (known: labels)`);
    if (this.namespaces.set(name, checkNamespaceLabels(b.labels, 'body.labels'))) this.retagNamespace(name);
    return this.namespaceInfo(name);
  }

  /** `namespace label NS key=value key-`: every endpoint in it gets the new derived labels. */
  labelNamespace(name: string, body: unknown): NamespaceInfo {
    const { set, remove } = this.labelChange(body, 'body');
    const m = checkNamespaceLabels(Object.fromEntries(set.map((l) => [l.key, l.value])), 'body.set');
    if (this.namespaces.relabel(name, m, remove)) this.retagNamespace(name);
    return this.namespaceInfo(name);
  }

  deleteNamespace(name: string): { deleted: string } {
    const used = [...this.endpoints.values()].filter((r) => r.namespace === name).map((r) => r.name);
    if (used.length > 0) throw new TunswitchError('EBAD_REQUEST', `namespace "${name}" still has endpoints: ${used.join(', ')}`);
    this.namespaces.delete(name);
    return { deleted: name };
  }

  private retagNamespace(name: string): void {
    for (const rec of this.endpoints.values()) if (rec.namespace === name) this.retag(rec, rec.own, name);
    this.persist();
  }

  // ---------------------------------------------------------------- identities

  private identityInfo(i: Identity): IdentityInfo {
    return { id: i.id, labels: i.labels.labels.map(formatLabel), kind: i.kind, refs: i.refs };
  }

  listIdentities(): IdentityInfo[] {
    return this.allocator.list().sort((a, b) => a.id - b.id).map((i) => this.identityInfo(i));
  }

  getIdentity(id: number): IdentityInfo {
    const i = this.allocator.get(id);
    if (!i) throw new TunswitchError('EIDENTITY_NOT_FOUND', `identity ${id} not found`);
    return this.identityInfo(i);
  }

  identityLabels(id: number): string[] {
    const i = this.allocator.get(id);
    return i ? i.labels.labels.map(formatLabel) : [];
  }

  // ---------------------------------------------------------------- policy

  validatePolicies(text: string, fileName: string): { policies: string[] } {
    if (typeof text !== 'string') throw new TunswitchError('EBAD_REQUEST', 'body.text: must be a string');
    if (typeof fileName !== 'string') throw new TunswitchError('EBAD_REQUEST', 'body.fileName: must be a string');
    return { policies: parsePolicyFile(text, fileName).map((p) => p.name) };
  }

  importPolicies(text: string, fileName: string, allowEmpty = false): PolicyImportResult {
    if (typeof text !== 'string') throw new TunswitchError('EBAD_REQUEST', 'body.text: must be a string');
    if (typeof fileName !== 'string') throw new TunswitchError('EBAD_REQUEST', 'body.fileName: must be a string');
    const pols = parsePolicyFile(text, fileName); // all or nothing: throws before any change
    if (pols.length === 0 && !allowEmpty) throw new TunswitchError('EPOLICY_INVALID', `${fileName}: contains no policies (allow an empty file with --allow-empty, or allowEmpty: true in the API)`);
    let rev = this.compiler.revision;
    for (const p of pols) {
      const diff = this.compiler.upsertPolicy(p);
      this.apply(diff);
      rev = diff.revision;
      this.policySources.set(p.key, { file: fileName, text });
      this.policyRevision.set(p.key, rev);
    }
    this.persist();
    this.hooks.policiesImported?.(text, fileName, pols.map((p) => ({ key: p.key, name: p.name })));
    return { revision: rev, policies: pols.map((p) => p.name) };
  }

  private policyByName(name: string): Policy {
    const all = this.compiler.policyList();
    const hit = all.find((p) => p.key === name) ?? all.find((p) => p.name === name);
    if (!hit) throw new TunswitchError('EPOLICY_NOT_FOUND', `policy "${name}" not found`);
    return hit;
  }

  listPolicies(): PolicyInfo[] {
    return this.compiler.policyList().map((p) => {
      const out: PolicyInfo = { name: p.name, kind: p.kind, rules: p.rules.length, source: p.file, revision: this.policyRevision.get(p.key) ?? 0 };
      if (p.namespace) out.namespace = p.namespace;
      return out;
    });
  }

  getPolicy(name: string): unknown {
    const p = this.policyByName(name);
    return { name: p.name, namespace: p.namespace, kind: p.kind, file: p.file, rules: p.rules.length, source: this.policySources.get(p.key)?.text ?? null };
  }

  deletePolicy(name: string): PolicyImportResult {
    const p = this.policyByName(name);
    const diff = this.compiler.deletePolicy(p.key);
    this.apply(diff);
    this.policySources.delete(p.key);
    this.policyRevision.delete(p.key);
    this.persist();
    this.hooks.policiesDeleted?.([p.key]);
    return { revision: diff.revision, policies: [p.name] };
  }

  deleteAllPolicies(): PolicyImportResult {
    const names: string[] = [];
    const keys: string[] = [];
    let rev = this.compiler.revision;
    for (const p of this.compiler.policyList()) {
      keys.push(p.key);
      const diff = this.compiler.deletePolicy(p.key);
      this.apply(diff);
      rev = diff.revision;
      names.push(p.name);
      this.policySources.delete(p.key);
      this.policyRevision.delete(p.key);
    }
    this.persist();
    this.hooks.policiesDeleted?.(keys);
    return { revision: rev, policies: names };
  }

  /** Selectors in use, then each named port in use with the numbers it resolves to per identity. */
  selectors(): { selector: string; identities: number[]; ports?: Record<string, number[]> }[] {
    const out: { selector: string; identities: number[]; ports?: Record<string, number[]> }[] = this.compiler.selectorList().map((s) => ({ selector: s.selector, identities: s.identities }));
    for (const n of this.compiler.namedPortList()) {
      out.push({ selector: `port ${n.name}/${n.protocol}`, identities: n.identities.map((x) => x.identity), ports: Object.fromEntries(n.identities.map((x) => [String(x.identity), x.ports])) });
    }
    return out;
  }

  ruleName(cookie: number): { name: string; namespace?: string; rule_index: number; direction: string; deny: boolean } | null {
    if (cookie === COOKIE_ALLOW_LOCALHOST) return { name: '<allow-localhost: the host may reach local endpoints>', rule_index: -1, direction: 'ingress', deny: false };
    const r = this.compiler.rule(cookie);
    if (!r) return null;
    const out: { name: string; namespace?: string; rule_index: number; direction: string; deny: boolean } = {
      name: r.policyName,
      rule_index: r.ruleIndex,
      direction: r.direction ?? 'any',
      deny: r.deny,
    };
    if (r.namespace) out.namespace = r.namespace;
    return out;
  }

  /** Names of the policies whose rules put endpoint `ep` into default-deny for `dir`. */
  defaultDenyBy(ep: number, dir: 'ingress' | 'egress'): string[] {
    const rec = this.endpoints.get(ep);
    if (!rec) return [];
    const id = this.allocator.get(rec.identity);
    const labels = id ? id.labels : rec.labels;
    const out = new Set<string>();
    for (const p of this.compiler.policyList()) {
      for (const r of p.rules) {
        const has = dir === 'ingress' ? r.hasIngress && r.defaultDenyIngress : r.hasEgress && r.defaultDenyEgress;
        if (has && r.subject.matches(labels)) out.add(p.namespace ? `${p.namespace}/${p.name}` : p.name);
      }
    }
    return [...out];
  }

  // ---------------------------------------------------------------- trace

  private traceEnd(side: 'src' | 'dst', e: TraceRequest['src'] | undefined, notes: string[]): TraceEnd {
    const where = `body.${side}`;
    if (typeof e !== 'object' || e === null) throw new TunswitchError('EBAD_REQUEST', `${where}: needs endpoint, labels or ip`);
    const given = [e.endpoint, e.labels, e.ip].filter((x) => x !== undefined).length;
    if (given !== 1) throw new TunswitchError('EBAD_REQUEST', `${where}: give exactly one of endpoint, labels, ip`);
    if (e.endpoint !== undefined) {
      if (typeof e.endpoint !== 'string') throw new TunswitchError('EBAD_REQUEST', `${where}.endpoint: must be a string`);
      const rec = this.find(e.endpoint);
      return { name: rec.name, identity: rec.identity, labels: rec.labels.labels.map(formatLabel), ep: rec.id };
    }
    if (e.labels !== undefined) {
      if (!Array.isArray(e.labels) || e.labels.some((l) => typeof l !== 'string' || !l.includes('='))) {
        throw new TunswitchError('EBAD_REQUEST', `${where}.labels: must be a list of "key=value"`);
      }
      return this.labelTraceEnds(this.parseLabels(e.labels, where), notes)[0] as TraceEnd;
    }
    const ip = e.ip as string;
    const p = typeof ip === 'string' ? tryParsePrefix(ip, true) : null;
    if (!p || (p.bits !== 32 && p.bits !== 128)) throw new TunswitchError('EBAD_REQUEST', `${where}.ip: ${JSON.stringify(ip)} is not an IP address`);
    const local = [...this.endpoints.values()].find((r) => r.ipv4 === ip || r.ipv6 === ip);
    if (local) return { name: local.name, identity: local.identity, labels: local.labels.labels.map(formatLabel), ep: local.id };
    const hit = this.getIpcache(ip);
    if (!hit) notes.push(`${ip} is not in the ipcache: it is treated as world (identity 2)`);
    const id = hit ? hit.identity : 2;
    return { name: ip, identity: id, labels: this.identityLabels(id), ep: -1 };
  }

  trace(req: TraceRequest): TraceResult {
    if (typeof req !== 'object' || req === null) throw new TunswitchError('EBAD_REQUEST', 'body: must be an object');
    const m = typeof req.dport === 'string' ? /^(\d{1,5})(?:\/([A-Za-z0-9]+))?$/.exec(req.dport) : null;
    if (!m) throw new TunswitchError('EBAD_REQUEST', `body.dport: ${JSON.stringify(req.dport)} is not PORT[/PROTOCOL], e.g. 80/TCP`);
    const port = Number(m[1]);
    const protoName = (m[2] ?? 'TCP').toUpperCase();
    const proto = TRACE_PROTOS[protoName];
    if (proto === undefined) throw new TunswitchError('EBAD_REQUEST', `body.dport: protocol "${m[2]}" is not one of TCP, UDP, SCTP, ICMP, ICMPv6`);
    if (port > (proto === 1 || proto === 58 ? 255 : 65535)) throw new TunswitchError('EBAD_REQUEST', `body.dport: ${port} is out of range for ${protoName}`);
    const notes: string[] = [];
    const src = this.traceEnds('src', req.src, notes);
    const dst = this.traceEnds('dst', req.dst, notes);
    this.namedPortNotes(dst, proto, port, notes);
    return this.traceEach(src, dst, proto, port, protoName, notes);
  }

  /** Says which named ports in use the traced port is, on the destination identity (where names resolve). */
  private namedPortNotes(dsts: TraceEnd[], proto: number, port: number, notes: string[]): void {
    const protoName = proto === 6 ? 'TCP' : proto === 17 ? 'UDP' : proto === 132 ? 'SCTP' : '';
    for (const n of this.compiler.namedPortList()) {
      if (n.protocol !== 'ANY' && n.protocol !== protoName) continue;
      for (const d of dsts) {
        const hit = n.identities.find((x) => x.identity === d.identity);
        if (hit === undefined) notes.push(`named port "${n.name}" (${n.protocol}) is not declared by ${d.name}: rules using it do not match this flow`);
        else if (hit.ports.includes(port)) notes.push(`named port "${n.name}" (${n.protocol}) resolves to ${hit.ports.join(', ')} on ${d.name}: rules using it match port ${port}`);
        else notes.push(`named port "${n.name}" (${n.protocol}) resolves to ${hit.ports.join(', ')} on ${d.name}, not ${port}`);
      }
    }
  }

  /** An end given by labels may stand for several identities (selection by subset). */
  private traceEnds(side: 'src' | 'dst', e: TraceRequest['src'] | undefined, notes: string[]): TraceEnd[] {
    const one = this.traceEnd(side, e, notes);
    if (e?.labels === undefined) return [one];
    return this.labelTraceEnds(this.parseLabels(e.labels, `body.${side}`), []);
  }

  /**
   * The identities whose labels include every label of `set` (as a selector selects them),
   * each with a local endpoint that has it when there is one. Without any, one end with
   * identity 0 (only rules that select every identity can match it).
   */
  private labelTraceEnds(set: LabelSet, notes: string[]): TraceEnd[] {
    const out: TraceEnd[] = [];
    for (const id of this.allocator.list().sort((a, b) => a.id - b.id)) {
      if (id.kind !== 'workload' || !set.labels.every((l) => id.labels.values(l.key, l.source).includes(l.value))) continue;
      const local = [...this.endpoints.values()].find((r) => r.identity === id.id);
      out.push({ name: local ? local.name : id.labels.canonical, identity: id.id, labels: id.labels.labels.map(formatLabel), ep: local ? local.id : -1 });
    }
    if (out.length > 0) return out;
    notes.push(`no identity has the labels ${set.canonical}: only rules that select every identity can match it`);
    return [{ name: set.canonical, identity: 0, labels: set.labels.map(formatLabel), ep: -1 }];
  }

  /** Traces every (source, destination) pair considered; the first pair is the answer shown. */
  private traceEach(srcs: TraceEnd[], dsts: TraceEnd[], proto: number, port: number, protoName: string, notes: string[]): TraceResult {
    const pairs: [TraceEnd, TraceEnd][] = [];
    for (const s of srcs) for (const d of dsts) if (pairs.length < MAX_TRACE_PAIRS) pairs.push([s, d]);
    if (srcs.length * dsts.length > MAX_TRACE_PAIRS) notes.push(`${srcs.length * dsts.length} identity pairs match the labels given; only the first ${MAX_TRACE_PAIRS} are traced`);
    const results = pairs.map(([s, d], i) => traceFlow(this.tables.tables, s, d, proto, port, protoName, (c) => this.ruleName(c), i === 0 ? notes : []));
    const first = results[0] as TraceResult;
    if (pairs.length === 1) return first;
    first.considered = results.map((r) => ({ source: r.source.name, source_identity: r.source.identity, destination: r.destination.name, destination_identity: r.destination.identity, verdict: r.verdict }));
    const denied = results.filter((r) => r.verdict === 'DENIED').length;
    notes.push(
      denied === 0 || denied === results.length
        ? `${results.length} identity pairs match the labels given; all are ${first.verdict}`
        : `${results.length} identity pairs match the labels given: ${results.length - denied} ALLOWED, ${denied} DENIED (see considered); the verdict shown is for the first`,
    );
    return first;
  }

  // ---------------------------------------------------------------- ipcache, ct, config

  listIpcache(): IpcacheInfo[] {
    return this.tables.ipcache.list().map((e) => this.ipcacheInfo(e));
  }

  /** One entry as the API shows it: the resolved owner is the source; `owners` lists every claim. */
  private ipcacheInfo(e: { cidr: string; identity: number; tunnel: number }): IpcacheInfo {
    const owners = this.ipc.owners(e.cidr);
    const out: IpcacheInfo = { cidr: e.cidr, identity: e.identity, source: owners[0] ?? 'api', owners };
    if (e.tunnel) out.tunnel = formatV4(e.tunnel);
    const node = this.hooks.ipcacheNode?.(e.cidr);
    if (node !== undefined && owners.includes('kvstore')) out.node = node; // remote entries: owner kvstore (src/kvstore/cluster.ts)
    return out;
  }

  /**
   * Adds ipcache entries from the API (remote prefixes, e.g. other nodes' pods or a large
   * imported set). Identities must be reserved (1-8), workload (>= 256) or CIDR identities.
   */
  upsertIpcache(body: { entries?: unknown }): { added: number } {
    const list = body && typeof body === 'object' ? (body as { entries?: unknown }).entries : undefined;
    if (!Array.isArray(list)) throw new TunswitchError('EBAD_REQUEST', 'body.entries: must be a list of {cidr, identity}');
    const parsed: { cidr: string; identity: number; tunnel: number }[] = [];
    list.forEach((e: unknown, i: number) => {
      const o = e as { cidr?: unknown; identity?: unknown; tunnel?: unknown };
      const p = typeof o?.cidr === 'string' ? tryParsePrefix(o.cidr, true) : null;
      if (!p) throw new TunswitchError('EBAD_REQUEST', `body.entries[${i}].cidr: ${JSON.stringify(o?.cidr)} is not a prefix`);
      if (!Number.isInteger(o.identity) || (o.identity as number) < 1 || (o.identity as number) > 0x1ffffff) {
        throw new TunswitchError('EBAD_REQUEST', `body.entries[${i}].identity: ${JSON.stringify(o.identity)} is not an identity`);
      }
      let tunnel = 0;
      if (o.tunnel !== undefined) {
        const t = typeof o.tunnel === 'string' ? tryParsePrefix(o.tunnel, true) : null;
        if (!t || t.family !== 4 || t.bits !== 32) throw new TunswitchError('EBAD_REQUEST', `body.entries[${i}].tunnel: ${JSON.stringify(o.tunnel)} is not an IPv4 address`);
        tunnel = t.words[0] as number;
      }
      parsed.push({ cidr: p.text, identity: o.identity as number, tunnel });
    });
    this.ipc.batch(() => {
      for (const e of parsed) this.ipc.set(e.cidr, 'api', { identity: e.identity, tunnel: e.tunnel });
    });
    this.tables.bumpPolicyRevision();
    this.tables.commit();
    return { added: parsed.length };
  }

  deleteIpcache(cidr: string): { deleted: boolean } {
    const p = typeof cidr === 'string' ? tryParsePrefix(cidr, true) : null;
    if (!p) throw new TunswitchError('EBAD_REQUEST', `cidr: ${JSON.stringify(cidr)} is not a prefix`);
    // Only the API's own claim goes: an endpoint or policy holding the prefix keeps it.
    const ok = this.ipc.clear(p.text, 'api');
    this.tables.bumpPolicyRevision();
    this.tables.commit();
    return { deleted: ok };
  }

  /** Longest match for `ip`, read from the published tables exactly as a worker reads them. */
  getIpcache(ip: string): IpcacheInfo | null {
    const p = typeof ip === 'string' ? tryParsePrefix(ip, true) : null;
    if (!p || (p.bits !== 32 && p.bits !== 128)) throw new TunswitchError('EBAD_REQUEST', `ip: ${JSON.stringify(ip)} is not an IP address`);
    const ts = this.tables.tables;
    const side = ts.control.enter(CONTROL_READER_SLOT);
    let leaf = 0;
    let len = 0;
    let identity = 0;
    let tunnel = 0;
    try {
      ts.useSide(side);
      const w = p.words;
      leaf = p.family === 4 ? ts.ipcache.lookup4(w[0] as number) : ts.ipcache.lookup6(w[0] as number, w[1] as number, w[2] as number, w[3] as number);
      if (leaf !== 0) {
        len = ts.ipcache.leafPrefixLen(leaf);
        identity = ts.ipcache.leafIdentity(leaf);
        tunnel = ts.ipcache.leafTunnel(leaf);
      }
    } finally {
      ts.control.leave(CONTROL_READER_SLOT);
    }
    if (leaf === 0) return null;
    const hit = tryParsePrefix(`${ip}/${len}`, false) as Prefix;
    return this.ipcacheInfo({ cidr: hit.text, identity, tunnel });
  }

  listCt(): CtEntryInfo[] {
    return this.view ? this.view.listCt() : [];
  }

  flushCt(): { flushed: number } {
    return this.view ? this.view.flushCt() : { flushed: 0 };
  }

  getConfig(): AgentConfig {
    return { ...this.config };
  }

  setConfig(patch: Partial<AgentConfig>): AgentConfig {
    if (typeof patch !== 'object' || patch === null) throw new TunswitchError('EBAD_REQUEST', 'body: must be an object');
    for (const k of Object.keys(patch)) {
      if (k !== 'audit' && k !== 'enforcement' && k !== 'cidrMatchPods') throw new TunswitchError('EBAD_REQUEST', `body.${k}: unknown setting (known: audit, enforcement, cidrMatchPods)`);
    }
    const next = { ...this.config };
    if (patch.audit !== undefined) {
      if (typeof patch.audit !== 'boolean') throw new TunswitchError('EBAD_REQUEST', `body.audit: ${JSON.stringify(patch.audit)} must be true or false`);
      next.audit = patch.audit;
    }
    if (patch.cidrMatchPods !== undefined) {
      if (typeof patch.cidrMatchPods !== 'boolean') throw new TunswitchError('EBAD_REQUEST', `body.cidrMatchPods: ${JSON.stringify(patch.cidrMatchPods)} must be true or false`);
      next.cidrMatchPods = patch.cidrMatchPods;
    }
    if (patch.enforcement !== undefined) {
      if (!['default', 'always', 'never'].includes(patch.enforcement)) {
        throw new TunswitchError('EBAD_REQUEST', `body.enforcement: ${JSON.stringify(patch.enforcement)} must be one of default, always, never`);
      }
      next.enforcement = patch.enforcement;
    }
    this.config = next;
    this.publishConfig();
    this.apply(this.compiler.setConfig(this.policyConfig()));
    this.persist();
    return this.getConfig();
  }

  status(): StatusInfo {
    const totals = this.view ? this.view.totals() : { forwarded: 0, dropped: 0 };
    const rtInfo = this.runtimeInfo();
    return {
      name: this.opts.name,
      version: this.opts.version,
      uptimeSeconds: Math.round((Date.now() - this.started) / 1000),
      policyRevision: this.compiler.revision,
      endpoints: this.endpoints.size,
      identities: this.allocator.list().length,
      policies: this.compiler.policyList().length,
      workers: this.opts.workers,
      workerRestarts: this.workerRestarts,
      lastWorkerRestart: this.lastWorkerRestart,
      ioEngine: rtInfo.ioEngine,
      shards: rtInfo.shards,
      healthy: rtInfo.healthy,
      ports: [...this.endpoints.values()].filter((r) => r.port >= 0).length + (this.hostPort >= 0 ? 1 : 0),
      offload: this.opts.offload,
      config: this.getConfig(),
      counters: totals,
      ...(this.hooks.status ? { kvstore: this.hooks.status() } : {}),
    };
  }

  /**
   * Publishes what changed outside the agent's own calls: identities added or removed in the
   * allocator by the kvstore (other nodes' numbers), remote ipcache entries. One revision.
   */
  resync(): void {
    this.apply(this.compiler.sync());
  }

  /** Cluster nodes (kvstore mode); empty for a single switch. */
  listNodes(): NodeInfo[] {
    return this.hooks.listNodes ? this.hooks.listNodes() : [];
  }

  metrics(): Promise<string> {
    return this.metricsText();
  }

  // ---------------------------------------------------------------- capture

  /**
   * Starts a packet capture at an endpoint (name or index); the pcap bytes go to `sink`.
   * Throws EENDPOINT_NOT_FOUND, CaptureBusyError (all capture slots taken), ENOT_SUPPORTED.
   */
  capture(req: CaptureRequest, sink: CaptureSink): CaptureHandle {
    const cap = this.capturer;
    if (cap === null) throw new TunswitchError('ENOT_SUPPORTED', 'packet capture is not available in this agent');
    const rec = this.find(req.endpoint);
    const opts: Parameters<CaptureController['start']>[0] = { endpoint: rec.id };
    if (req.count !== undefined) opts.count = req.count;
    if (req.verdict !== undefined) opts.verdict = req.verdict;
    if (req.duration !== undefined) opts.durationS = req.duration;
    if (req.snaplen !== undefined) opts.snaplen = req.snaplen;
    if (req.format !== undefined) opts.format = req.format;
    return cap.start(opts, sink);
  }

  // ---------------------------------------------------------------- events

  pushEvent(e: FlowEvent): void {
    this.eventLog.push(e);
    if (this.eventLog.length > 8192) this.eventLog.splice(0, this.eventLog.length - 8192);
    for (const fn of this.eventSubs) fn(e);
  }

  recentEvents(last: number): FlowEvent[] {
    const n = Math.max(0, Math.min(last, this.eventLog.length));
    return this.eventLog.slice(this.eventLog.length - n);
  }

  subscribeEvents(fn: (e: FlowEvent) => void): () => void {
    this.eventSubs.add(fn);
    return () => this.eventSubs.delete(fn);
  }

  // ---------------------------------------------------------------- persistence

  private store(): StateStore | null {
    return this.opts.stateDir ? new StateStore(this.opts.stateDir) : null;
  }

  private persist(): void {
    const store = this.store();
    if (!store) return;
    const state: StateFile = {
      version: 1,
      config: this.config,
      identities: this.allocator.snapshot(),
      endpoints: [...this.endpoints.values()].filter((r) => r.handoff !== true).map((r) => {
        const e: StateFile['endpoints'][number] = { id: r.id, name: r.name, labels: r.labels.labels.map(formatLabel), defaultRoute: r.defaultRoute };
        if (r.ipv4) e.ipv4 = r.ipv4;
        if (r.ipv6) e.ipv6 = r.ipv6;
        if (r.pid !== undefined) e.pid = r.pid;
        else e.netns = r.netns;
        if (r.offloadAsked !== undefined) e.offload = r.offloadAsked;
        return e;
      }),
      policies: Object.fromEntries(this.policySources),
    };
    for (const [name, e] of this.pendingRestore) if (!this.byName.has(name)) state.endpoints.push(e);
    store.write(state);
  }

  /**
   * Restores identities, config and policies from the state directory, and returns the
   * endpoints to re-attach (the caller decides which namespaces still exist).
   *
   * The whole file is validated (StateStore.read) and every policy entry is parsed before
   * anything is applied. An entry that cannot be restored (its text no longer parses, or
   * does not define the policy its key names) stops the start with ESTATE_INVALID naming the
   * file, the entry and the reason, unless opts.forcePartial: then each such entry is logged
   * and skipped (and the next save drops it).
   */
  restore(opts: RestoreOptions = {}): StateFile['endpoints'] {
    const store = this.store();
    if (!store) return [];
    const state = store.read();
    if (!state) return [];
    const file = store.file;
    const problems: string[] = [];
    const policies: [string, PolicySource, Policy][] = [];
    const parsed = new Map<string, Policy[] | Error>();
    for (const [key, src] of Object.entries(state.policies)) {
      const cacheKey = `${src.file}\u0000${src.text}`;
      let pols = parsed.get(cacheKey);
      if (!pols) {
        try {
          pols = parsePolicyFile(src.text, src.file);
        } catch (e) {
          pols = e as Error;
        }
        parsed.set(cacheKey, pols);
      }
      const at = `policies[${JSON.stringify(key)}]`;
      if (pols instanceof Error) {
        problems.push(`${at}: its text no longer parses: ${pols.message}`);
        continue;
      }
      const p = pols.find((x) => x.key === key);
      if (!p) {
        problems.push(`${at}: its text (from ${src.file}) defines ${pols.map((x) => JSON.stringify(x.key)).join(', ') || 'no policy'}, not this one`);
        continue;
      }
      policies.push([key, src, p]);
    }
    if (problems.length > 0) {
      if (!opts.forcePartial) {
        const more = problems.length > 1 ? ` (and ${problems.length - 1} more entries; --force-partial-restore skips them)` : ' (--force-partial-restore skips it)';
        throw new TunswitchError('ESTATE_INVALID', `${file}: ${problems[0] as string}${more}`);
      }
      for (const p of problems) opts.log?.(`${file}: skipped ${p}`);
    }
    try {
      this.allocator.restore(state.identities);
    } catch (e) {
      throw new TunswitchError('ESTATE_INVALID', `${file}: identities: ${(e as Error).message}`);
    }
    this.config = { ...this.config, ...state.config };
    this.publishConfig();
    this.apply(this.compiler.setConfig(this.policyConfig()));
    for (const [key, src, p] of policies) {
      const diff = this.compiler.upsertPolicy(p);
      this.apply(diff);
      this.policySources.set(key, src);
      this.policyRevision.set(key, diff.revision);
    }
    for (const e of state.endpoints) this.pendingRestore.set(e.name, e);
    return state.endpoints;
  }

  /** Forgets a restored endpoint that will not come back (e.g. deleted through the API). */
  forgetRestored(name: string): boolean {
    const had = this.pendingRestore.delete(name);
    if (had) this.persist();
    return had;
  }
}


export type { StateFile };
export { makeLabel };
