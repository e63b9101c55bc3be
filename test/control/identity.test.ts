import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IdentityAllocator, type IdentityChange } from '../../src/control/identity.js';
import { RESERVED_IDENTITY, LOCAL_IDENTITY_FLAG } from '../../src/proto/identity.js';
import { LabelSet } from '../../src/control/labels.js';
import { isTunswitchError } from '../../src/control/errors.js';
import { Rand } from '../helpers/rand.js';
import { randomLabels } from './support.js';

test('reserved identities follow Cilium numbering', () => {
  const a = new IdentityAllocator();
  const want: [string, number][] = [
    ['host', 1],
    ['world', 2],
    ['unmanaged', 3],
    ['health', 4],
    ['init', 5],
    ['remote-node', 6],
    ['kube-apiserver', 7],
    ['ingress', 8],
  ];
  for (const [name, id] of want) {
    assert.equal(RESERVED_IDENTITY[name as keyof typeof RESERVED_IDENTITY], id);
    const got = a.get(id);
    assert.equal(got?.labels.canonical, `reserved:${name}`, `identity ${id}: got ${got?.labels.canonical}, want reserved:${name}`);
    assert.equal(a.allocate([`reserved:${name}`]).id, id, `allocate(reserved:${name})`);
  }
});

test('same labels give the same identity; refcounts release it', () => {
  const a = new IdentityAllocator();
  const changes: IdentityChange[] = [];
  a.subscribe((c) => changes.push(c));
  const x = a.allocate(['k8s:app=web', 'k8s:role=fe']);
  const y = a.allocate(LabelSet.from(['k8s:role=fe', 'k8s:app=web', 'k8s:pod-template-hash=123']));
  assert.ok(x.id >= 256, `got ${x.id}, want >= 256`);
  assert.equal(y.id, x.id, `got ${y.id}, want ${x.id} (non-security labels ignored)`);
  assert.equal(a.get(x.id)?.refs, 2);
  const z = a.allocate(['k8s:app=db']);
  assert.notEqual(z.id, x.id);
  assert.equal(changes.length, 2, `got ${changes.length} change events, want 2`);
  assert.equal(a.release(x.id), false);
  assert.equal(a.release(x.id), true);
  assert.equal(a.get(x.id), undefined);
  assert.throws(() => a.release(x.id), (e: unknown) => isTunswitchError(e, 'EIDENTITY_NOT_FOUND'));
  assert.throws(() => a.release(1), (e: unknown) => isTunswitchError(e, 'EINTERNAL'));
  assert.equal(changes.at(-1)?.removed[0]?.id, x.id);
  // The released number is remembered: the same labels come back to it.
  const w = a.allocate(['k8s:app=other']);
  assert.notEqual(w.id, x.id, 'a fresh label set does not take a remembered number');
  assert.equal(a.allocate(['k8s:app=web', 'k8s:role=fe']).id, x.id);
});

test('CIDR identities are local scope with cidr and world labels', () => {
  const a = new IdentityAllocator();
  const c = a.allocateCIDR('10.1.2.3/8');
  assert.ok(c.id > LOCAL_IDENTITY_FLAG && c.id < LOCAL_IDENTITY_FLAG * 2, `got ${c.id}, want bit 24 set`);
  assert.equal(c.prefix, '10.0.0.0/8');
  assert.equal(c.labels.canonical, 'cidr:10.0.0.0/8;reserved:world');
  assert.equal(a.allocateCIDR('10.0.0.0/8').id, c.id);
  const v6 = a.allocateCIDR('2001:DB8:0::/32');
  assert.equal(v6.prefix, '2001:db8::/32');
  assert.equal(a.lookupCIDR('2001:db8::/32')?.id, v6.id);
  assert.throws(() => a.allocateCIDR('10.0.0.0/33'), (e: unknown) => isTunswitchError(e, 'ECIDR_INVALID'));
});

test('snapshot/restore keeps numbers stable across restarts (seeded)', () => {
  for (let seed = 1; seed <= 20; seed++) {
    const r = new Rand(seed);
    const a = new IdentityAllocator();
    const sets: string[][] = [];
    for (let i = 0; i < 30; i++) sets.push(randomLabels(r));
    const ids = sets.map((s) => a.allocate(s).id);
    // Release some so the snapshot holds remembered (released) bindings too.
    for (let i = 0; i < 10; i++) {
      const id = r.pick(ids);
      if (a.get(id)) a.release(id);
    }
    const cidrs = ['10.0.0.0/8', '192.168.1.0/24', 'fd00::/8'].map((p) => [p, a.allocateCIDR(p).id] as const);
    const snap = JSON.parse(JSON.stringify(a.snapshot()));
    const b = new IdentityAllocator();
    b.restore(snap);
    // Allocate in a different order; numbers must match.
    const order = sets.map((_, i) => i).reverse();
    for (const i of order) {
      const got = b.allocate(sets[i] as string[]).id;
      assert.equal(got, ids[i], `seed ${seed}: labels ${(sets[i] as string[]).join(',')}: got ${got}, want ${ids[i]}`);
    }
    for (const [p, id] of cidrs) assert.equal(b.allocateCIDR(p).id, id, `seed ${seed}: cidr ${p}`);
    const fresh = b.allocate(['k8s:app=never-seen-before']).id;
    assert.ok(!ids.includes(fresh), `seed ${seed}: new labels got a remembered number ${fresh}`);
  }
});

test('restore rejects malformed snapshots with ESTATE_INVALID', () => {
  const bad: unknown[] = [null, 5, { version: 2, workload: [], cidr: [] }, { version: 1, workload: [[5, 'k8s:a=b']], cidr: [] }, { version: 1, workload: [[300, 'k8:a=b']], cidr: [] }, { version: 1, workload: [], cidr: [[300, '10.0.0.0/8']] }, { version: 1, workload: [[300, 'a=b'], [300, 'a=c']], cidr: [] }];
  for (const b of bad) {
    assert.throws(() => new IdentityAllocator().restore(b), (e: unknown) => isTunswitchError(e, 'ESTATE_INVALID'), `restore(${JSON.stringify(b)}) should throw ESTATE_INVALID`);
  }
});

test('list and lookupByLabels reflect live identities', () => {
  const a = new IdentityAllocator();
  const x = a.allocate(['k8s:app=a']);
  const ids = a.list().map((i) => i.id);
  assert.deepEqual(ids, [1, 2, 3, 4, 5, 6, 7, 8, x.id]);
  assert.equal(a.lookupByLabels(['k8s:app=a'])?.id, x.id);
  assert.equal(a.lookupByLabels(['k8s:app=b']), undefined);
});
