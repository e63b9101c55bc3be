/**
 * Real-device tests for the io_uring engine of the TUN binding (native/src/uring.c) and the
 * multi-fd fallback writeBatchFds.
 *
 * They need root, /dev/net/tun, iproute2 and a kernel with io_uring (>= 6.7 for multishot
 * reads), and FAIL (never skip) when any is missing. All traffic stays inside namespaces
 * created here (10.91.0.0/24, names and devices "tu91-..."), and every namespace and device
 * is removed in `after`/`finally` hooks even when an assertion fails.
 *
 * Packets are made by real sockets: a Node UDP sender/receiver runs inside each namespace
 * (`ip netns exec NS node -e ...`), so what the reader reaps is what the kernel put on the TUN,
 * and what the writer writes is checked by what a socket in the namespace received.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { Worker } from 'node:worker_threads';

import { loadBinding, type PollHandle, type TunBinding, type UringHandle } from '../../src/io/native.js';
import { attachEndpoint, createNetns, deleteNetns, linkExists, netnsExists } from '../../src/io/netns.js';

const run = promisify(execFile);
const TAG = String(process.pid % 10000);
/** Namespace and device names: "tu91-<pid><x>" (<= 15 chars). */
const nsName = (x: string): string => `tu91-${TAG}${x}`;
const tunName = (x: string): string => `tu91-${TAG}${x}`;

const SLOT = 2048;
const SLOTS = 64;
const UDP_PORT = 9191;
const EBADF = 9;

let b: TunBinding;
const createdNs = new Set<string>();

before(() => {
  assert.equal(process.getuid?.(), 0, `got uid ${process.getuid?.()}, want 0: these tests need root (CAP_NET_ADMIN)`);
  b = loadBinding();
});

after(async () => {
  for (const ns of [...createdNs]) await deleteNetns(ns).catch(() => false);
});

/* ---------------------------------------------------------------------------------------- */
/* Lab: one namespace per endpoint, its TUN (opened here) moved in as eth0.                   */

interface Endpoint {
  ns: string;
  fd: number;
  /** The endpoint's own address (10.91.0.<16k+1>) and the peer it sends to (<16k+2>). */
  addr: string;
  peer: string;
}

/** Endpoint k (0..14) owns 10.91.0.16k/28. */
async function endpoint(k: number, opts: { vnetHdr?: boolean; mtu?: number } = {}): Promise<Endpoint> {
  const x = String.fromCharCode(97 + k);
  const ns = nsName(x);
  if (await netnsExists(ns)) await deleteNetns(ns);
  await createNetns(ns);
  createdNs.add(ns);
  const t = b.open(tunName(x), { vnetHdr: opts.vnetHdr === true });
  const base = 16 * k;
  await attachEndpoint({
    tun: t.name,
    netns: { name: ns },
    ipv4: `10.91.0.${base + 1}/28`,
    mtu: opts.mtu ?? 1500,
    routes: [`10.91.0.${base}/28`],
  });
  return { ns, fd: t.fd, addr: `10.91.0.${base + 1}`, peer: `10.91.0.${base + 2}` };
}

async function drop(eps: Endpoint[]): Promise<void> {
  for (const e of eps) {
    if (e.fd >= 0) b.close(e.fd);
    e.fd = -1;
    await deleteNetns(e.ns).catch(() => false);
    createdNs.delete(e.ns);
  }
}

/** Sends n UDP datagrams from inside ep's namespace to its peer; payload i = size bytes of (seed+i)&255. */
async function sendUdp(ep: Endpoint, n: number, size: number, seed: number): Promise<void> {
  const code = `
    const s = require('node:dgram').createSocket('udp4');
    let i = 0;
    const next = () => {
      if (i >= ${n}) { s.close(); return; }
      const buf = Buffer.alloc(${size}, (${seed} + i) & 255);
      i++;
      s.send(buf, ${UDP_PORT}, ${JSON.stringify(ep.peer)}, (err) => { if (err) { console.error(err.message); process.exit(1); } next(); });
    };
    next();`;
  await run('ip', ['netns', 'exec', ep.ns, process.execPath, '-e', code], { timeout: 10000 });
}

