/**
 * The control thread's read-only view of the shards: counters, conntrack listings and the
 * event rings (records handed out through EventReader; observe/flow.ts makes flow events). Conntrack is written only by the shard
 * workers; listing reads it without locks (an entry changing under the reader may show a
 * mixed state, which is acceptable for a listing). A flush is a request the worker carries
 * out at its next batch (ring word R_FLUSH), so the single-writer rule holds.
 */
import { ConntrackTable } from '../tables/conntrack.js';
import { FragmentTable } from '../tables/fragments.js';
import { C_FWD_PKTS, EventReader, EventRing, totalDropped } from '../tables/events.js';
import { IPPROTO_TCP, protoName, tcpFlagNames } from '../proto/ip.js';
import { formatV4, formatV6 } from '../proto/prefix.js';
import type { CtEntryInfo } from '../api/types.js';
import { R_FLUSH } from '../runtime/shared.js';

export class DatapathView {
  readonly ct: ConntrackTable[];
  readonly frags: FragmentTable[];
  readonly counters: Float64Array[];
  readonly rings: EventRing[];
  /** One record decoder per ring. */
  readonly readers: EventReader[];
  readonly shardRings: Int32Array[];

  constructor(
    conntrack: SharedArrayBuffer[],
    counters: SharedArrayBuffer[],
    events: SharedArrayBuffer[],
    shardRings: SharedArrayBuffer[],
    fragments: SharedArrayBuffer[] = [],
  ) {
    this.ct = conntrack.map((s) => ConntrackTable.attach(s, 0));
    this.frags = fragments.map((s) => FragmentTable.attach(s, 0));
    this.counters = counters.map((s) => new Float64Array(s));
    this.rings = events.map((s) => new EventRing(s));
    this.readers = this.rings.map((r) => new EventReader(r));
    this.shardRings = shardRings.map((s) => new Int32Array(s));
  }

  totals(): { forwarded: number; dropped: number } {
    let forwarded = 0;
    let dropped = 0;
    for (const c of this.counters) {
      forwarded += (c[C_FWD_PKTS] as number) + (c[C_FWD_PKTS + 1] as number);
      dropped += totalDropped(c);
    }
    return { forwarded, dropped };
  }

  /** Sum of counter slot `i` over shards. */
  sum(i: number): number {
    let s = 0;
    for (const c of this.counters) s += c[i] as number;
    return s;
  }

  listCt(): CtEntryInfo[] {
    const now = Date.now() / 1000;
    const out: CtEntryInfo[] = [];
    this.ct.forEach((t, shard) => {
      t.forEach((idx) => {
        const fam = t.family(idx);
        const fmt = (w: (i: number) => number): string => (fam === 4 ? formatV4(w(0)) : `[${formatV6([w(0), w(1), w(2), w(3)])}]`);
        const proto = t.proto(idx);
        const src = fmt((i) => t.srcWord(idx, i));
        const dst = fmt((i) => t.dstWord(idx, i));
        const flags = t.flags(idx);
        out.push({
          shard,
          proto: protoName(proto),
          src: `${src}:${t.sport(idx)}`,
          dst: `${dst}:${t.dport(idx)}`,
          state: t.isClosing(idx) ? 'closing' : t.replySeen(idx) ? 'established' : 'new',
          expiresIn: Math.max(0, Math.round(t.expires(idx) - now)),
          identity: t.identity(idx),
          packets: t.packets(idx, 0) + t.packets(idx, 1),
          bytes: t.bytes(idx, 0) + t.bytes(idx, 1),
          flags: proto === IPPROTO_TCP ? `tx[${tcpFlagNames(flags & 0xff)}] rx[${tcpFlagNames((flags >>> 8) & 0xff)}]` : '',
        });
      });
    });
    return out;
  }

  flushCt(): { flushed: number } {
    let n = 0;
    for (const t of this.ct) n += t.count;
    for (const r of this.shardRings) Atomics.add(r, R_FLUSH, 1);
    return { flushed: n };
  }

  lostEvents(): number {
    let n = 0;
    for (const r of this.rings) n += r.lost();
    return n;
  }

  /**
   * Hands every pending event record to `fn`, as a reader positioned at it (observe/flow.ts
   * turns it into a flow event), and consumes them. Returns how many there were.
   */
  drainEvents(fn: (r: EventReader) => void): number {
    let total = 0;
    for (const rd of this.readers) total += rd.drain(fn);
    return total;
  }
}
