/**
 * Printing flow events: Hubble's output modes for `tunswitch observe` (compact, table, json)
 * and `cilium monitor`-like lines for `tunswitch monitor`.
 *
 * Compact line, in order:
 *   1. the time, `Nov 27 13:04:05.123` in local time (Go's StampMilli, as Hubble prints it);
 *   2. source and destination, each `name:port (ID:n)`: the endpoint name when the event has
 *      one, else the address (`[v6]:port`); `(world)`, `(host)`... for reserved identities;
 *      a reply is printed the other way round with `<-`, so both directions of a connection
 *      read client-first, as Hubble does;
 *   3. the event type: the trace point (`to-endpoint`, `to-stack`), the drop reason text, or
 *      `policy-verdict:<match> <DIRECTION>`;
 *   4. the verdict (a policy verdict says ALLOWED / DENIED / AUDIT, as Hubble does);
 *   5. the summary in parentheses (`TCP Flags: SYN`, `ICMPv4 EchoRequest`, `UDP`);
 *   6. tunswitch's additions: ` [dst not in ipcache: world]` when the destination missed the
 *      ipcache, and ` policy=<ns/>name[rule N]` (the rule that decided) or, for a policy
 *      drop that no rule decided, ` policy=none (<why>)`.
 */
import type { FlowEvent } from '../api/types.js';
import { formatTable as alignedTable, type Cell } from '../text/table.js';
import { getFlowsResponse, toProtoJson } from './hubble.js';
import { PROTO_NUMBERS } from '../proto/ip.js';
import { reservedName as reservedIdentityName } from '../proto/identity.js';

type Side = FlowEvent['source'];

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

const ICMP4_TYPES: Readonly<Record<number, string>> = {
  0: 'EchoReply',
  3: 'DestinationUnreachable',
  4: 'SourceQuench',
  5: 'Redirect',
  8: 'EchoRequest',
  11: 'TimeExceeded',
  12: 'ParameterProblem',
  13: 'TimestampRequest',
  14: 'TimestampReply',
};

