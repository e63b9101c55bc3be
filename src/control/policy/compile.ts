/**
 * The policy compiler: policies + endpoints + identities -> policy table entries.
 *
 * Entry key: (endpoint, direction, remote identity, protocol, port, prefixLen). prefixLen
 * counts leading bits of the 24-bit L4 key (protocol 8 bits, then port 16 bits):
 *   0       any protocol, any port            (L3-only rules)
 *   8       this protocol, any port           (port 0)
 *   8+k     this protocol, top k bits of port (24 = exact port; ranges become aligned blocks)
 * ICMP and ICMPv6 rules use protocol 1 / 58 with the ICMP type in the port, prefixLen 24.
 * `protocol: ANY` becomes TCP, UDP and SCTP (not ICMP), as in Cilium. Identity 0 is "any
 * identity" (L4-only rules, entity `all`, the default-allow entry).
 *
 * Lookup contract (the datapath, and the naive lookup in the tests): probe the exact remote
 * identity and identity 0; a deny entry that matches wins; otherwise the matching allow with
 * the longest prefixLen, then the exact identity, decides (its cookie names the rule). No match
 * in an enforced direction is a drop. The compiler removes allow entries that a deny entry of
 * the same identity covers, so a per-identity longest-prefix probe gives the same verdict.
 *
 * Enforcement per endpoint and direction (Cilium's rules):
 *   never   -> not enforced, no entries.
 *   always  -> enforced, default deny (also for endpoints carrying `reserved:init`).
 *   default -> enforced when a rule selecting the endpoint has that direction (allow or deny
 *              part). Default deny unless every such rule sets enableDefaultDeny false for the
 *              direction; without default deny an allow-all entry (identity 0, prefixLen 0,
 *              cookie COOKIE_DEFAULT_ALLOW) is added, so only deny rules take effect.
 *
 * Peers: endpoint selectors, entities and CIDR peers select identities through the selector
 * cache (see selector.ts for `{}` and namespace semantics). Entities: `all` -> identity 0;
 * `world` -> world (2) and every CIDR identity; `cluster` -> every workload identity plus host,
 * remote-node, init, ingress, health, unmanaged, kube-apiserver; others -> their reserved
 * identity; `none` -> nothing.
 *
 * CIDR peers and `except`: the compiler allocates a CIDR identity for the prefix and for each
 * except prefix (ipcache entries, longest match wins in the datapath). A CIDR peer selects
 * every CIDR identity inside its prefix and outside all its excepts, so traffic whose address
 * falls in an except resolves to the except's identity, which the rule does not allow. /0
 * prefixes get no CIDR identity: they select world (an ipcache miss) plus the CIDR identities.
 *
 * Several rules may give one key: a deny wins, else the first rule in (policy key, rule index,
 * section, element index) order names it, so the result does not depend on history.
 *
 * Cookies: each rule element (policy, rule index, section, element index) has a stable cookie
 * >= 2 for as long as the policy exists; `rules()` names them. 0 = none, 1 = default allow.
 *
 * Incremental work: a policy change recomputes the identities its old and new rules select and
 * the identities whose rules use selectors whose selections changed (new CIDR identities); an
 * identity change recomputes the identities whose rules select it. Endpoints sharing an identity
 * share one computed policy. Each call returns the net diff since the previous call.
 */
import { TunswitchError } from '../errors.js';
import type { IdentityAllocator, Identity } from '../identity.js';
import { makeLabel, type LabelSet } from '../labels.js';
import { LabelSelector, SelectorCache, type PeerSelector } from './selector.js';
import { DEFAULT_POLICY_CONFIG, SECTIONS, sectionDirection, sectionIsDeny, type Direction, type Entity, type Peer, type Policy, type PolicyConfig, type PolicyKind, type PolicyRule, type NamedPort, type PortSpec, type Section } from './types.js';
import { IPPROTO } from '../../proto/ip.js';
import { DIR_EGRESS, DIR_INGRESS, directionNumber } from '../../proto/direction.js';
import { portRangeToPrefixes, type PolicyEntry } from '../../tables/policy.js';
import { parsePrefix, type Prefix } from '../cidr.js';

export const COOKIE_NONE = 0;
export const COOKIE_DEFAULT_ALLOW = 1;
const FIRST_RULE_COOKIE = 2;

/**
 * The compiler emits the table's own entry (src/tables/policy.ts): numeric direction
 * (DIR_INGRESS / DIR_EGRESS), port with the bits beyond prefixLen cleared. The publisher
 * writes it as it is; nothing is converted or parsed again.
 */
export type { PolicyEntry };

export interface RuleInfo {
  readonly cookie: number;
  readonly policyName: string;
  readonly namespace: string | null;
  readonly kind: PolicyKind | null;
  /** Index of the rule in the policy (spec / specs[i]); -1 for the default-allow entry. */
  readonly ruleIndex: number;
  readonly direction: Direction | null;
  readonly deny: boolean;
  readonly section: Section | null;
  readonly elementIndex: number;
  readonly file: string | null;
}

export interface EndpointEnforcement {
  readonly ep: number;
  readonly ingress: boolean;
  readonly egress: boolean;
  readonly audit: boolean;
}

export interface IpcacheEntry {
  /** Parsed once, from the policy text; the ipcache stores it as it is. */
  readonly prefix: Prefix;
  readonly identity: number;
}

export interface PolicyDiff {
  /** Anything to write (the policy revision itself is the publisher's: src/control/table-publisher.ts). */
  readonly changed: boolean;
  /** Apply `removed` first, then `added`; a changed entry appears in both. */
  readonly added: PolicyEntry[];
  readonly removed: PolicyEntry[];
  /** Endpoints whose enforcement flags are new or changed. */
  readonly enforcement: EndpointEnforcement[];
  readonly ipcache: { added: IpcacheEntry[]; removed: IpcacheEntry[] };
  readonly rules: { added: RuleInfo[]; removed: number[] };
}

