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
import { readFileSync, writeFileSync, mkdirSync, renameSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { TunswitchError } from './errors.js';
import { IdentityAllocator, type Identity } from './identity.js';
import { LabelSet, formatLabel, parseLabel, makeLabel, type Label } from './labels.js';
import { PolicyCompiler, type PolicyDiff } from './policy/compile.js';
import { parsePolicyFile } from './policy/parse.js';
import type { Policy, PolicyConfig } from './policy/types.js';
import { formatV4, tryParsePrefix, type Prefix } from './cidr.js';
import { Ipam } from './ipam.js';
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
  NodeInfo,
  PolicyImportResult,
  PolicyInfo,
  StatusInfo,
  RuntimeInfo,
  QueueSettings,
} from '../api/types.js';
import type { DatapathView } from './datapath-view.js';
import { CONTROL_READER_SLOT, traceFlow, type TraceEnd, type TraceResult } from './trace.js';
import type { CaptureController, CaptureHandle, CaptureRequest, CaptureSink } from './capture.js';
import type { AgentHooks } from './agent-hooks.js';
import { securityLabels } from './labels.js';

export interface TraceRequest {
  src: { endpoint?: string; labels?: string[]; ip?: string };
  dst: { endpoint?: string; labels?: string[]; ip?: string };
  /** "80/TCP", "5432", "8/ICMP" (ICMP type), "53/UDP". */
  dport: string;
}

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
}

export interface PortManager {
  /** Creates the endpoint's TUN, moves it into its namespace, addresses it; returns its port. */
  attach(spec: PortSpec): Promise<{ port: number; tun: string; ifname: string }>;
  detach(port: number): Promise<void>;
  /** The egress queue settings in force at a port, and a change to them. */
  getQueue(port: number): QueueSettings;
  setQueue(port: number, patch: Partial<QueueSettings>): QueueSettings;
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
}

interface PolicySource {
  file: string;
  text: string;
}

