/**
 * Publication of control-plane tables: one writer (the control thread), many readers
 * (the shard workers), readers never block and never see a torn entry.
 *
 * The scheme is "left-right": every published table keeps two copies of its arrays, side 0
 * and side 1. Readers read the *active* side; the writer changes the *inactive* side.
 *
 *   1. The writer applies a transaction to the inactive side, recording each word it writes
 *      (array id, index, value) in a write log.
 *   2. It flips ACTIVE, so new batches read the freshly written side.
 *   3. It waits until no reader slot still names the old side (readers hold a side for one
 *      batch: microseconds).
 *   4. It replays the write log on the old side, so both sides are equal again.
 *
 * Cost of a publish: O(words written), never O(table size). A reader's cost per batch: one
 * atomic load, one atomic store, one atomic load (enter) and one atomic store (leave); it
 * then reads plain typed arrays with no checks, and sees one revision for the whole batch.
 *
 * Why readers cannot see a side being written: a reader announces the side in its slot and
 * then re-reads ACTIVE; it only proceeds if ACTIVE still names that side. The writer flips
 * ACTIVE and only then scans the slots. With sequentially consistent atomics, either the
 * reader's announcement precedes the writer's scan (the writer waits for it), or the
 * reader's re-read follows the flip (the reader retries on the new side).
 *
 * Control block layout (Int32Array over its own SharedArrayBuffer):
 *
 *   index  width  field
 *   0      i32    ACTIVE       side readers must use (0 or 1)
 *   1      i32    REVISION     number of completed publishes (wraps at 2^31)
 *   2      i32    WAIT_WORD    always 0; the writer sleeps on it with a timeout while waiting
 *   3..7          reserved
 *   8+r    i32    READER[r]    -1 idle, else the side reader r is using (r < MAX_READERS)
 */
import { InternalError } from '../proto/errors.js';

export const MAX_READERS = 64;

const kActive = 0;
const kRevision = 1;
const kWaitWord = 2;
const kReaderBase = 8;
const kControlWords = kReaderBase + MAX_READERS;

/** How long the writer waits for a reader to leave the old side before it gives up (ms). */
export const READER_DRAIN_TIMEOUT_MS = 5000;

export class PublishControl {
  readonly ctrl: Int32Array;

  constructor(readonly sab: SharedArrayBuffer) {
    if (sab.byteLength < kControlWords * 4) throw new RangeError('publish control block too small');
    this.ctrl = new Int32Array(sab, 0, kControlWords);
  }

  static create(): PublishControl {
    const p = new PublishControl(new SharedArrayBuffer(kControlWords * 4));
    for (let r = 0; r < MAX_READERS; r++) p.ctrl[kReaderBase + r] = -1;
    return p;
  }

  // ---- reader side (hot path: once per batch) ----

  /** Claims a consistent side for reader slot `r`; returns 0 or 1. Never blocks. */
  enter(r: number): number {
    const c = this.ctrl;
    const slot = kReaderBase + r;
    for (;;) {
      const side = Atomics.load(c, kActive);
      Atomics.store(c, slot, side);
      if (Atomics.load(c, kActive) === side) return side;
    }
  }

  /** Releases reader slot `r` at the end of a batch. */
  leave(r: number): void {
    Atomics.store(this.ctrl, kReaderBase + r, -1);
  }

  /** Clears a reader slot whose thread died mid-batch (called by the supervisor). */
  resetReader(r: number): void {
    Atomics.store(this.ctrl, kReaderBase + r, -1);
  }

  revision(): number {
    return Atomics.load(this.ctrl, kRevision);
  }

  active(): number {
    return Atomics.load(this.ctrl, kActive);
  }

  // ---- writer side (control thread only) ----

  inactive(): number {
    return Atomics.load(this.ctrl, kActive) ^ 1;
  }

