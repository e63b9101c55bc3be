/**
 * The shard ring: the one place where the protocol between the I/O thread (producer of
 * packets, owner of free slots) and a shard worker (consumer, transmitter) is written.
 *
 * Two single-producer/single-consumer rings share one Int32Array per shard:
 *   submit ring   I/O thread -> worker: slot indices of packets to process
 *   return ring   worker -> I/O thread: slot indices the worker has finished with
 * Both have SLOTS entries, so neither can overflow: at most SLOTS slots exist.
 *
 * Header words (Int32):
 *   0 HEAD        submit: next index the I/O thread writes (free-running)
 *   1 DONE        submit: next index the worker takes (free-running; advanced per packet so
 *                 that a crash knows exactly which packets were taken)
 *   2 SLEEPING    1 while the worker waits on HEAD (the I/O thread notifies only then)
 *   3 STOP        1: the worker returns after draining
 *   4 RET_HEAD    return: next index the worker writes
 *   5 RET_TAIL    return: next index the I/O thread reads
 *   6 ALIVE       incremented by the worker every loop, busy or idle (the supervisor's
 *                 heartbeat; an idle worker wakes every IDLE_WAIT_MS)
 *   7 GENERATION  incremented each time a shard loop starts
 *   8 FLUSH       incremented by the control thread to ask for a conntrack flush
 *   9 CURRENT     the slot whose packet the worker is processing, -1 between packets
 *  10 READY       the GENERATION whose loop is running (set once the worker is ready)
 *  16..16+SLOTS            submit entries
 *  16+SLOTS..16+2*SLOTS    return entries
 *
 * Slot ownership (who may touch a slot) moves only through this class:
 *   free (I/O thread) -push/publish-> submitted -take-> worker (pipeline, egress queue,
 *   transmit) -giveBack/flushReturns-> returned -reclaim-> free
 * The I/O thread also records the owner shard of every slot it pushes (`owner`), so that
 * after a worker dies `recover()` can account for every slot: still submitted (kept for
 * the next worker), still queued in the shard's egress queue (kept), the packet that was
 * being processed (dropped, counted), or anything else the dead worker held (freed).
 */

export const R_HEAD = 0;
export const R_DONE = 1;
export const R_SLEEPING = 2;
export const R_STOP = 3;
export const R_RET_HEAD = 4;
export const R_RET_TAIL = 5;
export const R_ALIVE = 6;
export const R_GENERATION = 7;
export const R_FLUSH = 8;
export const R_CURRENT = 9;
export const R_READY = 10;
export const R_ENTRIES = 16;

export function ringWords(slots: number): number {
  return R_ENTRIES + 2 * slots;
}

export function createRingBuffer(slots: number): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(ringWords(slots) * 4);
  const w = new Int32Array(sab);
  w[R_CURRENT] = -1;
  w[R_READY] = -1;
  return sab;
}

/** What a recovery did, for the log and the counters. */
export interface RecoveryReport {
  /** The packet the worker was processing when it died (dropped), or -1. */
  killer: number;
  /** Slots kept in the submit ring for the next worker. */
  resubmitted: number;
  /** Slots kept in the egress queue. */
  queued: number;
  /** Slots the dead worker held otherwise (being written, half-queued): freed. */
  freed: number;
}

export class ShardRing {
  readonly w: Int32Array;
  readonly slots: number;
  private readonly mask: number;
  private readonly retBase: number;
  /** Producer: HEAD not yet published. Consumer: next return index not yet published. */
  private pend = 0;

  constructor(
    readonly sab: SharedArrayBuffer,
    slots: number,
  ) {
    if ((slots & (slots - 1)) !== 0) throw new RangeError(`ring: slots ${slots} is not a power of two`);
    this.w = new Int32Array(sab);
    if (this.w.length < ringWords(slots)) throw new RangeError(`ring: buffer holds ${this.w.length} words, want ${ringWords(slots)}`);
    this.slots = slots;
    this.mask = slots - 1;
    this.retBase = R_ENTRIES + slots;
  }

  // ------------------------------------------------------------------ I/O thread side

  /** Starts a round of push(); publish() makes them visible. */
  beginPush(): void {
    this.pend = Atomics.load(this.w, R_HEAD) | 0;
  }

  push(slot: number): void {
    this.w[R_ENTRIES + (this.pend & this.mask)] = slot;
    this.pend = (this.pend + 1) | 0;
  }

  /** Publishes the pushed entries and wakes the worker if it sleeps. */
  publish(): void {
    const w = this.w;
    if (this.pend === (Atomics.load(w, R_HEAD) | 0)) return;
    Atomics.store(w, R_HEAD, this.pend);
    if (Atomics.load(w, R_SLEEPING) !== 0) Atomics.notify(w, R_HEAD, 1);
  }

  /** Packets submitted and not yet taken by the worker. */
  backlog(): number {
    return (Atomics.load(this.w, R_HEAD) - Atomics.load(this.w, R_DONE)) | 0;
  }

  /** Moves every returned slot to free[nFree..]; returns the new nFree. */
  reclaim(free: Int32Array, nFree: number, owner: Int8Array | null): number {
    const w = this.w;
    const head = Atomics.load(w, R_RET_HEAD) | 0;
    let tail = Atomics.load(w, R_RET_TAIL) | 0;
    if (head === tail) return nFree;
    while (tail !== head) {
      const s = w[this.retBase + (tail & this.mask)] as number;
      if (owner !== null) owner[s] = -1;
      free[nFree++] = s;
      tail = (tail + 1) | 0;
    }
    Atomics.store(w, R_RET_TAIL, tail);
    return nFree;
  }

