/**
 * Per-shard packet capture ring, in shared memory (for `tunswitch capture`), shared by up to
 * MAX_CAPTURES captures that run at once.
 *
 * One ring per shard. Single producer: the shard worker, which copies the packets the
 * pipeline has just decided on. Single consumer: the control thread, which arms capture
 * slots, drains the ring every few milliseconds and hands each record to every capture whose
 * slot it matched (src/control/capture.ts). A packet that several captures want is copied
 * once, with the largest snap length among them.
 *
 * Cost when nobody captures: one Atomics.load of ARMED per batch (CaptureRing.beginBatch).
 * When armed, each packet costs two compares per active slot, and a packet that any slot
 * matches one byte copy of at most the largest snap length. A full ring loses the *record*
 * (counted in LOST, and in the LOST word of every slot that matched); the packet itself is
 * never held up or dropped.
 *
 * Arming protocol (consumer): write slot i's FILTER_EP, VERDICT_MASK and SNAPLEN with plain
 * stores while bit i of ARMED is clear, then Atomics.store(ARMED, gen << 8 | active slots)
 * with a new generation. The producer reads ARMED once per batch with Atomics.load (which
 * orders the plain loads after it) and caches the filters of the active slots for that
 * batch. Freeing slot i is a store of ARMED without bit i (and a new generation). A batch
 * that began under an older ARMED finishes with the filters it cached, so a few records may
 * land after a slot was freed; each record carries the generation it was taken under and the
 * slots it matched, and the consumer gives it to a slot's capture only when that capture was
 * armed at or before the record's generation (armedAtOrBefore).
 *
 * Ring header (Int32Array, HEADER_WORDS = 64 words, 256 bytes):
 *   0  ARMED         0: no capture; else generation (1..2^23-1) << 8 | bit i set per armed slot
 *   1  HEAD          next record the producer writes (free-running u32)
 *   2  TAIL          next record the consumer reads (free-running u32)
 *   3  LOST          records lost because the ring was full (free-running u32)
 *   4  CAPACITY      number of slots (power of two), fixed at creation
 *   5  SLOT_DATA     packet bytes per slot, fixed at creation (multiple of 4)
 *   6..15           reserved (0)
 *   16 + 4*i        capture slot i (i < MAX_CAPTURES = 8), four words:
 *     +0 FILTER_EP     endpoint index to capture (the packet's source or destination), -1 any
 *     +1 VERDICT_MASK  bit 0 forwarded packets, bit 1 dropped packets
 *     +2 SNAPLEN       bytes of each packet to keep (1..SLOT_DATA)
 *     +3 LOST          records this slot matched that were lost (ring full; free-running u32)
 *   48..63          reserved (0)
 *
 * Slot k starts at byte HEADER_BYTES + k * (RECORD_HEADER_BYTES + SLOT_DATA):
 *   record header, u32 words (RECORD_HEADER_BYTES = 32):
 *     0  TAG         generation << 8 | the capture slots this packet matched (bits 0..7)
 *     1  TS_SEC      capture time, unix seconds
 *     2  TS_USEC     microseconds within the second
 *     3  ORIG_LEN    IP packet length (bytes, without the virtio-net header)
 *     4  CAP_LEN     bytes stored in the slot: min(ORIG_LEN, largest SNAPLEN of the matches)
 *     5  VERDICT     bit 8: 1 dropped, 0 forwarded; bits 0..7: the drop reason (positive
 *                    code from src/datapath/drop.ts), 0 when forwarded
 *     6  SRC_EP      source endpoint index, 0xffffffff none (host port, not yet known)
 *     7  DST_EP      destination endpoint index, 0xffffffff none (not local, not yet known)
 *   then SLOT_DATA bytes: the IP packet's first CAP_LEN bytes.
 *
 * What is recorded is the packet as the switch saw it *after* the pipeline: a forwarded
 * packet already has its TTL / hop limit decremented (and the IPv4 header checksum patched).
 * With offload on, GSO super-packets can be longer than SNAPLEN (kept truncated, ORIG_LEN
 * says the real size) and TCP/UDP checksums may be partial (the kernel fills them later).
 */
import { InternalError } from '../proto/errors.js';