export interface CompilerEndpoint {
  /** Endpoint index (the datapath's endpoint table slot). */
  readonly index: number;
  /** Its security identity; must exist in the allocator. */
  readonly identity: number;
  /** Named ports it declares (resolve `port: <name>` rules). */
  readonly ports?: readonly NamedPort[];
  /** Its addresses (ipBlock selectors that match pods select its identity by them). */
  readonly addrs?: readonly string[];
}

export const DEFAULT_ALLOW_RULE: RuleInfo = {
  cookie: COOKIE_DEFAULT_ALLOW,
  policyName: '<default allow: enableDefaultDeny is false>',
  namespace: null,
  kind: null,
  ruleIndex: -1,
  direction: null,
  deny: false,
  section: null,
  elementIndex: -1,
  file: null,
};

// ---------------------------------------------------------------------------------------
// L4 keys

/** [proto, port, prefixLen] */
export type L4Key = readonly [number, number, number];

export function l4KeysOf(spec: PortSpec): L4Key[] {
  if (spec.protocol === 'ICMP') return [[IPPROTO.ICMP, spec.port, 24]];
  if (spec.protocol === 'ICMPv6') return [[IPPROTO.ICMPV6, spec.port, 24]];
  const protos = spec.protocol === 'TCP' ? [IPPROTO.TCP] : spec.protocol === 'UDP' ? [IPPROTO.UDP] : spec.protocol === 'SCTP' ? [IPPROTO.SCTP] : [IPPROTO.TCP, IPPROTO.UDP, IPPROTO.SCTP];
  const out: L4Key[] = [];
  for (const proto of protos) {
    if (spec.port === 0) out.push([proto, 0, 8]);
    else for (const b of portRangeToPrefixes(spec.port, spec.endPort)) out.push([proto, b.port, 8 + b.prefixLen]);
  }
  return out;
}

/** True when the entry (proto, port, prefixLen) covers the flow (proto, port). */
export function l4Covers(eProto: number, ePort: number, prefixLen: number, proto: number, port: number): boolean {
  if (prefixLen === 0) return true;
  if (eProto !== proto) return false;
  const portBits = prefixLen - 8;
  if (portBits <= 0) return true;
  const mask = (0xffff << (16 - portBits)) & 0xffff;
  return (port & mask) === ePort;
}

// ---------------------------------------------------------------------------------------
// Internal state

/**
 * An entry of one identity's policy: the table entry without the endpoint (endpoints sharing
 * an identity share it), plus the rank that breaks ties between rules for one key (the lowest
 * rank names the entry, so the result does not depend on history).
 */
type EntryVal = Readonly<Omit<PolicyEntry, 'ep'>> & { readonly rank: string };

type Slice = Map<string, EntryVal>;

/** One identity's compiled policy; entries are grouped by remote identity ("slices"). */
interface IdentityPolicy {
  readonly ingress: boolean;
  readonly egress: boolean;
  /** remote identity -> entry key -> entry. Replaced slice by slice on selector changes. */
  readonly byRemote: Map<number, Slice>;
  /** The selector-based rule elements in force (for recomputing one slice quickly). */
  readonly selective: readonly CompiledElement[];
}

const EMPTY_POLICY: IdentityPolicy = { ingress: false, egress: false, byRemote: new Map(), selective: [] };
const EMPTY_SLICE: ReadonlyMap<string, EntryVal> = new Map();
const ANY_L4: readonly L4Key[] = [[0, 0, 0]];

function entryKey(dir: number, identity: number, proto: number, port: number, prefixLen: number): string {
  return `${dir}|${identity}|${proto}|${port}|${prefixLen}`;
}

interface CompiledElement {
  readonly cookie: number;
  /** Sort key: policy key, rule index, section, element index. */
  readonly rank: string;
  /** DIR_INGRESS or DIR_EGRESS. */
  readonly dir: number;
  readonly deny: boolean;
  /** Element selects no traffic at all. */
  readonly none: boolean;
  /** Any identity (identity 0). */
  readonly wildcard: boolean;
  readonly selectorKeys: readonly string[];
  /** null = any protocol and port. */
  readonly l4: readonly L4Key[] | null;
  /** Named ports, resolved per remote identity (egress) or per subject identity (ingress). */
  readonly named: readonly { readonly name: string; readonly protocol: PortSpec['protocol'] }[];
}

interface CompiledRule {
  readonly policyKey: string;
  readonly rule: PolicyRule;
  readonly elements: readonly CompiledElement[];
  readonly selectorKeys: ReadonlySet<string>;
}

interface CompiledPolicy {
  readonly policy: Policy;
  readonly rules: readonly CompiledRule[];
  /** CIDR prefixes (/0 excluded) this policy needs in the ipcache, each once. */
  readonly prefixes: readonly Prefix[];
  /** coordinate -> cookie */
  readonly cookies: ReadonlyMap<string, number>;
}

const RESERVED_SELECTOR = (name: string): PeerSelector => ({
  kind: 'labels',
  selector: new LabelSelector([{ source: 'reserved', key: name, op: 'In', values: [''] }]),
  clusterOnly: false,
});
const ALL_WORKLOADS: PeerSelector = { kind: 'labels', selector: LabelSelector.ALL, clusterOnly: true };
const CLUSTER_RESERVED = ['host', 'remote-node', 'init', 'ingress', 'health', 'unmanaged', 'kube-apiserver'];

/** Peer selectors an entity stands for; null = any identity (`all`). */
function entitySelectors(e: Entity): PeerSelector[] | null {
  switch (e) {
    case 'all':
      return null;
    case 'none':
      return [];
    case 'cluster':
      return [...CLUSTER_RESERVED.map(RESERVED_SELECTOR), ALL_WORKLOADS];
    default:
      return [RESERVED_SELECTOR(e)];
  }
}

