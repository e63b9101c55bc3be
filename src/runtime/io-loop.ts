/**
 * The I/O loop (main thread): reads packets from every port's TUN fd in batches into free
 * slab slots, hashes each one to its shard, and appends the slots to that shard's ring.
 * Shard workers run the pipeline and transmit; they hand the slots back on a return ring
 * that this loop drains before each read.
 *
 * Change from the first plan (ARCHITECTURE.md had the main thread transmit too): workers
 * write to the output TUN fds themselves. A TUN write is one syscall per packet either way;
 * doing it in the worker removes a second thread hop per batch and keeps the main thread to
 * reads, which is what saturates first on a 2-core machine.
 *
 * Backpressure: when no slot is free the loop does not read; the kernel's TUN queue fills
 * and the kernel counts the drop (tx_dropped on the endpoint's device). The loop counts
 * how often it ran out of slots (stats[IO_SLAB_EXHAUSTED], exported as
 * tunswitch_slab_exhausted_total).
 */
import { loadBinding, type PollHandle, type TunBinding } from '../io/native.js';
import { MAX_PORTS } from '../tables/tableset.js';
import {
  MAX_BATCH,
  R_ENTRIES,
  R_HEAD,
  R_RET_HEAD,
  R_RET_TAIL,
  R_SLEEPING,
  IO_PACKETS_READ,
  IO_READ_CALLS,
  IO_SLAB_EXHAUSTED,
  IO_STATS_SLOTS,
  shardOf,
  type RuntimeShared,
} from './shared.js';

/** Read rounds per readiness event before yielding to other ports (fairness). */
const READ_ROUNDS = 4;

export class IoLoop {
  readonly native: TunBinding;
  private readonly buf: Uint8Array;
  private readonly lens: Int32Array;
  private readonly inPort: Int32Array;
  private readonly portFd: Int32Array;
  private readonly rings: Int32Array[];
  private readonly shards: number;
  private readonly mask: number;
  private readonly hdr: number;
  private readonly free: Int32Array;
  private nFree: number;
  private readonly scratch = new Int32Array(MAX_BATCH);
  private readonly polls: (PollHandle | null)[] = [];
  /** Pending HEAD per shard during one read round. */
  private readonly pendingHead: Int32Array;
  private readonly touched: Uint8Array;

  /** packetsRead, readCalls, slabExhausted: shared so the control thread can export them. */
  readonly stats: Float64Array;

  constructor(readonly rt: RuntimeShared, vnetHdrLen: number) {
    this.native = loadBinding();
    this.stats = new Float64Array(rt.ioStats ?? new SharedArrayBuffer(IO_STATS_SLOTS * 8));
    this.buf = new Uint8Array(rt.slab);
    this.lens = new Int32Array(rt.lens);
    this.inPort = new Int32Array(rt.inPort);
    this.portFd = new Int32Array(rt.portFd);
    this.rings = rt.rings.map((s) => new Int32Array(s));
    this.shards = rt.rings.length;
    this.mask = rt.slots - 1;
    this.hdr = rt.vnetHdr ? vnetHdrLen : 0;
    this.free = new Int32Array(rt.slots);
    for (let i = 0; i < rt.slots; i++) this.free[i] = rt.slots - 1 - i;
    this.nFree = rt.slots;
    this.pendingHead = new Int32Array(this.shards);
    this.touched = new Uint8Array(this.shards);
    for (let p = 0; p < MAX_PORTS; p++) this.polls.push(null);
  }

  /** Starts reading from `fd` as port `port` (the fd must be non-blocking). */
  addPort(port: number, fd: number): void {
    if (this.polls[port] !== null) throw new Error(`io: port ${port} is already attached`);
    Atomics.store(this.portFd, port, fd);
    const onEvent = (status: number): void => {
      if (status < 0) return;
      this.readPort(port, fd);
    };
    this.polls[port] = this.native.pollStart(fd, onEvent);
  }

  /** Stops reading from port `port` and stops workers writing to it. */
  removePort(port: number): void {
    const h = this.polls[port];
    if (h) this.native.pollStop(h);
    this.polls[port] = null;
    Atomics.store(this.portFd, port, -1);
  }

  ports(): number[] {
    const out: number[] = [];
    for (let p = 0; p < MAX_PORTS; p++) if (this.polls[p] !== null) out.push(p);
    return out;
  }

  get freeSlots(): number {
    return this.nFree;
  }

  /** Takes back the slots workers have finished with. */
  reclaim(): void {
    const slots = this.rt.slots;
    const retBase = R_ENTRIES + slots;
    for (let k = 0; k < this.shards; k++) {
      const ring = this.rings[k] as Int32Array;
      const head = Atomics.load(ring, R_RET_HEAD) | 0;
      let tail = Atomics.load(ring, R_RET_TAIL) | 0;
      if (head === tail) continue;
      while (tail !== head) {
        this.free[this.nFree++] = ring[retBase + (tail & this.mask)] as number;
        tail = (tail + 1) | 0;
      }
      Atomics.store(ring, R_RET_TAIL, tail);
    }
  }

  private readPort(port: number, fd: number): void {
    const slotSize = this.rt.slotSize;
    const shards = this.shards;
    for (let round = 0; round < READ_ROUNDS; round++) {
      this.reclaim();
      let want = this.nFree < MAX_BATCH ? this.nFree : MAX_BATCH;
      if (want === 0) {
        this.stats[IO_SLAB_EXHAUSTED]++;
        return;
      }
      const sc = this.scratch;
      for (let i = 0; i < want; i++) sc[i] = this.free[--this.nFree] as number;
      let got = 0;
      try {
        got = this.native.readBatchSlots(fd, this.buf, slotSize, sc, 0, want, this.lens);
      } catch {
        got = 0; // the device went away (detach in progress); the control thread reports it
        want = want | 0;
      }
      this.stats[IO_READ_CALLS]++;
      for (let i = got; i < want; i++) this.free[this.nFree++] = sc[i] as number;
      if (got === 0) break;
      this.stats[IO_PACKETS_READ] += got;

      for (let k = 0; k < shards; k++) {
        this.pendingHead[k] = Atomics.load(this.rings[k] as Int32Array, R_HEAD) | 0;
        this.touched[k] = 0;
      }
      for (let i = 0; i < got; i++) {
        const slot = sc[i] as number;
        this.inPort[slot] = port;
        const off = slot * slotSize + this.hdr;
        const k = shardOf(this.buf, off, (this.lens[slot] as number) - this.hdr, shards);
        const ring = this.rings[k] as Int32Array;
        const h = this.pendingHead[k] as number;
        ring[R_ENTRIES + (h & this.mask)] = slot;
        this.pendingHead[k] = (h + 1) | 0;
        this.touched[k] = 1;
      }
      for (let k = 0; k < shards; k++) {
        if (this.touched[k] === 0) continue;
        const ring = this.rings[k] as Int32Array;
        Atomics.store(ring, R_HEAD, this.pendingHead[k] as number);
        if (Atomics.load(ring, R_SLEEPING) !== 0) Atomics.notify(ring, R_HEAD, 1);
      }
      if (got < want) break;
    }
  }

  stop(): void {
    for (let p = 0; p < MAX_PORTS; p++) if (this.polls[p] !== null) this.removePort(p);
  }
}
