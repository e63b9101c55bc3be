/**
 * The `tunswitch run` / `lab up` configuration file (YAML). Every field is checked and an
 * error names its path, e.g. `lab.yaml: nodes.web.ipv4: "10.42.0.300" is not an IPv4 address`.
 *
 *   name: demo                       # namespaces are <name>-<node>
 *   pool: { ipv4: 10.42.0.0/16, ipv6: "fd00:42::/64" }
 *   workers: 2                       # shard workers (Piscina threads)
 *   offload: true                    # TSO/USO offered to every endpoint's kernel (default false)
 *   mtu: 1500
 *   hostPort: true                   # a TUN in the switch's namespace for host and world traffic
 *   enforcement: default             # default | always | never
 *   audit: false
 *   cidrMatchPods: false             # CNP toCIDR/fromCIDR also select endpoints by address
 *   namespaces:                      # Kubernetes namespaces (default: just "default")
 *     prod: { labels: { team: a } }
 *   nodes:
 *     web: { labels: { app: web }, ipv4: 10.42.0.10, namespace: prod,
 *            ports: [ { name: http, port: 80, protocol: TCP } ] }   # named ports for policies
 *     db:  { labels: { app: db } }   # address from the pool, namespace default
 *   policies: [ policies/ ]          # files or folders, relative to the config file
 *   quotas:                          # percent of a shard's table one endpoint may hold
 *     conntrack: 50                  # (1-100, 100 = no quota; see tables/conntrack.ts)
 *     fragments: 50
 *   io: auto                         # I/O engine: auto (read/write, measured faster here) | uring | readwrite
 *   queue: { limitBytes: 4MiB, target: 5ms, interval: 100ms }   # egress queue of every port
 *   txqueuelen: 64                   # endpoint TUN queue (packets the kernel holds before we read)
 *   gro: true                        # coalesce same-flow TCP segments into one GSO write
 *   underlayUdpGso: false            # VXLAN underlay: send split GSO packets with UDP_SEGMENT
 *
 * A node may override the queue: `nodes.web.queue: { limitBytes: 1MiB }`, and the offload:
 * `nodes.web.offload: false` (a plain port; see src/runtime/offload.ts, src/datapath/gso-port.ts); and impair its link
 * (src/runtime/link-spec.ts): `nodes.web.link: { delay: 20ms, jitter: 5ms, loss: 1%, rate: 100mbit }`.
 *   kvstore:                         # cluster mode (optional; also run --kvstore/--node-name/--node-ip)
 *     url: etcd://127.0.0.1:2379
 *     nodeName: host1                # default: the config's name
 *     nodeIp: 10.99.0.1              # underlay IPv4: other nodes tunnel to it (VXLAN, UDP 8472)
 *     leaseTtl: 15                   # seconds; a dead node's entries vanish after this
 */
import { readFileSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { TunswitchError } from '../control/errors.js';
import { tryParsePrefix, type Prefix } from '../control/cidr.js';
import { DEFAULT_ENDPOINT_SHARE } from '../tables/conntrack.js';
import { addressProblem } from '../control/ipam.js';
import { LinkSpecError, parseLinkSpec, type LinkParams } from './link-spec.js';

export interface NodeConfig {
  name: string;
  labels: Record<string, string>;
  ipv4?: string;
  ipv6?: string;
  defaultRoute: boolean;
  /** Egress queue settings of this node's port (absent fields: the config's `queue`). */
  queue?: Partial<QueueConfig>;
  /** Link impairments of this node's port (the `link:` block). */
  link?: LinkParams;
  /** Kubernetes namespace (declared under `namespaces`, or `default`). */
  namespace: string;
  ports: { name: string; port: number; protocol: 'TCP' | 'UDP' | 'SCTP' }[];
  /** This node's port offers TSO/USO (absent: the config's `offload`). */
  offload?: boolean;
}

/** Egress queue settings (src/runtime/egress.ts). */
export interface QueueConfig {
  limitBytes: number;
  targetMs: number;
  intervalMs: number;
}

export const DEFAULT_QUEUE: Readonly<QueueConfig> = Object.freeze({ limitBytes: 4 << 20, targetMs: 5, intervalMs: 100 });
/**
 * Endpoint TUN txqueuelen set by the switch. The endpoint's kernel queues up to this many
 * packets before the switch reads them; a FIFO no AQM sees, so it is kept short. Measured
 * with `tunswitch bench --systems ts-w1,ts-w1-tso --cases tcp1,ping` at 64 and 1000 (README):
 * throughput within noise, loaded RTT p50 0.77 ms vs 1.72 ms without offload.
 */
export const DEFAULT_TXQUEUELEN = 64;

export interface KvstoreConfig {
  /** etcd://HOST:PORT */
  url: string;
  nodeName: string;
  nodeIp: string;
  leaseTtl: number;
}

export const DEFAULT_LEASE_TTL = 15;

export interface RunConfig {
  name: string;
  pool: { ipv4: Prefix; ipv6?: Prefix };
  workers: number;
  offload: boolean;
  mtu: number;
  hostPort: boolean;
  enforcement: 'default' | 'always' | 'never';
  audit: boolean;
  /** CiliumNetworkPolicy CIDR rules also select endpoints by address (see AgentConfig). */
  cidrMatchPods: boolean;
  nodes: NodeConfig[];
  /** Namespace name -> its labels (`default` is always there). */
  namespaces: Record<string, Record<string, string>>;
  policies: string[];
  io: 'auto' | 'uring' | 'readwrite';
  queue: QueueConfig;
  /** Coalesce same-flow TCP segments of a transmit batch into one GSO write. */
  gro: boolean;
  /** Send GSO packets split for the VXLAN underlay with UDP_SEGMENT (the kernel cuts the outer datagrams). */
  underlayUdpGso: boolean;
  txqueuelen: number;
  /** Percent of a shard's conntrack / fragment slots one endpoint may hold (100: no quota). */
  quotas: { conntrack: number; fragments: number };
  /** Directory of the config file (policy paths are relative to it). */
  baseDir: string;
  file: string;
  /** Cluster mode through etcd (src/kvstore/cluster.ts); absent: a single switch. */
  kvstore?: KvstoreConfig;
  /**
   * The VXLAN underlay port (src/runtime/underlay.ts) on ip:8472: with kvstore, its nodeIp;
   * or alone (run --node-ip without --kvstore) for static tunnel entries (PUT /v1/ipcache).
   */
  underlay?: { ip: string };
}

const TOP_KEYS = ['name', 'pool', 'workers', 'offload', 'mtu', 'hostPort', 'enforcement', 'audit', 'cidrMatchPods', 'namespaces', 'nodes', 'policies', 'io', 'queue', 'txqueuelen', 'gro', 'underlayUdpGso', 'quotas', 'kvstore'];
const KVSTORE_KEYS = ['url', 'nodeName', 'nodeIp', 'leaseTtl'];
const NODE_KEYS = ['labels', 'ipv4', 'ipv6', 'defaultRoute', 'queue', 'link', 'namespace', 'ports', 'offload'];
const QUEUE_KEYS = ['limitBytes', 'target', 'interval'];
const QUOTA_KEYS = ['conntrack', 'fragments'];
const NS_NAME_RE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const LABEL_KEY_RE = /^([a-z]+:)?[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$/;
const NAME_RE = /^[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?$/;

function fail(file: string, path: string, msg: string): never {
  throw new TunswitchError('ECONFIG_INVALID', `${file}: ${path}: ${msg}`);
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function show(v: unknown): string {
  return JSON.stringify(v) ?? String(v);
}

/** A config or lab file's text; ECONFIG_INVALID naming the path when it cannot be read. */
export function readConfigText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new TunswitchError('ECONFIG_INVALID', `${path}: cannot read: ${(e as Error).message}`);
  }
}

/** The top-level mapping of a YAML config or lab file, with no field outside `topKeys`. */
export function parseConfigDoc(text: string, short: string, topKeys: readonly string[]): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new TunswitchError('ECONFIG_INVALID', `${short}: not valid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  if (!isObj(doc)) fail(short, '(top)', 'must be a mapping');
  for (const k of Object.keys(doc)) if (!topKeys.includes(k)) fail(short, k, `unknown field (known: ${topKeys.join(', ')})`);
  return doc;
}

export function loadRunConfig(path: string): RunConfig {
  return parseRunConfig(readConfigText(path), resolve(path));
}

export function parseRunConfig(text: string, file: string): RunConfig {
  const short = basename(file);
  const doc = parseConfigDoc(text, short, TOP_KEYS);

  const name = doc.name;
  if (typeof name !== 'string' || !/^[a-z0-9][a-z0-9-]{0,9}$/.test(name)) {
    fail(short, 'name', `${show(name)} must be 1-10 characters of a-z, 0-9 and "-" (it prefixes namespace and device names)`);
  }

  if (!isObj(doc.pool)) fail(short, 'pool', 'must be a mapping with ipv4 (and optionally ipv6)');
  for (const k of Object.keys(doc.pool)) if (k !== 'ipv4' && k !== 'ipv6') fail(short, `pool.${k}`, 'unknown field (known: ipv4, ipv6)');
  const p4 = typeof doc.pool.ipv4 === 'string' ? tryParsePrefix(doc.pool.ipv4, false) : null;
  if (!p4 || p4.family !== 4 || p4.bits > 30) fail(short, 'pool.ipv4', `${show(doc.pool.ipv4)} is not an IPv4 prefix of length 0-30`);
  let p6: Prefix | undefined;
  if (doc.pool.ipv6 !== undefined) {
    const p = typeof doc.pool.ipv6 === 'string' ? tryParsePrefix(doc.pool.ipv6, false) : null;
    if (!p || p.family !== 6 || p.bits > 126) fail(short, 'pool.ipv6', `${show(doc.pool.ipv6)} is not an IPv6 prefix of length 0-126`);
    p6 = p;
  }

  const workers = doc.workers ?? 1;
  if (!Number.isInteger(workers) || (workers as number) < 1 || (workers as number) > 16) {
    fail(short, 'workers', `${show(workers)} must be an integer from 1 to 16`);
  }
  const bool = (k: string, dflt: boolean): boolean => {
    const v = doc[k];
    if (v === undefined) return dflt;
    if (typeof v !== 'boolean') fail(short, k, `${show(v)} must be true or false`);
    return v;
  };
  const mtu = doc.mtu ?? 1500;
  if (!Number.isInteger(mtu) || (mtu as number) < 1280 || (mtu as number) > 9000) fail(short, 'mtu', `${show(mtu)} must be an integer from 1280 to 9000`);
  const enforcement = doc.enforcement ?? 'default';
  if (enforcement !== 'default' && enforcement !== 'always' && enforcement !== 'never') {
    fail(short, 'enforcement', `${show(enforcement)} must be one of default, always, never`);
  }

  const namespaces: Record<string, Record<string, string>> = { default: {} };
  if (doc.namespaces !== undefined && doc.namespaces !== null) {
    if (!isObj(doc.namespaces)) fail(short, 'namespaces', 'must be a mapping of namespace name to { labels }');
    for (const [ns, raw] of Object.entries(doc.namespaces)) {
      const at = `namespaces.${ns}`;
      if (!NS_NAME_RE.test(ns)) fail(short, at, 'namespace names are 1-63 characters of a-z, 0-9 and "-"');
      const n = raw ?? {};
      if (!isObj(n)) fail(short, at, 'must be a mapping');
      for (const k of Object.keys(n)) if (k !== 'labels') fail(short, `${at}.${k}`, 'unknown field (known: labels)');
      const labels: Record<string, string> = {};
      if (n.labels !== undefined && n.labels !== null) {
        if (!isObj(n.labels)) fail(short, `${at}.labels`, 'must be a mapping of label key to value');
        for (const [k, v] of Object.entries(n.labels)) {
          if (!LABEL_KEY_RE.test(k) || k.includes(':')) fail(short, `${at}.labels.${k}`, 'is not a valid label key');
          if (k === 'kubernetes.io/metadata.name') fail(short, `${at}.labels.${k}`, 'is set to the namespace name by tunswitch');
          if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') fail(short, `${at}.labels.${k}`, `${show(v)} must be a string`);
          labels[k] = String(v);
        }
      }
      namespaces[ns] = labels;
    }
  }

  // nodes may be empty or left out: with `run --docker` the endpoints are containers.
  const rawNodes = doc.nodes ?? {};
  if (!isObj(rawNodes)) fail(short, 'nodes', 'must be a mapping of node name to node');
  const nodes: NodeConfig[] = [];
  const seen = new Map<string, string>(); // address -> node
  for (const [nodeName, raw] of Object.entries(rawNodes)) {
    const at = `nodes.${nodeName}`;
    if (!NAME_RE.test(nodeName)) fail(short, at, 'node names are 1-16 characters of a-z, 0-9 and "-"');
    const n = raw ?? {};
    if (!isObj(n)) fail(short, at, 'must be a mapping');
    for (const k of Object.keys(n)) if (!NODE_KEYS.includes(k)) fail(short, `${at}.${k}`, `unknown field (known: ${NODE_KEYS.join(', ')})`);
    const labels: Record<string, string> = {};
    if (n.labels !== undefined) {
      if (!isObj(n.labels)) fail(short, `${at}.labels`, 'must be a mapping of label key to value');
      for (const [k, v] of Object.entries(n.labels)) {
        if (!LABEL_KEY_RE.test(k)) fail(short, `${at}.labels.${k}`, 'is not a valid label key');
        if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') fail(short, `${at}.labels.${k}`, `${show(v)} must be a string`);
        labels[k] = String(v);
      }
    }
    const node: NodeConfig = { name: nodeName, labels, defaultRoute: false, namespace: 'default', ports: [] };
    if (n.namespace !== undefined) {
      if (typeof n.namespace !== 'string' || namespaces[n.namespace] === undefined) {
        fail(short, `${at}.namespace`, `${show(n.namespace)} is not a namespace declared under namespaces (or "default")`);
      }
      node.namespace = n.namespace;
    }
    if (n.ports !== undefined) {
      if (!Array.isArray(n.ports)) fail(short, `${at}.ports`, 'must be a list of { name, port, protocol }');
      n.ports.forEach((p: unknown, i: number) => {
        const pa = `${at}.ports[${i}]`;
        if (!isObj(p)) fail(short, pa, 'must be { name, port, protocol }');
        for (const k of Object.keys(p)) if (!['name', 'port', 'protocol'].includes(k)) fail(short, `${pa}.${k}`, 'unknown field (known: name, port, protocol)');
        if (typeof p.name !== 'string' || !/^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$/.test(p.name) || !/[a-z]/.test(p.name)) fail(short, `${pa}.name`, `${show(p.name)} is not a port name (1-15 of a-z, 0-9 and "-", with a letter)`);
        if (!Number.isInteger(p.port) || (p.port as number) < 1 || (p.port as number) > 65535) fail(short, `${pa}.port`, `${show(p.port)} is not a port (1-65535)`);
        const proto = p.protocol ?? 'TCP';
        if (proto !== 'TCP' && proto !== 'UDP' && proto !== 'SCTP') fail(short, `${pa}.protocol`, `${show(p.protocol)} is not TCP, UDP or SCTP`);
        node.ports.push({ name: p.name, port: p.port as number, protocol: proto });
      });
    }
    if (n.ipv4 !== undefined) {
      const ip = n.ipv4;
      const a = typeof ip === 'string' ? tryParsePrefix(ip, true) : null;
      if (!a || a.family !== 4 || a.bits !== 32) fail(short, `${at}.ipv4`, `${show(n.ipv4)} is not an IPv4 address`);
      const why = addressProblem(a, p4);
      if (why) fail(short, `${at}.ipv4`, why);
      const other = seen.get(a.text);
      if (other) fail(short, `${at}.ipv4`, `${String(ip)} is used by node ${other}`);
      seen.set(a.text, nodeName);
      node.ipv4 = String(ip);
    }
    if (n.ipv6 !== undefined) {
      const a = typeof n.ipv6 === 'string' ? tryParsePrefix(n.ipv6, true) : null;
      if (!a || a.family !== 6 || a.bits !== 128) fail(short, `${at}.ipv6`, `${show(n.ipv6)} is not an IPv6 address`);
      if (!p6) fail(short, `${at}.ipv6`, 'needs pool.ipv6');
      const why = addressProblem(a, p6);
      if (why) fail(short, `${at}.ipv6`, why);
      const other = seen.get(a.text);
      if (other) fail(short, `${at}.ipv6`, `${String(n.ipv6)} is used by node ${other}`);
      seen.set(a.text, nodeName);
      node.ipv6 = String(n.ipv6);
    }
    if (n.defaultRoute !== undefined) {
      if (typeof n.defaultRoute !== 'boolean') fail(short, `${at}.defaultRoute`, `${show(n.defaultRoute)} must be true or false`);
      node.defaultRoute = n.defaultRoute;
    }
    if (n.queue !== undefined) node.queue = parseQueue(short, `${at}.queue`, n.queue);
    if (n.offload !== undefined) {
      if (typeof n.offload !== 'boolean') fail(short, `${at}.offload`, `${show(n.offload)} must be true or false`);
      node.offload = n.offload;
    }
    if (n.link !== undefined) {
      try {
        node.link = parseLinkSpec(n.link, (k) => (k === '' ? `${at}.link` : `${at}.link.${k}`), () => (Math.random() * 2 ** 32) >>> 0);
      } catch (e) {
        if (e instanceof LinkSpecError) fail(short, e.field, e.problem);
        throw e;
      }
    }
    nodes.push(node);
  }

  const policies: string[] = [];
  if (doc.policies !== undefined) {
    if (!Array.isArray(doc.policies)) fail(short, 'policies', 'must be a list of files or folders');
    doc.policies.forEach((p, i) => {
      if (typeof p !== 'string' || p === '') fail(short, `policies[${i}]`, `${show(p)} must be a path`);
      policies.push(p);
    });
  }

  const io = doc.io ?? 'auto';
  if (io !== 'auto' && io !== 'uring' && io !== 'readwrite') fail(short, 'io', `${show(io)} must be one of auto, uring, readwrite`);
  const queue: QueueConfig = { ...DEFAULT_QUEUE, ...(doc.queue !== undefined ? parseQueue(short, 'queue', doc.queue) : {}) };
  const txq = doc.txqueuelen ?? DEFAULT_TXQUEUELEN;
  if (!Number.isInteger(txq) || (txq as number) < 1 || (txq as number) > 100000) fail(short, 'txqueuelen', `${show(txq)} must be an integer from 1 to 100000`);
  const quotas = { conntrack: DEFAULT_ENDPOINT_SHARE, fragments: DEFAULT_ENDPOINT_SHARE };
  if (doc.quotas !== undefined) {
    if (!isObj(doc.quotas)) fail(short, 'quotas', 'must be a mapping with conntrack and/or fragments');
    for (const [k, v] of Object.entries(doc.quotas)) {
      if (!QUOTA_KEYS.includes(k)) fail(short, `quotas.${k}`, `unknown field (known: ${QUOTA_KEYS.join(', ')})`);
      if (!Number.isInteger(v) || (v as number) < 1 || (v as number) > 100) {
        fail(short, `quotas.${k}`, `${show(v)} must be an integer percent from 1 to 100 (100: no quota)`);
      }
      quotas[k as 'conntrack' | 'fragments'] = v as number;
    }
  }
  let kvstore: KvstoreConfig | undefined;
  if (doc.kvstore !== undefined) {
    const k = doc.kvstore;
    if (!isObj(k)) fail(short, 'kvstore', `must be a mapping (known: ${KVSTORE_KEYS.join(', ')})`);
    for (const key of Object.keys(k)) if (!KVSTORE_KEYS.includes(key)) fail(short, `kvstore.${key}`, `unknown field (known: ${KVSTORE_KEYS.join(', ')})`);
    kvstore = checkKvstore(
      { url: k.url, nodeName: k.nodeName ?? name, nodeIp: k.nodeIp, leaseTtl: k.leaseTtl ?? DEFAULT_LEASE_TTL },
      (field, msg) => fail(short, `kvstore.${field}`, msg),
    );
  }

  return {
    ...(kvstore ? { kvstore, underlay: { ip: kvstore.nodeIp } } : {}),
    name,
    io,
    queue,
    txqueuelen: txq as number,
    gro: bool('gro', true),
    underlayUdpGso: bool('underlayUdpGso', false),
    pool: p6 ? { ipv4: p4, ipv6: p6 } : { ipv4: p4 },
    workers: workers as number,
    offload: bool('offload', false),
    mtu: mtu as number,
    hostPort: bool('hostPort', true),
    enforcement,
    audit: bool('audit', false),
    cidrMatchPods: bool('cidrMatchPods', false),
    nodes,
    namespaces,
    policies,
    quotas,
    baseDir: dirname(file),
    file,
  };
}

/**
 * A queue mapping: `limitBytes` (integer bytes or "512KiB", "4MiB"), `target` and
 * `interval` (durations: "5ms", "0.1s", or a number of milliseconds).
 */
export function parseQueue(file: string, at: string, raw: unknown): Partial<QueueConfig> {
  if (!isObj(raw)) fail(file, at, 'must be a mapping with limitBytes, target, interval');
  const out: Partial<QueueConfig> = {};
  for (const k of Object.keys(raw)) if (!QUEUE_KEYS.includes(k)) fail(file, `${at}.${k}`, `unknown field (known: ${QUEUE_KEYS.join(', ')})`);
  if (raw.limitBytes !== undefined) {
    const b = parseBytes(raw.limitBytes);
    if (b === null || b < 2048 || b > 1 << 30) fail(file, `${at}.limitBytes`, `${show(raw.limitBytes)} must be a size from 2KiB to 1GiB (bytes, or e.g. "512KiB", "4MiB")`);
    out.limitBytes = b;
  }
  for (const [k, key] of [['target', 'targetMs'], ['interval', 'intervalMs']] as const) {
    if (raw[k] === undefined) continue;
    const ms = parseDurationMs(raw[k]);
    if (ms === null || ms <= 0 || ms > 10_000) fail(file, `${at}.${k}`, `${show(raw[k])} must be a duration from 1us to 10s (e.g. "5ms", "100ms")`);
    out[key] = ms;
  }
  if ((out.targetMs ?? DEFAULT_QUEUE.targetMs) >= (out.intervalMs ?? DEFAULT_QUEUE.intervalMs)) fail(file, `${at}.target`, 'must be shorter than interval');
  return out;
}

/** "5ms", "1.5s", "250us" or a number (ms) -> milliseconds; null if not a duration. */
export function parseDurationMs(v: unknown): number | null {
  if (typeof v === 'number') return Number.isFinite(v) ? v : null;
  if (typeof v !== 'string') return null;
  const m = /^([0-9]+(?:\.[0-9]+)?)(us|ms|s)$/.exec(v.trim());
  if (!m) return null;
  const n = Number(m[1]);
  return m[2] === 'us' ? n / 1000 : m[2] === 'ms' ? n : n * 1000;
}

/** 4096, "512KiB", "4MiB", "1GiB", "64KB" -> bytes; null if not a size. */
export function parseBytes(v: unknown): number | null {
  if (typeof v === 'number') return Number.isInteger(v) ? v : null;
  if (typeof v !== 'string') return null;
  const m = /^([0-9]+)\s*(B|KiB|MiB|GiB|KB|MB|GB|k|m)?$/.exec(v.trim());
  if (!m) return null;
  const mult: Record<string, number> = { B: 1, KiB: 1024, MiB: 1 << 20, GiB: 1 << 30, KB: 1000, MB: 1e6, GB: 1e9, k: 1024, m: 1 << 20 };
  return Number(m[1]) * (m[2] ? (mult[m[2]] as number) : 1);
}

/**
 * Checks cluster-mode settings, from the YAML or the command line; `bad(field, msg)` reports
 * (and throws) with the caller's naming of the field.
 */
export function checkKvstore(k: { url: unknown; nodeName: unknown; nodeIp: unknown; leaseTtl: unknown }, bad: (field: string, msg: string) => never): KvstoreConfig {
  const m = typeof k.url === 'string' ? /^etcd:\/\/([A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\]):([0-9]{1,5})$/.exec(k.url) : null;
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) bad('url', `${show(k.url)} is not etcd://HOST:PORT`);
  if (typeof k.nodeName !== 'string' || !/^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/.test(k.nodeName)) {
    bad('nodeName', `${show(k.nodeName)} must be 1-32 characters of a-z, 0-9 and "-"`);
  }
  const ip = typeof k.nodeIp === 'string' ? tryParsePrefix(k.nodeIp, true) : null;
  if (!ip || ip.family !== 4 || ip.bits !== 32) bad('nodeIp', `${show(k.nodeIp)} is not an IPv4 address (the underlay address of this node)`);
  if (!Number.isInteger(k.leaseTtl) || (k.leaseTtl as number) < 1 || (k.leaseTtl as number) > 3600) bad('leaseTtl', `${show(k.leaseTtl)} must be an integer from 1 to 3600 (seconds)`);
  return { url: k.url as string, nodeName: k.nodeName as string, nodeIp: k.nodeIp as string, leaseTtl: k.leaseTtl as number };
}
