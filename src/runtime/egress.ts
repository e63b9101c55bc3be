/**
 * The egress queues of one shard: for every output port, flow-fair deficit round robin over
 * a flow hash with CoDel in each flow queue and a hard cap in bytes (the shape of Linux's
 * fq_codel, RFC 8290; CoDel's control law from RFC 8289). The worker that holds the shard
 * owns it: it enqueues what the pipeline forwards and dequeues batches to write.
 *
 * Why here: a TUN write never blocks, so the queue of a software switch forms wherever
 * packets wait for the CPU: in the shard ring (read, not yet processed) or here (processed,
 * not yet written). The worker pulls its ring into these queues before it writes, so the
 * backlog sits where the AQM sees it, and a sparse flow (a ping next to a bulk TCP stream)
 * is served from the "new flows" list ahead of the bulk flow.
 *
 * Per port p, NB = BUCKETS flow queues (flow f = p * NB + (hash & (NB - 1))):
 *   1. enqueue appends the slot to its flow queue, stamps nothing (the I/O thread stamped the
 *      read time, so the sojourn includes the time spent in the shard ring); an idle flow
 *      joins the port's "new" list with a deficit of one quantum. Over the port's byte
 *      limit, packets are dropped from the head of the fattest flow (fq_codel's rule).
 *   2. dequeue serves the new list first, then the old list: a flow whose deficit is spent
 *      gets another quantum and goes to the tail of the old list; a new flow that runs empty
 *      moves to the old list (so it cannot starve old flows by re-entering as new).
 *   3. CoDel per flow (RFC 8289 pseudocode): when the head packet's sojourn stays above
 *      `target` for `interval`, drop from the head, then at interval/sqrt(count). An
 *      ECN-capable packet is marked CE instead of dropped (the caller rewrites the header).
 *      A flow with at most one quantum queued is never above target.
 *   4. Bytes, not packets, count: a 64 KiB GSO packet counts as 64 KiB against the limit
 *      and the deficit.
 *
 * The state lives in shared memory (one SharedArrayBuffer per shard) so that a restarted
 * worker keeps what was queued; `repair()` rebuilds the lists from the per-flow chains after
 * a crash, trusting nothing but the chains themselves (see ring.ts for slot recovery).
 *
 * Layout (Int32Array I over the buffer, Float64Array F over the same buffer):
 *   I[0..15]             header: 0 MAGIC, 1 SLOTS, 2 PORTS, 3 BUCKETS, 4 ACTIVE_HEAD
 *                        (first port with backlog, -1), 5 ACTIVE_TAIL
 *   per slot s (SLOTS):  NEXT (next slot in its flow, -1), LEN (bytes), SRC_ID, DST_ID,
 *                        ECT (1: ECN-capable transport), and F: ENQ_MS (read time, ms)
 *   per flow f:          HEAD, TAIL (slots, -1), BYTES, DEFICIT, LNEXT (next flow in its
 *                        list), LIST (0 none, 1 new, 2 old), CD_COUNT, CD_LASTCOUNT,
 *                        CD_DROPPING, and F: CD_FIRST_ABOVE, CD_DROP_NEXT (ms)
 *   per port p:          NEW_HEAD, NEW_TAIL, OLD_HEAD, OLD_TAIL (flows, -1), BYTES, PKTS,
 *                        ANEXT (next active port), ACTIVE (0/1)
 */
import { InternalError } from '../proto/errors.js';

/** Flow queues per port. fq_codel uses 1024 per device; a switch port carries few flows. */
export const BUCKETS = 32;
/** DRR quantum in bytes: one Ethernet-MTU packet, as fq_codel's default. */
export const QUANTUM = 1514;

export const Q_DEFAULT_LIMIT_BYTES = 4 << 20;
export const Q_DEFAULT_TARGET_MS = 5;
export const Q_DEFAULT_INTERVAL_MS = 100;

/** Words per port in RuntimeShared.portQueue (Float64Array): limit bytes, target ms, interval ms. */
export const PQ_LIMIT = 0;
export const PQ_TARGET = 1;
export const PQ_INTERVAL = 2;
export const PQ_WORDS = 4;

const MAGIC = 0x45475231; // "EGR1"
const H_MAGIC = 0;
const H_SLOTS = 1;
const H_PORTS = 2;
const H_BUCKETS = 3;
const H_ACTIVE_HEAD = 4;
const H_ACTIVE_TAIL = 5;
const H_WORDS = 16;

