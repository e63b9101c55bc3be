/**
 * I/O engines side by side: read()/write() per packet (readBatchSlots + writeBatchFds) versus
 * io_uring (multishot reads into provided slab slots + one io_uring_enter per write batch),
 * moving 64-byte IPv4/UDP packets from one TUN device to another.
 *
 *   npm run build && sudo node dist/bench/io/uring.js [--packets N] [--burst K]
 *
 * Lab (root; namespaces "tu91-<pid>b{a,b}", 10.91.0.128/28, removed at the end): namespace A
 * sends UDP from 10.91.0.129 to 10.91.0.130 through its eth0 = TUN A; namespace B owns
 * 10.91.0.130 on eth0 = TUN B. This process reads TUN A and writes every packet to TUN B.
 *
 * Each round, with this process not reading, a sender in A (one process, started once) queues a burst of K packets in TUN
 * A (txqueuelen 20000), then the engine drains the burst from Node's event loop (uv_poll on
 * the fd, or on the io_uring eventfd) in batches of up to 64. Only the drains are timed, so
 * the sender's speed does not cap the result. Per engine: packets/s over the drains, CPU µs
 * per packet of this process (process.cpuUsage over the drains), and system calls per packet
 * of this process, counted by `perf stat -i -e raw_syscalls:sys_enter -t PID (the main thread, where both engines run)` over all rounds
 * (n/a without perf). TUN B's rx counter checks every packet arrived. Both readers and the
 * writer run on the main thread here (the switch writes from shard workers).
 * Bounded: --packets (default 20000) in bursts of --burst (default 2000); ~2 s in total.
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';

import { loadBinding, type PollHandle, type TunBinding, type UringHandle } from '../../src/io/native.js';
import { attachEndpoint, createNetns, deleteNetns, netnsExists } from '../../src/io/netns.js';

const run = promisify(execFile);
const SLOT = 2048;
const SLOTS = 256;
const BATCH = 64;
const WRITER_ENTRIES = 64;
const PAYLOAD = 36; // 20 IPv4 + 8 UDP + 36 = 64-byte packets
const TAG = String(process.pid % 10000);
const NS_A = `tu91-${TAG}ba`;
const NS_B = `tu91-${TAG}bb`;

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(name);
  if (i < 0) return dflt;
  const v = Number(process.argv[i + 1]);
  if (!Number.isInteger(v) || v <= 0) throw new Error(`${name}: ${process.argv[i + 1]} is not a positive integer`);
  return v;
}

interface Result {
  engine: 'read/write' | 'io_uring';
  packets: number;
  seconds: number;
  pps: number;
  cpuUsPerPacket: number;
  syscalls: number | null;
  syscallsPerPacket: number | null;
  delivered: number;
  /** Mean packets per read batch (readBatchSlots call or reap that returned packets). */
  batch: number;
}

const b: TunBinding = loadBinding();

async function rxPackets(ns: string): Promise<number> {
  const out = (await run('ip', ['-n', ns, '-s', '-j', 'link', 'show', 'dev', 'eth0'])).stdout;
  return (JSON.parse(out) as { stats64: { rx: { packets: number } } }[])[0]!.stats64.rx.packets;
}

/**
 * A sender process in namespace A, started once (so spawning it is not counted): each line
 * "k" on its stdin sends k 64-byte UDP packets back to back, then it prints "done".
 */
