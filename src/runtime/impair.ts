/**
 * Link impairments of an output port (delay, jitter, loss, duplication, reordering, rate),
 * applied after the port's egress queue as netem applies them after its qdisc's queue.
 *
 * Path of a packet at an impaired port p (workers/shard.ts, transmit step):
 *   1. rate gate: while the port's earliest departure time (EDT, shared by every shard, so the
 *      rate is the port's and not a shard's) is within HORIZON_MS of now, the worker dequeues
 *      one packet from the CoDel queue; otherwise the backlog stays there, where CoDel sees
 *      its sojourn. That is what makes a rate limit and the AQM work together.
 *   2. loss (random or Gilbert-Elliott): the packet is dropped (IMPAIR_LOSS), before it
 *      takes any of the rate.
 *   3. departure = max(now - BURST_MS, EDT); EDT = departure + len * 8 / rate, under the port's lock word (held for
 *      a few instructions; the owner is the shard, so recovery of a dead worker releases it).
 *   4. send time = departure + delay ± jitter; a reordered packet skips the delay; a
 *      duplicated one is written twice. Over the port's delay-line byte limit (or half the
 *      slab's slots) the packet is dropped (IMPAIR_OVERLIMIT).
 *   5. the packet waits in the shard's delay line (a min-heap on send time, FIFO among equal
 *      times) and is written when due. The worker sleeps until the earliest send time or
 *      rate gate (`wakeMs`), never spinning.
 * CoDel never sees the delay line: its sojourn ends when the packet leaves the queue.
 *
 * Shared memory:
 *   LinkTable (one for the switch), written by the control thread, read by every worker:
 *     Float64 per port (LK_WORDS): LK_ON, LK_DELAY (ms), LK_JITTER (ms), LK_DIST (0 uniform,
 *       1 normal), LK_LOSS, LK_GE (0/1), LK_GE_P, LK_GE_R, LK_GE_BAD, LK_GE_GOOD, LK_DUP,
 *       LK_REORDER (probabilities 0..1), LK_RATE (bits/s, 0 none), LK_LIMIT (bytes), LK_SEED
 *     Int32 per port (LI_WORDS): LI_GEN, a sequence counter (odd while the control thread
 *       writes; a worker copies the words and keeps the copy only if LI_GEN was even and
 *       unchanged around it, so it never uses a half-written setting); LI_LOCK, 0 or the
 *       shard + 1 that holds the port's EDT clock
 *     Float64 per port: the EDT clock (ms on sharedNowMs()'s clock), read and written only
 *       under LI_LOCK (the Atomics on the lock order the plain accesses)
 *   DelayLine (one per shard, owned by the shard's worker; survives a restart like the
 *   egress queue, and repair() gives its slots to the slot recovery):
 *     Int32 header: MAGIC, CAP, COUNT; per entry (CAP): SLOT, PORT, COPIES, LEN;
 *     per port: BYTES, PKTS. Float64: per entry DUE (ms), SEQ; header NEXT_SEQ.
 */
import type { LinkParams } from './link-spec.js';

export const LK_ON = 0;
export const LK_DELAY = 1;
export const LK_JITTER = 2;
export const LK_DIST = 3;
export const LK_LOSS = 4;
export const LK_GE = 5;
export const LK_GE_P = 6;
export const LK_GE_R = 7;
export const LK_GE_BAD = 8;
export const LK_GE_GOOD = 9;
export const LK_DUP = 10;
export const LK_REORDER = 11;
export const LK_RATE = 12;
export const LK_LIMIT = 13;
export const LK_SEED = 14;
export const LK_WORDS = 16;

const LI_GEN = 0;
const LI_LOCK = 1;
const LI_WORDS = 2;
/** Spins on a port's lock before taking it anyway (its holder was preempted or died). */
const LOCK_SPINS = 1 << 20;
/**
 * How far ahead of its departure time a packet may leave the CoDel queue for the delay line.
 * Small, so the backlog stays in the CoDel queue; not zero, so a worker that wakes a little
 * late still sends at the rate.
 */
