/**
 * One node's session with etcd: the client, the node's lease, the keys the node owns under
 * that lease, the connection state and the operation counters.
 *
 * Lease: granted with the configured TTL and kept alive by the client (every TTL/3). When
 * the node dies it stops renewing and etcd deletes every key under the lease after the TTL:
 * that is how other nodes learn a node is gone. When the lease is lost while the node lives
 * (etcd away longer than the TTL), a new lease is granted and every owned key is written
 * again under it (`owned` is the node's own record of what it published).
 *
 * State: 'connecting' until the first lease is granted; 'connected' while keep-alives
 * succeed; 'disconnected' from the first failed keep-alive or watch stream error until the
 * next success. The datapath never waits on it: tables keep their last state meanwhile.
 */
import { Etcd3, type Lease, type IKeyValue } from 'etcd3';
import { ExponentialBackoff, type IBackoff } from 'cockatiel'; // the client calls .next() on it: a factory, whatever its type says

export type KvState = 'connecting' | 'connected' | 'disconnected' | 'closed';
import { TunswitchError } from '../proto/errors.js';

export interface KvSessionOptions {
  /** etcd client URL, http://host:port (etcd://host:port is accepted and means the same). */
  url: string;
  node: string;
  /** Lease TTL in seconds (>= 1). */
  leaseTtl: number;
  log?: (msg: string) => void;
}

/** Counters of kvstore operations, by kind; exported as tunswitch_kvstore_operations_total. */
export interface KvOpCounters {
  [op: string]: { ok: number; failed: number };
}

export function etcdUrl(url: string): string {
  const m = /^(etcd|http):\/\/([^/:]+|\[[0-9a-fA-F:]+\]):([0-9]{1,5})\/?$/.exec(url);
  if (!m || Number(m[3]) < 1 || Number(m[3]) > 65535) {
    throw new TunswitchError('ECONFIG_INVALID', `kvstore: ${JSON.stringify(url)} is not etcd://HOST:PORT`);
  }
  return `http://${m[2]}:${m[3]}`;
}

export class KvSession {
  readonly client: Etcd3;
  readonly node: string;
  readonly url: string;
  readonly leaseTtl: number;
  state: KvState = 'connecting';
  /** Last error seen (null after a success). */
  lastError: string | null = null;
  /** Times a lease was lost and the owned keys were written again. */
  leaseRenewals = 0;
  readonly ops: KvOpCounters = {};
  private lease: Lease | null = null;
  private leaseId = '';
  private readonly owned = new Map<string, string>();
  private readonly pending = new Map<string, { value: string | null; lease: boolean; op: string }>();
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly log: (msg: string) => void;
  private closed = false;
  private readonly stateListeners = new Set<(s: KvState) => void>();

