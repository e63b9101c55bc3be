/**
 * Security identities: label sets mapped to numbers, as Cilium does.
 *
 *   1..8        reserved identities, always present (numbers as in Cilium):
 *               1 host, 2 world, 3 unmanaged, 4 health, 5 init, 6 remote-node,
 *               7 kube-apiserver, 8 ingress. (Cilium's 9/10, world-ipv4/world-ipv6, are not
 *               used: tunswitch has one world identity and an ipcache miss means 2.)
 *   256..65535  workload identities, from the security-relevant labels of endpoints.
 *   2^24 + n    local-scope CIDR identities (bit 24 set) for CIDR peers in policy; labels
 *               `cidr:<prefix>` and `reserved:world`.
 *
 * Stability: the same labels get the same number for the life of the allocator, and across
 * restarts through snapshot()/restore(). Released numbers are remembered with their labels and
 * are handed to other labels only when no never-used number is left, so a label set that comes
 * back (an endpoint restarting) gets its old number.
 *
 * Reference counting: allocate() and allocateCIDR() add a reference, release() drops one; the
 * identity disappears (listeners are told) when the count reaches zero. Reserved identities are
 * never counted or released.
 */
import { TunswitchError } from './errors.js';
import { LabelSet, makeLabel, securityLabels, type Label } from './labels.js';
import { parsePrefix, type Prefix } from './cidr.js';
import { RESERVED_IDENTITY, MIN_WORKLOAD_IDENTITY, MAX_WORKLOAD_IDENTITY, LOCAL_IDENTITY_FLAG } from '../proto/identity.js';

export const MAX_LOCAL_IDENTITY = LOCAL_IDENTITY_FLAG + 0xffffff;

export type IdentityKind = 'reserved' | 'workload' | 'cidr';

export interface Identity {
  readonly id: number;
  readonly labels: LabelSet;
  readonly kind: IdentityKind;
  /** Canonical prefix text for CIDR identities, null otherwise. */
  readonly prefix: string | null;
  /** Parsed prefix for CIDR identities, null otherwise. */
  readonly cidr: Prefix | null;
  /** References held (0 for reserved identities, which are permanent). */
  readonly refs: number;
}

export interface IdentityChange {
  added: Identity[];
  removed: Identity[];
}
export type IdentityListener = (change: IdentityChange) => void;

/** Plain JSON-able state; the lead persists it and hands it back to restore(). */
export interface IdentitySnapshot {
  version: 1;
  /** Every known binding, live or remembered: [number, canonical labels]. */
  workload: [number, string][];
  /** [number, canonical prefix]. */
  cidr: [number, string][];
}

interface Rec {
  id: number;
  labels: LabelSet;
  kind: IdentityKind;
  prefix: string | null;
  cidr: Prefix | null;
  refs: number;
}

export function isCIDRIdentity(id: number): boolean {
  return id >= LOCAL_IDENTITY_FLAG && id <= MAX_LOCAL_IDENTITY;
}
export function isWorkloadIdentity(id: number): boolean {
  return id >= MIN_WORKLOAD_IDENTITY && id <= MAX_WORKLOAD_IDENTITY;
}
export function isReservedIdentity(id: number): boolean {
  return id >= 1 && id < MIN_WORKLOAD_IDENTITY;
}

function freeze(r: Rec): Identity {
  return { id: r.id, labels: r.labels, kind: r.kind, prefix: r.prefix, cidr: r.cidr, refs: r.refs };
}

/** Number space with "remember released bindings" preference (see the file comment). */
class NumberSpace {
  private next: number;
  constructor(
    private readonly lo: number,
    private readonly hi: number,
  ) {
    this.next = lo;
  }
  /** Picks a number that is neither live nor remembered; null when all are taken. */
  fresh(isTaken: (n: number) => boolean): number | null {
    const size = this.hi - this.lo + 1;
    for (let i = 0; i < size; i++) {
      const n = this.next;
      this.next = n === this.hi ? this.lo : n + 1;
      if (!isTaken(n)) return n;
    }
    return null;
  }
  reset(next: number): void {
    this.next = next > this.hi || next < this.lo ? this.lo : next;
  }
}

export class IdentityAllocator {
  private readonly byId = new Map<number, Rec>();
  private readonly byLabels = new Map<string, Rec>();
  /** Remembered bindings (live or released): canonical labels/prefix -> number, and back. */
  private readonly memKey = new Map<string, number>();
  private readonly memId = new Map<number, string>();
  private readonly workloadSpace = new NumberSpace(MIN_WORKLOAD_IDENTITY, MAX_WORKLOAD_IDENTITY);
  private readonly cidrSpace = new NumberSpace(LOCAL_IDENTITY_FLAG + 1, MAX_LOCAL_IDENTITY);
  private readonly listeners = new Set<IdentityListener>();

