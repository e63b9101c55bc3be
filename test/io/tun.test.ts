/**
 * Real-device tests for the TUN binding (native/src/tun.c), TunDevice and the netns helpers.
 * Packets move through the binding calls the datapath makes on a device's raw fd (readBatch,
 * readBatchSlots, writeBatch, pollStart/pollStop); TunDevice only opens and closes.
 *
 * They need root, /dev/net/tun, iproute2 and iputils-ping, and FAIL (never skip) when any is
 * missing. All traffic stays inside namespaces created here (10.199.x.x, fd00:199::/64), and
 * every namespace and device is removed in `finally` blocks even when an assertion fails.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { Worker } from 'node:worker_threads';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

import { Rand } from '../helpers/rand.js';
import { findPackageRoot, loadBinding, type TunBinding } from '../../src/io/native.js';
import {
  OFFLOAD_NO_USO,
  OFFLOAD_WANTED,
  TUN_F_CSUM,
  TUN_F_TSO4,
  TUN_F_TSO6,
  TUN_F_TSO_ECN,
  TUN_F_USO4,
  TUN_F_USO6,
  TunDevice,
  VNET_HDR_LEN,
} from '../../src/io/tun.js';
import { attachEndpoint, createNetns, deleteNetns, detachEndpoint, linkExists, netnsExists, NetnsError } from '../../src/io/netns.js';

const run = promisify(execFile);
const TAG = String(process.pid % 100000);
/** Names are unique per test process: "tswio<pid><x>" (<= 15 chars). */
const nsName = (x: string): string => `tswio${TAG}${x}`;
const tunName = (x: string): string => `tswt${TAG}${x}`;

const SLOT = 2048;
const SLOTS = 32;

let b: TunBinding;
const createdNs = new Set<string>();

async function freshNs(x: string): Promise<string> {
  const name = nsName(x);
  if (await netnsExists(name)) await deleteNetns(name);
  await createNetns(name);
  createdNs.add(name);
  return name;
}

async function dropNs(name: string): Promise<void> {
  await deleteNetns(name);
  createdNs.delete(name);
}

async function hostLinks(): Promise<string> {
  return (await run('ip', ['-o', 'link', 'show'])).stdout;
}

before(() => {
  assert.equal(process.getuid?.(), 0, `got uid ${process.getuid?.()}, want 0: these tests need root (CAP_NET_ADMIN)`);
  b = loadBinding(); // throws NativeBindingError when native/build is missing: the suite fails
});

after(async () => {
  // Last line of defence: anything a failed test left behind.
  for (const ns of [...createdNs]) await deleteNetns(ns).catch(() => false);
});

/* ---------------------------------------------------------------------------------------- */
/* Packet helpers (test code: clarity over speed)                                            */

function csumAdd(sum: number, buf: Uint8Array, off: number, len: number): number {
  let s = sum;
  for (let i = 0; i + 1 < len; i += 2) s += (buf[off + i]! << 8) | buf[off + i + 1]!;
  if ((len & 1) === 1) s += buf[off + len - 1]! << 8;
  return s;
}

function csumFold(sum: number): number {
  let s = sum;
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return ~s & 0xffff;
}

function swap(buf: Uint8Array, a: number, c: number, n: number): void {
  for (let i = 0; i < n; i++) {
    const t = buf[a + i]!;
    buf[a + i] = buf[c + i]!;
    buf[c + i] = t;
  }
}

/**
 * Turns an ICMP/ICMPv6 echo request at buf[off, off+len) into the echo reply in place.
 * Returns 4 or 6 for a converted request, -4/-6 for a request whose checksum is wrong, 0 for
 * anything else (left alone).
 */
