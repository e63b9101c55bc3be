import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PublishControl, WriteLog, sharedPair } from '../../src/tables/publish.js';
import { SharedHash, SharedHashWriter } from '../../src/tables/hash.js';
import { Rand } from '../helpers/rand.js';

function makeTable(cap: number) {
  const ctl = PublishControl.create();
  const log = new WriteLog(ctl);
  const table = new SharedHash(2, 1, cap, sharedPair(SharedHash.words(2, 1, cap)));
  const writer = new SharedHashWriter(table, log);
  return { ctl, log, table, writer };
}

function readerGet(table: SharedHash, ctl: PublishControl, k0: number, k1: number): number {
  const side = ctl.enter(0);
  table.useSide(side);
  table.key[0] = k0;
  table.key[1] = k1;
  const b = table.find();
  const v = b < 0 ? -1 : table.value(b, 0);
  ctl.leave(0);
  return v;
}

test('SharedHash agrees with a Map on seeded random churn, on both sides', () => {
  for (const seed of [1, 2, 3]) {
    const r = new Rand(seed);
    const { ctl, log, table, writer } = makeTable(256);
    const model = new Map<string, number>();
    for (let step = 0; step < 20000; step++) {
      const k0 = r.int(300);
      const k1 = r.int(3);
      const key = `${k0}/${k1}`;
      if (r.bool(0.55) && model.size < 200) {
        const v = r.u32();
        writer.set([k0, k1], [v]);
        model.set(key, v);
      } else {
        assert.equal(writer.delete([k0, k1]), model.delete(key), `seed ${seed} step ${step}: delete ${key}`);
      }
      if (r.bool(0.2)) log.commit();
      if (step % 97 === 0) {
        log.commit();
        // Both sides must now agree with the model.
        for (let a = 0; a < 300; a += 7) {
          for (let b = 0; b < 3; b++) {
            const want = model.get(`${a}/${b}`) ?? -1;
            const got = readerGet(table, ctl, a, b);
            assert.equal(got, want, `seed ${seed} step ${step}: key ${a}/${b} got ${got}, want ${want}`);
          }
        }
        log.commit();
        for (let a = 1; a < 300; a += 11) {
          const want = model.get(`${a}/1`) ?? -1;
          assert.equal(readerGet(table, ctl, a, 1), want, `seed ${seed} other side key ${a}/1`);
        }
      }
    }
    assert.equal(writer.size, model.size, `size got ${writer.size}, want ${model.size}`);
  }
});

test('readers keep the side they entered until they leave; the writer never writes it', () => {
  const { ctl, log, table, writer } = makeTable(16);
  writer.set([1, 1], [10]);
  log.commit();
  const side = ctl.enter(3);
  table.useSide(side);
  // A publish in progress on the other side must not change what this reader sees.
  writer.set([1, 1], [20]);
  table.key[0] = 1;
  table.key[1] = 1;
  assert.equal(table.value(table.find(), 0), 10);
  ctl.leave(3);
  log.commit();
  assert.equal(readerGet(table, ctl, 1, 1), 20);
});

test('flip throws when a reader never leaves the old side', { timeout: 10000 }, () => {
  const ctl = PublishControl.create();
  ctl.enter(5); // never leaves
  assert.throws(() => ctl.flip(), /reader 5 did not leave/);
  ctl.resetReader(5);
});

test('a full table refuses inserts with a clear error', () => {
  const { writer } = makeTable(8);
  for (let i = 0; i < 7; i++) writer.set([i, 0], [i]);
  assert.throws(() => writer.set([100, 0], [1]), /table full \(capacity 8\)/);
});