interface Change<T> {
  before: T | null;
  after: T | null;
}

function sameEntry(a: EntryVal | null, b: EntryVal | null): boolean {
  if (a === null || b === null) return a === b;
  return a.deny === b.deny && a.cookie === b.cookie;
}

function sameEnf(a: EndpointEnforcement | null, b: EndpointEnforcement | null): boolean {
  if (a === null || b === null) return a === b;
  return a.ingress === b.ingress && a.egress === b.egress && a.audit === b.audit;
}

export class PolicyCompiler {
  private readonly cache = new SelectorCache();
  private config: PolicyConfig;
  private readonly unsubscribe: () => void;

  private readonly policies = new Map<string, CompiledPolicy>();
  private readonly rulesBySelector = new Map<string, Set<CompiledRule>>();
  private readonly ruleSubjects = new Map<CompiledRule, Set<number>>();

  private readonly endpoints = new Map<number, number>(); // ep index -> identity
  /** Named ports and addresses per endpoint index (only endpoints that have any). */
  private readonly epPorts = new Map<number, readonly NamedPort[]>();
  private readonly epAddrs = new Map<number, readonly Prefix[]>();
  /** Rule elements with named ports currently compiled (a ports change then recomputes all). */
  private namedElements = 0;
  private readonly epsByIdentity = new Map<number, Set<number>>();
  private readonly matching = new Map<number, Set<CompiledRule>>(); // endpoint identity -> rules selecting it
  private readonly idPolicy = new Map<number, IdentityPolicy>();
  /** Endpoint identities whose whole policy must be recomputed (rule set or config changed). */
  private readonly dirty = new Set<number>();
  /** Endpoint identity -> remote identities whose slice must be recomputed (selections changed). */
  private readonly sliceDirty = new Map<number, Set<number>>();

  /** Canonical prefix text -> the prefix, its references and its CIDR identity. */
  private readonly prefixRefs = new Map<string, { prefix: Prefix; count: number; identity: number }>();
  private readonly ruleTable = new Map<number, RuleInfo>();
  private nextCookie = FIRST_RULE_COOKIE;

  // Net changes since the last diff.
  private readonly pendingEntries = new Map<string, Change<EntryVal> & { ep: number }>();
  private readonly pendingEnf = new Map<number, Change<EndpointEnforcement>>();
  /** Enforcement flags as last reported per endpoint (so an audit flip shows up). */
  private readonly publishedEnf = new Map<number, EndpointEnforcement>();
  private readonly pendingIpcache = new Map<string, Change<number> & { prefix: Prefix }>();
  private readonly pendingRules = new Map<number, Change<RuleInfo>>();

  constructor(
    private readonly allocator: IdentityAllocator,
    config: PolicyConfig = DEFAULT_POLICY_CONFIG,
  ) {
    this.config = PolicyCompiler.checkConfig(config);
    for (const ident of allocator.list()) this.cache.addIdentity(ident);
    this.unsubscribe = allocator.subscribe((ch) => {
      for (const ident of ch.removed) this.markSelectors(this.cache.removeIdentity(ident.id), ident.id);
      for (const ident of ch.added) this.markSelectors(this.cache.addIdentity(ident), ident.id);
    });
    this.ruleTable.set(COOKIE_DEFAULT_ALLOW, DEFAULT_ALLOW_RULE);
    this.pendingRules.set(COOKIE_DEFAULT_ALLOW, { before: null, after: DEFAULT_ALLOW_RULE });
  }

  private static checkConfig(c: PolicyConfig): PolicyConfig {
    if (c.enforcement !== 'default' && c.enforcement !== 'always' && c.enforcement !== 'never') {
      throw new TunswitchError('ECONFIG_INVALID', `policy.enforcement: ${JSON.stringify(c.enforcement)} is not a mode (want default, always or never)`);
    }
    if (typeof c.audit !== 'boolean') throw new TunswitchError('ECONFIG_INVALID', `policy.audit: ${JSON.stringify(c.audit)} is not true or false`);
    return { enforcement: c.enforcement, audit: c.audit, cidrMatchPods: c.cidrMatchPods === true };
  }

  /** The selector cache: every peer selector in use and the identities it selects. */
  selectorList(): { selector: string; identities: number[]; users: number }[] {
    return this.cache.list();
  }

  /** Stops listening to the allocator and releases the CIDR identities this compiler holds. */
  dispose(): void {
    this.unsubscribe();
    for (const [, r] of this.prefixRefs) this.allocator.release(r.identity);
    this.prefixRefs.clear();
  }

  // -------------------------------------------------------------------------------------
  // Public mutations

  upsertPolicy(policy: Policy): PolicyDiff {
    return this.upsertPolicies([policy]);
  }

  /** Adds or replaces several policies: one diff for the whole set (an import compiles once). */
  upsertPolicies(policies: readonly Policy[]): PolicyDiff {
    for (const p of policies) this.replacePolicy(p);
    return this.finish();
  }

  /**
   * Adds or replaces several policies as one change that `apply` may refuse. `apply` gets the
   * diff and writes it, or throws before writing anything (a table without room); on a throw
   * the compiler goes back to the policies it had, with the same cookies, drops the diff of
   * the way back (none of it reached the tables) and rethrows. Changes pending from before
   * (identities allocated by others) must be taken with sync() first: they would be dropped.
   */
  upsertPoliciesWith<T>(policies: readonly Policy[], apply: (diff: PolicyDiff) => T): T {
    const prior = new Map<string, CompiledPolicy | undefined>();
    for (const p of policies) if (!prior.has(p.key)) prior.set(p.key, this.policies.get(p.key));
    const diff = this.upsertPolicies(policies);
    try {
      return apply(diff);
    } catch (e) {
      for (const [key, cp] of prior) {
        if (cp !== undefined) {
          this.replacePolicy(cp.policy, cp.cookies);
          continue;
        }
        const added = this.policies.get(key);
        if (added === undefined) continue;
        this.policies.delete(key);
        this.detachPolicy(added, null);
      }
      this.finish();
      throw e;
    }
  }

