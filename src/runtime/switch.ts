/**
 * `tunswitch run`: the main (I/O) thread. It makes the shared memory, starts the shard
 * workers on a Piscina pool (one long-running shard loop each, supervised and restarted),
 * starts the control thread, and then only moves packets: TUN fds -> slab -> shard rings.
 *
 * Shutdown (SIGINT/SIGTERM): the control thread closes the API and removes every port it
 * made (closing a TUN fd deletes the device, wherever it lives); then the rings are told to
 * STOP, the workers drain and return, and the process exits 0.
 */
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { release } from 'node:os';
import { dirname, join } from 'node:path';
import { Piscina } from 'piscina';
import { TableSet } from '../tables/tableset.js';
import { ConntrackTable } from '../tables/conntrack.js';
import { FragmentTable } from '../tables/fragments.js';
import { EventRing, createCounters } from '../tables/events.js';
import { IoLoop, type IoEngineName } from './io-loop.js';
import { UnderlayReader, UNDERLAY_PORT } from './underlay.js';
import { createRuntimeShared, IO_CRASH_DROPS, IO_CRASH_FREED, IO_FREE_SLOTS, IO_SLOTS, IO_STATS_SLOTS, type RuntimeShared } from './shared.js';
import { EgressQueues } from './egress.js';
import { DelayLine, LinkTable } from './impair.js';
import { ShardRing } from './ring.js';
import { Supervisor } from './supervisor.js';
import { MAX_PORTS } from '../tables/tableset.js';
import { loadBinding } from '../io/native.js';
import type { RunConfig } from './config.js';
import { decodeMessage, postEncoded, type ControlToMain, type MainToControl } from './messages.js';
import type { ControlInit } from './control-thread.js';
import type { ShardTask } from '../../workers/shard.js';
import { VNET_HDR_LEN } from '../io/tun.js';
import { gsoSlots } from './offload.js';
import { VXLAN_OVERHEAD } from '../datapath/vxlan.js';
import { CaptureRing } from '../tables/capture.js';
import { isErrorCode, TunswitchError } from '../proto/errors.js';

export interface RunOptions {
  socket: string;
  stateDir: string | null;
  /** Skip (and log) state entries that cannot be restored instead of refusing to start. */
  forcePartialRestore?: boolean;
  metricsAddr: string | null;
  version: string;
  ctCapacity?: number;
  events?: boolean;
  /** Docker mode (src/docker/): label watcher and network driver; null or absent: no Docker. */
  docker?: { socketPath?: string; driverName?: string | null; pluginDir?: string } | null;
  log?: (msg: string) => void;
}

const here = dirname(fileURLToPath(import.meta.url));
/** dist/src/runtime -> dist/workers/shard.js */
const SHARD_WORKER = join(here, '..', '..', 'workers', 'shard.js');
const CONTROL_THREAD = join(here, 'control-thread.js');

export interface RunningSwitch {
  stop(): Promise<void>;
  ready: Promise<{ endpoints: number; missing: string[] }>;
  io: IoLoop;
  restarts(): number;
  killShardWorker(): Promise<boolean>;
  engine: IoEngineName;
}