export const HORIZON_MS = 1;
/**
 * A worker that wakes late would lose link time (departure = max(now, EDT) idles the link
 * for the lateness). Departures may instead lag now by up to BURST_MS: a token bucket of
 * BURST_MS at the rate, spent to catch up (also the burst an idle link may send at once).
 * Measured by test/e2e/link.test.ts (iperf3 at --rate 50mbit): 40.8 Mbit/s goodput with
 * no burst and a 1 ms horizon, 44.9 with a 3 ms horizon, 46.7 with this bucket and a 1 ms
 * horizon (48.3 is the most 1448-byte segments in 1500-byte packets carry at 50 Mbit/s).
 */
export const BURST_MS = 2;

/** Why admit() refused a packet. */
export const IMPAIR_QUEUED = 0;
export const IMPAIR_LOSS = 1;
export const IMPAIR_OVERLIMIT = 2;

/** The per-port settings in shared memory (see the layout above). */
export class LinkTable {
  readonly sab: SharedArrayBuffer;
  readonly ports: number;
  readonly f: Float64Array;
  readonly i: Int32Array;
  private readonly edt: Float64Array;

  static bytesFor(ports: number): number {
    return ports * LK_WORDS * 8 + ports * 8 + ports * LI_WORDS * 4;
  }

  static create(ports: number): LinkTable {
    return new LinkTable(new SharedArrayBuffer(LinkTable.bytesFor(ports)), ports);
  }

  constructor(sab: SharedArrayBuffer, ports: number) {
    this.sab = sab;
    this.ports = ports;
    this.f = new Float64Array(sab, 0, ports * LK_WORDS);
    this.edt = new Float64Array(sab, ports * LK_WORDS * 8, ports);
    this.i = new Int32Array(sab, ports * LK_WORDS * 8 + ports * 8, ports * LI_WORDS);
  }

  /** Control thread: sets (or with null clears) port p's impairments. */
  set(p: number, lp: LinkParams | null): void {
    const b = p * LK_WORDS;
    const g = p * LI_WORDS + LI_GEN;
    Atomics.add(this.i, g, 1); // odd: being written
    const F = this.f;
    F.fill(0, b, b + LK_WORDS);
    if (lp !== null) {
      F[b + LK_DELAY] = lp.delayMs;
      F[b + LK_JITTER] = lp.jitterMs;
      F[b + LK_DIST] = lp.distribution === 'normal' ? 1 : 0;
      F[b + LK_LOSS] = lp.loss;
      if (lp.ge !== null) {
        F[b + LK_GE] = 1;
        F[b + LK_GE_P] = lp.ge.p;
        F[b + LK_GE_R] = lp.ge.r;
        F[b + LK_GE_BAD] = lp.ge.bad;
        F[b + LK_GE_GOOD] = lp.ge.good;
      }
      F[b + LK_DUP] = lp.duplicate;
      F[b + LK_REORDER] = lp.reorder;
      F[b + LK_RATE] = lp.rateBps;
      F[b + LK_LIMIT] = lp.limitBytes;
      F[b + LK_SEED] = lp.seed;
      F[b + LK_ON] = 1;
    }
    Atomics.add(this.i, g, 1); // even: done
  }

  /** Control thread: port p's impairments, or null when off. */
  get(p: number): LinkParams | null {
    const b = p * LK_WORDS;
    const F = this.f;
    if (F[b + LK_ON] !== 1) return null;
    return {
      delayMs: F[b + LK_DELAY] as number,
      jitterMs: F[b + LK_JITTER] as number,
      distribution: F[b + LK_DIST] === 1 ? 'normal' : 'uniform',
      loss: F[b + LK_LOSS] as number,
      ge: F[b + LK_GE] === 1 ? { p: F[b + LK_GE_P] as number, r: F[b + LK_GE_R] as number, bad: F[b + LK_GE_BAD] as number, good: F[b + LK_GE_GOOD] as number } : null,
      duplicate: F[b + LK_DUP] as number,
      reorder: F[b + LK_REORDER] as number,
      rateBps: F[b + LK_RATE] as number,
      limitBytes: F[b + LK_LIMIT] as number,
      seed: F[b + LK_SEED] as number,
    };
  }

