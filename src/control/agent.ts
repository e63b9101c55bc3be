/**
 * The agent: the control plane's facade, in the control thread. It implements the API contract
 * (src/api/types.ts) by handing each call to the part that owns it:
 *
 *   endpoint-manager.ts  endpoints, their namespaces and queues (ports through a PortManager)
 *   policy-repo.ts       policies: atomic import (one compile, one revision), delete, list
 *   ipcache-service.ts   the ipcache as the API shows and changes it
 *   tracer.ts            policy trace over the published tables
 *   flow-log.ts          recent flow events (a ring) and --follow subscribers
 *   agent-state.ts       the state directory: save, and restore at start
 *   table-publisher.ts   compiler diffs and records into the tables; one policy revision per publish
 *
 * Every change follows one path: 1. the API server checks the request (src/api/validate.ts),
 * the part checks what only the control plane knows (names, addresses in the pool), nothing
 * changes on error; 2. update identities / the compiler; 3. publish the diff through the
 * TablePublisher: one commit, one new policy revision; 4. persist the state directory.
 *
 * Dependencies come in through the constructor; cluster mode (src/kvstore/cluster.ts) plugs in
 * through `hooks` while it is connected.
 */
import { TunswitchError } from './errors.js';
import { IdentityAllocator } from './identity.js';
import { formatLabel, type LabelSet } from './labels.js';
import { PolicyCompiler, type PolicyDiff } from './policy/compile.js';
import { IpcacheOwners } from './ipcache-owners.js';
import type { NamespaceInfo } from './namespaces.js';
import type { StateFile } from './state-store.js';
import type { DatapathView } from './datapath-view.js';
import type { CaptureController, CaptureHandle, CaptureRequest, CaptureSink } from './capture.js';
import type { LinkParams } from '../runtime/link-spec.js';
import type { AgentHooks } from './agent-hooks.js';
import type { TraceResult } from './trace.js';
import type { AgentContext, AgentOptions, PortManager, PortSpec } from './agent-context.js';
import { TablePublisher } from './table-publisher.js';
import { EndpointManager, type EndpointRec } from './endpoint-manager.js';
import { PolicyRepository } from './policy-repo.js';
import { IpcacheService } from './ipcache-service.js';
import { Tracer } from './tracer.js';
import { FlowLog } from './flow-log.js';
import { loadState, openState, type RestoreOptions } from './agent-state.js';
import { M_HOST_PORT, NO_EP, type TableSetWriter } from '../tables/tableset.js';
import type * as T from '../api/types.js';

export type { AgentOptions, PortManager, PortSpec, RestoreOptions, StateFile };

/** Runtime facts the control thread knows: engine, shard liveness, restarts. */
export interface RuntimeFacts extends T.RuntimeInfo {
  workerRestarts: number;
  lastWorkerRestart: string; // which shard and why ('' if none)
}

/** What the agent reads from its surroundings (all optional: tests run without). */
export interface AgentDeps {
  runtime?: () => RuntimeFacts;
  /** Packet capture over the shards' capture rings (none: capture is ENOT_SUPPORTED). */
  capture?: CaptureController | null;
  /** Prometheus text (built after the agent, from it: hence a function). */
  metrics?: () => Promise<string>;
}

const NO_RUNTIME = (): RuntimeFacts => ({ ioEngine: 'none', packetsRead: 0, shards: [], healthy: true, workerRestarts: 0, lastWorkerRestart: '' });

export class Agent implements T.ControlApi {
  readonly allocator = new IdentityAllocator();
  readonly compiler: PolicyCompiler;
  readonly ipc: IpcacheOwners;
  /** Cluster mode (src/kvstore/cluster.ts) installs its hooks here while connected. */
  hooks: AgentHooks = {};
  private readonly publisher: TablePublisher;
  private readonly endpoints: EndpointManager;
  private readonly policies: PolicyRepository;
  private readonly ipcache: IpcacheService;
  private readonly tracer: Tracer;
  private readonly flows = new FlowLog();
  private config: T.AgentConfig;
  private readonly started = Date.now();
  private readonly persist: () => void;
  /** The host port (-1: none); its addresses have identity 1 (reserved:host). */
  private hostPort = -1;