const S_NEXT = 0;
const S_LEN = 1;
const S_SRC_ID = 2;
const S_DST_ID = 3;
const S_ECT = 4;
const S_WORDS = 5;

const F_HEAD = 0;
const F_TAIL = 1;
const F_BYTES = 2;
const F_DEFICIT = 3;
const F_LNEXT = 4;
const F_LIST = 5;
const F_CD_COUNT = 6;
const F_CD_LASTCOUNT = 7;
const F_CD_DROPPING = 8;
const F_WORDS = 9;

const P_NEW_HEAD = 0;
const P_NEW_TAIL = 1;
const P_OLD_HEAD = 2;
const P_OLD_TAIL = 3;
const P_BYTES = 4;
const P_PKTS = 5;
const P_ANEXT = 6;
const P_ACTIVE = 7;
const P_WORDS = 8;

const LIST_NONE = 0;
const LIST_NEW = 1;
const LIST_OLD = 2;

/** Verdicts of a dequeued packet in `outMark`. */
export const EGRESS_SEND = 0;
/** Send, but set ECN CE first (CoDel marked instead of dropping). */
export const EGRESS_MARK_CE = 1;

/** Why `dropped*` holds a packet. */
export const EGRESS_DROP_CODEL = 1;
export const EGRESS_DROP_OVERLIMIT = 2;

export class EgressQueues {
  readonly sab: SharedArrayBuffer;
  private readonly i: Int32Array;
  private readonly f: Float64Array;
  readonly slots: number;
  readonly ports: number;
  private readonly sBase: number;
  private readonly fBase: number;
  private readonly pBase: number;
  /** Float64 indices: ENQ_MS per slot, then 2 per flow. */
  private readonly tBase: number;
  private readonly cdBase: number;

  /** Packets dropped by the last enqueue()/dequeue() call: slot and why (EGRESS_DROP_*). */
  readonly droppedSlot: Int32Array;
  readonly droppedWhy: Int32Array;
  nDropped = 0;
  /** Per dequeued packet: EGRESS_SEND or EGRESS_MARK_CE. */
  readonly outMark: Uint8Array;

  static bytesFor(slots: number, ports: number): number {
    const words = H_WORDS + slots * S_WORDS + ports * BUCKETS * F_WORDS + ports * P_WORDS;
    const wordsAligned = (words + 1) & ~1;
    return wordsAligned * 4 + (slots + ports * BUCKETS * 2) * 8;
  }

  static create(slots: number, ports: number): EgressQueues {
    const q = new EgressQueues(new SharedArrayBuffer(EgressQueues.bytesFor(slots, ports)), slots, ports);
    q.reset();
    return q;
  }

  /** Adopts an existing region (a restarted worker). */
  constructor(sab: SharedArrayBuffer, slots: number, ports: number, maxDrops = 1024) {
    this.sab = sab;
    this.slots = slots;
    this.ports = ports;
    const words = H_WORDS + slots * S_WORDS + ports * BUCKETS * F_WORDS + ports * P_WORDS;
    const wordsAligned = (words + 1) & ~1;
    this.i = new Int32Array(sab, 0, wordsAligned);
    this.f = new Float64Array(sab, wordsAligned * 4, slots + ports * BUCKETS * 2);
    this.sBase = H_WORDS;
    this.fBase = this.sBase + slots * S_WORDS;
    this.pBase = this.fBase + ports * BUCKETS * F_WORDS;
    this.tBase = 0;
    this.cdBase = slots;
    this.droppedSlot = new Int32Array(maxDrops);
    this.droppedWhy = new Int32Array(maxDrops);
    this.outMark = new Uint8Array(maxDrops);
    const I = this.i;
    if (I[H_MAGIC] === MAGIC && (I[H_SLOTS] !== slots || I[H_PORTS] !== ports || I[H_BUCKETS] !== BUCKETS)) {
      throw new InternalError(`egress: region is for ${I[H_SLOTS]} slots, ${I[H_PORTS]} ports; want ${slots}, ${ports}`);
    }
  }

