/**
 * TunDevice: a thin wrapper over one TUN queue file descriptor owned by the native binding.
 *
 * The caller owns every buffer: packets are read into and written from slots of a slab
 * (usually a Uint8Array over a SharedArrayBuffer) and lengths go to an Int32Array. One native
 * call moves a whole batch; nothing here allocates per packet or per batch.
 *
 * With `vnetHdr`, each packet in the slab is preceded by a VNET_HDR_LEN-byte virtio-net
 * header (layout documented in native/src/tun.c). Packets written must carry one too (all
 * zero = no offload).
 */
import { loadBinding, type PollHandle, type TunBinding } from './native.js';
import { TunswitchError } from '../proto/errors.js';

/** Bytes of virtio_net_hdr_mrg_rxbuf that precede each packet when vnetHdr is on (layout: src/datapath/vnet.ts). */
export { VNET_HDR_LEN } from '../datapath/vnet.js';

/** TUNSETOFFLOAD bits (linux/if_tun.h). */
export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;
export const TUN_F_TSO_ECN = 0x08;
export const TUN_F_USO4 = 0x20;
export const TUN_F_USO6 = 0x40;

/** What `offload: true` asks for; USO needs Linux >= 6.2, so it is dropped on EINVAL. */
export const OFFLOAD_WANTED = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6;
/** The fallback when the kernel refuses USO. */
export const OFFLOAD_NO_USO = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;

/** Longest interface name Linux accepts (IFNAMSIZ - 1). */
export const IFNAME_MAX = 15;

export interface TunOpenOptions {
  /** IFF_MULTI_QUEUE: several fds (queues) on one device; see TunDevice.openQueues. */
  multiQueue?: boolean;
  /** IFF_VNET_HDR with a 12-byte header in front of every packet. */
  vnetHdr?: boolean;
  /**
   * true: enable CSUM|TSO4|TSO6|USO4|USO6, or CSUM|TSO4|TSO6 if the kernel lacks USO.
   * A number: exactly those TUN_F_* flags. Needs vnetHdr (the header carries the GSO info).
   */
  offload?: boolean | number;
}

/** Error of this module: ETUN (closed device, polling failed) or EBAD_REQUEST (bad options). */
export class TunError extends TunswitchError {
  constructor(code: 'ETUN' | 'EBAD_REQUEST', message: string) {
    super(code, message);
    this.name = 'TunError';
  }
}

const NO_CB = (): void => {};

export class TunDevice {
  readonly fd: number;
  /** The name the kernel gave the device when opened (it may be renamed later, e.g. on attach). */
  readonly name: string;
  readonly vnetHdr: boolean;
  readonly multiQueue: boolean;
  /** TUN_F_* flags actually enabled (0 = none). */
  readonly offload: number;

  private readonly b: TunBinding;
  private closed: boolean;
  private poll: PollHandle | null;
  private events: number;
  private readableCb: () => void;
  private writableCb: () => void;
  private errorCb: ((err: Error) => void) | null;
  /** Bound once in the constructor: the native poll calls this for every readiness event. */
  private readonly onPoll: (status: number, events: number) => void;

  private constructor(b: TunBinding, fd: number, name: string, vnetHdr: boolean, multiQueue: boolean, offload: number) {
    this.b = b;
    this.fd = fd;
    this.name = name;
    this.vnetHdr = vnetHdr;
    this.multiQueue = multiQueue;
    this.offload = offload;
    this.closed = false;
    this.poll = null;
    this.events = 0;
    this.readableCb = NO_CB;
    this.writableCb = NO_CB;
    this.errorCb = null;
    this.onPoll = (status, events) => this.dispatch(status, events);
  }

  /**
   * Opens (creating if needed) TUN device `name` ('' lets the kernel pick tunN). Throws the
   * binding's errors: code ENAMETOOLONG, EPERM (not root), ENOENT (no /dev/net/tun),
   * EBUSY (held by another fd), EINVAL (different flags / not a TUN).
   */
  static open(name: string, opts: TunOpenOptions = {}): TunDevice {
    const b = loadBinding();
    const vnetHdr = opts.vnetHdr === true;
    const multiQueue = opts.multiQueue === true;
    const want = opts.offload ?? false;
    if (want !== false && !vnetHdr) {
      throw new TunError('EBAD_REQUEST', `tun: opts.offload needs opts.vnetHdr: true (device "${name}")`);
    }
    if (typeof want === 'number' && (!Number.isInteger(want) || want < 0 || want > 0xff)) {
      throw new TunError('EBAD_REQUEST', `tun: opts.offload must be true, false or TUN_F_* flags, got ${want}`);
    }
    const h = b.open(name, { multiQueue, vnetHdr });
    let offload = 0;
    try {
      if (want === true) offload = setOffloadWithFallback(b, h.fd);
      else if (typeof want === 'number' && want !== 0) offload = b.setOffload(h.fd, want);
    } catch (err) {
      b.close(h.fd);
      throw err;
    }
    return new TunDevice(b, h.fd, h.name, vnetHdr, multiQueue, offload);
  }

