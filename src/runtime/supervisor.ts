/**
 * The shard supervisor (main thread): owns the liveness of every shard worker.
 *
 * Each shard runs on a Piscina pool of its own (one thread, one long-running task). The
 * supervisor does not rely on the pool to restart anything: a pool whose worker is dead,
 * stuck or never became ready is destroyed and replaced.
 *   1. start: a new pool and task; the shard is STARTING until the ring's READY word shows
 *      the new generation (ring.ts), then RUNNING.
 *   2. watch (every WATCH_MS): a STARTING shard not ready within READY_TIMEOUT_MS, or a
 *      RUNNING shard whose ALIVE heartbeat has not moved for STUCK_MS, is replaced. A task
 *      that settles (the thread died, or the loop threw) is replaced at once. Time the watch
 *      itself did not get to run (the main thread was starved: a loaded machine, a long GC)
 *      is not held against a worker: both clocks move on by the gap, so a busy machine does
 *      not turn slow start-ups into a restart loop.
 *   3. replace: destroy the old pool (its thread is gone when that resolves), then recover
 *      the shard's slots (ring.ts recover(): every slot is accounted for; only the packet
 *      being processed is dropped), then start again.
 *   4. crash loop: CRASH_LOOP_DEATHS deaths within CRASH_LOOP_WINDOW_MS put the shard in
 *      back-off (delay doubling up to MAX_BACKOFF_MS), said loudly in the log, the health
 *      words, `status` and the metrics; the shard is never reported healthy meanwhile.
 * Piscina note: a worker that exits before it is ready is not replaced by Piscina 5, and the
 * task's promise may never settle; the READY timeout covers that.
 */
import type { Piscina } from 'piscina';
import type { RecoveryReport, ShardRing } from './ring.js';
import { R_ALIVE, R_GENERATION, R_READY } from './ring.js';
import {
  HEALTH_CRASH_LOOP,
  HEALTH_LAST_RESTART_S,
  HEALTH_RESTARTS,
  HEALTH_STATE,
  HEALTH_WORDS,
  SHARD_DEAD,
  SHARD_RUNNING,
  SHARD_STARTING,
  SHARD_STUCK,
} from './shared.js';

export const WATCH_MS = 100;
/**
 * A worker thread loads the shard loop's modules and attaches the tables before it is ready:
 * about 100 ms on a quiet machine, seen above 1 s with the machine's two cores at load 11
 * (the 1000 ms this was first restarted shards in a loop there).
 */
export const READY_TIMEOUT_MS = 5000;
/** An idle worker beats every 100 ms (shard.ts IDLE_WAIT_MS); a busy one every loop. */
export const STUCK_MS = 2000;
/** A watch tick later than this after the previous one means the main thread was starved. */
const WATCH_LATE_MS = 4 * WATCH_MS;
export const CRASH_LOOP_DEATHS = 5;
export const CRASH_LOOP_WINDOW_MS = 10_000;
export const MAX_BACKOFF_MS = 2000;
/** A shard in crash-loop back-off that then runs this long is healthy again. */
export const CRASH_LOOP_CLEAR_MS = 3000;

export interface SupervisorHooks {
  start(k: number): { pool: Piscina; done: Promise<unknown> };
  /** Called with no worker thread alive for shard k. */
  recover(k: number): RecoveryReport;
  ring(k: number): ShardRing;
  health: Int32Array;
  log(msg: string): void;
  onRestart(k: number, total: number, reason: string, crashLoop: boolean): void;
  stopping(): boolean;
  /** The clock (ms); Date.now unless a test drives it. */
  now?(): number;
}

interface ShardState {
  pool: Piscina | null;
  done: Promise<unknown> | null;
  generation: number;
  startedAt: number;
  lastAlive: number;
  lastAliveAt: number;
  replacing: boolean;
  deaths: number[];
  timer: ReturnType<typeof setTimeout> | null;
  runningSince: number;
}

export class Supervisor {
  restarts = 0;
  private readonly st: ShardState[] = [];
  private watch: ReturnType<typeof setInterval> | null = null;
  private lastCheckAt = 0;

  constructor(
    readonly shards: number,
    private readonly h: SupervisorHooks,
  ) {
    for (let k = 0; k < shards; k++) {
      this.st.push({ pool: null, done: null, generation: 0, startedAt: 0, lastAlive: 0, lastAliveAt: 0, replacing: false, deaths: [], timer: null, runningSince: 0 });
    }
  }

  /** Starts every shard and, unless `watch` is false (a test calls check() itself), the watch. */
  startAll(watch = true): void {
    for (let k = 0; k < this.shards; k++) this.start(k);
    if (!watch) return;
    this.watch = setInterval(() => this.check(), WATCH_MS);
    this.watch.unref();
  }

  private now(): number {
    return this.h.now ? this.h.now() : Date.now();
  }

  private start(k: number): void {
    const s = this.st[k] as ShardState;
    s.timer = null;
    if (this.h.stopping()) return;
    const ring = this.h.ring(k);
    s.generation = (Atomics.load(ring.w, R_GENERATION) + 1) | 0;
    s.startedAt = this.now();
    s.lastAlive = Atomics.load(ring.w, R_ALIVE);
    s.lastAliveAt = s.startedAt;
    Atomics.store(this.h.health, k * HEALTH_WORDS + HEALTH_STATE, SHARD_STARTING);
    const { pool, done } = this.h.start(k);
    s.pool = pool;
    s.done = done;
    done.then(
      () => {
        if (!this.h.stopping() && s.pool === pool) void this.replace(k, 'shard loop returned', pool);
      },
      (e: unknown) => {
        if (!this.h.stopping() && s.pool === pool) void this.replace(k, `worker died: ${(e as Error)?.message ?? String(e)}`, pool);
      },
    );
  }

