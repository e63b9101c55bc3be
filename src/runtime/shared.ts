/**
 * Shared memory of the runtime: the packet slab, per-slot metadata, per-shard rings and the
 * port table. Everything here is made once by the main thread at start-up and handed to the
 * shard workers (Piscina tasks) and the control thread by structured clone (the
 * SharedArrayBuffers are shared, not copied).
 *
 * Slab: SLOTS slots of SLOT_SIZE bytes. A slot holds one packet (with offload, a 12-byte
 * virtio-net header first). Slots are owned by exactly one thread at a time:
 *   free (main) -> filled by readBatch (main) -> queued on shard k (ring) -> processed and
 *   transmitted by worker k -> returned on shard k's free ring -> free (main).
 *
 * Per slot (Int32Array, SLOTS entries each):
 *   lens[slot]     bytes read into the slot
 *   inPort[slot]   port index the packet came from
 *
 * Ring of shard k (Int32Array over its own SAB), single producer / single consumer:
 *   0 HEAD        submit ring: next index the main thread writes (free-running)
 *   1 DONE        submit ring: next index the worker processes (free-running)
 *   2 SLEEPING    1 while the worker waits on HEAD (the main thread notifies only then)
 *   3 STOP        1: the worker returns after draining
 *   4 RET_HEAD    return ring: next index the worker writes
 *   5 RET_TAIL    return ring: next index the main thread reads
 *   6 ALIVE       incremented by the worker each loop (liveness for the supervisor)
 *   7 GENERATION  incremented each time a shard loop starts (restarts)
 *   8 FLUSH       incremented by the control thread to ask for a conntrack flush
 *   16..16+SLOTS            submit entries (slot indices)
 *   16+SLOTS..16+2*SLOTS    return entries (slot indices)
 * Capacity equals SLOTS, so neither ring can overflow: at most SLOTS slots exist.
 *
 * Ports (Int32Array, MAX_PORTS): portFd[port] = the TUN fd to write to, -1 when unused.
 */
import { MAX_PORTS } from '../tables/tableset.js';

export const R_HEAD = 0;
export const R_DONE = 1;
export const R_SLEEPING = 2;
export const R_STOP = 3;
export const R_RET_HEAD = 4;
export const R_RET_TAIL = 5;
export const R_ALIVE = 6;
export const R_GENERATION = 7;
export const R_FLUSH = 8;

/** I/O thread counter slots in RuntimeShared.ioStats. */
export const IO_PACKETS_READ = 0;
export const IO_READ_CALLS = 1;
export const IO_SLAB_EXHAUSTED = 2;
export const IO_STATS_SLOTS = 4;
export const R_ENTRIES = 16;

/** Packets per read call and per worker batch at most (bench/micro: pipeline cost flat above 32). */
export const MAX_BATCH = 64;

export interface RuntimeShared {
  slotSize: number;
  slots: number;
  vnetHdr: boolean;
  slab: SharedArrayBuffer;
  lens: SharedArrayBuffer;
  inPort: SharedArrayBuffer;
  portFd: SharedArrayBuffer;
  rings: SharedArrayBuffer[];
  counters: SharedArrayBuffer[];
  events: SharedArrayBuffer[];
  conntrack: SharedArrayBuffer[];
  fragments: SharedArrayBuffer[];
  /** Per-shard capture rings (src/tables/capture.ts) for `tunswitch capture`; absent: no capture. */
  capture?: SharedArrayBuffer[];
  /** I/O thread counters (Float64Array, IO_* slots), written by the main thread only. */
  ioStats?: SharedArrayBuffer;
}

export function ringWords(slots: number): number {
  return R_ENTRIES + 2 * slots;
}

export function createRuntimeShared(opts: { shards: number; slots: number; slotSize: number; vnetHdr: boolean }): Omit<RuntimeShared, 'counters' | 'events' | 'conntrack' | 'fragments'> {
  if ((opts.slots & (opts.slots - 1)) !== 0) throw new RangeError(`slots ${opts.slots} is not a power of two`);
  const portFd = new SharedArrayBuffer(MAX_PORTS * 4);
  new Int32Array(portFd).fill(-1);
  const rings: SharedArrayBuffer[] = [];
  for (let k = 0; k < opts.shards; k++) rings.push(new SharedArrayBuffer(ringWords(opts.slots) * 4));
  return {
    slotSize: opts.slotSize,
    slots: opts.slots,
    vnetHdr: opts.vnetHdr,
    slab: new SharedArrayBuffer(opts.slots * opts.slotSize),
    lens: new SharedArrayBuffer(opts.slots * 4),
    inPort: new SharedArrayBuffer(opts.slots * 4),
    portFd,
    rings,
  };
}

/**
 * Symmetric shard hash over the packet's addresses and protocol (not ports): both
 * directions of a flow, and every fragment of a datagram, land on the same shard.
 * Reads the IP header directly from the slab; returns 0 for anything unparseable
 * (the pipeline will drop it with a reason).
 */
export function shardOf(buf: Uint8Array, off: number, len: number, shards: number): number {
  if (shards === 1 || len < 20) return 0;
  const v = (buf[off] as number) >> 4;
  let a = 0;
  let b = 0;
  let proto = 0;
  if (v === 4) {
    a = ((buf[off + 12] as number) << 24) | ((buf[off + 13] as number) << 16) | ((buf[off + 14] as number) << 8) | (buf[off + 15] as number);
    b = ((buf[off + 16] as number) << 24) | ((buf[off + 17] as number) << 16) | ((buf[off + 18] as number) << 8) | (buf[off + 19] as number);
    proto = buf[off + 9] as number;
  } else if (v === 6 && len >= 40) {
    for (let i = 0; i < 16; i += 4) {
      a ^= ((buf[off + 8 + i] as number) << 24) | ((buf[off + 9 + i] as number) << 16) | ((buf[off + 10 + i] as number) << 8) | (buf[off + 11 + i] as number);
      b ^= ((buf[off + 24 + i] as number) << 24) | ((buf[off + 25 + i] as number) << 16) | ((buf[off + 26 + i] as number) << 8) | (buf[off + 27 + i] as number);
    }
    proto = buf[off + 6] as number;
  } else {
    return 0;
  }
  // Commutative combination (a, b order does not matter), then a finaliser.
  let h = (a ^ b) + Math.imul(a + b, 0x9e3779b1) + proto;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) % shards;
}
