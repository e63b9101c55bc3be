/**
 * Flow filters for `tunswitch observe` and `tunswitch monitor`, with Hubble's flag names.
 *
 * How filters combine (as in Hubble, where repeated values of one field of a FlowFilter are
 * alternatives and the fields are all required):
 *   1. Values given to the same flag are ORed: `--verdict DROPPED --verdict AUDIT`.
 *   2. Different flags are ANDed: `--verdict DROPPED --to-label app=db`.
 *   3. "Either side" flags (`--ip`, `--port`, `--label`, `--identity`, `--endpoint`) match
 *      when the source or the destination matches.
 *
 * Every value is checked when the filter is built; a bad one is a FilterError whose one-line
 * message names the flag: `--verdict: "DENY" is not one of FORWARDED, DROPPED, AUDIT`.
 * The predicate itself never throws.
 */
import { BlockList, isIP } from 'node:net';
import type { FlowEvent } from '../api/types.js';
import { TunswitchError } from '../control/errors.js';
import { DROP_REASONS, dropReasonName } from '../datapath/drop.js';
import { HUBBLE_DROP_REASONS, TCP_FLAG_NAMES } from './hubble.js';
import { IPPROTO_ICMP, PROTO_NAMES } from '../proto/ip.js';

/** A predicate over flow events; true means "show it". */
export type FlowPredicate = (e: FlowEvent) => boolean;

/** A bad filter value. The message names the flag. */
export class FilterError extends TunswitchError {
  readonly flag: string;
  constructor(flag: string, message: string) {
    super('EBAD_REQUEST', `${flag}: ${message}`);
    this.name = 'FilterError';
    this.flag = flag;
  }
}

/** Raw flag values, as commander hands them over (camelCase keys; one value or a list). */
export type FilterOptions = { [K in FilterKey]?: string | number | readonly (string | number)[] };

/** Each filter flag: its commander key, its long flag, a metavar and a help line. */
export const FILTER_FLAGS = [
  { key: 'verdict', flag: '--verdict', arg: 'verdict', help: 'FORWARDED, DROPPED or AUDIT' },
  { key: 'type', flag: '-t, --type', arg: 'type', help: 'event type: drop, trace or policy-verdict' },
  { key: 'label', flag: '-l, --label', arg: 'key=value', help: 'a label of the source or the destination (app=web, k8s:app=web, reserved:world)' },
  { key: 'fromLabel', flag: '--from-label', arg: 'key=value', help: 'a label of the source' },
  { key: 'toLabel', flag: '--to-label', arg: 'key=value', help: 'a label of the destination' },
  { key: 'identity', flag: '--identity', arg: 'id', help: 'security identity of the source or the destination' },
  { key: 'fromIdentity', flag: '--from-identity', arg: 'id', help: 'security identity of the source' },
  { key: 'toIdentity', flag: '--to-identity', arg: 'id', help: 'security identity of the destination' },
  { key: 'ip', flag: '--ip', arg: 'ip|cidr', help: 'source or destination address (or prefix)' },
  { key: 'fromIp', flag: '--from-ip', arg: 'ip|cidr', help: 'source address (or prefix)' },
  { key: 'toIp', flag: '--to-ip', arg: 'ip|cidr', help: 'destination address (or prefix)' },
  { key: 'port', flag: '--port', arg: 'port', help: 'source or destination L4 port' },
  { key: 'fromPort', flag: '--from-port', arg: 'port', help: 'source L4 port' },
  { key: 'toPort', flag: '--to-port', arg: 'port', help: 'destination L4 port' },
  { key: 'protocol', flag: '--protocol', arg: 'proto', help: 'tcp, udp, icmp (v4), icmpv6 or sctp' },
  { key: 'dropReasonDesc', flag: '--drop-reason-desc', arg: 'reason', help: 'drop reason: a name (POLICY_DENIED, POLICY_DENY) or part of its text ("policy denied")' },
  { key: 'endpoint', flag: '--endpoint', arg: 'name', help: 'endpoint name of the source or the destination' },
  { key: 'fromEndpoint', flag: '--from-endpoint', arg: 'name', help: 'endpoint name of the source' },
  { key: 'toEndpoint', flag: '--to-endpoint', arg: 'name', help: 'endpoint name of the destination' },
  { key: 'pod', flag: '--pod', arg: '[namespace/]name', help: "Hubble's pod filter: endpoint name of the source or the destination (a name prefix, as Hubble)" },
  { key: 'fromPod', flag: '--from-pod', arg: '[namespace/]name', help: 'endpoint name (prefix) of the source' },
  { key: 'toPod', flag: '--to-pod', arg: '[namespace/]name', help: 'endpoint name (prefix) of the destination' },
  { key: 'tcpFlags', flag: '--tcp-flags', arg: 'flags', help: 'TCP flags that must all be set, comma-separated: SYN, SYN,ACK, RST, FIN, PSH, URG' },
  { key: 'ipVersion', flag: '--ip-version', arg: 'v4|v6', help: 'IP version (also -4, -6)' },
  { key: 'trafficDirection', flag: '--traffic-direction', arg: 'dir', help: 'ingress or egress' },
] as const;

