/**
 * Test support for the control-plane tests: fixture loading, the naive policy lookups the
 * compiled entries are checked with, address resolution through the compiled ipcache, and
 * seeded random labels and policies.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Rand } from '../helpers/rand.js';
import { parsePrefix, prefixContains } from '../../src/control/cidr.js';
import type { EndpointEnforcement, IpcacheEntry, PolicyEntry } from '../../src/control/policy/compile.js';
import type { Direction } from '../../src/control/policy/types.js';
import { directionNumber } from '../../src/proto/direction.js';

/** Fixtures live in the source tree; compiled tests run from <outDir>/test/control/. */
export const FIXTURE_DIR = fileURLToPath(new URL('../../../test/control/fixtures/', import.meta.url));

export function fixture(name: string): string {
  return readFileSync(FIXTURE_DIR + name, 'utf8');
}
export function fixtureNames(): string[] {
  return readdirSync(FIXTURE_DIR).filter((f) => f.endsWith('.yaml') || f.endsWith('.json')).sort();
}

/** Does the entry's (proto, port, prefixLen) cover the flow? Written apart from compile.ts on purpose. */
function covers(e: PolicyEntry, proto: number, port: number): boolean {
  const key = (e.proto << 16) | e.port;
  const flow = (proto << 16) | port;
  if (e.prefixLen === 0) return true;
  const shift = 24 - e.prefixLen;
  return key >>> shift === flow >>> shift;
}

export class EntryIndex {
  private readonly byKey = new Map<string, PolicyEntry[]>();
  private readonly enf = new Map<number, EndpointEnforcement>();
  constructor(entries: readonly PolicyEntry[], enforcement: readonly EndpointEnforcement[]) {
    for (const e of entries) {
      const k = `${e.ep}|${e.dir}|${e.identity}`;
      const l = this.byKey.get(k);
      if (l) l.push(e);
      else this.byKey.set(k, [e]);
    }
    for (const x of enforcement) this.enf.set(x.ep, x);
  }
  enforced(ep: number, dir: Direction): boolean {
    const x = this.enf.get(ep);
    return x !== undefined && x[dir];
  }
  private matches(ep: number, dir: Direction, identity: number, proto: number, port: number): PolicyEntry[] {
    return (this.byKey.get(`${ep}|${directionNumber(dir)}|${identity}`) ?? []).filter((e) => covers(e, proto, port));
  }
  /**
   * Naive lookup over all matching entries: probe the exact identity and identity 0; any deny
   * wins; else the allow with the longest prefix, then the exact identity; no match drops.
   */
  naive(ep: number, dir: Direction, identity: number, proto: number, port: number): { allowed: boolean; cookie: number } {
    if (!this.enforced(ep, dir)) return { allowed: true, cookie: 0 };
    const exact = this.matches(ep, dir, identity, proto, port);
    const any = identity === 0 ? [] : this.matches(ep, dir, 0, proto, port);
    const all = [...exact, ...any];
    const deny = all.find((e) => e.deny);
    if (deny) return { allowed: false, cookie: deny.cookie };
    let best: PolicyEntry | null = null;
    for (const e of all) {
      if (best === null || e.prefixLen > best.prefixLen || (e.prefixLen === best.prefixLen && e.identity !== 0 && best.identity === 0)) best = e;
    }
    return best === null ? { allowed: false, cookie: 0 } : { allowed: true, cookie: best.cookie };
  }
  /** The datapath's shape: one longest-prefix probe per identity (exact, then 0), then combine. */
  lpm(ep: number, dir: Direction, identity: number, proto: number, port: number): { allowed: boolean } {
    if (!this.enforced(ep, dir)) return { allowed: true };
    const probe = (id: number): PolicyEntry | null => {
      let best: PolicyEntry | null = null;
      for (const e of this.matches(ep, dir, id, proto, port)) if (best === null || e.prefixLen > best.prefixLen) best = e;
      return best;
    };
    const a = probe(identity);
    const b = probe(0);
    if ((a && a.deny) || (b && b.deny)) return { allowed: false };
    return { allowed: a !== null || b !== null };
  }
}

/** Longest-prefix match of an address over the compiled ipcache; a miss is world (2). */
export function resolveIp(ipcache: readonly IpcacheEntry[], ip: string): number {
  const addr = parsePrefix(ip);
  let best: { bits: number; id: number } | null = null;
  for (const e of ipcache) {
    const p = e.prefix;
    if (prefixContains(p, addr) && (best === null || p.bits > best.bits)) best = { bits: p.bits, id: e.identity };
  }
  return best === null ? 2 : best.id;
}

// ---------------------------------------------------------------------------------------
// Random labels and policies

export const LABEL_KEYS: Record<string, string[]> = {
  app: ['a', 'b', 'c'],
  role: ['frontend', 'backend', 'db'],
  team: ['x', 'y'],
};
export const NAMESPACES = ['ns1', 'ns2'];

export function randomLabels(r: Rand): string[] {
  const out: string[] = [];
  for (const [k, vals] of Object.entries(LABEL_KEYS)) {
    if (r.bool(0.75)) out.push(`${r.pick(['k8s', 'container'])}:${k}=${r.pick(vals)}`);
  }
  if (r.bool(0.5)) out.push(`k8s:io.kubernetes.pod.namespace=${r.pick(NAMESPACES)}`);
  return out;
}

