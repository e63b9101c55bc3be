/**
 * Shared memory of the runtime: the packet slab, per-slot metadata, per-shard rings and
 * egress queues, and the port table. Everything here is made once by the main thread at
 * start-up and handed to the shard workers (Piscina tasks) and the control thread by
 * structured clone (the SharedArrayBuffers are shared, not copied).
 *
 * Slab: SLOTS slots of SLOT_SIZE bytes, then one transmit arena per shard (ARENA_BYTES
 * each, where a worker builds coalesced or split GSO packets). A slot holds one packet
 * (with offload, a 12-byte virtio-net header first). Who owns a slot when: see ring.ts.
 *
 * Per slot:
 *   lens[slot]     Int32    bytes read into the slot
 *   inPort[slot]   Int32    port index the packet came from
 *   rxMs[slot]     Float64  when the I/O thread read it (ms, performance.timeOrigin +
 *                           performance.now(): one clock for every thread), for CoDel's sojourn
 *
 * Ports (MAX_PORTS):
 *   portFd[port]               Int32    the TUN fd to write to, -1 when unused
 *   portQueue[port*PQ_WORDS+i]  Float64  egress queue settings (egress.ts PQ_*), 0 = default
 *   portOffload[port]          Int32    TUN_F_* flags the port's TUN offers (src/io/tun.ts),
 *                                        0 = plain; written by the control thread before the
 *                                        port's fd reaches the I/O thread, read per batch by the
 *                                        transmitting worker (src/datapath/gso-port.ts)
 *   link                        link impairments per port and their EDT clocks (impair.ts LinkTable)
 *   delay[shard]                the shard's delay line (impair.ts DelayLine)
 *
 * Health (Int32, per shard HEALTH_WORDS, written by the supervisor on the main thread):
 *   STATE (SHARD_*), RESTARTS, LAST_RESTART_S (unix seconds), CRASH_LOOP (1 while backing off)
 */
import { MAX_PORTS } from '../tables/tableset.js';
import { PQ_WORDS } from './egress.js';
import { createRingBuffer } from './ring.js';
import { DelayLine, LinkTable } from './impair.js';

export { R_HEAD, R_DONE, R_SLEEPING, R_STOP, R_RET_HEAD, R_RET_TAIL, R_ALIVE, R_GENERATION, R_FLUSH, R_CURRENT, R_READY, R_ENTRIES, ringWords } from './ring.js';

/** I/O thread counter slots in RuntimeShared.ioStats. */
export const IO_PACKETS_READ = 0;
export const IO_READ_CALLS = 1;
export const IO_SLAB_EXHAUSTED = 2;
/** Packets the I/O thread dropped because their shard's ring backlog was at its bound. */
export const IO_BACKLOG_DROPS = 3;
/** Packets dropped by recovery: the packet a worker died on. */
export const IO_CRASH_DROPS = 4;
/** Slots the dead workers held otherwise (being written) and recovery freed. */
export const IO_CRASH_FREED = 5;
/** Read errors reported by the I/O engine. */
export const IO_READ_ERRORS = 6;
/** 1: io_uring engine, 0: read/write. */
export const IO_ENGINE = 7;
/** Slots not held by any shard (free, or provided to the kernel), sampled by the supervisor. */
export const IO_FREE_SLOTS = 8;
/** Slots in the slab. */
export const IO_SLOTS = 9;
export const IO_STATS_SLOTS = 12;

export const HEALTH_STATE = 0;
export const HEALTH_RESTARTS = 1;
export const HEALTH_LAST_RESTART_S = 2;
export const HEALTH_CRASH_LOOP = 3;
export const HEALTH_WORDS = 4;
export const SHARD_STARTING = 0;
export const SHARD_RUNNING = 1;
export const SHARD_DEAD = 2;
export const SHARD_STUCK = 3;
export const SHARD_STATE_NAMES = ['starting', 'running', 'dead', 'stuck'];

/** Packets per read call and per pipeline batch at most (bench/micro: pipeline cost flat above 32). */
export const MAX_BATCH = 64;
/**
 * Packets a shard may have submitted and not yet taken; past it the I/O thread drops
 * (IO_BACKLOG_DROPS, reason 230). The worker takes its ring into the egress queue well
 * before this, so the bound only bites when the pipeline itself falls behind; it keeps the
 * backlog out of the slab, where no AQM sees it.
 */
export const MAX_RING_BACKLOG = 512;
/** Bytes of one shard's transmit arena (coalesced/split GSO packets are built there). */
export const ARENA_BYTES = 1 << 20;

export interface RuntimeShared {
  slotSize: number;
  slots: number;
  vnetHdr: boolean;
  slab: SharedArrayBuffer;
  /** Where the shard arenas start in the slab; arena k is [arenaOff + k*ARENA_BYTES, +ARENA_BYTES). */
  arenaOff: number;
  lens: SharedArrayBuffer;
  inPort: SharedArrayBuffer;
  rxMs: SharedArrayBuffer;
  portFd: SharedArrayBuffer;
  portQueue: SharedArrayBuffer;
  portOffload: SharedArrayBuffer;
  link: SharedArrayBuffer;
  delay: SharedArrayBuffer[];
  rings: SharedArrayBuffer[];
  egress: SharedArrayBuffer[];
  health: SharedArrayBuffer;
  counters: SharedArrayBuffer[];
  events: SharedArrayBuffer[];
  conntrack: SharedArrayBuffer[];
  fragments: SharedArrayBuffer[];
  /** Per-shard capture rings (src/tables/capture.ts) for `tunswitch capture`; absent: no capture. */
  capture?: SharedArrayBuffer[];
  /** I/O thread counters (Float64Array, IO_* slots), written by the main thread only. */
  ioStats?: SharedArrayBuffer;
}

export function createRuntimeShared(opts: { shards: number; slots: number; slotSize: number; vnetHdr: boolean }): Omit<RuntimeShared, 'counters' | 'events' | 'conntrack' | 'fragments' | 'egress'> {
  if ((opts.slots & (opts.slots - 1)) !== 0) throw new RangeError(`slots ${opts.slots} is not a power of two`);
  const portFd = new SharedArrayBuffer(MAX_PORTS * 4);
  new Int32Array(portFd).fill(-1);
  const rings: SharedArrayBuffer[] = [];
  for (let k = 0; k < opts.shards; k++) rings.push(createRingBuffer(opts.slots));
  const delay: SharedArrayBuffer[] = [];
  for (let k = 0; k < opts.shards; k++) delay.push(DelayLine.create(opts.slots, MAX_PORTS).sab);
  const arenaOff = opts.slots * opts.slotSize;
  return {
    slotSize: opts.slotSize,
    slots: opts.slots,
    vnetHdr: opts.vnetHdr,
    slab: new SharedArrayBuffer(arenaOff + opts.shards * ARENA_BYTES),
    arenaOff,
    lens: new SharedArrayBuffer(opts.slots * 4),
    inPort: new SharedArrayBuffer(opts.slots * 4),
    rxMs: new SharedArrayBuffer(opts.slots * 8),
    portFd,
    portQueue: new SharedArrayBuffer(MAX_PORTS * PQ_WORDS * 8),
    portOffload: new SharedArrayBuffer(MAX_PORTS * 4),
    link: LinkTable.create(MAX_PORTS).sab,
    delay,
    rings,
    health: new SharedArrayBuffer(opts.shards * HEALTH_WORDS * 4),
  };
}

/** Milliseconds on the clock every thread shares (see rxMs above). */
export function sharedNowMs(): number {
  return performance.timeOrigin + performance.now();
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
