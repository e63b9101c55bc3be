/**
 * Per-shard event ring and counters, in shared memory.
 *
 * EventRing: single producer (the worker that holds the shard), single consumer (the
 * control thread, for `observe`, `monitor` and metrics). Fixed-size records of
 * EVENT_WORDS u32 words. A full ring drops the *event*, never the packet, and counts the
 * lost event. Head and tail are free-running u32 counters (wrap-safe with >>> 0 arithmetic).
 *
 * Ring header (Int32Array, 16 words):
 *   0  HEAD      next record the producer writes (free-running)
 *   1  TAIL      next record the consumer reads (free-running)
 *   2  LOST      events dropped because the ring was full
 *   3  CAPACITY  number of records (power of two)
 *
 * Record layout (u32 words):
 *   0  TYPE      EV_DROP 1 | EV_TRACE 2 | EV_POLICY 3
 *   1  TIME_S    seconds (the batch clock, unix time)
 *   2  TIME_MS   milliseconds within the second
 *   3  REASON    drop reason (positive Cilium code) or 0
 *   4  VERDICT   V_FORWARDED 0 | V_DROPPED 1 | V_AUDIT 2
 *   5  DIR       0 ingress, 1 egress (the endpoint's point of view)
 *   6  SRC_ID    source security identity
 *   7  DST_ID    destination security identity
 *   8  L3L4      family << 8 | protocol
 *   9  PORTS     sport << 16 | dport (ICMP: type << 8 | code in dport, id in sport)
 *   10..13 SRC   source address words (IPv4 in word 10)
 *   14..17 DST   destination address words
 *   18 BITS      tcpFlags (8) | ctState << 8 (4) | matchType << 12 (4) | isReply << 16 |
 *                ipcacheMiss << 17 | audited << 18
 *   19 COOKIE    rule cookie that decided (0xffffffff none)
 *   20 SRC_EP    source endpoint index (0xffffffff: host port / none)
 *   21 DST_EP    destination endpoint index (0xffffffff: not local)
 *   22 LENGTH    packet length in bytes
 *   23 SEQ       producer sequence number (low 32 bits)
 */

export const EVENT_WORDS = 24;
export const EV_DROP = 1;
export const EV_TRACE = 2;
export const EV_POLICY = 3;
export const V_FORWARDED = 0;
export const V_DROPPED = 1;
export const V_AUDIT = 2;
export const NO_INDEX = 0xffffffff;

export const E_TYPE = 0;
export const E_TIME_S = 1;
export const E_TIME_MS = 2;
export const E_REASON = 3;
export const E_VERDICT = 4;
export const E_DIR = 5;
export const E_SRC_ID = 6;
export const E_DST_ID = 7;
export const E_L3L4 = 8;
export const E_PORTS = 9;
export const E_SRC = 10;
export const E_DST = 14;
export const E_BITS = 18;
export const E_COOKIE = 19;
export const E_SRC_EP = 20;
export const E_DST_EP = 21;
export const E_LENGTH = 22;
export const E_SEQ = 23;

const kHead = 0;
const kTail = 1;
const kLost = 2;
const kCapacity = 3;
const kHeaderWords = 16;

export class EventRing {
  readonly hdr: Int32Array;
  readonly rec: Uint32Array;
  readonly capacity: number;
  readonly mask: number;
  /** Base word of the record reserved by the last `reserve()`; -1 when the ring was full. */
  base = -1;

  constructor(readonly sab: SharedArrayBuffer) {
    this.hdr = new Int32Array(sab, 0, kHeaderWords);
    const cap = this.hdr[kCapacity] as number;
    this.capacity = cap;
    this.mask = cap - 1;
    this.rec = new Uint32Array(sab, kHeaderWords * 4, cap * EVENT_WORDS);
  }

  static create(capacity = 4096): EventRing {
    if (capacity < 2 || (capacity & (capacity - 1)) !== 0) throw new RangeError(`event ring capacity ${capacity} is not a power of two`);
    const sab = new SharedArrayBuffer(kHeaderWords * 4 + capacity * EVENT_WORDS * 4);
    new Int32Array(sab, 0, kHeaderWords)[kCapacity] = capacity;
    return new EventRing(sab);
  }

  // ---- producer ----

