import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { Rand } from '../helpers/rand.js';
import { FILTER_FLAGS, FilterError, parseFilters, type FilterOptions } from '../../src/observe/filter.js';
import type { FlowEvent } from '../../src/api/types.js';
import { EV, randomFlow } from './events.js';

type Name = keyof typeof EV;
const NAMES = Object.keys(EV) as Name[];

function matching(opts: FilterOptions): Name[] {
  const p = parseFilters(opts);
  return NAMES.filter((n) => p(EV[n]));
}

/** The names of EV for which `pred` holds: the reference each case is checked against. */
function where(pred: (e: FlowEvent) => boolean): Name[] {
  return NAMES.filter((n) => pred(EV[n]));
}

describe('parseFilters on representative events', () => {
  const cases: { opts: FilterOptions; want: Name[] }[] = [
    { opts: {}, want: NAMES },
    { opts: { verdict: ['DROPPED'] }, want: ['drop133', 'verdict133', 'drop181', 'v6'] },
    { opts: { verdict: ['dropped', 'AUDIT'] }, want: ['drop133', 'verdict133', 'drop181', 'v6', 'audit'] },
    { opts: { type: ['policy-verdict'] }, want: ['verdict133', 'allowed', 'audit'] },
    { opts: { type: ['drop'], verdict: ['DROPPED'] }, want: ['drop133', 'drop181', 'v6'] },
    { opts: { fromLabel: ['app=web'] }, want: where((e) => e.source.labels.includes('k8s:app=web')) },
    { opts: { fromLabel: ['k8s:app=web'] }, want: where((e) => e.source.labels.includes('k8s:app=web')) },
    { opts: { fromLabel: ['k8s:app'] }, want: where((e) => e.source.labels.some((l) => l.startsWith('k8s:app='))) },
    { opts: { fromLabel: ['other:app=web'] }, want: [] },
    { opts: { toLabel: ['reserved:world'] }, want: ['miss', 'icmpUnreach'] },
    { opts: { toLabel: ['world'] }, want: ['miss', 'icmpUnreach'] },
    { opts: { label: ['reserved:host'] }, want: ['v6'] },
    { opts: { fromLabel: ['app=web', 'app=db'] }, want: where((e) => e.source.endpoint === 'web' || e.source.endpoint === 'db') },
    { opts: { fromIdentity: ['257'] }, want: where((e) => e.source.identity === 257) },
    { opts: { toIdentity: ['2'] }, want: ['miss', 'icmpUnreach'] },
    { opts: { identity: ['1'] }, want: ['v6'] },
    { opts: { ip: ['8.8.8.8'] }, want: ['miss'] },
    { opts: { fromIp: ['10.42.0.11'] }, want: ['reply', 'icmpUnreach'] },
    { opts: { toIp: ['10.42.0.0/24'] }, want: where((e) => e.IP.destination.startsWith('10.42.0.')) },
    { opts: { ip: ['fd00:42::/64'] }, want: ['v6', 'audit'] },
    { opts: { ip: ['fd00:42::10'] }, want: ['v6', 'audit'] },
    { opts: { port: ['5432'] }, want: ['forward', 'reply', 'drop133', 'verdict133', 'allowed'] },
    { opts: { toPort: ['5432'] }, want: ['forward', 'drop133', 'verdict133', 'allowed'] },
    { opts: { fromPort: ['5432'] }, want: ['reply'] },
    { opts: { port: [53] }, want: ['miss'] },
    { opts: { protocol: ['udp'] }, want: ['miss'] },
    { opts: { protocol: ['icmp'] }, want: ['icmp', 'icmpUnreach'] },
    { opts: { protocol: ['ICMPv6'] }, want: ['audit'] },
    { opts: { protocol: ['tcp'], verdict: ['FORWARDED'] }, want: ['forward', 'reply', 'allowed'] },
    { opts: { dropReasonDesc: ['POLICY_DENIED'] }, want: ['drop133', 'verdict133'] },
    { opts: { dropReasonDesc: ['DROP_POLICY_DENY'] }, want: ['drop181'] },
    { opts: { dropReasonDesc: ['Policy denied'] }, want: ['drop133', 'verdict133', 'drop181'] },
    { opts: { dropReasonDesc: ['denylist'] }, want: ['drop181'] },
    { opts: { dropReasonDesc: ['INVALID_SOURCE_IP'] }, want: ['v6'] },
    { opts: { dropReasonDesc: ['invalid_sip'] }, want: ['v6'] },
    { opts: { endpoint: ['db'] }, want: where((e) => e.source.endpoint === 'db' || e.destination.endpoint === 'db') },
    { opts: { fromEndpoint: ['db'] }, want: ['reply', 'icmpUnreach'] },
    { opts: { toEndpoint: ['web'] }, want: ['reply'] },
    { opts: { endpoint: ['nosuch'] }, want: [] },
  ];
  for (const c of cases) {
    test(JSON.stringify(c.opts), () => {
      const got = matching(c.opts);
      assert.deepEqual(got, c.want, `got ${got.join(',')}, want ${c.want.join(',')}`);
    });
  }
  test('a single value (not a list) works as a list of one', () => {
    const got = matching({ verdict: 'AUDIT' });
    assert.deepEqual(got, ['audit'], `got ${got.join(',')}, want audit`);
  });
});