class Sender {
  private readonly p = spawn(
    'ip',
    ['netns', 'exec', NS_A, process.execPath, '-e', `
      const s = require('node:dgram').createSocket('udp4');
      const buf = Buffer.alloc(${PAYLOAD}, 7);
      let k = 0, sent = 0, acked = 0;
      const more = () => {
        while (sent < k && sent - acked < 256) {
          sent++;
          s.send(buf, 9, '10.91.0.130', () => { acked++; if (acked === k) process.stdout.write('done\\n'); else more(); });
        }
      };
      require('node:readline').createInterface({ input: process.stdin }).on('line', (l) => {
        k = Number(l); sent = 0; acked = 0; more();
      });`],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  private wake: (() => void) | null = null;
  constructor() {
    this.p.stdout.on('data', () => {
      const w = this.wake;
      this.wake = null;
      w?.();
    });
  }
  burst(k: number): Promise<void> {
    return new Promise((resolve) => {
      this.wake = resolve;
      this.p.stdin.write(`${k}\n`);
    });
  }
  close(): void {
    this.p.kill();
  }
}

/** perf stat counting this process's system calls until stop() (null when perf is missing). */
function countSyscalls(): { stop: () => Promise<number | null> } {
  const p = spawn('perf', ['stat', '-i', '-x,', '-e', 'raw_syscalls:sys_enter', '-t', String(process.pid)], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  let failed = false;
  p.on('error', () => (failed = true));
  p.stderr.on('data', (d: Buffer) => (err += d.toString()));
  return {
    stop: () =>
      new Promise((resolve) => {
        if (failed) return resolve(null);
        p.on('exit', () => {
          const m = /^(\d+),/m.exec(err);
          resolve(m === null ? null : Number(m[1]));
        });
        p.kill('SIGINT');
      }),
  };
}

interface Engine {
  /** Starts reading; resolves when k packets were forwarded. */
  drain(k: number): Promise<void>;
  /** Read batches that returned packets so far. */
  batches(): number;
  close(): void;
}

function fallbackEngine(fdA: number, fdB: number): Engine {
  const slab = new Uint8Array(new SharedArrayBuffer(SLOTS * SLOT));
  const free = new Int32Array(BATCH);
  for (let i = 0; i < BATCH; i++) free[i] = i;
  const lens = new Int32Array(SLOTS);
  const fds = new Int32Array(BATCH).fill(fdB);
  const offsets = new Int32Array(BATCH);
  const wlens = new Int32Array(BATCH);
  const stats = new Int32Array(2);
  let poll: PollHandle | null = null;
  let batches = 0;
  return {
    batches: () => batches,
    drain(k) {
      let done = 0;
      return new Promise((resolve) => {
        poll = b.pollStart(fdA, () => {
          for (;;) {
            const n = b.readBatchSlots(fdA, slab, SLOT, free, 0, BATCH, lens, stats);
            if (n === 0) break;
            batches++;
            for (let i = 0; i < n; i++) {
              offsets[i] = free[i]! * SLOT;
              wlens[i] = lens[free[i]!]!;
            }
            done += b.writeBatchFds(fds, slab, offsets, wlens, 0, n, stats);
          }
          if (done >= k && poll !== null) {
            b.pollStop(poll);
            poll = null;
            resolve();
          }
        });
      });
    },
    close() {
      if (poll !== null) b.pollStop(poll);
    },
  };
}

function uringEngine(fdA: number, fdB: number): Engine {
  const slab = new Uint8Array(new SharedArrayBuffer(SLOTS * SLOT));
  const r: UringHandle = b.uringReaderOpen(slab, SLOT, SLOTS);
  const w: UringHandle = b.uringWriterOpen(WRITER_ENTRIES);
  const all = new Int32Array(SLOTS);
  for (let i = 0; i < SLOTS; i++) all[i] = i;
  b.uringReaderProvide(r, all, 0, SLOTS);
  const slots = new Int32Array(BATCH);
  const lens = new Int32Array(BATCH);
  const ports = new Int32Array(BATCH);
  const fds = new Int32Array(BATCH).fill(fdB);
  const offsets = new Int32Array(BATCH);
  const stats = new Int32Array(3);
  const poll = b.pollStart(b.uringReaderEventFd(r), () => {
    const n = b.uringReaderReap(r, slots, lens, ports, BATCH, stats);
    if (n === 0) return;
    batches++;
    for (let i = 0; i < n; i++) offsets[i] = slots[i]! * SLOT;
    done += b.uringWriteBatch(w, fds, slab, offsets, lens, 0, n, stats);
    b.uringReaderProvide(r, slots, 0, n);
    if (done >= want && waiter !== null) {
      const f = waiter;
      waiter = null;
      b.uringReaderRemove(r, 1); // stop reading until the next drain
      f();
    }
  });
  let done = 0;
  let want = 0;
  let batches = 0;
  let waiter: (() => void) | null = null;
  return {
    batches: () => batches,
    drain(k) {
      done = 0;
      want = k;
      return new Promise((resolve) => {
        waiter = resolve;
        b.uringReaderAdd(r, fdA, 1);
      });
    },
    close() {
      b.pollStop(poll);
      b.uringReaderClose(r);
      b.uringWriterClose(w);
    },
  };
}

async function measure(name: Result['engine'], make: () => Engine, sender: Sender, packets: number, k: number): Promise<Result> {
  const e = make();
  const rx0 = await rxPackets(NS_B);
  const perf = countSyscalls();
  await new Promise((r) => setTimeout(r, 300)); // let perf attach
  let ns = 0n;
  let cpu = 0;
  try {
    for (let done = 0; done < packets; done += k) {
      await sender.burst(k);
      const c0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      await e.drain(k);
      ns += process.hrtime.bigint() - t0;
      const c = process.cpuUsage(c0);
      cpu += c.user + c.system;
    }
  } finally {
    e.close();
  }
  const batches = e.batches();
  const syscalls = await perf.stop();
  const delivered = (await rxPackets(NS_B)) - rx0;
  const seconds = Number(ns) / 1e9;
  return {
    engine: name,
    packets,
    seconds,
    pps: Math.round(packets / seconds),
    cpuUsPerPacket: cpu / packets,
    syscalls,
    syscallsPerPacket: syscalls === null ? null : syscalls / packets,
    delivered,
    batch: packets / batches,
  };
}

async function main(): Promise<void> {
  const k = arg('--burst', 2000);
  const packets = Math.ceil(arg('--packets', 20000) / k) * k;
  if (process.getuid?.() !== 0) throw new Error('bench/io/uring: needs root (namespaces, TUN)');
  const probe = b.uringProbe();
  if (!probe.available) throw new Error(`bench/io/uring: io_uring engine unavailable: ${probe.reason}`);
  const a = b.open(`tu91-${TAG}ba`);
  const bb = b.open(`tu91-${TAG}bb`);
  try {
    for (const ns of [NS_A, NS_B]) {
      if (await netnsExists(ns)) await deleteNetns(ns);
      await createNetns(ns);
    }
    await attachEndpoint({ tun: a.name, netns: { name: NS_A }, ipv4: '10.91.0.129/28', txqueuelen: 20000, routes: ['10.91.0.128/28'] });
    await attachEndpoint({ tun: bb.name, netns: { name: NS_B }, ipv4: '10.91.0.130/28', txqueuelen: 20000, routes: ['10.91.0.128/28'] });
    const results: Result[] = [];
    const sender = new Sender();
    try {
      results.push(await measure('read/write', () => fallbackEngine(a.fd, bb.fd), sender, packets, k));
      results.push(await measure('io_uring', () => uringEngine(a.fd, bb.fd), sender, packets, k));
    } finally {
      sender.close();
    }
    console.log(`64-byte packets TUN -> TUN, ${packets} packets in bursts of ${k}, batches of <= ${BATCH}`);
    console.log('engine      packets/s   CPU µs/pkt  syscalls/pkt  pkts/batch  delivered');
    for (const r of results) {
      const sc = r.syscallsPerPacket === null ? 'n/a' : r.syscallsPerPacket.toFixed(3);
      console.log(`${r.engine.padEnd(10)} ${String(r.pps).padStart(10)} ${r.cpuUsPerPacket.toFixed(2).padStart(12)} ${sc.padStart(13)} ${r.batch.toFixed(1).padStart(11)}  ${r.delivered}/${r.packets}`);
    }
    console.log(JSON.stringify(results));
  } finally {
    b.close(a.fd);
    b.close(bb.fd);
    for (const ns of [NS_A, NS_B]) await deleteNetns(ns).catch(() => false);
  }
}

main().catch((err: unknown) => {
  console.error((err as Error).message);
  process.exitCode = 1;
});
