/**
 * Cluster-wide security identities in etcd, with Cilium's key layout (see keys.ts).
 *
 * Allocation of label set L by node N (a loop of transactions):
 *   1. when the watch knows L, read its index (L has number X) and go to 2; else go to 3.
 *   2. index present (L has number X): transaction
 *        if id/X holds L  then  put value/L/N = X (N's lease), touch the index
 *      success: done. failure: id/X is gone (garbage-collected meanwhile): remove the stale
 *      index (compare its mod revision) and go to 1.
 *   3. pick a candidate X not known to be taken; transaction
 *        if id/X does not exist and the index of L does not exist
 *        then put id/X = L, put index(L) = X, put value/L/N = X (N's lease)
 *        else read the index of L
 *      success: done (a new label set costs one transaction). failure: the index is there
 *      (someone numbered L first): step 2 with it; else X was taken: step 3 with another X.
 *   Two nodes creating L at once both reach 3; etcd serialises the transactions, the second
 *   fails on "index of L does not exist" and takes step 2 with the winner's X.
 *   Different label sets never share X: "id/X does not exist" fails for the second.
 *
 * References: one key per (label set, node) under the node's lease; a node with several
 * endpoints of L holds one key and counts locally. A dead node's references vanish with its
 * lease.
 *
 * Garbage collection (every node runs it; the transactions make concurrent runs safe):
 *   1. list the index (with mod revisions), then list every reference key.
 *   2. a number whose label set has no reference is remembered with the time first seen so.
 *   3. after the grace period, transaction: if the index of L still has the mod revision read
 *      in 1 and id/X still holds L, delete both. A reference made after the read in 1 touched
 *      the index (allocation step 2 or 3), so the transaction fails; one made before it is
 *      seen by the reference list, which is read after the index.
 *
 * Watch: id/ is followed (list + watch) into `known`; `onChange` gets every number that
 * appears or disappears, from any node, so the local allocator and compiler see them all.
 */
import type { IKeyValue } from 'etcd3';
import { KvSession } from './session.js';
import { PrefixWatch, type KvEvent } from './watch.js';
import {
  IDENTITY_ID_PREFIX,
  IDENTITY_LABELS_PREFIX,
  IDENTITY_VALUE_PREFIX,
  identityIdKey,
  identityLabelsKey,
  identityRefKey,
  parseIdentityIdKey,
} from './keys.js';
import { InternalError, TunswitchError } from '../proto/errors.js';

export interface KvIdentityOptions {
  min: number;
  max: number;
  /** Unreferenced numbers are deleted after this long (ms). */
  gcGraceMs: number;
  /** GC pass period (ms); 0: no timer (tests call gc()). */
  gcIntervalMs: number;
  /** Called after each watch batch with the numbers that appeared and disappeared. */
  onChange?: (added: [number, string][], removed: [number, string][]) => void;
}

/** Transactions attempted per allocation before giving up (each failure is real progress by another node). */
const MAX_ALLOCATE_PASSES = 64;

export class KvIdentities {
  /** Every number in etcd: id -> canonical labels (from the watch). */
  readonly known = new Map<number, string>();
  /** The same, labels -> id. */
  private readonly byLabels = new Map<string, number>();
  /** This node's references: labels -> { id, local count }. */
  private readonly refs = new Map<string, { id: number; count: number }>();
  private readonly unreferencedSince = new Map<number, number>();
  private readonly watch: PrefixWatch;
  private gcTimer: ReturnType<typeof setInterval> | null = null;
  /** Allocation latencies (ms), last 4096, for status and the report. */
  readonly latencies: number[] = [];
  gcDeleted = 0;
  private cursor: number;

  constructor(
    private readonly s: KvSession,
    private readonly opts: KvIdentityOptions,
  ) {
    this.cursor = opts.min + Math.floor(Math.random() * (opts.max - opts.min + 1));
    this.watch = new PrefixWatch(s, IDENTITY_ID_PREFIX, 'identities', (evs, initial) => this.onBatch(evs, initial));
  }