  /**
   * Makes the inactive side active and waits until every reader has left the old side.
   * Returns the new revision. Throws if a reader stays on the old side for longer than
   * READER_DRAIN_TIMEOUT_MS (a stuck or dead reader that was not reset).
   */
  flip(): number {
    const c = this.ctrl;
    const old = Atomics.load(c, kActive);
    Atomics.store(c, kActive, old ^ 1);
    const rev = (Atomics.add(c, kRevision, 1) + 1) | 0;
    const deadline = Date.now() + READER_DRAIN_TIMEOUT_MS;
    for (let r = 0; r < MAX_READERS; r++) {
      let spins = 0;
      while (Atomics.load(c, kReaderBase + r) === old) {
        if (++spins > 64) Atomics.wait(c, kWaitWord, 0, 0.05);
        if (Date.now() > deadline) {
          throw new InternalError(`publish: reader ${r} did not leave side ${old} within ${READER_DRAIN_TIMEOUT_MS} ms`);
        }
      }
    }
    return rev;
  }
}

/**
 * A write log over pairs of Uint32Arrays (side 0, side 1). Tables register their array
 * pairs once; a writer then reads and writes the inactive side through `get`/`set` and
 * calls `commit()` to publish. Only the control thread uses this class.
 */
export class WriteLog {
  private readonly pairs: [Uint32Array, Uint32Array][] = [];
  private ids = new Int32Array(1024);
  private idx = new Uint32Array(1024);
  private vals = new Uint32Array(1024);
  private n = 0;
  /** The side being written (the control block's inactive side). */
  private side: number;

  constructor(readonly control: PublishControl) {
    this.side = control.inactive();
  }

  /** Registers a pair of equally sized arrays; returns the id used with get/set. */
  register(side0: Uint32Array, side1: Uint32Array): number {
    if (side0.length !== side1.length) throw new InternalError('WriteLog.register: sides differ in length');
    this.pairs.push([side0, side1]);
    return this.pairs.length - 1;
  }

  /** The array of pair `id` on the side being written. */
  working(id: number): Uint32Array {
    return (this.pairs[id] as [Uint32Array, Uint32Array])[this.side] as Uint32Array;
  }

  get(id: number, i: number): number {
    return this.working(id)[i] as number;
  }

  set(id: number, i: number, v: number): void {
    const arr = this.working(id);
    if (i < 0 || i >= arr.length) throw new RangeError(`WriteLog.set: index ${i} outside array ${id}`);
    arr[i] = v;
    if (this.n === this.ids.length) this.grow();
    this.ids[this.n] = id;
    this.idx[this.n] = i;
    this.vals[this.n] = v >>> 0;
    this.n++;
  }

  /** Number of words written since the last commit. */
  get pending(): number {
    return this.n;
  }

  /** Publishes: flip sides, wait for readers, replay on the old side. Returns the revision. */
  commit(): number {
    try {
      return this.control.flip();
    } finally {
      // The side just written is now active (flip swaps before it waits, so this holds even
      // when the wait gave up on a dead reader): replay onto the side readers have left, so
      // both sides are equal again and the next transaction starts on a clean copy.
      const old = this.side ^ 1;
      for (let k = 0; k < this.n; k++) {
        const pair = this.pairs[this.ids[k] as number] as [Uint32Array, Uint32Array];
        (pair[old] as Uint32Array)[this.idx[k] as number] = this.vals[k] as number;
      }
      this.n = 0;
      this.side = this.control.inactive();
    }
  }

  private grow(): void {
    const cap = this.ids.length * 2;
    const ids = new Int32Array(cap);
    ids.set(this.ids);
    const idx = new Uint32Array(cap);
    idx.set(this.idx);
    const vals = new Uint32Array(cap);
    vals.set(this.vals);
    this.ids = ids;
    this.idx = idx;
    this.vals = vals;
  }
}

/** Allocates a pair of zeroed shared Uint32Arrays of `words` words. */
export function sharedPair(words: number): [Uint32Array, Uint32Array] {
  return [
    new Uint32Array(new SharedArrayBuffer(words * 4)),
    new Uint32Array(new SharedArrayBuffer(words * 4)),
  ];
}
