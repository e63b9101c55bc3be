/**
 * The classic Kubernetes NetworkPolicy cases (test/control/k8s-cases.ts) through the agent:
 * namespaces x/y/z as objects, pods a/b/c with named ports, each case's policies imported and
 * every probe's verdict read from the published tables (as a worker reads them) and checked
 * against the expectation and against the naive reference evaluator.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeTestAgent, traceOf } from './agent-support.js';
import { CASES, NAMED_PORTS, NAMESPACES, PODS, fillPolicy } from './k8s-cases.js';
import { evaluate, type FlowEnd } from './policy-reference.js';
import { LabelSet } from '../../src/control/labels.js';
import { parsePolicyFile } from '../../src/control/policy/parse.js';

test('Kubernetes NetworkPolicy classics on x/y/z with pods a/b/c: published verdicts and the reference agree', async () => {
  assert.ok(CASES.length >= 10, `got ${CASES.length} cases, want at least 10`);
  const { agent } = makeTestAgent();
  for (const ns of NAMESPACES) agent.putNamespace(ns, { labels: { ns } });
  const addr = new Map<string, string>();
  for (const ns of NAMESPACES) {
    for (const pod of PODS) {
      const e = await agent.addEndpoint({ name: `${ns}-${pod}`, labels: { pod }, netns: `n-${ns}-${pod}`, namespace: ns, ports: NAMED_PORTS });
      addr.set(`${ns}/${pod}`, e.ipv4 as string);
    }
  }
  const end = (pod: string): FlowEnd => {
    const e = agent.getEndpoint(pod.replace('/', '-'));
    return { identity: e.identity, labels: LabelSet.from(e.labels), ip: e.ipv4 as string, ports: NAMED_PORTS };
  };
  for (const c of CASES) {
    agent.deleteAllPolicies();
    const text = fillPolicy(c.policies, (pod) => addr.get(pod) as string, '10.42.0.0/24');
    agent.importPolicyText(text, `${c.name}.yaml`);
    const pols = parsePolicyFile(text, 'x.yaml');
    for (const pr of c.probes) {
      const at = `${c.name}: ${pr.from} -> ${pr.to} ${pr.port}/${pr.proto}`;
      const t = traceOf(agent, { src: { endpoint: pr.from.replace('/', '-') }, dst: { endpoint: pr.to.replace('/', '-') }, dport: `${pr.port}/${pr.proto}` });
      const want = pr.allowed ? 'ALLOWED' : 'DENIED';
      assert.equal(t.verdict, want, `${at}: got ${t.verdict}, want ${want} (steps ${JSON.stringify(t.steps)})`);
      const proto = pr.proto === 'TCP' ? 6 : 17;
      const cfg = { enforcement: 'default' as const, audit: false };
      const eg = evaluate(pols, cfg, end(pr.from), end(pr.to), 'egress', proto, pr.port);
      const ig = evaluate(pols, cfg, end(pr.from), end(pr.to), 'ingress', proto, pr.port);
      const ref = eg.allowed && ig.allowed;
      assert.equal(ref, pr.allowed, `${at}: reference got ${ref}, want ${pr.allowed}`);
    }
  }
});