/** A UDP receiver in ep's namespace; resolves to the payloads it got (hex of first byte + length) when n arrived or after ms. */
function receiveUdp(ep: Endpoint, n: number, ms: number): { ready: Promise<void>; done: Promise<string[]> } {
  const code = `
    const s = require('node:dgram').createSocket('udp4');
    const got = [];
    const finish = () => { console.log(JSON.stringify(got)); process.exit(0); };
    s.on('message', (m) => {
      let same = true;
      for (let i = 1; i < m.length; i++) if (m[i] !== m[0]) same = false;
      got.push(m[0] + ':' + m.length + (same ? '' : ':corrupt'));
      if (got.length >= ${n}) finish();
    });
    s.bind(${UDP_PORT}, ${JSON.stringify(ep.addr)}, () => console.log('ready'));
    setTimeout(finish, ${ms});`;
  const child = spawn('ip', ['netns', 'exec', ep.ns, process.execPath, '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  let readyFn: () => void = () => {};
  const ready = new Promise<void>((resolve) => (readyFn = resolve));
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    if (out.startsWith('ready\n')) readyFn();
  });
  const done = new Promise<string[]>((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', () => {
      const lines = out.trim().split('\n');
      resolve(JSON.parse(lines[lines.length - 1] ?? '[]') as string[]);
    });
  });
  return { ready, done };
}

/** IPv4 + UDP packet from ep.peer:UDP_PORT to ep.addr:UDP_PORT with payload of `size` bytes of `fill`, at slab[off] (after hdr bytes of zeroed virtio header). Returns its length. */
function buildUdp(slab: Uint8Array, off: number, ep: Endpoint, size: number, fill: number, hdr = 0): number {
  slab.fill(0, off, off + hdr);
  const p = off + hdr;
  const total = 28 + size;
  const ip4 = (s: string): number[] => s.split('.').map(Number);
  slab.set([0x45, 0, total >> 8, total & 0xff, 0, 0, 0x40, 0, 64, 17, 0, 0, ...ip4(ep.peer), ...ip4(ep.addr)], p);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += (slab[p + i]! << 8) | slab[p + i + 1]!;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  const c = ~sum & 0xffff;
  slab[p + 10] = c >> 8;
  slab[p + 11] = c & 0xff;
  const ulen = 8 + size;
  slab.set([UDP_PORT >> 8, UDP_PORT & 0xff, UDP_PORT >> 8, UDP_PORT & 0xff, ulen >> 8, ulen & 0xff, 0, 0], p + 20); // UDP checksum 0: none (IPv4)
  slab.fill(fill & 255, p + 28, p + 28 + size);
  return hdr + total;
}

/** The io_uring reader driven by Node's loop, the way the I/O thread uses it. */
class Reader {
  readonly sab: SharedArrayBuffer;
  readonly slab: Uint8Array;
  readonly r: UringHandle;
  readonly slots = new Int32Array(SLOTS);
  readonly lens = new Int32Array(SLOTS);
  readonly ports = new Int32Array(SLOTS);
  readonly stats = new Int32Array(3);
  readonly free = new Int32Array(SLOTS);
  /** Packets as "port:firstPayloadByte:len" (IPv4/UDP to UDP_PORT only), after hdr bytes of virtio header. */
  readonly got: string[] = [];
  errors = 0;
  lastErrno = 0;
  stale = 0;
  wakeups = 0;
  poll: PollHandle | null = null;
  waiter: { n: number; resolve: () => void } | null = null;

  constructor(readonly slotSize: number, readonly ring: number, readonly hdr = 0) {
    this.sab = new SharedArrayBuffer(64 + SLOTS * slotSize);
    this.slab = new Uint8Array(this.sab, 64, SLOTS * slotSize); // byteOffset != 0 on purpose
    this.r = b.uringReaderOpen(this.slab, slotSize, ring);
  }

  provide(from: number, count: number): void {
    for (let i = 0; i < count; i++) this.free[i] = from + i;
    b.uringReaderProvide(this.r, this.free, 0, count);
  }

