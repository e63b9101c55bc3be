import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRunConfig } from '../../src/runtime/config.js';
import { gsoSlots, offloadFlagNames, offloadWanted } from '../../src/runtime/offload.js';

const BASE = 'name: rl\npool: { ipv4: 10.94.0.0/24, ipv6: "fd00:94::/64" }\n';

test('config: quotas default to 50% and accept 1-100', () => {
  const d = parseRunConfig(BASE, '/tmp/lab.yaml');
  assert.deepEqual(d.quotas, { conntrack: 50, fragments: 50 }, `default quotas got ${JSON.stringify(d.quotas)}`);
  const c = parseRunConfig(`${BASE}quotas: { conntrack: 100, fragments: 10 }\n`, '/tmp/lab.yaml');
  assert.deepEqual(c.quotas, { conntrack: 100, fragments: 10 }, `quotas got ${JSON.stringify(c.quotas)}`);
});

test('config: bad quotas name the key', () => {
  const cases: [string, RegExp][] = [
    ['quotas: { conntrack: 0 }', /^lab\.yaml: quotas\.conntrack: 0 must be an integer percent from 1 to 100/],
    ['quotas: { fragments: 101 }', /^lab\.yaml: quotas\.fragments: 101 must be an integer percent/],
    ['quotas: { fragments: 12.5 }', /^lab\.yaml: quotas\.fragments: 12\.5 must be an integer percent/],
    ['quotas: { ct: 5 }', /^lab\.yaml: quotas\.ct: unknown field \(known: conntrack, fragments\)/],
    ['quotas: 50', /^lab\.yaml: quotas: must be a mapping/],
  ];
  for (const [yaml, re] of cases) {
    assert.throws(() => parseRunConfig(`${BASE}${yaml}\n`, '/tmp/lab.yaml'), (e: Error & { code?: string }) => {
      assert.match(e.message, re, `${yaml}: got ${e.message}, want ${re}`);
      assert.equal(e.code, 'ECONFIG_INVALID', `${yaml}: code got ${e.code}`);
      return true;
    });
  }
});