function echoReply(buf: Uint8Array, off: number, len: number): number {
  if (len < 1) return 0;
  const v = buf[off]! >> 4;
  if (v === 4 && len >= 28 && buf[off + 9] === 1) {
    const ihl = (buf[off]! & 0x0f) * 4;
    const l4 = off + ihl;
    if (buf[l4] !== 8) return 0;
    // The kernel made the request: a valid checksum here proves csumAdd/csumFold right.
    if (csumFold(csumAdd(0, buf, l4, len - ihl)) !== 0) return -4;
    swap(buf, off + 12, off + 16, 4); // the IPv4 header checksum does not change
    buf[l4] = 0;
    buf[l4 + 2] = 0;
    buf[l4 + 3] = 0;
    const c = csumFold(csumAdd(0, buf, l4, len - ihl));
    buf[l4 + 2] = c >> 8;
    buf[l4 + 3] = c & 0xff;
    return 4;
  }
  if (v === 6 && len >= 48 && buf[off + 6] === 58) {
    const l4 = off + 40;
    if (buf[l4] !== 128) return 0;
    const plen = len - 40;
    // Pseudo-header (source, destination, upper-layer length, next header) + message.
    const pseudo = csumAdd(0, buf, off + 8, 32) + plen + 58;
    if (csumFold(csumAdd(pseudo, buf, l4, plen)) !== 0) return -6;
    swap(buf, off + 8, off + 24, 16); // the pseudo-header sum does not change
    buf[l4] = 129;
    buf[l4 + 2] = 0;
    buf[l4 + 3] = 0;
    const c = csumFold(csumAdd(pseudo, buf, l4, plen));
    buf[l4 + 2] = c >> 8;
    buf[l4 + 3] = c & 0xff;
    return 6;
  }
  return 0;
}

/** Echo responder: reads batches when readable, answers echo requests with one writeBatch. */
class Responder {
  readonly sab = new SharedArrayBuffer(64 + SLOTS * SLOT);
  // A view that does not start at byte 0 checks the binding honours byteOffset.
  readonly slab = new Uint8Array(this.sab, 64, SLOTS * SLOT);
  readonly lens = new Int32Array(SLOTS);
  readonly offsets = new Int32Array(SLOTS);
  readonly wlens = new Int32Array(SLOTS);
  readonly stats = new Int32Array(2);
  requests4 = 0;
  requests6 = 0;
  written = 0;
  dropped = 0;
  batches = 0;
  badChecksums = 0;
  stop: () => void = () => {};
  constructor(readonly dev: TunDevice) {}

  start(): void {
    this.stop = onReadable(this.dev.fd, () => {
      for (;;) {
        const n = b.readBatch(this.dev.fd, this.slab, SLOT, 0, SLOTS, this.lens);
        if (n === 0) return;
        this.batches++;
        let k = 0;
        for (let i = 0; i < n; i++) {
          const fam = echoReply(this.slab, i * SLOT, this.lens[i]!);
          if (fam < 0) this.badChecksums++;
          if (fam <= 0) continue;
          if (fam === 4) this.requests4++;
          else this.requests6++;
          this.offsets[k] = i * SLOT;
          this.wlens[k] = this.lens[i]!;
          k++;
        }
        if (k > 0) {
          this.written += b.writeBatch(this.dev.fd, this.slab, this.offsets, this.wlens, 0, k, this.stats);
          this.dropped += this.stats[0]!;
        }
      }
    });
  }
}

/** Calls cb whenever fd has packets to read, as the I/O loop polls a port; returns the stop (call it before closing). */
function onReadable(fd: number, cb: () => void): () => void {
  const h = b.pollStart(fd, (status) => {
    if (status < 0) throw new Error(`poll of fd ${fd} failed: errno ${-status}`);
    cb();
  });
  return () => b.pollStop(h);
}

function received(out: string): number {
  const m = /(\d+) (?:packets )?received/.exec(out);
  return m === null ? -1 : Number(m[1]);
}

/* ---------------------------------------------------------------------------------------- */

describe('native binding', () => {
  it('finds the package root from the compiled file and exports matching constants', () => {
    const here = dirname(fileURLToPath(import.meta.url));
    const root = findPackageRoot(here);
    assert.ok(here.startsWith(root), `got root ${root}, want an ancestor of ${here}`);
    const cases: [string, number, number][] = [
      ['TUN_F_CSUM', b.TUN_F_CSUM, TUN_F_CSUM],
      ['TUN_F_TSO4', b.TUN_F_TSO4, TUN_F_TSO4],
      ['TUN_F_TSO6', b.TUN_F_TSO6, TUN_F_TSO6],
      ['TUN_F_TSO_ECN', b.TUN_F_TSO_ECN, TUN_F_TSO_ECN],
      ['TUN_F_USO4', b.TUN_F_USO4, TUN_F_USO4],
      ['TUN_F_USO6', b.TUN_F_USO6, TUN_F_USO6],
      ['VNET_HDR_LEN', b.VNET_HDR_LEN, VNET_HDR_LEN],
    ];
    for (const [name, got, want] of cases) assert.equal(got, want, `${name}: got ${got}, want ${want}`);
  });

  it('names the missing package root clearly', () => {
    let code = '';
    try {
      findPackageRoot('/proc/self'); // no package.json named "tunswitch" above it
    } catch (e) {
      code = (e as { code?: string }).code ?? '';
    }
    assert.equal(code, 'ENATIVE', `got code "${code}", want ENATIVE`);
  });
});

