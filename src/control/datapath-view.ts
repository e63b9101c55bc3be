/**
 * The control thread's read-only view of the shards: counters, conntrack listings and the
 * event rings, turned into Hubble-like flow events. Conntrack is written only by the shard
 * workers; listing reads it without locks (an entry changing under the reader may show a
 * mixed state, which is acceptable for a listing). A flush is a request the worker carries
 * out at its next batch (ring word R_FLUSH), so the single-writer rule holds.
 */
import { ConntrackTable, ctStateName } from '../tables/conntrack.js';
import { FragmentTable } from '../tables/fragments.js';
import {
  C_DROP_PKTS,
  C_FWD_PKTS,
  EVENT_WORDS,
  EV_DROP,
  EV_POLICY,
  E_BITS,
  E_COOKIE,
  E_DIR,
  E_DST,
  E_DST_EP,
  E_DST_ID,
  E_L3L4,
  E_LENGTH,
  E_PORTS,
  E_REASON,
  E_SRC,
  E_SRC_EP,
  E_SRC_ID,
  E_TIME_MS,
  E_TIME_S,
  E_TYPE,
  E_VERDICT,
  EventRing,
  MAX_REASON,
  NO_INDEX,
  V_AUDIT,
  V_DROPPED,
} from '../tables/events.js';
import { dropReasonText } from '../datapath/drop.js';
import { POLICY_MATCH_NAMES } from '../tables/policy.js';
import { formatV4, formatV6 } from './cidr.js';
import type { CtEntryInfo, FlowEvent } from '../api/types.js';
import { R_FLUSH } from '../runtime/shared.js';

export interface NameResolver {
  identityLabels(id: number): string[];
  endpointName(ep: number): string | undefined;
  ruleName(cookie: number): { name: string; namespace?: string; rule_index: number; direction: string; deny: boolean } | null;
  /** Policies that make endpoint `ep` default-deny in a direction (optional). */
  defaultDenyBy?(ep: number, dir: 'ingress' | 'egress'): string[];
}

const PROTO_NAMES: Record<number, string> = { 1: 'ICMPv4', 6: 'TCP', 17: 'UDP', 58: 'ICMPv6', 132: 'SCTP' };

export function tcpFlagNames(f: number): string {
  const names: string[] = [];
  if (f & 0x02) names.push('SYN');
  if (f & 0x10) names.push('ACK');
  if (f & 0x01) names.push('FIN');
  if (f & 0x04) names.push('RST');
  if (f & 0x08) names.push('PSH');
  if (f & 0x20) names.push('URG');
  return names.join(', ');
}

export class DatapathView {
  readonly ct: ConntrackTable[];
  readonly frags: FragmentTable[];
  readonly counters: Float64Array[];
  readonly rings: EventRing[];
  readonly shardRings: Int32Array[];

  constructor(
    conntrack: SharedArrayBuffer[],
    counters: SharedArrayBuffer[],
    events: SharedArrayBuffer[],
    shardRings: SharedArrayBuffer[],
    fragments: SharedArrayBuffer[] = [],
  ) {
    this.ct = conntrack.map((s) => ConntrackTable.attach(s, 0));
    this.frags = fragments.map((s) => FragmentTable.attach(s, 0));
    this.counters = counters.map((s) => new Float64Array(s));
    this.rings = events.map((s) => new EventRing(s));
    this.shardRings = shardRings.map((s) => new Int32Array(s));
  }

  totals(): { forwarded: number; dropped: number } {
    let forwarded = 0;
    let dropped = 0;
    for (const c of this.counters) {
      forwarded += (c[C_FWD_PKTS] as number) + (c[C_FWD_PKTS + 1] as number);
      for (let r = 0; r < MAX_REASON * 2; r++) dropped += c[C_DROP_PKTS + r] as number;
    }
    return { forwarded, dropped };
  }

  /** Sum of counter slot `i` over shards. */
  sum(i: number): number {
    let s = 0;
    for (const c of this.counters) s += c[i] as number;
    return s;
  }

  listCt(): CtEntryInfo[] {
    const now = Date.now() / 1000;
    const out: CtEntryInfo[] = [];
    this.ct.forEach((t, shard) => {
      t.forEach((idx) => {
        const fam = t.family(idx);
        const fmt = (w: (i: number) => number): string => (fam === 4 ? formatV4(w(0)) : `[${formatV6([w(0), w(1), w(2), w(3)])}]`);
        const proto = t.proto(idx);
        const src = fmt((i) => t.srcWord(idx, i));
        const dst = fmt((i) => t.dstWord(idx, i));
        const flags = t.flags(idx);
        out.push({
          shard,
          proto: PROTO_NAMES[proto] ?? String(proto),
          src: `${src}:${t.sport(idx)}`,
          dst: `${dst}:${t.dport(idx)}`,
          state: t.isClosing(idx) ? 'closing' : t.replySeen(idx) ? 'established' : 'new',
          expiresIn: Math.max(0, Math.round(t.expires(idx) - now)),
          identity: t.identity(idx),
          packets: t.packets(idx, 0) + t.packets(idx, 1),
          bytes: t.bytes(idx, 0) + t.bytes(idx, 1),
          flags: proto === 6 ? `tx[${tcpFlagNames(flags & 0xff)}] rx[${tcpFlagNames((flags >>> 8) & 0xff)}]` : '',
        });
      });
    });
    return out;
  }