test('config: node addresses are checked against the pool, the host port and each other', () => {
  const cases: [string, RegExp][] = [
    ['nodes: { a: { ipv6: "fd00:94::1" } }', /^lab\.yaml: nodes\.a\.ipv6: fd00:94::1 is the host port's address$/],
    ['nodes: { a: { ipv6: "2001:db8::5" } }', /^lab\.yaml: nodes\.a\.ipv6: 2001:db8::5 is outside the pool fd00:94::\/64$/],
    ['nodes: { a: { ipv6: "fe80::1" } }', /^lab\.yaml: nodes\.a\.ipv6: fe80::1 is a link-local address$/],
    ['nodes: { a: { ipv4: 10.94.0.0 } }', /^lab\.yaml: nodes\.a\.ipv4: 10\.94\.0\.0 is the network address/],
    ['nodes: { a: { ipv4: 10.94.0.255 } }', /^lab\.yaml: nodes\.a\.ipv4: 10\.94\.0\.255 is the broadcast address/],
    ['nodes: { a: { ipv4: 10.94.0.1 } }', /^lab\.yaml: nodes\.a\.ipv4: 10\.94\.0\.1 is the host port's address$/],
    ['nodes: { a: { ipv6: "fd00:94::7" }, b: { ipv6: "fd00:94:0::7" } }', /^lab\.yaml: nodes\.b\.ipv6: fd00:94:0::7 is used by node a$/],
    ['nodes: { a: { ipv4: 10.94.0.7 }, b: { ipv4: 10.94.0.7 } }', /^lab\.yaml: nodes\.b\.ipv4: 10\.94\.0\.7 is used by node a$/],
  ];
  for (const [yaml, re] of cases) {
    assert.throws(() => parseRunConfig(`${BASE}${yaml}\n`, '/tmp/lab.yaml'), (e: Error) => {
      assert.match(e.message, re, `${yaml}: got ${e.message}, want ${re}`);
      return true;
    }, `${yaml}: accepted, want refused`);
  }
  assert.doesNotThrow(() => parseRunConfig(`${BASE}nodes: { a: { ipv4: 10.94.0.7, ipv6: "fd00:94::7" } }\n`, '/tmp/lab.yaml'));
});

test('config: per-node offload overrides the switch-wide one and sizes the slots', () => {
  // [yaml, nodes' offload as parsed, gsoSlots]
  const cases: [string, Record<string, boolean | undefined>, boolean][] = [
    ['nodes: { a: {}, b: {} }', { a: undefined, b: undefined }, false],
    ['offload: true\nnodes: { a: {}, b: { offload: false } }', { a: undefined, b: false }, true],
    ['nodes: { a: { offload: true }, b: {} }', { a: true, b: undefined }, true],
    ['nodes: { a: { offload: false } }', { a: false }, false],
  ];
  for (const [yaml, want, slots] of cases) {
    const c = parseRunConfig(`${BASE}${yaml}\n`, '/tmp/lab.yaml');
    const got = Object.fromEntries(c.nodes.map((n) => [n.name, n.offload]));
    assert.deepEqual(got, want, `${yaml}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
    assert.equal(gsoSlots(c), slots, `${yaml}: gsoSlots got ${gsoSlots(c)}, want ${slots}`);
  }
});

test('config: node offload with an underlay is accepted (GSO is split for the tunnel)', () => {
  const c = parseRunConfig(`${BASE}kvstore: { url: "etcd://127.0.0.1:2379", nodeIp: 10.99.0.1 }\nnodes: { a: { offload: true } }\n`, '/tmp/lab.yaml');
  assert.deepEqual([c.underlay, c.nodes[0]?.offload, gsoSlots(c)], [{ ip: '10.99.0.1' }, true, true], `got ${JSON.stringify([c.underlay, c.nodes[0]?.offload, gsoSlots(c)])}`);
});

test('config: underlayUdpGso is off unless asked for', () => {
  const cases: [string, boolean][] = [['', false], ['underlayUdpGso: true\n', true], ['underlayUdpGso: false\n', false]];
  for (const [yaml, want] of cases) {
    const c = parseRunConfig(`${BASE}${yaml}`, '/tmp/lab.yaml');
    assert.equal(c.underlayUdpGso, want, `${JSON.stringify(yaml)}: underlayUdpGso got ${c.underlayUdpGso}, want ${want}`);
  }
});

test('config: a bad node offload or underlayUdpGso names the field', () => {
  const cases: [string, RegExp][] = [
    ['nodes: { a: { offload: "yes" } }', /^lab\.yaml: nodes\.a\.offload: "yes" must be true or false$/],
    ['underlayUdpGso: 1', /^lab\.yaml: underlayUdpGso: 1 must be true or false$/],
  ];
  for (const [yaml, re] of cases) {
    assert.throws(() => parseRunConfig(`${BASE}${yaml}\n`, '/tmp/lab.yaml'), (e: Error & { code?: string }) => {
      assert.match(e.message, re, `${yaml}: got ${e.message}, want ${re}`);
      assert.equal(e.code, 'ECONFIG_INVALID', `${yaml}: code got ${e.code}`);
      return true;
    });
  }
});

test('offload of a new port: the request, else the config; refused where it cannot work', () => {
  const small = parseRunConfig(`${BASE}nodes: { a: {} }\n`, '/tmp/lab.yaml');
  const big = parseRunConfig(`${BASE}offload: true\n`, '/tmp/lab.yaml');
  assert.equal(offloadWanted(small), false);
  assert.equal(offloadWanted(small, false), false);
  assert.equal(offloadWanted(big), true);
  assert.equal(offloadWanted(big, false), false);
  assert.throws(() => offloadWanted(small, true), /^TunswitchError: body\.offload: true needs a switch whose packet slots hold 64 KiB GSO packets|body\.offload: true needs a switch/);
  assert.deepEqual(offloadFlagNames(0), [], 'plain port');
  assert.deepEqual(offloadFlagNames(0x01 | 0x02 | 0x04 | 0x20 | 0x40), ['csum', 'tso4', 'tso6', 'uso4', 'uso6']);
});
