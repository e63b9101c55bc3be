/**
 * Admission of read packets into a shard that has fallen behind (the I/O thread's side of
 * backpressure, src/runtime/io-loop.ts).
 *
 * A shard whose ring holds MAX_RING_BACKLOG untaken packets is overloaded: the pipeline
 * itself cannot keep up, so the backlog would grow in the slab where no AQM sees it. A plain
 * tail drop there hits whoever arrives, and during a flood from one port that is everyone
 * (a flooder's burst and a neighbour's three fragments of one ping share the drop
 * probability). So the bound is per input port: past MAX_RING_BACKLOG, a packet is still
 * admitted when its port has fewer than FAIR_INFLIGHT packets in flight (read and not yet
 * handed back by the worker: in the ring, the pipeline, the egress queue or the delay line),
 * up to a hard bound of HARD_BACKLOG. The flooding port, with hundreds in flight, is the one
 * dropped (reason 230, QUEUE_FULL); a light port keeps its packets.
 *
 * The counts live in the I/O thread only: took() when a slot is submitted, freed() when it
 * comes back (reclaim), recount() after a worker crash (the supervisor's recovery frees or
 * keeps slots in bulk).
 */
import { MAX_PORTS } from '../tables/tableset.js';
import { MAX_BATCH, MAX_RING_BACKLOG } from './shared.js';

/** Packets one port may have in flight and still pass a shard's backlog bound. */
export const FAIR_INFLIGHT = MAX_BATCH;
/** Untaken packets in a shard's ring past which nothing is admitted. */
export const HARD_BACKLOG = 2 * MAX_RING_BACKLOG;

export class PortAdmission {
  /** inflight[port]: slots read from the port and not yet back. */
  readonly inflight = new Int32Array(MAX_PORTS);
  private readonly slotPort: Uint16Array;

  constructor(slots: number) {
    this.slotPort = new Uint16Array(slots);
  }

  /** May a packet from `port` join a shard ring holding `backlog` untaken packets? */
  admit(port: number, backlog: number): boolean {
    if (backlog < MAX_RING_BACKLOG) return true;
    return backlog < HARD_BACKLOG && (this.inflight[port] as number) < FAIR_INFLIGHT;
  }

  /** `slot` (read from `port`) was submitted to a shard. */
  took(slot: number, port: number): void {
    this.slotPort[slot] = port;
    this.inflight[port] = (this.inflight[port] as number) + 1;
  }

  /** `slot` came back free. */
  freed(slot: number): void {
    const p = this.slotPort[slot] as number;
    this.inflight[p] = (this.inflight[p] as number) - 1;
  }

  /** Counts again from the owner map (owner[slot] >= 0: in flight), after a crash recovery. */
  recount(owner: Int8Array): void {
    this.inflight.fill(0);
    for (let s = 0; s < owner.length; s++) {
      if ((owner[s] as number) < 0) continue;
      const p = this.slotPort[s] as number;
      this.inflight[p] = (this.inflight[p] as number) + 1;
    }
  }
}