  /** `cookies`: coordinate -> cookie to use first (putting a policy back as it was). */
  private replacePolicy(policy: Policy, cookies?: ReadonlyMap<string, number>): void {
    const old = this.policies.get(policy.key);
    const compiled = this.compilePolicy(policy, old, cookies);
    // New CIDR identities first, so selections include them; old ones are released after.
    for (const p of compiled.prefixes) this.refPrefix(p);
    this.attachRules(compiled);
    this.policies.set(policy.key, compiled);
    if (old !== undefined) this.detachPolicy(old, compiled);
  }

  /** Deletes by repository key (`Policy.key`). Throws EPOLICY_NOT_FOUND when absent. */
  deletePolicy(key: string): PolicyDiff {
    return this.deletePolicies([key]);
  }

  /** Deletes several policies by key, one diff; EPOLICY_NOT_FOUND (before any change) when one is absent. */
  deletePolicies(keys: readonly string[]): PolicyDiff {
    for (const key of keys) if (!this.policies.has(key)) throw new TunswitchError('EPOLICY_NOT_FOUND', `policy ${key} is not loaded`);
    for (const key of keys) {
      const old = this.policies.get(key);
      if (old === undefined) continue;
      this.policies.delete(key);
      this.detachPolicy(old, null);
    }
    return this.finish();
  }

  upsertEndpoint(ep: CompilerEndpoint): PolicyDiff {
    if (!Number.isInteger(ep.index) || ep.index < 0) throw new TunswitchError('EBAD_REQUEST', `endpoint index ${ep.index} is not a non-negative integer`);
    const ident = this.cache.identity(ep.identity);
    if (ident === undefined) throw new TunswitchError('EIDENTITY_NOT_FOUND', `endpoint ${ep.index}: identity ${ep.identity} does not exist`);
    const prevId = this.endpoints.get(ep.index);
    this.setEndpointFacts(ep.index, prevId, ep.identity, ep.ports ?? [], (ep.addrs ?? []).map((a) => parsePrefix(a)));
    if (prevId === ep.identity) return this.finish();
    const before = prevId === undefined ? EMPTY_POLICY : (this.idPolicy.get(prevId) ?? EMPTY_POLICY);
    if (prevId !== undefined) this.detachEndpoint(ep.index, prevId);
    this.endpoints.set(ep.index, ep.identity);
    let set = this.epsByIdentity.get(ep.identity);
    if (set === undefined) {
      set = new Set();
      this.epsByIdentity.set(ep.identity, set);
      this.matching.set(ep.identity, this.subjectRules(ident.labels, ep.identity));
      this.idPolicy.set(ep.identity, this.computeIdentity(ep.identity, ident.labels));
      this.dirty.delete(ep.identity);
      this.sliceDirty.delete(ep.identity);
    }
    set.add(ep.index);
    const after = this.idPolicy.get(ep.identity) ?? EMPTY_POLICY;
    this.recordEndpoint(ep.index, prevId === undefined ? null : before, after);
    return this.finish();
  }

  /** Throws EENDPOINT_NOT_FOUND when absent. */
  deleteEndpoint(index: number): PolicyDiff {
    const id = this.endpoints.get(index);
    if (id === undefined) throw new TunswitchError('EENDPOINT_NOT_FOUND', `endpoint ${index} is not known to the policy compiler`);
    const before = this.idPolicy.get(id) ?? EMPTY_POLICY;
    this.detachEndpoint(index, id);
    this.endpoints.delete(index);
    this.setEndpointFacts(index, id, null, [], []);
    this.recordEndpoint(index, before, null);
    return this.finish();
  }

  /**
   * Records an endpoint's named ports and addresses. Named ports resolve per identity, so a
   * change recomputes every identity while a policy uses named ports. Addresses feed the
   * ipBlock selectors that match pods: the identities before and after get their address
   * lists recomputed in the selector cache.
   */
  private setEndpointFacts(index: number, prevId: number | undefined, id: number | null, ports: readonly NamedPort[], addrs: readonly Prefix[]): void {
    const hadPorts = this.epPorts.has(index);
    if (ports.length > 0) this.epPorts.set(index, ports);
    else this.epPorts.delete(index);
    if ((hadPorts || ports.length > 0) && this.namedElements > 0) for (const x of this.epsByIdentity.keys()) this.dirty.add(x);
    const hadAddrs = this.epAddrs.has(index);
    if (addrs.length > 0) this.epAddrs.set(index, addrs);
    else this.epAddrs.delete(index);
    if (!hadAddrs && addrs.length === 0) return;
    // Endpoint -> identity is updated by the caller; compute from the map as it will be.
    const idsToUpdate = new Set<number>();
    if (prevId !== undefined) idsToUpdate.add(prevId);
    if (id !== null) idsToUpdate.add(id);
    for (const x of idsToUpdate) {
      const list: Prefix[] = [];
      for (const [ep, a] of this.epAddrs) {
        const epId = ep === index ? id : this.endpoints.get(ep);
        if (epId === x) list.push(...a);
      }
      this.markSelectors(this.cache.setAddresses(x, list), x);
    }
  }

  /** The L4 keys of a named port on the endpoints of `identity` (0: on every endpoint). */
  private namedKeys(el: CompiledElement, identity: number): L4Key[] {
    const out: L4Key[] = [];
    for (const [ep, ports] of this.epPorts) {
      if (identity !== 0 && this.endpoints.get(ep) !== identity) continue;
      for (const n of el.named) {
        for (const p of ports) {
          if (p.name !== n.name || (n.protocol !== 'ANY' && n.protocol !== p.protocol)) continue;
          out.push([p.protocol === 'TCP' ? IPPROTO.TCP : p.protocol === 'UDP' ? IPPROTO.UDP : IPPROTO.SCTP, p.port, 24]);
        }
      }
    }
    return out;
  }

