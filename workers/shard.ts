/**
 * Piscina worker entry: one long-running shard loop per task.
 *
 * The pool hosts and supervises the shard workers; batches do not travel through
 * `pool.run()` (40-48 us per task measured here) but through the per-shard ring in shared
 * memory (see src/runtime/shared.ts), which costs about 2 us per batch. The task returns
 * only when the main thread sets STOP; if it throws or the thread dies, the main thread
 * submits it again and the shard resumes from the ring's DONE index with its conntrack
 * intact (it lives in shared memory).
 *
 * Loop, per batch:
 *   1. wait on HEAD (Atomics.wait) while the ring is empty; collect expired conntrack
 *      entries little by little while idle
 *   2. claim one revision of the published tables (pipeline.beginBatch)
 *   3. run the pipeline on up to MAX_BATCH slots
 *   4. advance DONE, transmit runs of packets with the same output port in one native call
 *   5. hand the slots back on the return ring
 */
import { loadBinding, type TunBinding } from '../src/io/native.js';
import { Pipeline } from '../src/datapath/pipeline.js';
import { TableSet, type TableSetShared } from '../src/tables/tableset.js';
import { ConntrackTable } from '../src/tables/conntrack.js';
import { FragmentTable } from '../src/tables/fragments.js';
import { EventRing, C_BATCHES, C_PACKETS, C_BUSY_NS, C_BATCH_HIST, BATCH_HIST_BUCKETS } from '../src/tables/events.js';
import {
  MAX_BATCH,
  R_ALIVE,
  R_DONE,
  R_FLUSH,
  R_ENTRIES,
  R_GENERATION,
  R_HEAD,
  R_RET_HEAD,
  R_SLEEPING,
  R_STOP,
  type RuntimeShared,
} from '../src/runtime/shared.js';
import { VNET_HDR_LEN } from '../src/io/tun.js';
import { DROP_WRITE_ERROR } from '../src/datapath/drop.js';
import { CaptureRing } from '../src/tables/capture.js'; // capture hook (tunswitch capture)

export interface ShardTask {
  shard: number;
  readerSlot: number;
  tables: TableSetShared;
  rt: RuntimeShared;
  ctCapacity: number;
  fragCapacity: number;
  ctLifetimes: { tcpLifetime: number; nonTcpLifetime: number; synLifetime: number; closeLifetime: number };
  /** Emit trace/policy events (drops always). */
  events: boolean;
  /** Conntrack slots scanned per idle tick / per batch. */
  gcBudget: number;
}

/** Idle wake-up period, for conntrack GC and STOP checks (ms). */
const IDLE_WAIT_MS = 100;

