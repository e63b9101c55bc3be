import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { Rand } from '../helpers/rand.js';
import { formatCompact, formatJson, formatMonitor, formatTable, formatTableLine, formatTime, identityTag, TABLE_HEADERS } from '../../src/observe/format.js';
import { CANNED, EV, NONE_133, NONE_133_EGRESS, randomFlow } from './events.js';

// Hubble prints local time; the expected lines below are written for UTC.
process.env.TZ = 'UTC';

const T = 'Nov 27 13:04:05.123';

describe('formatCompact', () => {
  const cases: { name: string; e: (typeof EV)[keyof typeof EV]; want: string }[] = [
    { name: 'forward', e: EV.forward, want: `${T}: web:41234 (ID:256) -> db:5432 (ID:257) to-endpoint FORWARDED (TCP Flags: SYN)` },
    { name: 'reply reads client-first with <-', e: EV.reply, want: `${T}: web:41234 (ID:256) <- db:5432 (ID:257) to-endpoint FORWARDED (TCP Flags: SYN, ACK)` },
    {
      name: 'drop 133 with policy.none',
      e: EV.drop133,
      want: `${T}: web:41235 (ID:256) -> db:5432 (ID:257) Policy denied DROPPED (TCP Flags: SYN) policy=none (${NONE_133})`,
    },
    {
      name: 'policy verdict deny',
      e: EV.verdict133,
      want: `${T}: web:41235 (ID:256) -> db:5432 (ID:257) policy-verdict:none EGRESS DENIED (TCP Flags: SYN) policy=none (${NONE_133_EGRESS})`,
    },
    {
      name: 'drop 181 with a named rule',
      e: EV.drop181,
      want: `${T}: web:41236 (ID:256) -> db:6379 (ID:257) Policy denied by denylist DROPPED (TCP Flags: SYN) policy=default/deny-redis[rule 1]`,
    },
    {
      name: 'policy verdict allowed by a rule without namespace',
      e: EV.allowed,
      want: `${T}: web:41234 (ID:256) -> db:5432 (ID:257) policy-verdict:L3-L4 INGRESS ALLOWED (TCP Flags: SYN) policy=allow-web[rule 0]`,
    },
    { name: 'ipcache miss to world', e: EV.miss, want: `${T}: web:40000 (ID:256) -> 8.8.8.8:53 (world) to-stack FORWARDED (UDP) [dst not in ipcache: world]` },
    { name: 'ICMP echo', e: EV.icmp, want: `${T}: web (ID:256) -> db (ID:257) to-endpoint FORWARDED (ICMPv4 EchoRequest)` },
    { name: 'ICMP with a code', e: EV.icmpUnreach, want: `${T}: db (ID:257) -> 1.1.1.1 (world) to-stack FORWARDED (ICMPv4 DestinationUnreachable(code 3))` },
    { name: 'IPv6 from host', e: EV.v6, want: `${T}: [fd00:42::10]:41234 (host) -> db:80 (ID:257) Invalid source ip DROPPED (TCP Flags: ACK, FIN)` },
    { name: 'audit over ICMPv6, no rule: no policy suffix', e: EV.audit, want: `${T}: web (ID:256) -> db (ID:257) policy-verdict:none INGRESS AUDIT (ICMPv6 EchoRequest)` },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const got = formatCompact(c.e);
      assert.equal(got, c.want, `got ${got}, want ${c.want}`);
    });
  }

  test('an address without an endpoint name is printed as the address', () => {
    const e = structuredClone(EV.forward);
    delete e.source.endpoint;
    const got = formatCompact(e);
    assert.ok(got.includes(' 10.42.0.10:41234 (ID:256) -> db:5432 '), `got ${got}, want the source address`);
  });
});

