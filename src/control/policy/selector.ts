/**
 * Label selectors and the selector cache.
 *
 * Source semantics (as Cilium): a selector key may carry a source prefix. `k8s:app` matches
 * only labels whose source is k8s; `app` and `any:app` match the key from any source.
 * Reserved identities are selected with `reserved:` keys (`reserved:host`) or with entities.
 *
 * Peer selectors (what fromEndpoints/toEndpoints, CIDR peers and entities turn into):
 *   - labels: a label selector over identity labels. `clusterOnly` (set by the parser for
 *     every endpoint selector that names no `reserved:` key) limits it to workload identities,
 *     i.e. endpoints in the cluster. This is how `fromEndpoints: [{}]` selects all endpoints of
 *     the cluster but not world, host or CIDR identities. Cilium gets the same effect by adding
 *     a `k8s:io.kubernetes.pod.namespace` requirement to such selectors; tunswitch endpoints
 *     need not carry a namespace label, so the rule is stated on the identity kind instead.
 *   - cidr: a prefix with except prefixes. It selects every CIDR identity whose prefix lies in
 *     the prefix and in none of the excepts; a /0 prefix also selects world (2), as in Cilium.
 *
 * The cache maps each peer selector's canonical key to the set of identities it selects and
 * keeps it current as identities come and go; it reports which keys changed.
 */
import { LabelSet, type LabelSource } from '../labels.js';
import type { Identity } from '../identity.js';
import { prefixContains, type Prefix } from '../cidr.js';
import { InternalError } from '../../proto/errors.js';

export type SelectorOperator = 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
export const SELECTOR_OPERATORS: readonly SelectorOperator[] = ['In', 'NotIn', 'Exists', 'DoesNotExist'];

export interface Requirement {
  /** 'any' matches labels from every source. */
  readonly source: LabelSource;
  readonly key: string;
  readonly op: SelectorOperator;
  /** Sorted, unique. Empty for Exists/DoesNotExist. */
  readonly values: readonly string[];
}

function reqText(r: Requirement): string {
  const k = `${r.source}:${r.key}`;
  switch (r.op) {
    case 'Exists':
      return k;
    case 'DoesNotExist':
      return `!${k}`;
    default:
      return `${k} ${r.op === 'In' ? 'in' : 'notin'} (${r.values.join('|')})`;
  }
}

function labelValues(set: LabelSet, r: Requirement): string[] {
  return set.values(r.key, r.source);
}

/** A conjunction of requirements; the empty selector selects everything. */
export class LabelSelector {
  readonly requirements: readonly Requirement[];
  /** Stable text: equal selectors have equal canonical strings. */
  readonly canonical: string;

  constructor(reqs: readonly Requirement[]) {
    const norm = reqs.map((r) => ({ ...r, values: [...new Set(r.values)].sort() }));
    const texts = norm.map(reqText);
    const order = norm.map((_, i) => i).sort((a, b) => ((texts[a] as string) < (texts[b] as string) ? -1 : (texts[a] as string) > (texts[b] as string) ? 1 : 0));
    const out: Requirement[] = [];
    const seen = new Set<string>();
    for (const i of order) {
      const t = texts[i] as string;
      if (seen.has(t)) continue;
      seen.add(t);
      out.push(Object.freeze(norm[i] as Requirement));
    }
    this.requirements = Object.freeze(out);
    this.canonical = `{${out.map(reqText).join(', ')}}`;
  }

  static readonly ALL = new LabelSelector([]);

  get isEmpty(): boolean {
    return this.requirements.length === 0;
  }

  /** True when some requirement names this key (with this source, or any when omitted). */
  hasKey(key: string, source?: LabelSource): boolean {
    return this.requirements.some((r) => r.key === key && (source === undefined || r.source === source));
  }

  hasSource(source: LabelSource): boolean {
    return this.requirements.some((r) => r.source === source);
  }

  /** A new selector with one more requirement. */
  and(r: Requirement): LabelSelector {
    return new LabelSelector([...this.requirements, r]);
  }

  matches(set: LabelSet): boolean {
    for (const r of this.requirements) {
      const vals = labelValues(set, r);
      switch (r.op) {
        case 'Exists':
          if (vals.length === 0) return false;
          break;
        case 'DoesNotExist':
          if (vals.length !== 0) return false;
          break;
        case 'In':
          if (!vals.some((v) => r.values.includes(v))) return false;
          break;
        case 'NotIn':
          // Kubernetes semantics: a missing key satisfies NotIn.
          if (vals.some((v) => r.values.includes(v))) return false;
          break;
      }
    }
    return true;
  }

  toString(): string {
    return this.canonical;
  }
}

export type PeerSelector =
  | { readonly kind: 'labels'; readonly selector: LabelSelector; readonly clusterOnly: boolean }
  | {
      readonly kind: 'cidr';
      readonly cidr: Prefix;
      readonly except: readonly Prefix[];
      /**
       * Also selects workload identities that have an endpoint address inside the prefix
       * (and outside the excepts): Kubernetes ipBlock semantics. Off for Cilium's CIDR rules
       * unless the `cidrMatchPods` setting is on.
       */
      readonly pods?: boolean;
    };

