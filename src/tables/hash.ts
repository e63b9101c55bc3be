/**
 * SharedHash: a published open-addressing hash table (fixed-width u32 keys and values) in a
 * pair of shared Uint32Arrays, written through a WriteLog (see publish.ts) and read lock-free.
 *
 * Slot layout (stride = 1 + K + V words):
 *
 *   word       width  field
 *   0          u32    USED   0 = empty, 1 = occupied
 *   1..K       u32    KEY    the key words, compared in full
 *   1+K..K+V   u32    VALUE  the value words
 *
 * Linear probing with backward-shift deletion (no tombstones), so lookups stop at the first
 * empty slot and a table never degrades after churn. Deletions only ever happen on the
 * inactive side, so readers never observe a slot mid-move. Capacity is a power of two and
 * fixed; the writer refuses to fill beyond 7/8 (a control-plane error, not a packet drop).
 *
 * Readers: write the key into `key` (a preallocated Uint32Array), call `find()`; it returns
 * the slot's base word index or -1, and `value(base, i)` reads value word i. No allocation.
 */
import type { WriteLog } from './publish.js';

/** Mixes key words into a 32-bit hash. The same on every thread. */
export function mixWords(a: Uint32Array, n: number): number {
  let h = 0x9e3779b9 ^ n;
  for (let i = 0; i < n; i++) {
    h = Math.imul(h ^ (a[i] as number), 0x85ebca6b);
    h ^= h >>> 13;
  }
  h = Math.imul(h ^ (h >>> 16), 0xc2b2ae35);
  return (h ^ (h >>> 15)) >>> 0;
}

export class SharedHash {
  readonly stride: number;
  readonly mask: number;
  /** Scratch key for lookups: fill it, then call find(). */
  readonly key: Uint32Array;
  /** The side being read (set by useSide once per batch). */
  cur: Uint32Array;

  constructor(
    readonly keyWords: number,
    readonly valueWords: number,
    readonly capacity: number,
    readonly sides: [Uint32Array, Uint32Array],
  ) {
    if (capacity < 2 || (capacity & (capacity - 1)) !== 0) {
      throw new RangeError(`SharedHash: capacity ${capacity} is not a power of two`);
    }
    this.stride = 1 + keyWords + valueWords;
    if (sides[0].length < capacity * this.stride) throw new RangeError('SharedHash: arrays too small');
    this.mask = capacity - 1;
    this.key = new Uint32Array(keyWords);
    this.cur = sides[0];
  }

  static words(keyWords: number, valueWords: number, capacity: number): number {
    return capacity * (1 + keyWords + valueWords);
  }

  useSide(side: number): void {
    this.cur = side === 0 ? this.sides[0] : this.sides[1];
  }

  /** Finds `key` on the current side; returns the slot base index or -1. */
  find(): number {
    const t = this.cur;
    const k = this.key;
    const kw = this.keyWords;
    const stride = this.stride;
    let i = mixWords(k, kw) & this.mask;
    for (let probes = 0; probes <= this.mask; probes++) {
      const base = i * stride;
      if (t[base] === 0) return -1;
      let eq = true;
      for (let w = 0; w < kw; w++) {
        if (t[base + 1 + w] !== k[w]) {
          eq = false;
          break;
        }
      }
      if (eq) return base;
      i = (i + 1) & this.mask;
    }
    return -1;
  }

  value(base: number, i: number): number {
    return this.cur[base + 1 + this.keyWords + i] as number;
  }
}

/**
 * The writer's handle on a SharedHash: reads and writes the inactive side through the log.
 * Keys and values are passed as plain arrays (control plane, allocation is fine here).
 */
export class SharedHashWriter {
  private readonly id: number;
  private used = 0;

  constructor(
    readonly table: SharedHash,
    readonly log: WriteLog,
  ) {
    this.id = log.register(table.sides[0], table.sides[1]);
    // Count what is already there (a writer attached to existing tables).
    const t = log.working(this.id);
    for (let s = 0; s < table.capacity; s++) if (t[s * table.stride] !== 0) this.used++;
  }

  get size(): number {
    return this.used;
  }

  /** The most entries the writer stores: 7/8 of the capacity (an empty slot ends every probe). */
  get limit(): number {
    return Math.floor((this.table.capacity * 7) / 8);
  }

