/**
 * Endpoint management: adding (address, port, identity, publish), removing, relabelling and
 * listing endpoints, their Kubernetes namespaces and their egress queues. Ports (TUN devices in
 * namespaces) are made through the PortManager, so this file does no device I/O.
 *
 * An endpoint is published in this order: endpoint record, port mapping, ipcache entries, then
 * the policy the compiler derives for it, in one revision (ctx.publish).
 */
import { TunswitchError } from './errors.js';
import type { Identity } from './identity.js';
import { LabelSet, formatLabel, parseLabel, makeLabel, securityLabels, type Label } from './labels.js';
import type { CompilerEndpoint } from './policy/compile.js';
import { NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX } from './policy/types.js';
import { tryParsePrefix } from './cidr.js';
import { Ipam } from './ipam.js';
import { Namespaces, checkNamespaceLabels, type NamespaceInfo } from './namespaces.js';
import type { StateFile } from './state-store.js';
import type { AgentContext, PortManager, PortSpec } from './agent-context.js';
import type { Enforcement, TablePublisher } from './table-publisher.js';
import { NO_EP } from '../tables/tableset.js';
import type { EndpointAddRequest, EndpointInfo, LabelChangeRequest, LinkInfo, NamedPort, QueueSettings } from '../api/types.js';
import { formatLinkSpec, type LinkParams, type LinkSpec } from '../runtime/link-spec.js';

export interface EndpointRec {
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
  /** Link impairments and queue fields set through the API (persisted; restored at start). */
  linkSet?: LinkSpec | null;
  queueSet?: Partial<QueueSettings>;
}

