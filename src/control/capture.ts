/**
 * Packet capture, control-thread side: arms capture slots in the shards' capture rings
 * (src/tables/capture.ts), drains the rings, and produces pcap or pcapng bytes for each
 * running capture. Up to MAX_CAPTURES (8) captures run at once, each with its own endpoint,
 * verdict filter, snap length, format and limits; a packet several of them match is
 * delivered to each. Transport-neutral: a capture writes to a CaptureSink (callbacks);
 * src/api/capture-stream.ts serves it over HTTP.
 *
 * A capture, step by step:
 *   1. start(): take a free slot (none: CaptureBusyError, HTTP 409); write the slot's filter
 *      into every ring, then publish a new ARMED word (new generation, the slot's bit set);
 *      remember the slot's LOST counters; emit the pcap/pcapng header.
 *   2. every DRAIN_INTERVAL_MS, one drain for all captures: read each ring's records; give
 *      each record to the capture of every slot it matched, if that capture was armed at or
 *      before the record's generation (a late record of a slot's previous capture goes to
 *      nobody); per capture, order its records by time (shards run in parallel) and emit at
 *      most the packets still wanted as one chunk. A capture whose sink is not ready (a slow
 *      client) does not hold up the others: its records are counted lost, never buffered.
 *   3. stop on `count` packets, on `durationS`, or on stop() (Ctrl-C, client gone): publish
 *      ARMED without the slot's bit, drain once more (up to `count`), free the slot, and
 *      report packets and lost records. The timer runs only while a capture does.
 *
 * pcap format (libpcap 2.4, little-endian, microsecond timestamps):
 *   global header, 24 bytes: magic 0xa1b2c3d4, version 2.4, thiszone 0, sigfigs 0, snaplen,
 *     linktype 101 (LINKTYPE_RAW: each packet starts with its IPv4 or IPv6 header);
 *   per packet, 16 bytes: ts_sec, ts_usec, incl_len, orig_len; then incl_len bytes.
 */
import { TunswitchError } from './errors.js';
import {
  armedAtOrBefore,
  armedWord,
  CaptureRing,
  CR_CAP_LEN,
  CR_ORIG_LEN,
  CR_TAG,
  CR_TS_SEC,
  CR_TS_USEC,
  CR_VERDICT,
  CR_SRC_EP,
  CR_DST_EP,
  CR_DROPPED,
  GENERATION_MAX,
  MAX_CAPTURES,
  NO_EP_INDEX,
  SLOT_BITS,
  tagGeneration,
  VERDICT_ANY,
  VERDICT_DROPPED_BIT,
  VERDICT_FORWARDED_BIT,
} from '../tables/capture.js';
import { dropReasonText } from '../datapath/drop.js';

export { MAX_CAPTURES };
export const PCAP_MAGIC = 0xa1b2c3d4;
export const PCAP_VERSION_MAJOR = 2;
export const PCAP_VERSION_MINOR = 4;
export const LINKTYPE_RAW = 101;
export const PCAP_GLOBAL_HEADER_BYTES = 24;
export const PCAP_RECORD_HEADER_BYTES = 16;

/** Drain period. With DEFAULT_CAPTURE_SLOTS (512) a shard can capture ~25k packets/s without loss. */
export const DRAIN_INTERVAL_MS = 20;
/** Largest count and duration a request may ask for. */
export const MAX_CAPTURE_COUNT = 10_000_000;
export const MAX_CAPTURE_DURATION_S = 86_400;

export type CaptureVerdict = 'FORWARDED' | 'DROPPED';

/** The API request body (checked in src/api/capture-stream.ts). */
export interface CaptureRequest {
  /** Endpoint name or index. */
  endpoint: string;
  count?: number;
  verdict?: CaptureVerdict;
  /** Seconds. */
  duration?: number;
  /** Bytes kept per packet (1-65535; at most the rings' slot size). */
  snaplen?: number;
  /** pcap (default) or pcapng, whose packet comments carry verdict, drop reason and direction. */
  format?: CaptureFormat;
}