  private home(t: Uint32Array, base: number): number {
    const kw = this.table.keyWords;
    const k = this.table.key;
    for (let w = 0; w < kw; w++) k[w] = t[base + 1 + w] as number;
    return mixWords(k, kw) & this.table.mask;
  }

  private findSlot(key: ArrayLike<number>): { slot: number; found: boolean } {
    const tb = this.table;
    const t = this.log.working(this.id);
    const k = tb.key;
    for (let w = 0; w < tb.keyWords; w++) k[w] = (key[w] as number) >>> 0;
    let i = mixWords(k, tb.keyWords) & tb.mask;
    for (let probes = 0; probes <= tb.mask; probes++) {
      const base = i * tb.stride;
      if (t[base] === 0) return { slot: i, found: false };
      let eq = true;
      for (let w = 0; w < tb.keyWords; w++) {
        if (t[base + 1 + w] !== (key[w] as number) >>> 0) {
          eq = false;
          break;
        }
      }
      if (eq) return { slot: i, found: true };
      i = (i + 1) & tb.mask;
    }
    return { slot: -1, found: false };
  }

  /** Reads the value of `key` on the working side, or undefined. */
  get(key: ArrayLike<number>): number[] | undefined {
    const { slot, found } = this.findSlot(key);
    if (!found) return undefined;
    const tb = this.table;
    const t = this.log.working(this.id);
    const base = slot * tb.stride + 1 + tb.keyWords;
    const out: number[] = [];
    for (let v = 0; v < tb.valueWords; v++) out.push(t[base + v] as number);
    return out;
  }

  /** Inserts or replaces. Throws when the table would pass 7/8 full. */
  set(key: ArrayLike<number>, value: ArrayLike<number>): void {
    const tb = this.table;
    const { slot, found } = this.findSlot(key);
    if (!found && (slot < 0 || this.used + 1 > this.limit)) {
      throw new RangeError(`SharedHash: table full (capacity ${tb.capacity})`);
    }
    const base = slot * tb.stride;
    const t = this.log.working(this.id);
    for (let v = 0; v < tb.valueWords; v++) {
      const val = (value[v] as number) >>> 0;
      if (!found || t[base + 1 + tb.keyWords + v] !== val) this.log.set(this.id, base + 1 + tb.keyWords + v, val);
    }
    if (!found) {
      for (let w = 0; w < tb.keyWords; w++) this.log.set(this.id, base + 1 + w, (key[w] as number) >>> 0);
      // USED last: on the working side order does not matter (no reader), but keep it tidy.
      this.log.set(this.id, base, 1);
      this.used++;
    }
  }

  /** Deletes `key`; returns whether it was there. Backward-shift deletion. */
  delete(key: ArrayLike<number>): boolean {
    const tb = this.table;
    const { slot, found } = this.findSlot(key);
    if (!found) return false;
    const t = this.log.working(this.id);
    const stride = tb.stride;
    let hole = slot;
    let j = slot;
    for (;;) {
      j = (j + 1) & tb.mask;
      const jb = j * stride;
      if (t[jb] === 0) break;
      const h = this.home(t, jb);
      // Can the entry at j move back into the hole? Only if its home is not in (hole, j].
      const inRange = hole <= j ? h > hole && h <= j : h > hole || h <= j;
      if (inRange) continue;
      const hb = hole * stride;
      for (let w = 0; w < stride; w++) {
        if (t[hb + w] !== t[jb + w]) this.log.set(this.id, hb + w, t[jb + w] as number);
      }
      hole = j;
    }
    const hb = hole * stride;
    for (let w = 0; w < stride; w++) if (t[hb + w] !== 0) this.log.set(this.id, hb + w, 0);
    this.used--;
    return true;
  }

  /** Every (key, value) on the working side (control plane listing). */
  *entries(): Generator<{ key: number[]; value: number[] }> {
    const tb = this.table;
    const t = this.log.working(this.id);
    for (let s = 0; s < tb.capacity; s++) {
      const base = s * tb.stride;
      if (t[base] === 0) continue;
      const key: number[] = [];
      const value: number[] = [];
      for (let w = 0; w < tb.keyWords; w++) key.push(t[base + 1 + w] as number);
      for (let v = 0; v < tb.valueWords; v++) value.push(t[base + 1 + tb.keyWords + v] as number);
      yield { key, value };
    }
  }
}