describe('parseFilters rejects bad values naming the flag', () => {
  const cases: { opts: FilterOptions; want: string }[] = [
    { opts: { verdict: ['DENY'] }, want: '--verdict: "DENY" is not one of FORWARDED, DROPPED, AUDIT' },
    { opts: { verdict: ['DROPPED', ''] }, want: '--verdict: "" is not one of FORWARDED, DROPPED, AUDIT' },
    { opts: { type: ['l7'] }, want: '--type: "l7" is not one of drop, trace, policy-verdict' },
    { opts: { fromLabel: ['=web'] }, want: '--from-label: "=web" is not a label (key=value, source:key=value or key)' },
    { opts: { toLabel: ['app = web'] }, want: '--to-label: "app = web" is not a label (key=value, source:key=value or key)' },
    { opts: { fromIdentity: ['web'] }, want: '--from-identity: "web" is not an identity number' },
    { opts: { toIdentity: ['-1'] }, want: '--to-identity: "-1" is not an identity number' },
    { opts: { ip: ['10.0.0.256'] }, want: '--ip: "10.0.0.256" is not an IP address or prefix' },
    { opts: { fromIp: ['10.0.0.0/33'] }, want: '--from-ip: "10.0.0.0/33" is not an IP address or prefix' },
    { opts: { toIp: ['fd00::/129'] }, want: '--to-ip: "fd00::/129" is not an IP address or prefix' },
    { opts: { port: ['65536'] }, want: '--port: "65536" is not a port (0-65535)' },
    { opts: { toPort: ['http'] }, want: '--to-port: "http" is not a port (0-65535)' },
    { opts: { protocol: ['igmp'] }, want: '--protocol: "igmp" is not one of tcp, udp, icmp, icmpv6, sctp' },
    { opts: { dropReasonDesc: ['POLICY_DENIEDD'] }, want: '--drop-reason-desc: "POLICY_DENIEDD" is neither a drop reason name (e.g. POLICY_DENIED, POLICY_DENY) nor part of a drop reason text (e.g. "policy denied")' },
    { opts: { dropReasonDesc: [' '] }, want: '--drop-reason-desc: must not be empty' },
    { opts: { endpoint: [''] }, want: '--endpoint: must not be empty' },
  ];
  for (const c of cases) {
    test(JSON.stringify(c.opts), () => {
      let err: unknown = null;
      try {
        parseFilters(c.opts);
      } catch (e) {
        err = e;
      }
      assert.ok(err instanceof FilterError, `got ${String(err)}, want a FilterError`);
      assert.equal(err.message, c.want, `got ${err.message}, want ${c.want}`);
      assert.equal(err.code, 'EBAD_REQUEST', `got code ${err.code}, want EBAD_REQUEST`);
      assert.ok(!err.message.includes('\n'), `got a multi-line message ${err.message}`);
    });
  }
});