export const HEADER_WORDS = 64;
export const HEADER_BYTES = HEADER_WORDS * 4;
export const RECORD_HEADER_WORDS = 8;
export const RECORD_HEADER_BYTES = RECORD_HEADER_WORDS * 4;
/** Captures that can run at once (bits 0..7 of ARMED and of a record's TAG). */
export const MAX_CAPTURES = 8;
export const SLOT_BITS = (1 << MAX_CAPTURES) - 1;
/** Generations run 1..GENERATION_MAX and wrap to 1 (23 bits keep ARMED a positive int32). */
export const GENERATION_MAX = (1 << 23) - 1;

// Header word indices.
export const kArmed = 0;
export const kHead = 1;
export const kTail = 2;
export const kLost = 3;
export const kCapacity = 4;
export const kSlotData = 5;
/** First word of capture slot i: kSlotBase + i * kSlotWords. */
export const kSlotBase = 16;
export const kSlotWords = 4;
// Word offsets within a capture slot.
export const kFilterEp = 0;
export const kVerdictMask = 1;
export const kSnaplen = 2;
export const kSlotLost = 3;

// Record word indices (relative to the slot's first word).
export const CR_TAG = 0;
export const CR_TS_SEC = 1;
export const CR_TS_USEC = 2;
export const CR_ORIG_LEN = 3;
export const CR_CAP_LEN = 4;
export const CR_VERDICT = 5;
export const CR_SRC_EP = 6;
export const CR_DST_EP = 7;

export const VERDICT_FORWARDED_BIT = 1;
export const VERDICT_DROPPED_BIT = 2;
export const VERDICT_ANY = VERDICT_FORWARDED_BIT | VERDICT_DROPPED_BIT;
/** CR_VERDICT bit set for a dropped packet. */
export const CR_DROPPED = 0x100;
export const NO_EP_INDEX = 0xffffffff;

/** The ARMED word for generation `gen` and the set of armed slots (0 when none is armed). */
export function armedWord(gen: number, slots: number): number {
  return (slots & SLOT_BITS) === 0 ? 0 : ((gen << 8) | (slots & SLOT_BITS));
}

/** The generation of an ARMED word or a record's TAG. */
export function tagGeneration(tag: number): number {
  return (tag >>> 8) & GENERATION_MAX;
}

/**
 * True when generation `g` (a record's) is `armedGen` (a capture's) or later, on the
 * wrapping 23-bit counter: the record was taken while that capture held its slot.
 */
export function armedAtOrBefore(armedGen: number, g: number): boolean {
  return ((g - armedGen) & GENERATION_MAX) < (GENERATION_MAX + 1) / 2;
}

/**
 * Default slots per shard. At a 20 ms drain period, 512 slots hold about 25k captured
 * packets per second per shard before records are lost (counted). About 1 MiB per shard.
 */
export const DEFAULT_CAPTURE_SLOTS = 512;
/** Default packet bytes per slot: a full 1500-byte MTU packet fits. */
export const DEFAULT_CAPTURE_SLOT_DATA = 2048;

export class CaptureRing {
  readonly hdr: Int32Array;
  /** Record words; the word of slot k's field f is k * strideWords + f (offset by the header). */
  readonly words: Uint32Array;
  readonly bytes: Uint8Array;
  readonly capacity: number;
  readonly mask: number;
  readonly slotData: number;
  readonly strideBytes: number;
  readonly strideWords: number;

  // Producer state, cached per batch by beginBatch(): the ARMED word, and per active slot
  // (nActive of them, slot numbers in activeSlot) its filter.
  private batchArmed = 0;
  private nActive = 0;
  private readonly activeSlot = new Int32Array(MAX_CAPTURES);
  private readonly filterEp = new Int32Array(MAX_CAPTURES);
  private readonly verdictMask = new Int32Array(MAX_CAPTURES);
  private readonly snaplen = new Int32Array(MAX_CAPTURES);

