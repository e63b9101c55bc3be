/**
 * `POST /v1/capture` over HTTP: the request body's check and the pcap stream. The capture
 * itself (slots, rings, pcap bytes) is src/control/capture.ts, which writes to a CaptureSink;
 * this file is the sink that writes to an HTTP response.
 *
 * The stream: 200 with the pcap content type as soon as the capture is armed (so the client
 * knows it runs), the pcap or pcapng bytes as the drains produce them, then HTTP trailers with
 * the packet and lost counts. When the client goes away (Ctrl-C, a closed pipe) the capture
 * stops and frees its slot. A client that reads too slowly loses packets (counted in the
 * lost trailer) rather than growing the server's buffers (CAPTURE_HIGH_WATER_BYTES).
 */
import type { ServerResponse } from 'node:http';
import { TunswitchError } from '../control/errors.js';
import { MAX_CAPTURE_COUNT, MAX_CAPTURE_DURATION_S, type CaptureHandle, type CaptureRequest, type CaptureSink } from '../control/capture.js';

export const PCAP_CONTENT_TYPE = 'application/vnd.tcpdump.pcap';
/** HTTP trailers the API sends when a capture ends. */
export const TRAILER_PACKETS = 'x-tunswitch-capture-packets';
export const TRAILER_LOST = 'x-tunswitch-capture-lost';
/** Unsent response bytes above which a capture's packets are counted lost instead of sent. */
export const CAPTURE_HIGH_WATER_BYTES = 4 * 1024 * 1024;

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