describe('identityTag', () => {
  const cases: { identity: number; labels: string[]; want: string }[] = [
    { identity: 2, labels: ['reserved:world'], want: '(world)' },
    { identity: 1, labels: ['reserved:host'], want: '(host)' },
    { identity: 6, labels: [], want: '(remote-node)' },
    { identity: 256, labels: ['k8s:app=web'], want: '(ID:256)' },
    { identity: 16777217, labels: ['cidr:192.168.0.0/16'], want: '(ID:16777217)' },
  ];
  for (const c of cases) {
    const got = identityTag({ identity: c.identity, labels: c.labels, ip: '10.0.0.1' });
    test(`identity ${c.identity}`, () => assert.equal(got, c.want, `got ${got}, want ${c.want}`));
  }
});

describe('formatTime', () => {
  test('examples', () => {
    const cases = [
      { iso: '2024-11-27T13:04:05.123Z', want: 'Nov 27 13:04:05.123' },
      { iso: '2024-01-02T03:04:05.006Z', want: 'Jan  2 03:04:05.006' },
      { iso: 'not a time', want: 'not a time' },
    ];
    for (const c of cases) assert.equal(formatTime(c.iso), c.want, `${c.iso}: got ${formatTime(c.iso)}, want ${c.want}`);
  });
  test('agrees with Date.toUTCString on random times', () => {
    const r = new Rand(0x71e);
    for (let i = 0; i < 500; i++) {
      const ms = r.range(0, 2 ** 31) * 1000 + r.int(1000);
      const d = new Date(ms);
      // "Wed, 27 Nov 2024 13:04:05 GMT"
      const [, day, mon, , hms] = d.toUTCString().split(' ') as string[];
      const want = `${mon} ${String(Number(day)).padStart(2, ' ')} ${hms}.${String(ms % 1000).padStart(3, '0')}`;
      const got = formatTime(d.toISOString());
      assert.equal(got, want, `ms ${ms}: got ${got}, want ${want}`);
    }
  });
});

describe('formatJson', () => {
  test('one line per event, the FlowEvent unchanged', () => {
    const r = new Rand(0x15);
    const events = [...CANNED, ...Array.from({ length: 50 }, () => randomFlow(r))];
    for (const e of events) {
      const got = formatJson(e);
      assert.ok(!got.includes('\n'), `got a newline in ${got}`);
      assert.deepEqual(JSON.parse(got), e, `got ${got}, want ${JSON.stringify(e)}`);
    }
  });
  test('uses Hubble field names', () => {
    const o = JSON.parse(formatJson(EV.drop181)) as Record<string, unknown>;
    for (const k of ['time', 'verdict', 'drop_reason', 'drop_reason_desc', 'source', 'destination', 'traffic_direction', 'is_reply', 'policy_match_type', 'event_type', 'policy']) {
      assert.ok(k in o, `got keys ${Object.keys(o).join(',')}, want ${k}`);
    }
  });
});

describe('formatTable', () => {
  test('header, one aligned row per event', () => {
    const out = formatTable(CANNED);
    const lines = out.trimEnd().split('\n');
    assert.equal(lines.length, CANNED.length + 1, `got ${lines.length} lines, want ${CANNED.length + 1}`);
    const header = lines[0] as string;
    const starts = TABLE_HEADERS.map((h) => header.indexOf(h));
    assert.deepEqual(
      starts.map((s) => s >= 0),
      TABLE_HEADERS.map(() => true),
      `got header ${header}`,
    );
    CANNED.forEach((e, i) => {
      const row = lines[i + 1] as string;
      assert.ok(row.startsWith(formatTime(e.time)), `row ${i}: got ${row}, want the time first`);
      const verdictAt = starts[4] as number;
      const want = e.event_type === 'policy-verdict' ? { FORWARDED: 'ALLOWED', DROPPED: 'DENIED', AUDIT: 'AUDIT' }[e.verdict] : e.verdict;
      assert.equal(row.slice(verdictAt).split(' ')[0], want, `row ${i}: got verdict column ${row.slice(verdictAt)}, want ${want}`);
      const srcAt = starts[1] as number;
      const srcName = e.source.endpoint ?? (e.source.ip.includes(':') ? `[${e.source.ip}]` : e.source.ip);
      assert.ok(row.slice(srcAt).startsWith(srcName), `row ${i}: got source column ${row.slice(srcAt)}, want ${srcName}`);
    });
  });
  test('streamed rows line up with the streamed header', () => {
    const header = formatTableLine(null);
    const verdictAt = header.indexOf('VERDICT');
    for (const e of CANNED) {
      const row = formatTableLine(e);
      assert.match(row.slice(verdictAt), /^(FORWARDED|DROPPED|AUDIT|ALLOWED|DENIED) /, `got ${row}`);
    }
  });
});

