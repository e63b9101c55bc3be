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
  readBatch(
    fd: number,
    slab: Uint8Array,
    slotSize: number,
    firstSlot: number,
    maxSlots: number,
    lens: Int32Array,
    stats?: Int32Array,
  ): number;
  /**
   * Like readBatch, but packet i goes to slot s = slots[start+i] (a free list): at
   * slab[s*slotSize], length in lens[s]. Returns n: slots[start .. start+n) were filled.
   */
  readBatchSlots(
    fd: number,
    slab: Uint8Array,
    slotSize: number,
    slots: Int32Array,
    start: number,
    count: number,
    lens: Int32Array,
    stats?: Int32Array,
  ): number;
  /**
   * Writes packets offsets[start+i]/lens[start+i] until EAGAIN. Returns packets consumed
   * (written + dropped as malformed). stats[0] = dropped, stats[1] = errno of the last drop.
   */
  writeBatch(
    fd: number,
    slab: Uint8Array,
    offsets: Int32Array,
    lens: Int32Array,
    start: number,
    count: number,
    stats?: Int32Array,
  ): number;
  /** Watches fd on Node's loop; cb(status, events): status < 0 is a negative errno. */
  pollStart(fd: number, cb: (status: number, events: number) => void, events?: number): PollHandle;
  /** Changes the watched events (POLL_READABLE | POLL_WRITABLE; 0 pauses). */
  pollSet(handle: PollHandle, events: number): void;
  /** Stops watching and releases the handle (idempotent). */
  pollStop(handle: PollHandle): void;
  close(fd: number): void;
  /** Writes packet i to fds[i] (one write() each); same contract as writeBatch. */
  writeBatchFds(fds: Int32Array, slab: Uint8Array, offsets: Int32Array, lens: Int32Array, start: number, count: number, stats?: Int32Array): number;
  /** Whether the io_uring engine can run here; reason is '' when it can. */
  uringProbe(): { available: boolean; reason: string };
  /** Main thread: a ring with a provided-buffer ring whose buffers are slab slots (buffer id = slot). */
  uringReaderOpen(slab: Uint8Array, slotSize: number, ringEntries: number): unknown;
  uringReaderEventFd(r: unknown): number;
  uringReaderAdd(r: unknown, fd: number, port: number): void;
  uringReaderRemove(r: unknown, port: number): void;
  uringReaderProvide(r: unknown, slots: Int32Array, start: number, count: number): void;
  uringReaderReap(r: unknown, slots: Int32Array, lens: Int32Array, ports: Int32Array, max: number, stats?: Int32Array): number;
  uringReaderClose(r: unknown): void;
  /** Worker thread: one ring per worker; writes a batch to per-packet fds with one submission. */
  uringWriterOpen(entries: number): unknown;
  uringWriteBatch(w: unknown, fds: Int32Array, slab: Uint8Array, offsets: Int32Array, lens: Int32Array, start: number, count: number, stats?: Int32Array): number;
  uringWriterClose(w: unknown): void;
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

/** Opaque native poll handle (a napi external). */
export type PollHandle = { readonly __tunPollHandle: unique symbol };

const PACKAGE_NAME = 'tunswitch';
const BINDING_PATH = ['native', 'build', 'Release', 'tunswitch_tun.node'];

/** Error with a stable code, thrown when the binding cannot be located or loaded. */
export class NativeBindingError extends Error {
  readonly code = 'ERR_TUNSWITCH_NATIVE';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
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
