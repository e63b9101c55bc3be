/**
 * The I/O loop (main thread): reads packets from every port's TUN fd in batches into free
 * slab slots, stamps their read time, hashes each one to its shard, and submits the slots
 * on that shard's ring (ring.ts). Shard workers run the pipeline, queue and transmit; they
 * hand the slots back on the ring's return side, which this loop reclaims.
 *
 * Two engines read:
 *   uring      one io_uring with a multishot read armed per TUN fd; the kernel reads each
 *              packet into a slab slot taken from a provided-buffer ring (buffer id = slot),
 *              so a burst costs no system call per packet; an eventfd on Node's loop says
 *              when completions wait. Free slots are handed to the kernel, not kept here.
 *   readwrite  a uv_poll per fd and one read() per packet (native readBatchSlots), for
 *              kernels and sandboxes without io_uring (Docker's default seccomp profile
 *              blocks it).
 *
 * Backpressure and where the queue is: a shard whose ring already holds MAX_RING_BACKLOG
 * untaken packets gets no more from ports that have many packets in flight (dropped here,
 * IO_BACKLOG_DROPS, reason 230; light ports still pass, see admission.ts), so the backlog
 * forms in the worker's egress queue where CoDel manages it, not in the slab. When no slot
 * is free at all the loop stops reading and the kernel's TUN queue (small txqueuelen) fills.
 */
import { loadBinding, type PollHandle, type TunBinding, type UringHandle } from '../io/native.js';
import { MAX_PORTS, UNDERLAY_PORT } from '../tables/tableset.js';
import { ShardRing } from './ring.js';
import { PortAdmission } from './admission.js';
import { GRO_MAX_SEGS, SLOT_TRAILER as UNDERLAY_SLOT_TRAILER } from './underlay.js';
import {
  MAX_BATCH,
  MAX_RING_BACKLOG,
  IO_BACKLOG_DROPS,
  IO_ENGINE,
  IO_PACKETS_READ,
  IO_READ_CALLS,
  IO_READ_ERRORS,
  IO_SLAB_EXHAUSTED,
  IO_STATS_SLOTS,
  sharedNowMs,
  shardOf,
  type RuntimeShared,
} from './shared.js';
import { InternalError } from '../proto/errors.js';

export type IoEngineName = 'uring' | 'readwrite';

/** What the I/O loop needs of the underlay reader (src/runtime/underlay.ts UnderlayReader). */
export interface UnderlayHook {
  readonly gro: boolean;
  nFree: number;
  enableGro(): boolean;
  decapSlot(slot: number, len: number): number;
  decapGro(slot: number, len: number, gsoSize: number, free: Int32Array, nFree: number, outSlot: Int32Array, outLen: Int32Array, at: number): number;
}

/** Read rounds per readiness event before yielding to other ports (fairness). */
const READ_ROUNDS = 4;
/** Completions reaped per call (uring engine). */
const REAP_BATCH = 256;
/** Retry period when every slot is out (uring engine: no completion would wake us). */
const STARVED_RETRY_MS = 1;

export class IoLoop {
  readonly native: TunBinding;
  readonly engine: IoEngineName;
  private readonly buf: Uint8Array;
  private readonly lens: Int32Array;
  private readonly inPort: Int32Array;
  private readonly rxMs: Float64Array;
  private readonly portFd: Int32Array;
  readonly rings: ShardRing[];
  private readonly shards: number;
  private readonly hdr: number;
  /** Free slots (readwrite: the free list; uring: reclaimed, not yet provided). */
  readonly free: Int32Array;
  nFree: number;
  /** owner[slot] = shard the slot was submitted to, -1 when free or in the kernel. */
  readonly owner: Int8Array;
  /** Per-port packets in flight, for admission past a shard's backlog bound. */
  readonly admission: PortAdmission;
  private readonly scratch = new Int32Array(REAP_BATCH);
  private readonly scratchLen = new Int32Array(REAP_BATCH);
  private readonly scratchPort = new Int32Array(REAP_BATCH);
  private readonly errStats = new Int32Array(2);
  private readonly polls: (PollHandle | null)[] = [];
  private readonly pending: Int32Array;
  private readonly touched: Uint8Array;
  private uring: UringHandle | null = null;
  private uringPoll: PollHandle | null = null;
  private starvedTimer: ReturnType<typeof setTimeout> | null = null;
  /** underlay hook: the underlay socket is paused (its shards were full) until this fires. */
  private underlayTimer: ReturnType<typeof setTimeout> | null = null;
  /** Slots currently in the kernel's provided-buffer ring (uring engine). */
  private provided = 0;

