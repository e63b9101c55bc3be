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
import { dirname, join } from 'node:path';
import { Piscina } from 'piscina';
import { TableSet } from '../tables/tableset.js';
import { ConntrackTable } from '../tables/conntrack.js';
import { FragmentTable } from '../tables/fragments.js';
import { EventRing, createCounters } from '../tables/events.js';
import { IoLoop } from './io-loop.js';
import { createRuntimeShared, IO_STATS_SLOTS, R_DONE, R_HEAD, R_STOP, type RuntimeShared } from './shared.js';
import type { RunConfig } from './config.js';
import { decodeMessage, postEncoded, type ControlToMain, type MainToControl } from './messages.js';
import type { ControlInit } from './control-thread.js';
import type { ShardTask } from '../../workers/shard.js';
import { VNET_HDR_LEN } from '../io/tun.js';
import { CaptureRing } from '../tables/capture.js';

export interface RunOptions {
  socket: string;
  stateDir: string | null;
  metricsAddr: string | null;
  version: string;
  ctCapacity?: number;
  events?: boolean;
  /** Attach containers labelled tunswitch.enable=true (src/lab/docker.ts); null or absent: no Docker. */
  docker?: { socketPath?: string } | null;
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
}

export async function startSwitch(cfg: RunConfig, opts: RunOptions): Promise<RunningSwitch> {
  const log = opts.log ?? ((m: string) => process.stderr.write(`${new Date().toISOString()} ${m}\n`));
  const shards = cfg.workers;
  // Slots: with offload a packet may be a 64 KiB GSO super-packet plus its virtio header.
  const slotSize = cfg.offload ? 65536 + 64 : Math.ceil((cfg.mtu + 64) / 64) * 64;
  const slots = cfg.offload ? 1024 : 8192;
  const ctCapacity = opts.ctCapacity ?? 1 << 17;
  const fragCapacity = 4096;

  const tables = TableSet.create();
  const base = createRuntimeShared({ shards, slots, slotSize, vnetHdr: cfg.offload });
  const rt: RuntimeShared = {
    ...base,
    counters: [],
    events: [],
    conntrack: [],
    fragments: [],
    capture: [], // one capture ring per shard (tunswitch capture)
    ioStats: new SharedArrayBuffer(IO_STATS_SLOTS * 8),
  };
  const lifetimes = { tcpLifetime: 21600, nonTcpLifetime: 60, synLifetime: 60, closeLifetime: 10 };
  for (let k = 0; k < shards; k++) {
    rt.counters.push(createCounters().buffer as SharedArrayBuffer);
    rt.events.push(EventRing.create(8192).sab);
    const ctSab = new SharedArrayBuffer(ConntrackTable.bytesFor(ctCapacity));
    new ConntrackTable(ctSab, 0, ctCapacity, lifetimes); // initialise the header
    rt.conntrack.push(ctSab);
    const fSab = new SharedArrayBuffer(FragmentTable.bytesFor(fragCapacity));
    new FragmentTable(fSab, 0, fragCapacity);
    rt.fragments.push(fSab);
    (rt.capture as SharedArrayBuffer[]).push(CaptureRing.create().sab);
  }

  const io = new IoLoop(rt, VNET_HDR_LEN);

  // ---- shard workers on Piscina ----
  const pool = new Piscina({ filename: SHARD_WORKER, minThreads: shards, maxThreads: shards, idleTimeout: 2 ** 31 - 1, concurrentTasksPerWorker: 1 });
  let restarts = 0;
  let stopping = false;
  const running: Promise<unknown>[] = [];
  const control = tables.control;
  function startShard(k: number): Promise<unknown> {
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
    };
    const p: Promise<unknown> = pool.run(task).catch((e: unknown) => {
      if (stopping) return;
      restarts++;
      control.resetReader(k);
      // Skip the batch that was in flight: if a packet crashed the worker it must not loop.
      const ring = new Int32Array(rt.rings[k] as SharedArrayBuffer);
      const head = Atomics.load(ring, R_HEAD);
      const done = Atomics.load(ring, R_DONE);
      if (head !== done) Atomics.store(ring, R_DONE, (done + 1) | 0);
      log(`shard ${k}: worker died (${(e as Error).message}); restarting (${restarts} restarts)`);
      postEncoded(ctl, { type: 'workerRestart', total: restarts } satisfies MainToControl);
      running[k] = startShard(k);
      return running[k];
    });
    return p;
  }
  for (let k = 0; k < shards; k++) running.push(startShard(k));

  // ---- control thread ----
  const init: ControlInit = {
    cfg,
    tables: tables.shared,
    rt,
    socket: opts.socket,
    stateDir: opts.stateDir,
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
        rejectReady(new Error(m.msg));
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
    await Promise.race([stopped, new Promise((r) => setTimeout(r, 10000))]);
    stopping = true;
    io.stop();
    for (const sab of rt.rings) {
      const ring = new Int32Array(sab);
      Atomics.store(ring, R_STOP, 1);
      Atomics.notify(ring, R_HEAD);
    }
    await Promise.race([Promise.allSettled(running), new Promise((r) => setTimeout(r, 5000))]);
    await pool.destroy();
    await ctl.terminate();
  }

  /**
   * Fault injection for the supervision path (SIGUSR2 in `tunswitch run`): ends one shard
   * worker thread abruptly. Piscina reports the task as failed, the supervisor resubmits it,
   * and the new worker adopts the shard's conntrack from shared memory.
   */
  async function killShardWorker(): Promise<boolean> {
    const threads = (pool as unknown as { threads: { terminate(): Promise<number> }[] }).threads;
    const t = threads[0];
    if (!t) return false;
    await t.terminate();
    return true;
  }

  return { stop, ready, io, restarts: () => restarts, killShardWorker };
}
