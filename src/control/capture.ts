/**
 * Packet capture, control-thread side: arms the shards' capture rings (src/tables/capture.ts),
 * drains them, and produces pcap bytes for `POST /v1/capture` and `tunswitch capture`.
 *
 * A capture, step by step:
 *   1. start(): refuse if one already runs (CaptureBusyError, HTTP 409); remember each ring's
 *      LOST counter; arm every ring with a new session number and the filter; emit the pcap
 *      global header.
 *   2. every DRAIN_INTERVAL_MS: read each ring's records of this session (others are skipped),
 *      order them by time (shards run in parallel), emit at most the packets still wanted as
 *      one chunk. While the sink is not ready (a slow client), skip the drain: the rings fill
 *      and count what they lose, the server never buffers without bound.
 *   3. stop on `count` packets, on `durationS`, or on stop() (client gone): disarm every
 *      ring, drain what is left (up to `count`), and report packets and lost records.
 *
 * pcap format (libpcap 2.4, little-endian, microsecond timestamps):
 *   global header, 24 bytes: magic 0xa1b2c3d4, version 2.4, thiszone 0, sigfigs 0, snaplen,
 *     linktype 101 (LINKTYPE_RAW: each packet starts with its IPv4 or IPv6 header);
 *   per packet, 16 bytes: ts_sec, ts_usec, incl_len, orig_len; then incl_len bytes.
 */
import { TunswitchError } from './errors.js';
import {
  CaptureRing,
  CR_CAP_LEN,
  CR_ORIG_LEN,
  CR_SESSION,
  CR_TS_SEC,
  CR_TS_USEC,
  CR_VERDICT,
  CR_SRC_EP,
  CR_DST_EP,
  CR_DROPPED,
  NO_EP_INDEX,
  VERDICT_ANY,
  VERDICT_DROPPED_BIT,
  VERDICT_FORWARDED_BIT,
} from '../tables/capture.js';
import type { ServerResponse } from 'node:http';
import { dropReasonText } from '../datapath/drop.js';

export const PCAP_MAGIC = 0xa1b2c3d4;
export const PCAP_VERSION_MAJOR = 2;
export const PCAP_VERSION_MINOR = 4;
export const LINKTYPE_RAW = 101;
export const PCAP_GLOBAL_HEADER_BYTES = 24;
export const PCAP_RECORD_HEADER_BYTES = 16;
export const PCAP_CONTENT_TYPE = 'application/vnd.tcpdump.pcap';
/** HTTP trailers the API sends when a capture ends. */
export const TRAILER_PACKETS = 'x-tunswitch-capture-packets';
export const TRAILER_LOST = 'x-tunswitch-capture-lost';

/** Drain period. With DEFAULT_CAPTURE_SLOTS (512) a shard can capture ~25k packets/s without loss. */
export const DRAIN_INTERVAL_MS = 20;
/** Largest count and duration a request may ask for. */
export const MAX_CAPTURE_COUNT = 10_000_000;
export const MAX_CAPTURE_DURATION_S = 86_400;
/** Unsent response bytes above which the server skips drains (the rings count the loss). */
export const CAPTURE_HIGH_WATER_BYTES = 4 * 1024 * 1024;

export type CaptureVerdict = 'FORWARDED' | 'DROPPED';

/** The API request body, checked by checkCaptureRequest. */
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
  /** Matching packets whose record was lost because a ring was full. */
  lost: number;
  reason: CaptureEndReason;
}

/** Where a capture sends its bytes. */
export interface CaptureSink {
  data(chunk: Buffer): void;
  end(summary: CaptureSummary): void;
  /** False while the consumer cannot take more (drains are skipped). Default: always ready. */
  ready?(): boolean;
}

export interface CaptureHandle {
  /** Ends the capture now (idempotent). */
  stop(): void;
  readonly done: Promise<CaptureSummary>;
}