export async function startSwitch(cfg: RunConfig, opts: RunOptions): Promise<RunningSwitch> {
  const log = opts.log ?? ((m: string) => process.stderr.write(`${new Date().toISOString()} ${m}\n`));
  const shards = cfg.workers;
  // Every port carries a virtio-net header (IFF_VNET_HDR), offload or not, so that any port
  // can take a coalesced GSO write. Slots: when any port may have offload a packet may be a
  // 64 KiB GSO super-packet plus its header; otherwise one MTU-sized packet.
  const big = gsoSlots(cfg);
  const slotSize = big ? 65536 + 64 : Math.ceil((cfg.mtu + VNET_HDR_LEN + 64) / 64) * 64;
  const slots = big ? 1024 : 8192;
  const ctCapacity = opts.ctCapacity ?? 1 << 17;
  const fragCapacity = 4096;
  const engine = chooseEngine(cfg.io);

  const tables = TableSet.create();
  const base = createRuntimeShared({ shards, slots, slotSize, vnetHdr: true });
  const rt: RuntimeShared = {
    ...base,
    counters: [],
    events: [],
    conntrack: [],
    fragments: [],
    egress: [],
    capture: [], // one capture ring per shard (tunswitch capture)
    ioStats: new SharedArrayBuffer(IO_STATS_SLOTS * 8),
  };
  const lifetimes = { tcpLifetime: 21600, nonTcpLifetime: 60, synLifetime: 60, closeLifetime: 10 };
  for (let k = 0; k < shards; k++) {
    rt.counters.push(createCounters().buffer as SharedArrayBuffer);
    rt.events.push(EventRing.create(8192).sab);
    const ctSab = new SharedArrayBuffer(ConntrackTable.bytesFor(ctCapacity));
    new ConntrackTable(ctSab, 0, ctCapacity, { ...lifetimes, endpointShare: cfg.quotas.conntrack }); // initialise the header
    rt.conntrack.push(ctSab);
    const fSab = new SharedArrayBuffer(FragmentTable.bytesFor(fragCapacity));
    new FragmentTable(fSab, 0, fragCapacity, { endpointShare: cfg.quotas.fragments });
    rt.fragments.push(fSab);
    rt.egress.push(EgressQueues.create(slots, MAX_PORTS).sab);
    (rt.capture as SharedArrayBuffer[]).push(CaptureRing.create().sab);
  }

  const io = new IoLoop(rt, VNET_HDR_LEN, engine);
  // underlay hook: a UDP socket on node-ip:8472 read like a TUN port, decapsulated in dispatch
  const underlay = cfg.underlay ? new UnderlayReader(rt, VNET_HDR_LEN, cfg.underlay.ip, gsoLinux6644Safe()) : null;
  if (underlay) {
    io.underlay = underlay;
    io.addPort(UNDERLAY_PORT, underlay.fd);
  }
  const health = new Int32Array(rt.health);
  const control = tables.control;

  // ---- shard workers: one Piscina pool (one thread) per shard, under our own supervisor ----
  let stopping = false;
  const sup = new Supervisor(shards, {
    start: (k) => {
      const pool = new Piscina({ filename: SHARD_WORKER, minThreads: 1, maxThreads: 1, idleTimeout: 2 ** 31 - 1, concurrentTasksPerWorker: 1 });
      const task: ShardTask = {
        shard: k,
        readerSlot: k,
        tables: tables.shared,
        rt,
        ctCapacity,
        fragCapacity,
        ctLifetimes: lifetimes,
        events: opts.events !== false,
        gcBudget: 256,
        engine,
        queue: cfg.queue,
        gro: cfg.gro,
        underlayUdpGso: cfg.underlayUdpGso,
        mtu: cfg.underlay ? cfg.mtu - VXLAN_OVERHEAD : cfg.mtu,
        gsoLinux6644Safe: gsoLinux6644Safe(),
      };
      return { pool, done: pool.run(task) };
    },
    recover: (k) => {
      control.resetReader(k);
      io.reclaim();
      const queued = new EgressQueues(rt.egress[k] as SharedArrayBuffer, slots, MAX_PORTS).repair();
      new DelayLine(rt.delay[k] as SharedArrayBuffer, slots, MAX_PORTS).repair(queued); // delayed packets stay queued too
      new LinkTable(rt.link, MAX_PORTS).releaseLocks(k + 1); // a rate clock the dead worker held
      const r = (io.rings[k] as ShardRing).recover(k, io.owner, queued, io.free, io.nFree);
      io.nFree = r.nFree;
      io.admission.recount(io.owner);
      if (r.report.killer >= 0) io.stats[IO_CRASH_DROPS]++;
      io.stats[IO_CRASH_FREED] += r.report.freed;
      io.refill();
      return r.report;
    },
    ring: (k) => io.rings[k] as ShardRing,
    health,
    log,
    onRestart: (k, total, reason, crashLoop) => postEncoded(ctl, { type: 'workerRestart', total, shard: k, reason, crashLoop } satisfies MainToControl),
    stopping: () => stopping,
  });
  sup.startAll();
  // Slab accounting for metrics: reclaim and sample the free slots ten times a second.
  io.stats[IO_SLOTS] = slots;
  const slabTimer = setInterval(() => {
    io.refill();
    io.stats[IO_FREE_SLOTS] = io.freeSlots;
  }, 100);
  slabTimer.unref();

  // ---- control thread ----
  const init: ControlInit = {
    cfg,
    tables: tables.shared,
    rt,
    socket: opts.socket,
    stateDir: opts.stateDir,
    forcePartialRestore: opts.forcePartialRestore === true,
    metricsAddr: opts.metricsAddr,
    version: opts.version,
    docker: opts.docker ?? null,
  };
  const ctl = new Worker(CONTROL_THREAD, { workerData: init });
  let resolveReady!: (v: { endpoints: number; missing: string[] }) => void;
  let rejectReady!: (e: Error) => void;
  const ready = new Promise<{ endpoints: number; missing: string[] }>((res, rej) => {
    resolveReady = res;
    rejectReady = rej;
  });
  let resolveStopped!: () => void;
  const stopped = new Promise<void>((res) => {
    resolveStopped = res;
  });
  ctl.on('message', (raw: unknown) => {
    const m = decodeMessage<ControlToMain>(raw, 'main thread');
    switch (m.type) {
      case 'addPort':
        io.addPort(m.port, m.fd);
        break;
      case 'removePort':
        io.removePort(m.port);
        postEncoded(ctl, { type: 'portRemoved', port: m.port } satisfies MainToControl);
        break;
      case 'log':
        log(m.msg);
        break;
      case 'ready':
        resolveReady({ endpoints: m.endpoints, missing: m.missing });
        break;
      case 'stopped':
        resolveStopped();
        break;
      case 'fatal':
        log(`control thread: ${m.msg}`);
        rejectReady(new TunswitchError(isErrorCode(m.code) ? m.code : 'EINTERNAL', m.msg));
        resolveStopped();
        break;
    }
  });
  ctl.on('error', (e) => {
    log(`control thread crashed: ${e.message}`);
    rejectReady(e);
    resolveStopped();
  });

  async function stop(): Promise<void> {
    if (stopping) return;
    postEncoded(ctl, { type: 'shutdown' } satisfies MainToControl);
    await Promise.race([stopped, new Promise((r) => setTimeout(r, 10000).unref())]); // unref: a failed start exits at once
    stopping = true;
    clearInterval(slabTimer);
    io.stop();
    underlay?.close();
    await sup.stop();
    await ctl.terminate();
  }

  /**
   * Fault injection for the supervision path (SIGUSR2 in `tunswitch run`): ends the thread
   * of one shard worker abruptly, whatever it is doing (starting included). The supervisor
   * notices (the task fails, or the heartbeat stops), recovers every slot and restarts it.
   */
  function killShardWorker(): Promise<boolean> {
    return sup.kill(0);
  }

  return { stop, ready, io, restarts: () => sup.restarts, killShardWorker, engine };
}

