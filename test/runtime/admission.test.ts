/**
 * Admission past a shard's backlog bound (src/runtime/admission.ts): below the bound every
 * packet passes; past it only ports with few packets in flight pass, up to the hard bound;
 * counts follow took/freed and are rebuilt from the owner map after a crash recovery.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FAIR_INFLIGHT, HARD_BACKLOG, PortAdmission } from '../../src/runtime/admission.js';
import { MAX_RING_BACKLOG } from '../../src/runtime/shared.js';

test('admission: below the backlog bound all pass; past it a light port passes and a heavy one is dropped', () => {
  const a = new PortAdmission(4096);
  const flooder = 3;
  const light = 7;
  for (let s = 0; s < 600; s++) a.took(s, flooder);
  a.took(600, light);
  const cases: [string, boolean, boolean][] = [
    ['flooder, backlog below the bound', a.admit(flooder, MAX_RING_BACKLOG - 1), true],
    ['flooder, backlog at the bound', a.admit(flooder, MAX_RING_BACKLOG), false],
    ['light port, backlog at the bound', a.admit(light, MAX_RING_BACKLOG), true],
    ['light port, backlog just under the hard bound', a.admit(light, HARD_BACKLOG - 1), true],
    ['light port, backlog at the hard bound', a.admit(light, HARD_BACKLOG), false],
    ['a port with nothing in flight, at the bound', a.admit(9, MAX_RING_BACKLOG), true],
  ];
  for (const [name, got, want] of cases) assert.equal(got, want, `${name}: admitted got ${got}, want ${want}`);
});

test('admission: a port reaching FAIR_INFLIGHT stops passing the bound, and passes again when its slots come back', () => {
  const a = new PortAdmission(1024);
  const p = 12;
  for (let s = 0; s < FAIR_INFLIGHT - 1; s++) a.took(s, p);
  assert.equal(a.admit(p, MAX_RING_BACKLOG), true, `admitted with ${FAIR_INFLIGHT - 1} in flight`);
  a.took(FAIR_INFLIGHT - 1, p);
  assert.equal(a.admit(p, MAX_RING_BACKLOG), false, `admitted with ${FAIR_INFLIGHT} in flight, want dropped`);
  a.freed(0);
  assert.equal(a.inflight[p], FAIR_INFLIGHT - 1, `in flight after one came back: ${a.inflight[p]}`);
  assert.equal(a.admit(p, MAX_RING_BACKLOG), true, 'not admitted after a slot came back');
});

test('admission: recount() rebuilds the counts from the owner map after a recovery', () => {
  const a = new PortAdmission(16);
  const owner = new Int8Array(16).fill(-1);
  for (let s = 0; s < 10; s++) {
    a.took(s, s < 6 ? 1 : 2);
    owner[s] = 0;
  }
  // the recovery freed slots 0, 1 and 7 without freed() calls; slot 3 was resubmitted
  for (const s of [0, 1, 7]) owner[s] = -1;
  a.recount(owner);
  const cases: [string, number, number][] = [['port 1', a.inflight[1] as number, 4], ['port 2', a.inflight[2] as number, 3], ['port 0', a.inflight[0] as number, 0]];
  for (const [name, got, want] of cases) assert.equal(got, want, `${name} in flight got ${got}, want ${want}`);
});
