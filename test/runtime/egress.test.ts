/**
 * The egress queues (src/runtime/egress.ts) against a naive model of DRR with new/old flow
 * lists on seeded random input, and CoDel, the byte cap, ECN marking and crash repair as
 * scenarios.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { BUCKETS, EgressQueues, EGRESS_DROP_CODEL, EGRESS_DROP_OVERLIMIT, EGRESS_MARK_CE, QUANTUM } from '../../src/runtime/egress.js';

const SLOTS = 1024;
const PORTS = 8;
const BIG = 1 << 30;

class Rand {
  constructor(private s: number) {}
  next(): number {
    this.s = (Math.imul(this.s, 1664525) + 1013904223) >>> 0;
    return this.s / 2 ** 32;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
}

/** DRR with fq_codel's new/old lists, no CoDel, arrays everywhere. */
class NaiveDrr {
  flows = new Map<number, { q: { slot: number; len: number }[]; deficit: number; list: 'none' | 'new' | 'old' }>();
  lists = new Map<number, { nw: number[]; old: number[] }>();
  enqueue(p: number, slot: number, len: number, hash: number): void {
    const f = p * BUCKETS + (hash & (BUCKETS - 1));
    let fl = this.flows.get(f);
    if (!fl) this.flows.set(f, (fl = { q: [], deficit: 0, list: 'none' }));
    fl.q.push({ slot, len });
    const l = this.portLists(p);
    if (fl.list === 'none') {
      fl.deficit = QUANTUM;
      fl.list = 'new';
      l.nw.push(f);
    }
  }
  portLists(p: number): { nw: number[]; old: number[] } {
    let l = this.lists.get(p);
    if (!l) this.lists.set(p, (l = { nw: [], old: [] }));
    return l;
  }
  dequeue(p: number, max: number): number[] {
    const out: number[] = [];
    const l = this.portLists(p);
    while (out.length < max) {
      let fromNew = true;
      let f = l.nw[0];
      if (f === undefined) {
        fromNew = false;
        f = l.old[0];
        if (f === undefined) break;
      }
      const fl = this.flows.get(f)!;
      if (fl.deficit <= 0) {
        fl.deficit += QUANTUM;
        (fromNew ? l.nw : l.old).shift();
        l.old.push(f);
        fl.list = 'old';
        continue;
      }
      const pkt = fl.q.shift();
      if (!pkt) {
        (fromNew ? l.nw : l.old).shift();
        if (fromNew && l.old.length > 0) {
          l.old.push(f);
          fl.list = 'old';
        } else fl.list = 'none';
        continue;
      }
      fl.deficit -= pkt.len;
      out.push(pkt.slot);
    }
    return out;
  }
}