const ICMP6_TYPES: Readonly<Record<number, string>> = {
  1: 'DestinationUnreachable',
  2: 'PacketTooBig',
  3: 'TimeExceeded',
  4: 'ParameterProblem',
  128: 'EchoRequest',
  129: 'EchoReply',
  133: 'RouterSolicitation',
  134: 'RouterAdvertisement',
  135: 'NeighborSolicitation',
  136: 'NeighborAdvertisement',
  137: 'Redirect',
};

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** `Nov 27 13:04:05.123` (day padded with a space, as Go's `Jan _2`), local time. */
export function formatTime(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const day = d.getDate();
  const ms = String(d.getMilliseconds()).padStart(3, '0');
  return `${MONTHS[d.getMonth()]} ${day < 10 ? ' ' : ''}${day} ${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}.${ms}`;
}

/** `(ID:256)`, or `(world)` / `(host)` ... for a reserved identity (named by its labels). */
export function identityTag(side: Side): string {
  const name = reservedName(side);
  return name === null ? `(ID:${side.identity})` : `(${name})`;
}

function reservedName(side: Side): string | null {
  if (side.identity <= 0 || side.identity >= 256) return null;
  const label = side.labels.find((l) => l.startsWith('reserved:'));
  if (label !== undefined) return label.slice('reserved:'.length).split('=')[0] as string;
  return reservedIdentityName(side.identity) ?? null;
}

function isIcmp(e: FlowEvent): boolean {
  const p = e.l4?.protocol;
  return p === 'ICMPv4' || p === 'ICMPv6';
}

/** `addr:port` with IPv6 in brackets; the bare address when there is no port. */
function ipPort(ip: string, port: number | undefined): string {
  if (port === undefined) return ip;
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

function sidePort(e: FlowEvent, side: Side, which: 'source_port' | 'destination_port'): number | undefined {
  if (isIcmp(e)) return undefined;
  return side.port ?? e.l4?.[which];
}

/** Whether the flow's two sides are on different nodes (kvstore mode). */
export function crossNode(e: FlowEvent): boolean {
  const s = e.source.node;
  const d = e.destination.node;
  return (s !== undefined || d !== undefined) && s !== d;
}

/** `web:41234`, or the address when the side is not a local endpoint; ` [node]` on a flow between nodes. */
function hostOf(e: FlowEvent, side: Side, which: 'source_port' | 'destination_port'): string {
  const port = sidePort(e, side, which);
  const at = crossNode(e) && side.node !== undefined ? ` [${side.node}]` : '';
  if (side.endpoint !== undefined && side.endpoint !== '') return (port === undefined ? side.endpoint : `${side.endpoint}:${port}`) + at;
  return ipPort(side.ip, port) + at;
}

function icmpText(e: FlowEvent): string {
  const l4 = e.l4;
  if (l4 === undefined) return '';
  const names = l4.protocol === 'ICMPv6' ? ICMP6_TYPES : ICMP4_TYPES;
  const type = l4.icmp_type ?? 0;
  const code = l4.icmp_code ?? 0;
  const name = names[type] ?? `Type${type}`;
  return code === 0 ? name : `${name}(code ${code})`;
}

/** Hubble's summary: `TCP Flags: SYN`, `UDP`, `ICMPv4 EchoRequest`. */
export function summaryOf(e: FlowEvent): string {
  const l4 = e.l4;
  if (l4 === undefined) return e.IP.ipVersion;
  if (l4.protocol === 'TCP') return l4.tcp_flags ? `TCP Flags: ${l4.tcp_flags}` : 'TCP';
  if (isIcmp(e)) return `${l4.protocol} ${icmpText(e)}`;
  return l4.protocol;
}

/** Where a forwarded packet went: to a local endpoint, or out of the switch to the host stack. */
function tracePoint(e: FlowEvent): string {
  if (e.destination.node !== undefined && e.node_name !== undefined && e.destination.node !== e.node_name) return 'to-overlay';
  return e.destination.endpoint !== undefined || e.traffic_direction === 'INGRESS' ? 'to-endpoint' : 'to-stack';
}

/** The TYPE column: `to-endpoint`, `Policy denied`, `policy-verdict:L3-L4 INGRESS`. */
export function flowType(e: FlowEvent): string {
  switch (e.event_type) {
    case 'trace':
      return tracePoint(e);
    case 'drop':
      return e.drop_reason_desc ?? (e.drop_reason !== undefined ? `Drop reason ${e.drop_reason}` : 'drop');
    case 'policy-verdict':
      return `policy-verdict:${e.policy_match_type ?? 'none'} ${e.traffic_direction}`;
  }
  return String(e.event_type);
}

/** The VERDICT column: a policy verdict says ALLOWED / DENIED; other events their verdict. */
export function verdictText(e: FlowEvent): string {
  if (e.event_type === 'policy-verdict') {
    if (e.verdict === 'FORWARDED') return 'ALLOWED';
    if (e.verdict === 'DROPPED') return 'DENIED';
  }
  return e.verdict;
}

/** `default/allow-web[rule 0]` for the rule that decided, or null. */
export function policyRuleName(e: FlowEvent): string | null {
  const p = e.policy;
  if (p === undefined || 'none' in p) return null;
  return `${p.namespace ? `${p.namespace}/` : ''}${p.name}[rule ${p.rule_index}]`;
}

/** tunswitch's additions after the summary (each starts with a space), or ''. */
export function extrasOf(e: FlowEvent): string {
  let s = '';
  if (e.ipcache_miss === true) s += ' [dst not in ipcache: world]';
  const p = e.policy;
  if (p !== undefined) {
    const rule = policyRuleName(e);
    if (rule !== null) s += ` policy=${rule}`;
    else if ('none' in p && e.verdict === 'DROPPED') s += ` policy=none (${p.none})`;
  }
  return s;
}

/** One Hubble-style line, without a newline. */
export function formatCompact(e: FlowEvent): string {
  let left = `${hostOf(e, e.source, 'source_port')} ${identityTag(e.source)}`;
  let right = `${hostOf(e, e.destination, 'destination_port')} ${identityTag(e.destination)}`;
  let arrow = '->';
  if (e.is_reply) {
    const t = left;
    left = right;
    right = t;
    arrow = '<-';
  }
  return `${formatTime(e.time)}: ${left} ${arrow} ${right} ${flowType(e)} ${verdictText(e)} (${summaryOf(e)})${extrasOf(e)}`;
}

/** One JSON object (the FlowEvent as is, Hubble field names), without a newline. */
export function formatJson(e: FlowEvent): string {
  return JSON.stringify(e);
}

export const TABLE_HEADERS = ['TIME', 'SOURCE', 'DESTINATION', 'TYPE', 'VERDICT', 'SUMMARY'] as const;

/** The cells of one table row (packet direction as is; the identity after each side). */
export function tableRow(e: FlowEvent): string[] {
  return [
    formatTime(e.time),
    `${hostOf(e, e.source, 'source_port')} ${identityTag(e.source)}`,
    `${hostOf(e, e.destination, 'destination_port')} ${identityTag(e.destination)}`,
    flowType(e),
    verdictText(e),
    `${summaryOf(e)}${e.is_reply ? ' (reply)' : ''}${extrasOf(e)}`,
  ];
}

/** Aligned columns TIME SOURCE DESTINATION TYPE VERDICT SUMMARY; ends with a newline. */
export function formatTable(events: readonly FlowEvent[]): string {
  return alignedTable(TABLE_HEADERS, events.map((e): Cell[] => tableRow(e)));
}

/**
 * Column widths for a table printed row by row (`observe --follow -o table`), where the
 * widths cannot be taken from the rows. Wide enough for a name:port and an identity.
 */
const STREAM_WIDTHS = [19, 32, 32, 28, 9];

/** One row padded to fixed widths (header when `e` is null); ends with a newline. */
export function formatTableLine(e: FlowEvent | null): string {
  const cells: readonly string[] = e === null ? TABLE_HEADERS : tableRow(e);
  return (
    cells
      .map((c, i) => (i < STREAM_WIDTHS.length ? c.padEnd(STREAM_WIDTHS[i] as number) : c))
      .join('   ')
      .trimEnd() + '\n'
  );
}

// ---------------------------------------------------------------------------------------------
// cilium monitor

/** `world`/`host`... for reserved identities, else the number (as cilium monitor prints remote IDs). */
function monitorIdentity(side: Side): string {
  return reservedName(side) ?? String(side.identity);
}

/** `10.42.0.10:41234 -> 10.42.0.11:5432 tcp SYN` */
function monitorPacket(e: FlowEvent): string {
  const src = ipPort(e.IP.source, sidePort(e, e.source, 'source_port'));
  const dst = ipPort(e.IP.destination, sidePort(e, e.destination, 'destination_port'));
  const l4 = e.l4;
  let what: string;
  if (l4 === undefined) what = e.IP.ipVersion.toLowerCase();
  else if (l4.protocol === 'TCP') what = l4.tcp_flags ? `tcp ${l4.tcp_flags}` : 'tcp';
  else if (l4.protocol === 'ICMPv4') what = `icmp ${icmpText(e)}`;
  else if (l4.protocol === 'ICMPv6') what = `icmpv6 ${icmpText(e)}`;
  else what = l4.protocol.toLowerCase();
  return `${src} -> ${dst} ${what}`;
}

/**
 * Connection state as far as the event tells it: a reply, a TCP SYN without ACK (new), a
 * TCP segment with ACK (established); null when the event does not say.
 */
function monitorState(e: FlowEvent): string | null {
  if (e.is_reply) return 'reply';
  const f = e.l4?.protocol === 'TCP' ? (e.l4.tcp_flags ?? '') : null;
  if (f === null || f === '') return null;
  const flags = f.split(', ');
  if (flags.includes('SYN') && !flags.includes('ACK')) return 'new';
  if (flags.includes('ACK')) return 'established';
  return null;
}

/** The endpoint whose policy the event is about: the destination on ingress, the source on egress. */
function localSide(e: FlowEvent): Side {
  return e.traffic_direction === 'INGRESS' ? e.destination : e.source;
}

/**
 * One `cilium monitor`-like line, without a newline:
 *   xx drop (Policy denied) to endpoint db, identity 256->257: 10.42.0.10:41234 -> 10.42.0.11:5432 tcp SYN
 *   -> endpoint db, identity 256->257 state new: 10.42.0.10:41234 -> 10.42.0.11:5432 tcp SYN
 *   Policy verdict log: flow 0x0 local EP ID web, remote ID 257, proto 6, egress, action deny, match none, 10.42.0.10:41234 -> ...
 * Endpoints are named rather than numbered; "flow", "ifindex" and "file" fields that only
 * mean something in the kernel are left out.
 */
export function formatMonitor(e: FlowEvent): string {
  const ids = `identity ${e.source.identity}->${e.destination.identity}`;
  const pkt = monitorPacket(e);
  switch (e.event_type) {
    case 'drop': {
      const reason = e.drop_reason_desc ?? `Drop reason ${e.drop_reason ?? 0}`;
      const local = localSide(e).endpoint;
      const where = local === undefined ? '' : e.traffic_direction === 'INGRESS' ? `to endpoint ${local}, ` : `from endpoint ${local}, `;
      return `xx drop (${reason}) ${where}${ids}: ${pkt}`;
    }
    case 'trace': {
      const to = e.destination.endpoint !== undefined ? `-> endpoint ${e.destination.endpoint}` : '-> stack';
      const state = monitorState(e);
      return `${to}, ${ids}${state === null ? '' : ` state ${state}`}${e.verdict === 'AUDIT' ? ' (audit)' : ''}: ${pkt}`;
    }
    case 'policy-verdict': {
      const local = localSide(e);
      const remote = e.traffic_direction === 'INGRESS' ? e.source : e.destination;
      const proto = e.l4 === undefined ? 0 : (PROTO_NUMBERS[e.l4.protocol] ?? (Number(e.l4.protocol) || 0));
      const action = e.verdict === 'DROPPED' ? 'deny' : e.verdict === 'AUDIT' ? 'audit' : 'allow';
      return (
        `Policy verdict log: flow 0x0 local EP ID ${local.endpoint ?? local.ip}, remote ID ${monitorIdentity(remote)}, ` +
        `proto ${proto}, ${e.traffic_direction.toLowerCase()}, action ${action}, match ${e.policy_match_type ?? 'none'}, ${pkt}`
      );
    }
  }
  return `?? ${String(e.event_type)} ${ids}: ${pkt}`;
}

// ---------------------------------------------------------------------------------------------
// Hubble's jsonpb and dict output

/** One GetFlowsResponse in protobuf JSON (`hubble observe -o jsonpb`), without a newline. */
export function formatJsonpb(e: FlowEvent, nodeName: string): string {
  return JSON.stringify(toProtoJson(getFlowsResponse(e, nodeName, summaryOf(e))));
}

/** The SOURCE / DESTINATION of `-o dict`: `name:port` or `ip:port`. */
function dictSide(e: FlowEvent, side: Side, which: 'source_port' | 'destination_port'): string {
  return hostOf(e, side, which);
}

/**
 * One flow as Hubble's `-o dict` prints it: right-aligned keys, one per line, and a line of
 * dashes before each flow. Ends with a newline.
 */
export function formatDict(e: FlowEvent, nodeName: string): string {
  const rows: [string, string][] = [
    ['TIMESTAMP', formatTime(e.time)],
    ['SOURCE', dictSide(e, e.source, 'source_port')],
    ['DESTINATION', dictSide(e, e.destination, 'destination_port')],
    ['TYPE', flowType(e)],
    ['VERDICT', verdictText(e)],
    ['SUMMARY', `${summaryOf(e)}${extrasOf(e)}`],
  ];
  if (nodeName !== '') rows.splice(1, 0, ['NODE', nodeName]);
  const w = Math.max(...rows.map(([k]) => k.length));
  return '-'.repeat(12) + '\n' + rows.map(([k, v]) => `${k.padStart(w)}: ${v}`).join('\n') + '\n';
}