  flushCt(): { flushed: number } {
    let n = 0;
    for (const t of this.ct) n += t.count;
    for (const r of this.shardRings) Atomics.add(r, R_FLUSH, 1);
    return { flushed: n };
  }

  lostEvents(): number {
    let n = 0;
    for (const r of this.rings) n += r.lost();
    return n;
  }

  /** Reads every pending event record and hands it to `fn` as a FlowEvent. */
  drainEvents(names: NameResolver, fn: (e: FlowEvent) => void): number {
    let total = 0;
    for (const ring of this.rings) {
      const n = ring.available();
      for (let k = 0; k < n; k++) fn(toFlow(ring.rec, ring.peek(k), names));
      if (n > 0) ring.consume(n);
      total += n;
    }
    return total;
  }
}

export function toFlow(r: Uint32Array, b: number, names: NameResolver): FlowEvent {
  const type = r[b + E_TYPE] as number;
  const l3l4 = r[b + E_L3L4] as number;
  const fam = l3l4 >>> 8;
  const proto = l3l4 & 0xff;
  const bits = r[b + E_BITS] as number;
  const ip = (base: number): string => (fam === 4 ? formatV4(r[base] as number) : formatV6([r[base] as number, r[base + 1] as number, r[base + 2] as number, r[base + 3] as number]));
  const ports = r[b + E_PORTS] as number;
  const isIcmp = proto === 1 || proto === 58;
  const verdictNum = r[b + E_VERDICT] as number;
  const srcId = r[b + E_SRC_ID] as number;
  const dstId = r[b + E_DST_ID] as number;
  const srcEp = r[b + E_SRC_EP] as number;
  const dstEp = r[b + E_DST_EP] as number;
  const ms = r[b + E_TIME_MS] as number;
  const reason = r[b + E_REASON] as number;
  const matchType = (bits >>> 12) & 0xf;
  const ev: FlowEvent = {
    time: new Date((r[b + E_TIME_S] as number) * 1000 + ms).toISOString(),
    verdict: verdictNum === V_DROPPED ? 'DROPPED' : verdictNum === V_AUDIT ? 'AUDIT' : 'FORWARDED',
    event_type: type === EV_DROP ? 'drop' : type === EV_POLICY ? 'policy-verdict' : 'trace',
    traffic_direction: (r[b + E_DIR] as number) === 0 ? 'INGRESS' : 'EGRESS',
    is_reply: ((bits >>> 16) & 1) === 1,
    IP: { ipVersion: fam === 4 ? 'IPv4' : 'IPv6', source: ip(b + E_SRC), destination: ip(b + E_DST) },
    source: { identity: srcId, labels: names.identityLabels(srcId), ip: ip(b + E_SRC) },
    destination: { identity: dstId, labels: names.identityLabels(dstId), ip: ip(b + E_DST) },
    length: r[b + E_LENGTH] as number,
  };
  if (((bits >>> 17) & 1) === 1) ev.ipcache_miss = true;
  if (reason !== 0) {
    ev.drop_reason = reason;
    ev.drop_reason_desc = dropReasonText(reason);
  }
  if (type === EV_POLICY || type === EV_DROP) ev.policy_match_type = POLICY_MATCH_NAMES[matchType] ?? String(matchType);
  const srcName = srcEp === NO_INDEX ? undefined : names.endpointName(srcEp);
  const dstName = dstEp === NO_INDEX ? undefined : names.endpointName(dstEp);
  if (srcName) ev.source.endpoint = srcName;
  if (dstName) ev.destination.endpoint = dstName;
  if (isIcmp) {
    ev.l4 = { protocol: proto === 1 ? 'ICMPv4' : 'ICMPv6', icmp_type: (ports >>> 8) & 0xff, icmp_code: ports & 0xff };
  } else {
    ev.l4 = { protocol: PROTO_NAMES[proto] ?? String(proto), source_port: ports >>> 16, destination_port: ports & 0xffff };
    ev.source.port = ports >>> 16;
    ev.destination.port = ports & 0xffff;
    if (proto === 6) ev.l4.tcp_flags = tcpFlagNames(bits & 0xff);
  }
  const cookie = r[b + E_COOKIE] as number;
  if (type === EV_POLICY || (type === EV_DROP && (reason === 133 || reason === 181))) {
    const rule = cookie === NO_INDEX ? null : names.ruleName(cookie);
    let none = 'no rule decided (policy not enforced)';
    if (reason === 133) {
      const ingress = ev.traffic_direction === 'INGRESS';
      const ep = ingress ? dstEp : srcEp;
      const by = ep !== NO_INDEX && names.defaultDenyBy ? names.defaultDenyBy(ep, ingress ? 'ingress' : 'egress') : [];
      const who = ingress ? 'destination' : 'source';
      none =
        by.length > 0
          ? `no rule allows this flow; the ${who} endpoint is default-deny for ${ingress ? 'ingress' : 'egress'} because policy ${by.map((n) => `"${n}"`).join(', ')} selects it`
          : `no rule allows this flow: the ${who} endpoint is default-deny in this direction because a policy selects it`;
    }
    ev.policy = rule ?? { none };
  }
  return ev;
}

export { EVENT_WORDS, ctStateName };