  constructor(
    readonly opts: AgentOptions,
    readonly tables: TableSetWriter,
    ports: PortManager,
    readonly view: DatapathView | null,
    private readonly deps: AgentDeps = {},
  ) {
    this.config = { ...opts.config };
    this.compiler = new PolicyCompiler(this.allocator, this.policyConfig());
    this.ipc = new IpcacheOwners(tables.ipcache);
    const store = openState(opts.stateDir);
    this.persist = () => store?.write(this.snapshot());
    const ctx: AgentContext = {
      opts,
      tables,
      allocator: this.allocator,
      compiler: this.compiler,
      ipc: this.ipc,
      hooks: () => this.hooks,
      publish: (diff?: PolicyDiff) => this.publisher.publish(diff),
      persist: this.persist,
    };
    this.publisher = new TablePublisher(tables, this.ipc, (ep) => this.endpoints.byIndex(ep), (ep) => this.endpoints.enforcementOf(ep));
    this.endpoints = new EndpointManager(ctx, ports, this.publisher);
    this.policies = new PolicyRepository(ctx, (ep) => this.identityLabelSet(ep));
    this.ipcache = new IpcacheService(ctx);
    this.tracer = new Tracer(ctx, this.endpoints, (ip) => this.ipcache.get(ip), (c) => this.policies.ruleName(c));
    this.publishConfig();
    this.publisher.publish(this.compiler.sync());
  }

  get ipam(): EndpointManager['ipam'] {
    return this.endpoints.ipam;
  }
  private policyConfig(): { enforcement: T.AgentConfig['enforcement']; audit: boolean; cidrMatchPods: boolean } {
    return { enforcement: this.config.enforcement, audit: this.config.audit, cidrMatchPods: this.config.cidrMatchPods === true };
  }
  private publishConfig(): void {
    this.publisher.writeConfig(this.config.audit, this.hostPort >= 0);
  }

  // ---------------------------------------------------------------- host port

  /** Registers the host port: its addresses get identity 1 (reserved:host) in the ipcache. */
  setHostPort(port: number, addrs: string[]): void {
    this.hostPort = port;
    for (const a of addrs) this.ipc.set(a, 'host', { identity: 1, flags: 0 });
    this.tables.setPortEndpoint(port, NO_EP);
    this.tables.setMeta(M_HOST_PORT, port);
    this.publishConfig();
    this.publisher.commit();
  }

  /** A further host address (a Docker network's gateway on the host port): identity 1. */
  addHostAddress(prefix: string): void {
    this.tables.ipcache.upsert(prefix, { identity: 1, flags: 0 });
    this.publisher.commit();
  }

  removeHostAddress(prefix: string): void {
    this.tables.ipcache.delete(prefix);
    this.publisher.commit();
  }

  // ---------------------------------------------------------------- endpoints and namespaces

  /** `fixedId` (restore) and `handoff` (the Docker driver) are for in-process callers only. */
  addEndpoint(req: T.EndpointAddRequest, fixedId?: number, handoff?: { sandbox: string }): Promise<T.EndpointInfo> {
    return this.endpoints.add(req, fixedId, handoff);
  }
  deleteEndpoint = (idOrName: string): Promise<void> => this.endpoints.delete(idOrName);
  detachAll = (): Promise<void> => this.endpoints.detachAll();
  listEndpoints = (): T.EndpointInfo[] => this.endpoints.list();
  getEndpoint = (idOrName: string): T.EndpointInfo => this.endpoints.get(idOrName);
  endpointByIndex = (ep: number): EndpointRec | undefined => this.endpoints.byIndex(ep);
  labelEndpoint = (idOrName: string, body: unknown): T.EndpointInfo => this.endpoints.label(idOrName, body);
  getEndpointQueue = (idOrName: string): T.QueueSettings => this.endpoints.getQueue(idOrName);
  setEndpointQueue = (idOrName: string, patch: Partial<T.QueueSettings>): T.QueueSettings => this.endpoints.setQueue(idOrName, patch);
  getEndpointLink = (idOrName: string): T.LinkInfo => this.endpoints.getLink(idOrName);
  setEndpointLink = (idOrName: string, lp: LinkParams | null): T.LinkInfo => this.endpoints.setLink(idOrName, lp);
  listLinks = (): T.LinkInfo[] => this.endpoints.listLinks();
  forgetRestored = (name: string): boolean => this.endpoints.forgetRestored(name);
  listNamespaces = (): NamespaceInfo[] => this.endpoints.listNamespaces();
  getNamespace = (name: string): NamespaceInfo => this.endpoints.namespaceInfo(name);
  putNamespace = (name: string, body: unknown): NamespaceInfo => this.endpoints.putNamespace(name, body);
  labelNamespace = (name: string, body: unknown): NamespaceInfo => this.endpoints.labelNamespace(name, body);
  deleteNamespace = (name: string): { deleted: string } => this.endpoints.deleteNamespace(name);