describe('formatMonitor', () => {
  const cases: { name: string; e: (typeof EV)[keyof typeof EV]; want: string }[] = [
    { name: 'drop on ingress', e: EV.drop133, want: 'xx drop (Policy denied) to endpoint db, identity 256->257: 10.42.0.10:41235 -> 10.42.0.11:5432 tcp SYN' },
    { name: 'drop on egress', e: EV.drop181, want: 'xx drop (Policy denied by denylist) from endpoint web, identity 256->257: 10.42.0.10:41236 -> 10.42.0.11:6379 tcp SYN' },
    { name: 'IPv6 drop', e: EV.v6, want: 'xx drop (Invalid source ip) to endpoint db, identity 1->257: [fd00:42::10]:41234 -> [fd00:42::11]:80 tcp ACK, FIN' },
    { name: 'trace, new', e: EV.forward, want: '-> endpoint db, identity 256->257 state new: 10.42.0.10:41234 -> 10.42.0.11:5432 tcp SYN' },
    { name: 'trace, reply', e: EV.reply, want: '-> endpoint web, identity 257->256 state reply: 10.42.0.11:5432 -> 10.42.0.10:41234 tcp SYN, ACK' },
    { name: 'trace to the stack', e: EV.miss, want: '-> stack, identity 256->2: 10.42.0.10:40000 -> 8.8.8.8:53 udp' },
    { name: 'trace ICMP', e: EV.icmp, want: '-> endpoint db, identity 256->257: 10.42.0.10 -> 10.42.0.11 icmp EchoRequest' },
    {
      name: 'policy verdict deny (egress)',
      e: EV.verdict133,
      want: 'Policy verdict log: flow 0x0 local EP ID web, remote ID 257, proto 6, egress, action deny, match none, 10.42.0.10:41235 -> 10.42.0.11:5432 tcp SYN',
    },
    {
      name: 'policy verdict allow (ingress)',
      e: EV.allowed,
      want: 'Policy verdict log: flow 0x0 local EP ID db, remote ID 256, proto 6, ingress, action allow, match L3-L4, 10.42.0.10:41234 -> 10.42.0.11:5432 tcp SYN',
    },
    {
      name: 'policy verdict audit ICMPv6',
      e: EV.audit,
      want: 'Policy verdict log: flow 0x0 local EP ID db, remote ID 256, proto 58, ingress, action audit, match none, fd00:42::10 -> fd00:42::11 icmpv6 EchoRequest',
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const got = formatMonitor(c.e);
      assert.equal(got, c.want, `got ${got}, want ${c.want}`);
    });
  }
  test('reserved remote identities are named', () => {
    const e = structuredClone(EV.verdict133);
    e.destination = { identity: 2, labels: ['reserved:world'], ip: '8.8.8.8', port: 53 };
    const got = formatMonitor(e);
    assert.ok(got.includes('remote ID world,'), `got ${got}, want "remote ID world,"`);
  });
  test('every random event gives one line', () => {
    const r = new Rand(0x3011);
    for (let i = 0; i < 300; i++) {
      const e = randomFlow(r);
      for (const line of [formatMonitor(e), formatCompact(e)]) {
        assert.ok(line.length > 0 && !line.includes('\n'), `got ${JSON.stringify(line)} for ${JSON.stringify(e)}`);
        assert.ok(!line.includes('undefined'), `got ${line}, want no "undefined"`);
      }
    }
  });
});
