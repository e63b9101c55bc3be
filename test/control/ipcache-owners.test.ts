/**
 * The ipcache keeps one entry per prefix with an owner precedence (endpoint > host > kvstore >
 * cidr-policy > api). Checked two ways: against a naive model on seeded random claims over
 * overlapping prefixes (through the real IpcacheWriter, read back by longest match), and
 * through the agent with an endpoint and a policy CIDR on the same /32 in every order.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rand } from '../helpers/rand.js';
import { IPCACHE_OWNERS, IpcacheOwners, type IpcacheOwner } from '../../src/control/ipcache-owners.js';
import type { Prefix } from '../../src/proto/prefix.js';
import { TableSet, TableSetWriter } from '../../src/tables/tableset.js';
import { makeTestAgent, upsertOf } from './agent-support.js';

test('owners: the table holds the highest-precedence claim of each prefix (seeded random churn)', () => {
  for (const seed of [1, 2, 3]) {
    const r = new Rand(seed);
    const ts = TableSet.create({ ipcache: { tbl8Groups: 16, leaves: 1024, v6Capacity: 256 }, policyCapacity: 1 << 10, maxEndpoints: 8 });
    const w = new TableSetWriter(ts);
    const owners = new IpcacheOwners(w.ipcache);
    // A handful of overlapping prefixes, so claims collide on the same prefix and nest.
    const prefixes = ['10.0.0.0/8', '10.1.0.0/16', '10.1.2.0/24', '10.1.2.3/32', '10.1.2.4/32', 'fd00::/64', 'fd00::7/128'];
    const model = new Map<string, Map<IpcacheOwner, number>>();
    for (let i = 0; i < 2000; i++) {
      const p = r.pick(prefixes);
      const o = r.pick(IPCACHE_OWNERS);
      let m = model.get(p);
      if (r.bool(0.55)) {
        const id = r.range(256, 300);
        owners.set(p, o, { identity: id });
        if (m === undefined) model.set(p, (m = new Map()));
        m.set(o, id);
      } else {
        const had = m?.has(o) ?? false;
        assert.equal(owners.clear(p, o), had, `seed ${seed} op ${i}: clear(${p}, ${o}) got ${!had}, want ${had}`);
        m?.delete(o);
        if (m?.size === 0) model.delete(p);
      }
      // The naive model: per prefix, the claim of the first owner in precedence order.
      const want = [...model]
        .map(([cidr, mm]) => ({ cidr, identity: mm.get(IPCACHE_OWNERS.find((x) => mm.has(x)) as IpcacheOwner) as number }))
        .sort((a, b) => (a.cidr < b.cidr ? -1 : 1));
      const got = w.ipcache
        .list()
        .map((e) => ({ cidr: e.cidr, identity: e.identity }))
        .sort((a, b) => (a.cidr < b.cidr ? -1 : 1));
      assert.deepEqual(got, want, `seed ${seed} op ${i} (${p} ${o}): table got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
    }
  }
});

test('owners: a lower owner never rewrites the table while a higher one holds the prefix', () => {
  const writes: string[] = [];
  const sink = {
    upsert: (c: Prefix, v: { identity: number }) => void writes.push(`+${c.text}=${v.identity}`),
    delete: (c: Prefix) => (writes.push(`-${c.text}`), true),
    batch: <T>(fn: () => T): T => fn(),
  };
  const o = new IpcacheOwners(sink);
  o.set('10.0.0.1', 'endpoint', { identity: 300, flags: 1 });
  o.set('10.0.0.1/32', 'cidr-policy', { identity: 16777217 });
  o.clear('10.0.0.1/32', 'cidr-policy');
  o.set('10.0.0.1/32', 'api', { identity: 400 });
  assert.deepEqual(writes, ['+10.0.0.1/32=300'], `writes got ${JSON.stringify(writes)}, want only the endpoint's`);
  assert.deepEqual(o.owners('10.0.0.1'), ['endpoint', 'api']);
  o.clear('10.0.0.1', 'endpoint');
  assert.deepEqual(writes.slice(1), ['+10.0.0.1/32=400'], 'the API claim takes over when the endpoint goes');
  o.clear('10.0.0.1', 'api');
  assert.deepEqual(writes.slice(2), ['-10.0.0.1/32'], 'the prefix leaves with its last owner');
});

const CIDR_POLICY = (cidr: string): string => `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: to-cidr }
spec:
  endpointSelector: { matchLabels: { app: other } }
  egress:
    - toCIDR: [ "${cidr}" ]
`;

/** Every interleaving of two add/delete pairs (add before delete in each pair). */
function interleavings(): string[][] {
  const ev = ['ep+', 'ep-', 'pol+', 'pol-', 'api+', 'api-'];
  const out: string[][] = [];
  const rec = (cur: string[], left: string[]): void => {
    if (left.length === 0) return void out.push(cur);
    for (const e of left) {
      const pair = e.endsWith('-') ? e.slice(0, -1) + '+' : null;
      if (pair !== null && !cur.includes(pair)) continue;
      rec([...cur, e], left.filter((x) => x !== e));
    }
  };
  rec([], ev);
  return out;
}

test('agent: endpoint, policy CIDR and API claims on one /32 in every order', async () => {
  const orders = interleavings();
  assert.equal(orders.length, 90, `interleavings got ${orders.length}, want 6!/2^3 = 90`);
  for (const order of orders) {
    const { agent } = makeTestAgent();
    const ip = '10.42.0.7';
    let ep = false;
    let pol = false;
    let api = false;
    let epIdentity = 0;
    for (const step of order) {
      if (step === 'ep+') {
        epIdentity = (await agent.addEndpoint({ name: 'a', labels: { app: 'a' }, netns: 'na', ipv4: ip })).identity;
        ep = true;
      } else if (step === 'ep-') {
        await agent.deleteEndpoint('a');
        ep = false;
      } else if (step === 'pol+') {
        agent.importPolicyText(CIDR_POLICY(`${ip}/32`), 'p.yaml');
        pol = true;
      } else if (step === 'pol-') {
        agent.deletePolicy('to-cidr');
        pol = false;
      } else if (step === 'api+') {
        upsertOf(agent, { entries: [{ cidr: `${ip}/32`, identity: 999 }] });
        api = true;
      } else {
        agent.deleteIpcache(`${ip}/32`);
        api = false;
      }
      const got = agent.getIpcache(ip);
      const at = `order ${order.join(' ')} after ${step}`;
      if (ep) {
        assert.equal(got?.identity, epIdentity, `${at}: identity got ${got?.identity}, want the endpoint's ${epIdentity}`);
        assert.equal(got?.source, 'endpoint', `${at}: source got ${got?.source}, want endpoint`);
      } else if (pol) {
        assert.equal(got?.source, 'cidr-policy', `${at}: source got ${got?.source}, want cidr-policy`);
        assert.ok((got?.identity ?? 0) >= 1 << 24, `${at}: identity got ${got?.identity}, want a CIDR identity`);
      } else if (api) {
        assert.equal(got?.identity, 999, `${at}: identity got ${got?.identity}, want the API's 999`);
      } else {
        assert.equal(got, null, `${at}: got ${JSON.stringify(got)}, want no entry`);
      }
      const owners: string[] = [];
      if (ep) owners.push('endpoint');
      if (pol) owners.push('cidr-policy');
      if (api) owners.push('api');
      if (owners.length > 0) assert.deepEqual(got?.owners, owners, `${at}: owners`);
    }
  }
});