  // ---------------------------------------------------------------- identities

  private identityInfo(id: number): T.IdentityInfo | null {
    const i = this.allocator.get(id);
    return i ? { id: i.id, labels: i.labels.labels.map(formatLabel), kind: i.kind, refs: i.refs } : null;
  }
  listIdentities = (): T.IdentityInfo[] => this.allocator.list().sort((a, b) => a.id - b.id).map((i) => this.identityInfo(i.id) as T.IdentityInfo);
  identityLabels = (id: number): string[] => this.identityInfo(id)?.labels ?? [];
  getIdentity(id: number): T.IdentityInfo {
    const i = this.identityInfo(id);
    if (!i) throw new TunswitchError('EIDENTITY_NOT_FOUND', `identity ${id} not found`);
    return i;
  }

  /** The labels of a local endpoint's identity (its own labels while it has none). */
  private identityLabelSet(ep: number): LabelSet | undefined {
    const rec = this.endpoints.byIndex(ep);
    return rec ? (this.allocator.get(rec.identity)?.labels ?? rec.labels) : undefined;
  }

  // ---------------------------------------------------------------- policy

  importPolicies = (files: T.PolicyFileText[], allowEmpty = false): T.PolicyImportResult => this.policies.import(files, allowEmpty);
  /** One file (tests, the kvstore's remote policies). */
  importPolicyText = (text: string, fileName: string, allowEmpty = false): T.PolicyImportResult => this.policies.import([{ text, fileName }], allowEmpty);
  validatePolicies = (text: string, fileName: string): { policies: string[] } => this.policies.validate(text, fileName);
  listPolicies = (): T.PolicyInfo[] => this.policies.list();
  getPolicy = (name: string): unknown => this.policies.get(name);
  deletePolicy = (name: string): T.PolicyImportResult => this.policies.delete(name);
  deleteAllPolicies = (): T.PolicyImportResult => this.policies.deleteAll();
  selectors = (): T.SelectorInfo[] => this.policies.selectors();
  ruleName = (cookie: number): T.RuleRef | null => this.policies.ruleName(cookie);
  defaultDenyBy = (ep: number, dir: 'ingress' | 'egress'): string[] => this.policies.defaultDenyBy(ep, dir);
  trace = (q: T.TraceQuery): TraceResult => this.tracer.trace(q);

  // ---------------------------------------------------------------- ipcache, ct, nodes

  listIpcache = (): T.IpcacheInfo[] => this.ipcache.list();
  getIpcache = (ip: string): T.IpcacheInfo | null => this.ipcache.get(ip);
  upsertIpcache = (entries: T.IpcacheEntryRequest[]): { added: number } => this.ipcache.upsert(entries);
  deleteIpcache = (cidr: string): { deleted: boolean } => this.ipcache.delete(cidr);
  listCt = (): T.CtEntryInfo[] => (this.view ? this.view.listCt() : []);
  flushCt = (): { flushed: number } => (this.view ? this.view.flushCt() : { flushed: 0 });
  /** Cluster nodes (kvstore mode); empty for a single switch. */
  listNodes = (): T.NodeInfo[] => this.hooks.listNodes?.() ?? [];

  // ---------------------------------------------------------------- config, status, metrics

  getConfig(): T.AgentConfig {
    return { ...this.config };
  }