describe('TUN in a namespace', () => {
  it('answers IPv4 and IPv6 ping through readBatch/writeBatch after the device moved namespace', async () => {
    const ns = await freshNs('p');
    let dev: TunDevice | null = null;
    let r: Responder | null = null;
    try {
      dev = TunDevice.open(tunName('p'));
      r = new Responder(dev);
      r.start(); // the fd keeps working across the namespace move below
      await attachEndpoint({
        tun: dev.name,
        netns: { name: ns },
        ipv4: '10.199.1.1',
        ipv4Prefix: 24,
        ipv6: 'fd00:199::1',
        ipv6Prefix: 64,
        mtu: 1400,
        txqueuelen: 1000,
        routes: ['10.199.1.0/24', 'fd00:199::/64'],
      });
      const show = (await run('ip', ['-n', ns, '-o', 'addr', 'show', 'dev', 'eth0'])).stdout;
      for (const want of ['10.199.1.1/24', 'fd00:199::1/64']) {
        assert.ok(show.includes(want), `got addresses "${show.trim()}", want ${want}`);
      }
      const link = (await run('ip', ['-n', ns, '-o', 'link', 'show', 'dev', 'eth0'])).stdout;
      assert.match(link, /mtu 1400 .*qlen 1000/, `got link "${link.trim()}", want mtu 1400 and qlen 1000`);

      const p4 = await run('ip', ['netns', 'exec', ns, 'ping', '-n', '-c', '3', '-i', '0.2', '-W', '1', '10.199.1.2']);
      assert.equal(received(p4.stdout), 3, `ping: got ${received(p4.stdout)} received, want 3:\n${p4.stdout}`);
      const p6 = await run('ip', ['netns', 'exec', ns, 'ping', '-6', '-n', '-c', '3', '-i', '0.2', '-W', '1', 'fd00:199::2']);
      assert.equal(received(p6.stdout), 3, `ping -6: got ${received(p6.stdout)} received, want 3:\n${p6.stdout}`);

      assert.equal(r.requests4, 3, `got ${r.requests4} IPv4 echo requests, want 3`);
      assert.equal(r.requests6, 3, `got ${r.requests6} IPv6 echo requests, want 3`);
      assert.equal(r.written, 6, `got ${r.written} replies consumed by writeBatch, want 6`);
      assert.equal(r.dropped, 0, `got ${r.dropped} replies dropped, want 0`);
      assert.equal(r.badChecksums, 0, `got ${r.badChecksums} echo requests failing our checksum check, want 0`);

      // writeBatch drops what the kernel rejects and carries on: a non-IP packet, then a
      // valid IPv4 packet (an echo reply to 10.199.1.1, delivered inside the namespace).
      r.stop();
      const slab = new Uint8Array(256);
      slab[0] = 0x00; // version 0: not IPv4/IPv6 -> EINVAL
      const valid = [0x45, 0, 0, 28, 0, 1, 0, 0, 64, 1, 0, 0, 10, 199, 1, 2, 10, 199, 1, 1, 0, 0, 0, 0, 0, 9, 0, 1];
      slab.set(valid, 64);
      const ipc = csumFold(csumAdd(0, slab, 64, 20));
      slab[64 + 10] = ipc >> 8;
      slab[64 + 11] = ipc & 0xff;
      const icc = csumFold(csumAdd(0, slab, 84, 8));
      slab[84 + 2] = icc >> 8;
      slab[84 + 3] = icc & 0xff;
      const stats = new Int32Array(2);
      const n = b.writeBatch(dev.fd, slab, Int32Array.of(0, 64), Int32Array.of(20, 28), 0, 2, stats);
      const cases: [string, number, number][] = [
        ['consumed', n, 2],
        ['stats[0] dropped', stats[0]!, 1],
        ['stats[1] errno', stats[1]!, 22],
      ];
      for (const [what, got, want] of cases) assert.equal(got, want, `writeBatch ${what}: got ${got}, want ${want}`);
    } finally {
      r?.stop();
      dev?.close();
      await dropNs(ns);
    }
  });

  it('prefixes each packet with a 12-byte vnet header when vnetHdr is on', async () => {
    const ns = await freshNs('v');
    let dev: TunDevice | null = null;
    let tcp: ReturnType<typeof spawn> | null = null;
    let stop = (): void => {};
    try {
      dev = TunDevice.open(tunName('v'), { vnetHdr: true, offload: true });
      assert.ok(dev.vnetHdr, 'got vnetHdr false, want true');
      assert.ok(
        dev.offload === OFFLOAD_WANTED || dev.offload === OFFLOAD_NO_USO,
        `got offload 0x${dev.offload.toString(16)}, want 0x${OFFLOAD_WANTED.toString(16)} or 0x${OFFLOAD_NO_USO.toString(16)}`,
      );
      await attachEndpoint({ tun: dev.name, netns: { name: ns }, ipv4: '10.199.2.1/24' });

      const slot = 65600; // a GSO packet can be 64 KiB + header
      const slots = 8;
      const slab = new Uint8Array(slots * slot);
      const lens = new Int32Array(slots);
      // The first small ICMP packet and the first TCP packet, copied out of the slab.
      let icmp: Uint8Array | null = null;
      let syn: Uint8Array | null = null;
      const done = new Promise<void>((resolve) => {
        const fd = (dev as TunDevice).fd;
        stop = onReadable(fd, () => {
          const n = b.readBatch(fd, slab, slot, 0, slots, lens);
          for (let i = 0; i < n; i++) {
            const o = i * slot;
            if (slab[o + VNET_HDR_LEN] !== 0x45) continue; // IPv4 only (skip IPv6 RS/MLD)
            const proto = slab[o + VNET_HDR_LEN + 9];
            if (proto === 1 && icmp === null) icmp = slab.slice(o, o + lens[i]!);
            if (proto === 6 && syn === null) syn = slab.slice(o, o + lens[i]!);
          }
          if (icmp !== null && syn !== null) resolve();
        });
      });
      // One small ICMP packet and one TCP SYN (left unanswered), both to the far side.
      const ping = run('ip', ['netns', 'exec', ns, 'ping', '-n', '-c', '1', '-W', '1', '-s', '16', '10.199.2.2']).catch(() => null);
      tcp = spawn('ip', ['netns', 'exec', ns, 'timeout', '5', 'bash', '-c', 'exec 3<>/dev/tcp/10.199.2.2/9'], { stdio: 'ignore' });
      const timer = new Promise<void>((_, reject) => setTimeout(() => reject(new Error('timeout: got no ICMP and TCP packet within 5 s')), 5000).unref());
      await Promise.race([done, timer]);
      await ping;

      const u16 = (a: Uint8Array, o: number): number => a[o]! | (a[o + 1]! << 8); // host (little) endian
      assert.ok(icmp !== null && syn !== null, 'got no ICMP or no TCP packet, want both');
      const ic: Uint8Array = icmp;
      const sy: Uint8Array = syn;
      const ipLen = (ic[VNET_HDR_LEN + 2]! << 8) | ic[VNET_HDR_LEN + 3]!;
      const cases: [string, number, number][] = [
        ['icmp length = 12 + IP total length', ic.length, VNET_HDR_LEN + ipLen],
        ['icmp IP total length (20 + 8 + 16)', ipLen, 44],
        ['icmp gso_type', ic[1]!, 0],
        ['icmp gso_size', u16(ic, 4), 0],
        ['syn gso_type', sy[1]!, 0],
        // With TUN_F_CSUM the kernel leaves the TCP checksum to us: NEEDS_CSUM, and the
        // checksum starts at the TCP header (offset 20 from the IP header), field at +16.
        ['syn flags NEEDS_CSUM', sy[0]! & 1, 1],
        ['syn csum_start', u16(sy, 6), 20],
        ['syn csum_offset', u16(sy, 8), 16],
        ['syn num_buffers', u16(sy, 10), 0],
      ];
      for (const [what, got, want] of cases) assert.equal(got, want, `${what}: got ${got}, want ${want}`);
    } finally {
      if (tcp !== null && tcp.exitCode === null) tcp.kill();
      stop();
      dev?.close();
      await dropNs(ns);
    }
  });
});

