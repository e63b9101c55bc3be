/**
 * The control plane as the API server sees it: ControlApi at the end of this file declares
 * every method the server calls (src/api/routes.ts maps each route onto one). The agent
 * (src/control/agent.ts) implements it; the server checks each request first
 * (src/api/validate.ts), so the methods take checked values. Errors are TunswitchError with a
 * stable `code` (src/proto/errors.ts, the one table of codes, HTTP statuses and exit codes).
 *
 * All values are plain JSON, except capture's sink and handle.
 */
import type { CaptureHandle, CaptureRequest, CaptureSink } from '../control/capture.js';
import type { TraceResult } from '../control/trace.js';
import type { NamespaceInfo } from '../control/namespaces.js';
import type { NodeInfo } from '../kvstore/nodes.js';
import type { LinkParams, LinkSpec } from '../runtime/link-spec.js';

export type { CaptureHandle, CaptureRequest, CaptureSink, NamespaceInfo, TraceResult };

export interface EndpointInfo {
  id: number; // endpoint index
  name: string;
  labels: string[]; // "k8s:app=web" form
  identity: number;
  ipv4?: string;
  ipv6?: string;
  netns: string; // "demo-web" or "/proc/1234/ns/net"
  ifname: string; // name inside the namespace
  port: number; // switch port index
  tun: string; // TUN device name
  policy: { ingress: boolean; egress: boolean; audit: boolean }; // enforced directions
  state: 'ready' | 'attaching' | 'detached';
  /** Kubernetes namespace (its labels become io.cilium.k8s.namespace.labels.*). */
  namespace?: string;
  /** Named ports the endpoint declares (for policies written with `port: http`). */
  ports?: NamedPort[];
  /** The port offers TSO/USO to the endpoint's kernel (false: a plain port). */
  offload?: boolean;
  /** The TUN_F_* flags in force, by name: csum, tso4, tso6, uso4, uso6 ([] when plain). */
  offloadFlags?: string[];
}

export interface NamedPort {
  name: string;
  port: number;
  protocol: 'TCP' | 'UDP' | 'SCTP';
}

export interface EndpointAddRequest {
  name: string;
  labels?: Record<string, string> | string[];
  netns?: string; // named namespace
  pid?: number; // or a process whose network namespace to use
  ipv4?: string;
  ipv6?: string;
  defaultRoute?: boolean;
  /** Kubernetes namespace; `default` when left out. */
  namespace?: string;
  ports?: NamedPort[];
  /** Offer TSO/USO to the endpoint's kernel; left out: the switch's `offload`. */
  offload?: boolean;
}

/** Body of POST /v1/endpoint/:id/labels and /v1/namespace/:name/labels. */
export interface LabelChangeRequest {
  /** Labels to add or overwrite: `{key: value}` or `["key=value"]`. */
  set?: Record<string, string> | string[];
  /** Keys to remove. */
  remove?: string[];
}

export interface IdentityInfo {
  id: number;
  labels: string[];
  kind: 'reserved' | 'workload' | 'cidr';
  refs: number;
}

export interface PolicyInfo {
  name: string;
  namespace?: string;
  kind: string; // CiliumNetworkPolicy | CiliumClusterwideNetworkPolicy | NetworkPolicy
  rules: number;
  source?: string; // file it came from
  revision: number; // policy revision when imported
}

export interface PolicyImportResult {
  /** The policy revision that published the change (the one `status` shows). */
  revision: number;
  policies: string[];
  /** Import: the policies each file defined, in request order. */
  files?: { fileName: string; policies: string[] }[];
}

/** One policy file of an import or validation. */
export interface PolicyFileText {
  text: string;
  /** Named in error messages ("request" when the client gives none). */
  fileName: string;
}

/** A rule behind a verdict (events and trace name it). */
export interface RuleRef {
  name: string;
  namespace?: string;
  rule_index: number;
  direction: string;
  deny: boolean;
}

/** GET /v1/policy/selectors: a selector (or a named port) in use and what it resolves to. */
export interface SelectorInfo {
  selector: string;
  identities: number[];
  /** Named-port entries: the numbers the name resolves to per identity. */
  ports?: Record<string, number[]>;
}

