/**
 * The client side of `tunswitch capture` that loads only when a capture runs: the HTTP
 * stream from the agent, the pcap/pcapng splitter and the live view's packet lines.
 */
import { request, type IncomingMessage } from 'node:http';
import { Writable } from 'node:stream';
import {
  PCAP_GLOBAL_HEADER_BYTES,
  PCAP_MAGIC,
  PCAP_RECORD_HEADER_BYTES,
  PCAPNG_EPB,
  PCAPNG_SHB,
  type CaptureRequest,
} from '../control/capture.js';
import { TRAILER_LOST, TRAILER_PACKETS } from '../api/capture-stream.js';
import { TunswitchError } from '../proto/errors.js';

/**
 * Splits a pcap byte stream at record boundaries: push() returns the bytes that complete
 * the global header or whole records (possibly empty), and counts the records.
 */
export class PcapSplitter {
  records = 0;
  private pending: Buffer = Buffer.alloc(0);
  private headerSeen = false;
  private ng = false;
  /** Called with each pcapng enhanced packet block (for the live view). */
  onPacket: ((block: Buffer) => void) | null = null;

  push(chunk: Buffer): Buffer {
    const buf = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    let pos = 0;
    if (!this.headerSeen && buf.length >= 4 && buf.readUInt32LE(0) === PCAPNG_SHB) {
      this.headerSeen = true;
      this.ng = true;
    }
    if (this.ng) {
      // pcapng: whole blocks (type, total length, ..., total length); count packet blocks.
      while (buf.length - pos >= 8) {
        const len = buf.readUInt32LE(pos + 4);
        if (len < 12 || len % 4 !== 0) throw new TunswitchError('EPROTOCOL', 'the agent sent a malformed pcapng block');
        if (buf.length - pos < len) break;
        if (buf.readUInt32LE(pos) === PCAPNG_EPB) {
          this.records++;
          this.onPacket?.(buf.subarray(pos, pos + len));
        }
        pos += len;
      }
      this.pending = buf.subarray(pos);
      return buf.subarray(0, pos);
    }
    if (!this.headerSeen) {
      if (buf.length < PCAP_GLOBAL_HEADER_BYTES) {
        this.pending = buf;
        return Buffer.alloc(0);
      }
      if (buf.readUInt32LE(0) !== PCAP_MAGIC) throw new TunswitchError('EPROTOCOL', 'the agent sent something that is not a pcap stream');
      this.headerSeen = true;
      pos = PCAP_GLOBAL_HEADER_BYTES;
    }
    for (;;) {
      if (buf.length - pos < PCAP_RECORD_HEADER_BYTES) break;
      const incl = buf.readUInt32LE(pos + 8);
      if (buf.length - pos - PCAP_RECORD_HEADER_BYTES < incl) break;
      pos += PCAP_RECORD_HEADER_BYTES + incl;
      this.records++;
    }
    this.pending = buf.subarray(pos);
    return buf.subarray(0, pos);
  }

  /** Bytes received but not written (an incomplete record at the end). */
  leftover(): number {
    return this.pending.length;
  }
}

function connectionMessage(socket: string, e: NodeJS.ErrnoException): string {
  if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED' || e.code === 'ENOTSOCK') return `cannot reach tunswitch at ${socket}: is "tunswitch run" running?`;
  if (e.code === 'EACCES' || e.code === 'EPERM') return `permission denied on ${socket}: run as root (the socket is mode 0600)`;
  return `lost the connection to tunswitch at ${socket}: ${e.message}`;
}

function readError(res: IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    res.on('data', (d: Buffer) => chunks.push(d));
    res.on('error', () => resolve(`HTTP ${res.statusCode ?? 0}`));
    res.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      try {
        const v = JSON.parse(text) as { error?: { message?: unknown } };
        if (typeof v.error?.message === 'string') {
          resolve(v.error.message.split('\n')[0] as string);
          return;
        }
      } catch {
        // not JSON
      }
      resolve(`HTTP ${res.statusCode ?? 0}${text.trim() ? `: ${text.trim().split('\n')[0] as string}` : ''}`);
    });
  });
}

export interface CaptureResult {
  packets: number;
  /** From the agent's trailer; null when the capture was interrupted. */
  lost: number | null;
  interrupted: boolean;
}

/**
 * Runs one capture against the agent on `socket`, writing whole pcap records to the stream
 * `open()` returns (called once the agent has accepted the request). Resolves when the agent
 * ends the stream or `signal` aborts.
 */