  /** Empties every queue (start-up). */
  reset(): void {
    const I = this.i;
    I.fill(-1, this.sBase, this.pBase + this.ports * P_WORDS);
    for (let fl = 0; fl < this.ports * BUCKETS; fl++) {
      const b = this.fBase + fl * F_WORDS;
      I[b + F_BYTES] = 0;
      I[b + F_DEFICIT] = 0;
      I[b + F_LIST] = LIST_NONE;
      I[b + F_CD_COUNT] = 0;
      I[b + F_CD_LASTCOUNT] = 0;
      I[b + F_CD_DROPPING] = 0;
    }
    for (let p = 0; p < this.ports; p++) {
      const b = this.pBase + p * P_WORDS;
      I[b + P_BYTES] = 0;
      I[b + P_PKTS] = 0;
      I[b + P_ACTIVE] = 0;
    }
    this.f.fill(0);
    I[H_SLOTS] = this.slots;
    I[H_PORTS] = this.ports;
    I[H_BUCKETS] = BUCKETS;
    I[H_ACTIVE_HEAD] = -1;
    I[H_ACTIVE_TAIL] = -1;
    I[H_MAGIC] = MAGIC;
  }

  /** Bytes queued at port p. */
  portBytes(p: number): number {
    return this.i[this.pBase + p * P_WORDS + P_BYTES] as number;
  }

  /** Packets queued at port p. */
  portPackets(p: number): number {
    return this.i[this.pBase + p * P_WORDS + P_PKTS] as number;
  }

  /** First port with a backlog, or -1; then nextActive(p). */
  firstActive(): number {
    return this.i[H_ACTIVE_HEAD] as number;
  }

  nextActive(p: number): number {
    return this.i[this.pBase + p * P_WORDS + P_ANEXT] as number;
  }

  slotSrcId(s: number): number {
    return this.i[this.sBase + s * S_WORDS + S_SRC_ID] as number;
  }

  slotDstId(s: number): number {
    return this.i[this.sBase + s * S_WORDS + S_DST_ID] as number;
  }

  slotLen(s: number): number {
    return this.i[this.sBase + s * S_WORDS + S_LEN] as number;
  }

  /**
   * Queues `slot` (len bytes, read at enqMs) at port p in the flow queue of `hash`. Packets
   * dropped to respect limitBytes are left in droppedSlot/droppedWhy (nDropped), which this
   * call resets.
   */
  enqueue(p: number, slot: number, len: number, hash: number, enqMs: number, srcId: number, dstId: number, ect: number, limitBytes: number): void {
    this.nDropped = 0;
    const I = this.i;
    const sb = this.sBase + slot * S_WORDS;
    I[sb + S_NEXT] = -1;
    I[sb + S_LEN] = len;
    I[sb + S_SRC_ID] = srcId;
    I[sb + S_DST_ID] = dstId;
    I[sb + S_ECT] = ect;
    this.f[this.tBase + slot] = enqMs;
    const fl = p * BUCKETS + (hash & (BUCKETS - 1));
    const fb = this.fBase + fl * F_WORDS;
    const tail = I[fb + F_TAIL] as number;
    if (tail < 0) I[fb + F_HEAD] = slot;
    else I[this.sBase + tail * S_WORDS + S_NEXT] = slot;
    I[fb + F_TAIL] = slot;
    I[fb + F_BYTES] = (I[fb + F_BYTES] as number) + len;
    const pb = this.pBase + p * P_WORDS;
    I[pb + P_BYTES] = (I[pb + P_BYTES] as number) + len;
    I[pb + P_PKTS] = (I[pb + P_PKTS] as number) + 1;
    if (I[fb + F_LIST] === LIST_NONE) {
      I[fb + F_DEFICIT] = QUANTUM;
      this.listAppend(pb + P_NEW_HEAD, fl, LIST_NEW);
    }
    if (I[pb + P_ACTIVE] === 0) this.activate(p);
    // 1. over the byte limit: drop from the head of the fattest flow until under it
    while ((I[pb + P_BYTES] as number) > limitBytes && this.nDropped < this.droppedSlot.length) {
      let fat = -1;
      let fatBytes = 0;
      const f0 = p * BUCKETS;
      for (let k = 0; k < BUCKETS; k++) {
        const by = I[this.fBase + (f0 + k) * F_WORDS + F_BYTES] as number;
        if (by > fatBytes) {
          fatBytes = by;
          fat = f0 + k;
        }
      }
      if (fat < 0) break;
      const s = this.popHead(fat, pb);
      this.droppedSlot[this.nDropped] = s;
      this.droppedWhy[this.nDropped] = EGRESS_DROP_OVERLIMIT;
      this.nDropped++;
    }
  }