  /** I/O thread counters (IO_* slots): shared so the control thread can export them. */
  readonly stats: Float64Array;

  /** underlay hook: decapsulates datagrams read from UNDERLAY_PORT (null: no underlay). */
  underlay: UnderlayHook | null = null;
  /** underlay hook, UDP GRO reads: segment size per buffer read, and the packets cut from them. */
  private readonly groSize = new Int32Array(MAX_BATCH);
  private readonly groSlot = new Int32Array(REAP_BATCH);
  private readonly groLen = new Int32Array(REAP_BATCH);

  constructor(
    readonly rt: RuntimeShared,
    vnetHdrLen: number,
    engine: IoEngineName,
  ) {
    this.native = loadBinding();
    this.engine = engine;
    this.stats = new Float64Array(rt.ioStats ?? new SharedArrayBuffer(IO_STATS_SLOTS * 8));
    this.stats[IO_ENGINE] = engine === 'uring' ? 1 : 0;
    this.buf = new Uint8Array(rt.slab);
    this.lens = new Int32Array(rt.lens);
    this.inPort = new Int32Array(rt.inPort);
    this.rxMs = new Float64Array(rt.rxMs);
    this.portFd = new Int32Array(rt.portFd);
    this.rings = rt.rings.map((s) => new ShardRing(s, rt.slots));
    this.shards = rt.rings.length;
    this.hdr = rt.vnetHdr ? vnetHdrLen : 0;
    this.free = new Int32Array(rt.slots);
    for (let i = 0; i < rt.slots; i++) this.free[i] = rt.slots - 1 - i;
    this.nFree = rt.slots;
    this.owner = new Int8Array(rt.slots).fill(-1);
    this.admission = new PortAdmission(rt.slots);
    this.pending = new Int32Array(this.shards);
    this.touched = new Uint8Array(this.shards);
    for (let p = 0; p < MAX_PORTS; p++) this.polls.push(null);
    if (engine === 'uring') this.startUring();
  }

  private startUring(): void {
    const n = this.native;
    let entries = 1;
    while (entries < this.rt.slots) entries <<= 1;
    // The kernel reads into buf + slot*slotSize; the arenas after the slots are never provided.
    this.uring = n.uringReaderOpen(this.buf, this.rt.slotSize, entries);
    this.provideFree();
    const efd = n.uringReaderEventFd(this.uring!);
    this.uringPoll = n.pollStart(efd, (status: number) => {
      if (status < 0) return;
      this.reapUring();
    });
  }

  /** Starts reading from `fd` as port `port` (the fd must be non-blocking). */
  addPort(port: number, fd: number): void {
    if (this.polls[port] !== null) throw new InternalError(`io: port ${port} is already attached`);
    Atomics.store(this.portFd, port, fd);
    if (this.engine === 'uring') {
      this.native.uringReaderAdd(this.uring!, fd, port);
      this.polls[port] = this.uringPoll; // marks the port attached
      return;
    }
    // underlay hook: UDP GRO needs recvmmsg's control messages (this engine, not io_uring's reads)
    if (port === UNDERLAY_PORT && this.underlay !== null) this.underlay.enableGro();
    const onEvent = (status: number): void => {
      if (status < 0) return;
      this.readPort(port, fd);
    };
    this.polls[port] = this.native.pollStart(fd, onEvent);
  }

  /** Stops reading from port `port` and stops workers writing to it. */
  removePort(port: number): void {
    const h = this.polls[port];
    if (h && this.engine === 'uring') this.native.uringReaderRemove(this.uring!, port);
    else if (h && port === UNDERLAY_PORT && this.underlayTimer !== null) {
      clearTimeout(this.underlayTimer); // paused: its poll is stopped already
      this.underlayTimer = null;
    } else if (h) this.native.pollStop(h);
    this.polls[port] = null;
    Atomics.store(this.portFd, port, -1);
  }

  ports(): number[] {
    const out: number[] = [];
    for (let p = 0; p < MAX_PORTS; p++) if (this.polls[p] !== null) out.push(p);
    return out;
  }

  /** Slots not held by a shard (free here or waiting in the kernel's buffer ring). */
  get freeSlots(): number {
    return this.nFree + this.provided;
  }

