/**
 * Per-shard packet capture ring, in shared memory (for `tunswitch capture`).
 *
 * One ring per shard. Single producer: the shard worker, which copies the packets the
 * pipeline has just decided on. Single consumer: the control thread, which arms the ring,
 * drains it every few milliseconds and turns the records into pcap.
 *
 * Cost when nobody captures: one Atomics.load of ARMED per batch (CaptureRing.beginBatch).
 * When armed, each packet costs two compares against the filter, and a matching packet one
 * byte copy of at most SNAPLEN bytes. A full ring loses the *record* (counted in LOST); the
 * packet itself is never held up or dropped.
 *
 * Arming protocol (consumer): write FILTER_EP, VERDICT_MASK and SNAPLEN with plain stores,
 * then Atomics.store(ARMED, session). The producer reads ARMED once per batch with
 * Atomics.load (which orders the plain loads after it) and caches the filter for that batch.
 * Disarm: Atomics.store(ARMED, 0). A batch that began armed finishes with the old filter,
 * so a few records may land after a disarm; each record carries the session number it was
 * taken under, and the consumer skips records of other sessions.
 *
 * Ring header (Int32Array, HEADER_WORDS = 16 words, 64 bytes):
 *   0  ARMED         0 off; else the session number (>= 1) of the running capture
 *   1  FILTER_EP     endpoint index to capture (the packet's source or destination), -1 any
 *   2  VERDICT_MASK  bit 0 forwarded packets, bit 1 dropped packets
 *   3  SNAPLEN       bytes of each packet to keep (1..SLOT_DATA)
 *   4  HEAD          next record the producer writes (free-running u32)
 *   5  TAIL          next record the consumer reads (free-running u32)
 *   6  LOST          records lost because the ring was full (free-running u32)
 *   7  CAPACITY      number of slots (power of two), fixed at creation
 *   8  SLOT_DATA     packet bytes per slot, fixed at creation (multiple of 4)
 *   9..15           reserved (0)
 *
 * Slot k starts at byte HEADER_BYTES + k * (RECORD_HEADER_BYTES + SLOT_DATA):
 *   record header, u32 words (RECORD_HEADER_BYTES = 32):
 *     0  SESSION     ARMED value the producer saw when it took the packet
 *     1  TS_SEC      capture time, unix seconds
 *     2  TS_USEC     microseconds within the second
 *     3  ORIG_LEN    IP packet length (bytes, without the virtio-net header)
 *     4  CAP_LEN     bytes stored in the slot: min(ORIG_LEN, SNAPLEN)
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

export const HEADER_WORDS = 16;
export const HEADER_BYTES = HEADER_WORDS * 4;
export const RECORD_HEADER_WORDS = 8;
export const RECORD_HEADER_BYTES = RECORD_HEADER_WORDS * 4;

// Header word indices.
export const kArmed = 0;
export const kFilterEp = 1;
export const kVerdictMask = 2;
export const kSnaplen = 3;
export const kHead = 4;
export const kTail = 5;
export const kLost = 6;
export const kCapacity = 7;
export const kSlotData = 8;

// Record word indices (relative to the slot's first word).
export const CR_SESSION = 0;
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

  // Producer state, cached per batch by beginBatch().
  private session = 0;
  private filterEp = -1;
  private verdictMask = 0;
  private snaplen = 0;

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
    h[kFilterEp] = -1;
    h[kSnaplen] = slotData;
    return new CaptureRing(sab);
  }

  static bytesFor(slots: number, slotData: number): number {
    return HEADER_BYTES + slots * (RECORD_HEADER_BYTES + slotData);
  }

  // ------------------------------------------------------------------ producer (shard worker)

  /**
   * Once per batch: one Atomics.load of ARMED. Returns false when no capture runs (then the
   * caller skips offer() for the whole batch); else caches the filter for the batch.
   */
  beginBatch(): boolean {
    const s = Atomics.load(this.hdr, kArmed);
    if (s === 0) {
      this.session = 0;
      return false;
    }
    this.session = s;
    this.filterEp = this.hdr[kFilterEp] as number;
    this.verdictMask = this.hdr[kVerdictMask] as number;
    const snap = this.hdr[kSnaplen] as number;
    this.snaplen = snap > 0 && snap < this.slotData ? snap : this.slotData;
    return true;
  }

  /**
   * Offers the packet at buf[off, off+len) that the pipeline answered with `verdict` (an
   * output port >= 0, or a negative drop code) for endpoints srcEp/dstEp (-1 none).
   * Returns 1 when recorded, 0 when filtered out, -1 when lost (ring full). Never throws,
   * never allocates.
   */
  offer(buf: Uint8Array, off: number, len: number, verdict: number, srcEp: number, dstEp: number): number {
    if (this.session === 0) return 0;
    const fep = this.filterEp;
    if (fep >= 0 && srcEp !== fep && dstEp !== fep) return 0;
    const dropped = verdict < 0;
    if ((this.verdictMask & (dropped ? VERDICT_DROPPED_BIT : VERDICT_FORWARDED_BIT)) === 0) return 0;
    const h = this.hdr;
    const head = Atomics.load(h, kHead) >>> 0;
    const tail = Atomics.load(h, kTail) >>> 0;
    if (((head - tail) >>> 0) >= this.capacity) {
      Atomics.add(h, kLost, 1);
      return -1;
    }
    const slot = head & this.mask;
    const w = slot * this.strideWords;
    const words = this.words;
    const tMs = performance.timeOrigin + performance.now();
    const sec = Math.floor(tMs / 1000);
    const cap = len < this.snaplen ? (len > 0 ? len : 0) : this.snaplen;
    words[w + CR_SESSION] = this.session;
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
   * Arms the ring for `session` (>= 1): endpoint index or -1 for any, verdict mask
   * (VERDICT_* bits) and snap length. Records left from earlier sessions stay until read
   * and are skipped by their session number.
   */
  arm(session: number, filterEp: number, verdictMask: number, snaplen: number): void {
    if (!Number.isInteger(session) || session < 1 || session > 0x7fffffff) throw new RangeError(`capture ring: session ${session} must be 1..2^31-1`);
    const h = this.hdr;
    h[kFilterEp] = filterEp;
    h[kVerdictMask] = verdictMask & VERDICT_ANY;
    h[kSnaplen] = snaplen > 0 && snaplen < this.slotData ? snaplen : this.slotData;
    Atomics.store(h, kArmed, session);
  }

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

  lost(): number {
    return Atomics.load(this.hdr, kLost) >>> 0;
  }
}