describe('filter algebra on random events', () => {
  // A random value for each flag, drawn from what the random events contain.
  const VALUES: Record<string, readonly string[]> = {
    verdict: ['FORWARDED', 'DROPPED', 'AUDIT'],
    type: ['drop', 'trace', 'policy-verdict'],
    label: ['app=web', 'k8s:tier=front', 'reserved:world', 'app'],
    fromLabel: ['app=db', 'tier=back', 'reserved:host'],
    toLabel: ['app=cache', 'k8s:tier=front', 'world'],
    identity: ['256', '257', '1', '2'],
    fromIdentity: ['258', '2'],
    toIdentity: ['259', '1'],
    ip: ['10.42.0.10', '192.168.0.0/16', '10.42.0.8/30'],
    fromIp: ['10.42.0.11', '192.168.1.0/24'],
    toIp: ['10.42.0.12', '192.168.2.2'],
    port: ['80', '53', '41234'],
    fromPort: ['443', '40000'],
    toPort: ['5432', '80'],
    protocol: ['tcp', 'udp', 'icmp', 'sctp'],
    dropReasonDesc: ['POLICY_DENIED', 'policy', 'TTL exceeded', 'INVALID_SOURCE_IP'],
    endpoint: ['web', 'db'],
    fromEndpoint: ['cache', 'api'],
    toEndpoint: ['web', 'api'],
    pod: ['we', 'default/db'],
    fromPod: ['ca', 'api'],
    toPod: ['web', 'a'],
    tcpFlags: ['SYN', 'SYN,ACK', 'ACK', 'FIN'],
    ipVersion: ['v4', 'v6'],
    trafficDirection: ['ingress', 'EGRESS'],
  };
  const r = new Rand(0xf117e);
  const events = Array.from({ length: 400 }, () => randomFlow(r));

  test('every flag has values to try', () => {
    for (const f of FILTER_FLAGS) assert.ok((VALUES[f.key]?.length ?? 0) > 0, `got no values for ${f.flag}, want some`);
  });

  test('repeated values OR, different flags AND', () => {
    for (let round = 0; round < 300; round++) {
      const f1 = r.pick(FILTER_FLAGS).key;
      const f2 = r.pick(FILTER_FLAGS).key;
      const a = r.pick(VALUES[f1] as string[]);
      const b = r.pick(VALUES[f1] as string[]);
      const c = r.pick(VALUES[f2] as string[]);
      const pa = parseFilters({ [f1]: [a] });
      const pb = parseFilters({ [f1]: [b] });
      const pc = parseFilters({ [f2]: [c] });
      const or = parseFilters({ [f1]: [a, b] });
      const and = f1 === f2 ? null : parseFilters({ [f1]: [a], [f2]: [c] });
      for (const e of events) {
        const want = pa(e) || pb(e);
        assert.equal(or(e), want, `${f1}=${a},${b} on ${JSON.stringify(e)}: got ${or(e)}, want ${want}`);
        if (and !== null) {
          const w = pa(e) && pc(e);
          assert.equal(and(e), w, `${f1}=${a} ${f2}=${c} on ${JSON.stringify(e)}: got ${and(e)}, want ${w}`);
        }
      }
    }
  });

  test('either-side flags are the OR of their from- and to- forms', () => {
    const pairs = [
      ['label', 'fromLabel', 'toLabel'],
      ['identity', 'fromIdentity', 'toIdentity'],
      ['ip', 'fromIp', 'toIp'],
      ['port', 'fromPort', 'toPort'],
      ['endpoint', 'fromEndpoint', 'toEndpoint'],
      ['pod', 'fromPod', 'toPod'],
    ] as const;
    for (const [both, from, to] of pairs) {
      for (const v of [...(VALUES[both] as string[]), ...(VALUES[from] as string[]), ...(VALUES[to] as string[])]) {
        const p = parseFilters({ [both]: [v] });
        const pf = parseFilters({ [from]: [v] });
        const pt = parseFilters({ [to]: [v] });
        let hits = 0;
        for (const e of events) {
          const want = pf(e) || pt(e);
          if (want) hits++;
          assert.equal(p(e), want, `--${both} ${v} on ${JSON.stringify(e)}: got ${p(e)}, want ${want}`);
        }
        if ((VALUES[both] as string[]).includes(v)) assert.ok(hits > 0, `--${both} ${v}: got no matching random event, want some (the test data is too thin)`);
      }
    }
  });

  test('filters agree with a direct reading of the fields', () => {
    const ref: Record<string, (e: FlowEvent, v: string) => boolean> = {
      verdict: (e, v) => e.verdict === v,
      type: (e, v) => e.event_type === v,
      fromIdentity: (e, v) => String(e.source.identity) === v,
      toEndpoint: (e, v) => e.destination.endpoint === v,
      toPort: (e, v) => e.l4?.destination_port === Number(v) && e.l4.protocol !== 'ICMPv4',
      protocol: (e, v) => e.l4?.protocol === ({ tcp: 'TCP', udp: 'UDP', icmp: 'ICMPv4', sctp: 'SCTP' } as Record<string, string>)[v],
      fromLabel: (e, v) => e.source.labels.some((l) => l === v || l === `k8s:${v}` || l === `reserved:${v}` || (!v.includes(':') && l.split(':')[1] === v)),
    };
    for (const [key, fn] of Object.entries(ref)) {
      for (const v of VALUES[key] as string[]) {
        const p = parseFilters({ [key]: [v] });
        for (const e of events) assert.equal(p(e), fn(e, v), `${key}=${v} on ${JSON.stringify(e)}: got ${p(e)}, want ${fn(e, v)}`);
      }
    }
  });
});