  /** Reaps once; keeps the slots (tests hand them back explicitly when they want). */
  reap(): number[] {
    const n = b.uringReaderReap(this.r, this.slots, this.lens, this.ports, SLOTS, this.stats);
    this.errors += this.stats[0]!;
    if (this.stats[0]! > 0) this.lastErrno = this.stats[1]!;
    this.stale += this.stats[2]!;
    const slots: number[] = [];
    for (let i = 0; i < n; i++) {
      const s = this.slots[i]!;
      slots.push(s);
      const p = s * this.slotSize + this.hdr;
      const len = this.lens[i]! - this.hdr;
      const isUdp = this.slab[p] === 0x45 && this.slab[p + 9] === 17 && ((this.slab[p + 22]! << 8) | this.slab[p + 23]!) === UDP_PORT;
      if (!isUdp) continue;
      let same = true;
      for (let j = p + 29; j < p + len; j++) if (this.slab[j] !== this.slab[p + 28]) same = false;
      this.got.push(`${this.ports[i]}:${this.slab[p + 28]}:${len}${same ? '' : ':corrupt'}`);
    }
    return slots;
  }

  /** Reap from the event loop on eventfd readiness; recycle = hand reaped slots straight back. */
  startPolling(recycle: boolean): void {
    this.poll = b.pollStart(b.uringReaderEventFd(this.r), () => {
      this.wakeups++;
      const slots = this.reap();
      if (recycle && slots.length > 0) b.uringReaderProvide(this.r, Int32Array.from(slots), 0, slots.length);
      if (this.waiter !== null && this.got.length >= this.waiter.n) this.waiter.resolve();
    });
  }