/** A checked ipcache entry of PUT /v1/ipcache (cidr in canonical text, tunnel an IPv4 word). */
export interface IpcacheEntryRequest {
  cidr: string;
  identity: number;
  tunnel?: number;
}

/** One end of a trace: exactly one of these. */
export interface TraceEndQuery {
  endpoint?: string;
  labels?: string[];
  ip?: string;
}

/** A checked `POST /v1/policy/trace` body ("80/TCP" already split into proto and port). */
export interface TraceQuery {
  src: TraceEndQuery;
  dst: TraceEndQuery;
  proto: number;
  port: number;
  protoName: string;
}

export interface IpcacheInfo {
  cidr: string;
  identity: number;
  tunnel?: string;
  /** The owner whose claim is in the table (endpoint > host > kvstore > cidr-policy > api). */
  source: 'endpoint' | 'host' | 'kvstore' | 'cidr-policy' | 'api';
  /** Every owner claiming this exact prefix, highest precedence first. */
  owners?: string[];
  /** The node that published the entry (kvstore mode). */
  node?: string;
}

/** A switch of the cluster (kvstore mode): GET /v1/nodes. */
export type { NodeInfo };

/** The kvstore part of GET /v1/status (kvstore mode only). */
export interface KvstoreStatus {
  url: string;
  node: string;
  state: 'connecting' | 'connected' | 'disconnected' | 'closed';
  lastError: string | null;
  leaseTtl: number;
  leaseRenewals: number;
  nodes: number;
  identities: number;
  remoteIpcacheEntries: number;
  /** Remote entries the shared-memory ipcache refused (full). */
  remoteIpcacheRejected: number;
  ownedKeys: number;
  pendingWrites: number;
  operations: Record<string, { ok: number; failed: number }>;
}

export interface CtEntryInfo {
  shard: number;
  proto: string;
  src: string; // ip:port
  dst: string;
  state: string;
  expiresIn: number; // seconds
  identity: number;
  packets: number;
  bytes: number;
  flags: string;
}

export interface StatusInfo {
  name: string;
  version: string;
  uptimeSeconds: number;
  policyRevision: number;
  endpoints: number;
  identities: number;
  policies: number;
  workers: number;
  workerRestarts: number;
  /** The last shard restart: which shard and why ('' if none). */
  lastWorkerRestart: string;
  /** I/O engine: 'uring' or 'readwrite'. */
  ioEngine: string;
  /** Per-shard liveness from the supervisor. */
  shards: RuntimeInfo['shards'];
  /** Every shard running and none in a crash loop. */
  healthy: boolean;
  ports: number;
  offload: boolean;
  config: AgentConfig;
  counters: { forwarded: number; dropped: number };
  kvstore?: KvstoreStatus;
}

export interface RuntimeInfo {
  ioEngine: string;
  packetsRead: number;
  shards: { shard: number; state: string; restarts: number; crashLoop: boolean }[];
  healthy: boolean;
}

export interface AgentConfig {
  audit: boolean;
  enforcement: 'default' | 'always' | 'never';
  /**
   * CiliumNetworkPolicy CIDR rules (toCIDR, fromCIDR, toCIDRSet, fromCIDRSet) also select
   * endpoints whose addresses fall in them (off: Cilium's meaning, CIDR identities only).
   * Kubernetes NetworkPolicy ipBlocks always do.
   */
  cidrMatchPods?: boolean;
}

/** One flow event, Hubble-like field names (see src/observe). */
export interface FlowEvent {
  time: string;
  verdict: 'FORWARDED' | 'DROPPED' | 'AUDIT';
  event_type: 'drop' | 'trace' | 'policy-verdict';
  drop_reason?: number;
  drop_reason_desc?: string;
  traffic_direction: 'INGRESS' | 'EGRESS';
  is_reply: boolean;
  policy_match_type?: string;
  ipcache_miss?: boolean;
  IP: { ipVersion: 'IPv4' | 'IPv6'; source: string; destination: string };
  l4?: { protocol: string; source_port?: number; destination_port?: number; icmp_type?: number; icmp_code?: number; tcp_flags?: string };
  /** kvstore mode: the node (switch) that saw the flow; each side's node: local endpoints this one, remote ones from the ipcache. */
  node_name?: string;
  source: { identity: number; labels: string[]; endpoint?: string; ip: string; port?: number; node?: string };
  destination: { identity: number; labels: string[]; endpoint?: string; ip: string; port?: number; node?: string };
  policy?: { name: string; namespace?: string; rule_index: number; direction: string; deny: boolean } | { none: string };
  length: number;
}

