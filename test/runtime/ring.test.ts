/**
 * The shard ring (src/runtime/ring.ts): the producer/consumer protocol in one thread, and
 * crash recovery that accounts for every slot, whatever packet the worker died on.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ShardRing, createRingBuffer } from '../../src/runtime/ring.js';
import { EgressQueues } from '../../src/runtime/egress.js';

const SLOTS = 64;

function setup(): { prod: ShardRing; cons: ShardRing; free: Int32Array; owner: Int8Array; nFree: number; q: EgressQueues } {
  const sab = createRingBuffer(SLOTS);
  const free = new Int32Array(SLOTS);
  for (let i = 0; i < SLOTS; i++) free[i] = SLOTS - 1 - i;
  return { prod: new ShardRing(sab, SLOTS), cons: new ShardRing(sab, SLOTS), free, owner: new Int8Array(SLOTS).fill(-1), nFree: SLOTS, q: EgressQueues.create(SLOTS, 4) };
}

describe('shard ring', () => {
  it('moves slots producer -> consumer -> producer in order', () => {
    const r = setup();
    r.cons.start();
    r.prod.beginPush();
    for (let i = 0; i < 10; i++) {
      const s = r.free[--r.nFree]!;
      r.owner[s] = 0;
      r.prod.push(s);
    }
    assert.equal(r.cons.available(), 0, 'entries visible before publish');
    r.prod.publish();
    assert.equal(r.cons.available(), 10);
    const took: number[] = [];
    for (let i = 0; i < 10; i++) {
      took.push(r.cons.take());
      r.cons.processed();
      r.cons.giveBack(took[i]!);
    }
    r.cons.publishDone();
    assert.deepEqual(took, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.equal(r.prod.backlog(), 0);
    r.nFree = r.prod.reclaim(r.free, r.nFree, r.owner);
    assert.equal(r.nFree, SLOTS - 10, 'returns visible before flushReturns');
    r.cons.flushReturns();
    r.nFree = r.prod.reclaim(r.free, r.nFree, r.owner);
    assert.equal(r.nFree, SLOTS);
    assert.ok(r.owner.every((o) => o === -1), 'owners cleared on reclaim');
  });

  for (const dieAt of [0, 1, 7, 15]) {
    it(`a worker that dies at packet ${dieAt} of a batch: every slot comes back, only that packet is dropped`, () => {
      const r = setup();
      r.cons.start();
      // 40 packets submitted; the worker queues even slots, sends odd ones back at once
      r.prod.beginPush();
      for (let i = 0; i < 40; i++) {
        const s = r.free[--r.nFree]!;
        r.owner[s] = 0;
        r.prod.push(s);
      }
      r.prod.publish();
      // an earlier batch: 16 packets processed and published
      for (let i = 0; i < 16; i++) {
        const s = r.cons.take();
        if (s % 2 === 0) r.q.enqueue(1, s, 100, s, 0, 0, 0, 0, 1 << 30);
        else r.cons.giveBack(s);
        r.cons.processed();
      }
      r.cons.publishDone();
      r.cons.flushReturns();
      // the fatal batch: packets before dieAt are handled, returns written but not flushed
      let killer = -1;
      for (let i = 0; i <= dieAt; i++) {
        const s = r.cons.take();
        if (i === dieAt) {
          killer = s;
          break; // the worker dies inside the pipeline for this packet
        }
        if (s % 2 === 0) r.q.enqueue(2, s, 100, s, 0, 0, 0, 0, 1 << 30);
        else r.cons.giveBack(s);
        r.cons.processed();
      }
      // also: two slots taken out of the queue for a write that never finished
      const out = new Int32Array(2);
      const writing = r.q.dequeue(1, 0, 2, out, 1e9, 2e9);
      assert.equal(writing, 2);

      const queued = new EgressQueues(r.q.sab, SLOTS, 4).repair();
      const rec = r.prod.recover(0, r.owner, queued, r.free, r.nFree);
      r.nFree = rec.nFree;
      assert.equal(rec.report.killer, killer, `got killer ${rec.report.killer}, want ${killer}`);
      assert.equal(rec.report.resubmitted, 40 - 16 - dieAt - 1, `resubmitted: got ${rec.report.resubmitted}`);
      let inQueue = 0;
      for (const v of queued) inQueue += v;
      // accounting: free + ring + queue = every slot
      const total = r.nFree + rec.report.resubmitted + inQueue;
      assert.equal(total, SLOTS, `free ${r.nFree} + ring ${rec.report.resubmitted} + queued ${inQueue} = ${total}, want ${SLOTS}`);
      // the next worker processes exactly the rest, starting after the killer
      const next = new ShardRing(r.prod.sab, SLOTS);
      next.start();
      assert.equal(next.available(), rec.report.resubmitted);
      if (next.available() > 0) assert.equal(next.take(), killer + 1, 'the next worker must start right after the killer');
    });
  }

  it('a crash after a packet was queued but before DONE advanced does not duplicate it', () => {
    const r = setup();
    r.cons.start();
    r.prod.beginPush();
    for (let i = 0; i < 4; i++) {
      const s = r.free[--r.nFree]!;
      r.owner[s] = 0;
      r.prod.push(s);
    }
    r.prod.publish();
    const s = r.cons.take();
    r.q.enqueue(0, s, 100, 1, 0, 0, 0, 0, 1 << 30); // died here, before processed()
    const queued = new EgressQueues(r.q.sab, SLOTS, 4).repair();
    const rec = r.prod.recover(0, r.owner, queued, r.free, r.nFree);
    assert.equal(rec.report.killer, -1, 'a queued packet is not the killer');
    assert.equal(rec.report.resubmitted, 3);
    assert.equal(rec.report.queued, 1);
  });
});