  constructor(readonly sab: SharedArrayBuffer) {
    this.hdr = new Int32Array(sab, 0, HEADER_WORDS);
    const cap = this.hdr[kCapacity] as number;
    const data = this.hdr[kSlotData] as number;
    if (cap < 2 || (cap & (cap - 1)) !== 0 || data < 4 || (data & 3) !== 0) {
      throw new RangeError(`capture ring: bad header (capacity ${cap}, slot data ${data}); make rings with CaptureRing.create`);
    }
    this.capacity = cap;
    this.mask = cap - 1;
    this.slotData = data;
    this.strideBytes = RECORD_HEADER_BYTES + data;
    this.strideWords = this.strideBytes >>> 2;
    this.words = new Uint32Array(sab, HEADER_BYTES, cap * this.strideWords);
    this.bytes = new Uint8Array(sab, HEADER_BYTES, cap * this.strideBytes);
  }

  /** Makes a disarmed ring of `slots` slots (power of two) of `slotData` packet bytes each. */
  static create(slots = DEFAULT_CAPTURE_SLOTS, slotData = DEFAULT_CAPTURE_SLOT_DATA): CaptureRing {
    if (!Number.isInteger(slots) || slots < 2 || (slots & (slots - 1)) !== 0) throw new RangeError(`capture ring: slots ${slots} is not a power of two >= 2`);
    if (!Number.isInteger(slotData) || slotData < 4 || (slotData & 3) !== 0) throw new RangeError(`capture ring: slot data ${slotData} is not a positive multiple of 4`);
    const sab = new SharedArrayBuffer(HEADER_BYTES + slots * (RECORD_HEADER_BYTES + slotData));
    const h = new Int32Array(sab, 0, HEADER_WORDS);
    h[kCapacity] = slots;
    h[kSlotData] = slotData;
    for (let i = 0; i < MAX_CAPTURES; i++) {
      h[kSlotBase + i * kSlotWords + kFilterEp] = -1;
      h[kSlotBase + i * kSlotWords + kSnaplen] = slotData;
    }
    return new CaptureRing(sab);
  }

  static bytesFor(slots: number, slotData: number): number {
    return HEADER_BYTES + slots * (RECORD_HEADER_BYTES + slotData);
  }

  // ------------------------------------------------------------------ producer (shard worker)

  /**
   * Once per batch: one Atomics.load of ARMED. Returns false when no capture runs (then the
   * caller skips offer() for the whole batch); else caches the active slots' filters.
   */
  beginBatch(): boolean {
    const s = Atomics.load(this.hdr, kArmed);
    this.batchArmed = s;
    this.nActive = 0;
    if (s === 0) return false;
    const h = this.hdr;
    for (let i = 0; i < MAX_CAPTURES; i++) {
      if ((s & (1 << i)) === 0) continue;
      const b = kSlotBase + i * kSlotWords;
      const n = this.nActive++;
      this.activeSlot[n] = i;
      this.filterEp[n] = h[b + kFilterEp] as number;
      this.verdictMask[n] = h[b + kVerdictMask] as number;
      const snap = h[b + kSnaplen] as number;
      this.snaplen[n] = snap > 0 && snap < this.slotData ? snap : this.slotData;
    }
    return true;
  }

