import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LabelSet, formatLabel, parseLabel, securityLabels, isSecurityRelevant } from '../../src/control/labels.js';
import { isTunswitchError } from '../../src/control/errors.js';

test('parseLabel splits source, key and value', () => {
  const cases: [string, string, string, string][] = [
    ['k8s:app=web', 'k8s', 'app', 'web'],
    ['app=web', 'unspec', 'app', 'web'],
    ['reserved:host', 'reserved', 'host', ''],
    ['any:app=web', 'any', 'app', 'web'],
    ['container:io.x/y=1.2', 'container', 'io.x/y', '1.2'],
    ['cidr:10.0.0.0/8', 'cidr', '10.0.0.0/8', ''],
    ['cidr:2001:db8::/32', 'cidr', '2001:db8::/32', ''],
    ['app=a:b', 'unspec', 'app', 'a:b'],
    ['k8s:io.kubernetes.pod.namespace=default', 'k8s', 'io.kubernetes.pod.namespace', 'default'],
  ];
  for (const [text, source, key, value] of cases) {
    const l = parseLabel(text);
    assert.equal(l.source, source, `${text}: source got ${l.source}, want ${source}`);
    assert.equal(l.key, key, `${text}: key got ${l.key}, want ${key}`);
    assert.equal(l.value, value, `${text}: value got ${l.value}, want ${value}`);
    assert.equal(formatLabel(l), text, `format(${text}) got ${formatLabel(l)}, want ${text}`);
  }
});

test('parseLabel rejects malformed labels with ELABEL_INVALID', () => {
  for (const bad of ['k8:app=web', '=web', 'k8s:=x', 'app=has space', 'a;b=c', '']) {
    assert.throws(() => parseLabel(bad), (e: unknown) => isTunswitchError(e, 'ELABEL_INVALID'), `parseLabel(${JSON.stringify(bad)}) should throw ELABEL_INVALID`);
  }
});

test('LabelSet is sorted, canonical and order independent', () => {
  const a = LabelSet.from(['k8s:role=db', 'app=x', 'k8s:app=web']);
  const b = LabelSet.from(['k8s:app=web', 'k8s:role=db', 'app=x', 'k8s:app=web']);
  assert.equal(a.canonical, b.canonical, `got ${a.canonical}, want ${b.canonical}`);
  assert.equal(a.canonical, 'k8s:app=web;k8s:role=db;app=x');
  assert.equal(a.size, 3);
  assert.ok(a.has('app'), 'has(app) from any source');
  assert.ok(a.has('app', 'k8s') && a.has('app', 'unspec') && !a.has('app', 'container'), 'has(app, source)');
  assert.deepEqual(a.values('app').sort(), ['web', 'x']);
  assert.ok(LabelSet.parse(a.canonical).equals(a), 'parse(canonical) round-trips');
  assert.throws(() => LabelSet.from(['k8s:app=a', 'k8s:app=b']), (e: unknown) => isTunswitchError(e, 'ELABEL_INVALID'));
});

test('securityLabels drops per-pod and per-rollout labels only', () => {
  const cases: [string, boolean][] = [
    ['k8s:app=web', true],
    ['k8s:io.kubernetes.pod.namespace=default', true],
    ['k8s:io.cilium.k8s.namespace.labels.team=a', true],
    ['k8s:app.kubernetes.io/name=web', true],
    ['k8s:pod-template-hash=abc123', false],
    ['k8s:controller-revision-hash=55c9', false],
    ['k8s:io.kubernetes.pod.uid=1234', false],
    ['k8s:statefulset.kubernetes.io/pod-name=db-0', false],
    ['k8s:kubernetes.io/hostname=n1', false],
    ['container:annotation.foo=bar', false],
    ['reserved:host', true],
  ];
  for (const [text, want] of cases) {
    const got = isSecurityRelevant(parseLabel(text));
    assert.equal(got, want, `${text}: got ${got}, want ${want}`);
  }
  const s = securityLabels(LabelSet.from(cases.map((c) => c[0])));
  assert.equal(s.size, cases.filter((c) => c[1]).length, `kept ${s.size} labels, want ${cases.filter((c) => c[1]).length}`);
});