  /** A checked patch (src/api/validate.ts): new flags and policy in one revision. */
  setConfig(patch: Partial<T.AgentConfig>): T.AgentConfig {
    for (const k of Object.keys(patch)) {
      if (k !== 'audit' && k !== 'enforcement' && k !== 'cidrMatchPods') throw new TunswitchError('EBAD_REQUEST', `body.${k}: unknown setting (known: audit, enforcement, cidrMatchPods)`);
    }
    this.config = { ...this.config, ...patch };
    this.publishConfig();
    this.publisher.publish(this.compiler.setConfig(this.policyConfig()));
    this.persist();
    return this.getConfig();
  }

  status(): T.StatusInfo {
    const rt = (this.deps.runtime ?? NO_RUNTIME)();
    return {
      name: this.opts.name,
      version: this.opts.version,
      uptimeSeconds: Math.round((Date.now() - this.started) / 1000),
      policyRevision: this.publisher.revision,
      endpoints: this.endpoints.size,
      identities: this.allocator.list().length,
      policies: this.compiler.policyList().length,
      workers: this.opts.workers,
      workerRestarts: rt.workerRestarts,
      lastWorkerRestart: rt.lastWorkerRestart,
      ioEngine: rt.ioEngine,
      shards: rt.shards,
      healthy: rt.healthy,
      ports: this.endpoints.portCount() + (this.hostPort >= 0 ? 1 : 0),
      offload: this.opts.offload,
      config: this.getConfig(),
      counters: this.view ? this.view.totals() : { forwarded: 0, dropped: 0 },
      ...(this.hooks.status ? { kvstore: this.hooks.status() } : {}),
    };
  }

  /** Publishes what changed outside the agent's own calls (kvstore identities, remote ipcache): one revision. */
  resync = (): void => void this.publisher.publish(this.compiler.sync());

  metrics = (): Promise<string> => (this.deps.metrics ?? (async () => ''))();

  // ---------------------------------------------------------------- events and capture

  pushEvent = (e: T.FlowEvent): void => this.flows.push(e);
  recentEvents = (last: number): T.FlowEvent[] => this.flows.recent(last);
  subscribeEvents = (fn: (e: T.FlowEvent) => void): (() => void) => this.flows.subscribe(fn);

  /** Starts a packet capture at an endpoint (name or index); ECAPTURE_BUSY (all slots taken), ENOT_SUPPORTED. */
  capture(req: CaptureRequest, sink: CaptureSink): CaptureHandle {
    if (!this.deps.capture) throw new TunswitchError('ENOT_SUPPORTED', 'packet capture is not available in this agent');
    const { endpoint, duration, ...rest } = req;
    return this.deps.capture.start({ ...rest, endpoint: this.endpoints.find(endpoint).id, ...(duration !== undefined ? { durationS: duration } : {}) }, sink);
  }

  // ---------------------------------------------------------------- state

  private snapshot(): StateFile {
    return { version: 1, config: this.config, identities: this.allocator.snapshot(), endpoints: this.endpoints.persisted(), policies: this.policies.snapshot() };
  }

  /**
   * Restores identities, config and policies from the state directory (all checked first, see
   * src/control/agent-state.ts), and returns the endpoints to re-attach (the caller decides
   * which namespaces still exist).
   */
  restore(opts: RestoreOptions = {}): StateFile['endpoints'] {
    const store = openState(this.opts.stateDir);
    const plan = store ? loadState(store, opts) : null;
    if (!plan) return [];
    if (opts.identitiesFromCluster === true) {
      opts.log?.(`${plan.file}: identity numbers come from the kvstore; the saved ones are not loaded`);
    } else {
      try {
        this.allocator.restore(plan.state.identities);
      } catch (e) {
        throw new TunswitchError('ESTATE_INVALID', `${plan.file}: identities: ${(e as Error).message}`);
      }
    }
    this.config = { ...this.config, ...plan.state.config };
    this.publishConfig();
    this.publisher.publish(this.compiler.setConfig(this.policyConfig()));
    this.policies.restore(plan.policies);
    this.endpoints.expectRestored(plan.state.endpoints);
    return plan.state.endpoints;
  }
}