export type FilterKey = (typeof FILTER_FLAGS)[number]['key'];

/** The long flag of a FILTER_FLAGS entry (`-t, --type` → `--type`). */
export function longFlag(flag: string): string {
  return flag.slice(flag.lastIndexOf(' ') + 1);
}

export const VERDICTS: readonly FlowEvent['verdict'][] = ['FORWARDED', 'DROPPED', 'AUDIT'];
export const EVENT_TYPES: readonly FlowEvent['event_type'][] = ['drop', 'trace', 'policy-verdict'];

/** --protocol value → the l4.protocol name toFlow writes. */
const PROTOCOLS: Readonly<Record<string, string>> = {
  ...Object.fromEntries(Object.values(PROTO_NAMES).map((n) => [n.toLowerCase(), n])),
  icmp: PROTO_NAMES[IPPROTO_ICMP] as string,
};

/** All names a drop code answers to (upper case, without DROP_). */
function dropNames(code: number): string[] {
  const hubble = HUBBLE_DROP_REASONS[code];
  return hubble !== undefined ? [dropReasonName(code), hubble] : [dropReasonName(code)];
}

function listOf(v: FilterOptions[FilterKey]): string[] {
  if (v === undefined) return [];
  return (Array.isArray(v) ? v : [v]).map((x) => String(x));
}

function quote(s: string): string {
  return JSON.stringify(s);
}

// ---------------------------------------------------------------------------------------------
// Value parsers. Each returns a matcher over one side (or the whole event) or throws FilterError.

type Side = FlowEvent['source'];

/** A parsed label filter: `[source:]key[=value]`; source '' or 'any' matches every source. */
interface LabelFilter {
  source: string;
  key: string;
  value: string | null;
}

function splitLabel(s: string): LabelFilter {
  const eq = s.indexOf('=');
  const head = eq < 0 ? s : s.slice(0, eq);
  const value = eq < 0 ? null : s.slice(eq + 1);
  const colon = head.indexOf(':');
  return colon < 0 ? { source: '', key: head, value } : { source: head.slice(0, colon), key: head.slice(colon + 1), value };
}

function parseLabel(flag: string, s: string): (side: Side) => boolean {
  const f = splitLabel(s);
  if (s === '' || /\s/.test(s) || f.key === '') throw new FilterError(flag, `${quote(s)} is not a label (key=value, source:key=value or key)`);
  return (side) =>
    side.labels.some((l) => {
      const have = splitLabel(l);
      if (f.source !== '' && f.source !== 'any' && f.source !== have.source) return false;
      if (f.key !== have.key) return false;
      return f.value === null || f.value === (have.value ?? '');
    });
}

function parseIdentity(flag: string, s: string): number {
  if (!/^\d+$/.test(s) || Number(s) > 0xffffffff) throw new FilterError(flag, `${quote(s)} is not an identity number`);
  return Number(s);
}