  /** An element's L4 keys toward `remote` for the policy of `subject` (named ports resolved). */
  private keysFor(el: CompiledElement, subject: number, remote: number): readonly L4Key[] {
    if (el.named.length === 0) return el.l4 ?? ANY_L4;
    return [...(el.l4 ?? []), ...this.namedKeys(el, el.dir === DIR_INGRESS ? subject : remote)];
  }

  /** Every named port in use with the numbers it resolves to per identity (for `policy selectors`). */
  namedPortList(): { name: string; protocol: string; identities: { identity: number; ports: number[] }[] }[] {
    const seen = new Map<string, { name: string; protocol: string }>();
    for (const cp of this.policies.values()) for (const cr of cp.rules) for (const el of cr.elements) for (const n of el.named) seen.set(`${n.name}/${n.protocol}`, n);
    return [...seen.values()].map((n) => {
      const byId = new Map<number, Set<number>>();
      for (const [ep, ports] of this.epPorts) {
        const id = this.endpoints.get(ep);
        if (id === undefined) continue;
        for (const p of ports) {
          if (p.name !== n.name || (n.protocol !== 'ANY' && n.protocol !== p.protocol)) continue;
          let s = byId.get(id);
          if (s === undefined) byId.set(id, (s = new Set()));
          s.add(p.port);
        }
      }
      return { name: n.name, protocol: n.protocol, identities: [...byId].sort((a, b) => a[0] - b[0]).map(([identity, s]) => ({ identity, ports: [...s].sort((a, b) => a - b) })) };
    });
  }

  setConfig(config: PolicyConfig): PolicyDiff {
    const before = this.config.cidrMatchPods === true;
    this.config = PolicyCompiler.checkConfig(config);
    // CIDR selectors change meaning: recompile every policy (its selectors are re-acquired).
    if (before !== (this.config.cidrMatchPods === true)) for (const cp of [...this.policies.values()]) this.replacePolicy(cp.policy);
    for (const id of this.epsByIdentity.keys()) this.dirty.add(id);
    return this.finish();
  }

  /** Applies identity changes seen since the last call (allocations made by others). */
  sync(): PolicyDiff {
    return this.finish();
  }

  // -------------------------------------------------------------------------------------
  // Queries

  /** Every current entry, sorted (ep, dir, identity, proto, port, prefixLen). */
  entries(): PolicyEntry[] {
    const out: PolicyEntry[] = [];
    for (const [ep, id] of this.endpoints) {
      const pol = this.idPolicy.get(id) ?? EMPTY_POLICY;
      for (const slice of pol.byRemote.values()) for (const e of slice.values()) out.push(toEntry(ep, e));
    }
    return out.sort(compareEntries);
  }

  enforcement(): EndpointEnforcement[] {
    const out: EndpointEnforcement[] = [];
    for (const [ep, id] of this.endpoints) out.push(this.enfOf(ep, this.idPolicy.get(id) ?? EMPTY_POLICY));
    return out.sort((a, b) => a.ep - b.ep);
  }