/**
 * The I/O engine for `io: auto | uring | readwrite`. auto is read/write: in the README's
 * bench run (`tunswitch bench`, ts-w1 against ts-w1-rw) read/write forwarded more on every
 * case on this machine (64-byte UDP 284 vs 146 kpps, TCP 3.0 vs 2.4 Gbit/s, with TSO 9.9 vs
 * 7.9), although io_uring makes 25x fewer system calls per packet (bench/io/uring.ts): the
 * reads move into task work on the same I/O thread. `io: uring` asks for io_uring.
 */
export function chooseEngine(want: 'auto' | 'uring' | 'readwrite'): IoEngineName {
  if (want !== 'uring') return 'readwrite';
  const b = loadBinding();
  const probe = typeof b.uringProbe === 'function' ? b.uringProbe() : { available: false, reason: 'binding has no io_uring engine' };
  if (probe.available) return 'uring';
  throw new TunswitchError('ENOT_SUPPORTED', `io: uring: the io_uring engine cannot run here: ${probe.reason}`);
}

/**
 * Linux 6.6.44 and 6.10.3 refused some GSO shapes on TUN writes (virtio_net_hdr_to_skb's
 * "missing check virtio", later dropped); src/datapath/gso.ts avoids them when asked. We ask
 * on every kernel older than 6.12, where the check may be present.
 */
function gsoLinux6644Safe(): boolean {
  const m = /^(\d+)\.(\d+)/.exec(release());
  if (!m) return true;
  const major = Number(m[1]);
  const minor = Number(m[2]);
  return major < 6 || (major === 6 && minor < 12);
}