function parsePort(flag: string, s: string): number {
  if (!/^\d+$/.test(s) || Number(s) > 65535) throw new FilterError(flag, `${quote(s)} is not a port (0-65535)`);
  return Number(s);
}

/** An address or a prefix; a bare address is its own /32 or /128. */
function parseAddr(flag: string, s: string): (ip: string) => boolean {
  const slash = s.indexOf('/');
  const addr = slash < 0 ? s : s.slice(0, slash);
  const fam = isIP(addr);
  const max = fam === 6 ? 128 : 32;
  const lenText = slash < 0 ? String(max) : s.slice(slash + 1);
  if (fam === 0 || !/^\d{1,3}$/.test(lenText) || Number(lenText) > max) throw new FilterError(flag, `${quote(s)} is not an IP address or prefix`);
  const type = fam === 6 ? 'ipv6' : 'ipv4';
  const list = new BlockList();
  list.addSubnet(addr, Number(lenText), type);
  return (ip) => isIP(ip) === fam && list.check(ip, type);
}

function parseDropReason(flag: string, s: string): (e: FlowEvent) => boolean {
  const text = s.trim().toLowerCase();
  if (text === '') throw new FilterError(flag, 'must not be empty');
  const name = s.trim().toUpperCase().replace(/^DROP_/, '');
  const byName = (code: number): boolean => dropNames(code).includes(name);
  const byText = (desc: string): boolean => desc.toLowerCase().includes(text);
  // A value that names no reason and is part of no reason's text is a typo, not an empty result.
  if (!DROP_REASONS.some((d) => d.code !== 0 && (byName(d.code) || byText(d.text)))) {
    throw new FilterError(flag, `${quote(s)} is neither a drop reason name (e.g. POLICY_DENIED, POLICY_DENY) nor part of a drop reason text (e.g. "policy denied")`);
  }
  return (e) => e.drop_reason !== undefined && e.drop_reason !== 0 && (byName(e.drop_reason) || byText(e.drop_reason_desc ?? ''));
}

function oneOf<T extends string>(flag: string, s: string, allowed: readonly T[], normalise: (s: string) => string): T {
  const v = normalise(s);
  if (!(allowed as readonly string[]).includes(v)) throw new FilterError(flag, `${quote(s)} is not one of ${allowed.join(', ')}`);
  return v as T;
}

function srcPort(e: FlowEvent): number | undefined {
  return e.source.port ?? e.l4?.source_port;
}
function dstPort(e: FlowEvent): number | undefined {
  return e.destination.port ?? e.l4?.destination_port;
}