  async start(): Promise<void> {
    await this.watch.start();
    if (this.opts.gcIntervalMs > 0) {
      this.gcTimer = setInterval(() => void this.gc(Date.now()).catch(() => undefined), this.opts.gcIntervalMs);
      this.gcTimer.unref();
    }
  }

  async stop(): Promise<void> {
    if (this.gcTimer) clearInterval(this.gcTimer);
    this.gcTimer = null;
    await this.watch.stop();
  }

  private onBatch(evs: KvEvent[], initial: boolean): void {
    const added: [number, string][] = [];
    const removed: [number, string][] = [];
    const seen = initial ? new Set<number>() : null;
    for (const ev of evs) {
      const id = parseIdentityIdKey(ev.key);
      if (id < 0) continue;
      const old = this.known.get(id);
      if (ev.type === 'put') {
        seen?.add(id);
        if (old === ev.value) continue;
        if (old !== undefined) {
          removed.push([id, old]);
          this.byLabels.delete(old);
        }
        this.known.set(id, ev.value);
        this.byLabels.set(ev.value, id);
        added.push([id, ev.value]);
      } else if (old !== undefined) {
        this.known.delete(id);
        this.byLabels.delete(old);
        removed.push([id, old]);
      }
    }
    if (seen) {
      // A fresh list replaces the view: numbers not listed are gone.
      for (const [id, l] of this.known) {
        if (!seen.has(id)) {
          this.known.delete(id);
          this.byLabels.delete(l);
          removed.push([id, l]);
        }
      }
    }
    if ((added.length > 0 || removed.length > 0) && this.opts.onChange) this.opts.onChange(added, removed);
  }

  /** The number for canonical label set `labels`, taking this node's reference on it. */
  async allocate(labels: string): Promise<number> {
    const mine = this.refs.get(labels);
    if (mine) {
      mine.count++;
      return mine.id;
    }
    const t0 = process.hrtime.bigint();
    const id = await this.allocateRemote(labels);
    const again = this.refs.get(labels); // a concurrent local allocate of the same labels
    if (again) again.count++;
    else this.refs.set(labels, { id, count: 1 });
    this.latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
    if (this.latencies.length > 4096) this.latencies.shift();
    return id;
  }

  private async allocateRemote(labels: string): Promise<number> {
    const s = this.s;
    const c = s.client;
    const idxKey = identityLabelsKey(labels);
    const refKey = identityRefKey(labels, s.node);
    const taken = new Set<number>();
    // The watch usually knows the number of labels that exist: then one transaction (step 2).
    // Otherwise try to create one at once; the failed transaction returns the index (step 1).
    let idx: IKeyValue | undefined = this.byLabels.has(labels) ? (await s.op('identity-get', () => c.get(idxKey).exec())).kvs[0] : undefined;
    for (let pass = 0; pass < MAX_ALLOCATE_PASSES; pass++) {
      if (idx !== undefined) {
        const kv = idx;
        const x = Number(kv.value.toString('utf8'));
        const r = await s.op('identity-ref', () =>
          c
            .if(identityIdKey(x), 'Value', '==', labels)
            .then(c.put(refKey).value(String(x)).lease(s.currentLeaseId), c.put(idxKey).value(String(x)))
            .commit(),
        );
        if (r.succeeded) {
          s.rememberOwned(refKey, String(x));
          return x;
        }
        // id/X no longer holds these labels: the index is stale; drop it unless it moved.
        await s.op('identity-gc', () => c.if(idxKey, 'Mod', '==', String(kv.mod_revision)).then(c.delete().key(idxKey)).commit());
        idx = undefined;
        continue;
      }
      const x = this.pickCandidate(taken);
      if (x < 0) throw new TunswitchError('EIDENTITY_EXHAUSTED', `kvstore: no free identity number left in ${this.opts.min}-${this.opts.max}`);
      const r = await s.op('identity-create', () =>
        c
          .if(identityIdKey(x), 'Create', '==', 0)
          .and(idxKey, 'Create', '==', 0)
          .then(c.put(identityIdKey(x)).value(labels), c.put(idxKey).value(String(x)), c.put(refKey).value(String(x)).lease(s.currentLeaseId))
          .else(c.get(idxKey))
          .commit(),
      );
      if (r.succeeded) {
        s.rememberOwned(refKey, String(x));
        return x;
      }
      // Someone numbered these labels first (use theirs), or took X (try another).
      idx = r.responses[0]?.response_range?.kvs[0];
      if (idx === undefined) taken.add(x);
    }
    throw new TunswitchError('EKVSTORE', `kvstore: identity for "${labels}": no agreement after ${MAX_ALLOCATE_PASSES} transactions`);
  }

