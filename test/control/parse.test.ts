import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodePolicyBytes, firstInvalidUtf8, parsePolicyFile } from '../../src/control/policy/parse.js';
import { isTunswitchError, TunswitchError } from '../../src/control/errors.js';
import type { Policy } from '../../src/control/policy/types.js';
import { fixture, fixtureNames } from './support.js';

function parseFixture(name: string): Policy[] {
  return parsePolicyFile(fixture(name), name);
}

test('every fixture parses', () => {
  const want: Record<string, number> = {
    'any-protocol.yaml': 1,
    'ccnp.yaml': 1,
    'cidr-except.yaml': 1,
    'default-deny-all.yaml': 1,
    'default-deny-off.yaml': 1,
    'deny.yaml': 2,
    'entities.json': 1,
    'icmp.yaml': 1,
    'k8s-networkpolicy.yaml': 1,
    'l3-from-endpoints.yaml': 1,
    'l3-l4.yaml': 1,
    'l4-to-ports.yaml': 1,
    'list.yaml': 3,
    'match-expressions.yaml': 1,
    'port-range.yaml': 1,
  };
  assert.deepEqual(fixtureNames(), Object.keys(want).sort(), 'fixture list');
  for (const name of fixtureNames()) {
    const got = parseFixture(name).length;
    assert.equal(got, want[name], `${name}: got ${got} policies, want ${want[name]}`);
  }
});

test('fixtures parse to the expected internal form', () => {
  const l3l4 = parseFixture('l3-l4.yaml')[0] as Policy;
  const r = l3l4.rules[0]!;
  assert.equal(r.subject.canonical, '{any:class in (deathstar), any:org in (empire)}');
  assert.deepEqual(r.ingress[0]!.ports, [{ protocol: 'TCP', port: 80, endPort: 80 }]);
  assert.equal(r.hasIngress && !r.hasEgress, true, 'ingress only');

  const any = parseFixture('any-protocol.yaml')[0]!.rules[0]!;
  assert.deepEqual(any.egress[0]!.ports, [{ protocol: 'ANY', port: 53, endPort: 53 }]);
  const peer = any.egress[0]!.peers![0]!;
  assert.ok(peer.kind === 'selector' && peer.selector.kind === 'labels' && peer.selector.selector.canonical === '{k8s:k8s-app in (kube-dns)}', 'k8s: source kept in selector key');

  const icmp = parseFixture('icmp.yaml')[0]!.rules[0]!;
  assert.deepEqual(icmp.egress[0]!.ports, [
    { protocol: 'ICMP', port: 8, endPort: 8 },
    { protocol: 'ICMPv6', port: 128, endPort: 128 },
  ]);
  assert.deepEqual(icmp.ingress[0]!.ports, [{ protocol: 'ICMP', port: 8, endPort: 8 }]);

  const range = parseFixture('port-range.yaml')[0]!.rules[0]!;
  assert.deepEqual(range.egress[0]!.ports, [{ protocol: 'TCP', port: 8080, endPort: 8090 }]);

  const off = parseFixture('default-deny-off.yaml')[0]!.rules[0]!;
  assert.equal(off.defaultDenyIngress, false);
  assert.equal(off.defaultDenyEgress, false);
  assert.equal(off.hasIngress, true, 'an ingressDeny part counts as ingress');

  const lock = parseFixture('default-deny-all.yaml')[0]!.rules[0]!;
  assert.deepEqual(lock.ingress, [{ peers: null, ports: null }]);

  const np = parseFixture('k8s-networkpolicy.yaml')[0]!;
  assert.equal(np.kind, 'NetworkPolicy');
  const nr = np.rules[0]!;
  assert.ok(nr.hasIngress && nr.hasEgress);
  assert.equal(nr.ingress[0]!.peers!.length, 2);
  assert.deepEqual(nr.egress[0]!.ports, [{ protocol: 'TCP', port: 32000, endPort: 32768 }]);

  const ccnp = parseFixture('ccnp.yaml')[0]!;
  assert.equal(ccnp.kind, 'CiliumClusterwideNetworkPolicy');
  assert.equal(ccnp.rules.length, 2);
  assert.deepEqual(ccnp.rules.map((x) => x.index), [0, 1]);

  const list = parseFixture('list.yaml');
  assert.deepEqual(list.map((p) => p.key), ['CiliumNetworkPolicy//a', 'CiliumNetworkPolicy/team-b/b', 'CiliumNetworkPolicy//c']);
  const b = list[1]!.rules[0]!;
  assert.equal(b.subject.canonical, '{any:app in (b), k8s:io.kubernetes.pod.namespace in (team-b)}', 'namespaced subject');
  const bp = b.egress[0]!.peers![0]!;
  assert.ok(bp.kind === 'selector' && bp.selector.kind === 'labels' && bp.selector.clusterOnly && bp.selector.selector.canonical === '{k8s:io.kubernetes.pod.namespace in (team-b)}', 'toEndpoints [{}] limited to the namespace');

  const cidr = parseFixture('cidr-except.yaml')[0]!.rules[0]!;
  const set = cidr.egress[1]!.peers!;
  assert.ok(set[0]!.kind === 'selector' && set[0]!.selector.kind === 'cidr' && set[0]!.selector.except[0]!.text === '10.96.0.0/12');
});