  /** Takes back the slots workers have finished with. */
  reclaim(): void {
    const from = this.nFree;
    for (let k = 0; k < this.shards; k++) this.nFree = (this.rings[k] as ShardRing).reclaim(this.free, this.nFree, this.owner);
    for (let i = from; i < this.nFree; i++) this.admission.freed(this.free[i] as number);
  }

  /** Reclaims returned slots and, with io_uring, hands every free slot to the kernel. */
  refill(): void {
    if (this.engine === 'uring') this.provideFree();
    else this.reclaim();
  }

  /** Reclaims, then (uring) hands every free slot to the kernel. */
  private provideFree(): void {
    this.reclaim();
    if (this.nFree === 0) return;
    this.native.uringReaderProvide(this.uring!, this.free, 0, this.nFree);
    this.provided += this.nFree;
    this.nFree = 0;
  }

  private reapUring(): void {
    const sc = this.scratch;
    for (let round = 0; round < READ_ROUNDS; round++) {
      const got = this.native.uringReaderReap(this.uring!, sc, this.scratchLen, this.scratchPort, REAP_BATCH, this.errStats);
      this.stats[IO_READ_CALLS]++;
      if (this.errStats[0] !== 0) {
        this.stats[IO_READ_ERRORS] += this.errStats[0] as number;
        this.errStats[0] = 0;
      }
      if (got > 0) {
        this.provided -= got;
        this.stats[IO_PACKETS_READ] += got;
        this.dispatch(got, -1, sc, this.scratchLen, true);
      }
      this.provideFree();
      if (got < REAP_BATCH) break;
    }
    if (this.provided === 0) this.scheduleStarved();
  }

  /** No buffer in the kernel: nothing will complete, so poll for returned slots. */
  private scheduleStarved(): void {
    if (this.starvedTimer !== null) return;
    this.stats[IO_SLAB_EXHAUSTED]++;
    this.starvedTimer = setTimeout(() => {
      this.starvedTimer = null;
      this.provideFree();
      if (this.provided === 0) this.scheduleStarved();
    }, STARVED_RETRY_MS);
  }

  private readPort(port: number, fd: number): void {
    const slotSize = this.rt.slotSize;
    const sc = this.scratch;
    for (let round = 0; round < READ_ROUNDS; round++) {
      this.reclaim();
      let want = this.nFree < MAX_BATCH ? this.nFree : MAX_BATCH;
      if (want === 0) {
        this.stats[IO_SLAB_EXHAUSTED]++;
        return;
      }
      const gro = port === UNDERLAY_PORT && this.underlay !== null && this.underlay.gro;
      if (gro) {
        // underlay hook: each GRO buffer needs a second slot (the coalescer's arena)
        if (this.nFree < 2) {
          this.stats[IO_SLAB_EXHAUSTED]++;
          return;
        }
        if (want > this.nFree >> 1) want = this.nFree >> 1;
      }
      if (port === UNDERLAY_PORT) {
        // underlay hook: read no more than the shards can take (their rings' room below
        // MAX_RING_BACKLOG); the rest waits in the socket's receive buffer instead of being
        // dropped at the ring (230): one 64 KiB TSO packet of a remote endpoint arrives as
        // ~45 datagrams, a burst the ring bound (in packets) was not sized for.
        const room = this.underlayRoom();
        if (room <= 0) {
          this.pauseUnderlay(port, fd);
          return;
        }
        if (want > room) want = room;
      }
      for (let i = 0; i < want; i++) sc[i] = this.free[--this.nFree] as number;
      let got = 0;
      try {
        // underlay hook: the VXLAN socket is read with one recvmmsg per batch (a datagram too
        // long for a slot gets length 0: decapSlot drops it, counted); with GRO, the segment
        // size of each buffer goes to groSize
        got = port === UNDERLAY_PORT
          ? this.native.udpRecvBatch(fd, this.buf, slotSize, sc, 0, want, this.lens, 0, slotSize - UNDERLAY_SLOT_TRAILER, undefined, gro ? this.groSize : undefined)
          : this.native.readBatchSlots(fd, this.buf, slotSize, sc, 0, want, this.lens);
      } catch {
        got = 0; // the device went away (detach in progress); the control thread reports it
      }
      this.stats[IO_READ_CALLS]++;
      for (let i = got; i < want; i++) this.free[this.nFree++] = sc[i] as number;
      if (got === 0) break;
      this.stats[IO_PACKETS_READ] += got;
      if (gro) this.dispatchGro(got, port);
      else {
        for (let i = 0; i < got; i++) this.scratchLen[i] = this.lens[sc[i] as number] as number;
        this.dispatch(got, port, sc, this.scratchLen, true);
      }
      if (got < want) break;
    }
  }

