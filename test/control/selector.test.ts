import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rand } from '../helpers/rand.js';
import { LabelSet } from '../../src/control/labels.js';
import { IdentityAllocator } from '../../src/control/identity.js';
import { parsePrefix } from '../../src/control/cidr.js';
import { LabelSelector, SelectorCache, peerSelects, type PeerSelector, type Requirement } from '../../src/control/policy/selector.js';
import { randomLabels } from './support.js';

const req = (source: Requirement['source'], key: string, op: Requirement['op'], values: string[] = []): Requirement => ({ source, key, op, values });

test('selector source semantics', () => {
  const k8sApp = LabelSet.from(['k8s:app=web']);
  const ctrApp = LabelSet.from(['container:app=web']);
  const cases: [string, LabelSelector, LabelSet, boolean][] = [
    ['any:app matches k8s', new LabelSelector([req('any', 'app', 'In', ['web'])]), k8sApp, true],
    ['any:app matches container', new LabelSelector([req('any', 'app', 'In', ['web'])]), ctrApp, true],
    ['k8s:app matches k8s', new LabelSelector([req('k8s', 'app', 'In', ['web'])]), k8sApp, true],
    ['k8s:app does not match container', new LabelSelector([req('k8s', 'app', 'In', ['web'])]), ctrApp, false],
    ['NotIn with missing key', new LabelSelector([req('any', 'tier', 'NotIn', ['x'])]), k8sApp, true],
    ['NotIn with value', new LabelSelector([req('any', 'app', 'NotIn', ['web'])]), k8sApp, false],
    ['Exists', new LabelSelector([req('any', 'app', 'Exists')]), k8sApp, true],
    ['DoesNotExist', new LabelSelector([req('any', 'app', 'DoesNotExist')]), k8sApp, false],
    ['reserved key', new LabelSelector([req('reserved', 'host', 'In', [''])]), LabelSet.from(['reserved:host']), true],
    ['reserved key vs k8s label', new LabelSelector([req('reserved', 'host', 'In', [''])]), LabelSet.from(['k8s:host']), false],
    ['empty selects all', LabelSelector.ALL, ctrApp, true],
  ];
  for (const [name, sel, set, want] of cases) {
    const got = sel.matches(set);
    assert.equal(got, want, `${name}: ${sel.canonical} on ${set.canonical}: got ${got}, want ${want}`);
  }
  const a = new LabelSelector([req('any', 'b', 'In', ['2', '1']), req('k8s', 'a', 'Exists')]);
  const b = new LabelSelector([req('k8s', 'a', 'Exists'), req('any', 'b', 'In', ['1', '2', '1'])]);
  assert.equal(a.canonical, b.canonical, 'canonical form is order independent');
});

test('peer selectors: clusterOnly and CIDR with except', () => {
  const alloc = new IdentityAllocator();
  const web = alloc.allocate(['k8s:app=web']);
  const world = alloc.get(2)!;
  const host = alloc.get(1)!;
  const c8 = alloc.allocateCIDR('10.0.0.0/8');
  const c16 = alloc.allocateCIDR('10.1.0.0/16');
  const c24 = alloc.allocateCIDR('10.1.2.0/24');
  const v6 = alloc.allocateCIDR('2001:db8::/32');
  const all: PeerSelector = { kind: 'labels', selector: LabelSelector.ALL, clusterOnly: true };
  const cidr: PeerSelector = { kind: 'cidr', cidr: parsePrefix('10.0.0.0/8'), except: [parsePrefix('10.1.0.0/16')] };
  const zero: PeerSelector = { kind: 'cidr', cidr: parsePrefix('0.0.0.0/0'), except: [] };
  const cases: [string, PeerSelector, number, boolean][] = [
    ['{} selects workloads', all, web.id, true],
    ['{} skips world', all, world.id, false],
    ['{} skips host', all, host.id, false],
    ['{} skips CIDR', all, c8.id, false],
    ['cidr selects itself', cidr, c8.id, true],
    ['cidr skips except', cidr, c16.id, false],
    ['cidr skips inside except', cidr, c24.id, false],
    ['cidr skips other family', cidr, v6.id, false],
    ['cidr skips world', cidr, world.id, false],
    ['/0 selects world', zero, world.id, true],
    ['/0 selects v4 CIDR', zero, c24.id, true],
    ['/0 v4 skips v6 CIDR', zero, v6.id, false],
  ];
  for (const [name, p, id, want] of cases) {
    const got = peerSelects(p, alloc.get(id)!);
    assert.equal(got, want, `${name}: got ${got}, want ${want}`);
  }
});

test('selector cache follows identity changes incrementally (seeded)', () => {
  for (let seed = 1; seed <= 10; seed++) {
    const r = new Rand(seed);
    const alloc = new IdentityAllocator();
    const cache = new SelectorCache();
    for (const i of alloc.list()) cache.addIdentity(i);
    const sels: PeerSelector[] = [
      { kind: 'labels', selector: new LabelSelector([req('any', 'app', 'In', ['a'])]), clusterOnly: true },
      { kind: 'labels', selector: new LabelSelector([req('k8s', 'role', 'Exists')]), clusterOnly: true },
      { kind: 'labels', selector: new LabelSelector([req('any', 'team', 'DoesNotExist')]), clusterOnly: false },
      { kind: 'labels', selector: LabelSelector.ALL, clusterOnly: true },
    ];
    const keys = sels.map((s) => cache.acquire(s));
    alloc.subscribe((ch) => {
      for (const x of ch.removed) cache.removeIdentity(x.id);
      for (const x of ch.added) cache.addIdentity(x);
    });
    const live: number[] = [];
    for (let step = 0; step < 60; step++) {
      if (live.length > 0 && r.bool(0.4)) alloc.release(live.splice(r.int(live.length), 1)[0]!);
      else live.push(alloc.allocate(randomLabels(r)).id);
      sels.forEach((s, i) => {
        const want = alloc.list().filter((x) => peerSelects(s, x)).map((x) => x.id).sort((a, b) => a - b);
        const got = [...cache.selections(keys[i]!)].sort((a, b) => a - b);
        assert.deepEqual(got, want, `seed ${seed} step ${step} selector ${keys[i]}: got ${got}, want ${want}`);
      });
    }
  }
});