  constructor() {
    for (const [name, id] of Object.entries(RESERVED_IDENTITY)) {
      const labels = LabelSet.from([makeLabel('reserved', name)]);
      const rec: Rec = { id, labels, kind: 'reserved', prefix: null, cidr: null, refs: 0 };
      this.byId.set(id, rec);
      this.byLabels.set(labels.canonical, rec);
    }
  }

  /** Calls `fn` after every change with the identities added and removed. Returns an unsubscribe. */
  subscribe(fn: IdentityListener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private emit(change: IdentityChange): void {
    for (const fn of [...this.listeners]) fn(change);
  }

  private remember(key: string, id: number): void {
    const oldId = this.memKey.get(key);
    if (oldId !== undefined) this.memId.delete(oldId);
    const oldKey = this.memId.get(id);
    if (oldKey !== undefined) this.memKey.delete(oldKey);
    this.memKey.set(key, id);
    this.memId.set(id, key);
  }

  private pickNumber(space: NumberSpace, key: string, kind: string): number {
    const remembered = this.memKey.get(key);
    if (remembered !== undefined && !this.byId.has(remembered)) return remembered;
    let n = space.fresh((x) => this.byId.has(x) || this.memId.has(x));
    // Only remembered-but-released numbers left: reuse one of them.
    if (n === null) n = space.fresh((x) => this.byId.has(x));
    if (n === null) throw new TunswitchError('EIDENTITY_EXHAUSTED', `no free ${kind} identity number left`);
    return n;
  }

  /**
   * Takes a reference on the identity for these labels (security-relevant labels only, see
   * labels.ts). A label set that is exactly one reserved label (`reserved:host`) returns that
   * reserved identity without counting.
   */
  allocate(labels: LabelSet | Iterable<Label | string>): Identity {
    const set = securityLabels(labels instanceof LabelSet ? labels : LabelSet.from(labels));
    const existing = this.byLabels.get(set.canonical);
    if (existing !== undefined) {
      if (existing.kind !== 'reserved') existing.refs++;
      return freeze(existing);
    }
    if (set.hasSource('reserved') || set.hasSource('cidr')) {
      throw new TunswitchError('ELABEL_INVALID', `labels "${set.canonical}": reserved and cidr labels cannot be part of a workload identity`);
    }
    const id = this.pickNumber(this.workloadSpace, set.canonical, 'workload');
    const rec: Rec = { id, labels: set, kind: 'workload', prefix: null, cidr: null, refs: 1 };
    return this.insert(rec);
  }

  /**
   * Takes a reference on the identity for these labels with a number chosen elsewhere (the
   * kvstore's cluster-wide allocation, src/kvstore/identities.ts). The number must be a
   * workload number and must not be live with other labels.
   */
  allocateAs(labels: LabelSet | Iterable<Label | string>, id: number): Identity {
    const set = securityLabels(labels instanceof LabelSet ? labels : LabelSet.from(labels));
    if (!isWorkloadIdentity(id)) throw new TunswitchError('EINTERNAL', `identity ${id} for "${set.canonical}" is not a workload number (256-65535)`);
    const existing = this.byLabels.get(set.canonical);
    if (existing !== undefined) {
      if (existing.id !== id) throw new TunswitchError('EIDENTITY_CONFLICT', `labels "${set.canonical}" have identity ${existing.id} here, not ${id}`);
      existing.refs++;
      return freeze(existing);
    }
    const other = this.byId.get(id);
    if (other !== undefined) throw new TunswitchError('EIDENTITY_CONFLICT', `identity ${id} is "${other.labels.canonical}" here, not "${set.canonical}"`);
    const rec: Rec = { id, labels: set, kind: 'workload', prefix: null, cidr: null, refs: 1 };
    return this.insert(rec);
  }

  /** Takes a reference on the CIDR identity for a prefix, given as text (host bits are cleared first) or parsed. */
  allocateCIDR(cidr: string | Prefix): Identity {
    const prefix = typeof cidr === 'string' ? parsePrefix(cidr) : cidr;
    const labels = LabelSet.from([makeLabel('cidr', prefix.text), makeLabel('reserved', 'world')]);
    const existing = this.byLabels.get(labels.canonical);
    if (existing !== undefined) {
      existing.refs++;
      return freeze(existing);
    }
    const id = this.pickNumber(this.cidrSpace, labels.canonical, 'CIDR');
    const rec: Rec = { id, labels, kind: 'cidr', prefix: prefix.text, cidr: prefix, refs: 1 };
    return this.insert(rec);
  }

  /** Records a new identity under its number and labels, and tells the listeners. */
  private insert(rec: Rec): Identity {
    this.byId.set(rec.id, rec);
    this.byLabels.set(rec.labels.canonical, rec);
    this.remember(rec.labels.canonical, rec.id);
    this.emit({ added: [freeze(rec)], removed: [] });
    return freeze(rec);
  }

  /** Drops one reference. Returns true when the identity went away. Releasing an unknown or reserved identity is a bug. */
  release(id: number): boolean {
    const rec = this.byId.get(id);
    if (rec === undefined) throw new TunswitchError('EIDENTITY_NOT_FOUND', `release of identity ${id}, which does not exist`);
    if (rec.kind === 'reserved') throw new TunswitchError('EINTERNAL', `release of reserved identity ${id}`);
    if (rec.refs <= 0) throw new TunswitchError('EINTERNAL', `identity ${id} released more often than allocated`);
    rec.refs--;
    if (rec.refs > 0) return false;
    this.byId.delete(id);
    this.byLabels.delete(rec.labels.canonical);
    this.emit({ added: [], removed: [freeze(rec)] });
    return true;
  }

  get(id: number): Identity | undefined {
    const r = this.byId.get(id);
    return r === undefined ? undefined : freeze(r);
  }

  /** The live identity for exactly these (security-relevant) labels, if any. */
  lookupByLabels(labels: LabelSet | Iterable<Label | string>): Identity | undefined {
    const set = securityLabels(labels instanceof LabelSet ? labels : LabelSet.from(labels));
    const r = this.byLabels.get(set.canonical);
    return r === undefined ? undefined : freeze(r);
  }

  /** The live CIDR identity of a prefix, if any. */
  lookupCIDR(prefixText: string): Identity | undefined {
    const p = parsePrefix(prefixText);
    return this.lookupByLabels(LabelSet.from([makeLabel('cidr', p.text), makeLabel('reserved', 'world')]));
  }

  /** All live identities (reserved included), by number. */
  list(): Identity[] {
    return [...this.byId.values()].sort((a, b) => a.id - b.id).map(freeze);
  }

  snapshot(): IdentitySnapshot {
    const workload: [number, string][] = [];
    const cidr: [number, string][] = [];
    for (const [id, key] of this.memId) {
      if (isCIDRIdentity(id)) {
        const rec = this.byId.get(id);
        const prefix = rec?.prefix ?? LabelSet.parse(key).labels.find((l) => l.source === 'cidr')?.key;
        if (prefix !== undefined) cidr.push([id, prefix]);
      } else {
        workload.push([id, key]);
      }
    }
    workload.sort((a, b) => a[0] - b[0]);
    cidr.sort((a, b) => a[0] - b[0]);
    return { version: 1, workload, cidr };
  }

  /**
   * Loads remembered bindings from a snapshot, so that allocating the same labels again gives
   * the same numbers. Live identities are not created: after a restart, allocate() again for
   * every endpoint (and the compiler allocates its CIDR identities). Call before allocating.
   */
  restore(obj: unknown): void {
    const bad = (why: string): never => {
      throw new TunswitchError('ESTATE_INVALID', `identity snapshot: ${why}`);
    };
    if (typeof obj !== 'object' || obj === null) bad('not an object');
    const s = obj as Partial<IdentitySnapshot>;
    if (s.version !== 1) bad(`version ${JSON.stringify(s.version)} is not supported (want 1)`);
    if (!Array.isArray(s.workload) || !Array.isArray(s.cidr)) bad('workload and cidr must be arrays');
    for (const [i, item] of (s.workload as unknown[]).entries()) {
      if (!Array.isArray(item) || typeof item[0] !== 'number' || typeof item[1] !== 'string') bad(`workload[${i}] is not [number, labels]`);
      const [id, text] = item as [number, string];
      if (!isWorkloadIdentity(id) || !Number.isInteger(id)) bad(`workload[${i}]: ${id} is not a workload identity (256-65535)`);
      let set: LabelSet;
      try {
        set = LabelSet.parse(text);
      } catch (e) {
        return bad(`workload[${i}]: ${(e as Error).message}`);
      }
      if (this.memId.has(id)) bad(`workload[${i}]: identity ${id} appears twice`);
      this.remember(set.canonical, id);
    }
    for (const [i, item] of (s.cidr as unknown[]).entries()) {
      if (!Array.isArray(item) || typeof item[0] !== 'number' || typeof item[1] !== 'string') bad(`cidr[${i}] is not [number, prefix]`);
      const [id, text] = item as [number, string];
      if (!isCIDRIdentity(id) || !Number.isInteger(id)) bad(`cidr[${i}]: ${id} is not a CIDR identity`);
      let p: Prefix;
      try {
        p = parsePrefix(text);
      } catch (e) {
        return bad(`cidr[${i}]: ${(e as Error).message}`);
      }
      if (this.memId.has(id)) bad(`cidr[${i}]: identity ${id} appears twice`);
      const labels = LabelSet.from([makeLabel('cidr', p.text), makeLabel('reserved', 'world')]);
      this.remember(labels.canonical, id);
    }
    let maxW = MIN_WORKLOAD_IDENTITY - 1;
    let maxC = LOCAL_IDENTITY_FLAG;
    for (const id of this.memId.keys()) {
      if (isCIDRIdentity(id)) maxC = Math.max(maxC, id);
      else maxW = Math.max(maxW, id);
    }
    this.workloadSpace.reset(maxW + 1);
    this.cidrSpace.reset(maxC + 1);
  }
}