/** A second capture while one runs. The API answers 409. */
export class CaptureBusyError extends TunswitchError {
  readonly status = 409;
  constructor() {
    super('ECAPTURE_BUSY', 'a capture is already running (one at a time); stop it first');
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
// request checks

function bad(msg: string): never {
  throw new TunswitchError('EBAD_REQUEST', msg);
}

const show = (v: unknown): string => JSON.stringify(v) ?? String(v);

/** Checks a POST /v1/capture body; errors name the field (code EBAD_REQUEST). */
export function checkCaptureRequest(v: unknown): CaptureRequest {
  if (v === undefined) bad('body: expected a JSON object, got an empty body');
  if (typeof v !== 'object' || v === null || Array.isArray(v)) bad(`body: expected a JSON object, got ${Array.isArray(v) ? 'an array' : show(v)}`);
  const o = v as Record<string, unknown>;
  const known = ['endpoint', 'count', 'verdict', 'duration', 'snaplen', 'format'];
  for (const k of Object.keys(o)) if (!known.includes(k)) bad(`body.${k}: unknown field (known: ${known.join(', ')})`);
  let endpoint: string;
  if (typeof o.endpoint === 'string' && o.endpoint !== '') endpoint = o.endpoint;
  else if (typeof o.endpoint === 'number' && Number.isInteger(o.endpoint) && o.endpoint >= 0) endpoint = String(o.endpoint);
  else if (o.endpoint === undefined) bad('body.endpoint: is required (an endpoint name or index)');
  else bad(`body.endpoint: must be an endpoint name or index, got ${show(o.endpoint)}`);
  const req: CaptureRequest = { endpoint };
  if (o.count !== undefined) {
    if (typeof o.count !== 'number' || !Number.isInteger(o.count) || o.count < 1 || o.count > MAX_CAPTURE_COUNT) {
      bad(`body.count: must be an integer from 1 to ${MAX_CAPTURE_COUNT}, got ${show(o.count)}`);
    }
    req.count = o.count;
  }
  if (o.verdict !== undefined) {
    if (o.verdict !== 'FORWARDED' && o.verdict !== 'DROPPED') bad(`body.verdict: must be "FORWARDED" or "DROPPED", got ${show(o.verdict)}`);
    req.verdict = o.verdict;
  }
  if (o.duration !== undefined) {
    if (typeof o.duration !== 'number' || !Number.isFinite(o.duration) || o.duration <= 0 || o.duration > MAX_CAPTURE_DURATION_S) {
      bad(`body.duration: must be a number of seconds above 0 and at most ${MAX_CAPTURE_DURATION_S}, got ${show(o.duration)}`);
    }
    req.duration = o.duration;
  }
  if (o.snaplen !== undefined) {
    if (typeof o.snaplen !== 'number' || !Number.isInteger(o.snaplen) || o.snaplen < 1 || o.snaplen > 65535) bad(`body.snaplen: must be an integer from 1 to 65535, got ${show(o.snaplen)}`);
    req.snaplen = o.snaplen;
  }
  if (o.format !== undefined) {
    if (o.format !== 'pcap' && o.format !== 'pcapng') bad(`body.format: must be "pcap" or "pcapng", got ${show(o.format)}`);
    req.format = o.format;
  }
  return req;
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

export class CaptureController {
  readonly rings: CaptureRing[];
  private session = 0;
  private running: { stop(): void } | null = null;
  /** Snap length used when a capture asks for none (the rings' slot size). */
  readonly maxSnaplen: number;

  constructor(
    sabs: readonly SharedArrayBuffer[],
    private readonly drainMs = DRAIN_INTERVAL_MS,
  ) {
    this.rings = sabs.map((s) => new CaptureRing(s));
    this.maxSnaplen = this.rings.reduce((m, r) => Math.min(m, r.slotData), this.rings[0]?.slotData ?? 0);
    // A control thread that restarts finds rings left armed: nobody reads them any more.
    for (const r of this.rings) r.disarm();
  }

  get busy(): boolean {
    return this.running !== null;
  }

  /**
   * Starts a capture. Throws CaptureBusyError when one runs. The global header goes to the
   * sink before start() returns; sink.end() is called exactly once.
   */
  start(opts: CaptureOptions, sink: CaptureSink): CaptureHandle {
    if (this.running !== null) throw new CaptureBusyError();
    if (this.rings.length === 0) throw new TunswitchError('ENOT_SUPPORTED', 'packet capture is not available (no capture rings)');
    const limit = opts.count ?? Infinity;
    const snaplen = opts.snaplen !== undefined && opts.snaplen > 0 && opts.snaplen < this.maxSnaplen ? opts.snaplen : this.maxSnaplen;
    const mask = opts.verdict === 'FORWARDED' ? VERDICT_FORWARDED_BIT : opts.verdict === 'DROPPED' ? VERDICT_DROPPED_BIT : VERDICT_ANY;
    this.session = this.session >= 0x7ffffffe ? 1 : this.session + 1;
    const session = this.session;
    const lostAt = this.rings.map((r) => r.lost());
    let packets = 0;
    let finished = false;
    let resolveDone!: (s: CaptureSummary) => void;
    const done = new Promise<CaptureSummary>((res) => {
      resolveDone = res;
    });

    // Drops records of earlier sessions that nobody read.
    for (const r of this.rings) {
      const n = r.available();
      if (n > 0) r.consume(n);
    }
    for (const r of this.rings) r.arm(session, opts.endpoint, mask, snaplen);
    const ng = opts.format === 'pcapng';
    sink.data(ng ? pcapngHeader(snaplen) : pcapGlobalHeader(snaplen));

    const drain = (): void => {
      const got: Pending[] = [];
      for (const r of this.rings) {
        const n = r.available();
        for (let k = 0; k < n; k++) {
          const w = r.peek(k);
          const words = r.words;
          if ((words[w + CR_SESSION] as number) !== session) continue;
          const cap = words[w + CR_CAP_LEN] as number;
          const sec = words[w + CR_TS_SEC] as number;
          const usec = words[w + CR_TS_USEC] as number;
          const d = r.dataOffset(w);
          if (ng) {
            const comment = packetComment(words[w + CR_VERDICT] as number, words[w + CR_SRC_EP] as number, words[w + CR_DST_EP] as number, opts.endpoint, dropReasonText);
            got.push({ sec, usec, rec: pcapngPacket(sec, usec, r.bytes.subarray(d, d + cap), words[w + CR_ORIG_LEN] as number, comment) });
            continue;
          }
          const rec = Buffer.alloc(PCAP_RECORD_HEADER_BYTES + cap);
          writePcapRecordHeader(rec, 0, sec, usec, cap, words[w + CR_ORIG_LEN] as number);
          rec.set(r.bytes.subarray(d, d + cap), PCAP_RECORD_HEADER_BYTES);
          got.push({ sec, usec, rec });
        }
        if (n > 0) r.consume(n);
      }
      if (got.length === 0) return;
      got.sort((a, b) => a.sec - b.sec || a.usec - b.usec);
      const take = Math.min(got.length, limit - packets);
      if (take <= 0) return;
      packets += take;
      sink.data(take === 1 ? (got[0] as Pending).rec : Buffer.concat(got.slice(0, take).map((p) => p.rec)));
    };

    const finish = (reason: CaptureEndReason): void => {
      if (finished) return;
      finished = true;
      clearInterval(timer);
      if (deadline) clearTimeout(deadline);
      for (const r of this.rings) r.disarm();
      if (packets < limit) drain();
      let lost = 0;
      this.rings.forEach((r, i) => {
        lost += (r.lost() - (lostAt[i] as number)) >>> 0;
      });
      if (this.running === handle) this.running = null;
      const summary: CaptureSummary = { packets, lost, reason };
      sink.end(summary);
      resolveDone(summary);
    };

    const timer = setInterval(() => {
      if (sink.ready && !sink.ready()) return;
      drain();
      if (packets >= limit) finish('count');
    }, this.drainMs);
    const deadline = opts.durationS !== undefined ? setTimeout(() => finish('duration'), opts.durationS * 1000) : null;
    const handle: CaptureHandle = { stop: () => finish('stopped'), done };
    this.running = handle;
    return handle;
  }

  /** Ends a running capture, if any (shutdown). */
  stopAll(): void {
    this.running?.stop();
  }
}

/**
 * Serves one capture on an HTTP response: 200 with the pcap content type, the bytes as they
 * come, then trailers with the packet and lost counts. The capture stops when the client
 * goes away. `start` may throw (busy, unknown endpoint) before anything is sent.
 */
export function serveCapture(start: (sink: CaptureSink) => CaptureHandle, res: ServerResponse): CaptureHandle {
  let headed = false;
  const head = (): void => {
    if (headed) return;
    headed = true;
    res.writeHead(200, { 'content-type': PCAP_CONTENT_TYPE, 'cache-control': 'no-store', trailer: `${TRAILER_PACKETS}, ${TRAILER_LOST}` });
  };
  const sink: CaptureSink = {
    data(chunk) {
      if (res.destroyed) return;
      head();
      res.write(chunk);
    },
    end(s) {
      if (res.destroyed) return;
      head();
      res.addTrailers({ [TRAILER_PACKETS]: String(s.packets), [TRAILER_LOST]: String(s.lost) });
      res.end();
    },
    ready: () => res.writableLength < CAPTURE_HIGH_WATER_BYTES,
  };
  const h = start(sink);
  head();
  res.flushHeaders();
  const gone = (): void => {
    if (!res.writableEnded) h.stop();
  };
  // The response's 'close' (the connection went away, or the end was sent), not the
  // request's: that one fires as soon as the request body has been read.
  res.on('close', gone);
  res.on('error', gone);
  return h;
}
