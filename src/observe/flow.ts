/**
 * Event records → Hubble-like flow events (the API's FlowEvent). The control thread drains
 * the shard rings (control/datapath-view.ts) and hands each record here through the one
 * record decoder, EventReader (tables/events.ts). Names (identity labels, endpoint names,
 * rules) come from the control plane through NameResolver.
 */
import type { FlowEvent } from '../api/types.js';
import { DROP_POLICY, DROP_POLICY_DENY, dropReasonText } from '../datapath/drop.js';
import { EV_DROP, EV_POLICY, NO_INDEX, V_AUDIT, V_DROPPED, type EventReader } from '../tables/events.js';
import { POLICY_MATCH_NAMES } from '../tables/policy.js';
import { DIR_INGRESS } from '../proto/direction.js';
import { IPPROTO_ICMP, IPPROTO_TCP, isIcmp, protoName, tcpFlagNames } from '../proto/ip.js';
import { formatV4, formatV6 } from '../proto/prefix.js';

export interface NameResolver {
  identityLabels(id: number): string[];
  endpointName(ep: number): string | undefined;
  ruleName(cookie: number): { name: string; namespace?: string; rule_index: number; direction: string; deny: boolean } | null;
  /** Policies that make endpoint `ep` default-deny in a direction (optional). */
  defaultDenyBy?(ep: number, dir: 'ingress' | 'egress'): string[];
  /** kvstore mode: this switch's node name (the flow's node_name and its local endpoints' node). */
  localNode?: string;
  /** kvstore mode: the node that published a remote address (its ipcache entry), if any. */
  remoteNode?(ip: string): string | undefined;
}

const POLICY_CODE = -DROP_POLICY;
const POLICY_DENY_CODE = -DROP_POLICY_DENY;

function address(r: EventReader, src: boolean): string {
  const w = (i: number): number => (src ? r.src(i) : r.dst(i));
  return r.family === 4 ? formatV4(w(0)) : formatV6([w(0), w(1), w(2), w(3)]);
}

/** Why a policy drop happened when no rule decided it (default deny). */
function noRuleReason(r: EventReader, ingress: boolean, names: NameResolver): string {
  if (r.reason !== POLICY_CODE) return 'no rule decided (policy not enforced)';
  const ep = ingress ? r.dstEp : r.srcEp;
  const by = ep !== NO_INDEX && names.defaultDenyBy ? names.defaultDenyBy(ep, ingress ? 'ingress' : 'egress') : [];
  const who = ingress ? 'destination' : 'source';
  return by.length > 0
    ? `no rule allows this flow; the ${who} endpoint is default-deny for ${ingress ? 'ingress' : 'egress'} because policy ${by.map((n) => `"${n}"`).join(', ')} selects it`
    : `no rule allows this flow: the ${who} endpoint is default-deny in this direction because a policy selects it`;
}

/** The flow event for the record the reader is positioned at. */
export function toFlow(r: EventReader, names: NameResolver): FlowEvent {
  const type = r.type;
  const proto = r.proto;
  const verdict = r.verdict;
  const srcId = r.srcId;
  const dstId = r.dstId;
  const srcEp = r.srcEp;
  const dstEp = r.dstEp;
  const reason = r.reason;
  const ingress = r.dir === DIR_INGRESS;
  const src = address(r, true);
  const dst = address(r, false);
  const ev: FlowEvent = {
    time: new Date(r.timeS * 1000 + r.timeMs).toISOString(),
    verdict: verdict === V_DROPPED ? 'DROPPED' : verdict === V_AUDIT ? 'AUDIT' : 'FORWARDED',
    event_type: type === EV_DROP ? 'drop' : type === EV_POLICY ? 'policy-verdict' : 'trace',
    traffic_direction: ingress ? 'INGRESS' : 'EGRESS',
    is_reply: r.isReply,
    IP: { ipVersion: r.family === 4 ? 'IPv4' : 'IPv6', source: src, destination: dst },
    source: { identity: srcId, labels: names.identityLabels(srcId), ip: src },
    destination: { identity: dstId, labels: names.identityLabels(dstId), ip: dst },
    length: r.length,
  };
  if (r.ipcacheMiss) ev.ipcache_miss = true;
  if (reason !== 0) {
    ev.drop_reason = reason;
    ev.drop_reason_desc = dropReasonText(reason);
  }
  const matchType = r.matchType;
  if (type === EV_POLICY || type === EV_DROP) ev.policy_match_type = POLICY_MATCH_NAMES[matchType] ?? String(matchType);
  const srcName = srcEp === NO_INDEX ? undefined : names.endpointName(srcEp);
  const dstName = dstEp === NO_INDEX ? undefined : names.endpointName(dstEp);
  if (srcName) ev.source.endpoint = srcName;
  if (dstName) ev.destination.endpoint = dstName;
  if (names.localNode !== undefined) {
    ev.node_name = names.localNode;
    const sn = srcEp !== NO_INDEX ? names.localNode : names.remoteNode?.(src);
    const dn = dstEp !== NO_INDEX ? names.localNode : names.remoteNode?.(dst);
    if (sn !== undefined) ev.source.node = sn;
    if (dn !== undefined) ev.destination.node = dn;
  }
  if (isIcmp(proto)) {
    ev.l4 = { protocol: proto === IPPROTO_ICMP ? 'ICMPv4' : 'ICMPv6', icmp_type: r.icmpType, icmp_code: r.icmpCode };
  } else {
    ev.l4 = { protocol: protoName(proto), source_port: r.sport, destination_port: r.dport };
    ev.source.port = r.sport;
    ev.destination.port = r.dport;
    if (proto === IPPROTO_TCP) ev.l4.tcp_flags = tcpFlagNames(r.tcpFlags);
  }
  if (type === EV_POLICY || (type === EV_DROP && (reason === POLICY_CODE || reason === POLICY_DENY_CODE))) {
    const cookie = r.cookie;
    const rule = cookie === NO_INDEX ? null : names.ruleName(cookie);
    ev.policy = rule ?? { none: noRuleReason(r, ingress, names) };
  }
  return ev;
}