  /** Reserves a record; returns its base word index or -1 (full: the event is counted lost). */
  reserve(): number {
    const h = this.hdr;
    const head = Atomics.load(h, kHead) >>> 0;
    const tail = Atomics.load(h, kTail) >>> 0;
    if (((head - tail) >>> 0) >= this.capacity) {
      Atomics.add(h, kLost, 1);
      this.base = -1;
      return -1;
    }
    this.base = (head & this.mask) * EVENT_WORDS;
    this.rec[this.base + E_SEQ] = head;
    return this.base;
  }

  /** Publishes the record reserved last. */
  commit(): void {
    Atomics.add(this.hdr, kHead, 1);
  }

  // ---- consumer ----

  /** Number of records ready to read. */
  available(): number {
    return ((Atomics.load(this.hdr, kHead) >>> 0) - (Atomics.load(this.hdr, kTail) >>> 0)) >>> 0;
  }

  /** Base word of the k-th unread record (k < available()). */
  peek(k: number): number {
    return (((Atomics.load(this.hdr, kTail) >>> 0) + k) & this.mask) * EVENT_WORDS;
  }

  /** Marks n records read. */
  consume(n: number): void {
    Atomics.add(this.hdr, kTail, n);
  }

  lost(): number {
    return Atomics.load(this.hdr, kLost) >>> 0;
  }
}

/**
 * Per-shard counters (Float64Array over shared memory; one writer, the shard's worker).
 * Readers sum the shards. Layout (f64 slots):
 *
 *   DROP_PKTS   + reason * 2 + dir     drops by reason (0..255) and direction
 *   DROP_BYTES  + reason * 2 + dir
 *   FWD_PKTS    + dir                  forwarded packets by direction
 *   FWD_BYTES   + dir
 *   RT_*                               runtime counters (see the constants)
 *   BATCH_HIST  + bucket               batch sizes, bucket b counts sizes in (2^(b-1), 2^b]
 */
export const MAX_REASON = 256;
export const C_DROP_PKTS = 0;
export const C_DROP_BYTES = C_DROP_PKTS + MAX_REASON * 2;
export const C_FWD_PKTS = C_DROP_BYTES + MAX_REASON * 2;
export const C_FWD_BYTES = C_FWD_PKTS + 2;
export const C_BATCHES = C_FWD_BYTES + 2;
export const C_PACKETS = C_BATCHES + 1;
export const C_BUSY_NS = C_PACKETS + 1;
export const C_CT_CREATE_FAILED = C_BUSY_NS + 1;
export const C_AUDITED = C_CT_CREATE_FAILED + 1;
export const C_TRACE_EVENTS = C_AUDITED + 1;
export const C_POLICY_EVENTS = C_TRACE_EVENTS + 1;
export const C_DROP_EVENTS = C_POLICY_EVENTS + 1;
export const C_BATCH_HIST = C_DROP_EVENTS + 1;
export const BATCH_HIST_BUCKETS = 12;
/** VXLAN packets and bytes (UDP payload) sent to / received from other nodes (src/runtime/underlay.ts). */
export const C_VXLAN_TX_PKTS = C_BATCH_HIST + BATCH_HIST_BUCKETS;
export const C_VXLAN_TX_BYTES = C_VXLAN_TX_PKTS + 1;
export const C_VXLAN_RX_PKTS = C_VXLAN_TX_BYTES + 1;
export const C_VXLAN_RX_BYTES = C_VXLAN_RX_PKTS + 1;
/**
 * GSO on transmit (src/datapath/gso-port.ts): GSO packets split for a port and the segments
 * made; GSO packets built by coalescing, TCP and UDP (USO), and the packets merged into them.
 */
export const C_GSO_SPLIT_PKTS = C_VXLAN_RX_BYTES + 1;
export const C_GSO_SPLIT_SEGS = C_GSO_SPLIT_PKTS + 1;
export const C_GRO_TCP_BUILT = C_GSO_SPLIT_SEGS + 1;
export const C_GRO_UDP_BUILT = C_GRO_TCP_BUILT + 1;
export const C_GRO_MERGED = C_GRO_UDP_BUILT + 1;
export const COUNTER_SLOTS = C_GRO_MERGED + 1;

export function createCounters(): Float64Array {
  return new Float64Array(new SharedArrayBuffer(COUNTER_SLOTS * 8));
}
