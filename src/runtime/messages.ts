/**
 * Messages between the main (I/O) thread and the control thread, encoded with msgpackr:
 * each crosses the thread boundary as one transferred Uint8Array (no structured-clone walk of
 * an object graph, and the same bytes could go over a socket unchanged).
 */
import { Packr } from 'msgpackr';
import { InternalError } from '../proto/errors.js';

export type ControlToMain =
  | { type: 'addPort'; port: number; fd: number }
  | { type: 'removePort'; port: number }
  | { type: 'ready'; endpoints: number; missing: string[] }
  | { type: 'log'; msg: string }
  | { type: 'stopped' }
  | { type: 'fatal'; msg: string; code?: string };

export type MainToControl =
  | { type: 'portRemoved'; port: number }
  | { type: 'workerRestart'; total: number; shard: number; reason: string; crashLoop: boolean }
  | { type: 'shutdown' };

const packr = new Packr({ useRecords: false });

/** Encodes a message; post the result with its buffer in the transfer list. */
export function encodeMessage(m: ControlToMain | MainToControl): Uint8Array {
  const b = packr.pack(m);
  // A private copy the sender can transfer (pack may return a view of a shared buffer).
  return new Uint8Array(b);
}

export function decodeMessage<T extends ControlToMain | MainToControl>(raw: unknown, from: string): T {
  if (!(raw instanceof Uint8Array)) throw new InternalError(`${from}: message is not msgpack bytes`);
  const m = packr.unpack(raw) as T;
  if (typeof m !== 'object' || m === null || typeof (m as { type?: unknown }).type !== 'string') {
    throw new InternalError(`${from}: message without a type`);
  }
  return m;
}

/** Something with postMessage(value, transferList). */
export interface MessageTarget {
  postMessage(value: unknown, transferList?: readonly ArrayBuffer[]): void;
}

export function postEncoded(target: MessageTarget, m: ControlToMain | MainToControl): void {
  const b = encodeMessage(m);
  target.postMessage(b, [b.buffer as ArrayBuffer]);
}