export type CaptureFormat = 'pcap' | 'pcapng';

export interface CaptureOptions {
  format?: CaptureFormat;
  /** Endpoint index, -1 for every endpoint. */
  endpoint: number;
  /** Stop after this many packets (default: no limit). */
  count?: number;
  verdict?: CaptureVerdict;
  /** Stop after this many seconds (default: no limit). */
  durationS?: number;
  /** Bytes kept per packet (default and most: the rings' slot size). */
  snaplen?: number;
}

export type CaptureEndReason = 'count' | 'duration' | 'stopped';

export interface CaptureSummary {
  packets: number;
  /**
   * Matching packets not delivered: their record was lost because a ring was full, or the
   * sink was not ready when they were drained.
   */
  lost: number;
  reason: CaptureEndReason;
}

/** Where a capture sends its bytes (an HTTP response, a file, a test's memory). */
export interface CaptureSink {
  data(chunk: Buffer): void;
  end(summary: CaptureSummary): void;
  /** False while the consumer cannot take more (its packets are counted lost). Default: always ready. */
  ready?(): boolean;
}

export interface CaptureHandle {
  /** Ends the capture now (idempotent). */
  stop(): void;
  readonly done: Promise<CaptureSummary>;
}

/** Every capture slot is taken. The API answers 409. */
export class CaptureBusyError extends TunswitchError {
  readonly status = 409;
  constructor() {
    super('ECAPTURE_BUSY', `all ${MAX_CAPTURES} capture slots are busy (${MAX_CAPTURES} captures run at once); stop one (Ctrl-C) and try again`);
  }
}

// ---------------------------------------------------------------------------------------------
// pcap bytes

export function pcapGlobalHeader(snaplen: number): Buffer {
  const b = Buffer.alloc(PCAP_GLOBAL_HEADER_BYTES);
  b.writeUInt32LE(PCAP_MAGIC, 0);
  b.writeUInt16LE(PCAP_VERSION_MAJOR, 4);
  b.writeUInt16LE(PCAP_VERSION_MINOR, 6);
  b.writeInt32LE(0, 8); // thiszone: timestamps are UTC
  b.writeUInt32LE(0, 12); // sigfigs
  b.writeUInt32LE(snaplen, 16);
  b.writeUInt32LE(LINKTYPE_RAW, 20);
  return b;
}

/** Writes one record header at `b[off..off+16)`. */
export function writePcapRecordHeader(b: Buffer, off: number, tsSec: number, tsUsec: number, inclLen: number, origLen: number): void {
  b.writeUInt32LE(tsSec >>> 0, off);
  b.writeUInt32LE(tsUsec >>> 0, off + 4);
  b.writeUInt32LE(inclLen >>> 0, off + 8);
  b.writeUInt32LE(origLen >>> 0, off + 12);
}

/** One pcap record (header and data) as a new Buffer. */
export function pcapRecord(tsSec: number, tsUsec: number, data: Uint8Array, origLen: number): Buffer {
  const b = Buffer.alloc(PCAP_RECORD_HEADER_BYTES + data.length);
  writePcapRecordHeader(b, 0, tsSec, tsUsec, data.length, origLen);
  b.set(data, PCAP_RECORD_HEADER_BYTES);
  return b;
}

// ---------------------------------------------------------------------------------------------
// pcapng bytes (the pcapng spec, draft-ietf-opsawg-pcapng): little-endian blocks, each
//   type u32, total length u32, body, total length u32 again; bodies padded to 4 bytes.
//   SHB (0x0A0D0D0A): byte-order magic 0x1A2B3C4D, version 1.0, section length -1.
//   IDB (1): link type u16 = 101 (raw IP), reserved u16, snaplen u32, option if_tsresol = 6 (µs).
//   EPB (6): interface 0, timestamp high/low u32 (µs), captured len, original len, data,
//     options: opt_comment (1) with "verdict=... reason=... direction=...", opt_endofopt.