interface StateFile {
  version: 1;
  config: AgentConfig;
  identities: unknown;
  endpoints: { id: number; name: string; labels: string[]; ipv4?: string; ipv6?: string; netns?: string; pid?: number; defaultRoute: boolean }[];
  /** policy key -> the file text it came from (re-parsed on restore). */
  policies: Record<string, PolicySource>;
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
  /** Prefixes added through PUT /v1/ipcache (reported with source "api"). */
  private readonly apiCidrs = new Set<string>();
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
    this.publishConfig();
    this.apply(this.compiler.sync());
  }

  private policyConfig(): PolicyConfig {
    return { enforcement: this.config.enforcement, audit: this.config.audit };
  }

  // ---------------------------------------------------------------- host port

  /** Registers the host port: its addresses get identity 1 (reserved:host) in the ipcache. */
  setHostPort(port: number, addrs: string[]): void {
    this.hostPort = port;
    for (const a of addrs) this.tables.ipcache.upsert(a, { identity: 1, flags: 0 });
    this.tables.setPortEndpoint(port, NO_EP);
    this.tables.setMeta(M_HOST_PORT, port);
    this.publishConfig();
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
    for (const c of diff.ipcache.removed) this.tables.ipcache.delete(c.prefix);
    for (const c of diff.ipcache.added) this.tables.ipcache.upsert(c.prefix, { identity: c.identity });
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

  async addEndpoint(req: EndpointAddRequest, fixedId?: number): Promise<EndpointInfo> {
    if (typeof req !== 'object' || req === null) throw new TunswitchError('EBAD_REQUEST', 'body: must be an object');
    if (typeof req.name !== 'string' || !/^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/.test(req.name)) {
      throw new TunswitchError('EBAD_REQUEST', `body.name: ${JSON.stringify(req.name)} must be 1-32 characters of a-z, 0-9 and "-"`);
    }
    if (this.byName.has(req.name)) throw new TunswitchError('EENDPOINT_EXISTS', `endpoint "${req.name}" already exists`);
    const where = `endpoint "${req.name}"`;
    const labels = this.parseLabels(req.labels, 'body');
    if (req.netns !== undefined && (typeof req.netns !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(req.netns))) {
      throw new TunswitchError('EBAD_REQUEST', `body.netns: ${JSON.stringify(req.netns)} is not a namespace name`);
    }
    if (req.pid !== undefined && (!Number.isInteger(req.pid) || req.pid <= 0)) throw new TunswitchError('EBAD_REQUEST', `body.pid: ${JSON.stringify(req.pid)} is not a process id`);
    if (req.netns === undefined && req.pid === undefined) throw new TunswitchError('EBAD_REQUEST', 'body: needs netns or pid');
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
        this.ipam.claim6(req.ipv6, where);
        ipv6 = req.ipv6;
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
      netns: req.netns ?? `/proc/${req.pid}/ns/net`,
      ifname: 'eth0',
      port: -1,
      tun: '',
      defaultRoute: req.defaultRoute === true,
      state: 'attaching',
    };
    if (ipv4) rec.ipv4 = ipv4;
    if (ipv6) rec.ipv6 = ipv6;
    if (req.pid !== undefined) rec.pid = req.pid;
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
      if (ipv4) spec.ipv4 = ipv4;
      if (ipv6) spec.ipv6 = ipv6;
      const att = await this.ports.attach(spec);
      rec.port = att.port;
      rec.tun = att.tun;
      rec.ifname = att.ifname;
      identity = await this.allocateIdentity(labels);
      rec.identity = identity.id;
      rec.state = 'ready';
      // Publish: endpoint record, port mapping, ipcache entries, then policy for it.
      this.writeEndpoint(id);
      this.tables.setPortEndpoint(rec.port, id);
      if (ipv4) this.tables.ipcache.upsert(`${ipv4}/32`, { identity: rec.identity, flags: 1 });
      if (ipv6) this.tables.ipcache.upsert(`${ipv6}/128`, { identity: rec.identity, flags: 1 });
      this.apply(this.compiler.upsertEndpoint({ index: id, identity: rec.identity }));
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
    if (rec.ipv4) this.tables.ipcache.delete(`${rec.ipv4}/32`);
    if (rec.ipv6) this.tables.ipcache.delete(`${rec.ipv6}/128`);
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

  importPolicies(text: string, fileName: string): PolicyImportResult {
    if (typeof text !== 'string') throw new TunswitchError('EBAD_REQUEST', 'body.text: must be a string');
    if (typeof fileName !== 'string') throw new TunswitchError('EBAD_REQUEST', 'body.fileName: must be a string');
    const pols = parsePolicyFile(text, fileName); // all or nothing: throws before any change
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

  selectors(): { selector: string; identities: number[] }[] {
    return this.compiler.selectorList().map((s) => ({ selector: s.selector, identities: s.identities }));
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
      const set = this.parseLabels(e.labels, where);
      const id = this.allocator.lookupByLabels(set);
      const local = [...this.endpoints.values()].find((r) => r.labels.canonical === set.canonical);
      if (!id) notes.push(`no identity has the labels ${set.canonical}: only rules that select every identity can match it`);
      return { name: set.canonical, identity: id ? id.id : 0, labels: set.labels.map(formatLabel), ep: local ? local.id : -1 };
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
    const src = this.traceEnd('src', req.src, notes);
    const dst = this.traceEnd('dst', req.dst, notes);
    return traceFlow(this.tables.tables, src, dst, proto, port, protoName, (c) => this.ruleName(c), notes);
  }

  // ---------------------------------------------------------------- ipcache, ct, config

  listIpcache(): IpcacheInfo[] {
    const local = new Set<string>();
    for (const r of this.endpoints.values()) {
      if (r.ipv4) local.add(`${r.ipv4}/32`);
      if (r.ipv6) local.add(`${r.ipv6}/128`);
    }
    return this.tables.ipcache.list().map((e) => this.ipcacheInfo(e, local));
  }

  private ipcacheInfo(e: { cidr: string; identity: number; tunnel: number }, local: Set<string>): IpcacheInfo {
    const out: IpcacheInfo = {
      cidr: e.cidr,
      identity: e.identity,
      source: local.has(e.cidr) ? 'endpoint' : this.apiCidrs.has(e.cidr) ? 'api' : e.identity === 1 ? 'host' : 'cidr-policy',
    };
    if (e.tunnel) out.tunnel = formatV4(e.tunnel);
    const node = this.hooks.ipcacheNode?.(e.cidr);
    if (node !== undefined) {
      out.source = 'kvstore';
      out.node = node;
    }
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
    this.tables.ipcache.batch(() => {
      for (const e of parsed) this.tables.ipcache.upsert(e.cidr, { identity: e.identity, tunnel: e.tunnel });
    });
    for (const e of parsed) this.apiCidrs.add(e.cidr);
    this.tables.bumpPolicyRevision();
    this.tables.commit();
    return { added: parsed.length };
  }

  deleteIpcache(cidr: string): { deleted: boolean } {
    const p = typeof cidr === 'string' ? tryParsePrefix(cidr, true) : null;
    if (!p) throw new TunswitchError('EBAD_REQUEST', `cidr: ${JSON.stringify(cidr)} is not a prefix`);
    const ok = this.tables.ipcache.delete(p.text);
    this.apiCidrs.delete(p.text);
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
    const local = new Set<string>();
    const rec = [...this.endpoints.values()].find((r) => r.ipv4 === ip || r.ipv6 === ip);
    if (rec && ((p.family === 4 && len === 32) || (p.family === 6 && len === 128))) local.add(hit.text);
    return this.ipcacheInfo({ cidr: hit.text, identity, tunnel }, local);
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
      if (k !== 'audit' && k !== 'enforcement') throw new TunswitchError('EBAD_REQUEST', `body.${k}: unknown setting (known: audit, enforcement)`);
    }
    const next = { ...this.config };
    if (patch.audit !== undefined) {
      if (typeof patch.audit !== 'boolean') throw new TunswitchError('EBAD_REQUEST', `body.audit: ${JSON.stringify(patch.audit)} must be true or false`);
      next.audit = patch.audit;
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
   * Throws EENDPOINT_NOT_FOUND, CaptureBusyError (one capture at a time), ENOT_SUPPORTED.
   */
  capture(req: CaptureRequest, sink: CaptureSink): CaptureHandle {
    const cap = this.capturer;
    if (cap === null) throw new TunswitchError('ENOT_SUPPORTED', 'packet capture is not available in this agent');
    const rec = this.find(req.endpoint);
    const opts: Parameters<CaptureController['start']>[0] = { endpoint: rec.id };
    if (req.count !== undefined) opts.count = req.count;
    if (req.verdict !== undefined) opts.verdict = req.verdict;
    if (req.duration !== undefined) opts.durationS = req.duration;
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

  private persist(): void {
    const dir = this.opts.stateDir;
    if (!dir) return;
    const state: StateFile = {
      version: 1,
      config: this.config,
      identities: this.allocator.snapshot(),
      endpoints: [...this.endpoints.values()].map((r) => {
        const e: StateFile['endpoints'][number] = { id: r.id, name: r.name, labels: r.labels.labels.map(formatLabel), defaultRoute: r.defaultRoute };
        if (r.ipv4) e.ipv4 = r.ipv4;
        if (r.ipv6) e.ipv6 = r.ipv6;
        if (r.pid !== undefined) e.pid = r.pid;
        else e.netns = r.netns;
        return e;
      }),
      policies: Object.fromEntries(this.policySources),
    };
    for (const [name, e] of this.pendingRestore) if (!this.byName.has(name)) state.endpoints.push(e);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const tmp = join(dir, 'state.json.tmp');
    writeFileSync(tmp, JSON.stringify(state, null, 1));
    renameSync(tmp, join(dir, 'state.json'));
  }

  /**
   * Restores identities, config and policies from the state directory, and returns the
   * endpoints to re-attach (the caller decides which namespaces still exist).
   */
  restore(): StateFile['endpoints'] {
    const dir = this.opts.stateDir;
    if (!dir || !existsSync(join(dir, 'state.json'))) return [];
    let state: StateFile;
    try {
      state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as StateFile;
    } catch (e) {
      throw new TunswitchError('ESTATE_INVALID', `${join(dir, 'state.json')}: ${(e as Error).message}`);
    }
    if (state.version !== 1) throw new TunswitchError('ESTATE_INVALID', `${join(dir, 'state.json')}: version ${String(state.version)} is not 1`);
    this.allocator.restore(state.identities);
    if (state.config) {
      this.config = { ...this.config, ...state.config };
      this.publishConfig();
      this.apply(this.compiler.setConfig(this.policyConfig()));
    }
    const parsed = new Map<string, Policy[]>();
    for (const [key, src] of Object.entries(state.policies ?? {})) {
      const cacheKey = `${src.file}\u0000${src.text}`;
      let pols = parsed.get(cacheKey);
      if (!pols) {
        pols = parsePolicyFile(src.text, src.file);
        parsed.set(cacheKey, pols);
      }
      const p = pols.find((x) => x.key === key);
      if (!p) continue;
      const diff = this.compiler.upsertPolicy(p);
      this.apply(diff);
      this.policySources.set(key, src);
      this.policyRevision.set(key, diff.revision);
    }
    for (const e of state.endpoints ?? []) this.pendingRestore.set(e.name, e);
    return state.endpoints ?? [];
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