test('JSON arrays and multi-document files are accepted', () => {
  const json = JSON.stringify([
    { apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'x' }, spec: { endpointSelector: {}, ingress: [{}] } },
    { apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'y' }, spec: { endpointSelector: {}, egress: [{}] } },
  ]);
  assert.deepEqual(parsePolicyFile(json, 'a.json').map((p) => p.name), ['x', 'y']);
  assert.deepEqual(parsePolicyFile('', 'empty.yaml'), []);
});

const BASE = (spec: string) => `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: p
spec:
${spec
  .split('\n')
  .map((l) => '  ' + l)
  .join('\n')}
`;
const EP = 'endpointSelector: {matchLabels: {app: web}}\n';

const BAD: { name: string; text: string; want: string }[] = [
  { name: 'port too large', text: BASE(EP + 'ingress:\n- toPorts:\n  - ports:\n    - {port: "70000", protocol: TCP}'), want: 'policy "p" spec.ingress[0].toPorts[0].ports[0].port: "70000" is not a port (1-65535)' },
  { name: 'negative port', text: BASE(EP + 'ingress:\n- toPorts:\n  - ports:\n    - {port: -1}'), want: 'spec.ingress[0].toPorts[0].ports[0].port: -1 is not a port' },
  { name: 'bad port name', text: BASE(EP + 'ingress:\n- toPorts:\n  - ports:\n    - {port: Http_x}'), want: 'spec.ingress[0].toPorts[0].ports[0].port: "Http_x" is not a port (1-65535) or a port name' },
  { name: 'named port with endPort', text: BASE(EP + 'ingress:\n- toPorts:\n  - ports:\n    - {port: http, endPort: 90}'), want: 'spec.ingress[0].toPorts[0].ports[0].endPort: cannot be used with a named port' },
  { name: 'missing port', text: BASE(EP + 'ingress:\n- toPorts:\n  - ports:\n    - {protocol: TCP}'), want: 'spec.ingress[0].toPorts[0].ports[0].port: is required' },
  { name: 'endPort below port', text: BASE(EP + 'ingress:\n- toPorts:\n  - ports:\n    - {port: "80", endPort: 79}'), want: 'spec.ingress[0].toPorts[0].ports[0].endPort: 79 is below port 80' },
  { name: 'endPort too large', text: BASE(EP + 'ingress:\n- toPorts:\n  - ports:\n    - {port: "80", endPort: 65536}'), want: 'spec.ingress[0].toPorts[0].ports[0].endPort: 65536 is not a port' },
  { name: 'bad protocol', text: BASE(EP + 'egress:\n- toPorts:\n  - ports:\n    - {port: "80", protocol: ICMP}'), want: 'spec.egress[0].toPorts[0].ports[0].protocol: "ICMP" is not a protocol' },
  { name: 'L7 rules', text: BASE(EP + 'ingress:\n- toPorts:\n  - ports:\n    - {port: "80", protocol: TCP}\n    rules:\n      http:\n      - {method: GET}'), want: 'spec.ingress[0].toPorts[0].rules: L7 rules are not supported' },
  { name: 'TLS', text: BASE(EP + 'egress:\n- toPorts:\n  - ports: [{port: "443"}]\n    terminatingTLS: {secret: {name: x}}'), want: 'spec.egress[0].toPorts[0].terminatingTLS: terminatingTLS is not supported' },
  { name: 'unknown toPorts field', text: BASE(EP + 'egress:\n- toPorts:\n  - port: [{port: "443"}]'), want: 'spec.egress[0].toPorts[0].port: unknown field' },
  { name: 'bad CIDR', text: BASE(EP + 'ingress:\n- fromCIDR: [10.0.0.0/33]'), want: 'spec.ingress[0].fromCIDR[0]: "10.0.0.0/33" is not a CIDR' },
  { name: 'bad IPv6 CIDR', text: BASE(EP + 'egress:\n- toCIDR: ["2001:db8:::/32"]'), want: 'spec.egress[0].toCIDR[0]: "2001:db8:::/32" is not a CIDR' },
  { name: 'except outside', text: BASE(EP + 'egress:\n- toCIDRSet:\n  - {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}'), want: 'spec.egress[0].toCIDRSet[0].except[0]: "11.0.0.0/16" is not inside cidr 10.0.0.0/8' },
  { name: 'except other family', text: BASE(EP + 'egress:\n- toCIDRSet:\n  - {cidr: 10.0.0.0/8, except: ["::/64"]}'), want: 'spec.egress[0].toCIDRSet[0].except[0]: "::/64" is not inside' },
  { name: 'cidrSet without cidr', text: BASE(EP + 'egress:\n- toCIDRSet:\n  - {except: [10.0.0.0/16]}'), want: 'spec.egress[0].toCIDRSet[0].cidr: is required' },
  { name: 'cidrGroupRef', text: BASE(EP + 'egress:\n- toCIDRSet:\n  - {cidrGroupRef: g}'), want: 'spec.egress[0].toCIDRSet[0].cidrGroupRef: cidrGroupRef is not supported' },
  { name: 'bad entity', text: BASE(EP + 'ingress:\n- fromEntities: [planet]'), want: 'spec.ingress[0].fromEntities[0]: "planet" is not an entity' },
  { name: 'world-ipv4', text: BASE(EP + 'egress:\n- toEntities: [world-ipv4]'), want: 'spec.egress[0].toEntities[0]: entity "world-ipv4" is not supported' },
  { name: 'icmp type too large', text: BASE(EP + 'egress:\n- icmps:\n  - fields:\n    - {type: 256}'), want: 'spec.egress[0].icmps[0].fields[0].type: 256 is not an ICMP type (0-255 or a name)' },
  { name: 'icmp type name', text: BASE(EP + 'egress:\n- icmps:\n  - fields:\n    - {type: PacketTooBig}'), want: 'spec.egress[0].icmps[0].fields[0].type: "PacketTooBig" is not an IPv4 ICMP type name' },
  { name: 'icmp family', text: BASE(EP + 'egress:\n- icmps:\n  - fields:\n    - {type: 8, family: IPv5}'), want: 'spec.egress[0].icmps[0].fields[0].family: "IPv5" is not a family' },
  { name: 'icmp missing type', text: BASE(EP + 'egress:\n- icmps:\n  - fields:\n    - {family: IPv4}'), want: 'spec.egress[0].icmps[0].fields[0].type: is required' },
  { name: 'icmps and toPorts', text: BASE(EP + 'egress:\n- icmps: [{fields: [{type: 8}]}]\n  toPorts: [{ports: [{port: "80"}]}]'), want: 'spec.egress[0]: icmps and toPorts cannot be in one rule' },
  { name: 'unknown spec field', text: BASE(EP + 'ingres: []'), want: 'spec.ingres: unknown field' },
  { name: 'unknown rule field', text: BASE(EP + 'ingress:\n- fromEndpoint: [{}]'), want: 'spec.ingress[0].fromEndpoint: unknown field' },
  { name: 'egress field on ingress', text: BASE(EP + 'ingress:\n- toEndpoints: [{}]'), want: 'spec.ingress[0].toEndpoints: unknown field' },
  { name: 'unknown selector field', text: BASE('endpointSelector: {matchLabel: {app: web}}'), want: 'spec.endpointSelector.matchLabel: unknown field' },
  { name: 'bad operator', text: BASE('endpointSelector:\n  matchExpressions:\n  - {key: app, operator: Equals, values: [a]}'), want: 'spec.endpointSelector.matchExpressions[0].operator: "Equals" is not an operator' },
  { name: 'In without values', text: BASE('endpointSelector:\n  matchExpressions:\n  - {key: app, operator: In}'), want: 'spec.endpointSelector.matchExpressions[0].values: must not be empty for operator In' },
  { name: 'Exists with values', text: BASE('endpointSelector:\n  matchExpressions:\n  - {key: app, operator: Exists, values: [a]}'), want: 'spec.endpointSelector.matchExpressions[0].values: must be empty for operator Exists' },
  { name: 'expression without key', text: BASE('endpointSelector:\n  matchExpressions:\n  - {operator: Exists}'), want: 'spec.endpointSelector.matchExpressions[0].key: is required' },
  { name: 'unknown label source', text: BASE('endpointSelector: {matchLabels: {"k9s:app": web}}'), want: 'spec.endpointSelector.matchLabels["k9s:app"]: label "k9s:app": unknown source "k9s"' },
  { name: 'label value not a string', text: BASE('endpointSelector: {matchLabels: {tier: 1}}'), want: 'spec.endpointSelector.matchLabels["tier"]: 1 is not a string' },
  { name: 'peer selector error', text: BASE(EP + 'ingress:\n- fromEndpoints:\n  - matchLabels: {app: [a]}'), want: 'spec.ingress[0].fromEndpoints[0].matchLabels["app"]: a list is not a string' },
  { name: 'nodeSelector', text: BASE('nodeSelector: {}'), want: 'spec.nodeSelector: nodeSelector is not supported' },
  { name: 'no endpointSelector', text: BASE('ingress: [{}]'), want: 'spec.endpointSelector: is required' },
  { name: 'enableDefaultDeny not bool', text: BASE(EP + 'enableDefaultDeny: {ingress: "no"}'), want: 'spec.enableDefaultDeny.ingress: "no" is not true or false' },
  { name: 'enableDefaultDeny unknown', text: BASE(EP + 'enableDefaultDeny: {both: true}'), want: 'spec.enableDefaultDeny.both: unknown field' },
  { name: 'combined L3', text: BASE(EP + 'ingress:\n- fromEndpoints: [{}]\n  fromCIDR: [10.0.0.0/8]'), want: 'spec.ingress[0]: combining fromEndpoints and fromCIDR in one rule is not supported' },
  { name: 'toFQDNs', text: BASE(EP + 'egress:\n- toFQDNs: [{matchName: x.com}]'), want: 'spec.egress[0].toFQDNs: toFQDNs is not supported' },
  { name: 'fromRequires', text: BASE(EP + 'ingress:\n- fromRequires: [{}]'), want: 'spec.ingress[0].fromRequires: fromRequires is not supported' },
  { name: 'ingress not a list', text: BASE(EP + 'ingress: {fromEndpoints: []}'), want: 'spec.ingress: an object is not a list' },
  { name: 'description not a string', text: BASE(EP + 'description: 5'), want: 'spec.description: 5 is not a string' },
  { name: 'specs path', text: BASE(EP).replace('spec:\n', 'specs:\n- endpointSelector: {}\n- ').replace('  endpointSelector: {matchLabels', 'endpointSelector: {matchLabels') + '  ingress:\n  - fromCIDR: [bad]\n', want: 'specs[1].ingress[0].fromCIDR[0]: "bad" is not a CIDR' },
  { name: 'no spec', text: 'apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\n', want: 'policy "p" spec: is required' },
  { name: 'no name', text: 'apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {}\nspec: {endpointSelector: {}}\n', want: 'document 1: metadata.name: is required' },
  { name: 'bad name', text: 'apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: Bad_Name}\nspec: {endpointSelector: {}}\n', want: 'document 1: metadata.name: "Bad_Name" is not a valid name' },
  { name: 'unknown kind', text: 'apiVersion: cilium.io/v2\nkind: CiliumPolicy\nmetadata: {name: p}\n', want: 'document 1: kind: "CiliumPolicy" is not a policy kind' },
  { name: 'wrong apiVersion', text: 'apiVersion: cilium.io/v1\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\n', want: 'document 1: apiVersion: "cilium.io/v1" is not the apiVersion of CiliumNetworkPolicy' },
  { name: 'unknown top-level field', text: BASE(EP) + 'extra: 1\n', want: 'policy "p" extra: unknown field' },
  { name: 'ccnp namespace', text: 'apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {endpointSelector: {}}\n', want: 'metadata.namespace: a clusterwide policy has no namespace' },
  { name: 'second document bad', text: BASE(EP) + '---\n' + BASE('endpointSelector: 5').replace('name: p', 'name: q'), want: 'policy "q" spec.endpointSelector: 5 is not an object' },
  { name: 'list item bad', text: 'apiVersion: v1\nkind: List\nitems:\n- apiVersion: cilium.io/v2\n  kind: Nope\n', want: 'document 1: items[0].kind: "Nope" is not a policy kind' },
  { name: 'duplicate policy', text: BASE(EP) + '---\n' + BASE(EP), want: 'policy "p" is defined twice' },
  { name: 'invalid YAML', text: 'apiVersion: [unclosed\n', want: 'document 1: is not valid YAML or JSON' },
  { name: 'np named port', text: 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  podSelector: {}\n  ingress:\n  - ports: [{port: http, endPort: 90}]\n', want: 'spec.ingress[0].ports[0].endPort: cannot be used with a named port' },
  { name: 'np ipBlock with podSelector', text: 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]\n', want: 'spec.ingress[0].from[0]: ipBlock cannot be combined' },
  { name: 'np policy type', text: 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  podSelector: {}\n  policyTypes: [Inbound]\n', want: 'spec.policyTypes[0]: "Inbound" is not a policy type' },
  { name: 'np protocol case', text: 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  podSelector: {}\n  egress:\n  - ports: [{port: 80, protocol: tcp}]\n', want: 'spec.egress[0].ports[0].protocol: "tcp" is not a protocol' },
  { name: 'np no podSelector', text: 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {}\n', want: 'spec.podSelector: is required' },
  { name: 'np empty peer', text: 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  podSelector: {}\n  ingress:\n  - from: [{}]\n', want: 'spec.ingress[0].from[0]: must have podSelector, namespaceSelector or ipBlock' },
];

test('bad input names the exact path (EPOLICY_INVALID, all or nothing)', () => {
  for (const c of BAD) {
    let err: unknown = null;
    let got: Policy[] | null = null;
    try {
      got = parsePolicyFile(c.text, 'bad.yaml');
    } catch (e) {
      err = e;
    }
    assert.ok(err !== null, `${c.name}: got ${got?.length} policies, want an error`);
    assert.ok(isTunswitchError(err, 'EPOLICY_INVALID'), `${c.name}: got ${String(err)}, want TunswitchError EPOLICY_INVALID`);
    const msg = (err as TunswitchError).message;
    assert.ok(msg.startsWith('bad.yaml: '), `${c.name}: got ${JSON.stringify(msg)}, want it to start with the file name`);
    assert.ok(msg.includes(c.want), `${c.name}: got ${JSON.stringify(msg)}, want it to contain ${JSON.stringify(c.want)}`);
  }
});

test('the documented message format, exactly', () => {
  const text = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: allow-web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - toPorts:
    - ports:
      - port: "70000"
`;
  assert.throws(() => parsePolicyFile(text, 'web.yaml'), {
    message: 'web.yaml: policy "allow-web" spec.ingress[0].toPorts[0].ports[0].port: "70000" is not a port (1-65535)',
  });
});

const CNP_PORTS = (ports: string): string => `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: p }
spec:
  endpointSelector: { matchLabels: { app: a } }
  ingress: [ { toPorts: [ { ports: [ ${ports} ] } ] } ]
`;

test('port 0: every port on its own, refused with an endPort (it would silently mean every port)', () => {
  const all = parsePolicyFile(CNP_PORTS('{ port: "0", protocol: TCP }'), 'p.yaml');
  const spec = JSON.stringify(all[0]?.rules[0]);
  assert.match(spec, /"port":0,"endPort":0/, `port "0" got ${spec}, want the every-port wildcard`);
  assert.throws(() => parsePolicyFile(CNP_PORTS('{ port: "0", endPort: 100, protocol: TCP }'), 'p.yaml'), {
    message: /^p\.yaml: policy "p" spec\.ingress\[0\]\.toPorts\[0\]\.ports\[0\]\.endPort: 100 needs a port of 1 or more: port "0" means every port and takes no endPort$/,
  });
  const range = parsePolicyFile(CNP_PORTS('{ port: "1", endPort: 100, protocol: TCP }'), 'p.yaml');
  assert.match(JSON.stringify(range[0]?.rules[0]), /"port":1,"endPort":100/);
});

test('hostile YAML: alias bombs and deep nesting are EPOLICY_INVALID (4xx), not internal errors', () => {
  const bomb = 'a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n';
  const cases: [string, string, RegExp][] = [
    ['alias bomb', bomb, /^bomb\.yaml: document 1: expands aliases too often/],
    ['deep flow nesting', `${'['.repeat(100)}${']'.repeat(100)}`, /nests too deeply \(more than 64 levels\)/],
    ['absurd nesting', '['.repeat(20000), /^bomb\.yaml: (document 1: )?is not valid YAML or JSON/],
  ];
  for (const [name, text, re] of cases) {
    assert.throws(() => parsePolicyFile(text, 'bomb.yaml'), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'EPOLICY_INVALID', `${name}: code got ${e.code} (${e.message}), want EPOLICY_INVALID`);
      assert.match(e.message, re, `${name}: got ${e.message}`);
      return true;
    });
  }
});

test('non-UTF-8 policy bytes are refused with the byte offset', () => {
  const ok = Buffer.from(CNP_PORTS('{ port: "80" }'));
  assert.equal(decodePolicyBytes(ok, 'p.yaml').length, ok.length);
  const cases: [string, number[], number][] = [
    ['lone continuation', [0x61, 0x80, 0x62], 1],
    ['Latin-1 é', [0x61, 0x62, 0xe9, 0x20], 2],
    ['overlong', [0xc0, 0xaf], 0],
    ['surrogate', [0x20, 0xed, 0xa0, 0x80], 1],
    ['truncated at the end', [0x61, 0xe2, 0x82], 1],
  ];
  for (const [name, bytes, off] of cases) {
    assert.equal(firstInvalidUtf8(Uint8Array.from(bytes)), off, `${name}: offset got ${firstInvalidUtf8(Uint8Array.from(bytes))}, want ${off}`);
    assert.throws(() => decodePolicyBytes(Uint8Array.from(bytes), 'p.yaml'), { message: new RegExp(`^p\\.yaml: is not UTF-8: invalid byte 0x[0-9a-f]{2} at byte offset ${off}$`) }, name);
  }
  assert.equal(firstInvalidUtf8(Buffer.from('héllo ✓ 😀')), -1, 'valid UTF-8 flagged');
});
test('accepted as Cilium\'s CRD schema accepts it: description, reserved: and reserved. keys, specs, authentication disabled', () => {
  const text = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
description: "L3 policy from Cilium's examples"
metadata: {name: p, namespace: x}
specs:
- description: first
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {"reserved:host": ""}}, {matchLabels: {"reserved.init": ""}}]
    authentication: {mode: disabled}
- endpointSelector: {matchLabels: {"reserved.init": ""}}
  egress:
  - toEntities: [world]
`;
  const [p] = parsePolicyFile(text, 'ok.yaml');
  assert.equal(p?.rules.length, 2, `rules got ${p?.rules.length}, want 2`);
  const peers = p!.rules[0]!.ingress[0]!.peers!.map((x) => (x.kind === 'selector' && x.selector.kind === 'labels' ? `${x.selector.clusterOnly}${x.selector.selector.canonical}` : '?'));
  assert.deepEqual(peers, ['false{reserved:host in ()}', 'false{reserved:init in ()}'], `peers got ${JSON.stringify(peers)}`);
  assert.equal(p!.rules[1]!.subject.canonical, '{k8s:io.kubernetes.pod.namespace in (x), reserved:init in ()}');
});

test('refused with path and reason: an unknown reserved name, authentication that cannot be enforced', () => {
  const cases: { text: string; want: string }[] = [
    { text: BASE(EP + 'ingress:\n- fromEndpoints: [{matchLabels: {"reserved:hots": ""}}]'), want: 'spec.ingress[0].fromEndpoints[0].matchLabels["reserved:hots"]: "reserved:hots" is not a reserved identity' },
    { text: BASE('endpointSelector: {matchLabels: {"reserved.nit": ""}}'), want: 'spec.endpointSelector.matchLabels["reserved.nit"]: "reserved.nit" is not a reserved identity' },
    { text: BASE(EP + 'ingress:\n- fromEntities: [world]\n  authentication: {mode: required}'), want: 'spec.ingress[0].authentication.mode: "required" is not supported' },
  ];
  for (const c of cases) {
    assert.throws(
      () => parsePolicyFile(c.text, 'bad.yaml'),
      (e: Error) => e.message.includes(c.want),
      `want an error containing ${c.want}`,
    );
  }
});
