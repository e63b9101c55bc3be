/**
 * The multi-host lab file: several "hosts" (network namespaces, each with its own switch in
 * cluster mode) on one underlay, sharing an etcd. Parsing only (pure apart from reading the
 * file); src/lab/multihost.ts brings it up.
 *
 *   name: mh                         # namespaces mh-ul (underlay), mh-<host>, mh-<node>
 *   underlay: 10.84.0.0/24           # hosts get .1, .2, ... in order; the bridge (and a lab
 *                                    # etcd) the last address (.254)
 *   underlayMtu: 1500                # MTU of the underlay links (default 1500)
 *   etcd: { port: 23831, peerPort: 23841 }   # a lab etcd on the bridge address (temp data dir)
 *   # etcd: { url: etcd://10.84.0.200:2379 } # or your own, reachable from the hosts
 *   leaseTtl: 5                      # seconds (kvstore.leaseTtl of every switch)
 *   workers: 1                       # every switch's default (a host may override)
 *   io: auto
 *   policies: [ ../three-tier/policies/ ]   # relative to this file; every host imports them
 *   hosts:
 *     host1:
 *       ip: 10.84.0.1                # optional underlay address (default: by order)
 *       pool: { ipv4: 10.83.1.0/24 }
 *       workers: 2                   # optional
 *       nodes:                       # as in a run config; defaultRoute defaults to true
 *         frontend: { labels: { app: frontend } }
 *
 * Each host becomes a run config (hostRunConfig) of name <name>, so its endpoints live in
 * namespaces <name>-<node> as in a single-host lab; node names must be unique across hosts.
 * Errors name the field: `lab.yaml: hosts.host2.pool.ipv4: ...`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { LAB_RUN_ROOT } from './root.js';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { TunswitchError } from '../control/errors.js';
import { parseConfigDoc, parseRunConfig, readConfigText, type RunConfig } from '../runtime/config.js';
import { prefixContains, tryParsePrefix } from '../control/cidr.js';

const TOP_KEYS = ['name', 'underlay', 'underlayMtu', 'etcd', 'leaseTtl', 'workers', 'io', 'mtu', 'policies', 'namespaces', 'hosts'];
const HOST_KEYS = ['ip', 'pool', 'workers', 'io', 'mtu', 'nodes'];
const ETCD_KEYS = ['port', 'peerPort', 'url'];
const NAME_RE = /^[a-z0-9][a-z0-9-]{0,9}$/;
const HOST_RE = /^[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?$/;
export const DEFAULT_ETCD_PORT = 2379;
export const DEFAULT_LAB_LEASE_TTL = 5;

export interface MultiHostHost {
  name: string;
  /** Underlay IPv4 address. */
  ip: string;
  /** Namespace of the host (its switch runs there). */
  netns: string;
  /** The switch's run config (YAML text) and its parsed form. */
  configText: string;
  config: RunConfig;
}

export interface MultiHostLabFile {
  name: string;
  file: string;
  /** Underlay prefix, e.g. 10.84.0.0/24, the bridge's address and the prefix length. */
  underlay: string;
  bridgeIp: string;
  prefixLen: number;
  underlayMtu: number;
  /** Namespace of the underlay bridge (and of the lab etcd). */
  underlayNetns: string;
  /** etcd the switches use; `managed` when the lab runs it. */
  etcdUrl: string;
  managedEtcd: { clientPort: number; peerPort: number } | null;
  leaseTtl: number;
  hosts: MultiHostHost[];
}

