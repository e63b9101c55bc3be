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
 *
 * EventWriter (the pipeline's) and EventReader (the control thread's) below are the only code
 * that knows these offsets; the E_* constants are private to this file.
 */
import type { FlowTuple } from '../proto/tuple.js';
import { isIcmp } from '../proto/ip.js';

export const EVENT_WORDS = 24;
export const EV_DROP = 1;
export const EV_TRACE = 2;
export const EV_POLICY = 3;
export const V_FORWARDED = 0;
export const V_DROPPED = 1;
export const V_AUDIT = 2;
export const NO_INDEX = 0xffffffff;

// Record word offsets: private to this file. Everyone else writes through EventWriter and
// reads through EventReader.
const E_TYPE = 0;
const E_TIME_S = 1;
const E_TIME_MS = 2;
const E_REASON = 3;
const E_VERDICT = 4;
const E_DIR = 5;
const E_SRC_ID = 6;
const E_DST_ID = 7;
const E_L3L4 = 8;
const E_PORTS = 9;
const E_SRC = 10;
const E_DST = 14;
const E_BITS = 18;
const E_COOKIE = 19;
const E_SRC_EP = 20;
const E_DST_EP = 21;
const E_LENGTH = 22;
const E_SEQ = 23;

// E_BITS fields.
const B_CT_SHIFT = 8;
const B_MATCH_SHIFT = 12;
const B_REPLY = 1 << 16;
const B_IPCACHE_MISS = 1 << 17;
const B_AUDITED = 1 << 18;

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
 * Writes event records into a ring: the one encoder of the record layout above. One writer
 * per producer, made at start-up; writing allocates nothing. Use:
 *
 *     if (w.begin(EV_DROP, nowS, nowMs)) { w.verdict(...); w.flow(...); ... ; w.commit(); }
 *
 * Fields not set keep what the slot held before, so a producer sets every one.
 */
export class EventWriter {
  private readonly r: Uint32Array;
  private b = -1;

  constructor(readonly ring: EventRing) {
    this.r = ring.rec;
  }

  /** Reserves a record and writes its type and time; false when the ring is full (counted lost). */
  begin(type: number, timeS: number, timeMs: number): boolean {
    const b = this.ring.reserve();
    this.b = b;
    if (b < 0) return false;
    const r = this.r;
    r[b + E_TYPE] = type;
    r[b + E_TIME_S] = timeS;
    r[b + E_TIME_MS] = timeMs;
    return true;
  }

  /** Drop reason (positive code or 0), verdict (V_*) and direction (DIR_*). */
  verdict(reason: number, verdict: number, dir: number): void {
    const r = this.r;
    const b = this.b;
    r[b + E_REASON] = reason;
    r[b + E_VERDICT] = verdict;
    r[b + E_DIR] = dir;
  }

  /** Source and destination identity and endpoint index (-1: none). */
  peers(srcId: number, dstId: number, srcEp: number, dstEp: number): void {
    const r = this.r;
    const b = this.b;
    r[b + E_SRC_ID] = srcId;
    r[b + E_DST_ID] = dstId;
    r[b + E_SRC_EP] = srcEp < 0 ? NO_INDEX : srcEp;
    r[b + E_DST_EP] = dstEp < 0 ? NO_INDEX : dstEp;
  }

  /** Family, protocol, ports (ICMP: type, code, echo id) and addresses of the packet. */
  flow(t: FlowTuple): void {
    const r = this.r;
    const b = this.b;
    r[b + E_L3L4] = (t.family << 8) | t.proto;
    r[b + E_PORTS] = isIcmp(t.proto)
      ? (((t.icmpId < 0 ? 0 : t.icmpId) << 16) | ((t.icmpType & 0xff) << 8) | (t.icmpCode & 0xff)) >>> 0
      : ((t.sport << 16) | t.dport) >>> 0;
    r[b + E_SRC] = t.src0;
    r[b + E_SRC + 1] = t.src1;
    r[b + E_SRC + 2] = t.src2;
    r[b + E_SRC + 3] = t.src3;
    r[b + E_DST] = t.dst0;
    r[b + E_DST + 1] = t.dst1;
    r[b + E_DST + 2] = t.dst2;
    r[b + E_DST + 3] = t.dst3;
  }

  /** TCP flags, conntrack state, policy match type, the three flags, and the rule cookie. */
  state(tcpFlags: number, ctState: number, matchType: number, isReply: boolean, ipcacheMiss: number, audited: number, cookie: number): void {
    const r = this.r;
    const b = this.b;
    r[b + E_BITS] =
      (tcpFlags & 0xff) |
      ((ctState & 0xf) << B_CT_SHIFT) |
      ((matchType & 0xf) << B_MATCH_SHIFT) |
      (isReply ? B_REPLY : 0) |
      (ipcacheMiss !== 0 ? B_IPCACHE_MISS : 0) |
      (audited !== 0 ? B_AUDITED : 0);
    r[b + E_COOKIE] = cookie;
  }

  /** Packet length in bytes; publishes the record. */
  commit(length: number): void {
    this.r[this.b + E_LENGTH] = length;
    this.ring.commit();
  }
}

/**
 * Reads event records: the one decoder of the record layout above. `at(base)` points it at a
 * record (a base word from EventRing.peek); the accessors then read its fields.
 */
export class EventReader {
  private readonly r: Uint32Array;
  private b = 0;

  constructor(readonly ring: EventRing) {
    this.r = ring.rec;
  }