  /** One watch tick (see 2. above); the watch timer calls it every WATCH_MS. */
  check(): void {
    if (this.h.stopping()) return;
    const now = this.now();
    const gap = this.lastCheckAt === 0 ? 0 : now - this.lastCheckAt - WATCH_MS;
    this.lastCheckAt = now;
    for (let k = 0; k < this.shards; k++) {
      const s = this.st[k] as ShardState;
      if (s.replacing || s.pool === null) continue;
      if (gap > WATCH_LATE_MS - WATCH_MS) {
        // the watch itself was starved: the workers (same machine) get the same grace
        s.startedAt += gap;
        s.lastAliveAt += gap;
      }
      const w = this.h.ring(k).w;
      const hb = k * HEALTH_WORDS;
      const state = Atomics.load(this.h.health, hb + HEALTH_STATE);
      if (state === SHARD_STARTING) {
        if (Atomics.load(w, R_READY) === s.generation) {
          Atomics.store(this.h.health, hb + HEALTH_STATE, SHARD_RUNNING);
          s.lastAliveAt = now;
          s.runningSince = now;
        } else if (now - s.startedAt > READY_TIMEOUT_MS) {
          void this.replace(k, `never became ready within ${READY_TIMEOUT_MS} ms`, s.pool);
        }
        continue;
      }
      if (Atomics.load(this.h.health, hb + HEALTH_CRASH_LOOP) === 1 && now - s.runningSince > CRASH_LOOP_CLEAR_MS) {
        Atomics.store(this.h.health, hb + HEALTH_CRASH_LOOP, 0);
        s.deaths.length = 0;
        this.h.log(`shard ${k}: running for ${CRASH_LOOP_CLEAR_MS / 1000} s after a crash loop; healthy again`);
      }
      const alive = Atomics.load(w, R_ALIVE);
      if (alive !== s.lastAlive) {
        s.lastAlive = alive;
        s.lastAliveAt = now;
      } else if (now - s.lastAliveAt > STUCK_MS) {
        Atomics.store(this.h.health, hb + HEALTH_STATE, SHARD_STUCK);
        void this.replace(k, `stuck: no heartbeat for ${now - s.lastAliveAt} ms`, s.pool);
      }
    }
  }

  private async replace(k: number, reason: string, pool: Piscina): Promise<void> {
    const s = this.st[k] as ShardState;
    if (s.replacing || s.pool !== pool) return;
    s.replacing = true;
    const hb = k * HEALTH_WORDS;
    if (Atomics.load(this.h.health, hb + HEALTH_STATE) !== SHARD_STUCK) Atomics.store(this.h.health, hb + HEALTH_STATE, SHARD_DEAD);
    try {
      await pool.destroy().catch(() => undefined);
      if (this.h.stopping()) return;
      const rep = this.h.recover(k);
      this.restarts++;
      const now = this.now();
      s.deaths.push(now);
      while (s.deaths.length > 0 && now - (s.deaths[0] as number) > CRASH_LOOP_WINDOW_MS) s.deaths.shift();
      const looping = s.deaths.length >= CRASH_LOOP_DEATHS;
      Atomics.store(this.h.health, hb + HEALTH_RESTARTS, Atomics.load(this.h.health, hb + HEALTH_RESTARTS) + 1);
      Atomics.store(this.h.health, hb + HEALTH_LAST_RESTART_S, Math.floor(now / 1000));
      Atomics.store(this.h.health, hb + HEALTH_CRASH_LOOP, looping ? 1 : 0);
      const slots = `${rep.resubmitted} resubmitted, ${rep.queued} still queued, ${rep.freed} freed${rep.killer >= 0 ? ', 1 packet dropped (reason 235)' : ''}`;
      const delay = looping ? Math.min(MAX_BACKOFF_MS, 100 * 2 ** (s.deaths.length - CRASH_LOOP_DEATHS)) : 0;
      if (looping) {
        this.h.log(`ERROR shard ${k}: CRASH LOOP: ${s.deaths.length} deaths in ${CRASH_LOOP_WINDOW_MS / 1000} s; last: ${reason}; slots: ${slots}; restarting in ${delay} ms (restart ${this.restarts})`);
      } else {
        this.h.log(`shard ${k}: ${reason}; slots: ${slots}; restarting (restart ${this.restarts})`);
      }
      this.h.onRestart(k, this.restarts, reason, looping);
      s.pool = null;
      if (delay > 0) s.timer = setTimeout(() => this.start(k), delay);
      else this.start(k);
    } finally {
      s.replacing = false;
    }
  }

  /** Fault injection: ends the thread of shard k's worker abruptly. */
  async kill(k: number): Promise<boolean> {
    const s = this.st[k];
    const pool = s?.pool;
    if (!pool) return false;
    const t = (pool as unknown as { threads: { terminate(): Promise<number> }[] }).threads[0];
    if (!t) return false;
    await t.terminate();
    return true;
  }

  async stop(): Promise<void> {
    if (this.watch) clearInterval(this.watch);
    for (let k = 0; k < this.shards; k++) {
      const s = this.st[k] as ShardState;
      if (s.timer) clearTimeout(s.timer);
      this.h.ring(k).stop();
    }
    // The loops drain and return on STOP; then the pools go.
    const dones = this.st.map((s) => s.done).filter((d): d is Promise<unknown> => d !== null);
    await Promise.race([Promise.allSettled(dones), new Promise((r) => setTimeout(r, 5000).unref())]);
    const pools = this.st.map((s) => s.pool).filter((p): p is Piscina => p !== null);
    await Promise.race([Promise.allSettled(pools.map((p) => p.destroy())), new Promise((r) => setTimeout(r, 5000).unref())]);
  }
}