export function peerSelectorKey(p: PeerSelector): string {
  if (p.kind === 'labels') return `${p.clusterOnly ? 'cluster' : 'any'}${p.selector.canonical}`;
  const ex = p.except.map((e) => e.text).sort();
  const head = p.pods === true ? 'cidr+pods' : 'cidr';
  return ex.length === 0 ? `${head}(${p.cidr.text})` : `${head}(${p.cidr.text} except ${ex.join(' ')})`;
}

/** True when the peer selector selects this identity (`addrs`: its endpoints' addresses). */
export function peerSelects(p: PeerSelector, ident: Identity, addrs?: readonly Prefix[]): boolean {
  if (p.kind === 'labels') {
    if (p.clusterOnly && ident.kind !== 'workload') return false;
    return p.selector.matches(ident.labels);
  }
  if (ident.kind === 'workload') {
    if (p.pods !== true || addrs === undefined) return false;
    return addrs.some((a) => prefixContains(p.cidr, a) && !p.except.some((e) => prefixContains(e, a)));
  }
  if (ident.kind === 'cidr' && ident.cidr !== null) {
    if (!prefixContains(p.cidr, ident.cidr)) return false;
    return !p.except.some((e) => prefixContains(e, ident.cidr as Prefix));
  }
  // 0.0.0.0/0 and ::/0 also mean "world" (an ipcache miss).
  return p.cidr.bits === 0 && ident.kind === 'reserved' && ident.labels.has('world', 'reserved');
}

interface CacheEntry {
  readonly peer: PeerSelector;
  readonly ids: Set<number>;
  refs: number;
}

export class SelectorCache {
  private readonly entries = new Map<string, CacheEntry>();
  private readonly identities = new Map<number, Identity>();
  /** Workload identity -> the addresses of its endpoints (for ipBlock selectors that match pods). */
  private readonly addrs = new Map<number, readonly Prefix[]>();

  /** Sets the endpoint addresses of an identity; returns the keys whose selection changed. */
  setAddresses(id: number, addrs: readonly Prefix[]): string[] {
    if (addrs.length === 0) this.addrs.delete(id);
    else this.addrs.set(id, addrs);
    const ident = this.identities.get(id);
    const changed: string[] = [];
    if (ident === undefined) return changed;
    for (const [key, e] of this.entries) {
      if (e.peer.kind !== 'cidr' || e.peer.pods !== true) continue;
      const sel = peerSelects(e.peer, ident, addrs);
      if (sel && !e.ids.has(id)) {
        e.ids.add(id);
        changed.push(key);
      } else if (!sel && e.ids.delete(id)) {
        changed.push(key);
      }
    }
    return changed;
  }

  /** Adds (or replaces) an identity; returns the keys whose selection changed. */
  addIdentity(ident: Identity): string[] {
    this.identities.set(ident.id, ident);
    const changed: string[] = [];
    for (const [key, e] of this.entries) {
      const sel = peerSelects(e.peer, ident, this.addrs.get(ident.id));
      if (sel && !e.ids.has(ident.id)) {
        e.ids.add(ident.id);
        changed.push(key);
      } else if (!sel && e.ids.delete(ident.id)) {
        changed.push(key);
      }
    }
    return changed;
  }

  /** Removes an identity; returns the keys whose selection changed. */
  removeIdentity(id: number): string[] {
    this.identities.delete(id);
    const changed: string[] = [];
    for (const [key, e] of this.entries) if (e.ids.delete(id)) changed.push(key);
    return changed;
  }

  hasIdentity(id: number): boolean {
    return this.identities.has(id);
  }

  identity(id: number): Identity | undefined {
    return this.identities.get(id);
  }

  allIdentities(): IterableIterator<Identity> {
    return this.identities.values();
  }

  /** Takes a reference on a peer selector, computing its selection if it is new. Returns its key. */
  acquire(peer: PeerSelector): string {
    const key = peerSelectorKey(peer);
    const e = this.entries.get(key);
    if (e !== undefined) {
      e.refs++;
      return key;
    }
    const ids = new Set<number>();
    for (const ident of this.identities.values()) if (peerSelects(peer, ident, this.addrs.get(ident.id))) ids.add(ident.id);
    this.entries.set(key, { peer, ids, refs: 1 });
    return key;
  }

  /** Drops a reference taken by acquire(). */
  release(key: string): void {
    const e = this.entries.get(key);
    if (e === undefined) throw new InternalError(`selector cache: release of unknown selector ${key}`);
    if (--e.refs === 0) this.entries.delete(key);
  }

  /** The identities a cached selector selects (empty when the key is unknown). */
  selections(key: string): ReadonlySet<number> {
    return this.entries.get(key)?.ids ?? EMPTY_SET;
  }

  /** Every selector in use (its canonical key) with the identities it selects, sorted. */
  list(): { selector: string; identities: number[]; users: number }[] {
    return [...this.entries.entries()]
      .map(([key, e]) => ({ selector: key, identities: [...e.ids].sort((a, b) => a - b), users: e.refs }))
      .sort((a, b) => (a.selector < b.selector ? -1 : a.selector > b.selector ? 1 : 0));
  }

  get size(): number {
    return this.entries.size;
  }
}

const EMPTY_SET: ReadonlySet<number> = new Set<number>();