export function runCapture(
  socket: string,
  body: CaptureRequest,
  open: () => Writable,
  onStart: () => void,
  signal?: AbortSignal,
  onPacket?: (block: Buffer) => void,
): Promise<CaptureResult> {
  return new Promise((resolve, reject) => {
    const payload = Buffer.from(JSON.stringify(body));
    const req = request({
      socketPath: socket,
      path: '/v1/capture',
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': payload.length, accept: 'application/vnd.tcpdump.pcap' },
    });
    const split = new PcapSplitter();
    if (onPacket) split.onPacket = onPacket;
    let out: Writable | null = null;
    let settled = false;
    const finish = (err: Error | null, lost: number | null, interrupted: boolean): void => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      const result: CaptureResult = { packets: split.records, lost, interrupted };
      if (err) {
        req.destroy();
        if (out && out !== process.stdout) out.end();
        reject(err);
        return;
      }
      if (out === null || out === process.stdout) {
        resolve(result);
        return;
      }
      out.end(() => resolve(result));
    };
    const onAbort = (): void => {
      req.destroy();
      finish(null, null, true);
    };
    if (signal?.aborted) {
      finish(null, null, true);
      return;
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    req.on('error', (e: NodeJS.ErrnoException) => finish(signal?.aborted ? null : new TunswitchError(e.code === 'EACCES' || e.code === 'EPERM' ? 'EPERMISSION' : 'EUNREACHABLE', connectionMessage(socket, e)), null, signal?.aborted === true));
    req.on('response', (res) => {
      if ((res.statusCode ?? 0) >= 400) {
        void readError(res).then((m) => finish(new TunswitchError('EFAILED', m), null, false));
        return;
      }
      try {
        out = open();
      } catch (e) {
        finish(e as Error, null, false);
        return;
      }
      const o = out;
      o.on('error', (e) => finish(e, null, false));
      onStart();
      res.on('data', (d: Buffer) => {
        let whole: Buffer;
        try {
          whole = split.push(d);
        } catch (e) {
          finish(e as Error, null, false);
          return;
        }
        if (whole.length > 0 && !o.write(whole)) {
          res.pause();
          o.once('drain', () => res.resume());
        }
      });
      res.on('end', () => {
        const lost = Number(res.trailers[TRAILER_LOST] ?? NaN);
        const sent = Number(res.trailers[TRAILER_PACKETS] ?? NaN);
        if (Number.isFinite(sent) && sent !== split.records) {
          finish(new TunswitchError('EPROTOCOL', `the agent reports ${sent} packets but ${split.records} arrived whole`), null, false);
          return;
        }
        finish(null, Number.isFinite(lost) ? lost : null, !Number.isFinite(sent));
      });
      res.on('aborted', () => finish(signal?.aborted ? null : new TunswitchError('EUNREACHABLE', `tunswitch at ${socket} closed the capture stream`), null, true));
    });
    req.end(payload);
  });
}

function ipText(b: Buffer, off: number, v6: boolean): string {
  if (!v6) return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
  const parts: string[] = [];
  for (let i = 0; i < 16; i += 2) parts.push(b.readUInt16BE(off + i).toString(16));
  return parts.join(':').replace(/(^|:)0(:0)+(:|$)/, '::');
}

/**
 * One line for the live view from a pcapng enhanced packet block:
 * `13:04:05.123456 10.42.0.10:41234 > 10.42.0.11:5432 TCP 60 B  verdict=DROPPED reason=133 (Policy denied) direction=egress`.
 */
export function livePacketLine(block: Buffer): string {
  const hi = block.readUInt32LE(12);
  const lo = block.readUInt32LE(16);
  const us = hi * 2 ** 32 + lo;
  const t = new Date(Math.floor(us / 1000)).toISOString().slice(11, 19) + '.' + String(us % 1_000_000).padStart(6, '0');
  const cap = block.readUInt32LE(20);
  const orig = block.readUInt32LE(24);
  const d = block.subarray(28, 28 + cap);
  let what = `${orig} B`;
  if (d.length >= 20 && d[0] !== undefined) {
    const v6 = d[0] >> 4 === 6;
    const proto = v6 ? (d[6] as number) : (d[9] as number);
    const l4 = v6 ? 40 : ((d[0] as number) & 0x0f) * 4;
    const src = ipText(d, v6 ? 8 : 12, v6);
    const dst = ipText(d, v6 ? 24 : 16, v6);
    const ported = (proto === 6 || proto === 17 || proto === 132) && d.length >= l4 + 4;
    const sp = ported ? `:${d.readUInt16BE(l4)}` : '';
    const dp = ported ? `:${d.readUInt16BE(l4 + 2)}` : '';
    const name = ({ 1: 'ICMP', 6: 'TCP', 17: 'UDP', 58: 'ICMPv6', 132: 'SCTP' } as Record<number, string>)[proto] ?? `proto ${proto}`;
    what = `${src}${sp} > ${dst}${dp} ${name} ${orig} B`;
  }
  // The comment option follows the padded packet data.
  let pos = 28 + ((cap + 3) & ~3);
  let comment = '';
  while (pos + 4 <= block.length - 4) {
    const code = block.readUInt16LE(pos);
    const len = block.readUInt16LE(pos + 2);
    if (code === 0) break;
    if (code === 1) comment = block.subarray(pos + 4, pos + 4 + len).toString('utf8');
    pos += 4 + ((len + 3) & ~3);
  }
  return `${t} ${what}${comment ? `  ${comment}` : ''}`;
}