  generation(p: number): number {
    return Atomics.load(this.i, p * LI_WORDS + LI_GEN);
  }

  private lock(p: number, owner: number): void {
    const idx = p * LI_WORDS + LI_LOCK;
    for (let n = 0; Atomics.compareExchange(this.i, idx, 0, owner) !== 0; n++) {
      if (n >= LOCK_SPINS) {
        Atomics.store(this.i, idx, owner); // the holder is gone or stalled: a late EDT beats a stuck port
        return;
      }
    }
  }

  private unlock(p: number): void {
    Atomics.store(this.i, p * LI_WORDS + LI_LOCK, 0);
  }

  /** Step 3: takes `len` bytes of port p's rate; returns the departure time (ms). `owner` = shard + 1. */
  depart(p: number, nowMs: number, len: number, rateBps: number, owner: number): number {
    this.lock(p, owner);
    const edt = this.edt[p] as number;
    const dep = edt > nowMs - BURST_MS ? edt : nowMs - BURST_MS;
    this.edt[p] = dep + (len * 8000) / rateBps;
    this.unlock(p);
    return dep;
  }

  /** Step 1: ms until port p's rate lets the next packet leave the queue (0: now). */
  gateMs(p: number, nowMs: number, owner: number): number {
    this.lock(p, owner);
    const ahead = (this.edt[p] as number) - nowMs;
    this.unlock(p);
    return ahead > HORIZON_MS ? ahead - HORIZON_MS : 0;
  }

  /** Recovery: releases the port locks a dead shard's worker held (owner = shard + 1). */
  releaseLocks(owner: number): void {
    for (let p = 0; p < this.ports; p++) Atomics.compareExchange(this.i, p * LI_WORDS + LI_LOCK, owner, 0);
  }
}

const DL_MAGIC = 0x444c4e31; // "DLN1"
const DH_MAGIC = 0;
const DH_CAP = 1;
const DH_COUNT = 2;
const DH_PORTS = 3;
const DH_WORDS = 4;
const DE_SLOT = 0;
const DE_PORT = 1;
const DE_COPIES = 2;
const DE_LEN = 3;
const DE_WORDS = 4;
const DP_BYTES = 0;
const DP_PKTS = 1;
const DP_WORDS = 2;

/** One shard's delay line: packets waiting for their send time (layout above). */
export class DelayLine {
  readonly sab: SharedArrayBuffer;
  readonly cap: number;
  readonly ports: number;
  private readonly i: Int32Array;
  private readonly f: Float64Array;
  private readonly pBase: number;
  /** Filled by pop(). */
  outSlot = -1;
  outPort = -1;
  outCopies = 0;
  outDue = 0;

  static bytesFor(cap: number, ports: number): number {
    const words = DH_WORDS + cap * DE_WORDS + ports * DP_WORDS;
    return ((words + 1) & ~1) * 4 + (1 + cap * 2) * 8;
  }

  static create(cap: number, ports: number): DelayLine {
    const d = new DelayLine(new SharedArrayBuffer(DelayLine.bytesFor(cap, ports)), cap, ports);
    d.reset();
    return d;
  }

  constructor(sab: SharedArrayBuffer, cap: number, ports: number) {
    this.sab = sab;
    this.cap = cap;
    this.ports = ports;
    const words = DH_WORDS + cap * DE_WORDS + ports * DP_WORDS;
    const aligned = (words + 1) & ~1;
    this.i = new Int32Array(sab, 0, aligned);
    this.f = new Float64Array(sab, aligned * 4, 1 + cap * 2);
    this.pBase = DH_WORDS + cap * DE_WORDS;
  }

  reset(): void {
    this.i.fill(0);
    this.f.fill(0);
    this.i[DH_CAP] = this.cap;
    this.i[DH_PORTS] = this.ports;
    this.i[DH_MAGIC] = DL_MAGIC;
  }

  get count(): number {
    return this.i[DH_COUNT] as number;
  }