describe('readBatchSlots', () => {
  it('fills the listed slots in order and drops packets longer than a slot', async () => {
    const ns = await freshNs('s');
    let dev: TunDevice | null = null;
    try {
      dev = TunDevice.open(tunName('s'));
      await attachEndpoint({ tun: dev.name, netns: { name: ns }, ipv4: '10.199.4.1/24' });
      const slot = 100;
      const big = 100; // ICMP payload: 20 + 8 + 100 = 128 bytes > slot
      const small = 16; // 20 + 8 + 16 = 44 bytes
      const ping = (size: number) =>
        run('ip', ['netns', 'exec', ns, 'ping', '-n', '-c', '2', '-i', '0.2', '-W', '1', '-s', String(size), '10.199.4.2']).catch(() => null);
      await ping(big); // nobody answers: the requests wait in the TUN queue
      await ping(small);

      const rand = new Rand(0x5107);
      const nSlots = 16;
      const order = Array.from({ length: nSlots }, (_, i) => i);
      for (let i = nSlots - 1; i > 0; i--) {
        const j = rand.int(i + 1);
        [order[i], order[j]] = [order[j]!, order[i]!];
      }
      const slots = Int32Array.from(order);
      const slab = new Uint8Array(nSlots * slot);
      const lens = new Int32Array(nSlots).fill(-1);
      const stats = new Int32Array(2);
      const n = b.readBatchSlots(dev.fd, slab, slot, slots, 0, nSlots, lens, stats);

      const filled = new Set<number>();
      const smallSeen: number[] = [];
      for (let i = 0; i < n; i++) {
        const s = slots[i]!;
        filled.add(s);
        const len = lens[s]!;
        assert.ok(len > 0 && len <= slot, `slot ${s}: got length ${len}, want 1..${slot}`);
        if (slab[s * slot] === 0x45 && slab[s * slot + 9] === 1) smallSeen.push(len);
      }
      for (let s = 0; s < nSlots; s++) {
        if (!filled.has(s)) assert.equal(lens[s], -1, `unlisted or unfilled slot ${s}: got length ${lens[s]}, want untouched -1`);
      }
      assert.deepEqual(smallSeen, [28 + small, 28 + small], `got IPv4 ICMP lengths ${JSON.stringify(smallSeen)}, want two of ${28 + small}`);
      assert.ok(stats[0]! >= 2, `got ${stats[0]} packets lost, want >= 2 (the ${28 + big}-byte requests)`);
      assert.equal(stats[1], 90, `got lost errno ${stats[1]}, want 90 (EMSGSIZE)`);
    } finally {
      dev?.close();
      await dropNs(ns);
    }
  });
});

