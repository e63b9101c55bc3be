/**
 * "Why can't A reach B?" end to end: a real denied connection shows up in `observe` as
 * DROPPED with reason 133 and the policy that made the endpoint default-deny; an allowed one
 * as a FORWARDED policy verdict with its match type and rule; `policy trace` agrees without
 * traffic; the Prometheus counters move. Real namespaces, TUN devices and nc.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Lab, metricSum, nsRun, requireE2e, sleep } from './helpers.js';
import type { FlowEvent } from '../../src/api/types.js';

const TAG = (process.pid % 1000).toString(36);

const POLICY = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: db-from-web
spec:
  endpointSelector:
    matchLabels: { app: db }
  ingress:
    - fromEndpoints:
        - matchLabels: { app: web }
      toPorts:
        - ports: [ { port: "5432", protocol: TCP } ]
`;

type MetricsJson = Record<string, { labels: Record<string, string>; value: number | string }[]>;
const metricValue = metricSum;

describe('observe: why was this dropped', () => {
  const lab = new Lab({
    name: `e2e${TAG}w`,
    workers: 1,
    nodes: [
      { name: 'web', labels: { app: 'web' } },
      { name: 'db', labels: { app: 'db' } },
    ],
  });

  before(async () => {
    await requireE2e();
    await lab.create();
    const n = await lab.start();
    assert.equal(n, 2, `ready: got ${n} endpoints, want 2`);
    const file = join(lab.dir, 'db.yaml');
    writeFileSync(file, POLICY);
    const imp = await lab.cli(['policy', 'import', file]);
    assert.equal(imp.code, 0, `policy import: ${imp.stderr}`);
  });

  after(async () => {
    await lab.destroy();
  });

  it('explains a denied and an allowed connection, and the metrics move', async () => {
    const m0 = await lab.cliJson<MetricsJson>(['metrics']);
    const drops0 = metricValue(m0, 'cilium_drop_count_total', (l) => l.reason === 'Policy denied');
    const srv = lab.background('db', ['nc', '-k', '-l', lab.v4('db'), '5432']);
    const srv2 = lab.background('db', ['nc', '-k', '-l', lab.v4('db'), '22']);
    try {
      await lab.waitListening('db', 'tcp', 5432);
      await lab.waitListening('db', 'tcp', 22);
      const ok = await nsRun(lab.ns('web'), ['nc', '-z', '-w', '3', lab.v4('db'), '5432'], 10_000);
      assert.equal(ok.code, 0, `web -> db:5432: got exit ${ok.code}, want 0 (allowed)`);
      const no = await nsRun(lab.ns('web'), ['nc', '-z', '-w', '2', lab.v4('db'), '22'], 10_000);
      assert.notEqual(no.code, 0, 'web -> db:22: connected, want a timeout (denied)');
    } finally {
      for (const s of [srv, srv2]) if (s.child.exitCode === null) s.child.kill('SIGKILL');
      await Promise.all([srv.done, srv2.done]);
    }

    // observe: the drop with its reason and the policy behind the default deny.
    let drop: FlowEvent | undefined;
    let verdict: FlowEvent | undefined;
    for (let i = 0; i < 30 && !(drop && verdict); i++) {
      const r = await lab.cli(['observe', '--last', '200', '-o', 'json']);
      assert.equal(r.code, 0, `observe: ${r.stderr}`);
      const evs = r.stdout.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as FlowEvent);
      drop = evs.find((e) => e.verdict === 'DROPPED' && e.destination.port === 22 && e.event_type === 'drop');
      verdict = evs.find((e) => e.event_type === 'policy-verdict' && e.verdict === 'FORWARDED' && e.destination.port === 5432);
      if (!(drop && verdict)) await sleep(100);
    }
    assert.ok(drop, 'observe shows the DROPPED flow to db:22');
    assert.equal(drop.drop_reason, 133, `drop_reason: got ${drop.drop_reason}, want 133`);
    assert.equal(drop.drop_reason_desc, 'Policy denied');
    assert.equal(drop.traffic_direction, 'INGRESS');
    assert.equal(drop.source.endpoint, 'web');
    assert.equal(drop.destination.endpoint, 'db');
    assert.ok(drop.policy && 'none' in drop.policy, `policy: got ${JSON.stringify(drop.policy)}`);
    assert.match((drop.policy as { none: string }).none, /db-from-web/, 'the drop names the policy that made db default-deny');

    assert.ok(verdict, 'observe shows the FORWARDED policy verdict for db:5432');
    assert.equal(verdict.policy_match_type, 'L3-L4', `match type: got ${verdict.policy_match_type}, want L3-L4`);
    assert.equal((verdict.policy as { name?: string }).name, 'db-from-web');

    // The compact form a person reads.
    const compact = await lab.cli(['observe', '--verdict', 'DROPPED', '--last', '5']);
    assert.match(compact.stdout, /web.*->.*db:22.*DROPPED/, `compact: got ${compact.stdout}`);

    // policy trace agrees without sending traffic.
    const t = await lab.cliJson<{ verdict: string; drop_reason?: number }>(['policy', 'trace', '--src-endpoint', 'web', '--dst-endpoint', 'db', '--dport', '22/TCP']);
    assert.equal(t.verdict, 'DENIED');
    assert.equal(t.drop_reason, 133);
    const t2 = await lab.cliJson<{ verdict: string }>(['policy', 'trace', '--src-endpoint', 'web', '--dst-endpoint', 'db', '--dport', '5432/TCP']);
    assert.equal(t2.verdict, 'ALLOWED');

    // The metrics moved.
    const m1 = await lab.cliJson<MetricsJson>(['metrics']);
    const drops1 = metricValue(m1, 'cilium_drop_count_total', (l) => l.reason === 'Policy denied');
    assert.ok(drops1 > drops0, `cilium_drop_count_total{reason="Policy denied"}: got ${drops1}, want > ${drops0}`);
    assert.ok(metricValue(m1, 'cilium_forward_count_total') > 0, 'forwarded packets counted');
    assert.ok(metricValue(m1, 'cilium_policy_max_revision') > 0, 'policy revision exported');
  });
});