  portBytes(p: number): number {
    return this.i[this.pBase + p * DP_WORDS + DP_BYTES] as number;
  }

  portPackets(p: number): number {
    return this.i[this.pBase + p * DP_WORDS + DP_PKTS] as number;
  }

  /** Send time of the earliest packet, or Infinity. */
  nextDue(): number {
    return (this.i[DH_COUNT] as number) > 0 ? (this.f[1] as number) : Infinity;
  }

  /** Adds a packet; the caller has checked the caps (count < cap always holds: one entry per slot). */
  push(slot: number, port: number, len: number, copies: number, due: number): void {
    const I = this.i;
    const F = this.f;
    const n = I[DH_COUNT] as number;
    if (n >= this.cap) throw new Error('delay line: more entries than slots'); // programmer error
    const seq = F[0] as number;
    F[0] = seq + 1;
    this.write(n, slot, port, copies, len, due, seq);
    I[DH_COUNT] = n + 1;
    const pb = this.pBase + port * DP_WORDS;
    I[pb + DP_BYTES] = (I[pb + DP_BYTES] as number) + len;
    I[pb + DP_PKTS] = (I[pb + DP_PKTS] as number) + 1;
    this.siftUp(n);
  }

  /** Takes the earliest packet if it is due at nowMs (outSlot/outPort/outCopies); false otherwise. */
  pop(nowMs: number): boolean {
    const I = this.i;
    const n = I[DH_COUNT] as number;
    if (n === 0 || (this.f[1] as number) > nowMs) return false;
    this.outSlot = I[DH_WORDS + DE_SLOT] as number;
    this.outPort = I[DH_WORDS + DE_PORT] as number;
    this.outCopies = I[DH_WORDS + DE_COPIES] as number;
    this.outDue = this.f[1] as number;
    const len = I[DH_WORDS + DE_LEN] as number;
    const pb = this.pBase + this.outPort * DP_WORDS;
    I[pb + DP_BYTES] = (I[pb + DP_BYTES] as number) - len;
    I[pb + DP_PKTS] = (I[pb + DP_PKTS] as number) - 1;
    this.move(n - 1, 0);
    I[DH_COUNT] = n - 1;
    if (n > 1) this.siftDown(0);
    return true;
  }

  private write(e: number, slot: number, port: number, copies: number, len: number, due: number, seq: number): void {
    const b = DH_WORDS + e * DE_WORDS;
    this.i[b + DE_SLOT] = slot;
    this.i[b + DE_PORT] = port;
    this.i[b + DE_COPIES] = copies;
    this.i[b + DE_LEN] = len;
    this.f[1 + e * 2] = due;
    this.f[2 + e * 2] = seq;
  }

  private move(from: number, to: number): void {
    const a = DH_WORDS + from * DE_WORDS;
    const b = DH_WORDS + to * DE_WORDS;
    const I = this.i;
    I[b] = I[a] as number;
    I[b + 1] = I[a + 1] as number;
    I[b + 2] = I[a + 2] as number;
    I[b + 3] = I[a + 3] as number;
    this.f[1 + to * 2] = this.f[1 + from * 2] as number;
    this.f[2 + to * 2] = this.f[2 + from * 2] as number;
  }

  private less(a: number, b: number): boolean {
    const F = this.f;
    const da = F[1 + a * 2] as number;
    const db = F[1 + b * 2] as number;
    return da < db || (da === db && (F[2 + a * 2] as number) < (F[2 + b * 2] as number));
  }

  private swap(a: number, b: number): void {
    const I = this.i;
    const ba = DH_WORDS + a * DE_WORDS;
    const bb = DH_WORDS + b * DE_WORDS;
    for (let k = 0; k < DE_WORDS; k++) {
      const t = I[ba + k] as number;
      I[ba + k] = I[bb + k] as number;
      I[bb + k] = t;
    }
    const F = this.f;
    for (let k = 1; k <= 2; k++) {
      const t = F[k + a * 2] as number;
      F[k + a * 2] = F[k + b * 2] as number;
      F[k + b * 2] = t;
    }
  }