export default function shardLoop(task: ShardTask): { shard: number; batches: number } {
  const rt = task.rt;
  const k = task.shard;
  const ring = new Int32Array(rt.rings[k] as SharedArrayBuffer);
  const slots = rt.slots;
  const mask = slots - 1;
  const retBase = R_ENTRIES + slots;
  const slotSize = rt.slotSize;
  const hdr = rt.vnetHdr ? VNET_HDR_LEN : 0;
  const buf = new Uint8Array(rt.slab);
  const dv = new DataView(rt.slab);
  const lens = new Int32Array(rt.lens);
  const inPort = new Int32Array(rt.inPort);
  const portFd = new Int32Array(rt.portFd);

  const tables = TableSet.attach(task.tables);
  // The constructors adopt an existing region (a restarted worker keeps the shard's state).
  const ct = new ConntrackTable(rt.conntrack[k] as SharedArrayBuffer, 0, task.ctCapacity, task.ctLifetimes);
  const frags = new FragmentTable(rt.fragments[k] as SharedArrayBuffer, 0, task.fragCapacity);
  const counters = new Float64Array(rt.counters[k] as SharedArrayBuffer);
  const events = new EventRing(rt.events[k] as SharedArrayBuffer);
  const pipeline = new Pipeline(tables, ct, frags, counters, events, task.readerSlot);
  pipeline.eventsEnabled = task.events;
  // capture hook: the shard's capture ring (src/tables/capture.ts), null when the runtime has none
  const capture = rt.capture !== undefined && rt.capture[k] !== undefined ? new CaptureRing(rt.capture[k] as SharedArrayBuffer) : null;
  const native: TunBinding = loadBinding();

  const outPort = new Int32Array(MAX_BATCH);
  const slotOf = new Int32Array(MAX_BATCH);
  const txOff = new Int32Array(MAX_BATCH);
  const txLen = new Int32Array(MAX_BATCH);
  const txStats = new Int32Array(4);

  Atomics.add(ring, R_GENERATION, 1);
  let batches = 0;
  let flushSeen = Atomics.load(ring, R_FLUSH);

  for (;;) {
    Atomics.add(ring, R_ALIVE, 1);
    if (Atomics.load(ring, R_FLUSH) !== flushSeen) {
      flushSeen = Atomics.load(ring, R_FLUSH);
      ct.flush();
      frags.flush();
    }
    const head = Atomics.load(ring, R_HEAD) | 0;
    const done = Atomics.load(ring, R_DONE) | 0;
    if (head === done) {
      if (Atomics.load(ring, R_STOP) !== 0) break;
      Atomics.store(ring, R_SLEEPING, 1);
      if ((Atomics.load(ring, R_HEAD) | 0) === head) {
        const r = Atomics.wait(ring, R_HEAD, head, IDLE_WAIT_MS);
        if (r === 'timed-out') ct.gc((Date.now() / 1000) >>> 0, task.gcBudget);
      }
      Atomics.store(ring, R_SLEEPING, 0);
      continue;
    }

    // 2-3. run the pipeline over the batch
    const avail = (head - done) | 0;
    const n = avail < MAX_BATCH ? avail : MAX_BATCH;
    const t0 = process.hrtime();
    const nowMs = Date.now();
    pipeline.beginBatch((nowMs / 1000) >>> 0, nowMs % 1000);
    // capture hook: one Atomics.load of ARMED per batch; when armed, offer each packet as the
    // pipeline left it (TTL already decremented when forwarded), without the virtio-net header
    const capOn = capture !== null && capture.beginBatch();
    for (let i = 0; i < n; i++) {
      const slot = ring[R_ENTRIES + ((done + i) & mask)] as number;
      slotOf[i] = slot;
      const off = slot * slotSize;
      outPort[i] = pipeline.process(buf, dv, off + hdr, (lens[slot] as number) - hdr, inPort[slot] as number);
      if (capOn) (capture as CaptureRing).offer(buf, off + hdr, (lens[slot] as number) - hdr, outPort[i] as number, pipeline.outSrcEp, pipeline.outDstEp);
    }
    pipeline.endBatch();
    Atomics.store(ring, R_DONE, (done + n) | 0);

    // 4. transmit: consecutive packets with the same output port go in one native call
    let i = 0;
    while (i < n) {
      const port = outPort[i] as number;
      if (port < 0) {
        i++;
        continue;
      }
      let m = 0;
      let j = i;
      while (j < n && outPort[j] === port) {
        const slot = slotOf[j] as number;
        txOff[m] = slot * slotSize;
        txLen[m] = lens[slot] as number;
        m++;
        j++;
      }
      const fd = portFd[port] as number;
      if (fd >= 0) {
        let sent = 0;
        while (sent < m) {
          const w = native.writeBatch(fd, buf, txOff, txLen, sent, m - sent, txStats);
          if (w === 0) break; // EAGAIN: the device queue is full, drop the rest
          sent += w;
        }
        if (sent < m) countTxDrops(counters, m - sent);
      } else {
        countTxDrops(counters, m);
      }
      i = j;
    }

    // 5. return the slots
    const rh = Atomics.load(ring, R_RET_HEAD) | 0;
    for (let q = 0; q < n; q++) ring[retBase + ((rh + q) & mask)] = slotOf[q] as number;
    Atomics.store(ring, R_RET_HEAD, (rh + n) | 0);

    ct.gc(nowMs / 1000 >>> 0, 8);
    const dt = process.hrtime(t0);
    counters[C_BATCHES]++;
    counters[C_PACKETS] += n;
    counters[C_BUSY_NS] += dt[0] * 1e9 + dt[1];
    counters[C_BATCH_HIST + histBucket(n)]++;
    batches++;
  }
  return { shard: k, batches };
}

function histBucket(n: number): number {
  const b = 32 - Math.clz32(n - 1);
  return b < BATCH_HIST_BUCKETS ? b : BATCH_HIST_BUCKETS - 1;
}

function countTxDrops(counters: Float64Array, n: number): void {
  const reason = -DROP_WRITE_ERROR;
  counters[reason * 2 + 0] += n;
}
