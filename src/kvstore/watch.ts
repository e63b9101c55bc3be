/**
 * List, then watch from the listed revision: the one way every kvstore consumer follows a
 * prefix. The list is delivered as one batch (`initial`), then each watch response as one
 * batch, so a consumer publishes its tables once per batch (O(change) per publish).
 *
 * Resume: the client's watcher remembers the last revision it delivered and, after a lost
 * stream (etcd restarted or unreachable), re-creates the watch from the next revision, so no
 * event is delivered twice or lost (unless etcd compacted past it: then the watch fails and
 * `relist()` starts over from a fresh list, which replaces the consumer's whole view).
 */
import type { Watcher } from 'etcd3';
import type { KvSession } from './session.js';

export interface KvEvent {
  type: 'put' | 'delete';
  key: string;
  value: string;
}

export type KvBatchHandler = (events: KvEvent[], initial: boolean) => void;

export class PrefixWatch {
  private watcher: Watcher | null = null;
  private stopped = false;
  /** Revision of the last list (the watch starts after it). */
  listRevision = 0;
  batches = 0;
  events = 0;

  constructor(
    private readonly session: KvSession,
    readonly prefix: string,
    private readonly name: string,
    private readonly onBatch: KvBatchHandler,
  ) {}

  async start(): Promise<void> {
    const s = this.session;
    const res = await s.op(`list-${this.name}`, () => s.client.getAll().prefix(this.prefix).exec());
    this.listRevision = Number(res.header.revision);
    const evs: KvEvent[] = res.kvs.map((kv) => ({ type: 'put', key: kv.key.toString('utf8'), value: kv.value.toString('utf8') }));
    this.events += evs.length;
    this.onBatch(evs, true);
    if (this.stopped) return;
    const w = await s.client.watch().prefix(this.prefix).startRevision(String(this.listRevision + 1)).create();
    this.watcher = w;
    w.on('data', (r) => {
      if (this.stopped || r.events.length === 0) return;
      const batch: KvEvent[] = [];
      for (const ev of r.events) {
        batch.push({ type: ev.type === 'Put' ? 'put' : 'delete', key: ev.kv.key.toString('utf8'), value: ev.kv.value.toString('utf8') });
      }
      this.batches++;
      this.events += batch.length;
      s.count(`watch-${this.name}`, true);
      this.onBatch(batch, false);
    });
    w.on('disconnected', (e) => s.setState('disconnected', e));
    w.on('connected', () => {
      if (s.state === 'disconnected') s.setState('connected');
    });
    w.on('error', (e) => {
      // Compacted past our revision or cancelled: start over from a fresh list.
      s.count(`watch-${this.name}`, false);
      s.setState('disconnected', e);
      void this.relist();
    });
  }

  private async relist(): Promise<void> {
    const old = this.watcher;
    this.watcher = null;
    if (old) await old.cancel().catch(() => undefined);
    let wait = 200;
    while (!this.stopped) {
      try {
        await this.start();
        return;
      } catch {
        await new Promise((r) => setTimeout(r, wait));
        wait = Math.min(wait * 2, 2000);
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const w = this.watcher;
    this.watcher = null;
    if (w) await w.cancel().catch(() => undefined);
  }
}