  /**
   * Dequeues up to `max` packets of port p at time nowMs into out[0..n) (with outMark),
   * applying CoDel; CoDel's drops are left in droppedSlot/droppedWhy (nDropped, reset here).
   * A port that runs empty leaves the active list.
   */
  dequeue(p: number, nowMs: number, max: number, out: Int32Array, targetMs: number, intervalMs: number): number {
    this.nDropped = 0;
    const I = this.i;
    const pb = this.pBase + p * P_WORDS;
    let n = 0;
    while (n < max) {
      // 2. new flows first, then old flows
      let fl = I[pb + P_NEW_HEAD] as number;
      let fromNew = true;
      if (fl < 0) {
        fl = I[pb + P_OLD_HEAD] as number;
        fromNew = false;
        if (fl < 0) break;
      }
      const fb = this.fBase + fl * F_WORDS;
      if ((I[fb + F_DEFICIT] as number) <= 0) {
        I[fb + F_DEFICIT] = (I[fb + F_DEFICIT] as number) + QUANTUM;
        this.listPop(pb + (fromNew ? P_NEW_HEAD : P_OLD_HEAD));
        this.listAppend(pb + P_OLD_HEAD, fl, LIST_OLD);
        continue;
      }
      const s = this.codelDequeue(fl, pb, nowMs, targetMs, intervalMs);
      if (s < 0) {
        // the flow is empty: a new flow goes to the old list once, an old one leaves
        this.listPop(pb + (fromNew ? P_NEW_HEAD : P_OLD_HEAD));
        if (fromNew && (I[pb + P_OLD_HEAD] as number) >= 0) this.listAppend(pb + P_OLD_HEAD, fl, LIST_OLD);
        else {
          I[fb + F_LIST] = LIST_NONE;
          I[fb + F_LNEXT] = -1;
        }
        continue;
      }
      I[fb + F_DEFICIT] = (I[fb + F_DEFICIT] as number) - (I[this.sBase + s * S_WORDS + S_LEN] as number);
      this.outMark[n] = this.markNext;
      this.markNext = EGRESS_SEND;
      out[n++] = s;
    }
    if ((I[pb + P_PKTS] as number) === 0 && I[pb + P_ACTIVE] === 1) this.deactivate(p);
    return n;
  }

  private markNext = EGRESS_SEND;

  /** 3. CoDel's dequeue for flow fl: returns the slot to send, or -1 when the flow is empty. */
  private codelDequeue(fl: number, pb: number, now: number, target: number, interval: number): number {
    const I = this.i;
    const F = this.f;
    const fb = this.fBase + fl * F_WORDS;
    const cd = this.cdBase + fl * 2;
    let s = this.popHead(fl, pb);
    if (s < 0) {
      I[fb + F_CD_DROPPING] = 0;
      F[cd] = 0;
      return -1;
    }
    let okToDrop = this.okToDrop(fl, s, now, target, interval);
    if (I[fb + F_CD_DROPPING] !== 0) {
      if (!okToDrop) {
        I[fb + F_CD_DROPPING] = 0;
      } else {
        while (now >= (F[cd + 1] as number) && I[fb + F_CD_DROPPING] !== 0) {
          I[fb + F_CD_COUNT] = (I[fb + F_CD_COUNT] as number) + 1;
          if (I[this.sBase + s * S_WORDS + S_ECT] !== 0) {
            F[cd + 1] = controlLaw(F[cd + 1] as number, interval, I[fb + F_CD_COUNT] as number);
            this.markNext = EGRESS_MARK_CE;
            return s;
          }
          this.recordDrop(s, EGRESS_DROP_CODEL);
          s = this.popHead(fl, pb);
          if (s < 0) {
            I[fb + F_CD_DROPPING] = 0;
            F[cd] = 0;
            return -1;
          }
          okToDrop = this.okToDrop(fl, s, now, target, interval);
          if (!okToDrop) I[fb + F_CD_DROPPING] = 0;
          else F[cd + 1] = controlLaw(F[cd + 1] as number, interval, I[fb + F_CD_COUNT] as number);
        }
      }
    } else if (okToDrop) {
      let mark = false;
      if (I[this.sBase + s * S_WORDS + S_ECT] !== 0) mark = true;
      else {
        this.recordDrop(s, EGRESS_DROP_CODEL);
        s = this.popHead(fl, pb);
        if (s >= 0) this.okToDrop(fl, s, now, target, interval);
      }
      I[fb + F_CD_DROPPING] = 1;
      const delta = (I[fb + F_CD_COUNT] as number) - (I[fb + F_CD_LASTCOUNT] as number);
      const count = delta > 1 && now - (F[cd + 1] as number) < 16 * interval ? delta : 1;
      I[fb + F_CD_COUNT] = count;
      I[fb + F_CD_LASTCOUNT] = count;
      F[cd + 1] = controlLaw(now, interval, count);
      if (mark) this.markNext = EGRESS_MARK_CE;
      if (s < 0) {
        F[cd] = 0;
        return -1;
      }
    }
    return s;
  }