  private siftUp(e: number): void {
    while (e > 0) {
      const parent = (e - 1) >> 1;
      if (!this.less(e, parent)) return;
      this.swap(e, parent);
      e = parent;
    }
  }

  private siftDown(e: number): void {
    const n = this.i[DH_COUNT] as number;
    for (;;) {
      const l = 2 * e + 1;
      if (l >= n) return;
      const r = l + 1;
      const c = r < n && this.less(r, l) ? r : l;
      if (!this.less(c, e)) return;
      this.swap(c, e);
      e = c;
    }
  }

  /**
   * After the owning worker died (possibly mid-update): keeps every entry whose slot is in
   * range and not already claimed in `queued` (the egress queue's repair()), marks those
   * slots queued, recounts and re-heapifies. An entry lost to a torn swap leaves its slot
   * unmarked, so slot recovery frees it. Not for the hot path.
   */
  repair(queued: Uint8Array): number {
    const I = this.i;
    if (I[DH_MAGIC] !== DL_MAGIC) {
      this.reset();
      return 0;
    }
    const n0 = Math.min(Math.max(I[DH_COUNT] as number, 0), this.cap);
    let n = 0;
    I.fill(0, this.pBase, this.pBase + this.ports * DP_WORDS);
    for (let e = 0; e < n0; e++) {
      const b = DH_WORDS + e * DE_WORDS;
      const s = I[b + DE_SLOT] as number;
      const p = I[b + DE_PORT] as number;
      const len = I[b + DE_LEN] as number;
      if (s < 0 || s >= queued.length || queued[s] !== 0 || p < 0 || p >= this.ports || len < 0) continue;
      queued[s] = 1;
      if (e !== n) this.move(e, n);
      const pb = this.pBase + p * DP_WORDS;
      I[pb + DP_BYTES] = (I[pb + DP_BYTES] as number) + len;
      I[pb + DP_PKTS] = (I[pb + DP_PKTS] as number) + 1;
      n++;
    }
    I[DH_COUNT] = n;
    for (let e = (n >> 1) - 1; e >= 0; e--) this.siftDown(e);
    return n;
  }
}

/**
 * The worker's side: a copy of each port's settings (refreshed when LI_GEN moves), the
 * random stream and Gilbert-Elliott state of each port, and the admit/pop steps. Nothing
 * here allocates per packet.
 */
export class ImpairShard {
  private readonly par: Float64Array;
  private readonly seen: Int32Array;
  private readonly rng: Uint32Array;
  private readonly geBad: Uint8Array;
  /** Per port: 1 while impairments are on (the copy in `par`). */
  private readonly on: Uint8Array;
  /** Earliest time (ms) the loop has something to do for a gate or the delay line. */
  wakeMs = Infinity;

  constructor(
    readonly table: LinkTable,
    readonly line: DelayLine,
    readonly shard: number,
    /** Packets one port may hold in the delay line (so one port cannot take the whole slab). */
    readonly maxPortPackets: number,
  ) {
    const ports = table.ports;
    this.par = new Float64Array(ports * LK_WORDS);
    this.seen = new Int32Array(ports).fill(-1);
    this.rng = new Uint32Array(ports);
    this.geBad = new Uint8Array(ports);
    this.on = new Uint8Array(ports);
  }

  /** True when port p is impaired (re-reads its settings after a change). */
  enabled(p: number): boolean {
    const g = this.table.generation(p);
    if (g !== this.seen[p]) this.refresh(p, g);
    return this.on[p] === 1;
  }

  private refresh(p: number, g: number): void {
    if ((g & 1) !== 0) return; // being written: keep the old copy, look again next round
    const b = p * LK_WORDS;
    const F = this.table.f;
    const P = this.par;
    for (let k = 0; k < LK_WORDS; k++) P[b + k] = F[b + k] as number;
    if (this.table.generation(p) !== g) return; // torn: look again next round
    this.seen[p] = g;
    this.on[p] = P[b + LK_ON] === 1 ? 1 : 0;
    this.geBad[p] = 0;
    this.rng[p] = seedState(P[b + LK_SEED] as number, p, this.shard);
  }