function randomSelector(r: Rand): Record<string, unknown> {
  if (r.bool(0.2)) return {};
  const sel: Record<string, unknown> = {};
  const keys = Object.keys(LABEL_KEYS);
  if (r.bool(0.7)) {
    const k = r.pick(keys);
    const prefix = r.pick(['', '', 'any:', 'k8s:']);
    sel.matchLabels = { [prefix + k]: r.pick(LABEL_KEYS[k] as string[]) };
  }
  if (r.bool(0.4)) {
    const k = r.pick(keys);
    const op = r.pick(['In', 'NotIn', 'Exists', 'DoesNotExist']);
    const values = op === 'In' || op === 'NotIn' ? [r.pick(LABEL_KEYS[k] as string[]), r.pick(LABEL_KEYS[k] as string[])] : undefined;
    sel.matchExpressions = [{ key: k, operator: op, ...(values ? { values } : {}) }];
  }
  return sel;
}

export const CIDRS = ['10.0.0.0/8', '10.1.0.0/16', '10.1.2.0/24', '10.1.2.3/32', '192.168.0.0/16', '0.0.0.0/0', '2001:db8::/32', '2001:db8:1::/48', '::/0'];
export const IPS = ['10.1.2.3', '10.1.2.4', '10.1.3.1', '10.2.0.1', '192.168.1.1', '8.8.8.8', '2001:db8::1', '2001:db8:1::1', '2001:db9::1'];

function randomCidrSet(r: Rand): Record<string, unknown> {
  const cidr = r.pick(CIDRS);
  const outer = parsePrefix(cidr);
  const inside = CIDRS.filter((c) => c !== cidr && prefixContains(outer, parsePrefix(c)));
  const except = inside.length > 0 && r.bool(0.6) ? [r.pick(inside)] : [];
  return except.length ? { cidr, except } : { cidr };
}

function randomPorts(r: Rand): Record<string, unknown> {
  const n = r.range(1, 2);
  const ports: Record<string, unknown>[] = [];
  for (let i = 0; i < n; i++) {
    const p: Record<string, unknown> = { port: String(r.pick([0, 22, 23, 53, 80, 443, 8080])) };
    if (p.port !== '0' && r.bool(0.3)) p.endPort = Number(p.port) + r.pick([1, 5, 10, 300]);
    const proto = r.pick(['TCP', 'UDP', 'SCTP', 'ANY', undefined]);
    if (proto) p.protocol = proto;
    ports.push(p);
  }
  return { ports };
}

function randomElement(r: Rand, ingress: boolean, deny: boolean): Record<string, unknown> {
  const pre = ingress ? 'from' : 'to';
  const el: Record<string, unknown> = {};
  switch (r.int(5)) {
    case 0:
      break; // no L3
    case 1:
      el[`${pre}Endpoints`] = [randomSelector(r), ...(r.bool(0.3) ? [randomSelector(r)] : [])];
      break;
    case 2:
      el[`${pre}CIDR`] = [r.pick(CIDRS)];
      break;
    case 3:
      el[`${pre}CIDRSet`] = [randomCidrSet(r)];
      break;
    case 4:
      el[`${pre}Entities`] = [r.pick(['world', 'all', 'cluster', 'host', 'health', 'remote-node', 'none'])];
      break;
  }
  const l4 = r.int(3);
  if (l4 === 1) el.toPorts = [randomPorts(r)];
  else if (l4 === 2) {
    const fields = [r.bool() ? { type: r.pick([0, 8, 'EchoRequest', 3]) } : { family: 'IPv6', type: r.pick([128, 'EchoReply', 1]) }];
    el.icmps = [{ fields }];
  }
  void deny;
  return el;
}

/** A random CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy document as a plain object. */
export function randomPolicyDoc(r: Rand, name: string): Record<string, unknown> {
  const clusterwide = r.bool(0.2);
  const namespaced = !clusterwide && r.bool(0.3);
  const nrules = r.range(1, 2);
  const specs: Record<string, unknown>[] = [];
  for (let i = 0; i < nrules; i++) {
    const spec: Record<string, unknown> = { endpointSelector: randomSelector(r) };
    for (const [sec, ingress, deny] of [
      ['ingress', true, false],
      ['egress', false, false],
      ['ingressDeny', true, true],
      ['egressDeny', false, true],
    ] as const) {
      if (!r.bool(deny ? 0.25 : 0.6)) continue;
      const n = r.range(1, 2);
      const els: Record<string, unknown>[] = [];
      for (let j = 0; j < n; j++) els.push(randomElement(r, ingress, deny));
      spec[sec] = els;
    }
    if (r.bool(0.2)) spec.enableDefaultDeny = { ingress: r.bool(), egress: r.bool() };
    specs.push(spec);
  }
  const doc: Record<string, unknown> = {
    apiVersion: 'cilium.io/v2',
    kind: clusterwide ? 'CiliumClusterwideNetworkPolicy' : 'CiliumNetworkPolicy',
    metadata: namespaced ? { name, namespace: r.pick(NAMESPACES) } : { name },
  };
  if (specs.length === 1 && r.bool()) doc.spec = specs[0];
  else doc.specs = specs;
  return doc;
}

export const PROTOS = [6, 17, 132, 1, 58, 47];
export function randomPort(r: Rand, proto: number): number {
  if (proto === 1 || proto === 58) return r.pick([0, 1, 3, 8, 128, 129]);
  if (proto === 47) return 0;
  return r.pick([1, 22, 23, 24, 53, 79, 80, 81, 443, 444, 8080, 8085, 8090, 8091, 8380, 8381, 65535, r.range(1, 65535)]);
}
