/**
 * Loader for the N-API TUN binding (native/src/tun.c, built by node-gyp at `npm ci`).
 *
 * The compiled form of this file lives at <outDir>/src/io/native.js, where outDir is `dist`
 * or a helper's `dist-*`. We find the package root by walking up from this file's directory
 * to the first package.json whose name is "tunswitch", then require
 * native/build/Release/tunswitch_tun.node from there with createRequire.
 */
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TunswitchError } from '../proto/errors.js';

/**
 * The packets every write call takes: packet i (i in start..start+count) is
 * slab[offsets[i] .. +lens[i]); stats[0] = packets dropped, stats[1] = errno of the last drop.
 * writeBatch, writeBatchFds and uringWriteBatch differ only in where the packets go.
 */
/**
 * Where the calls that read into a free list put packets: packet i into slot
 * s = slots[start+i], at slab[s*slotSize], its length in lens[s]; at most count packets from fd.
 * readBatchSlots (TUN) and udpRecvBatch (underlay socket) share it.
 */
export type SlotReadArgs = [fd: number, slab: Uint8Array, slotSize: number, slots: Int32Array, start: number, count: number, lens: Int32Array];

export type WriteBatchArgs = [slab: Uint8Array, offsets: Int32Array, lens: Int32Array, start: number, count: number, stats?: Int32Array];

/** What the binding exports. See native/src/tun.c for the exact contract of each call. */
export interface TunBinding {
  /** Opens /dev/net/tun and attaches (creating if needed) TUN device `name` ('' = tun%d). */
  open(name: string, opts?: { multiQueue?: boolean; vnetHdr?: boolean }): { fd: number; name: string };
  /** TUNSETOFFLOAD; returns the flags set. Throws (code EINVAL) for flags the kernel lacks. */
  setOffload(fd: number, flags: number): number;
  /**
   * Reads packets until EAGAIN or maxSlots: packet i at slab[(firstSlot+i)*slotSize], its
   * length in lens[firstSlot+i]. Returns the count. stats[0] = packets lost (longer than
   * slotSize: dropped, never truncated; or refused by the kernel), stats[1] = errno of the
   * last loss (EMSGSIZE = 90 for "did not fit").
   */
  readBatch(fd: number, slab: Uint8Array, slotSize: number, firstSlot: number, maxSlots: number, lens: Int32Array, stats?: Int32Array): number;
  /**
   * Like readBatch, but into the listed slots (SlotReadArgs). Returns n: slots[start .. start+n)
   * were filled.
   */
  readBatchSlots(...args: [...SlotReadArgs, stats?: Int32Array]): number;
  /**
   * Writes the packets (WriteBatchArgs) to fd until EAGAIN. Returns packets consumed
   * (written + dropped as malformed).
   */
  writeBatch(fd: number, ...batch: WriteBatchArgs): number;
  /**
   * writeBatch with a destination per packet: packet i goes to fds[i]. Same return and stats
   * as writeBatch. An fd < 0, or one failing with EBADF/EBADFD (closed, device deleted), is a
   * drop (stats[1] = 9 / 77), not a stop, so one dead port cannot hold up the others. EAGAIN
   * stops the batch there.
   */
  writeBatchFds(fds: Int32Array, ...batch: WriteBatchArgs): number;

  /* io_uring engine (native/src/uring.c; its top comment is the full contract). */

