/**
 * ipcache entries in etcd (cilium/state/ip/v1/default/<ip>), both ways:
 *   - publish: this node's endpoint addresses, each one key under the node's lease, written
 *     when the endpoint appears and deleted when it goes (one put or delete per change);
 *   - follow: every other node's entries (list + watch), handed to the sink one batch at a
 *     time (the sink publishes the shared-memory ipcache once per batch).
 * A node's entries vanish with its lease: the deletes arrive through the watch like any other.
 */
import type { KvSession } from './session.js';
import { PrefixWatch, type KvEvent } from './watch.js';
import { IP_PREFIX, ipKey, type IpEntryValue } from './keys.js';

export interface RemoteIpEntry {
  ip: string;
  identity: number;
  hostIP: string;
  node: string;
}

/** Where remote entries go (the agent's ipcache writer in the switch; a map in tests). */
export interface IpcacheSink {
  /** One batch: entries to add or replace, then addresses to remove. */
  apply(upserts: RemoteIpEntry[], deletes: string[]): void;
}

export class KvIpcache {
  /** Other nodes' entries: ip -> entry. */
  readonly remote = new Map<string, RemoteIpEntry>();
  private readonly watch: PrefixWatch;
  /** Batches applied and entries changed (for status and tests). */
  applied = { batches: 0, entries: 0 };

  constructor(
    private readonly s: KvSession,
    private readonly hostIP: string,
    private readonly sink: IpcacheSink,
  ) {
    this.watch = new PrefixWatch(s, IP_PREFIX, 'ipcache', (evs, initial) => this.onBatch(evs, initial));
  }

  start(): Promise<void> {
    return this.watch.start();
  }

  stop(): Promise<void> {
    return this.watch.stop();
  }

  async publish(ip: string, identity: number): Promise<void> {
    const v: IpEntryValue = { IP: ip, Mask: null, HostIP: this.hostIP, ID: identity, Key: 0, Metadata: this.s.node };
    await this.s.putOwned(ipKey(ip), JSON.stringify(v), 'ipcache-put');
  }

  async unpublish(ip: string): Promise<void> {
    await this.s.deleteOwned(ipKey(ip), 'ipcache-delete');
  }

  private onBatch(evs: KvEvent[], initial: boolean): void {
    const upserts: RemoteIpEntry[] = [];
    const deletes: string[] = [];
    const seen = initial ? new Set<string>() : null;
    for (const ev of evs) {
      const ip = ev.key.slice(IP_PREFIX.length);
      if (ev.type === 'delete') {
        if (this.remote.delete(ip)) deletes.push(ip);
        continue;
      }
      const e = parseIpEntry(ev.value);
      if (e === null || e.node === this.s.node) {
        // Ours, or not a value we understand: a remote record this key held before is gone.
        if (this.remote.delete(ip)) deletes.push(ip);
        continue;
      }
      seen?.add(ip);
      const old = this.remote.get(ip);
      if (old && old.identity === e.identity && old.hostIP === e.hostIP && old.node === e.node) continue;
      this.remote.set(ip, e);
      upserts.push(e);
    }
    if (seen) {
      for (const ip of [...this.remote.keys()]) {
        if (!seen.has(ip)) {
          this.remote.delete(ip);
          deletes.push(ip);
        }
      }
    }
    if (upserts.length === 0 && deletes.length === 0) return;
    this.applied.batches++;
    this.applied.entries += upserts.length + deletes.length;
    this.sink.apply(upserts, deletes);
  }
}

/** The entry in a key's value, or null when it is not one (a foreign writer's garbage is ignored). */
export function parseIpEntry(text: string): RemoteIpEntry | null {
  let v: Partial<IpEntryValue>;
  try {
    v = JSON.parse(text) as Partial<IpEntryValue>;
  } catch {
    return null;
  }
  if (typeof v !== 'object' || v === null) return null;
  if (typeof v.IP !== 'string' || typeof v.HostIP !== 'string' || !Number.isInteger(v.ID) || (v.ID as number) < 1) return null;
  if (!/^[0-9]{1,3}(\.[0-9]{1,3}){3}$/.test(v.HostIP) && v.HostIP !== '') return null;
  return { ip: v.IP, identity: v.ID as number, hostIP: v.HostIP, node: typeof v.Metadata === 'string' ? v.Metadata : '' };
}