  /** Resets wakeMs to the delay line's next send time; call once per transmit round. */
  beginRound(): void {
    this.wakeMs = this.line.nextDue();
  }

  /** Step 1: may port p move a packet from its queue to the delay line now? */
  mayAdmit(p: number, nowMs: number): boolean {
    if ((this.par[p * LK_WORDS + LK_RATE] as number) <= 0) return true;
    const wait = this.table.gateMs(p, nowMs, this.shard + 1);
    if (wait <= 0) return true;
    if (nowMs + wait < this.wakeMs) this.wakeMs = nowMs + wait;
    return false;
  }

  /** Steps 2-4 for a packet taken from port p's queue: IMPAIR_QUEUED, IMPAIR_LOSS or IMPAIR_OVERLIMIT. */
  admit(p: number, slot: number, len: number, nowMs: number): number {
    const P = this.par;
    const b = p * LK_WORDS;
    // 2. loss
    if (P[b + LK_GE] === 1) {
      const bad = this.geBad[p] === 1;
      const lost = this.uniform(p) < (bad ? (P[b + LK_GE_BAD] as number) : (P[b + LK_GE_GOOD] as number));
      if (this.uniform(p) < (bad ? (P[b + LK_GE_R] as number) : (P[b + LK_GE_P] as number))) this.geBad[p] = bad ? 0 : 1;
      if (lost) return IMPAIR_LOSS;
    } else if ((P[b + LK_LOSS] as number) > 0 && this.uniform(p) < (P[b + LK_LOSS] as number)) return IMPAIR_LOSS;
    // 4. caps of the delay line (before the rate: a dropped packet takes none of it)
    if (this.line.portBytes(p) + len > (P[b + LK_LIMIT] as number) || this.line.portPackets(p) >= this.maxPortPackets) return IMPAIR_OVERLIMIT;
    // 3. departure on the port's rate
    const rate = P[b + LK_RATE] as number;
    const dep = rate > 0 ? this.table.depart(p, nowMs, len, rate, this.shard + 1) : nowMs;
    // 4. send time, duplicate
    let due = dep;
    const reorder = P[b + LK_REORDER] as number;
    if (!(reorder > 0 && this.uniform(p) < reorder)) due = dep + this.delaySample(p);
    const dup = P[b + LK_DUP] as number;
    const copies = dup > 0 && this.uniform(p) < dup ? 2 : 1;
    this.line.push(slot, p, len, copies, due);
    if (due < this.wakeMs) this.wakeMs = due;
    return IMPAIR_QUEUED;
  }

  /** Delay of one packet at port p (ms): delay ± jitter, never below 0. */
  delaySample(p: number): number {
    const P = this.par;
    const b = p * LK_WORDS;
    const d = P[b + LK_DELAY] as number;
    const j = P[b + LK_JITTER] as number;
    if (j <= 0) return d;
    let x: number;
    if (P[b + LK_DIST] === 1) {
      // Box-Muller, cut at 3 standard deviations
      const u1 = 1 - this.uniform(p);
      const z = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * this.uniform(p));
      x = d + j * (z > 3 ? 3 : z < -3 ? -3 : z);
    } else x = d + j * (2 * this.uniform(p) - 1);
    return x > 0 ? x : 0;
  }

  /** [0, 1) from port p's stream (xorshift32). */
  uniform(p: number): number {
    let x = this.rng[p] as number;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.rng[p] = x;
    return (x >>> 0) / 4294967296;
  }

  /** Step 5: the next due packet (line.outSlot/outPort/outCopies), or false. */
  popDue(nowMs: number): boolean {
    return this.line.pop(nowMs);
  }
}

/** A non-zero xorshift state from the user's seed, the port and the shard. */
function seedState(seed: number, port: number, shard: number): number {
  let h = (seed >>> 0) ^ Math.imul(port + 1, 0x9e3779b1) ^ Math.imul(shard + 1, 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b);
  h ^= h >>> 16;
  return h === 0 ? 1 : h >>> 0;
}