export const PCAPNG_SHB = 0x0a0d0d0a;
export const PCAPNG_IDB = 1;
export const PCAPNG_EPB = 6;
export const PCAPNG_BYTE_ORDER_MAGIC = 0x1a2b3c4d;
const OPT_COMMENT = 1;
const OPT_IF_TSRESOL = 9;

const pad4 = (n: number): number => (n + 3) & ~3;

function block(type: number, body: Buffer): Buffer {
  const total = 12 + body.length;
  const b = Buffer.alloc(total);
  b.writeUInt32LE(type, 0);
  b.writeUInt32LE(total, 4);
  body.copy(b, 8);
  b.writeUInt32LE(total, total - 4);
  return b;
}

function option(code: number, value: Buffer): Buffer {
  const b = Buffer.alloc(4 + pad4(value.length));
  b.writeUInt16LE(code, 0);
  b.writeUInt16LE(value.length, 2);
  value.copy(b, 4);
  return b;
}

const END_OF_OPTIONS = Buffer.alloc(4);

/** Section header and interface description (raw IP, µs timestamps): what a pcapng capture starts with. */
export function pcapngHeader(snaplen: number): Buffer {
  const shb = Buffer.alloc(16);
  shb.writeUInt32LE(PCAPNG_BYTE_ORDER_MAGIC, 0);
  shb.writeUInt16LE(1, 4);
  shb.writeUInt16LE(0, 6);
  shb.writeInt32LE(-1, 8);
  shb.writeInt32LE(-1, 12);
  const idb = Buffer.alloc(8);
  idb.writeUInt16LE(LINKTYPE_RAW, 0);
  idb.writeUInt32LE(snaplen, 4);
  return Buffer.concat([block(PCAPNG_SHB, shb), block(PCAPNG_IDB, Buffer.concat([idb, option(OPT_IF_TSRESOL, Buffer.from([6])), END_OF_OPTIONS]))]);
}

/** One enhanced packet block with a comment. */
export function pcapngPacket(tsSec: number, tsUsec: number, data: Uint8Array, origLen: number, comment: string): Buffer {
  const ts = tsSec * 1_000_000 + tsUsec;
  const fixed = Buffer.alloc(20);
  fixed.writeUInt32LE(0, 0);
  fixed.writeUInt32LE(Math.floor(ts / 2 ** 32), 4);
  fixed.writeUInt32LE(ts % 2 ** 32, 8);
  fixed.writeUInt32LE(data.length, 12);
  fixed.writeUInt32LE(origLen, 16);
  const padded = Buffer.alloc(pad4(data.length));
  padded.set(data, 0);
  return block(PCAPNG_EPB, Buffer.concat([fixed, padded, option(OPT_COMMENT, Buffer.from(comment, 'utf8')), END_OF_OPTIONS]));
}

/**
 * The packet comment: `verdict=DROPPED reason=133 (Policy denied) direction=ingress`.
 * Direction is seen from the captured endpoint: egress when it sent the packet, ingress when
 * the packet is for it.
 */
export function packetComment(verdictWord: number, srcEp: number, dstEp: number, endpoint: number, reasonText: (code: number) => string): string {
  const dropped = (verdictWord & CR_DROPPED) !== 0;
  const code = verdictWord & 0xff;
  const dir = endpoint >= 0 ? (srcEp === endpoint ? 'egress' : dstEp === endpoint ? 'ingress' : 'transit') : srcEp !== NO_EP_INDEX ? 'egress' : 'ingress';
  return `verdict=${dropped ? 'DROPPED' : 'FORWARDED'}${dropped ? ` reason=${code} (${reasonText(code)})` : ''} direction=${dir}`;
}

// ---------------------------------------------------------------------------------------------
// the controller

interface Pending {
  sec: number;
  usec: number;
  rec: Buffer;
}

