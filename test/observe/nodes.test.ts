/** kvstore mode: observe names the node of each side (toFlow), the compact line shows them on a flow between nodes, Hubble gets node_name and TO_OVERLAY. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toFlow, type NameResolver } from '../../src/observe/flow.js';
import { EventReader, EventRing, EventWriter, EV_TRACE, V_FORWARDED } from '../../src/tables/events.js';
import { DIR_EGRESS, DIR_INGRESS } from '../../src/proto/direction.js';
import { formatCompact } from '../../src/observe/format.js';
import { hubbleFlow } from '../../src/observe/hubble.js';

const ip4 = (s: string): number => s.split('.').reduce((a, o) => ((a << 8) | Number(o)) >>> 0, 0);

/** A trace record: frontend (local endpoint 0) -> 10.83.2.2:8080 (remote, host2), or the reverse. */
function record(fromLocal: boolean): EventReader {
  const ring = EventRing.create(2);
  const w = new EventWriter(ring);
  assert.ok(w.begin(EV_TRACE, 1, 0));
  w.verdict(0, V_FORWARDED, fromLocal ? DIR_EGRESS : DIR_INGRESS);
  w.peers(0, 0, fromLocal ? 0 : -1, fromLocal ? -1 : 0);
  const a = ip4('10.83.1.2');
  const b = ip4('10.83.2.2');
  w.flow({ family: 4, proto: 6, src0: fromLocal ? a : b, src1: 0, src2: 0, src3: 0, dst0: fromLocal ? b : a, dst1: 0, dst2: 0, dst3: 0, sport: fromLocal ? 41234 : 8080, dport: fromLocal ? 8080 : 41234, icmpType: 0, icmpCode: 0, icmpId: -1 } as never);
  w.state(0x02, 0, 0, false, 0, 0, 0xffffffff);
  w.commit(60);
  return new EventReader(ring).at(ring.peek(0));
}

const names = (kv: boolean): NameResolver => ({
  identityLabels: () => [],
  endpointName: (ep) => (ep === 0 ? 'frontend' : undefined),
  ruleName: () => null,
  ...(kv ? { localNode: 'host1', remoteNode: (ip: string) => (ip === '10.83.2.2' ? 'host2' : undefined) } : {}),
});

test('toFlow: node_name is this switch, each side its node (local endpoint: this one; remote: the ipcache owner)', () => {
  const out = toFlow(record(true), names(true));
  assert.equal(out.node_name, 'host1');
  assert.deepEqual([out.source.node, out.destination.node], ['host1', 'host2']);
  const back = toFlow(record(false), names(true));
  assert.deepEqual([back.source.node, back.destination.node], ['host2', 'host1']);
  const single = toFlow(record(true), names(false));
  assert.equal(single.node_name, undefined, 'without kvstore: no node fields');
  assert.equal(single.source.node, undefined);
});

test('observe compact: each side of a flow between nodes carries [node]; to-overlay; a same-node flow has no tags', () => {
  const line = formatCompact(toFlow(record(true), names(true)));
  assert.match(line, /frontend:41234 \[host1\] \(ID:0\) -> 10\.83\.2\.2:8080 \[host2\] \(ID:0\) to-overlay FORWARDED/, `got ${line}`);
  const local = toFlow(record(true), { ...names(true), remoteNode: () => 'host1' });
  assert.doesNotMatch(formatCompact(local), /\[host/, 'same node: no tags');
});

test('hubble: node_name is the observing node, a trace towards another node is TO_OVERLAY', () => {
  const f = hubbleFlow(toFlow(record(true), names(true)), 'mh', 'TCP');
  assert.equal(f.node_name, 'host1', 'the node name wins over the switch name');
  assert.equal(f.trace_observation_point, 'TO_OVERLAY');
  const g = hubbleFlow(toFlow(record(false), names(true)), 'mh', 'TCP');
  assert.equal(g.trace_observation_point, 'TO_ENDPOINT');
  assert.equal(hubbleFlow(toFlow(record(true), names(false)), 'mh', 'TCP').node_name, 'mh');
});
