/**
 * TunDevice: opens, configures and closes one TUN queue file descriptor owned by the native
 * binding. It does no packet I/O: the datapath reads and writes the raw fd through the binding
 * in batches (readBatchSlots / writeBatch / io_uring, src/runtime/io-loop.ts and
 * src/runtime/egress.ts), polls it with pollStart, and tests make the same calls.
 *
 * With `vnetHdr`, each packet read or written on the fd is preceded by a VNET_HDR_LEN-byte
 * virtio-net header (layout documented in native/src/tun.c); all zero = no offload.
 */
import { loadBinding, type TunBinding } from './native.js';
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

/** Error of this module: EBAD_REQUEST (bad options). */
export class TunError extends TunswitchError {
  constructor(code: 'EBAD_REQUEST', message: string) {
    super(code, message);
    this.name = 'TunError';
  }
}

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

  private constructor(b: TunBinding, fd: number, name: string, vnetHdr: boolean, multiQueue: boolean, offload: number) {
    this.b = b;
    this.fd = fd;
    this.name = name;
    this.vnetHdr = vnetHdr;
    this.multiQueue = multiQueue;
    this.offload = offload;
    this.closed = false;
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
   * Closes the fd (whoever polls it stops first). For a non-persistent TUN, closing the last
   * queue deletes the device, wherever (whichever namespace) it is now. Idempotent.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.b.close(this.fd);
  }

  get isClosed(): boolean {
    return this.closed;
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
