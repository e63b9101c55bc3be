/**
 * `tunswitch capture ENDPOINT -w FILE [--count N] [--verdict FORWARDED|DROPPED] [--duration S]`:
 * the packets the switch sees at an endpoint (sent by it or to it), as a pcap file with
 * LINKTYPE_RAW (101), readable by tcpdump, tshark and Wireshark. `-w -` writes to stdout.
 *
 * The agent streams the pcap on `POST /v1/capture` and ends it after --count packets or
 * --duration seconds (without either, at Ctrl-C). The packet and lost counts arrive as
 * HTTP trailers. This side writes only whole pcap records, so a file cut short by Ctrl-C
 * is still valid.
 *
 * Packets are as the switch decided on them: a forwarded packet's TTL / hop limit is
 * already decremented; a dropped packet is as it arrived.
 */
import { request, type IncomingMessage } from 'node:http';
import { createWriteStream } from 'node:fs';
import type { Writable } from 'node:stream';
import { InvalidArgumentError, type Command } from 'commander';
import { parsePositiveInt, type CliContext } from './context.js';
import {
  PCAP_GLOBAL_HEADER_BYTES,
  PCAP_MAGIC,
  PCAP_RECORD_HEADER_BYTES,
  TRAILER_LOST,
  TRAILER_PACKETS,
  type CaptureRequest,
  type CaptureVerdict,
} from '../control/capture.js';

export function parseVerdict(s: string): CaptureVerdict {
  const v = s.toUpperCase();
  if (v !== 'FORWARDED' && v !== 'DROPPED') throw new InvalidArgumentError(`"${s}" is not FORWARDED or DROPPED.`);
  return v;
}

export function parseSeconds(s: string): number {
  const n = Number(s);
  if (!/^\d+(\.\d+)?$/.test(s) || !(n > 0)) throw new InvalidArgumentError(`"${s}" is not a positive number of seconds.`);
  return n;
}

/**
 * Splits a pcap byte stream at record boundaries: push() returns the bytes that complete
 * the global header or whole records (possibly empty), and counts the records.
 */
export class PcapSplitter {
  records = 0;
  private pending: Buffer = Buffer.alloc(0);
  private headerSeen = false;

  push(chunk: Buffer): Buffer {
    const buf = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    let pos = 0;
    if (!this.headerSeen) {
      if (buf.length < PCAP_GLOBAL_HEADER_BYTES) {
        this.pending = buf;
        return Buffer.alloc(0);
      }
      if (buf.readUInt32LE(0) !== PCAP_MAGIC) throw new Error('the agent sent something that is not a pcap stream');
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
export function runCapture(socket: string, body: CaptureRequest, open: () => Writable, onStart: () => void, signal?: AbortSignal): Promise<CaptureResult> {
  return new Promise((resolve, reject) => {
    const payload = Buffer.from(JSON.stringify(body));
    const req = request({
      socketPath: socket,
      path: '/v1/capture',
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': payload.length, accept: 'application/vnd.tcpdump.pcap' },
    });
    const split = new PcapSplitter();
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
    req.on('error', (e: NodeJS.ErrnoException) => finish(signal?.aborted ? null : new Error(connectionMessage(socket, e)), null, signal?.aborted === true));
    req.on('response', (res) => {
      if ((res.statusCode ?? 0) >= 400) {
        void readError(res).then((m) => finish(new Error(m), null, false));
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
          finish(new Error(`the agent reports ${sent} packets but ${split.records} arrived whole`), null, false);
          return;
        }
        finish(null, Number.isFinite(lost) ? lost : null, !Number.isFinite(sent));
      });
      res.on('aborted', () => finish(signal?.aborted ? null : new Error(`tunswitch at ${socket} closed the capture stream`), null, true));
    });
    req.end(payload);
  });
}

export function register(program: Command, ctx: CliContext): void {
  program
    .command('capture')
    .description('write the packets the switch sees at an endpoint to a pcap file (raw IP, for tcpdump/tshark)')
    .argument('<endpoint>', 'endpoint name or index')
    .requiredOption('-w, --write <file>', 'pcap file to write ("-" for stdout)')
    .option('-c, --count <n>', 'stop after this many packets', parsePositiveInt)
    .option('--verdict <verdict>', 'only FORWARDED or only DROPPED packets', parseVerdict)
    .option('--duration <seconds>', 'stop after this many seconds', parseSeconds)
    .action(async (endpoint: string, o: { write: string; count?: number; verdict?: CaptureVerdict; duration?: number }) => {
      const body: CaptureRequest = { endpoint };
      if (o.count !== undefined) body.count = o.count;
      if (o.verdict !== undefined) body.verdict = o.verdict;
      if (o.duration !== undefined) body.duration = o.duration;
      const toStdout = o.write === '-';
      const where = toStdout ? 'stdout' : o.write;
      const ac = new AbortController();
      const onSig = (): void => ac.abort();
      process.once('SIGINT', onSig);
      process.once('SIGTERM', onSig);
      try {
        const r = await runCapture(
          ctx.socket(),
          body,
          () => (toStdout ? process.stdout : createWriteStream(o.write)),
          () => {
            const limits = [o.count !== undefined ? `${o.count} packets` : '', o.duration !== undefined ? `${o.duration} s` : ''].filter((s) => s !== '');
            ctx.warn(`capturing at ${endpoint}${o.verdict ? ` (${o.verdict} only)` : ''}, link-type RAW (101)${limits.length > 0 ? `, up to ${limits.join(' or ')}` : ', Ctrl-C to stop'}`);
          },
          ac.signal,
        );
        const msg = `captured ${r.packets} packets${r.lost !== null ? ` (${r.lost} lost)` : ''} to ${where}${r.interrupted ? ' (interrupted)' : ''}\n`;
        if (toStdout) process.stderr.write(msg);
        else ctx.out(msg);
      } finally {
        process.off('SIGINT', onSig);
        process.off('SIGTERM', onSig);
      }
    });
}
