/**
 * Piscina worker entry: one long-running shard loop per task.
 *
 * The pool hosts the shard workers; batches do not travel through `pool.run()` (40-48 us
 * per task measured here) but through the shard ring in shared memory (src/runtime/ring.ts).
 * The task returns only when the main thread sets STOP. If the thread dies, the supervisor
 * (src/runtime/switch.ts) recovers the ring and the egress queue and starts the loop again;
 * conntrack, fragments and queued packets live in shared memory and survive.
 *
 * Loop:
 *   1. heartbeat; honour a conntrack flush request
 *   2. ingest: take up to INGEST_MAX packets from the ring, in pipeline batches of MAX_BATCH
 *      (one table revision per batch); a forwarded packet joins its output port's egress
 *      queue (flow-fair DRR + CoDel, src/runtime/egress.ts), anything else goes back at once.
 *      Taking the whole backlog first is what puts the queue where CoDel sees it.
 *   3. transmit: up to TX_BATCH packets from every port with a backlog, ECN CE marks
 *      applied, GSO packets split or kept and same-flow packets coalesced by what the port
 *      offers (src/datapath/gso-port.ts), written with one native call for the batch
 *      (io_uring: one submission; a batch whose splits fill the arena is written in parts)
 *      An impaired port (src/runtime/impair.ts) instead moves packets, at its rate, from its
 *      queue into the shard's delay line, and the delay line's due packets join the batch.
 *   4. hand the slots back; sleep on the ring when there is nothing to do (collecting
 *      expired conntrack entries on each idle wake-up), at most until the delay line's next
 *      send time or a rate gate opens
 * Nothing waits to fill a batch: whatever is there is processed and sent.
 */
import { loadBinding, type TunBinding } from '../src/io/native.js';
import { Pipeline } from '../src/datapath/pipeline.js';
import { TableSet, type TableSetShared } from '../src/tables/tableset.js';
import { ConntrackTable } from '../src/tables/conntrack.js';
import { FragmentTable } from '../src/tables/fragments.js';
import { EventRing, C_BATCHES, C_PACKETS, C_BUSY_NS, C_BATCH_HIST, BATCH_HIST_BUCKETS, countDrop, C_GSO_SPLIT_PKTS, C_GSO_SPLIT_SEGS, C_GRO_TCP_BUILT, C_GRO_UDP_BUILT, C_GRO_MERGED } from '../src/tables/events.js';
import { DIR_INGRESS } from '../src/proto/direction.js';
import { MAX_BATCH, sharedNowMs, type RuntimeShared } from '../src/runtime/shared.js';
import { ShardRing } from '../src/runtime/ring.js';
import { MAX_PORTS } from '../src/tables/tableset.js';
import {
  EgressQueues,
  EGRESS_DROP_CODEL,
  EGRESS_MARK_CE,
  PQ_INTERVAL,
  PQ_LIMIT,
  PQ_TARGET,
  PQ_WORDS,
} from '../src/runtime/egress.js';
import { VNET_HDR_LEN, TUN_F_TSO4, TUN_F_TSO6, TUN_F_USO4, TUN_F_USO6 } from '../src/io/tun.js';
import { DROP_GSO_SPLIT, DROP_LINK_LOSS, DROP_LINK_OVERLIMIT, DROP_QUEUE_AQM, DROP_QUEUE_OVERLIMIT, DROP_WRITE_ERROR } from '../src/datapath/drop.js';
import { DelayLine, ImpairShard, IMPAIR_LOSS, IMPAIR_QUEUED, LinkTable } from '../src/runtime/impair.js';
import { ecnBits, setEcnCe } from '../src/datapath/checksum.js';
import type { PacketInfo } from '../src/datapath/packet.js';
import { CaptureRing } from '../src/tables/capture.js'; // capture hook (tunswitch capture)
import { GsoPortWriter, SPLIT_ARENA_ROOM } from '../src/datapath/gso-port.js';
import { ARENA_BYTES } from '../src/runtime/shared.js';
import { UnderlayShard, UNDERLAY_PORT } from '../src/runtime/underlay.js';

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
  /** Write engine: 'uring' (one submission per batch) or 'readwrite'. */
  engine: 'uring' | 'readwrite';
  /** Egress queue defaults for ports whose portQueue words are 0. */
  queue: { limitBytes: number; targetMs: number; intervalMs: number };
  /** Coalesce same-flow TCP segments (UDP towards USO ports) of a transmit batch into one GSO write. */
  gro: boolean;
  /** Endpoint MTU: the largest segment when a GSO packet is split for a plain port. */
  mtu: number;
  /** The config's underlayUdpGso (TUNSWITCH_UNDERLAY_UDP_GSO=1 also turns it on). */
  underlayUdpGso?: boolean;
  /** Avoid the GSO shapes Linux 6.6.44 refused on TUN writes (gso.ts rule 9); false on kernels without that check. */
  gsoLinux6644Safe: boolean;
}