  /**
   * Offers the packet at buf[off, off+len) that the pipeline answered with `verdict` (an
   * output port >= 0, or a negative drop code) for endpoints srcEp/dstEp (-1 none).
   * Returns 1 when recorded, 0 when no capture wants it, -1 when lost (ring full). Never
   * throws, never allocates.
   */
  offer(buf: Uint8Array, off: number, len: number, verdict: number, srcEp: number, dstEp: number): number {
    const nActive = this.nActive;
    if (nActive === 0) return 0;
    const dropped = verdict < 0;
    const vbit = dropped ? VERDICT_DROPPED_BIT : VERDICT_FORWARDED_BIT;
    let match = 0;
    let snap = 0;
    for (let j = 0; j < nActive; j++) {
      const fep = this.filterEp[j] as number;
      if (fep >= 0 && srcEp !== fep && dstEp !== fep) continue;
      if (((this.verdictMask[j] as number) & vbit) === 0) continue;
      match |= 1 << (this.activeSlot[j] as number);
      const sl = this.snaplen[j] as number;
      if (sl > snap) snap = sl;
    }
    if (match === 0) return 0;
    const h = this.hdr;
    const head = Atomics.load(h, kHead) >>> 0;
    const tail = Atomics.load(h, kTail) >>> 0;
    if (((head - tail) >>> 0) >= this.capacity) {
      Atomics.add(h, kLost, 1);
      for (let i = 0; i < MAX_CAPTURES; i++) if ((match & (1 << i)) !== 0) Atomics.add(h, kSlotBase + i * kSlotWords + kSlotLost, 1);
      return -1;
    }
    const slot = head & this.mask;
    const w = slot * this.strideWords;
    const words = this.words;
    const tMs = performance.timeOrigin + performance.now();
    const sec = Math.floor(tMs / 1000);
    const cap = len < snap ? (len > 0 ? len : 0) : snap;
    words[w + CR_TAG] = (this.batchArmed & ~SLOT_BITS) | match;
    words[w + CR_TS_SEC] = sec;
    words[w + CR_TS_USEC] = Math.floor((tMs - sec * 1000) * 1000) % 1000000;
    words[w + CR_ORIG_LEN] = len > 0 ? len : 0;
    words[w + CR_CAP_LEN] = cap;
    words[w + CR_VERDICT] = dropped ? CR_DROPPED | ((-verdict) & 0xff) : 0;
    words[w + CR_SRC_EP] = srcEp < 0 ? NO_EP_INDEX : srcEp;
    words[w + CR_DST_EP] = dstEp < 0 ? NO_EP_INDEX : dstEp;
    const dst = this.bytes;
    const d = slot * this.strideBytes + RECORD_HEADER_BYTES;
    for (let i = 0; i < cap; i++) dst[d + i] = buf[off + i] as number;
    Atomics.store(h, kHead, (head + 1) | 0);
    return 1;
  }

  // ------------------------------------------------------------------ consumer (control thread)

  /**
   * Writes capture slot `slot`'s filter: endpoint index or -1 for any, verdict mask
   * (VERDICT_* bits) and snap length (0: the slot size). Only while the slot's bit is clear
   * in ARMED; publish() with the bit set makes it live.
   */
  setSlot(slot: number, filterEp: number, verdictMask: number, snaplen: number): void {
    if (!Number.isInteger(slot) || slot < 0 || slot >= MAX_CAPTURES) throw new RangeError(`capture ring: slot ${slot} must be 0..${MAX_CAPTURES - 1}`);
    if ((Atomics.load(this.hdr, kArmed) & (1 << slot)) !== 0) throw new InternalError(`capture ring: slot ${slot} is armed; publish it free before reusing it`);
    const b = kSlotBase + slot * kSlotWords;
    const h = this.hdr;
    h[b + kFilterEp] = filterEp;
    h[b + kVerdictMask] = verdictMask & VERDICT_ANY;
    h[b + kSnaplen] = snaplen > 0 && snaplen < this.slotData ? snaplen : this.slotData;
  }

  /** Publishes an ARMED word (armedWord(gen, slots)); the producer takes it at its next batch. */
  publish(word: number): void {
    Atomics.store(this.hdr, kArmed, word);
  }

  /** No capture at all (a control thread that restarts finds rings left armed). */
  disarm(): void {
    Atomics.store(this.hdr, kArmed, 0);
  }

  armed(): number {
    return Atomics.load(this.hdr, kArmed);
  }

  /** Records ready to read. */
  available(): number {
    return ((Atomics.load(this.hdr, kHead) >>> 0) - (Atomics.load(this.hdr, kTail) >>> 0)) >>> 0;
  }

  /** First word (into `words`) of the k-th unread record, k < available(). */
  peek(k: number): number {
    return (((Atomics.load(this.hdr, kTail) >>> 0) + k) & this.mask) * this.strideWords;
  }

  /** First byte (into `bytes`) of the packet data of the record whose first word is `w`. */
  dataOffset(w: number): number {
    return w * 4 + RECORD_HEADER_BYTES;
  }

  /** Marks n records read. */
  consume(n: number): void {
    Atomics.add(this.hdr, kTail, n);
  }

  /** Records lost because the ring was full. */
  lost(): number {
    return Atomics.load(this.hdr, kLost) >>> 0;
  }

  /** Lost records that capture slot `slot` matched. */
  slotLost(slot: number): number {
    return Atomics.load(this.hdr, kSlotBase + slot * kSlotWords + kSlotLost) >>> 0;
  }
}