  constructor(opts: KvSessionOptions) {
    if (!Number.isInteger(opts.leaseTtl) || opts.leaseTtl < 1) throw new TunswitchError('ECONFIG_INVALID', `kvstore: leaseTtl ${opts.leaseTtl} must be an integer >= 1 (seconds)`);
    this.url = etcdUrl(opts.url);
    this.node = opts.node;
    this.leaseTtl = opts.leaseTtl;
    this.log = opts.log ?? (() => undefined);
    // Watch streams come back within 2 s of etcd returning (the client's default backoff grows to 30 s).
    this.client = new Etcd3({ hosts: this.url, dialTimeout: 3000, faultHandling: { watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 2000 }) as unknown as IBackoff<unknown> } });
  }

  /** Grants the first lease; rejects when etcd does not answer within `timeoutMs`. */
  async start(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        await this.newLease();
        return;
      } catch (e) {
        if (Date.now() > deadline) throw new TunswitchError('EKVSTORE', `kvstore ${this.url}: not reachable: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  onState(fn: (s: KvState) => void): () => void {
    this.stateListeners.add(fn);
    return () => this.stateListeners.delete(fn);
  }

  setState(s: KvState, err?: unknown): void {
    if (this.closed && s !== 'closed') return;
    if (err !== undefined) this.lastError = (err as Error)?.message ?? String(err);
    else if (s === 'connected') this.lastError = null;
    if (this.state === s) return;
    this.state = s;
    this.log(`kvstore ${this.url}: ${s}${err !== undefined ? ` (${this.lastError})` : ''}`);
    for (const fn of [...this.stateListeners]) fn(s);
  }

  count(op: string, ok: boolean): void {
    let c = this.ops[op];
    if (c === undefined) {
      c = { ok: 0, failed: 0 };
      this.ops[op] = c;
    }
    if (ok) c.ok++;
    else c.failed++;
  }

  /** Runs one etcd operation, counting it under `op`; a failure marks the session disconnected. */
  async op<T>(op: string, fn: () => Promise<T>): Promise<T> {
    try {
      const r = await fn();
      this.count(op, true);
      return r;
    } catch (e) {
      this.count(op, false);
      this.setState('disconnected', e);
      throw e;
    }
  }

  get currentLeaseId(): string {
    return this.leaseId;
  }

  private async newLease(): Promise<void> {
    const lease = this.client.lease(this.leaseTtl);
    lease.on('lost', (err) => {
      if (this.closed || this.lease !== lease) return;
      this.count('lease-lost', false);
      this.setState('disconnected', err);
      void this.recoverLease();
    });
    lease.on('keepaliveSucceeded', () => {
      if (this.lease === lease) this.setState('connected');
    });
    lease.on('keepaliveFailed', (e) => {
      if (this.lease === lease) this.setState('disconnected', e);
    });
    lease.on('error' as 'lost', () => undefined);
    try {
      this.leaseId = await lease.grant();
    } catch (e) {
      lease.removeAllListeners();
      lease.on('lost', () => undefined);
      lease.release();
      this.count('lease-grant', false);
      throw e;
    }
    this.count('lease-grant', true);
    this.lease = lease;
    this.setState('connected');
  }

  /** A new lease, then every owned key again under it; retries until it works or the session closes. */
  private async recoverLease(): Promise<void> {
    const old = this.lease;
    this.lease = null;
    if (old) {
      old.removeAllListeners();
      old.on('lost', () => undefined);
      old.release();
    }
    let wait = 200;
    while (!this.closed) {
      try {
        await this.newLease();
        for (const [k, v] of this.owned) {
          this.pending.delete(k);
          await this.client.put(k).value(v).lease(this.leaseId).exec();
        }
        this.leaseRenewals++;
        this.log(`kvstore: lease renewed, ${this.owned.size} keys written again`);
        return;
      } catch (e) {
        this.setState('disconnected', e);
        await new Promise((r) => setTimeout(r, wait));
        wait = Math.min(wait * 2, 2000);
      }
    }
  }

  /**
   * Writes a key under the node's lease and remembers it (written again after a lease loss).
   * A failed write is kept and retried (retryPending), so a write made while etcd is away
   * lands when it returns; the promise still rejects so the caller can count it.
   */
  async putOwned(key: string, value: string, op: string): Promise<void> {
    this.owned.set(key, value);
    this.pending.delete(key);
    try {
      await this.op(op, () => this.client.put(key).value(value).lease(this.leaseId).exec());
    } catch (e) {
      if (this.owned.get(key) === value) this.queue(key, { value, lease: true, op });
      throw e;
    }
  }

  /** Forgets and deletes an owned key (retried like putOwned when etcd is away). */
  async deleteOwned(key: string, op: string): Promise<void> {
    this.owned.delete(key);
    await this.write(key, null, false, op);
  }

  /** A write without lease (policies), retried like putOwned when etcd is away. */
  async write(key: string, value: string | null, lease: boolean, op: string): Promise<void> {
    this.pending.delete(key);
    try {
      if (value === null) await this.op(op, () => this.client.delete().key(key).exec());
      else await this.op(op, () => (lease ? this.client.put(key).value(value).lease(this.leaseId) : this.client.put(key).value(value)).exec());
    } catch (e) {
      this.queue(key, { value, lease, op });
      throw e;
    }
  }

  get pendingWrites(): number {
    return this.pending.size;
  }

  private queue(key: string, w: { value: string | null; lease: boolean; op: string }): void {
    this.pending.set(key, w);
    if (this.retryTimer !== null || this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.retryPending();
    }, 500);
    this.retryTimer.unref();
  }

  /** Writes every queued key again (latest value per key wins). */
  private async retryPending(): Promise<void> {
    const batch = [...this.pending];
    for (const [key, w] of batch) {
      if (this.closed) return;
      if (this.pending.get(key) !== w) continue; // replaced meanwhile
      this.pending.delete(key);
      await this.write(key, w.value, w.lease, w.op).catch(() => undefined); // re-queued on failure
    }
  }

  /** Records a key written under the lease by a transaction (identities.ts). */
  rememberOwned(key: string, value: string): void {
    this.owned.set(key, value);
  }

  forgetOwned(key: string): void {
    this.owned.delete(key);
  }

  ownedCount(): number {
    return this.owned.size;
  }

  /** Stops renewing; with `revoke`, deletes every key under the lease at once (clean shutdown). */
  async close(revoke = true): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const lease = this.lease;
    this.lease = null;
    if (lease) {
      lease.removeAllListeners();
      lease.on('lost', () => undefined);
      if (revoke) await lease.revoke({ deadline: Date.now() + 2000 }).catch(() => undefined);
      else lease.release();
    }
    this.setState('closed');
    this.client.close();
  }
}

export function kvText(kv: IKeyValue): { key: string; value: string; modRevision: string } {
  return { key: kv.key.toString('utf8'), value: kv.value.toString('utf8'), modRevision: String(kv.mod_revision) };
}