/** Idle wake-up period, for conntrack GC, STOP checks and the heartbeat (ms). */
const IDLE_WAIT_MS = 100;
/** Packets taken from the ring per loop before transmitting. */
const INGEST_MAX = 256;
/** Packets dequeued per port per loop, and written per native call at most. */
const TX_BATCH = 64;
const TX_MAX = 256;
/** Packets written per native call at most, split segments included. */
const TX_OUT_MAX = 1024;
const TSO = TUN_F_TSO4 | TUN_F_TSO6;
const USO = TUN_F_USO4 | TUN_F_USO6;

export default function shardLoop(task: ShardTask): { shard: number; batches: number } {
  const rt = task.rt;
  const k = task.shard;
  const ring = new ShardRing(rt.rings[k] as SharedArrayBuffer, rt.slots);
  const slotSize = rt.slotSize;
  const hdr = rt.vnetHdr ? VNET_HDR_LEN : 0;
  const buf = new Uint8Array(rt.slab);
  const dv = new DataView(rt.slab);
  const lens = new Int32Array(rt.lens);
  const inPort = new Int32Array(rt.inPort);
  const rxMs = new Float64Array(rt.rxMs);
  const portFd = new Int32Array(rt.portFd);
  const portQueue = new Float64Array(rt.portQueue);
  const portOffload = new Int32Array(rt.portOffload);

  const tables = TableSet.attach(task.tables);
  // The constructors adopt an existing region (a restarted worker keeps the shard's state).
  const ct = new ConntrackTable(rt.conntrack[k] as SharedArrayBuffer, 0, task.ctCapacity, task.ctLifetimes);
  const frags = new FragmentTable(rt.fragments[k] as SharedArrayBuffer, 0, task.fragCapacity);
  const egress = new EgressQueues(rt.egress[k] as SharedArrayBuffer, rt.slots, MAX_PORTS, rt.slots);
  const counters = new Float64Array(rt.counters[k] as SharedArrayBuffer);
  const events = new EventRing(rt.events[k] as SharedArrayBuffer);
  const pipeline = new Pipeline(tables, ct, frags, counters, events, task.readerSlot);
  pipeline.eventsEnabled = task.events;
  // capture hook: the shard's capture ring (src/tables/capture.ts), null when the runtime has none
  const capture = rt.capture !== undefined && rt.capture[k] !== undefined ? new CaptureRing(rt.capture[k] as SharedArrayBuffer) : null;
  const native: TunBinding = loadBinding();
  const uring = task.engine === 'uring' ? native.uringWriterOpen(TX_MAX) : null;
  // underlay hook (src/runtime/underlay.ts); underlayUdpGso (or TUNSWITCH_UNDERLAY_UDP_GSO=1): split packets leave with UDP_SEGMENT
  const udpGso = task.underlayUdpGso === true || process.env.TUNSWITCH_UNDERLAY_UDP_GSO === '1';
  const underlay = new UnderlayShard(rt, hdr, counters, { innerMtu: task.mtu, udpGso });
  // link impairments: the switch's settings, this shard's delay line (adopted after a restart)
  const impair = new ImpairShard(new LinkTable(rt.link, MAX_PORTS), new DelayLine(rt.delay[k] as SharedArrayBuffer, rt.slots, MAX_PORTS), k, rt.slots >> 1);
  const line = impair.line;
  let lastGcMs = 0;

  const txSlots = new Int32Array(TX_MAX);
  const txFd = new Int32Array(TX_OUT_MAX);
  const txOff = new Int32Array(TX_OUT_MAX);
  const txLen = new Int32Array(TX_OUT_MAX);
  const deq = new Int32Array(TX_BATCH);
  const txStats = new Int32Array(4);
  // Per port: GSO packets split or kept, same-flow packets coalesced (src/datapath/gso-port.ts),
  // built in this shard's arena of the slab.
  const gso = new GsoPortWriter(TX_OUT_MAX, { gro: task.gro, mtu: task.mtu, linux6644Safe: task.gsoLinux6644Safe });
  const groOff = new Int32Array(TX_BATCH);
  const groLen = new Int32Array(TX_BATCH);
  const arenaBase = rt.arenaOff + k * ARENA_BYTES;
  const pi: PacketInfo = pipeline.pi;

  // Fault injection for tests (TUNSWITCH_FAULT_CRASH_MAGIC=<8 hex digits>): the thread dies on
  // an IPv4/UDP packet whose payload starts with that word, inside the per-packet step, as a
  // crash in the pipeline would.
  const faultMagic = parseInt(process.env.TUNSWITCH_FAULT_CRASH_MAGIC ?? '0', 16) >>> 0;

  ring.start();
  let batches = 0;
  let flushSeen = ring.flushCounter();

  for (;;) {
    // 1. heartbeat, flush
    ring.heartbeat();
    if (ring.flushCounter() !== flushSeen) {
      flushSeen = ring.flushCounter();
      ct.flush();
      frags.flush();
    }

    // 2. ingest
    let taken = 0;
    const t0 = process.hrtime();
    let avail = ring.available();
    while (avail > 0 && taken < INGEST_MAX) {
      let n = avail < MAX_BATCH ? avail : MAX_BATCH;
      if (n > INGEST_MAX - taken) n = INGEST_MAX - taken;
      const nowMs = Date.now();
      pipeline.beginBatch((nowMs / 1000) >>> 0, nowMs % 1000);
      // capture hook: one Atomics.load of ARMED per batch; when armed, offer each packet as the
      // pipeline left it (TTL already decremented when forwarded), without the virtio-net header
      const capOn = capture !== null && capture.beginBatch();
      for (let i = 0; i < n; i++) {
        const slot = ring.take();
        const off = slot * slotSize + hdr;
        let len = (lens[slot] as number) - hdr;
        if (faultMagic !== 0 && isFaultPacket(buf, off, len, faultMagic)) process.exit(70);
        const out = underlay.process(pipeline, buf, dv, slot, off, len, inPort[slot] as number); // underlay hook: VNI in, tunnel endpoint out
        len = (lens[slot] as number) - hdr; // underlay hook: a packet too big for the tunnel became an ICMP error
        if (capOn) (capture as CaptureRing).offer(buf, off, len, out, pipeline.outSrcEp, pipeline.outDstEp);
        if (out >= 0 && (portFd[out] as number) >= 0) {
          const qb = out * PQ_WORDS;
          const lim = portQueue[qb + PQ_LIMIT] as number;
          egress.enqueue(out, slot, len, flowHash(pi), rxMs[slot] as number, pipeline.outSrcId, pipeline.outDstId, ecnBits(buf, off) === 0 ? 0 : 1, lim > 0 ? lim : task.queue.limitBytes);
          for (let d = 0; d < egress.nDropped; d++) {
            const s = egress.droppedSlot[d] as number;
            pipeline.dropAfterForward(buf, dv, s * slotSize + hdr, (lens[s] as number) - hdr, DROP_QUEUE_OVERLIMIT, egress.slotSrcId(s), egress.slotDstId(s));
            ring.giveBack(s);
          }
        } else {
          if (out >= 0) countTxDrops(counters, 1, len);
          ring.giveBack(slot);
        }
        ring.processed();
      }
      pipeline.endBatch();
      ring.publishDone();
      taken += n;
      counters[C_BATCHES]++;
      counters[C_PACKETS] += n;
      counters[C_BATCH_HIST + histBucket(n)]++;
      batches++;
      avail = ring.available();
    }

    // 3. transmit
    let m = 0;
    let arenaUsed = 0;
    let nOut = 0;
    let moved = 0;
    impair.beginRound();
    if (egress.firstActive() >= 0 || line.count > 0) {
      const now = sharedNowMs();
      let p = egress.firstActive();
      while (p >= 0 && m < TX_MAX) {
        const next = egress.nextActive(p);
        const qb = p * PQ_WORDS;
        const target = portQueue[qb + PQ_TARGET] as number;
        const interval = portQueue[qb + PQ_INTERVAL] as number;
        const targetMs = target > 0 ? target : task.queue.targetMs;
        const intervalMs = interval > 0 ? interval : task.queue.intervalMs;
        if (p !== UNDERLAY_PORT && impair.enabled(p)) {
          moved += admitImpaired(p, now, targetMs, intervalMs);
          p = next;
          continue;
        }
        const room = TX_MAX - m < TX_BATCH ? TX_MAX - m : TX_BATCH;
        const got = egress.dequeue(p, now, room, deq, targetMs, intervalMs);
        dropDequeued();
        if (p === UNDERLAY_PORT) {
          if (ARENA_BYTES - arenaUsed < SPLIT_ARENA_ROOM) {
            transmit(nOut); // underlay hook: GSO packets are split in the arena's free part
            nOut = 0;
            arenaUsed = 0;
          }
          underlay.sendSlots(deq, got, arenaBase + arenaUsed, ARENA_BYTES - arenaUsed); // underlay hook: VXLAN encap + one sendmmsg
          for (let j = 0; j < got; j++) ring.giveBack(deq[j] as number);
          p = next;
          continue;
        }
        const fd = portFd[p] as number;
        const offl = portOffload[p] as number;
        for (let j = 0; j < got; j++) {
          const s = deq[j] as number;
          if (egress.outMark[j] === EGRESS_MARK_CE) setEcnCe(buf, dv, s * slotSize + hdr);
          txSlots[m + j] = s;
          groOff[j] = s * slotSize;
          groLen[j] = lens[s] as number;
        }
        // txSlots[m..m+got) are the slots to return; tx[nOut..) the packets to write. When the
        // port's splits fill the arena or tx, what is there is written first (gso-port.ts rule 5).
        let done = 0;
        for (;;) {
          done += gso.write(buf, groOff, groLen, done, got - done, (offl & TSO) !== 0, (offl & USO) !== 0, arenaBase + arenaUsed, ARENA_BYTES - arenaUsed, TX_OUT_MAX - nOut);
          for (let j = 0; j < gso.m; j++) {
            txFd[nOut] = fd;
            txOff[nOut] = gso.outOff[j] as number;
            txLen[nOut] = gso.outLen[j] as number;
            nOut++;
          }
          arenaUsed += gso.arenaUsed;
          for (let d = 0; d < gso.nDropped; d++) {
            const s = deq[gso.dropped[d] as number] as number;
            pipeline.dropAfterForward(buf, dv, s * slotSize + hdr, (lens[s] as number) - hdr, DROP_GSO_SPLIT, egress.slotSrcId(s), egress.slotDstId(s));
          }
          if (done >= got) break;
          transmit(nOut);
          nOut = 0;
          arenaUsed = 0;
        }
        m += got;
        p = next;
      }
      // 3b. the delay line's due packets, split or kept by what their port offers like any
      // other (a duplicated one is written twice)
      while (m < TX_MAX && impair.popDue(now)) {
        const s = line.outSlot;
        const fd = portFd[line.outPort] as number;
        const offl = portOffload[line.outPort] as number;
        txSlots[m++] = s;
        if (fd < 0) {
          countTxDrops(counters, 1, (lens[s] as number) - hdr);
          continue;
        }
        deq[0] = s;
        groOff[0] = s * slotSize;
        groLen[0] = lens[s] as number;
        for (let c = 0; c < line.outCopies; c++) {
          for (;;) {
            const done = gso.write(buf, groOff, groLen, 0, 1, (offl & TSO) !== 0, (offl & USO) !== 0, arenaBase + arenaUsed, ARENA_BYTES - arenaUsed, TX_OUT_MAX - nOut);
            for (let j = 0; j < gso.m; j++) {
              txFd[nOut] = fd;
              txOff[nOut] = gso.outOff[j] as number;
              txLen[nOut] = gso.outLen[j] as number;
              nOut++;
            }
            arenaUsed += gso.arenaUsed;
            if (gso.nDropped > 0) pipeline.dropAfterForward(buf, dv, s * slotSize + hdr, (lens[s] as number) - hdr, DROP_GSO_SPLIT, egress.slotSrcId(s), egress.slotDstId(s));
            if (done >= 1 || nOut === 0) break;
            transmit(nOut);
            nOut = 0;
            arenaUsed = 0;
          }
        }
      }
      if (nOut > 0) transmit(nOut);
      for (let j = 0; j < m; j++) ring.giveBack(txSlots[j] as number);
      counters[C_GSO_SPLIT_PKTS] += gso.gsoPacketsSplit;
      counters[C_GSO_SPLIT_SEGS] += gso.gsoSegmentsMade;
      counters[C_GRO_TCP_BUILT] += gso.tcpPacketsBuilt;
      counters[C_GRO_UDP_BUILT] += gso.udpPacketsBuilt;
      counters[C_GRO_MERGED] += gso.packetsCoalesced;
      gso.gsoPacketsSplit = gso.gsoSegmentsMade = gso.tcpPacketsBuilt = gso.udpPacketsBuilt = gso.packetsCoalesced = 0;
    }
    ring.flushReturns();
    if (taken > 0 || m > 0 || moved > 0) {
      const dt = process.hrtime(t0);
      counters[C_BUSY_NS] += dt[0] * 1e9 + dt[1];
      ct.gc((Date.now() / 1000) >>> 0, 8);
      continue;
    }

    // 4. idle: until a packet arrives, the delay line's next send time or a rate gate opens
    if (ring.stopRequested()) break;
    let wait = IDLE_WAIT_MS;
    if (impair.wakeMs !== Infinity) {
      const until = impair.wakeMs - sharedNowMs();
      wait = until < 0 ? 0 : until < IDLE_WAIT_MS ? until : IDLE_WAIT_MS;
    }
    if (wait > 0) ring.sleep(wait);
    const nowGc = Date.now();
    if (nowGc - lastGcMs >= IDLE_WAIT_MS) {
      lastGcMs = nowGc;
      ct.gc((nowGc / 1000) >>> 0, task.gcBudget);
    }
  }
  if (uring !== null) native.uringWriterClose(uring);
  return { shard: k, batches };

  /** Counts the packets the last egress.dequeue() dropped (CoDel, over limit) and hands their slots back. */
  function dropDequeued(): void {
    for (let d = 0; d < egress.nDropped; d++) {
      const s = egress.droppedSlot[d] as number;
      const code = egress.droppedWhy[d] === EGRESS_DROP_CODEL ? DROP_QUEUE_AQM : DROP_QUEUE_OVERLIMIT;
      pipeline.dropAfterForward(buf, dv, s * slotSize + hdr, (lens[s] as number) - hdr, code, egress.slotSrcId(s), egress.slotDstId(s));
      ring.giveBack(s);
    }
  }

  /**
   * An impaired port: moves up to TX_BATCH packets from its queue into the delay line while
   * its rate allows (impair.ts steps 1-4); loss and a full delay line are counted drops.
   */
  function admitImpaired(p: number, now: number, targetMs: number, intervalMs: number): number {
    let n = 0;
    while (n < TX_BATCH && impair.mayAdmit(p, now)) {
      const got = egress.dequeue(p, now, 1, deq, targetMs, intervalMs);
      dropDequeued();
      if (got === 0) break;
      const s = deq[0] as number;
      const len = (lens[s] as number) - hdr;
      if (egress.outMark[0] === EGRESS_MARK_CE) setEcnCe(buf, dv, s * slotSize + hdr);
      const v = impair.admit(p, s, len, now);
      if (v !== IMPAIR_QUEUED) {
        pipeline.dropAfterForward(buf, dv, s * slotSize + hdr, len, v === IMPAIR_LOSS ? DROP_LINK_LOSS : DROP_LINK_OVERLIMIT, egress.slotSrcId(s), egress.slotDstId(s));
        ring.giveBack(s);
      }
      n++;
    }
    return n;
  }

  /**
   * Writes tx[0..m) with one native call (io_uring: one submission); packets the kernel
   * refuses, ports gone, or a full device (EAGAIN: the rest) are counted as dropped.
   */
  function transmit(m: number): void {
    let sent = 0;
    txStats[0] = 0;
    while (sent < m) {
      const w = uring !== null ? native.uringWriteBatch(uring, txFd, buf, txOff, txLen, sent, m - sent, txStats) : native.writeBatchFds(txFd, buf, txOff, txLen, sent, m - sent, txStats);
      if (w === 0) break;
      sent += w;
    }
    const dropped = (txStats[0] as number) + (m - sent);
    if (dropped > 0) countTxDrops(counters, dropped, 0);
  }
}

