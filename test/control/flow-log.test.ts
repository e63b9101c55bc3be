/** The flow log's ring against a plain array model, on seeded random pushes and reads. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FlowLog } from '../../src/control/flow-log.js';
import type { FlowEvent } from '../../src/api/types.js';
import { Rand } from '../helpers/rand.js';

const ev = (i: number): FlowEvent => ({ length: i }) as unknown as FlowEvent;

test('recent(n) matches the last n of every event pushed, across wrap-arounds', () => {
  for (const cap of [1, 3, 16]) {
    const r = new Rand(cap);
    const log = new FlowLog(cap);
    const model: FlowEvent[] = [];
    const seen: number[] = [];
    const unsub = log.subscribe((e) => seen.push(e.length));
    for (let i = 0; i < 200; i++) {
      const e = ev(i);
      log.push(e);
      model.push(e);
      const n = r.range(0, cap + 2);
      const want = model.slice(Math.max(0, model.length - Math.min(n, cap)));
      const got = log.recent(n);
      assert.deepEqual(got.map((x) => x.length), want.map((x) => x.length), `cap ${cap} after ${i + 1} pushes, recent(${n})`);
    }
    assert.equal(log.size, cap, `cap ${cap}: got size ${log.size}`);
    assert.equal(seen.length, 200, `cap ${cap}: subscriber got ${seen.length} events, want 200`);
    unsub();
    log.push(ev(999));
    assert.equal(seen.length, 200, 'an unsubscribed function still got an event');
  }
});