describe('egress queues', () => {
  it('dequeues in the same order as a naive DRR on seeded random input (no CoDel, no limit)', () => {
    for (const seed of [1, 2, 3, 42, 1234]) {
      const rnd = new Rand(seed);
      const q = EgressQueues.create(SLOTS, PORTS);
      const naive = new NaiveDrr();
      const free: number[] = [];
      for (let s = SLOTS - 1; s >= 0; s--) free.push(s);
      const out = new Int32Array(64);
      for (let step = 0; step < 20000; step++) {
        if (free.length > 0 && rnd.next() < 0.55) {
          const p = rnd.int(PORTS);
          const slot = free.pop()!;
          const len = rnd.next() < 0.2 ? 64 + rnd.int(65000) : 60 + rnd.int(1440);
          const hash = rnd.int(64);
          q.enqueue(p, slot, len, hash, 0, 0, 0, 0, BIG);
          assert.equal(q.nDropped, 0, `seed ${seed} step ${step}: got ${q.nDropped} drops, want 0`);
          naive.enqueue(p, slot, len, hash);
        } else {
          const p = rnd.int(PORTS);
          const max = 1 + rnd.int(64);
          const n = q.dequeue(p, 0, max, out, BIG, BIG * 2);
          const got = Array.from(out.subarray(0, n));
          const want = naive.dequeue(p, max);
          assert.deepEqual(got, want, `seed ${seed} step ${step} port ${p}: got ${got}, want ${want}`);
          for (const s of got) free.push(s);
        }
      }
    }
  });

  it('serves a sparse flow ahead of a bulk backlog', () => {
    const q = EgressQueues.create(SLOTS, PORTS);
    for (let s = 0; s < 500; s++) q.enqueue(1, s, 1500, 7, 0, 0, 0, 0, BIG);
    const out = new Int32Array(64);
    q.dequeue(1, 0, 10, out, BIG, BIG * 2); // the bulk flow is now an old flow
    q.enqueue(1, 900, 84, 8, 0, 0, 0, 0, BIG); // a ping
    const n = q.dequeue(1, 0, 64, out, BIG, BIG * 2);
    const at = Array.from(out.subarray(0, n)).indexOf(900);
    assert.ok(at >= 0 && at <= 1, `ping dequeued at position ${at}, want 0 or 1 (behind at most one bulk packet)`);
  });

  it('counts bytes, not packets, against the limit and drops from the fattest flow', () => {
    const q = EgressQueues.create(SLOTS, PORTS);
    const limit = 256 * 1024;
    const dropped: number[] = [];
    for (let s = 0; s < 8; s++) {
      q.enqueue(2, s, 65536, 1, 0, 0, 0, 0, limit); // one GSO flow
      for (let d = 0; d < q.nDropped; d++) {
        dropped.push(q.droppedSlot[d]!);
        assert.equal(q.droppedWhy[d], EGRESS_DROP_OVERLIMIT);
      }
    }
    q.enqueue(2, 100, 100, 2, 0, 0, 0, 0, limit); // a small flow
    assert.equal(q.nDropped, 1, `got ${q.nDropped} drops for the small flow's enqueue, want 1 (from the fat flow)`);
    assert.notEqual(q.droppedSlot[0], 100, 'the small flow lost its packet; want the fattest flow to lose one');
    assert.ok(q.portBytes(2) <= limit, `port bytes ${q.portBytes(2)}, want <= ${limit}`);
    assert.deepEqual(dropped, [0, 1, 2, 3], `got dropped ${dropped}, want the head of the GSO flow, oldest first`);
  });

  it('CoDel: no drop while the sojourn stays under target; drops after an interval above it, then faster', () => {
    const q = EgressQueues.create(SLOTS, PORTS);
    const out = new Int32Array(64);
    const target = 5;
    const interval = 100;
    // one packet in, one out, 1 ms in queue: never dropped
    for (let t = 0; t < 300; t++) {
      q.enqueue(3, t % SLOTS, 1500, 1, t, 0, 0, 0, BIG);
      q.enqueue(3, (t + 500) % SLOTS, 1500, 1, t, 0, 0, 0, BIG);
      q.dequeue(3, t + 1, 2, out, target, interval);
      assert.equal(q.nDropped, 0, `t=${t}: got ${q.nDropped} drops with a 1 ms sojourn, want 0`);
    }
    // standing queue: 400 packets stamped t=0, dequeued one per ms from t=50 on
    const q2 = EgressQueues.create(SLOTS, PORTS);
    for (let s = 0; s < 400; s++) q2.enqueue(3, s, 1500, 1, 0, 0, 0, 0, BIG);
    const dropTimes: number[] = [];
    for (let t = 50; t < 450 && q2.portPackets(3) > 0; t++) {
      q2.dequeue(3, t, 1, out, target, interval);
      for (let d = 0; d < q2.nDropped; d++) {
        assert.equal(q2.droppedWhy[d], EGRESS_DROP_CODEL);
        dropTimes.push(t);
      }
    }
    assert.ok(dropTimes.length >= 3, `got ${dropTimes.length} CoDel drops, want at least 3`);
    assert.ok((dropTimes[0] as number) >= 150, `first drop at ${dropTimes[0]} ms, want >= 150 (one interval after the sojourn first exceeded target at 50)`);
    const gap1 = (dropTimes[1] as number) - (dropTimes[0] as number);
    const gapLast = (dropTimes[dropTimes.length - 1] as number) - (dropTimes[dropTimes.length - 2] as number);
    assert.ok(gapLast < gap1, `drop gaps: first ${gap1} ms, last ${gapLast} ms; want them to shrink (interval/sqrt(count))`);
  });

  it('CoDel marks ECN-capable packets instead of dropping them', () => {
    const q = EgressQueues.create(SLOTS, PORTS);
    for (let s = 0; s < 300; s++) q.enqueue(4, s, 1500, 1, 0, 0, 0, 1, BIG);
    const out = new Int32Array(64);
    let marks = 0;
    let sent = 0;
    for (let t = 50; t < 400; t++) {
      const n = q.dequeue(4, t, 1, out, 5, 100);
      assert.equal(q.nDropped, 0, `t=${t}: got ${q.nDropped} drops of ECN-capable packets, want 0`);
      for (let j = 0; j < n; j++) if (q.outMark[j] === EGRESS_MARK_CE) marks++;
      sent += n;
    }
    assert.equal(sent, 300, `sent ${sent}, want all 300`);
    assert.ok(marks >= 3, `got ${marks} CE marks, want >= 3`);
  });

  it('keeps per-port counts exact and leaves the active list when a port runs empty', () => {
    const q = EgressQueues.create(SLOTS, PORTS);
    q.enqueue(5, 1, 100, 1, 0, 0, 0, 0, BIG);
    q.enqueue(6, 2, 200, 1, 0, 0, 0, 0, BIG);
    q.enqueue(5, 3, 300, 2, 0, 0, 0, 0, BIG);
    assert.equal(q.portBytes(5), 400);
    assert.equal(q.portPackets(5), 2);
    const act: number[] = [];
    for (let p = q.firstActive(); p >= 0; p = q.nextActive(p)) act.push(p);
    assert.deepEqual(act, [5, 6]);
    const out = new Int32Array(8);
    assert.equal(q.dequeue(5, 0, 8, out, BIG, BIG * 2), 2);
    const act2: number[] = [];
    for (let p = q.firstActive(); p >= 0; p = q.nextActive(p)) act2.push(p);
    assert.deepEqual(act2, [6], `active ports ${act2}, want [6]`);
    assert.equal(q.flushPort(6, new Int32Array(SLOTS)), 1);
    assert.equal(q.firstActive(), -1);
  });

  it('repair() after a crash keeps every reachable slot once and rebuilds consistent counts', () => {
    for (const seed of [5, 6, 7]) {
      const rnd = new Rand(seed);
      const q = EgressQueues.create(SLOTS, PORTS);
      let s = 0;
      for (; s < 600; s++) q.enqueue(rnd.int(PORTS), s, 100 + rnd.int(1400), rnd.int(BUCKETS * 4), 0, 0, 0, 0, BIG);
      // an adopted region (the restarted worker's view) sees the same queues
      const again = new EgressQueues(q.sab, SLOTS, PORTS);
      const intact = again.repair();
      let n = 0;
      for (const v of intact) n += v;
      assert.equal(n, 600, `seed ${seed}: intact repair kept ${n} slots, want 600`);
      // corrupt: a cycle in one chain and a wild pointer in another (a death mid-update)
      const words = new Int32Array(q.sab);
      const S_NEXT = (slot: number): number => 16 + slot * 5;
      words[S_NEXT(10)] = 3; // may create a cycle or a cross-link
      words[S_NEXT(20)] = 999999;
      const queued = again.repair();
      let total = 0;
      for (let p = 0; p < PORTS; p++) total += again.portPackets(p);
      let marked = 0;
      for (const v of queued) marked += v;
      assert.equal(total, marked, `seed ${seed}: counts ${total} vs marked ${marked}`);
      // every slot comes out exactly once
      const seen = new Set<number>();
      const out = new Int32Array(64);
      for (let p = 0; p < PORTS; p++) {
        for (let k = 0; k < 1000 && again.portPackets(p) > 0; k++) {
          const got = again.dequeue(p, 0, 64, out, BIG, BIG * 2);
          for (let j = 0; j < got; j++) {
            assert.ok(!seen.has(out[j]!), `seed ${seed}: slot ${out[j]} dequeued twice`);
            assert.equal(queued[out[j]!], 1, `slot ${out[j]} dequeued but not reported queued`);
            seen.add(out[j]!);
          }
        }
      }
      assert.equal(seen.size, marked, `seed ${seed}: dequeued ${seen.size}, want ${marked}`);
    }
  });
});