  private pickCandidate(taken: Set<number>): number {
    const { min, max } = this.opts;
    const size = max - min + 1;
    for (let i = 0; i < size; i++) {
      const x = this.cursor;
      this.cursor = x >= max ? min : x + 1;
      if (!this.known.has(x) && !taken.has(x)) return x;
    }
    return -1;
  }

  /** Drops one local use of `labels`; the last one deletes this node's reference key. */
  async release(labels: string): Promise<void> {
    const mine = this.refs.get(labels);
    if (!mine) throw new InternalError(`kvstore: release of identity labels "${labels}", which this node does not hold`);
    if (--mine.count > 0) return;
    this.refs.delete(labels);
    await this.s.deleteOwned(identityRefKey(labels, this.s.node), 'identity-release');
  }

  /** The number this node holds for `labels`, if any. */
  held(labels: string): number | undefined {
    return this.refs.get(labels)?.id;
  }

  /** One garbage-collection pass (see the file comment); returns the numbers deleted. */
  async gc(now: number): Promise<number[]> {
    const s = this.s;
    const c = s.client;
    const index = await s.op('identity-gc-list', () => c.getAll().prefix(IDENTITY_LABELS_PREFIX).exec());
    const refKeys = await s.op('identity-gc-list', () => c.getAll().prefix(IDENTITY_VALUE_PREFIX).keys());
    const referenced = new Set<string>();
    for (const k of refKeys) {
      const rest = k.slice(IDENTITY_VALUE_PREFIX.length);
      referenced.add(rest.slice(0, rest.lastIndexOf('/')));
    }
    const deleted: number[] = [];
    const stillUnreferenced = new Set<number>();
    for (const kv of index.kvs) {
      const labels = kv.key.toString('utf8').slice(IDENTITY_LABELS_PREFIX.length);
      const id = Number(kv.value.toString('utf8'));
      if (referenced.has(labels)) continue;
      stillUnreferenced.add(id);
      const since = this.unreferencedSince.get(id);
      if (since === undefined) {
        this.unreferencedSince.set(id, now);
        continue;
      }
      if (now - since < this.opts.gcGraceMs) continue;
      const r = await s.op('identity-gc', () =>
        c
          .if(identityLabelsKey(labels), 'Mod', '==', String(kv.mod_revision))
          .and(identityIdKey(id), 'Value', '==', labels)
          .then(c.delete().key(identityLabelsKey(labels)), c.delete().key(identityIdKey(id)))
          .commit(),
      );
      if (r.succeeded) {
        deleted.push(id);
        this.gcDeleted++;
      }
      this.unreferencedSince.delete(id);
    }
    for (const id of [...this.unreferencedSince.keys()]) if (!stillUnreferenced.has(id)) this.unreferencedSince.delete(id);
    return deleted;
  }
}

/** p-th percentile (0-100) of a list of numbers (nearest rank). */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return 0;
  const a = [...xs].sort((x, y) => x - y);
  const i = Math.min(a.length - 1, Math.max(0, Math.ceil((p / 100) * a.length) - 1));
  return a[i] as number;
}
