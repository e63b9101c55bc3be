/**
 * The shard supervisor's watch, driven by a test clock: a shard that never becomes ready or
 * stops beating is replaced after its timeout, and time the watch itself was starved (the
 * main thread did not run) is not held against the worker. The pools are stand-ins (this is
 * the layer above Piscina); test/e2e/supervise.test.ts kills real workers.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Piscina } from 'piscina';
import { READY_TIMEOUT_MS, STUCK_MS, Supervisor, WATCH_MS } from '../../src/runtime/supervisor.js';
import { R_ALIVE, R_GENERATION, R_READY, type RecoveryReport, type ShardRing } from '../../src/runtime/ring.js';
import { HEALTH_STATE, HEALTH_WORDS, SHARD_RUNNING, SHARD_STARTING } from '../../src/runtime/shared.js';

class Harness {
  t = 1_000_000;
  readonly w = new Int32Array(32);
  readonly health = new Int32Array(HEALTH_WORDS);
  readonly logs: string[] = [];
  starts = 0;
  readonly sup: Supervisor;

  constructor() {
    const ring = { w: this.w, stop: () => undefined } as unknown as ShardRing;
    this.sup = new Supervisor(1, {
      start: () => {
        this.starts++;
        const pool = { destroy: async () => undefined } as unknown as Piscina;
        return { pool, done: new Promise<unknown>(() => undefined) };
      },
      recover: () => {
        // a real recovery moves the ring's generation on, as ring.ts does
        Atomics.add(this.w, R_GENERATION, 1);
        const rep: RecoveryReport = { resubmitted: 0, queued: 0, freed: 0, killer: -1 };
        return rep;
      },
      ring: () => ring,
      health: this.health,
      log: (m) => this.logs.push(m),
      onRestart: () => undefined,
      stopping: () => false,
      now: () => this.t,
    });
  }

  /** Advances the clock by `ms` in watch ticks, calling `each` before every tick. */
  async run(ms: number, each: () => void = () => undefined): Promise<void> {
    for (let e = 0; e < ms; e += WATCH_MS) {
      this.t += WATCH_MS;
      each();
      this.sup.check();
      await new Promise((r) => setImmediate(r)); // let a replace() finish
    }
  }

  /** One late watch tick after `ms` in which the watch did not run. */
  async starve(ms: number): Promise<void> {
    this.t += ms;
    this.sup.check();
    await new Promise((r) => setImmediate(r));
  }

  /** The worker says it is ready (the generation the supervisor started). */
  ready(): void {
    Atomics.store(this.w, R_READY, Atomics.load(this.w, R_GENERATION) + 1);
  }
}

describe('Supervisor watch', () => {
  it('replaces a shard that is not ready within READY_TIMEOUT_MS, not before', async () => {
    const h = new Harness();
    h.sup.startAll(false);
    assert.equal(h.starts, 1);
    await h.run(READY_TIMEOUT_MS - WATCH_MS);
    assert.equal(h.sup.restarts, 0, h.logs.join('\n'));
    await h.run(3 * WATCH_MS);
    assert.equal(h.sup.restarts, 1);
    assert.equal(h.starts, 2);
    assert.match(h.logs[0] ?? '', /never became ready within 5000 ms/);
  });

  it('does not count a starved watch against a starting shard', async () => {
    const h = new Harness();
    h.sup.startAll(false);
    await h.run(1000);
    // the main thread did not run for 10 s (a loaded machine): one late tick
    await h.starve(10_000);
    await h.run(READY_TIMEOUT_MS - 1000 - 2 * WATCH_MS);
    assert.equal(h.sup.restarts, 0, h.logs.join('\n'));
    h.ready();
    await h.run(WATCH_MS);
    assert.equal(h.health[HEALTH_STATE], SHARD_RUNNING);
  });

  it('replaces a running shard whose heartbeat stops for STUCK_MS, and not a beating one', async () => {
    const h = new Harness();
    h.sup.startAll(false);
    h.ready();
    await h.run(WATCH_MS);
    assert.equal(h.health[HEALTH_STATE], SHARD_RUNNING);
    await h.run(10 * STUCK_MS, () => Atomics.add(h.w, R_ALIVE, 1));
    assert.equal(h.sup.restarts, 0);
    // starved for 5 s while beating stopped too: not stuck
    await h.starve(5000);
    assert.equal(h.sup.restarts, 0, h.logs.join('\n'));
    await h.run(STUCK_MS + 2 * WATCH_MS);
    assert.equal(h.sup.restarts, 1);
    assert.match(h.logs[0] ?? '', /stuck: no heartbeat/);
    assert.equal(h.health[HEALTH_STATE], SHARD_STARTING);
  });
});