describe('errors', () => {
  it('rejects bad names and names held by another fd, with codes', () => {
    const held = TunDevice.open(tunName('e'));
    try {
      const cases: { what: string; fn: () => unknown; code: string; msg: RegExp }[] = [
        { what: 'name of 16 bytes', fn: () => TunDevice.open('a'.repeat(16)), code: 'ENAMETOOLONG', msg: /too long \(16 bytes\).*at most 15/ },
        { what: 'name of 40 bytes', fn: () => TunDevice.open('b'.repeat(40)), code: 'ENAMETOOLONG', msg: /too long \(40 bytes\)/ },
        { what: 'name with a slash', fn: () => TunDevice.open('a/b'), code: 'EINVAL', msg: /invalid/ },
        { what: 'name held by another fd', fn: () => TunDevice.open(held.name), code: 'EBUSY', msg: /is taken/ },
        { what: 'multi-queue open of a single-queue device', fn: () => TunDevice.open(held.name, { multiQueue: true }), code: 'EINVAL', msg: /different flags/ },
        { what: 'name of a non-TUN device', fn: () => TunDevice.open('lo'), code: 'EINVAL', msg: /not a TUN/ },
        { what: 'offload without vnetHdr', fn: () => TunDevice.open(tunName('o'), { offload: true }), code: 'EBAD_REQUEST', msg: /needs opts.vnetHdr/ },
        { what: 'opts.vnetHdr not boolean', fn: () => b.open(tunName('o'), { vnetHdr: 1 as unknown as boolean }), code: 'ERR_INVALID_ARG_TYPE', msg: /opts.vnetHdr/ },
      ];
      for (const c of cases) {
        let err: (Error & { code?: string }) | null = null;
        try {
          c.fn();
        } catch (e) {
          err = e as Error & { code?: string };
        }
        assert.ok(err !== null, `${c.what}: got no error, want ${c.code}`);
        assert.equal(err.code, c.code, `${c.what}: got code ${err.code} (${err.message}), want ${c.code}`);
        assert.match(err.message, c.msg, `${c.what}: got message "${err.message}", want ${c.msg}`);
      }
    } finally {
      held.close();
    }
  });

  it('bounds-checks readBatch against a naive model on seeded random arguments', () => {
    const dev = TunDevice.open(tunName('r')); // down, so nothing is ever waiting: in-range calls return 0
    try {
      const rand = new Rand(0x7e57);
      const slab = new Uint8Array(4096);
      const lens = new Int32Array(8);
      for (let i = 0; i < 500; i++) {
        const slotSize = rand.range(1, 2048);
        const first = rand.range(0, 10);
        const max = rand.range(0, 10);
        const fits = max === 0 || ((first + max) * slotSize <= slab.length && first + max <= lens.length);
        let got = 'ok';
        try {
          const n = b.readBatch(dev.fd, slab, slotSize, first, max, lens);
          assert.equal(n, 0, `readBatch(${slotSize}, ${first}, ${max}): got ${n} packets, want 0`);
        } catch (e) {
          got = (e as Error).name;
          assert.equal((e as { code?: string }).code, 'ERR_OUT_OF_RANGE', `got code ${(e as { code?: string }).code}, want ERR_OUT_OF_RANGE`);
        }
        const want = fits ? 'ok' : 'RangeError';
        assert.equal(got, want, `readBatch(slotSize ${slotSize}, firstSlot ${first}, maxSlots ${max}): got ${got}, want ${want}`);
      }
    } finally {
      dev.close();
    }
  });

  it('throws TypeError/RangeError naming the argument', () => {
    const dev = TunDevice.open(tunName('a'));
    try {
      const slab = new Uint8Array(1024);
      const lens = new Int32Array(4);
      const cases: { what: string; fn: () => unknown; name: string; msg: RegExp }[] = [
        { what: 'slot past the slab', fn: () => b.readBatch(dev.fd, slab, 512, 2, 1, lens), name: 'RangeError', msg: /firstSlot/ },
        { what: 'lens too short', fn: () => b.readBatch(dev.fd, slab, 128, 0, 8, lens), name: 'RangeError', msg: /"lens"/ },
        { what: 'negative slot', fn: () => b.readBatch(dev.fd, slab, 128, -1, 1, lens), name: 'RangeError', msg: /firstSlot/ },
        { what: 'fractional slotSize', fn: () => b.readBatch(dev.fd, slab, 1.5, 0, 1, lens), name: 'RangeError', msg: /slotSize/ },
        { what: 'slab not Uint8Array', fn: () => b.readBatch(dev.fd, new Int32Array(4) as unknown as Uint8Array, 4, 0, 1, lens), name: 'TypeError', msg: /"slab"/ },
        { what: 'lens not Int32Array', fn: () => b.readBatch(dev.fd, slab, 4, 0, 1, new Uint32Array(4) as unknown as Int32Array), name: 'TypeError', msg: /"lens"/ },
        { what: 'stats too short', fn: () => b.readBatch(dev.fd, slab, 4, 0, 1, lens, new Int32Array(1)), name: 'RangeError', msg: /"stats"/ },
        { what: 'write past the slab', fn: () => b.writeBatch(dev.fd, slab, Int32Array.of(1000), Int32Array.of(100), 0, 1), name: 'RangeError', msg: /outside the slab/ },
        { what: 'write negative offset', fn: () => b.writeBatch(dev.fd, slab, Int32Array.of(-1), Int32Array.of(10), 0, 1), name: 'RangeError', msg: /outside the slab/ },
        { what: 'write count past offsets', fn: () => b.writeBatch(dev.fd, slab, Int32Array.of(0), Int32Array.of(10, 10), 0, 2), name: 'RangeError', msg: /offsets/ },
        { what: 'fd not a number', fn: () => b.readBatch('3' as unknown as number, slab, 4, 0, 1, lens), name: 'TypeError', msg: /"fd"/ },
        { what: 'pollStop on a non-handle', fn: () => b.pollStop({} as never), name: 'TypeError', msg: /handle/ },
        { what: 'poll events out of range', fn: () => b.pollStart(dev.fd, () => {}, 9), name: 'RangeError', msg: /events/ },
      ];
      for (const c of cases) {
        let err: Error | null = null;
        try {
          c.fn();
        } catch (e) {
          err = e as Error;
        }
        assert.ok(err !== null, `${c.what}: got no error, want ${c.name}`);
        assert.equal(err.name, c.name, `${c.what}: got ${err.name} (${err.message}), want ${c.name}`);
        assert.match(err.message, c.msg, `${c.what}: got message "${err.message}", want ${c.msg}`);
      }
    } finally {
      dev.close();
    }
    assert.equal(dev.isClosed, true, 'got isClosed false after close, want true');
    dev.close(); // idempotent: a second close must not close a reused fd number
  });

  it('reports ip failures as one line naming the command', async () => {
    let err: NetnsError | null = null;
    try {
      await attachEndpoint({ tun: tunName('z'), netns: { name: nsName('z') } }); // no such device
    } catch (e) {
      err = e as NetnsError;
    }
    assert.ok(err !== null, 'got no error, want ESYSTEM');
    assert.equal(err.code, 'ESYSTEM', `got code ${err.code}, want ESYSTEM`);
    assert.match(err.message, /^netns: ip link set dev tswt\d+z netns .*: .+$/, `got "${err.message}"`);
    assert.ok(!err.message.includes('\n'), `got a multi-line message "${err.message}", want one line`);
    let bad: NetnsError | null = null;
    try {
      await attachEndpoint({ tun: '-x', netns: { name: 'n' } });
    } catch (e) {
      bad = e as NetnsError;
    }
    assert.equal(bad?.code, 'EBAD_REQUEST', `got code ${bad?.code}, want EBAD_REQUEST`);
  });
});