/** Flow hash for the egress queue's DRR buckets (one direction; ports and addresses). */
function flowHash(pi: PacketInfo): number {
  let h = Math.imul(pi.src0 ^ pi.src3, 0x9e3779b1) ^ Math.imul(pi.dst0 ^ pi.dst3, 0x85ebca6b);
  h ^= Math.imul((pi.sport << 16) | pi.dport, 0xc2b2ae35) ^ pi.proto;
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  return (h ^ (h >>> 12)) >>> 0;
}

function isFaultPacket(buf: Uint8Array, off: number, len: number, magic: number): boolean {
  if (len < 32 || buf[off] !== 0x45 || buf[off + 9] !== 17) return false;
  const p = off + 28;
  return (((buf[p] as number) << 24) | ((buf[p + 1] as number) << 16) | ((buf[p + 2] as number) << 8) | (buf[p + 3] as number)) >>> 0 === magic;
}

function histBucket(n: number): number {
  const b = 32 - Math.clz32(n - 1);
  return b < BATCH_HIST_BUCKETS ? b : BATCH_HIST_BUCKETS - 1;
}

function countTxDrops(counters: Float64Array, n: number, bytes: number): void {
  countDrop(counters, DROP_WRITE_ERROR, DIR_INGRESS, n, bytes);
}
