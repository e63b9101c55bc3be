/**
 * Flow events for the observe tests, shaped as src/control/datapath-view.ts toFlow makes
 * them (same optional fields set or left out), plus a seeded random generator.
 */
import type { FlowEvent } from '../../src/api/types.js';
import { Rand } from '../helpers/rand.js';

export const NONE_133 = 'no rule allows this flow: the destination endpoint is default-deny in this direction because a policy selects it';
export const NONE_133_EGRESS = 'no rule allows this flow: the source endpoint is default-deny in this direction because a policy selects it';

type Side = FlowEvent['source'];

function side(identity: number, labels: string[], ip: string, port?: number, endpoint?: string): Side {
  const s: Side = { identity, labels, ip };
  if (endpoint !== undefined) s.endpoint = endpoint;
  if (port !== undefined) s.port = port;
  return s;
}

export interface FlowSpec {
  time?: string;
  verdict?: FlowEvent['verdict'];
  type?: FlowEvent['event_type'];
  dir?: FlowEvent['traffic_direction'];
  reply?: boolean;
  proto?: 'TCP' | 'UDP' | 'ICMPv4' | 'ICMPv6' | 'SCTP';
  flags?: string;
  icmp?: [number, number];
  src: [number, string[], string, number | undefined, string | undefined];
  dst: [number, string[], string, number | undefined, string | undefined];
  reason?: [number, string];
  match?: string;
  policy?: FlowEvent['policy'];
  miss?: boolean;
}

/** Builds a FlowEvent the way toFlow does. */
export function flow(s: FlowSpec): FlowEvent {
  const proto = s.proto ?? 'TCP';
  const icmp = proto === 'ICMPv4' || proto === 'ICMPv6';
  const v6 = s.src[2].includes(':');
  const e: FlowEvent = {
    time: s.time ?? '2024-11-27T13:04:05.123Z',
    verdict: s.verdict ?? 'FORWARDED',
    event_type: s.type ?? 'trace',
    traffic_direction: s.dir ?? 'INGRESS',
    is_reply: s.reply ?? false,
    IP: { ipVersion: v6 ? 'IPv6' : 'IPv4', source: s.src[2], destination: s.dst[2] },
    source: side(s.src[0], s.src[1], s.src[2], icmp ? undefined : s.src[3], s.src[4]),
    destination: side(s.dst[0], s.dst[1], s.dst[2], icmp ? undefined : s.dst[3], s.dst[4]),
    length: 60,
  };
  if (s.miss) e.ipcache_miss = true;
  if (s.reason) {
    e.drop_reason = s.reason[0];
    e.drop_reason_desc = s.reason[1];
  }
  if (e.event_type !== 'trace') e.policy_match_type = s.match ?? 'none';
  if (icmp) {
    e.l4 = { protocol: proto, icmp_type: s.icmp?.[0] ?? 8, icmp_code: s.icmp?.[1] ?? 0 };
  } else {
    e.l4 = { protocol: proto, source_port: s.src[3] ?? 0, destination_port: s.dst[3] ?? 0 };
    if (proto === 'TCP') e.l4.tcp_flags = s.flags ?? 'SYN';
  }
  if (s.policy) e.policy = s.policy;
  return e;
}

const WEB = 'k8s:app=web';
const DB = 'k8s:app=db';