  /** RFC 8289's dodequeue test for the packet just taken off flow fl. */
  private okToDrop(fl: number, s: number, now: number, target: number, interval: number): boolean {
    const F = this.f;
    const cd = this.cdBase + fl * 2;
    const sojourn = now - (F[this.tBase + s] as number);
    const backlog = (this.i[this.fBase + fl * F_WORDS + F_BYTES] as number) + (this.i[this.sBase + s * S_WORDS + S_LEN] as number);
    if (sojourn < target || backlog <= QUANTUM) {
      F[cd] = 0;
      return false;
    }
    if ((F[cd] as number) === 0) {
      F[cd] = now + interval;
      return false;
    }
    return now >= (F[cd] as number);
  }

  private recordDrop(s: number, why: number): void {
    if (this.nDropped < this.droppedSlot.length) {
      this.droppedSlot[this.nDropped] = s;
      this.droppedWhy[this.nDropped] = why;
      this.nDropped++;
      return;
    }
    // Programmer error: the caller must size maxDrops >= slots per call.
    throw new InternalError('egress: drop list overflow');
  }

  /** Takes the head slot of flow fl (or -1), keeping byte and packet counts. */
  private popHead(fl: number, pb: number): number {
    const I = this.i;
    const fb = this.fBase + fl * F_WORDS;
    const s = I[fb + F_HEAD] as number;
    if (s < 0) return -1;
    const sb = this.sBase + s * S_WORDS;
    const nx = I[sb + S_NEXT] as number;
    I[fb + F_HEAD] = nx;
    if (nx < 0) I[fb + F_TAIL] = -1;
    I[sb + S_NEXT] = -1;
    const len = I[sb + S_LEN] as number;
    I[fb + F_BYTES] = (I[fb + F_BYTES] as number) - len;
    I[pb + P_BYTES] = (I[pb + P_BYTES] as number) - len;
    I[pb + P_PKTS] = (I[pb + P_PKTS] as number) - 1;
    return s;
  }

  private listAppend(headIdx: number, fl: number, list: number): void {
    const I = this.i;
    const fb = this.fBase + fl * F_WORDS;
    I[fb + F_LNEXT] = -1;
    I[fb + F_LIST] = list;
    const tail = I[headIdx + 1] as number;
    if (tail < 0) I[headIdx] = fl;
    else I[this.fBase + tail * F_WORDS + F_LNEXT] = fl;
    I[headIdx + 1] = fl;
  }

  private listPop(headIdx: number): void {
    const I = this.i;
    const fl = I[headIdx] as number;
    const nx = I[this.fBase + fl * F_WORDS + F_LNEXT] as number;
    I[headIdx] = nx;
    if (nx < 0) I[headIdx + 1] = -1;
    I[this.fBase + fl * F_WORDS + F_LNEXT] = -1;
  }

  private activate(p: number): void {
    const I = this.i;
    const pb = this.pBase + p * P_WORDS;
    I[pb + P_ACTIVE] = 1;
    I[pb + P_ANEXT] = -1;
    const tail = I[H_ACTIVE_TAIL] as number;
    if (tail < 0) I[H_ACTIVE_HEAD] = p;
    else I[this.pBase + tail * P_WORDS + P_ANEXT] = p;
    I[H_ACTIVE_TAIL] = p;
  }