/** One running capture: its slot, the generation it was armed at, its filter and progress. */
interface Session {
  readonly slot: number;
  readonly armedGen: number;
  readonly endpoint: number;
  readonly snaplen: number;
  readonly ng: boolean;
  readonly limit: number;
  readonly sink: CaptureSink;
  /** Each ring's LOST word of this slot when the capture started. */
  readonly lostAt: number[];
  packets: number;
  /** Records drained while the sink was not ready. */
  unready: number;
  finished: boolean;
  /** Records of the current drain (emptied after each). */
  got: Pending[];
  deadline: ReturnType<typeof setTimeout> | null;
  handle: CaptureHandle;
  resolveDone: (s: CaptureSummary) => void;
}

export class CaptureController {
  readonly rings: CaptureRing[];
  /** Snap length used when a capture asks for none (the rings' slot size). */
  readonly maxSnaplen: number;
  /** Capture slot i's session, or null when the slot is free. */
  private readonly slots: (Session | null)[] = new Array<Session | null>(MAX_CAPTURES).fill(null);
  /** Bit i set while slot i is armed (what the rings' ARMED word carries). */
  private armedSlots = 0;
  private generation = 0;
  private timer: ReturnType<typeof setInterval> | null = null;

  constructor(
    sabs: readonly SharedArrayBuffer[],
    private readonly drainMs = DRAIN_INTERVAL_MS,
  ) {
    this.rings = sabs.map((s) => new CaptureRing(s));
    this.maxSnaplen = this.rings.reduce((m, r) => Math.min(m, r.slotData), this.rings[0]?.slotData ?? 0);
    // A control thread that restarts finds rings left armed: nobody reads them any more.
    for (const r of this.rings) r.disarm();
  }

  /** Captures running now. */
  get active(): number {
    let n = 0;
    for (const s of this.slots) if (s !== null) n++;
    return n;
  }

  /** True when every slot is taken (start() would throw CaptureBusyError). */
  get busy(): boolean {
    return this.active === MAX_CAPTURES;
  }

  /**
   * Starts a capture. Throws CaptureBusyError when all slots are taken. The header goes to
   * the sink before start() returns; sink.end() is called exactly once.
   */
  start(opts: CaptureOptions, sink: CaptureSink): CaptureHandle {
    if (this.rings.length === 0) throw new TunswitchError('ENOT_SUPPORTED', 'packet capture is not available (no capture rings)');
    const slot = this.slots.indexOf(null);
    if (slot < 0) throw new CaptureBusyError();
    const snaplen = opts.snaplen !== undefined && opts.snaplen > 0 && opts.snaplen < this.maxSnaplen ? opts.snaplen : this.maxSnaplen;
    const mask = opts.verdict === 'FORWARDED' ? VERDICT_FORWARDED_BIT : opts.verdict === 'DROPPED' ? VERDICT_DROPPED_BIT : VERDICT_ANY;
    for (const r of this.rings) r.setSlot(slot, opts.endpoint, mask, snaplen);
    const armedGen = this.publish(this.armedSlots | (1 << slot));
    let resolveDone!: (s: CaptureSummary) => void;
    const done = new Promise<CaptureSummary>((res) => {
      resolveDone = res;
    });
    const s: Session = {
      slot,
      armedGen,
      endpoint: opts.endpoint,
      snaplen,
      ng: opts.format === 'pcapng',
      limit: opts.count ?? Infinity,
      sink,
      lostAt: this.rings.map((r) => r.slotLost(slot)),
      packets: 0,
      unready: 0,
      finished: false,
      got: [],
      deadline: null,
      handle: { stop: () => this.finish(s, 'stopped'), done },
      resolveDone,
    };
    this.slots[slot] = s;
    sink.data(s.ng ? pcapngHeader(snaplen) : pcapGlobalHeader(snaplen));
    if (opts.durationS !== undefined) s.deadline = setTimeout(() => this.finish(s, 'duration'), opts.durationS * 1000);
    if (this.timer === null) this.timer = setInterval(() => this.tick(), this.drainMs);
    return s.handle;
  }

  /** Ends every running capture (shutdown). */
  stopAll(): void {
    for (const s of this.slots) if (s !== null) this.finish(s, 'stopped');
  }