function fail(file: string, path: string, msg: string): never {
  throw new TunswitchError('ECONFIG_INVALID', `${file}: ${path}: ${msg}`);
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const show = (v: unknown): string => JSON.stringify(v) ?? String(v);

function ipv4Word(ip: string): number {
  const p = ip.split('.').map(Number);
  return (((p[0] as number) << 24) | ((p[1] as number) << 16) | ((p[2] as number) << 8) | (p[3] as number)) >>> 0;
}

function wordIpv4(w: number): string {
  return `${w >>> 24}.${(w >>> 16) & 255}.${(w >>> 8) & 255}.${w & 255}`;
}

/** Whether a parsed YAML document is a multi-host lab (it has `hosts:`). */
export function isMultiHostDoc(doc: unknown): boolean {
  return isObj(doc) && doc.hosts !== undefined;
}

/** Whether the file at `path` is a multi-host lab file; false for anything unreadable. */
export function isMultiHostLabFile(path: string): boolean {
  try {
    return isMultiHostDoc(parseYaml(readFileSync(path, 'utf8')));
  } catch {
    return false;
  }
}

/**
 * The multi-host lab a `lab down` argument names: a multi-host lab file, or the name of a lab
 * with a multi-host record; null otherwise (a single-host lab).
 */
export function multiHostTarget(target: string): string | null {
  if (target.includes('/') || /\.(ya?ml|json)$/.test(target)) return isMultiHostLabFile(target) ? loadMultiHostLab(target).name : null;
  return existsSync(join(LAB_RUN_ROOT, target, 'multihost.json')) ? target : null;
}

export function loadMultiHostLab(path: string): MultiHostLabFile {
  return parseMultiHostLab(readConfigText(path), resolve(path));
}

export function parseMultiHostLab(text: string, file: string): MultiHostLabFile {
  const short = basename(file);
  const doc = parseConfigDoc(text, short, TOP_KEYS);
  const name = doc.name;
  if (typeof name !== 'string' || !NAME_RE.test(name)) fail(short, 'name', `${show(name)} must be 1-10 characters of a-z, 0-9 and "-" (it prefixes namespace names)`);

  const ul = typeof doc.underlay === 'string' ? tryParsePrefix(doc.underlay, false) : null;
  if (!ul || ul.family !== 4 || ul.bits < 8 || ul.bits > 29) fail(short, 'underlay', `${show(doc.underlay)} must be an IPv4 prefix of length 8-29 (e.g. 10.84.0.0/24)`);
  const ulText = doc.underlay as string;
  const netWord = (ul.words[0] as number) >>> 0;
  const size = 2 ** (32 - ul.bits);
  const bridgeIp = wordIpv4(netWord + size - 2);
  const inUnderlay = (ip: string): boolean => {
    const w = ipv4Word(ip);
    return w > netWord && w < netWord + size - 1;
  };

  const underlayMtu = doc.underlayMtu ?? 1500;
  if (!Number.isInteger(underlayMtu) || (underlayMtu as number) < 1280 || (underlayMtu as number) > 9000) fail(short, 'underlayMtu', `${show(underlayMtu)} must be an integer from 1280 to 9000`);

  let etcdUrl: string;
  let managedEtcd: MultiHostLabFile['managedEtcd'] = null;
  const e = doc.etcd ?? {};
  if (!isObj(e)) fail(short, 'etcd', `must be a mapping (known: ${ETCD_KEYS.join(', ')})`);
  for (const k of Object.keys(e)) if (!ETCD_KEYS.includes(k)) fail(short, `etcd.${k}`, `unknown field (known: ${ETCD_KEYS.join(', ')})`);
  if (e.url !== undefined) {
    if (e.port !== undefined || e.peerPort !== undefined) fail(short, 'etcd.url', 'give either url (your etcd) or port/peerPort (a lab etcd), not both');
    if (typeof e.url !== 'string' || !/^etcd:\/\/[^/:]+:\d{1,5}$/.test(e.url)) fail(short, 'etcd.url', `${show(e.url)} must be etcd://HOST:PORT`);
    etcdUrl = e.url;
  } else {
    const port = e.port ?? DEFAULT_ETCD_PORT;
    const peerPort = e.peerPort ?? (port as number) + 1;
    for (const [k, v] of [['port', port], ['peerPort', peerPort]] as const) {
      if (!Number.isInteger(v) || (v as number) < 1 || (v as number) > 65535) fail(short, `etcd.${k}`, `${show(v)} is not a port (1-65535)`);
    }
    if (port === peerPort) fail(short, 'etcd.peerPort', `${show(peerPort)} is the client port too`);
    managedEtcd = { clientPort: port as number, peerPort: peerPort as number };
    etcdUrl = `etcd://${bridgeIp}:${port}`;
  }

  const leaseTtl = doc.leaseTtl ?? DEFAULT_LAB_LEASE_TTL;
  if (!Number.isInteger(leaseTtl) || (leaseTtl as number) < 1 || (leaseTtl as number) > 3600) fail(short, 'leaseTtl', `${show(leaseTtl)} must be an integer number of seconds from 1 to 3600`);

  let policies: string[] = [];
  if (doc.policies !== undefined) {
    if (!Array.isArray(doc.policies) || doc.policies.some((p) => typeof p !== 'string')) fail(short, 'policies', 'must be a list of files or folders');
    const base = dirname(file);
    policies = (doc.policies as string[]).map((p) => (isAbsolute(p) ? p : resolve(base, p)));
  }

  if (!isObj(doc.hosts) || Object.keys(doc.hosts).length === 0) fail(short, 'hosts', 'must be a mapping of host names to { pool, nodes }');
  const hostNames = Object.keys(doc.hosts);
  if (hostNames.length > size - 3) fail(short, 'hosts', `${hostNames.length} hosts do not fit the underlay ${ulText}`);
  const hosts: MultiHostHost[] = [];
  const seenNodes = new Map<string, string>();
  const seenIps = new Map<string, string>();
  const reserved = new Set(['ul']);
  for (const [i, hn] of hostNames.entries()) {
    const at = `hosts.${hn}`;
    if (!HOST_RE.test(hn)) fail(short, at, 'host names are 1-16 characters of a-z, 0-9 and "-"');
    if (reserved.has(hn)) fail(short, at, `"${hn}" is reserved (the underlay namespace is ${name}-ul)`);
    const h = doc.hosts[hn];
    if (!isObj(h)) fail(short, at, 'must be a mapping with pool and nodes');
    for (const k of Object.keys(h)) if (!HOST_KEYS.includes(k)) fail(short, `${at}.${k}`, `unknown field (known: ${HOST_KEYS.join(', ')})`);
    let ip = wordIpv4(netWord + 1 + i);
    if (h.ip !== undefined) {
      const p = typeof h.ip === 'string' ? tryParsePrefix(h.ip, true) : null;
      if (!p || p.family !== 4 || p.bits !== 32) fail(short, `${at}.ip`, `${show(h.ip)} is not an IPv4 address`);
      ip = h.ip as string;
    }
    if (!inUnderlay(ip) || ip === bridgeIp) fail(short, `${at}.ip`, `${ip} is not a host address of the underlay ${ulText} other than the bridge's ${bridgeIp}`);
    if (seenIps.has(ip)) fail(short, `${at}.ip`, `${ip} is also host ${seenIps.get(ip)}'s underlay address`);
    seenIps.set(ip, hn);
    if (!isObj(h.nodes) || Object.keys(h.nodes).length === 0) fail(short, `${at}.nodes`, 'must be a mapping of node names (at least one)');
    const nodes: Record<string, unknown> = {};
    for (const [nn, nv] of Object.entries(h.nodes)) {
      if (seenNodes.has(nn)) fail(short, `${at}.nodes.${nn}`, `node "${nn}" is also on host ${seenNodes.get(nn)} (node names are unique in a lab)`);
      if (nn === 'ul' || hostNames.includes(nn)) fail(short, `${at}.nodes.${nn}`, `"${nn}" is also a host name or "ul" (namespaces are ${name}-<host> and ${name}-<node>)`);
      seenNodes.set(nn, hn);
      nodes[nn] = isObj(nv) && nv.defaultRoute === undefined ? { ...nv, defaultRoute: true } : nv;
    }
    const runDoc: Record<string, unknown> = {
      name,
      pool: h.pool,
      workers: h.workers ?? doc.workers ?? 1,
      hostPort: false,
      ...(h.io ?? doc.io ? { io: h.io ?? doc.io } : {}),
      ...(h.mtu ?? doc.mtu ? { mtu: h.mtu ?? doc.mtu } : {}),
      ...(doc.namespaces !== undefined ? { namespaces: doc.namespaces } : {}),
      nodes,
      policies,
      kvstore: { url: etcdUrl, nodeName: hn, nodeIp: ip, leaseTtl },
    };
    const configText = `# generated by "tunswitch lab up ${short}": host ${hn} of lab ${name}\n${stringifyYaml(runDoc)}`;
    let config: RunConfig;
    try {
      config = parseRunConfig(configText, resolve(dirname(file), `${name}-${hn}.yaml`));
    } catch (err) {
      // "<name>-<host>.yaml: nodes.web.ipv4: ..." -> "lab.yaml: hosts.<host>.nodes.web.ipv4: ..."
      const msg = (err as Error).message.replace(`${name}-${hn}.yaml: `, '');
      fail(short, at, msg.replace(/^kvstore\.nodeIp/, 'ip'));
    }
    hosts.push({ name: hn, ip, netns: `${name}-${hn}`, configText, config });
  }
  // Pools of different hosts must not overlap: the ipcache would hold two owners for one address.
  for (let i = 0; i < hosts.length; i++) {
    for (let j = 0; j < i; j++) {
      const a = hosts[i] as MultiHostHost;
      const b = hosts[j] as MultiHostHost;
      if (prefixesOverlap(a.config.pool.ipv4.text, b.config.pool.ipv4.text)) fail(short, `hosts.${a.name}.pool.ipv4`, `${a.config.pool.ipv4.text} overlaps host ${b.name}'s ${b.config.pool.ipv4.text}`);
      const a6 = a.config.pool.ipv6?.text;
      const b6 = b.config.pool.ipv6?.text;
      if (a6 !== undefined && b6 !== undefined && prefixesOverlap(a6, b6)) fail(short, `hosts.${a.name}.pool.ipv6`, `${a6} overlaps host ${b.name}'s ${b6}`);
    }
    if (prefixesOverlap((hosts[i] as MultiHostHost).config.pool.ipv4.text, ulText)) fail(short, `hosts.${(hosts[i] as MultiHostHost).name}.pool.ipv4`, `overlaps the underlay ${ulText}`);
  }
  return {
    name,
    file,
    underlay: ulText,
    bridgeIp,
    prefixLen: ul.bits,
    underlayMtu: underlayMtu as number,
    underlayNetns: `${name}-ul`,
    etcdUrl,
    managedEtcd,
    leaseTtl: leaseTtl as number,
    hosts,
  };
}

function prefixesOverlap(a: string, b: string): boolean {
  const pa = tryParsePrefix(a, false);
  const pb = tryParsePrefix(b, false);
  if (!pa || !pb || pa.family !== pb.family) return false;
  return prefixContains(pa, pb) || prefixContains(pb, pa);
}
