/**
 * The flow log: the most recent flow events in a fixed ring (oldest overwritten), and the
 * subscribers of `observe --follow`. A push costs O(1) whatever the fill: one slot write and
 * one call per subscriber (the array it replaced spliced 8192 entries per event once full).
 */
import type { FlowEvent } from '../api/types.js';

/** Events kept for `observe --last N` (Hubble's default ring is 4095; `--last` up to this). */
export const FLOW_LOG_CAPACITY = 8192;

export class FlowLog {
  private readonly ring: (FlowEvent | undefined)[];
  /** Index the next event goes to. */
  private head = 0;
  /** Events held (≤ capacity). */
  private count = 0;
  private readonly subs = new Set<(e: FlowEvent) => void>();

  constructor(readonly capacity: number = FLOW_LOG_CAPACITY) {
    this.ring = new Array<FlowEvent | undefined>(capacity).fill(undefined);
  }

  get size(): number {
    return this.count;
  }

  push(e: FlowEvent): void {
    this.ring[this.head] = e;
    this.head = this.head + 1 === this.capacity ? 0 : this.head + 1;
    if (this.count < this.capacity) this.count++;
    for (const fn of this.subs) fn(e);
  }

  /** The newest `last` events (all when fewer), oldest first. */
  recent(last: number): FlowEvent[] {
    const n = Math.max(0, Math.min(Math.floor(last), this.count));
    const out: FlowEvent[] = new Array<FlowEvent>(n);
    let i = (this.head - n + this.capacity) % this.capacity;
    for (let k = 0; k < n; k++) {
      out[k] = this.ring[i] as FlowEvent;
      i = i + 1 === this.capacity ? 0 : i + 1;
    }
    return out;
  }

  /** Calls `fn` with every event pushed from now on; returns the unsubscribe. */
  subscribe(fn: (e: FlowEvent) => void): () => void {
    this.subs.add(fn);
    return () => this.subs.delete(fn);
  }
}