  at(base: number): this {
    if (base < 0 || base + EVENT_WORDS > this.r.length || base % EVENT_WORDS !== 0) throw new RangeError(`event record at word ${base} is not in the ring`);
    this.b = base;
    return this;
  }

  private w(i: number): number {
    return this.r[this.b + i] as number;
  }

  get type(): number { return this.w(E_TYPE); }
  get timeS(): number { return this.w(E_TIME_S); }
  get timeMs(): number { return this.w(E_TIME_MS); }
  get reason(): number { return this.w(E_REASON); }
  get verdict(): number { return this.w(E_VERDICT); }
  get dir(): number { return this.w(E_DIR); }
  get srcId(): number { return this.w(E_SRC_ID); }
  get dstId(): number { return this.w(E_DST_ID); }
  get family(): number { return this.w(E_L3L4) >>> 8; }
  get proto(): number { return this.w(E_L3L4) & 0xff; }
  /** The raw ports word (sport << 16 | dport; ICMP: id << 16 | type << 8 | code). */
  get ports(): number { return this.w(E_PORTS); }
  get sport(): number { return this.w(E_PORTS) >>> 16; }
  get dport(): number { return this.w(E_PORTS) & 0xffff; }
  get icmpType(): number { return (this.w(E_PORTS) >>> 8) & 0xff; }
  get icmpCode(): number { return this.w(E_PORTS) & 0xff; }
  get icmpId(): number { return this.w(E_PORTS) >>> 16; }
  /** Source address word i (0..3; IPv4 in word 0). */
  src(i: number): number { return this.w(E_SRC + i); }
  dst(i: number): number { return this.w(E_DST + i); }
  get tcpFlags(): number { return this.w(E_BITS) & 0xff; }
  get ctState(): number { return (this.w(E_BITS) >>> B_CT_SHIFT) & 0xf; }
  get matchType(): number { return (this.w(E_BITS) >>> B_MATCH_SHIFT) & 0xf; }
  get isReply(): boolean { return (this.w(E_BITS) & B_REPLY) !== 0; }
  get ipcacheMiss(): boolean { return (this.w(E_BITS) & B_IPCACHE_MISS) !== 0; }
  get audited(): boolean { return (this.w(E_BITS) & B_AUDITED) !== 0; }
  get cookie(): number { return this.w(E_COOKIE); }
  /** Source endpoint index, NO_INDEX for none. */
  get srcEp(): number { return this.w(E_SRC_EP); }
  get dstEp(): number { return this.w(E_DST_EP); }
  get length(): number { return this.w(E_LENGTH); }
  get seq(): number { return this.w(E_SEQ); }

  /** Hands each unread record to `fn` (this reader, positioned at it), then consumes them. */
  drain(fn: (r: EventReader) => void): number {
    const ring = this.ring;
    const n = ring.available();
    for (let k = 0; k < n; k++) fn(this.at(ring.peek(k)));
    if (n > 0) ring.consume(n);
    return n;
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
/** Drop reason codes (src/datapath/drop.ts) are below this: the counters' reason dimension. */
export const MAX_DROP_CODE = 256;
export const C_DROP_PKTS = 0;
export const C_DROP_BYTES = C_DROP_PKTS + MAX_DROP_CODE * 2;
export const C_FWD_PKTS = C_DROP_BYTES + MAX_DROP_CODE * 2;
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
/** Packets too big for the underlay answered with ICMP frag-needed / packet-too-big (src/datapath/icmp-too-big.ts). */
export const C_VXLAN_TOO_BIG = C_GRO_MERGED + 1;
export const COUNTER_SLOTS = C_VXLAN_TOO_BIG + 1;

/** Slot of the dropped-packets counter for a reason (positive code) and direction. */
export function dropPacketsSlot(reason: number, dir: number): number {
  return C_DROP_PKTS + reason * 2 + dir;
}

/** Slot of the dropped-bytes counter for a reason (positive code) and direction. */
export function dropBytesSlot(reason: number, dir: number): number {
  return C_DROP_BYTES + reason * 2 + dir;
}

/** Slot of the forwarded-packets counter for a direction. */
export function forwardPacketsSlot(dir: number): number {
  return C_FWD_PKTS + dir;
}

/** Slot of the forwarded-bytes counter for a direction. */
export function forwardBytesSlot(dir: number): number {
  return C_FWD_BYTES + dir;
}

/** Counts `pkts` dropped packets of `bytes` bytes under drop code `code` (negative or positive). */
export function countDrop(c: Float64Array, code: number, dir: number, pkts: number, bytes: number): void {
  const reason = (code < 0 ? -code : code) & 0xff;
  c[C_DROP_PKTS + reason * 2 + dir] += pkts;
  c[C_DROP_BYTES + reason * 2 + dir] += bytes;
}

/** Counts one forwarded packet of `bytes` bytes in direction `dir`. */
export function countForward(c: Float64Array, dir: number, bytes: number): void {
  c[C_FWD_PKTS + dir]++;
  c[C_FWD_BYTES + dir] += bytes;
}

/** Dropped packets in `c`, over every reason and direction. */
export function totalDropped(c: Float64Array): number {
  let n = 0;
  for (let i = 0; i < MAX_DROP_CODE * 2; i++) n += c[C_DROP_PKTS + i] as number;
  return n;
}

export function createCounters(): Float64Array {
  return new Float64Array(new SharedArrayBuffer(COUNTER_SLOTS * 8));
}