  /** Publishes the set of armed slots under a new generation; returns the generation. */
  private publish(slots: number): number {
    this.generation = this.generation >= GENERATION_MAX ? 1 : this.generation + 1;
    this.armedSlots = slots & SLOT_BITS;
    const word = armedWord(this.generation, this.armedSlots);
    for (const r of this.rings) r.publish(word);
    return this.generation;
  }

  private tick(): void {
    this.drain();
    for (const s of this.slots) if (s !== null && !s.finished && s.packets >= s.limit) this.finish(s, 'count');
  }

  /** One pass over every ring: each record to the captures it belongs to, then emit per capture. */
  private drain(): void {
    for (const r of this.rings) {
      const n = r.available();
      const words = r.words;
      for (let k = 0; k < n; k++) {
        const w = r.peek(k);
        const tag = words[w + CR_TAG] as number;
        const g = tagGeneration(tag);
        for (let i = 0; i < MAX_CAPTURES; i++) {
          if ((tag & (1 << i)) === 0) continue;
          const s = this.slots[i];
          if (s === null || s === undefined || !armedAtOrBefore(s.armedGen, g)) continue;
          if (s.packets >= s.limit) continue;
          if (s.sink.ready !== undefined && !s.sink.ready()) {
            s.unready++;
            continue;
          }
          s.got.push(this.record(r, w, s));
        }
      }
      if (n > 0) r.consume(n);
    }
    for (const s of this.slots) {
      if (s === null || s.got.length === 0) continue;
      const got = s.got;
      s.got = [];
      got.sort((a, b) => a.sec - b.sec || a.usec - b.usec);
      const take = Math.min(got.length, s.limit - s.packets);
      s.packets += take;
      s.sink.data(take === 1 ? (got[0] as Pending).rec : Buffer.concat(got.slice(0, take).map((p) => p.rec)));
    }
  }

  /** The pcap or pcapng record of ring record `w` for capture `s` (cut to its snap length). */
  private record(r: CaptureRing, w: number, s: Session): Pending {
    const words = r.words;
    const stored = words[w + CR_CAP_LEN] as number;
    const cap = stored < s.snaplen ? stored : s.snaplen;
    const sec = words[w + CR_TS_SEC] as number;
    const usec = words[w + CR_TS_USEC] as number;
    const orig = words[w + CR_ORIG_LEN] as number;
    const d = r.dataOffset(w);
    if (s.ng) {
      const comment = packetComment(words[w + CR_VERDICT] as number, words[w + CR_SRC_EP] as number, words[w + CR_DST_EP] as number, s.endpoint, dropReasonText);
      return { sec, usec, rec: pcapngPacket(sec, usec, r.bytes.subarray(d, d + cap), orig, comment) };
    }
    const rec = Buffer.alloc(PCAP_RECORD_HEADER_BYTES + cap);
    writePcapRecordHeader(rec, 0, sec, usec, cap, orig);
    rec.set(r.bytes.subarray(d, d + cap), PCAP_RECORD_HEADER_BYTES);
    return { sec, usec, rec };
  }

  private finish(s: Session, reason: CaptureEndReason): void {
    if (s.finished) return;
    s.finished = true;
    if (s.deadline !== null) clearTimeout(s.deadline);
    this.publish(this.armedSlots & ~(1 << s.slot));
    // What the rings hold now still goes to every capture (this one included, up to its count).
    this.drain();
    this.slots[s.slot] = null;
    let lost = s.unready;
    this.rings.forEach((r, i) => {
      lost += (r.slotLost(s.slot) - (s.lostAt[i] as number)) >>> 0;
    });
    if (this.armedSlots === 0 && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
    const summary: CaptureSummary = { packets: s.packets, lost, reason };
    s.sink.end(summary);
    s.resolveDone(summary);
    // The last drain may have completed other captures' counts.
    for (const o of this.slots) if (o !== null && !o.finished && o.packets >= o.limit) this.finish(o, 'count');
  }
}
