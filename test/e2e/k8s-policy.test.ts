/**
 * Kubernetes NetworkPolicy semantics with real traffic: a lab of nine network namespaces
 * (pods a, b, c in Kubernetes namespaces x, y, z, declared in the lab file with labels
 * ns=<name>), each serving ports 80 and 81 over TCP and UDP (socat), named serve-80-tcp ...
 * The classic cases of test/control/k8s-cases.ts run one after the other: import the case's
 * policies, probe every pair it lists in parallel (nc -w 1), compare. Then live label changes
 * (endpoint label, namespace label) and the ipcache under a policy CIDR covering a pod.
 *
 * Needs root, /dev/net/tun, the native binding and the tools; FAILS (never skips) without
 * them. Addresses: 10.95.0.0/24 and fd00:95::/64 only; namespaces pk95-*; everything is
 * removed in `after` and by the exit handler. Bounded: every probe has -w 1 and a 5 s cap.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Lab, nsRun, requireE2e } from './helpers.js';
import { CASES, NAMED_PORTS, NAMESPACES, PODS, fillPolicy, type Probe } from '../control/k8s-cases.js';

const POOL = { v4: '10.95.0', v6: 'fd00:95::', prefix: 'pk95' };

interface EndpointJson {
  name: string;
  identity: number;
  ipv4?: string;
}

describe('Kubernetes NetworkPolicy cases on x/y/z with pods a/b/c', () => {
  let lab: Lab;
  const addr = new Map<string, string>();
  const node = (pod: string): string => pod.replace('/', '-');

  before(async () => {
    await requireE2e();
    const nodes = NAMESPACES.flatMap((ns) => PODS.map((pod) => ({ name: `${ns}-${pod}`, labels: { pod }, namespace: ns, ports: NAMED_PORTS })));
    lab = new Lab({ name: 'pk95', nodes, pool: POOL, namespaces: Object.fromEntries(NAMESPACES.map((ns) => [ns, { ns }])) });
    await lab.create();
    const n = await lab.start();
    assert.equal(n, 9, `ready endpoints: got ${n}, want 9`);
    for (const e of await lab.cliJson<EndpointJson[]>(['endpoint', 'list'])) addr.set(e.name.replace('-', '/'), e.ipv4 as string);
    // Servers: TCP answers by accepting; UDP echoes "ok" to each datagram.
    for (const ns of NAMESPACES) {
      for (const pod of PODS) {
        for (const port of [80, 81]) {
          lab.background(`${ns}-${pod}`, ['socat', `TCP-LISTEN:${port},fork,reuseaddr`, 'SYSTEM:echo ok']);
          lab.background(`${ns}-${pod}`, ['socat', `UDP-RECVFROM:${port},fork`, 'SYSTEM:echo ok']);
        }
      }
    }
    for (const ns of NAMESPACES) for (const pod of PODS) for (const port of [80, 81]) {
      await lab.waitListening(`${ns}-${pod}`, 'tcp', port);
      await lab.waitListening(`${ns}-${pod}`, 'udp', port);
    }
    // Warm-up (results unused): the first datagrams make socat and the shells page in.
    await Promise.all(NAMESPACES.map((ns) => reach({ from: `${ns}/a`, to: 'x/a', port: 81, proto: 'UDP' })));
  });

  after(async () => {
    if (lab) await lab.destroy();
  });

  /** One probe: TCP connects (nc -z), UDP needs the "ok" answer back. true = reached. */
  async function reach(p: Pick<Probe, 'from' | 'to' | 'port' | 'proto'>): Promise<boolean> {
    const to = addr.get(p.to) as string;
    if (p.proto === 'TCP') return (await nsRun(lab.ns(node(p.from)), ['nc', '-z', '-w', '1', to, String(p.port)], 5_000)).code === 0;
    // socat forks a shell per datagram: on a busy machine the answer can take over a second.
    const r = await nsRun(lab.ns(node(p.from)), ['sh', '-c', `echo x | nc -u -w 2 ${to} ${p.port}`], 5_000);
    return r.stdout.includes('ok');
  }

  /** Probes in parallel; two retries for a probe that should pass (a slow answer on a busy machine). */
  async function check(name: string, probes: readonly Probe[]): Promise<void> {
    const got = await Promise.all(probes.map(async (p) => (await reach(p)) || (p.allowed && ((await reach(p)) || (await reach(p))))));
    const bad = probes.map((p, i) => ({ p, got: got[i] })).filter((x) => x.got !== x.p.allowed);
    assert.deepEqual(
      bad.map((x) => `${x.p.from} -> ${x.p.to} ${x.p.port}/${x.p.proto}: got ${x.got ? 'reached' : 'blocked'}, want ${x.p.allowed ? 'reached' : 'blocked'}`),
      [],
      `${name}: probes that disagree`,
    );
  }

  it('with no policy every pod reaches every other', async () => {
    await check('no policy', [
      { from: 'x/a', to: 'y/b', port: 80, proto: 'TCP', allowed: true },
      { from: 'z/c', to: 'x/a', port: 81, proto: 'UDP', allowed: true },
    ]);
  });

  for (const c of CASES) {
    it(c.name, async () => {
      const file = join(lab.dir, 'case.yaml');
      writeFileSync(file, fillPolicy(c.policies, (pod) => addr.get(pod) as string, `${POOL.v4}.0/24`));
      const del = await lab.cli(['policy', 'delete', '--all']);
      assert.equal(del.code, 0, `policy delete --all: got exit ${del.code} (${del.stderr})`);
      const imp = await lab.cli(['policy', 'import', file]);
      assert.equal(imp.code, 0, `policy import: got exit ${imp.code} (${imp.stderr})`);
      await check(c.name, c.probes);
    });
  }

  it('live label changes: endpoint label and namespace label change who is allowed', async () => {
    const y = CASES.find((c) => c.name.startsWith('podSelector AND namespaceSelector'));
    assert.ok(y, 'the pod+namespace case exists');
    const file = join(lab.dir, 'case.yaml');
    writeFileSync(file, y.policies);
    await lab.cli(['policy', 'delete', '--all']);
    assert.equal((await lab.cli(['policy', 'import', file])).code, 0);
    const probe = { from: 'y/c', to: 'x/a', port: 80, proto: 'TCP' as const };
    assert.equal(await reach(probe), false, 'y/c (pod=c) blocked before');
    const r1 = await lab.cli(['endpoint', 'label', 'y-c', 'pod=b']);
    assert.equal(r1.code, 0, `endpoint label: got exit ${r1.code} (${r1.stderr})`);
    assert.equal(await reach(probe), true, 'y/c relabelled pod=b: reached');
    const r2 = await lab.cli(['namespace', 'label', 'y', 'ns=q']);
    assert.equal(r2.code, 0, `namespace label: got exit ${r2.code} (${r2.stderr})`);
    assert.equal(await reach(probe), false, 'namespace y relabelled ns=q: blocked');
    await lab.cli(['namespace', 'label', 'y', 'ns=y']);
    await lab.cli(['endpoint', 'label', 'y-c', 'pod=c']);
    assert.equal(await reach(probe), false, 'back to pod=c: blocked');
  });

  it('a policy CIDR covering a pod never changes or removes the pod\'s ipcache entry', async () => {
    const ip = addr.get('z/b') as string;
    const before = await lab.cliJson<{ identity: number; source: string }>(['ipcache', 'get', ip]);
    const file = join(lab.dir, 'cidr.yaml');
    writeFileSync(file, `apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: { name: to-pod-cidr }\nspec:\n  endpointSelector: { matchLabels: { pod: a } }\n  egress:\n  - toCIDR: [ "${ip}/32" ]\n`);
    await lab.cli(['policy', 'delete', '--all']);
    assert.equal((await lab.cli(['policy', 'import', file])).code, 0);
    const during = await lab.cliJson<{ identity: number; source: string; owners?: string[] }>(['ipcache', 'get', ip]);
    assert.deepEqual([during.identity, during.source], [before.identity, 'endpoint'], `with the policy: got ${JSON.stringify(during)}, want the endpoint's entry`);
    assert.deepEqual(during.owners, ['endpoint', 'cidr-policy']);
    assert.equal((await lab.cli(['policy', 'delete', 'to-pod-cidr'])).code, 0);
    const afterDel = await lab.cliJson<{ identity: number; source: string } | null>(['ipcache', 'get', ip]);
    assert.equal(afterDel?.identity, before.identity, `after delete: got ${JSON.stringify(afterDel)}, want identity ${before.identity}`);
    assert.equal(await reach({ from: 'x/a', to: 'z/b', port: 80, proto: 'TCP' }), true, 'traffic still flows');
  });
});