  /** Resolves once `n` packets were collected, or after ms (then the assertions tell). */
  waitFor(n: number, ms: number): Promise<void> {
    if (this.got.length >= n) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.waiter = { n, resolve: () => { clearTimeout(t); resolve(); } };
    });
  }

  close(): void {
    if (this.poll !== null) b.pollStop(this.poll);
    this.poll = null;
    b.uringReaderClose(this.r);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function expectPackets(port: number, n: number, size: number, seed: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(`${port}:${(seed + i) & 255}:${28 + size}`);
  return out;
}

/* ---------------------------------------------------------------------------------------- */

describe('uringProbe', () => {
  it('reports the engine available on this machine (kernel >= 6.7, liburing linked)', () => {
    const p = b.uringProbe();
    assert.equal(p.available, true, `got available=false (reason "${p.reason}"), want true: the io_uring engine silently broke`);
    assert.equal(p.reason, '', `got reason "${p.reason}", want ''`);
  });
});

describe('io_uring reader', () => {
  it('reaps packets from two TUN fds while the JS thread sleeps in the event loop', async () => {
    const eps = [await endpoint(0), await endpoint(1)];
    const rd = new Reader(SLOT, 64);
    try {
      rd.provide(0, SLOTS);
      b.uringReaderAdd(rd.r, eps[0]!.fd, 7);
      b.uringReaderAdd(rd.r, eps[1]!.fd, 65535);
      rd.startPolling(true);
      // The senders are child processes: this thread only awaits, i.e. sleeps in epoll_wait.
      await Promise.all([sendUdp(eps[0]!, 20, 100, 0), sendUdp(eps[1]!, 30, 1200, 100)]);
      await rd.waitFor(50, 3000);
      const want = [...expectPackets(7, 20, 100, 0), ...expectPackets(65535, 30, 1200, 100)].sort();
      assert.deepEqual([...rd.got].sort(), want, `got ${rd.got.length} packets, want 50 (20 on port 7, 30 on port 65535), byte-exact`);
      assert.ok(rd.wakeups > 0, `got ${rd.wakeups} eventfd wake-ups, want > 0`);
      assert.equal(rd.errors, 0, `got ${rd.errors} errors (last errno ${rd.lastErrno}), want 0`);
    } finally {
      rd.close();
      await drop(eps);
    }
  });

  it('ENOBUFS ends the read; provide re-arms it and the queued packets follow', async () => {
    const eps = [await endpoint(2)];
    const rd = new Reader(SLOT, 64);
    try {
      b.uringReaderAdd(rd.r, eps[0]!.fd, 3); // no slots yet: armed by the first provide
      rd.provide(0, 2);
      rd.startPolling(false); // keep the slots: the ring runs dry after 2 packets
      await sendUdp(eps[0]!, 10, 64, 50);
      await rd.waitFor(10, 500);
      assert.equal(rd.got.length, 2, `with 2 slots: got ${rd.got.length} packets, want 2`);
      rd.provide(2, 8); // re-arms; the 8 packets waiting in the TUN queue are read now
      await rd.waitFor(10, 2000);
      assert.deepEqual([...rd.got].sort(), expectPackets(3, 10, 64, 50).sort(), `after provide: got ${rd.got.join(',')}, want all 10 in order of arrival`);
      assert.equal(rd.errors, 0, `got ${rd.errors} errors (last errno ${rd.lastErrno}), want 0 (ENOBUFS is handled, not counted)`);
    } finally {
      rd.close();
      await drop(eps);
    }
  });

  it('remove() stops reports at once, recycles unreaped slots, and lets the fd close the device', async () => {
    const eps = [await endpoint(3)];
    const rd = new Reader(SLOT, 16);
    try {
      rd.provide(0, 16);
      b.uringReaderAdd(rd.r, eps[0]!.fd, 9);
      await sendUdp(eps[0]!, 5, 64, 1); // read into slots, not reaped: no poll running
      await sleep(100);
      b.uringReaderRemove(rd.r, 9);
      assert.deepEqual(rd.reap(), [], 'after remove: got packets of the removed port, want none');
      assert.equal(rd.stale, 5, `got ${rd.stale} stale packets recycled (stats[2]), want 5`);
      // The 5 slots went back to the kernel, so all 16 (= ringEntries) are still with it.
      assert.throws(() => rd.provide(16, 1), RangeError, 'provide past ringEntries after the recycle: got no RangeError, want one (the 5 slots must still count as the kernel\'s)');
      // Re-adding the port works and packets flow again.
      b.uringReaderAdd(rd.r, eps[0]!.fd, 9);
      rd.startPolling(true);
      await sendUdp(eps[0]!, 4, 64, 200);
      await rd.waitFor(4, 2000);
      assert.deepEqual([...rd.got].sort(), expectPackets(9, 4, 64, 200).sort(), `after re-add: got ${rd.got.join(',')}, want 4 packets`);
      // remove + close: the device goes away with the fd (io_uring holds no reference any more).
      b.uringReaderRemove(rd.r, 9);
      b.close(eps[0]!.fd);
      eps[0]!.fd = -1;
      let gone = false;
      for (let i = 0; i < 50 && !gone; i++) {
        gone = !(await linkExists({ name: eps[0]!.ns }, 'eth0'));
        if (!gone) await sleep(20);
      }
      assert.equal(gone, true, 'after remove + close: got eth0 still present, want the TUN device gone');
    } finally {
      rd.close();
      await drop(eps);
    }
  });

  it('reads large packets byte-exact with IFF_VNET_HDR (MTU 9000)', async () => {
    const big = 9000 + 12 + 1;
    const eps = [await endpoint(4, { vnetHdr: true, mtu: 9000 })];
    const rd = new Reader(big, 64, 12);
    try {
      rd.provide(0, SLOTS);
      b.uringReaderAdd(rd.r, eps[0]!.fd, 1);
      rd.startPolling(true);
      await sendUdp(eps[0]!, 8, 8900, 10);
      await rd.waitFor(8, 3000);
      assert.deepEqual([...rd.got].sort(), expectPackets(1, 8, 8900, 10).sort(), `got ${rd.got.join(',')}, want 8 packets of 8928 bytes after the 12-byte header`);
    } finally {
      rd.close();
      await drop(eps);
    }
  });

  it('drops a packet that fills the slot (possible truncation) with EMSGSIZE', async () => {
    const eps = [await endpoint(5)];
    const rd = new Reader(128, 64);
    try {
      rd.provide(0, 8);
      b.uringReaderAdd(rd.r, eps[0]!.fd, 2);
      rd.startPolling(true);
      await sendUdp(eps[0]!, 1, 500, 0); // 528 bytes > 128
      await sendUdp(eps[0]!, 1, 50, 77); // fits
      await rd.waitFor(1, 2000);
      await sleep(50);
      assert.deepEqual(rd.got, ['2:77:78'], `got ${rd.got.join(',')}, want only the packet that fits`);
      assert.equal(rd.errors, 1, `got ${rd.errors} errors, want 1`);
      assert.equal(rd.lastErrno, 90, `got errno ${rd.lastErrno}, want 90 (EMSGSIZE)`);
    } finally {
      rd.close();
      await drop(eps);
    }
  });

  it('rejects programmer errors with RangeError/TypeError/EEXIST', async () => {
    const eps = [await endpoint(6)];
    const rd = new Reader(SLOT, 8);
    try {
      b.uringReaderAdd(rd.r, eps[0]!.fd, 1);
      const cases: { what: string; fn: () => unknown; want: string }[] = [
        { what: 'ringEntries not a power of two', fn: () => b.uringReaderOpen(rd.slab, SLOT, 6), want: 'ERR_OUT_OF_RANGE' },
        { what: 'ringEntries > 32768', fn: () => b.uringReaderOpen(rd.slab, SLOT, 65536), want: 'ERR_OUT_OF_RANGE' },
        { what: 'more than ringEntries provided', fn: () => rd.provide(0, 9), want: 'ERR_OUT_OF_RANGE' },
        { what: 'slot outside the slab', fn: () => b.uringReaderProvide(rd.r, Int32Array.of(SLOTS), 0, 1), want: 'ERR_OUT_OF_RANGE' },
        { what: 'negative slot', fn: () => b.uringReaderProvide(rd.r, Int32Array.of(-1), 0, 1), want: 'ERR_OUT_OF_RANGE' },
        { what: 'same port twice', fn: () => b.uringReaderAdd(rd.r, 0, 1), want: 'EEXIST' },
        { what: 'same fd twice', fn: () => b.uringReaderAdd(rd.r, eps[0]!.fd, 2), want: 'EEXIST' },
        { what: 'port > 65535', fn: () => b.uringReaderAdd(rd.r, eps[0]!.fd, 65536), want: 'ERR_OUT_OF_RANGE' },
        { what: 'max > lens', fn: () => b.uringReaderReap(rd.r, rd.slots, new Int32Array(1), rd.ports, 2), want: 'ERR_OUT_OF_RANGE' },
        { what: 'writer handle as reader', fn: () => b.uringReaderReap(b.uringWriterOpen(4), rd.slots, rd.lens, rd.ports, 1), want: 'ERR_INVALID_ARG_TYPE' },
      ];
      for (const c of cases) {
        let code = '';
        try {
          c.fn();
        } catch (e) {
          code = (e as { code?: string }).code ?? '';
        }
        assert.equal(code, c.want, `${c.what}: got code "${code}", want ${c.want}`);
      }
      rd.provide(0, 8); // exactly ringEntries is fine
      b.uringReaderClose(rd.r);
      let closed = '';
      try {
        rd.reap();
      } catch (e) {
        closed = (e as { code?: string }).code ?? '';
      }
      assert.equal(closed, 'ERR_URING_CLOSED', `reap after close: got code "${closed}", want ERR_URING_CLOSED`);
    } finally {
      rd.close(); // idempotent
      await drop(eps);
    }
  });
});

describe('batched writes to several fds', () => {
  for (const engine of ['uring', 'fallback'] as const) {
    it(`${engine}: one batch reaches two namespaces; a closed fd and fd -1 count as drops, no throw`, async () => {
      const eps = [await endpoint(7), await endpoint(8)];
      const w = engine === 'uring' ? b.uringWriterOpen(8) : null; // 8 < batch: several submissions
      const closed = b.open(tunName('z'));
      try {
        const rx = eps.map((e) => receiveUdp(e, 10, 3000));
        await Promise.all(rx.map((r) => r.ready));
        const n = 24;
        const slab = new Uint8Array(new SharedArrayBuffer(n * SLOT));
        const fds = new Int32Array(n);
        const offsets = new Int32Array(n);
        const lens = new Int32Array(n);
        const stats = new Int32Array(2);
        // Packets 0..19 alternate between the two endpoints; 20..21 go to a closed fd, 22..23 to -1.
        for (let i = 0; i < n; i++) {
          const ep = eps[i & 1]!;
          offsets[i] = i * SLOT;
          lens[i] = buildUdp(slab, i * SLOT, ep, 100 + i, i);
          fds[i] = i < 20 ? ep.fd : i < 22 ? closed.fd : -1;
        }
        // The fds 20..21 point at a number that is closed now (nothing can reuse it before the call).
        const closedFd = closed.fd;
        b.close(closedFd);
        const consumed = w !== null
          ? b.uringWriteBatch(w, fds, slab, offsets, lens, 0, n, stats)
          : b.writeBatchFds(fds, slab, offsets, lens, 0, n, stats);
        assert.equal(consumed, n, `got ${consumed} consumed, want ${n}`);
        assert.equal(stats[0], 4, `got ${stats[0]} dropped, want 4 (2 to a closed fd, 2 to fd -1)`);
        assert.equal(stats[1], EBADF, `got drop errno ${stats[1]}, want ${EBADF} (EBADF)`);
        const got = await Promise.all(rx.map((r) => r.done));
        for (let k = 0; k < 2; k++) {
          const want: string[] = [];
          for (let i = k; i < 20; i += 2) want.push(`${i}:${100 + i}`);
          assert.deepEqual(got[k], want, `endpoint ${k}: got ${JSON.stringify(got[k])}, want ${JSON.stringify(want)}`);
        }
      } finally {
        if (w !== null) b.uringWriterClose(w);
        await drop(eps);
      }
    });
  }

  it('uring: writes large packets with a virtio header byte-exact (MTU 9000)', async () => {
    const eps = [await endpoint(9, { vnetHdr: true, mtu: 9000 })];
    const w = b.uringWriterOpen(4);
    try {
      const rx = receiveUdp(eps[0]!, 3, 3000);
      await rx.ready;
      const big = 9100;
      const slab = new Uint8Array(3 * big);
      const fds = new Int32Array(3).fill(eps[0]!.fd);
      const offsets = Int32Array.of(0, big, 2 * big);
      const lens = new Int32Array(3);
      for (let i = 0; i < 3; i++) lens[i] = buildUdp(slab, i * big, eps[0]!, 8900 + i, 30 + i, 12);
      const stats = new Int32Array(2);
      const consumed = b.uringWriteBatch(w, fds, slab, offsets, lens, 0, 3, stats);
      assert.equal(consumed, 3, `got ${consumed} consumed, want 3`);
      assert.equal(stats[0], 0, `got ${stats[0]} dropped (errno ${stats[1]}), want 0`);
      const got = await rx.done;
      assert.deepEqual(got, ['30:8900', '31:8901', '32:8902'], `got ${JSON.stringify(got)}, want 3 intact datagrams of 8900..8902 bytes`);
    } finally {
      b.uringWriterClose(w);
      await drop(eps);
    }
  });
});

describe('writer on a worker thread', () => {
  it('writes from a worker, and terminating the worker with an open writer is safe', async () => {
    const nativeUrl = new URL('../../src/io/native.js', import.meta.url).href;
    const code = `
      const { parentPort } = require('node:worker_threads');
      import(${JSON.stringify(nativeUrl)}).then((m) => {
        const b = m.loadBinding();
        const w = b.uringWriterOpen(16);
        globalThis.keep = w; // left open on purpose: the env cleanup hook must close it
        const stats = new Int32Array(2);
        const n = b.uringWriteBatch(w, Int32Array.of(-1, -1), new Uint8Array(64), Int32Array.of(0, 32), Int32Array.of(20, 20), 0, 2, stats);
        parentPort.postMessage([n, stats[0], stats[1]]);
        setInterval(() => undefined, 1000); // stay alive until terminated
      });`;
    const w = new Worker(code, { eval: true });
    try {
      const got = await new Promise<number[]>((resolve, reject) => {
        w.once('message', resolve);
        w.once('error', reject);
      });
      assert.deepEqual(got, [2, 2, EBADF], `got [consumed, dropped, errno] ${JSON.stringify(got)}, want [2, 2, ${EBADF}]`);
    } finally {
      const exit = await w.terminate();
      assert.equal(exit, 1, `got worker exit code ${exit}, want 1 (terminated)`);
    }
  });
});