  /**
   * Whether the io_uring engine can run here. reason: '' when available, else one line why
   * (e.g. 'io_uring_setup: EPERM (blocked by seccomp, or sysctl kernel.io_uring_disabled)',
   * 'kernel lacks IORING_OP_READ_MULTISHOT (needs Linux 6.7)', 'built without liburing').
   * Computed once per process. Without the engine every other uring* call throws ENOSYS.
   */
  uringProbe(): { available: boolean; reason: string };
  /**
   * Main thread. One ring + one provided-buffer ring (buffer group 0) whose buffers are slab
   * slots: buffer id = slot index, address = slab + slot*slotSize, length slotSize. Only slots
   * 0..65535 can be provided (buffer ids are 16 bits). ringEntries: power of two >= the number
   * of slots that may ever be provided at once (<= 32768). Throws with code/errno/syscall on
   * failure. Keeps the slab alive (napi reference); use a SharedArrayBuffer-backed slab (never
   * transfer/detach it while open). Call every reader function from the thread that opened it.
   */
  uringReaderOpen(slab: Uint8Array, slotSize: number, ringEntries: number): UringHandle;
  /** An eventfd that becomes readable when completions are waiting (register it with pollStart on Node's loop). */
  uringReaderEventFd(r: UringHandle): number;
  /**
   * Arms a multishot read (IORING_OP_READ_MULTISHOT, buffer select) on fd, tagging completions
   * with port (0..65535). Armed now if slots are provided, else at the next provide. Throws
   * EEXIST when the port or the fd is already added (one read per fd).
   */
  uringReaderAdd(r: UringHandle, fd: number, port: number): void;
  /**
   * Cancels the read of port, synchronously: when it returns, the kernel has no request on the
   * fd any more (closing the fd right after is safe, and the device goes away with the fd).
   * From then on reap never reports a packet of that port: packets already read into slots but
   * not yet reaped are dropped by reap and their slots go straight back to the kernel (counted
   * in stats[2]). Packets reaped before the call were reported normally. No-op for an unknown
   * port.
   */
  uringReaderRemove(r: UringHandle, port: number): void;
  /**
   * Hands slots[start..start+count) to the kernel (buffer ring add + advance; no system call
   * unless it re-arms). The caller must not touch a provided slot until reap reports it. Re-arms
   * any port whose multishot read ended for lack of buffers (ENOBUFS) or ended without
   * IORING_CQE_F_MORE for another transient reason. RangeError when more than ringEntries slots
   * would be with the kernel (a programmer error) or a slot lies outside the slab.
   */
  uringReaderProvide(r: UringHandle, slots: Int32Array, start: number, count: number): void;
  /**
   * Reaps up to max completions: packet i was read into slot slots[i], length lens[i] bytes
   * (incl. the virtio header when the fd has IFF_VNET_HDR), from port ports[i]. Returns the
   * count; those slots are the caller's again. Drains the eventfd; if it stopped at max with
   * more waiting it leaves the eventfd readable, so the loop calls again. Errors (other than
   * ENOBUFS/ECANCELED which it handles) are counted in stats[0] with the last errno in
   * stats[1], never thrown per packet; a packet of exactly slotSize bytes or more is one of
   * them (EMSGSIZE: TUN truncates silently, so size slots one byte above the largest packet),
   * its slot goes back to the kernel. stats[2] (if stats has 3 elements) = packets of removed
   * ports dropped. A port whose read failed with a non-transient error (e.g. EBADFD: device
   * deleted) stays disarmed until removed and added again. Submits pending SQEs (re-arms) in
   * the same io_uring_enter.
   */
  uringReaderReap(
    r: UringHandle,
    slots: Int32Array,
    lens: Int32Array,
    ports: Int32Array,
    max: number,
    stats?: Int32Array,
  ): number;
  /**
   * Cancels every read synchronously and tears the ring down (idempotent). On return the kernel
   * writes no more into the slab: every slot provided and not yet reaped is the caller's again.
   */
  uringReaderClose(r: UringHandle): void;
  /** Worker thread (each shard worker has its own; use it only from the opening thread). entries: SQ size (1..32768). */
  uringWriterOpen(entries: number): UringHandle;
  /**
   * Writes packet i (WriteBatchArgs) to fds[i], with one io_uring_enter per `entries` packets,
   * and waits for all completions (the caller reuses the slots right after). Returns packets
   * consumed (written + dropped). An fd < 0, and any per-packet error (EBADF of a closed fd,
   * EBADFD, EINVAL of a malformed packet, ...), counts as a drop. EAGAIN: stops and returns how
   * many were consumed before it (io_uring normally waits for writability itself instead).
   */
  uringWriteBatch(w: UringHandle, fds: Int32Array, ...batch: WriteBatchArgs): number;
  /** Idempotent. */
  uringWriterClose(w: UringHandle): void;