/** Egress queue settings of an endpoint's port (src/runtime/egress.ts). */
/** Link impairments of an endpoint (`GET /v1/endpoint/:id/link`); `link` null: none. */
export interface LinkInfo {
  endpoint: string;
  id: number;
  link: LinkSpec | null;
}

export interface QueueSettings {
  limitBytes: number;
  targetMs: number;
  intervalMs: number;
}

export interface ControlApi {
  // ---- switch
  status(): StatusInfo;
  getConfig(): AgentConfig;
  setConfig(patch: Partial<AgentConfig>): AgentConfig;
  /** Prometheus text exposition. */
  metrics(): Promise<string>;
  /** Cluster nodes (kvstore mode); empty for a single switch. */
  listNodes(): NodeInfo[];

  // ---- endpoints and namespaces
  listEndpoints(): EndpointInfo[];
  getEndpoint(idOrName: string): EndpointInfo;
  addEndpoint(req: EndpointAddRequest): Promise<EndpointInfo>;
  deleteEndpoint(idOrName: string): Promise<void>;
  /** `{set, remove}` (LabelChangeRequest): new identity and policy in one revision. */
  labelEndpoint(idOrName: string, body: unknown): EndpointInfo;
  /** The egress queue settings in force at an endpoint's port. */
  getEndpointQueue(idOrName: string): QueueSettings;
  /** Changes them (absent fields keep their value); applies at the worker's next batch. */
  setEndpointQueue(idOrName: string, patch: Partial<QueueSettings>): QueueSettings;
  /** Link impairments of an endpoint's port (src/runtime/impair.ts). */
  getEndpointLink(idOrName: string): LinkInfo;
  /** Replaces them (null: clears them); applies at the workers' next round. */
  setEndpointLink(idOrName: string, lp: LinkParams | null): LinkInfo;
  listLinks(): LinkInfo[];
  listNamespaces(): NamespaceInfo[];
  getNamespace(name: string): NamespaceInfo;
  putNamespace(name: string, body: unknown): NamespaceInfo;
  labelNamespace(name: string, body: unknown): NamespaceInfo;
  deleteNamespace(name: string): { deleted: string };

  // ---- identities
  listIdentities(): IdentityInfo[];
  getIdentity(id: number): IdentityInfo;

  // ---- policy
  /** Every file or none; one compile, one publish, one revision (returned). EPOLICY_INVALID for no policies unless allowEmpty. */
  importPolicies(files: PolicyFileText[], allowEmpty?: boolean): PolicyImportResult;
  validatePolicies(text: string, fileName: string): { policies: string[] };
  listPolicies(): PolicyInfo[];
  getPolicy(name: string): unknown; // the stored document
  deletePolicy(name: string): PolicyImportResult;
  deleteAllPolicies(): PolicyImportResult;
  selectors(): SelectorInfo[];
  trace(q: TraceQuery): TraceResult;

  // ---- ipcache and conntrack
  listIpcache(): IpcacheInfo[];
  getIpcache(ip: string): IpcacheInfo | null; // longest match
  upsertIpcache(entries: IpcacheEntryRequest[]): { added: number };
  deleteIpcache(cidr: string): { deleted: boolean };
  listCt(): CtEntryInfo[];
  flushCt(): { flushed: number };

  // ---- events and capture
  /** Recent events (newest last), up to `last`; and a subscription for --follow. */
  recentEvents(last: number): FlowEvent[];
  subscribeEvents(fn: (e: FlowEvent) => void): () => void;
  /** Starts a packet capture; the pcap bytes go to `sink`. ECAPTURE_BUSY, ENOT_SUPPORTED. */
  capture(req: CaptureRequest, sink: CaptureSink): CaptureHandle;
}