  /** Packets every shard ring can still take below MAX_RING_BACKLOG (underlay reads). */
  private underlayRoom(): number {
    let most = 0;
    for (let k = 0; k < this.shards; k++) {
      const b = (this.rings[k] as ShardRing).backlog();
      if (b > most) most = b;
    }
    return MAX_RING_BACKLOG - most;
  }

  /** Stops polling the underlay socket for STARVED_RETRY_MS (its shards are full), then polls again. */
  private pauseUnderlay(port: number, fd: number): void {
    const h = this.polls[port];
    if (h === null || h === undefined || this.underlayTimer !== null) return;
    this.native.pollStop(h);
    this.underlayTimer = setTimeout(() => {
      this.underlayTimer = null;
      if (this.polls[port] !== h) return; // removed meanwhile
      this.polls[port] = null;
      this.addPort(port, fd);
    }, STARVED_RETRY_MS);
  }

  /**
   * underlay hook, UDP GRO: the buffers in scratch[0..got) become packets (UnderlayReader
   * decapGro: decapsulated, same-flow TCP coalesced), submitted in chunks of groSlot's size.
   */
  private dispatchGro(got: number, port: number): void {
    const u = this.underlay!;
    const sc = this.scratch;
    let c = 0;
    for (let i = 0; i < got; i++) {
      if (c + GRO_MAX_SEGS > REAP_BATCH) {
        this.dispatch(c, port, this.groSlot, this.groLen, false);
        c = 0;
      }
      const slot = sc[i] as number;
      c += u.decapGro(slot, this.lens[slot] as number, this.groSize[i] as number, this.free, this.nFree, this.groSlot, this.groLen, c);
      this.nFree = u.nFree;
    }
    if (c > 0) this.dispatch(c, port, this.groSlot, this.groLen, false);
  }

  /**
   * Submits slots sc[0..n) with lengths lens[0..n) to their shards. `port` >= 0: every
   * packet came from it; -1: scratchPort[i] says. decap: underlay datagrams still need
   * decapsulating (decapGro did it already).
   */
  private dispatch(n: number, port: number, sc: Int32Array, lens: Int32Array, decap: boolean): void {
    const slotSize = this.rt.slotSize;
    const shards = this.shards;
    const now = sharedNowMs();
    for (let k = 0; k < shards; k++) {
      const r = this.rings[k] as ShardRing;
      r.beginPush();
      this.pending[k] = r.backlog();
      this.touched[k] = 0;
    }
    for (let i = 0; i < n; i++) {
      const slot = sc[i] as number;
      const from = port >= 0 ? port : (this.scratchPort[i] as number);
      // underlay hook: a VXLAN datagram becomes its inner packet in place (src/runtime/underlay.ts)
      const len = decap && from === UNDERLAY_PORT && this.underlay !== null ? this.underlay.decapSlot(slot, lens[i] as number) : (lens[i] as number);
      this.lens[slot] = len;
      this.inPort[slot] = from;
      this.rxMs[slot] = now;
      const off = slot * slotSize + this.hdr;
      const k = shardOf(this.buf, off, len - this.hdr, shards);
      if (!this.admission.admit(from, this.pending[k] as number)) {
        this.free[this.nFree++] = slot;
        this.stats[IO_BACKLOG_DROPS]++;
        continue;
      }
      this.admission.took(slot, from);
      this.owner[slot] = k;
      (this.rings[k] as ShardRing).push(slot);
      this.pending[k] = (this.pending[k] as number) + 1;
      this.touched[k] = 1;
    }
    for (let k = 0; k < shards; k++) if (this.touched[k] !== 0) (this.rings[k] as ShardRing).publish();
  }

  stop(): void {
    for (let p = 0; p < MAX_PORTS; p++) if (this.polls[p] !== null) this.removePort(p);
    if (this.starvedTimer !== null) clearTimeout(this.starvedTimer);
    if (this.uringPoll !== null) this.native.pollStop(this.uringPoll);
    this.uringPoll = null;
    if (this.uring !== null) this.native.uringReaderClose(this.uring);
    this.uring = null;
  }
}