  /** Watches fd on Node's loop; cb(status, events): status < 0 is a negative errno. */
  pollStart(fd: number, cb: (status: number, events: number) => void, events?: number): PollHandle;
  /** Changes the watched events (POLL_READABLE | POLL_WRITABLE; 0 pauses). */
  pollSet(handle: PollHandle, events: number): void;
  /** Stops watching and releases the handle (idempotent). */
  pollStop(handle: PollHandle): void;
  close(fd: number): void;
  /** Underlay UDP socket (native/src/udp.c): non-blocking, bound to ipv4:port; returns the fd. */
  udpOpen(ipv4: number, port: number, bufBytes?: number): number;
  /**
   * One recvmmsg into the listed slots (SlotReadArgs): datagram i at slotOff in its slot, at
   * most maxLen bytes; lens[slot] = length (0: longer than maxLen, dropped); srcs[i] = sender
   * IPv4; gsoSizes[i] = segment size of a UDP GRO buffer (0: one datagram). Returns n.
   */
  udpRecvBatch(...args: [...SlotReadArgs, slotOff: number, maxLen: number, srcs?: Int32Array, gsoSizes?: Int32Array]): number;
  /** setsockopt(SOL_UDP, UDP_GRO); false when the kernel refuses it. */
  udpSetGro(fd: number, on: boolean): boolean;
  /**
   * sendmmsg of slab[offsets[i], +lens[i]) to dsts[i]:port; returns datagrams consumed (stops at EAGAIN).
   * gsoSizes[i] > 0: that one goes with UDP_SEGMENT = gsoSizes[i] (the kernel cuts it).
   */
  udpSendBatch(fd: number, slab: Uint8Array, offsets: Int32Array, lens: Int32Array, dsts: Int32Array, start: number, count: number, port: number, gsoSizes?: Int32Array): number;
  readonly TUN_F_CSUM: number;
  readonly TUN_F_TSO4: number;
  readonly TUN_F_TSO6: number;
  readonly TUN_F_TSO_ECN: number;
  readonly TUN_F_USO4: number;
  readonly TUN_F_USO6: number;
  readonly POLL_READABLE: number;
  readonly POLL_WRITABLE: number;
  readonly VNET_HDR_LEN: number;
  readonly IFNAMSIZ: number;
}

/** Opaque native io_uring reader or writer handle (a napi external). */
export type UringHandle = { readonly __tunUringHandle: unique symbol };

/** Opaque native poll handle (a napi external). */
export type PollHandle = { readonly __tunPollHandle: unique symbol };

const PACKAGE_NAME = 'tunswitch';
const BINDING_PATH = ['native', 'build', 'Release', 'tunswitch_tun.node'];

/** Thrown when the binding cannot be located or loaded (code ENATIVE). */
export class NativeBindingError extends TunswitchError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ENATIVE', message, options);
    this.name = 'NativeBindingError';
  }
}

/** Walks up from `start` to the directory holding package.json with name "tunswitch". */
export function findPackageRoot(start: string): string {
  let dir = start;
  for (;;) {
    const pj = join(dir, 'package.json');
    if (existsSync(pj)) {
      try {
        const name = (JSON.parse(readFileSync(pj, 'utf8')) as { name?: unknown }).name;
        if (name === PACKAGE_NAME) return dir;
      } catch {
        // an unreadable package.json on the way up is not ours; keep walking
      }
    }
    const parent = dirname(dir);
    if (parent === dir) {
      throw new NativeBindingError(
        `tunswitch: cannot find the package root (a package.json named "${PACKAGE_NAME}") above ${start}`,
      );
    }
    dir = parent;
  }
}

let cached: TunBinding | null = null;

/** Loads (once) and returns the binding; throws NativeBindingError with a fix if missing. */
export function loadBinding(): TunBinding {
  if (cached !== null) return cached;
  const root = findPackageRoot(dirname(fileURLToPath(import.meta.url)));
  const file = join(root, ...BINDING_PATH);
  if (!existsSync(file)) {
    throw new NativeBindingError(
      `tunswitch: the TUN binding is not built (${file} is missing); run "npm ci", or "npm run install" to build just the binding ` +
        '(needs a C compiler and the Node headers)',
    );
  }
  const require = createRequire(join(root, 'package.json'));
  try {
    cached = require(file) as TunBinding;
  } catch (err) {
    throw new NativeBindingError(
      `tunswitch: cannot load the TUN binding ${file}: ${(err as Error).message}; rebuild it with "npm run install"`,
      { cause: err },
    );
  }
  return cached;
}