describe('lifetime and cleanup', () => {
  it('opens the queues of a multi-queue device under one name', () => {
    const qs = TunDevice.openQueues(tunName('m'), 3);
    try {
      const fds = new Set(qs.map((q) => q.fd));
      assert.equal(fds.size, 3, `got ${fds.size} distinct fds, want 3`);
      for (const q of qs) assert.equal(q.name, qs[0]!.name, `got queue name ${q.name}, want ${qs[0]!.name}`);
      for (const q of qs) assert.ok(q.multiQueue, `queue ${q.fd}: got multiQueue false, want true`);
    } finally {
      for (const q of qs) q.close();
    }
  });

  it('polls for writability; pollStop inside its own callback is safe', async () => {
    const ns = await freshNs('w');
    const dev = TunDevice.open(tunName('w'));
    try {
      // A TUN reports writable only while its device is up.
      await attachEndpoint({ tun: dev.name, netns: { name: ns } });
      let inside = 0;
      let events = 0;
      await new Promise<void>((resolve) => {
        const h = b.pollStart(
          dev.fd,
          (status, ev) => {
            inside++;
            events = ev;
            b.pollStop(h); // closes the native handle from within its own callback
            setTimeout(resolve, 50); // time for a wrong second call to show up
          },
          b.POLL_WRITABLE,
        );
      });
      assert.equal(inside, 1, `got ${inside} callbacks around pollStop, want 1`);
      assert.equal(events & b.POLL_WRITABLE, b.POLL_WRITABLE, `got events ${events}, want POLL_WRITABLE set`);
    } finally {
      dev.close();
      await dropNs(ns);
    }
  });

  it('a worker thread polling a TUN can be terminated (the poll closes before the addon unloads)', async () => {
    const nativeUrl = new URL('../../src/io/native.js', import.meta.url).href;
    const code = `
      const { parentPort } = require('node:worker_threads');
      import(${JSON.stringify(nativeUrl)}).then((m) => {
        const b = m.loadBinding();
        const t = b.open(${JSON.stringify(tunName('k'))});
        globalThis.keep = b.pollStart(t.fd, () => {});
        parentPort.postMessage(t.fd);
      });`;
    const w = new Worker(code, { eval: true });
    let fd = -1;
    try {
      fd = await new Promise<number>((resolve, reject) => {
        w.once('message', (m: number) => resolve(m));
        w.once('error', reject);
      });
      const exit = await w.terminate();
      assert.equal(exit, 1, `got worker exit code ${exit}, want 1 (terminated)`);
    } finally {
      await w.terminate();
      if (fd >= 0) b.close(fd); // fds are per process: the worker's TUN fd outlives it
    }
    assert.ok(fd >= 0, `got fd ${fd} from the worker, want >= 0`);
    assert.equal(await linkExists(null, tunName('k')), false, `got ${tunName('k')} after closing its fd, want none`);
  });

  it('close deletes the device inside the namespace; nothing is left after the namespace goes', async () => {
    const ns = await freshNs('c');
    const name = tunName('c');
    let dev: TunDevice | null = null;
    try {
      dev = TunDevice.open(name);
      const stop = onReadable(dev.fd, () => {});
      await attachEndpoint({ tun: name, netns: { name: ns }, ifname: 'ep0', ipv4: '10.199.3.1/24' });
      assert.equal(await linkExists({ name: ns }, 'ep0'), true, 'before close: got no ep0 in the namespace, want one');
      assert.equal(await linkExists(null, name), false, `before close: got ${name} in the host namespace, want it moved`);
      stop();
      dev.close();
      const inside = await linkExists({ name: ns }, 'ep0');
      assert.equal(inside, false, `after close: got ep0 present=${inside}, want false (non-persistent TUN dies with its fd)`);
      const detached = await detachEndpoint({ netns: { name: ns }, ifname: 'ep0' });
      assert.equal(detached, false, `detach after close: got ${detached}, want false (nothing left to delete)`);
    } finally {
      dev?.close();
      await dropNs(ns);
    }
    const links = await hostLinks();
    assert.ok(!links.includes(name), `got ${name} in "ip link" after cleanup, want none`);
    assert.equal(await netnsExists(ns), false, `got namespace ${ns} after delete, want none`);
  });

  it('detach while the fd is open deletes the device and the fd then reports EBADFD', async () => {
    const ns = await freshNs('d');
    let dev: TunDevice | null = null;
    try {
      dev = TunDevice.open(tunName('d'));
      await attachEndpoint({ tun: dev.name, netns: { name: ns } });
      const detached = await detachEndpoint({ netns: { name: ns } });
      assert.equal(detached, true, `got detach ${detached}, want true`);
      assert.equal(await linkExists({ name: ns }, 'eth0'), false, 'got eth0 after detach, want none');
      let code = '';
      try {
        b.readBatch(dev.fd, new Uint8Array(2048), 2048, 0, 1, new Int32Array(1));
      } catch (e) {
        code = (e as { code?: string }).code ?? '';
      }
      assert.equal(code, 'EBADFD', `readBatch on a detached queue: got code "${code}", want EBADFD`);
    } finally {
      dev?.close();
      await dropNs(ns);
    }
  });

  it('deleting the namespace while the fd is open deletes the device (it does not come back)', async () => {
    const ns = await freshNs('n');
    const name = tunName('n');
    let dev: TunDevice | null = null;
    try {
      dev = TunDevice.open(name);
      await attachEndpoint({ tun: name, netns: { name: ns } });
      await dropNs(ns);
      // Namespace teardown is asynchronous in the kernel: give it a moment.
      let code = '';
      for (let i = 0; i < 50 && code === ''; i++) {
        try {
          b.readBatch(dev.fd, new Uint8Array(2048), 2048, 0, 1, new Int32Array(1));
          await new Promise((r) => setTimeout(r, 20));
        } catch (e) {
          code = (e as { code?: string }).code ?? '?';
        }
      }
      assert.equal(code, 'EBADFD', `readBatch after namespace delete: got code "${code}", want EBADFD`);
      const links = await hostLinks();
      assert.ok(!links.includes(name), `got ${name} back in the host namespace, want it gone`);
    } finally {
      dev?.close();
      if (createdNs.has(ns)) await dropNs(ns);
    }
  });
});