  ipcache(): IpcacheEntry[] {
    return [...this.prefixRefs].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, r]) => ({ prefix: r.prefix, identity: r.identity }));
  }

  rules(): RuleInfo[] {
    return [...this.ruleTable.values()].sort((a, b) => a.cookie - b.cookie);
  }

  rule(cookie: number): RuleInfo | undefined {
    return this.ruleTable.get(cookie);
  }

  policyList(): Policy[] {
    return [...this.policies.values()].map((c) => c.policy);
  }

  getConfig(): PolicyConfig {
    return this.config;
  }

  // -------------------------------------------------------------------------------------
  // Policy bookkeeping

  private compilePolicy(policy: Policy, old: CompiledPolicy | undefined, given?: ReadonlyMap<string, number>): CompiledPolicy {
    const cookies = new Map<string, number>();
    const prefixes = new Map<string, Prefix>();
    const rules: CompiledRule[] = [];
    for (const rule of policy.rules) {
      const elements: CompiledElement[] = [];
      const keys = new Set<string>();
      for (const section of SECTIONS) {
        rule[section].forEach((el, i) => {
          const coord = `${rule.index}|${section}|${i}`;
          const cookie = given?.get(coord) ?? old?.cookies.get(coord) ?? this.nextCookie++;
          cookies.set(coord, cookie);
          const info: RuleInfo = {
            cookie,
            policyName: policy.name,
            namespace: policy.namespace,
            kind: policy.kind,
            ruleIndex: rule.index,
            direction: sectionDirection(section),
            deny: sectionIsDeny(section),
            section,
            elementIndex: i,
            file: policy.file,
          };
          this.setRule(cookie, info);
          const none = el.peers === null && el.ports === null;
          let wildcard = el.peers === null;
          const selectorKeys: string[] = [];
          if (!none && el.peers !== null) {
            for (const peer of el.peers) {
              const sels = peerSelectors(peer);
              if (sels === null) {
                wildcard = true;
                continue;
              }
              for (const given of sels) {
                // Cilium's CIDR rules select pods too only with the cidrMatchPods setting.
                const s = given.kind === 'cidr' && given.pods !== true && this.config.cidrMatchPods === true ? { ...given, pods: true } : given;
                if (s.kind === 'cidr') {
                  if (s.cidr.bits > 0) prefixes.set(s.cidr.text, s.cidr);
                  for (const e of s.except) if (e.bits > 0) prefixes.set(e.text, e);
                }
                const k = this.cache.acquire(s);
                selectorKeys.push(k);
                keys.add(k);
              }
            }
          }
          const l4 = el.ports === null ? null : el.ports.filter((p) => p.name === undefined).flatMap(l4KeysOf);
          const named = el.ports === null ? [] : el.ports.filter((p) => p.name !== undefined).map((p) => ({ name: p.name as string, protocol: p.protocol }));
          const rank = `${policy.key}\u0000${String(rule.index).padStart(6, '0')}|${SECTIONS.indexOf(section)}|${String(i).padStart(6, '0')}`;
          elements.push({ cookie, rank, dir: directionNumber(sectionDirection(section)), deny: sectionIsDeny(section), none, wildcard, selectorKeys, l4, named });
        });
      }
      rules.push({ policyKey: policy.key, rule, elements, selectorKeys: keys });
    }
    return { policy, rules, prefixes: [...prefixes.values()], cookies };
  }

  private setRule(cookie: number, info: RuleInfo): void {
    const prev = this.ruleTable.get(cookie) ?? null;
    this.ruleTable.set(cookie, info);
    const ch = this.pendingRules.get(cookie);
    if (ch) ch.after = info;
    else this.pendingRules.set(cookie, { before: prev, after: info });
  }

  private dropRule(cookie: number): void {
    const prev = this.ruleTable.get(cookie) ?? null;
    this.ruleTable.delete(cookie);
    const ch = this.pendingRules.get(cookie);
    if (ch) ch.after = null;
    else this.pendingRules.set(cookie, { before: prev, after: null });
  }

  private attachRules(cp: CompiledPolicy): void {
    for (const cr of cp.rules) {
      for (const el of cr.elements) if (el.named.length > 0) this.namedElements++;
      for (const k of cr.selectorKeys) {
        let s = this.rulesBySelector.get(k);
        if (s === undefined) this.rulesBySelector.set(k, (s = new Set()));
        s.add(cr);
      }
      const subjects = new Set<number>();
      for (const id of this.epsByIdentity.keys()) {
        const ident = this.cache.identity(id);
        if (ident !== undefined && cr.rule.subject.matches(ident.labels)) {
          subjects.add(id);
          this.matching.get(id)?.add(cr);
          this.dirty.add(id);
        }
      }
      this.ruleSubjects.set(cr, subjects);
    }
  }

  /** Removes an old compiled policy; `replacement` keeps the cookies it reuses. */
  private detachPolicy(old: CompiledPolicy, replacement: CompiledPolicy | null): void {
    for (const cr of old.rules) {
      for (const el of cr.elements) if (el.named.length > 0) this.namedElements--;
      for (const id of this.ruleSubjects.get(cr) ?? []) {
        this.matching.get(id)?.delete(cr);
        this.dirty.add(id);
      }
      this.ruleSubjects.delete(cr);
      for (const k of cr.selectorKeys) {
        const s = this.rulesBySelector.get(k);
        s?.delete(cr);
        if (s !== undefined && s.size === 0) this.rulesBySelector.delete(k);
      }
      for (const el of cr.elements) for (const k of el.selectorKeys) this.cache.release(k);
    }
    for (const [coord, cookie] of old.cookies) {
      if (replacement?.cookies.get(coord) !== cookie) this.dropRule(cookie);
    }
    for (const p of old.prefixes) this.unrefPrefix(p);
  }

  private refPrefix(prefix: Prefix): void {
    const r = this.prefixRefs.get(prefix.text);
    if (r !== undefined) {
      r.count++;
      return;
    }
    const ident = this.allocator.allocateCIDR(prefix);
    this.prefixRefs.set(prefix.text, { prefix, count: 1, identity: ident.id });
    const ch = this.pendingIpcache.get(prefix.text);
    if (ch) ch.after = ident.id;
    else this.pendingIpcache.set(prefix.text, { prefix, before: null, after: ident.id });
  }

  private unrefPrefix(prefix: Prefix): void {
    const r = this.prefixRefs.get(prefix.text);
    if (r === undefined) throw new TunswitchError('EINTERNAL', `policy compiler: prefix ${prefix.text} released but not held`);
    if (--r.count > 0) return;
    this.prefixRefs.delete(prefix.text);
    this.allocator.release(r.identity);
    const ch = this.pendingIpcache.get(prefix.text);
    if (ch) ch.after = null;
    else this.pendingIpcache.set(prefix.text, { prefix, before: r.identity, after: null });
  }

  /** Selections of `keys` changed for remote identity `remote`: recompute that slice of their subjects. */
  private markSelectors(keys: readonly string[], remote: number): void {
    for (const k of keys) {
      for (const cr of this.rulesBySelector.get(k) ?? []) {
        for (const id of this.ruleSubjects.get(cr) ?? []) {
          let s = this.sliceDirty.get(id);
          if (s === undefined) this.sliceDirty.set(id, (s = new Set()));
          s.add(remote);
        }
      }
    }
  }

  // -------------------------------------------------------------------------------------
  // Endpoint bookkeeping

  private subjectRules(labels: LabelSet, id: number): Set<CompiledRule> {
    const out = new Set<CompiledRule>();
    for (const cp of this.policies.values()) {
      for (const cr of cp.rules) {
        if (cr.rule.subject.matches(labels)) {
          out.add(cr);
          this.ruleSubjects.get(cr)?.add(id);
        }
      }
    }
    return out;
  }

  private detachEndpoint(index: number, id: number): void {
    const set = this.epsByIdentity.get(id);
    set?.delete(index);
    if (set !== undefined && set.size === 0) {
      this.epsByIdentity.delete(id);
      for (const cr of this.matching.get(id) ?? []) this.ruleSubjects.get(cr)?.delete(id);
      this.matching.delete(id);
      this.idPolicy.delete(id);
      this.dirty.delete(id);
      this.sliceDirty.delete(id);
    }
  }

  // -------------------------------------------------------------------------------------
  // Computing one identity's policy

  /** Computes an identity's whole policy. */
  private computeIdentity(id: number, labels: LabelSet): IdentityPolicy {
    const mode = this.config.enforcement;
    if (mode === 'never') return { ingress: false, egress: false, byRemote: new Map(), selective: [] };
    const rules = [...(this.matching.get(id) ?? [])];
    const forced = mode === 'always' || labels.has('init', 'reserved');
    let ingress = forced;
    let egress = forced;
    let ddIngress = forced;
    let ddEgress = forced;
    for (const cr of rules) {
      const r = cr.rule;
      if (r.hasIngress) {
        ingress = true;
        if (r.defaultDenyIngress) ddIngress = true;
      }
      if (r.hasEgress) {
        egress = true;
        if (r.defaultDenyEgress) ddEgress = true;
      }
    }
    const byRemote = new Map<number, Slice>();
    const put = (dir: number, identity: number, k: L4Key, deny: boolean, cookie: number, rank: string): void => {
      let slice = byRemote.get(identity);
      if (slice === undefined) byRemote.set(identity, (slice = new Map()));
      const key = entryKey(dir, identity, k[0], k[1], k[2]);
      const prev = slice.get(key);
      // 1. deny beats allow for the same key; 2. otherwise the lowest-ranked rule names the entry.
      if (prev !== undefined && ((prev.deny && !deny) || (prev.deny === deny && prev.rank <= rank))) return;
      slice.set(key, { dir, identity, proto: k[0], port: k[1], prefixLen: k[2], deny, cookie, rank });
    };
    const selective: CompiledElement[] = [];
    for (const cr of rules) {
      for (const el of cr.elements) {
        if (el.none) continue;
        if ((el.dir === DIR_INGRESS && !ingress) || (el.dir === DIR_EGRESS && !egress)) continue;
        if (!el.wildcard) selective.push(el);
        if (el.wildcard) {
          for (const k of this.keysFor(el, id, 0)) put(el.dir, 0, k, el.deny, el.cookie, el.rank);
          continue;
        }
        const ids = new Set<number>();
        for (const sk of el.selectorKeys) for (const x of this.cache.selections(sk)) ids.add(x);
        for (const x of ids) for (const k of this.keysFor(el, id, x)) put(el.dir, x, k, el.deny, el.cookie, el.rank);
      }
    }
    if (ingress && !ddIngress) put(DIR_INGRESS, 0, ANY_L4[0] as L4Key, false, COOKIE_DEFAULT_ALLOW, '');
    if (egress && !ddEgress) put(DIR_EGRESS, 0, ANY_L4[0] as L4Key, false, COOKIE_DEFAULT_ALLOW, '');
    for (const slice of byRemote.values()) pruneCoveredAllows(slice);
    return { ingress, egress, byRemote, selective };
  }

  /** Recomputes the entries of `pol` for one remote identity (its selections changed). */
  private computeSlice(pol: IdentityPolicy, subject: number, remote: number): Slice | null {
    let slice: Slice | null = null;
    for (const el of pol.selective) {
      let hit = false;
      for (const sk of el.selectorKeys) {
        if (this.cache.selections(sk).has(remote)) {
          hit = true;
          break;
        }
      }
      if (!hit) continue;
      if (slice === null) slice = new Map();
      for (const k of this.keysFor(el, subject, remote)) {
        const key = entryKey(el.dir, remote, k[0], k[1], k[2]);
        const prev = slice.get(key);
        // Same precedence as computeIdentity: deny first, then the lowest rank.
        if (prev !== undefined && ((prev.deny && !el.deny) || (prev.deny === el.deny && prev.rank <= el.rank))) continue;
        slice.set(key, { dir: el.dir, identity: remote, proto: k[0], port: k[1], prefixLen: k[2], deny: el.deny, cookie: el.cookie, rank: el.rank });
      }
    }
    if (slice !== null) pruneCoveredAllows(slice);
    return slice;
  }

  // -------------------------------------------------------------------------------------
  // Diffs

  private enfOf(ep: number, pol: IdentityPolicy): EndpointEnforcement {
    return { ep, ingress: pol.ingress, egress: pol.egress, audit: this.config.audit };
  }

  private recordEndpoint(ep: number, before: IdentityPolicy | null, after: IdentityPolicy | null): void {
    const b = before ?? EMPTY_POLICY;
    const a = after ?? EMPTY_POLICY;
    for (const [remote, slice] of b.byRemote) this.recordSlice(ep, slice, a.byRemote.get(remote) ?? EMPTY_SLICE);
    for (const [remote, slice] of a.byRemote) if (!b.byRemote.has(remote)) this.recordSlice(ep, EMPTY_SLICE, slice);
    const eb = this.publishedEnf.get(ep) ?? null;
    const ea = after === null ? null : this.enfOf(ep, a);
    if (ea === null) this.publishedEnf.delete(ep);
    else this.publishedEnf.set(ep, ea);
    const ch = this.pendingEnf.get(ep);
    if (ch) ch.after = ea;
    else this.pendingEnf.set(ep, { before: eb, after: ea });
  }

  private recordSlice(ep: number, before: ReadonlyMap<string, EntryVal>, after: ReadonlyMap<string, EntryVal>): void {
    for (const [k, v] of before) {
      const nv = after.get(k) ?? null;
      if (!sameEntry(v, nv)) this.recordEntry(ep, k, v, nv);
    }
    for (const [k, v] of after) if (!before.has(k)) this.recordEntry(ep, k, null, v);
  }

  private recordEntry(ep: number, key: string, before: EntryVal | null, after: EntryVal | null): void {
    const k = `${ep}|${key}`;
    const ch = this.pendingEntries.get(k);
    if (ch) ch.after = after;
    else this.pendingEntries.set(k, { ep, before, after });
  }

  private finish(): PolicyDiff {
    // Recompute dirty identities and fan the change out to their endpoints.
    for (const id of this.dirty) {
      const eps = this.epsByIdentity.get(id);
      const ident = this.cache.identity(id);
      if (eps === undefined) continue;
      const before = this.idPolicy.get(id) ?? EMPTY_POLICY;
      // An identity released while endpoints still use it keeps its last labels' policy.
      const after = ident === undefined ? before : this.computeIdentity(id, ident.labels);
      this.idPolicy.set(id, after);
      for (const ep of eps) this.recordEndpoint(ep, before, after);
    }
    // Selection changes: recompute only the slices of the remote identities that changed.
    for (const [id, remotes] of this.sliceDirty) {
      if (this.dirty.has(id)) continue;
      const eps = this.epsByIdentity.get(id);
      const pol = this.idPolicy.get(id);
      if (eps === undefined || pol === undefined) continue;
      for (const remote of remotes) {
        const fresh = this.computeSlice(pol, id, remote);
        const old = pol.byRemote.get(remote) ?? EMPTY_SLICE;
        for (const ep of eps) this.recordSlice(ep, old, fresh ?? EMPTY_SLICE);
        if (fresh === null) pol.byRemote.delete(remote);
        else pol.byRemote.set(remote, fresh);
      }
    }
    this.dirty.clear();
    this.sliceDirty.clear();
    const added: PolicyEntry[] = [];
    const removed: PolicyEntry[] = [];
    for (const ch of this.pendingEntries.values()) {
      if (sameEntry(ch.before, ch.after)) continue;
      if (ch.before !== null) removed.push(toEntry(ch.ep, ch.before));
      if (ch.after !== null) added.push(toEntry(ch.ep, ch.after));
    }
    const enforcement: EndpointEnforcement[] = [];
    for (const ch of this.pendingEnf.values()) if (ch.after !== null && !sameEnf(ch.before, ch.after)) enforcement.push(ch.after);
    const ipAdded: IpcacheEntry[] = [];
    const ipRemoved: IpcacheEntry[] = [];
    for (const ch of this.pendingIpcache.values()) {
      if (ch.before === ch.after) continue;
      if (ch.before !== null) ipRemoved.push({ prefix: ch.prefix, identity: ch.before });
      if (ch.after !== null) ipAdded.push({ prefix: ch.prefix, identity: ch.after });
    }
    const rAdded: RuleInfo[] = [];
    const rRemoved: number[] = [];
    for (const [cookie, ch] of this.pendingRules) {
      if (ch.after === null && ch.before !== null) rRemoved.push(cookie);
      else if (ch.after !== null && !sameRule(ch.before, ch.after)) rAdded.push(ch.after);
    }
    this.pendingEntries.clear();
    this.pendingEnf.clear();
    this.pendingIpcache.clear();
    this.pendingRules.clear();
    const changed = added.length + removed.length + enforcement.length + ipAdded.length + ipRemoved.length + rAdded.length + rRemoved.length > 0;
    return {
      changed,
      added: added.sort(compareEntries),
      removed: removed.sort(compareEntries),
      enforcement: enforcement.sort((a, b) => a.ep - b.ep),
      ipcache: { added: ipAdded, removed: ipRemoved },
      rules: { added: rAdded.sort((a, b) => a.cookie - b.cookie), removed: rRemoved.sort((a, b) => a - b) },
    };
  }

  /** For tests: the labels the compiler knows an identity by. */
  identityOf(id: number): Identity | undefined {
    return this.cache.identity(id);
  }
}