/** Representative events, indexed by name (the order is the order of `CANNED`). */
export const EV = {
  forward: flow({ src: [256, [WEB], '10.42.0.10', 41234, 'web'], dst: [257, [DB], '10.42.0.11', 5432, 'db'] }),
  reply: flow({ reply: true, flags: 'SYN, ACK', dir: 'INGRESS', src: [257, [DB], '10.42.0.11', 5432, 'db'], dst: [256, [WEB], '10.42.0.10', 41234, 'web'] }),
  drop133: flow({
    type: 'drop',
    verdict: 'DROPPED',
    reason: [133, 'Policy denied'],
    src: [256, [WEB], '10.42.0.10', 41235, 'web'],
    dst: [257, [DB], '10.42.0.11', 5432, 'db'],
    policy: { none: NONE_133 },
  }),
  verdict133: flow({
    type: 'policy-verdict',
    verdict: 'DROPPED',
    reason: [133, 'Policy denied'],
    dir: 'EGRESS',
    src: [256, [WEB], '10.42.0.10', 41235, 'web'],
    dst: [257, [DB], '10.42.0.11', 5432, 'db'],
    policy: { none: NONE_133_EGRESS },
  }),
  drop181: flow({
    type: 'drop',
    verdict: 'DROPPED',
    reason: [181, 'Policy denied by denylist'],
    dir: 'EGRESS',
    src: [256, [WEB], '10.42.0.10', 41236, 'web'],
    dst: [257, [DB], '10.42.0.11', 6379, 'db'],
    match: 'L3-L4',
    policy: { name: 'deny-redis', namespace: 'default', rule_index: 1, direction: 'egress', deny: true },
  }),
  allowed: flow({
    type: 'policy-verdict',
    match: 'L3-L4',
    src: [256, [WEB], '10.42.0.10', 41234, 'web'],
    dst: [257, [DB], '10.42.0.11', 5432, 'db'],
    policy: { name: 'allow-web', rule_index: 0, direction: 'ingress', deny: false },
  }),
  miss: flow({
    proto: 'UDP',
    dir: 'EGRESS',
    miss: true,
    src: [256, [WEB], '10.42.0.10', 40000, 'web'],
    dst: [2, ['reserved:world'], '8.8.8.8', 53, undefined],
  }),
  icmp: flow({ proto: 'ICMPv4', icmp: [8, 0], src: [256, [WEB], '10.42.0.10', undefined, 'web'], dst: [257, [DB], '10.42.0.11', undefined, 'db'] }),
  icmpUnreach: flow({
    proto: 'ICMPv4',
    icmp: [3, 3],
    dir: 'EGRESS',
    src: [257, [DB], '10.42.0.11', undefined, 'db'],
    dst: [2, ['reserved:world'], '1.1.1.1', undefined, undefined],
  }),
  v6: flow({
    type: 'drop',
    verdict: 'DROPPED',
    reason: [132, 'Invalid source ip'],
    flags: 'ACK, FIN',
    src: [1, ['reserved:host'], 'fd00:42::10', 41234, undefined],
    dst: [257, [DB], 'fd00:42::11', 80, 'db'],
  }),
  audit: flow({
    type: 'policy-verdict',
    verdict: 'AUDIT',
    proto: 'ICMPv6',
    icmp: [128, 0],
    src: [256, [WEB], 'fd00:42::10', undefined, 'web'],
    dst: [257, [DB], 'fd00:42::11', undefined, 'db'],
    policy: { none: 'no rule decided (policy not enforced)' },
  }),
} satisfies Record<string, FlowEvent>;

/** All of EV, oldest first, each a second apart. */
export const CANNED: FlowEvent[] = Object.values(EV).map((e, i) => ({ ...e, time: new Date(Date.UTC(2024, 10, 27, 13, 4, i, 123)).toISOString() }));

const APPS = ['web', 'db', 'cache', 'api'];

/** A random but well-formed event (for the filter algebra tests). */
export function randomFlow(r: Rand): FlowEvent {
  const ep = (): FlowSpec['src'] => {
    if (r.bool(0.2)) return [r.pick([1, 2]), [r.bool() ? 'reserved:host' : 'reserved:world'], `192.168.${r.int(3)}.${r.int(3)}`, r.pick([53, 80, 40000]), undefined];
    const a = r.int(APPS.length);
    return [256 + a, [`k8s:app=${APPS[a]}`, `k8s:tier=${r.pick(['front', 'back'])}`], `10.42.0.${10 + a}`, r.pick([80, 443, 5432, 41234]), APPS[a]];
  };
  const type = r.pick(['drop', 'trace', 'policy-verdict'] as const);
  const verdict = type === 'drop' ? 'DROPPED' : type === 'trace' ? r.pick(['FORWARDED', 'AUDIT'] as const) : r.pick(['FORWARDED', 'DROPPED', 'AUDIT'] as const);
  const reason: [number, string] | undefined = verdict !== 'DROPPED' ? undefined : r.pick([[133, 'Policy denied'], [181, 'Policy denied by denylist'], [132, 'Invalid source ip'], [196, 'TTL exceeded']] as [number, string][]);
  const spec: FlowSpec = {
    type,
    verdict,
    dir: r.pick(['INGRESS', 'EGRESS'] as const),
    reply: r.bool(0.3),
    proto: r.pick(['TCP', 'UDP', 'ICMPv4', 'SCTP'] as const),
    src: ep(),
    dst: ep(),
  };
  if (reason !== undefined) spec.reason = reason;
  return flow(spec);
}