const LABEL_KEY_RE = /^([a-z]+:)?[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$/;

/** Labels of a request: a mapping or a list of "key=value" (k8s source unless one is given). */
export function parseLabels(input: EndpointAddRequest['labels'], where: string): LabelSet {
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

/** Named ports of an endpoint request: `[{name, port, protocol}]`, names unique per protocol. */
function parsePorts(v: unknown, where: string): NamedPort[] {
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
function labelChange(body: unknown, where: string): { set: Label[]; remove: string[] } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new TunswitchError('EBAD_REQUEST', `${where}: must be {set, remove}`);
  const b = body as LabelChangeRequest;
  for (const k of Object.keys(b)) if (k !== 'set' && k !== 'remove') throw new TunswitchError('EBAD_REQUEST', `${where}.${k}: unknown field (known: set, remove)`);
  const set = parseLabels(b.set, where).labels.slice();
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

export class EndpointManager {
  readonly ipam: Ipam;
  readonly namespaces = new Namespaces();
  private readonly endpoints = new Map<number, EndpointRec>();
  private readonly byName = new Map<string, number>();
  /** Endpoints from the state file not attached (yet): kept in the state until they are. */
  private readonly pendingRestore = new Map<string, StateFile['endpoints'][number]>();

  constructor(
    private readonly ctx: AgentContext,
    private readonly ports: PortManager,
    private readonly publisher: TablePublisher,
  ) {
    this.ipam = new Ipam(ctx.opts.pool4, ctx.opts.pool6);
  }

  /** Every endpoint record (ready or not). */
  records(): IterableIterator<EndpointRec> {
    return this.endpoints.values();
  }

  get size(): number {
    return this.endpoints.size;
  }

  /** Endpoints with a port (the host port is counted by the agent). */
  portCount(): number {
    return [...this.endpoints.values()].filter((r) => r.port >= 0).length;
  }

  byIndex(ep: number): EndpointRec | undefined {
    return this.endpoints.get(ep);
  }

  /** The enforcement the compiler decided for `ep` (none for an unknown endpoint). */
  enforcementOf(ep: number): Enforcement {
    const e = this.ctx.compiler.enforcement().find((x) => x.ep === ep);
    return e ? { ingress: e.ingress, egress: e.egress, audit: e.audit } : { ingress: false, egress: false, audit: false };
  }

  private freeIndex(): number {
    for (let i = 0; i < this.ctx.opts.maxEndpoints; i++) if (!this.endpoints.has(i)) return i;
    throw new TunswitchError('EBAD_REQUEST', `endpoint table is full (${this.ctx.opts.maxEndpoints} endpoints)`);
  }

  /**
   * Adds an endpoint. `handoff` (the Docker network driver): the port's TUN stays in the
   * switch's namespace for the engine to move; `sandbox` is the engine's namespace path.
   */
  async add(req: EndpointAddRequest, fixedId?: number, handoff?: { sandbox: string }): Promise<EndpointInfo> {
    if (typeof req !== 'object' || req === null) throw new TunswitchError('EBAD_REQUEST', 'body: must be an object');
    if (typeof req.name !== 'string' || !/^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/.test(req.name)) {
      throw new TunswitchError('EBAD_REQUEST', `body.name: ${JSON.stringify(req.name)} must be 1-32 characters of a-z, 0-9 and "-"`);
    }
    if (this.byName.has(req.name)) throw new TunswitchError('EENDPOINT_EXISTS', `endpoint "${req.name}" already exists`);
    const where = `endpoint "${req.name}"`;
    const placed = this.namespaces.placeEndpoint(parseLabels(req.labels, 'body'), req.namespace, 'body');
    const labels = this.namespaces.endpointLabels(placed.own, placed.namespace);
    const ports = parsePorts(req.ports, 'body');
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
      } else if (this.ctx.opts.pool6) {
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
      const att = await this.ports.attach(this.portSpec(req, rec, handoff !== undefined));
      rec.port = att.port;
      rec.tun = att.tun;
      rec.ifname = att.ifname;
      rec.offloadFlags = att.offload ?? [];
      identity = await this.allocateIdentity(rec.labels);
      rec.identity = identity.id;
      rec.state = 'ready';
      // Publish: endpoint record, port mapping, ipcache entries, then policy for it.
      this.publisher.writeEndpoint(id);
      this.ctx.tables.setPortEndpoint(rec.port, id);
      this.claimAddresses(rec);
      this.ctx.publish(this.ctx.compiler.upsertEndpoint(compilerEndpoint(rec)));
      this.ctx.hooks().endpointReady?.(this.info(rec));
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
    this.ctx.persist();
    return this.info(rec);
  }

  /** What the port manager needs to make the endpoint's port. */
  private portSpec(req: EndpointAddRequest, rec: EndpointRec, handoff: boolean): PortSpec {
    const routes = [this.ctx.opts.pool4.text];
    if (this.ctx.opts.pool6) routes.push(this.ctx.opts.pool6.text);
    const spec: PortSpec = { name: rec.name, ipv4Prefix: 32, ipv6Prefix: 128, routes, defaultRoute: rec.defaultRoute };
    if (req.netns !== undefined) spec.netns = req.netns;
    if (req.pid !== undefined) spec.pid = req.pid;
    if (handoff) spec.handoff = true;
    if (req.offload !== undefined) spec.offload = req.offload;
    if (rec.ipv4) spec.ipv4 = rec.ipv4;
    if (rec.ipv6) spec.ipv6 = rec.ipv6;
    return spec;
  }

  /** The endpoint's own addresses in the ipcache, with its identity. */
  private claimAddresses(rec: EndpointRec): void {
    if (rec.ipv4) this.ctx.ipc.set(`${rec.ipv4}/32`, 'endpoint', { identity: rec.identity, flags: 1 });
    if (rec.ipv6) this.ctx.ipc.set(`${rec.ipv6}/128`, 'endpoint', { identity: rec.identity, flags: 1 });
  }

  /** Local numbering, or the cluster's through hooks.identityNumber (kvstore mode). */
  private async allocateIdentity(labels: LabelSet): Promise<Identity> {
    const number = this.ctx.hooks().identityNumber;
    if (!number) return this.ctx.allocator.allocate(labels);
    const set = securityLabels(labels);
    return this.ctx.allocator.allocateAs(set, await number(set.canonical));
  }

  private releaseIdentity(id: number, labels: LabelSet): boolean {
    this.ctx.hooks().identityReleased?.(securityLabels(labels).canonical);
    return this.ctx.allocator.release(id);
  }

  /** By name, else by index; EENDPOINT_NOT_FOUND otherwise. */
  find(idOrName: string): EndpointRec {
    const byName = this.byName.get(idOrName);
    const id = byName ?? (/^\d+$/.test(idOrName) ? Number(idOrName) : -1);
    const rec = this.endpoints.get(id);
    if (!rec) throw new TunswitchError('EENDPOINT_NOT_FOUND', `endpoint "${idOrName}" not found`);
    return rec;
  }

  getQueue(idOrName: string): QueueSettings {
    return this.ports.getQueue(this.readyPort(idOrName));
  }

  setQueue(idOrName: string, patch: Partial<QueueSettings>): QueueSettings {
    const rec = this.readyRec(idOrName);
    const q = this.ports.setQueue(rec.port, patch);
    if (rec.handoff !== true) {
      rec.queueSet = { ...rec.queueSet, ...patch };
      this.ctx.persist();
    }
    return q;
  }

  /** Link impairments of an endpoint's port (`tunswitch link`). */
  getLink(idOrName: string): LinkInfo {
    return this.linkOf(this.readyRec(idOrName));
  }

  /** Replaces an endpoint's link impairments; `null` clears them. */
  setLink(idOrName: string, lp: LinkParams | null): LinkInfo {
    if (!this.ports.setLink) throw new TunswitchError('ENOT_SUPPORTED', 'link impairments are not available in this switch');
    const rec = this.readyRec(idOrName);
    this.ports.setLink(rec.port, lp);
    if (rec.handoff !== true) {
      rec.linkSet = lp === null ? null : formatLinkSpec(lp);
      this.ctx.persist();
    }
    return this.linkOf(rec);
  }

  listLinks(): LinkInfo[] {
    return [...this.endpoints.values()].filter((r) => r.port >= 0).map((r) => this.linkOf(r));
  }

  private linkOf(rec: EndpointRec): LinkInfo {
    const lp = this.ports.getLink?.(rec.port) ?? null;
    return { endpoint: rec.name, id: rec.id, link: lp === null ? null : formatLinkSpec(lp) };
  }

  /** The port of an endpoint that has one (EBAD_REQUEST while it is attaching or detached). */
  readyPort(idOrName: string): number {
    return this.readyRec(idOrName).port;
  }

  /** An endpoint that has a port (EBAD_REQUEST while it is attaching or detached). */
  private readyRec(idOrName: string): EndpointRec {
    const rec = this.find(idOrName);
    if (rec.port < 0) throw new TunswitchError('EBAD_REQUEST', `endpoint "${rec.name}" has no port yet (state ${rec.state})`);
    return rec;
  }

  async delete(idOrName: string): Promise<void> {
    if (!this.byName.has(idOrName) && this.forgetRestored(idOrName)) return;
    const rec = this.find(idOrName);
    this.endpoints.delete(rec.id);
    this.byName.delete(rec.name);
    const diff = this.ctx.compiler.deleteEndpoint(rec.id);
    this.ctx.tables.endpoints.remove(rec.id);
    if (rec.port >= 0) this.ctx.tables.setPortEndpoint(rec.port, NO_EP);
    if (rec.ipv4) this.ctx.ipc.clear(`${rec.ipv4}/32`, 'endpoint');
    if (rec.ipv6) this.ctx.ipc.clear(`${rec.ipv6}/128`, 'endpoint');
    this.ctx.publish(diff);
    // Releasing the identity may remove it from other endpoints' selections: sync those.
    this.ctx.hooks().endpointRemoved?.(this.info(rec));
    if (this.releaseIdentity(rec.identity, rec.labels)) this.ctx.publish(this.ctx.compiler.sync());
    if (rec.ipv4) this.ipam.release4(rec.ipv4);
    if (rec.ipv6) this.ipam.release6(rec.ipv6);
    if (rec.port >= 0) await this.ports.detach(rec.port);
    this.ctx.persist();
  }

  /** Detaches every endpoint's port without forgetting the endpoints (shutdown). */
  async detachAll(): Promise<void> {
    for (const rec of this.endpoints.values()) {
      if (rec.port >= 0) {
        this.ctx.tables.setPortEndpoint(rec.port, NO_EP);
        await this.ports.detach(rec.port).catch(() => undefined);
        rec.port = -1;
        rec.state = 'detached';
      }
    }
    this.ctx.tables.commit();
  }

  info(rec: EndpointRec): EndpointInfo {
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

  list(): EndpointInfo[] {
    return [...this.endpoints.values()].sort((a, b) => a.id - b.id).map((r) => this.info(r));
  }

  get(idOrName: string): EndpointInfo {
    return this.info(this.find(idOrName));
  }

  // ---------------------------------------------------------------- labels and namespaces

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
    const ident = this.ctx.allocator.allocate(labels);
    rec.identity = ident.id;
    this.publisher.writeEndpoint(rec.id);
    this.claimAddresses(rec);
    this.ctx.publish(this.ctx.compiler.upsertEndpoint(compilerEndpoint(rec)));
    if (this.ctx.allocator.release(old)) this.ctx.publish(this.ctx.compiler.sync());
  }

  /** `endpoint label EP key=value key-`: changes an endpoint's own labels while it runs. */
  label(idOrName: string, body: unknown): EndpointInfo {
    const rec = this.find(idOrName);
    const { set, remove } = labelChange(body, 'body');
    for (const l of [...set.map((x) => x.key), ...remove]) {
      if (l === NAMESPACE_LABEL || l.startsWith(NAMESPACE_LABELS_PREFIX)) throw new TunswitchError('EBAD_REQUEST', `body: ${l} comes from the endpoint's namespace; change the namespace's labels instead`);
    }
    const keep = rec.own.labels.filter((l) => !remove.includes(l.key) && !set.some((s) => s.key === l.key));
    this.retag(rec, LabelSet.from([...keep, ...set]), rec.namespace);
    this.ctx.persist();
    return this.info(rec);
  }

  namespaceInfo(name: string): NamespaceInfo {
    const eps = [...this.endpoints.values()].filter((r) => r.namespace === name).map((r) => r.name).sort();
    return { name, labels: this.namespaces.labels(name), endpoints: eps };
  }

  listNamespaces(): NamespaceInfo[] {
    return this.namespaces.names().map((n) => this.namespaceInfo(n));
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
    const { set, remove } = labelChange(body, 'body');
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
    this.ctx.persist();
  }

  // ---------------------------------------------------------------- state

  /** The endpoints the state directory keeps: attached ones (not Docker's) and those still to restore. */
  persisted(): StateFile['endpoints'] {
    const out = [...this.endpoints.values()].filter((r) => r.handoff !== true).map((r) => {
      const e: StateFile['endpoints'][number] = { id: r.id, name: r.name, labels: r.labels.labels.map(formatLabel), defaultRoute: r.defaultRoute };
      if (r.ipv4) e.ipv4 = r.ipv4;
      if (r.ipv6) e.ipv6 = r.ipv6;
      if (r.pid !== undefined) e.pid = r.pid;
      else e.netns = r.netns;
      if (r.offloadAsked !== undefined) e.offload = r.offloadAsked;
      if (r.linkSet !== undefined) e.link = r.linkSet;
      if (r.queueSet !== undefined) e.queue = r.queueSet;
      return e;
    });
    for (const [name, e] of this.pendingRestore) if (!this.byName.has(name)) out.push(e);
    return out;
  }

  /** Remembers restored endpoints until they are attached (or forgotten). */
  expectRestored(eps: StateFile['endpoints']): void {
    for (const e of eps) this.pendingRestore.set(e.name, e);
  }

  /** Forgets a restored endpoint that will not come back (e.g. deleted through the API). */
  forgetRestored(name: string): boolean {
    const had = this.pendingRestore.delete(name);
    if (had) this.ctx.persist();
    return had;
  }
}

/** What the policy compiler knows of an endpoint: identity, named ports, addresses. */
function compilerEndpoint(rec: EndpointRec): CompilerEndpoint {
  const addrs: string[] = [];
  if (rec.ipv4) addrs.push(rec.ipv4);
  if (rec.ipv6) addrs.push(rec.ipv6);
  return { index: rec.id, identity: rec.identity, ports: rec.ports, addrs };
}
