/**
 * One ipcache entry per prefix, however many owners want it (as Cilium's ipcache does with its
 * metadata sources). Several parts of the agent put prefixes into the ipcache: endpoints (their
 * /32 and /128), the host port, remote prefixes from a kvstore, CIDR peers of policies, and
 * PUT /v1/ipcache. A prefix may be wanted by several of them at once, e.g. a policy with
 * `toCIDR: 10.42.0.7/32` while endpoint 10.42.0.7 exists.
 *
 * Precedence (highest first); the resolved owner's value is what the datapath sees:
 *   1. endpoint     a local endpoint's own address
 *   2. host         the host port's addresses (reserved:host)
 *   3. kvstore      remote endpoints and nodes learnt from a kvstore
 *   4. cidr-policy  CIDR identities allocated for policy peers
 *   5. api          prefixes added through the API
 * Each owner sets or clears only its own claim. Adding or removing a lower owner never changes
 * the entry while a higher owner holds it; removing the resolved owner falls back to the next
 * one, and the prefix leaves the table only when no owner is left.
 */
import { tryParsePrefix, type Prefix } from './cidr.js';
import { TunswitchError } from './errors.js';

export const IPCACHE_OWNERS = ['endpoint', 'host', 'kvstore', 'cidr-policy', 'api'] as const;
export type IpcacheOwner = (typeof IPCACHE_OWNERS)[number];

export interface IpcacheClaim {
  readonly identity: number;
  readonly tunnel: number;
  readonly flags: number;
}

/** The part of IpcacheWriter this layer writes through (it gets the prefix parsed once, here). */
export interface IpcacheSink {
  upsert(cidr: Prefix, v: { identity: number; tunnel?: number; flags?: number }): void;
  delete(cidr: Prefix): boolean;
  batch<T>(fn: () => T): T;
}

/** Rank of an owner: lower wins. */
function rank(o: IpcacheOwner): number {
  return IPCACHE_OWNERS.indexOf(o);
}

function sameClaim(a: IpcacheClaim | undefined, b: IpcacheClaim | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.identity === b.identity && a.tunnel === b.tunnel && a.flags === b.flags;
}

export class IpcacheOwners {
  /** canonical prefix -> owner -> claim. */
  private readonly claims = new Map<string, Map<IpcacheOwner, IpcacheClaim>>();

  constructor(private readonly sink: IpcacheSink) {}

  /** A prefix given as text ("10.1.2.3" -> 10.1.2.3/32) or already parsed; throws on bad text (a caller bug). */
  static prefixOf(cidr: string | Prefix): Prefix {
    if (typeof cidr !== 'string') return cidr;
    const p = tryParsePrefix(cidr, true);
    if (!p) throw new TunswitchError('EINTERNAL', `ipcache: ${JSON.stringify(cidr)} is not a prefix`);
    return p;
  }

  /** Canonical text of a prefix ("10.1.2.3" -> "10.1.2.3/32"); throws on bad input (a caller bug). */
  static canonical(cidr: string | Prefix): string {
    return IpcacheOwners.prefixOf(cidr).text;
  }

  /** Sets `owner`'s claim on `cidr`; the table changes only if the resolved value does. */
  set(cidr: string | Prefix, owner: IpcacheOwner, v: { identity: number; tunnel?: number; flags?: number }): void {
    const p = IpcacheOwners.prefixOf(cidr);
    const before = this.resolved(p.text);
    let m = this.claims.get(p.text);
    if (m === undefined) this.claims.set(p.text, (m = new Map()));
    m.set(owner, { identity: v.identity, tunnel: v.tunnel ?? 0, flags: v.flags ?? 0 });
    this.publish(p, before);
  }

  /** Clears `owner`'s claim on `cidr`; returns whether it had one. */
  clear(cidr: string | Prefix, owner: IpcacheOwner): boolean {
    const p = IpcacheOwners.prefixOf(cidr);
    const m = this.claims.get(p.text);
    if (m === undefined || !m.has(owner)) return false;
    const before = this.resolved(p.text);
    m.delete(owner);
    if (m.size === 0) this.claims.delete(p.text);
    this.publish(p, before);
    return true;
  }

  batch<T>(fn: () => T): T {
    return this.sink.batch(fn);
  }

  /** The winning owner and its claim for exactly this prefix, or undefined. */
  resolve(cidr: string): { owner: IpcacheOwner; claim: IpcacheClaim } | undefined {
    const m = this.claims.get(IpcacheOwners.canonical(cidr));
    if (m === undefined) return undefined;
    let best: IpcacheOwner | undefined;
    for (const o of m.keys()) if (best === undefined || rank(o) < rank(best)) best = o;
    return best === undefined ? undefined : { owner: best, claim: m.get(best) as IpcacheClaim };
  }

  /** Every owner holding this prefix, highest precedence first. */
  owners(cidr: string): IpcacheOwner[] {
    const m = this.claims.get(IpcacheOwners.canonical(cidr));
    return m === undefined ? [] : [...m.keys()].sort((a, b) => rank(a) - rank(b));
  }

  /** Prefixes held by `owner`. */
  heldBy(owner: IpcacheOwner): string[] {
    const out: string[] = [];
    for (const [k, m] of this.claims) if (m.has(owner)) out.push(k);
    return out;
  }

  get size(): number {
    return this.claims.size;
  }

  private resolved(key: string): IpcacheClaim | undefined {
    const r = this.resolve(key);
    return r?.claim;
  }

  private publish(p: Prefix, before: IpcacheClaim | undefined): void {
    const after = this.resolved(p.text);
    if (sameClaim(before, after)) return;
    if (after === undefined) this.sink.delete(p);
    else this.sink.upsert(p, after);
  }
}