  /** Asks the worker to return after draining, and wakes it. */
  stop(): void {
    Atomics.store(this.w, R_STOP, 1);
    Atomics.notify(this.w, R_HEAD);
  }

  // ------------------------------------------------------------------ worker side

  /** Called once when a shard loop starts; returns its generation. */
  start(): number {
    const w = this.w;
    const g = (Atomics.add(w, R_GENERATION, 1) + 1) | 0;
    w[R_CURRENT] = -1;
    this.pend = Atomics.load(w, R_RET_HEAD) | 0;
    Atomics.store(w, R_READY, g);
    return g;
  }

  heartbeat(): void {
    Atomics.add(this.w, R_ALIVE, 1);
  }

  /** Packets waiting to be taken. */
  available(): number {
    return (Atomics.load(this.w, R_HEAD) - (this.w[R_DONE] as number)) | 0;
  }

  /**
   * Takes the next submitted slot and marks it as being processed (CURRENT). The caller
   * must call `processed()` once the packet is queued or dropped.
   */
  take(): number {
    const w = this.w;
    const done = w[R_DONE] as number;
    const s = w[R_ENTRIES + (done & this.mask)] as number;
    w[R_CURRENT] = s;
    return s;
  }

  /** The packet taken last is accounted for (queued or handed back): advance DONE. */
  processed(): void {
    const w = this.w;
    w[R_DONE] = ((w[R_DONE] as number) + 1) | 0;
    w[R_CURRENT] = -1;
  }

  /** Makes DONE visible to other threads (once per batch). */
  publishDone(): void {
    Atomics.store(this.w, R_DONE, this.w[R_DONE] as number);
  }

  /** Hands a slot back to the I/O thread (visible after flushReturns()). */
  giveBack(slot: number): void {
    this.w[this.retBase + (this.pend & this.mask)] = slot;
    this.pend = (this.pend + 1) | 0;
  }

  flushReturns(): void {
    Atomics.store(this.w, R_RET_HEAD, this.pend);
  }

  stopRequested(): boolean {
    return Atomics.load(this.w, R_STOP) !== 0;
  }

  flushCounter(): number {
    return Atomics.load(this.w, R_FLUSH);
  }

  /** Sleeps until HEAD moves past `head` or timeoutMs passes; true when it timed out. */
  sleep(timeoutMs: number): boolean {
    const w = this.w;
    const head = Atomics.load(w, R_HEAD) | 0;
    if (head !== (w[R_DONE] as number)) return false;
    Atomics.store(w, R_SLEEPING, 1);
    let timedOut = false;
    if ((Atomics.load(w, R_HEAD) | 0) === head && Atomics.load(w, R_STOP) === 0) {
      timedOut = Atomics.wait(w, R_HEAD, head, timeoutMs) === 'timed-out';
    }
    Atomics.store(w, R_SLEEPING, 0);
    return timedOut;
  }

  // ------------------------------------------------------------------ supervisor side

  /**
   * After the worker of this shard died (no thread touches the ring now) and before the
   * next one starts: accounts for every slot the I/O thread gave this shard. `owner[s]`
   * is this shard's index `k` for those slots; `queued[s]` (from EgressQueues.repair())
   * is 1 for slots still in the egress queue. Freed slots are appended to free[] (the
   * new nFree is in the report's `freed` plus the caller's count). The packet being
   * processed when the worker died, and only it, is dropped.
   */
  recover(k: number, owner: Int8Array, queued: Uint8Array, free: Int32Array, nFree: number): { nFree: number; report: RecoveryReport } {
    const w = this.w;
    // Returns the dead worker had published are ordinary returns.
    nFree = this.reclaim(free, nFree, owner);
    // Returns it had written but not published: those slots are still owned by k and not
    // in the ring or the queue, so the scan below frees them.
    const head = Atomics.load(w, R_HEAD) | 0;
    let done = w[R_DONE] as number;
    const current = w[R_CURRENT] as number;
    let killer = -1;
    // A packet taken and queued just before the crash, but DONE not yet advanced.
    while (done !== head) {
      const s = w[R_ENTRIES + (done & this.mask)] as number;
      if (s >= 0 && s < this.slots && queued[s] !== 0) {
        done = (done + 1) | 0;
        continue;
      }
      break;
    }
    if (current >= 0 && done !== head && (w[R_ENTRIES + (done & this.mask)] as number) === current && queued[current] === 0) {
      killer = current;
      done = (done + 1) | 0;
    }
    w[R_DONE] = done;
    w[R_CURRENT] = -1;
    Atomics.store(w, R_SLEEPING, 0);
    const inRing = new Uint8Array(this.slots);
    let resubmitted = 0;
    for (let i = done; i !== head; i = (i + 1) | 0) {
      inRing[w[R_ENTRIES + (i & this.mask)] as number] = 1;
      resubmitted++;
    }
    let q = 0;
    let freed = 0;
    for (let s = 0; s < this.slots; s++) {
      if (owner[s] !== k) continue;
      if (inRing[s] !== 0) continue;
      if (queued[s] !== 0) {
        q++;
        continue;
      }
      owner[s] = -1;
      free[nFree++] = s;
      if (s !== killer) freed++;
    }
    // The return ring restarts empty for the next worker.
    Atomics.store(w, R_RET_TAIL, Atomics.load(w, R_RET_HEAD));
    return { nFree, report: { killer, resubmitted, queued: q, freed } };
  }
}