/** Builds the matcher for one flag from its values (ORed); null when the flag is absent. */
function flagMatcher(key: FilterKey, flag: string, values: string[]): FlowPredicate | null {
  if (values.length === 0) return null;
  const any = <T>(parse: (s: string) => T, test: (e: FlowEvent, v: T) => boolean): FlowPredicate => {
    const parsed = values.map(parse);
    return (e) => parsed.some((v) => test(e, v));
  };
  switch (key) {
    case 'verdict':
      return any((s) => oneOf(flag, s, VERDICTS, (x) => x.toUpperCase()), (e, v) => e.verdict === v);
    case 'type':
      return any((s) => oneOf(flag, s, EVENT_TYPES, (x) => x.toLowerCase()), (e, v) => e.event_type === v);
    case 'label':
      return any((s) => parseLabel(flag, s), (e, m) => m(e.source) || m(e.destination));
    case 'fromLabel':
      return any((s) => parseLabel(flag, s), (e, m) => m(e.source));
    case 'toLabel':
      return any((s) => parseLabel(flag, s), (e, m) => m(e.destination));
    case 'identity':
      return any((s) => parseIdentity(flag, s), (e, id) => e.source.identity === id || e.destination.identity === id);
    case 'fromIdentity':
      return any((s) => parseIdentity(flag, s), (e, id) => e.source.identity === id);
    case 'toIdentity':
      return any((s) => parseIdentity(flag, s), (e, id) => e.destination.identity === id);
    case 'ip':
      return any((s) => parseAddr(flag, s), (e, m) => m(e.IP.source) || m(e.IP.destination));
    case 'fromIp':
      return any((s) => parseAddr(flag, s), (e, m) => m(e.IP.source));
    case 'toIp':
      return any((s) => parseAddr(flag, s), (e, m) => m(e.IP.destination));
    case 'port':
      return any((s) => parsePort(flag, s), (e, p) => srcPort(e) === p || dstPort(e) === p);
    case 'fromPort':
      return any((s) => parsePort(flag, s), (e, p) => srcPort(e) === p);
    case 'toPort':
      return any((s) => parsePort(flag, s), (e, p) => dstPort(e) === p);
    case 'protocol':
      return any(
        (s) => {
          const p = PROTOCOLS[s.toLowerCase()];
          if (p === undefined) throw new FilterError(flag, `${quote(s)} is not one of tcp, udp, icmp, icmpv6, sctp`);
          return p;
        },
        (e, p) => e.l4?.protocol === p,
      );
    case 'dropReasonDesc':
      return any((s) => parseDropReason(flag, s), (e, m) => m(e));
    case 'endpoint':
    case 'fromEndpoint':
    case 'toEndpoint': {
      const names = values.map((s) => {
        if (s === '') throw new FilterError(flag, 'must not be empty');
        return s;
      });
      const from = key !== 'toEndpoint';
      const to = key !== 'fromEndpoint';
      return (e) => names.some((n) => (from && e.source.endpoint === n) || (to && e.destination.endpoint === n));
    }
    case 'pod':
    case 'fromPod':
    case 'toPod': {
      // Hubble: "[namespace/]pod-name-prefix"; tunswitch endpoints have names and no namespace.
      const prefixes = values.map((s) => {
        const name = s.slice(s.indexOf('/') + 1);
        if (s === '') throw new FilterError(flag, 'must not be empty');
        return name;
      });
      const from = key !== 'toPod';
      const to = key !== 'fromPod';
      const hit = (ep: string | undefined, p: string): boolean => ep !== undefined && ep.startsWith(p);
      return (e) => prefixes.some((p) => (from && hit(e.source.endpoint, p)) || (to && hit(e.destination.endpoint, p)));
    }
    case 'tcpFlags':
      return any(
        (s) => {
          const want = s.toUpperCase().split(',').map((x) => x.trim()).filter((x) => x !== '');
          const bad = want.find((x) => !(TCP_FLAG_NAMES as readonly string[]).includes(x));
          if (want.length === 0 || bad !== undefined) throw new FilterError(flag, `${quote(s)} is not a list of TCP flags (${TCP_FLAG_NAMES.join(', ')})`);
          return want;
        },
        (e, want) => {
          if (e.l4?.protocol !== 'TCP') return false;
          const have = (e.l4.tcp_flags ?? '').split(/[\s,]+/);
          return want.every((f) => have.includes(f));
        },
      );
    case 'ipVersion':
      return any(
        (s) => {
          const v = s.toLowerCase().replace(/^ip/, '');
          if (v !== 'v4' && v !== 'v6' && v !== '4' && v !== '6') throw new FilterError(flag, `${quote(s)} is not one of v4, v6`);
          return v.endsWith('4') ? 'IPv4' : 'IPv6';
        },
        (e, v) => e.IP.ipVersion === v,
      );
    case 'trafficDirection':
      return any((s) => oneOf(flag, s, ['INGRESS', 'EGRESS'] as const, (x) => x.toUpperCase()), (e, d) => e.traffic_direction === d);
  }
}

/**
 * Builds one predicate from the filter flags. Throws FilterError (naming the flag) on the
 * first bad value. With no flags set, every event matches.
 */
export function parseFilters(opts: FilterOptions): FlowPredicate {
  const parts: FlowPredicate[] = [];
  for (const f of FILTER_FLAGS) {
    const m = flagMatcher(f.key, longFlag(f.flag), listOf(opts[f.key]));
    if (m !== null) parts.push(m);
  }
  if (parts.length === 0) return () => true;
  return (e) => parts.every((p) => p(e));
}