  /**
   * Opens `n` queues of one multi-queue device. All share the options; on any failure the
   * queues already opened are closed and the error is rethrown.
   */
  static openQueues(name: string, n: number, opts: Omit<TunOpenOptions, 'multiQueue'> = {}): TunDevice[] {
    if (!Number.isInteger(n) || n < 1 || n > 256) {
      throw new TunError('EBAD_REQUEST', `tun: queue count must be an integer in [1, 256], got ${n}`);
    }
    const queues: TunDevice[] = [];
    try {
      for (let i = 0; i < n; i++) {
        // The first open may get a kernel-chosen name; the others must attach to that one.
        const q = TunDevice.open(i === 0 ? name : (queues[0] as TunDevice).name, { ...opts, multiQueue: true });
        queues.push(q);
      }
    } catch (err) {
      for (let i = 0; i < queues.length; i++) (queues[i] as TunDevice).close();
      throw err;
    }
    return queues;
  }

  /**
   * Reads up to maxSlots packets: packet i at slab[(firstSlot+i)*slotSize], its length in
   * lens[firstSlot+i]. Returns how many were read (0 when none was waiting). Optional
   * stats[0]/stats[1]: packets lost for not fitting a slot / last errno.
   */
  readBatch(slab: Uint8Array, slotSize: number, firstSlot: number, maxSlots: number, lens: Int32Array, stats?: Int32Array): number {
    if (this.closed) this.throwClosed();
    return this.b.readBatch(this.fd, slab, slotSize, firstSlot, maxSlots, lens, stats);
  }

  /**
   * Reads up to count packets into the slots listed in slots[start..start+count): packet i
   * at slab[slots[start+i]*slotSize], its length in lens[slots[start+i]]. Returns n; the
   * first n listed slots were filled.
   */
  readBatchSlots(slab: Uint8Array, slotSize: number, slots: Int32Array, start: number, count: number, lens: Int32Array, stats?: Int32Array): number {
    if (this.closed) this.throwClosed();
    return this.b.readBatchSlots(this.fd, slab, slotSize, slots, start, count, lens, stats);
  }

  /**
   * Writes packets (offsets[start+i], lens[start+i]) for i < count. Returns how many were
   * consumed (written, or dropped by the kernel as malformed: stats[0]/stats[1]). Fewer than
   * count means the queue is full: call waitWritable() and resume from start + returned.
   */
  writeBatch(slab: Uint8Array, offsets: Int32Array, lens: Int32Array, start: number, count: number, stats?: Int32Array): number {
    if (this.closed) this.throwClosed();
    return this.b.writeBatch(this.fd, slab, offsets, lens, start, count, stats);
  }

  /**
   * Calls cb on Node's event loop whenever the device has packets to read (level-triggered:
   * it is called again until readBatch drains the queue). One reader per device; calling
   * again replaces the callback. A poll error (rare: the fd went bad) stops polling and goes
   * to onError, or is thrown (uncaught) when there is none.
   */
  onReadable(cb: () => void, onError?: (err: Error) => void): void {
    if (this.closed) this.throwClosed();
    this.readableCb = cb;
    this.errorCb = onError ?? null;
    this.setEvents(this.events | this.b.POLL_READABLE);
  }

  /**
   * One-shot: calls cb once the device can take writes again (after a short writeBatch).
   * A TUN whose device is down never reports writable (and writes to it fail with EIO).
   */
  waitWritable(cb: () => void): void {
    if (this.closed) this.throwClosed();
    this.writableCb = cb;
    this.setEvents(this.events | this.b.POLL_WRITABLE);
  }

  /** Stops all polling and releases the native poll handle. Idempotent. */
  stopPolling(): void {
    if (this.poll !== null) {
      this.b.pollStop(this.poll);
      this.poll = null;
    }
    this.events = 0;
    this.readableCb = NO_CB;
    this.writableCb = NO_CB;
    this.errorCb = null;
  }

  /**
   * Stops polling and closes the fd. For a non-persistent TUN, closing the last queue deletes
   * the device, wherever (whichever namespace) it is now. Idempotent.
   */
  close(): void {
    if (this.closed) return;
    this.stopPolling();
    this.closed = true;
    this.b.close(this.fd);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private setEvents(events: number): void {
    if (this.poll === null) {
      this.poll = this.b.pollStart(this.fd, this.onPoll, events);
    } else if (events !== this.events) {
      this.b.pollSet(this.poll, events);
    }
    this.events = events;
  }

  private dispatch(status: number, events: number): void {
    if (status < 0) {
      const err = Object.assign(new TunError('ETUN', `tun: polling device "${this.name}" (fd ${this.fd}) failed: errno ${-status}`), { errno: -status });
      const onError = this.errorCb;
      this.stopPolling();
      if (onError !== null) onError(err);
      else throw err;
      return;
    }
    if ((events & this.b.POLL_WRITABLE) !== 0 && (this.events & this.b.POLL_WRITABLE) !== 0) {
      const cb = this.writableCb;
      this.writableCb = NO_CB;
      this.setEvents(this.events & ~this.b.POLL_WRITABLE); // 0 pauses the handle, keeps it
      cb();
    }
    if ((events & this.b.POLL_READABLE) !== 0 && this.poll !== null) this.readableCb();
  }

  private throwClosed(): never {
    throw new TunError('ETUN', `tun: device "${this.name}" (fd ${this.fd}) is closed`);
  }
}

/** Tries OFFLOAD_WANTED, then OFFLOAD_NO_USO if the kernel says EINVAL; returns what was set. */
function setOffloadWithFallback(b: TunBinding, fd: number): number {
  try {
    return b.setOffload(fd, OFFLOAD_WANTED);
  } catch (err) {
    if ((err as { code?: unknown }).code !== 'EINVAL') throw err;
    return b.setOffload(fd, OFFLOAD_NO_USO);
  }
}