function sameRule(a: RuleInfo | null, b: RuleInfo | null): boolean {
  if (a === null || b === null) return a === b;
  return JSON.stringify(a) === JSON.stringify(b);
}

function peerSelectors(peer: Peer): PeerSelector[] | null {
  return peer.kind === 'entity' ? entitySelectors(peer.entity) : [peer.selector];
}

function toEntry(ep: number, e: EntryVal): PolicyEntry {
  return { ep, dir: e.dir, identity: e.identity, proto: e.proto, port: e.port, prefixLen: e.prefixLen, deny: e.deny, cookie: e.cookie };
}

export function compareEntries(a: PolicyEntry, b: PolicyEntry): number {
  // Egress (1) sorts before ingress (0) within an endpoint.
  return a.ep - b.ep || b.dir - a.dir || a.identity - b.identity || a.proto - b.proto || a.port - b.port || a.prefixLen - b.prefixLen;
}

/** Drops allow entries that a deny entry of the same direction and identity covers. */
function pruneCoveredAllows(entries: Map<string, EntryVal>): void {
  const denies = new Map<string, EntryVal[]>();
  for (const e of entries.values()) {
    if (!e.deny) continue;
    const g = `${e.dir}|${e.identity}`;
    let l = denies.get(g);
    if (l === undefined) denies.set(g, (l = []));
    l.push(e);
  }
  if (denies.size === 0) return;
  for (const [k, e] of entries) {
    if (e.deny) continue;
    const l = denies.get(`${e.dir}|${e.identity}`);
    if (l === undefined) continue;
    if (l.some((d) => d.prefixLen <= e.prefixLen && l4Covers(d.proto, d.port, d.prefixLen, e.proto, e.port))) entries.delete(k);
  }
}

/** Builds a compiler, loads everything, and returns the full state (for tests and one-shot use). */
export function compileAll(
  policies: readonly Policy[],
  endpoints: readonly CompilerEndpoint[],
  allocator: IdentityAllocator,
  config: PolicyConfig = DEFAULT_POLICY_CONFIG,
): { entries: PolicyEntry[]; enforcement: EndpointEnforcement[]; ipcache: IpcacheEntry[]; rules: RuleInfo[]; compiler: PolicyCompiler } {
  const c = new PolicyCompiler(allocator, config);
  for (const p of policies) c.upsertPolicy(p);
  for (const e of endpoints) c.upsertEndpoint(e);
  return { entries: c.entries(), enforcement: c.enforcement(), ipcache: c.ipcache(), rules: c.rules(), compiler: c };
}

/** The `reserved:<name>` label, for callers building reserved label sets. */
export function reservedLabel(name: string) {
  return makeLabel('reserved', name);
}