  /** Removes p from the active list (O(active ports); only when a port runs empty). */
  private deactivate(p: number): void {
    const I = this.i;
    let prev = -1;
    let q = I[H_ACTIVE_HEAD] as number;
    while (q >= 0 && q !== p) {
      prev = q;
      q = I[this.pBase + q * P_WORDS + P_ANEXT] as number;
    }
    const pb = this.pBase + p * P_WORDS;
    I[pb + P_ACTIVE] = 0;
    if (q < 0) return;
    const nx = I[pb + P_ANEXT] as number;
    if (prev < 0) I[H_ACTIVE_HEAD] = nx;
    else I[this.pBase + prev * P_WORDS + P_ANEXT] = nx;
    if (I[H_ACTIVE_TAIL] === p) I[H_ACTIVE_TAIL] = prev;
    I[pb + P_ANEXT] = -1;
  }

  /**
   * Drops everything queued at port p (the port went away): the slots are left in
   * `out` (returns the count; out must hold `slots` entries).
   */
  flushPort(p: number, out: Int32Array): number {
    const I = this.i;
    const pb = this.pBase + p * P_WORDS;
    let n = 0;
    for (let k = 0; k < BUCKETS; k++) {
      const fl = p * BUCKETS + k;
      for (let s = this.popHead(fl, pb); s >= 0; s = this.popHead(fl, pb)) out[n++] = s;
      const fb = this.fBase + fl * F_WORDS;
      I[fb + F_LIST] = LIST_NONE;
      I[fb + F_LNEXT] = -1;
      I[fb + F_CD_DROPPING] = 0;
    }
    I[pb + P_NEW_HEAD] = -1;
    I[pb + P_NEW_TAIL] = -1;
    I[pb + P_OLD_HEAD] = -1;
    I[pb + P_OLD_TAIL] = -1;
    if (I[pb + P_ACTIVE] === 1) this.deactivate(p);
    return n;
  }

  /**
   * After a crash of the worker that held this region (it may have died in the middle of
   * an update): rebuilds every list and count from the per-flow chains alone. A chain is cut
   * at the first slot that is out of range or already seen. Returns queued[slot] = 1 for
   * every slot that is still queued. Not for the hot path (allocates).
   */
  repair(): Uint8Array {
    const I = this.i;
    const queued = new Uint8Array(this.slots);
    if (I[H_MAGIC] !== MAGIC) {
      this.reset();
      return queued;
    }
    I[H_ACTIVE_HEAD] = -1;
    I[H_ACTIVE_TAIL] = -1;
    for (let p = 0; p < this.ports; p++) {
      const pb = this.pBase + p * P_WORDS;
      I[pb + P_NEW_HEAD] = -1;
      I[pb + P_NEW_TAIL] = -1;
      I[pb + P_OLD_HEAD] = -1;
      I[pb + P_OLD_TAIL] = -1;
      I[pb + P_BYTES] = 0;
      I[pb + P_PKTS] = 0;
      I[pb + P_ACTIVE] = 0;
      I[pb + P_ANEXT] = -1;
      for (let k = 0; k < BUCKETS; k++) {
        const fl = p * BUCKETS + k;
        const fb = this.fBase + fl * F_WORDS;
        I[fb + F_LIST] = LIST_NONE;
        I[fb + F_LNEXT] = -1;
        let bytes = 0;
        let prev = -1;
        let s = I[fb + F_HEAD] as number;
        if (s < -1 || s >= this.slots || (s >= 0 && queued[s] !== 0)) s = -1;
        if (s < 0) I[fb + F_HEAD] = -1;
        while (s >= 0) {
          queued[s] = 1;
          const sb = this.sBase + s * S_WORDS;
          const len = I[sb + S_LEN] as number;
          bytes += len > 0 ? len : 0;
          I[pb + P_PKTS] = (I[pb + P_PKTS] as number) + 1;
          prev = s;
          let nx = I[sb + S_NEXT] as number;
          if (nx < -1 || nx >= this.slots || (nx >= 0 && queued[nx] !== 0)) {
            nx = -1;
            I[sb + S_NEXT] = -1;
          }
          s = nx;
        }
        I[fb + F_TAIL] = prev;
        I[fb + F_BYTES] = bytes;
        I[pb + P_BYTES] = (I[pb + P_BYTES] as number) + bytes;
        if (prev >= 0) {
          I[fb + F_DEFICIT] = QUANTUM;
          I[fb + F_CD_DROPPING] = 0;
          this.listAppend(pb + P_OLD_HEAD, fl, LIST_OLD);
        }
      }
      if ((I[pb + P_PKTS] as number) > 0) this.activate(p);
    }
    return queued;
  }
}

function controlLaw(t: number, interval: number, count: number): number {
  return t + interval / Math.sqrt(count);
}
