/**
 * tunswitch flow events in Hubble's flow schema (Cilium's api/v1/flow `Flow` and
 * api/v1/observer `GetFlowsResponse`), for `observe -o jsonpb` and the Observer gRPC server.
 *
 * One converter, two spellings:
 *   - `hubbleFlow(e)` builds the message as @grpc/proto-loader takes it (keepCase field names,
 *     enums by name, Timestamp as {seconds, nanos}, BoolValue as {value});
 *   - `toProtoJson(msg)` rewrites that into protobuf's JSON mapping with the proto field names,
 *     which is what `hubble observe -o jsonpb` prints (Timestamp as RFC 3339, wrappers bare).
 *
 * The field names and numbers, enum names and numbers are those of Cilium's flow.proto and
 * observer.proto (facts of the wire interface); proto/ holds our own definitions of them.
 */
import type { FlowEvent } from '../api/types.js';
import { DROP_REASONS } from '../datapath/drop.js';
import { InternalError } from '../proto/errors.js';

/**
 * flow.proto's DropReason enum names by code (the datapath names some of them differently,
 * see src/datapath/drop.ts). Codes tunswitch adds (230+) are not in Hubble's enum.
 */
export const HUBBLE_DROP_REASONS: Readonly<Record<number, string>> = {
  130: 'INVALID_SOURCE_MAC',
  131: 'INVALID_DESTINATION_MAC',
  132: 'INVALID_SOURCE_IP',
  133: 'POLICY_DENIED',
  134: 'INVALID_PACKET_DROPPED',
  135: 'CT_TRUNCATED_OR_INVALID_HEADER',
  136: 'CT_MISSING_TCP_ACK_FLAG',
  137: 'CT_UNKNOWN_L4_PROTOCOL',
  138: 'CT_CANNOT_CREATE_ENTRY_FROM_PACKET',
  139: 'UNSUPPORTED_L3_PROTOCOL',
  140: 'MISSED_TAIL_CALL',
  141: 'ERROR_WRITING_TO_PACKET',
  142: 'UNKNOWN_L4_PROTOCOL',
  143: 'UNKNOWN_ICMPV4_CODE',
  144: 'UNKNOWN_ICMPV4_TYPE',
  145: 'UNKNOWN_ICMPV6_CODE',
  146: 'UNKNOWN_ICMPV6_TYPE',
  147: 'ERROR_RETRIEVING_TUNNEL_KEY',
  148: 'ERROR_RETRIEVING_TUNNEL_OPTIONS',
  149: 'INVALID_GENEVE_OPTION',
  150: 'UNKNOWN_L3_TARGET_ADDRESS',
  151: 'STALE_OR_UNROUTABLE_IP',
  152: 'NO_MATCHING_LOCAL_CONTAINER_FOUND',
  153: 'ERROR_WHILE_CORRECTING_L3_CHECKSUM',
  154: 'ERROR_WHILE_CORRECTING_L4_CHECKSUM',
  155: 'CT_MAP_INSERTION_FAILED',
  156: 'INVALID_IPV6_EXTENSION_HEADER',
  157: 'IP_FRAGMENTATION_NOT_SUPPORTED',
  158: 'SERVICE_BACKEND_NOT_FOUND',
  160: 'NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT',
  161: 'FAILED_TO_INSERT_INTO_PROXYMAP',
  162: 'REACHED_EDT_RATE_LIMITING_DROP_HORIZON',
  163: 'UNKNOWN_CONNECTION_TRACKING_STATE',
  164: 'LOCAL_HOST_IS_UNREACHABLE',
  165: 'NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION',
  166: 'UNSUPPORTED_L2_PROTOCOL',
  167: 'NO_MAPPING_FOR_NAT_MASQUERADE',
  168: 'UNSUPPORTED_PROTOCOL_FOR_NAT_MASQUERADE',
  169: 'FIB_LOOKUP_FAILED',
  170: 'ENCAPSULATION_TRAFFIC_IS_PROHIBITED',
  171: 'INVALID_IDENTITY',
  172: 'UNKNOWN_SENDER',
  173: 'NAT_NOT_NEEDED',
  174: 'IS_A_CLUSTERIP',
  175: 'FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND',
  176: 'FORBIDDEN_ICMPV6_MESSAGE',
  177: 'DENIED_BY_LB_SRC_RANGE_CHECK',
  178: 'SOCKET_LOOKUP_FAILED',
  179: 'SOCKET_ASSIGN_FAILED',
  180: 'PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL',
  181: 'POLICY_DENY',
  182: 'VLAN_FILTERED',
  183: 'INVALID_VNI',
  184: 'INVALID_TC_BUFFER',
  185: 'NO_SID',
  186: 'MISSING_SRV6_STATE',
  187: 'NAT46',
  188: 'NAT64',
  189: 'AUTH_REQUIRED',
  190: 'CT_NO_MAP_FOUND',
  191: 'SNAT_NO_MAP_FOUND',
  192: 'INVALID_CLUSTER_ID',
  193: 'UNSUPPORTED_PROTOCOL_FOR_DSR_ENCAP',
  194: 'NO_EGRESS_GATEWAY',
  196: 'TTL_EXCEEDED',
  197: 'NO_NODE_ID',
  202: 'DROP_HOST_NOT_READY',
  203: 'DROP_EP_NOT_READY',
};

// Checked at load: every Hubble code is a code of the datapath's table.
for (const code of Object.keys(HUBBLE_DROP_REASONS)) {
  if (!DROP_REASONS.some((d) => d.code === Number(code))) throw new InternalError(`HUBBLE_DROP_REASONS: ${code} is not in src/datapath/drop.ts`);
}

/** Hubble's DropReason name for a code; DROP_REASON_UNKNOWN for 0 and for tunswitch's own codes. */
export function hubbleDropReason(code: number): string {
  return HUBBLE_DROP_REASONS[code] ?? 'DROP_REASON_UNKNOWN';
}

/** Cilium's monitor message types (pkg/monitor/api), used as CiliumEventType.type. */
export const MESSAGE_TYPE = { drop: 1, trace: 4, 'policy-verdict': 5 } as const;

/** FlowEvent event_type for a CiliumEventType.type, or undefined. */
export function eventTypeOfMessageType(t: number): FlowEvent['event_type'] | undefined {
  for (const [k, v] of Object.entries(MESSAGE_TYPE)) if (v === t) return k as FlowEvent['event_type'];
  return undefined;
}

/** tunswitch's policy match names (src/tables/policy.ts) → Cilium's numbers (policy_match_type). */
const POLICY_MATCH_NUMBERS: Readonly<Record<string, number>> = {
  none: 0,
  'L3-Only': 1,
  'L3-L4': 2,
  'L4-Only': 3,
  all: 4,
  'L3-Proto': 5,
  'Proto-Only': 6,
};

export const TCP_FLAG_NAMES = ['FIN', 'SYN', 'RST', 'PSH', 'ACK', 'URG', 'ECE', 'CWR', 'NS'] as const;

export interface Timestamp {
  seconds: number;
  nanos: number;
}

export function timestampOf(iso: string): Timestamp {
  const ms = Date.parse(iso);
  const t = Number.isNaN(ms) ? 0 : ms;
  // Keep sub-millisecond digits when the text has them (RFC 3339 with up to 9 fraction digits).
  const frac = /\.(\d+)Z?$/i.exec(iso)?.[1];
  const nanos = frac !== undefined ? Number(frac.padEnd(9, '0').slice(0, 9)) : (t % 1000) * 1e6;
  return { seconds: Math.floor(t / 1000), nanos };
}

export function isoOf(ts: Timestamp): string {
  const base = new Date(ts.seconds * 1000).toISOString().slice(0, 19);
  const frac = String(ts.nanos).padStart(9, '0').replace(/0+$/, '');
  return `${base}${frac === '' ? '' : `.${frac}`}Z`;
}

/** A flow.Endpoint message. */
function endpointOf(side: FlowEvent['source']): Record<string, unknown> {
  const ep: Record<string, unknown> = { identity: side.identity, labels: [...side.labels] };
  if (side.endpoint !== undefined) ep.pod_name = side.endpoint;
  return ep;
}

function tcpFlagsOf(names: string | undefined): Record<string, boolean> {
  const flags: Record<string, boolean> = {};
  for (const n of (names ?? '').split(/[\s,]+/)) if (n !== '' && (TCP_FLAG_NAMES as readonly string[]).includes(n)) flags[n] = true;
  return flags;
}

function layer4Of(l4: NonNullable<FlowEvent['l4']>): Record<string, unknown> {
  const ports = { source_port: l4.source_port ?? 0, destination_port: l4.destination_port ?? 0 };
  switch (l4.protocol) {
    case 'TCP':
      return { TCP: { ...ports, flags: tcpFlagsOf(l4.tcp_flags) } };
    case 'UDP':
      return { UDP: ports };
    case 'SCTP':
      return { SCTP: ports };
    case 'ICMPv4':
      return { ICMPv4: { type: l4.icmp_type ?? 0, code: l4.icmp_code ?? 0 } };
    case 'ICMPv6':
      return { ICMPv6: { type: l4.icmp_type ?? 0, code: l4.icmp_code ?? 0 } };
  }
  return {};
}

/** The flow.Flow message for one event (proto-loader form: keepCase, enums by name). */
export function hubbleFlow(e: FlowEvent, nodeName: string, summary: string): Record<string, unknown> {
  const f: Record<string, unknown> = {
    time: timestampOf(e.time),
    verdict: e.verdict,
    IP: { source: e.IP.source, destination: e.IP.destination, ipVersion: e.IP.ipVersion },
    source: endpointOf(e.source),
    destination: endpointOf(e.destination),
    Type: 'L3_L4',
    node_name: e.node_name ?? nodeName,
    event_type: { type: MESSAGE_TYPE[e.event_type] ?? 0, sub_type: e.event_type === 'drop' ? (e.drop_reason ?? 0) : 0 },
    traffic_direction: e.traffic_direction,
    is_reply: { value: e.is_reply },
    Summary: summary,
  };
  if (e.l4 !== undefined) f.l4 = layer4Of(e.l4);
  if (e.verdict === 'DROPPED' && e.drop_reason !== undefined && e.drop_reason !== 0) {
    f.drop_reason = e.drop_reason;
    f.drop_reason_desc = hubbleDropReason(e.drop_reason);
  }
  if (e.policy_match_type !== undefined) f.policy_match_type = POLICY_MATCH_NUMBERS[e.policy_match_type] ?? 0;
  if (e.event_type === 'trace') {
    // A packet for another node's endpoint leaves through the tunnel (Hubble's TO_OVERLAY).
    const remote = e.destination.node !== undefined && e.node_name !== undefined && e.destination.node !== e.node_name;
    f.trace_observation_point = remote ? 'TO_OVERLAY' : e.destination.endpoint !== undefined ? 'TO_ENDPOINT' : 'TO_STACK';
  }
  return f;
}

/** observer.GetFlowsResponse for one event. */
export function getFlowsResponse(e: FlowEvent, nodeName: string, summary: string): Record<string, unknown> {
  const flow = hubbleFlow(e, nodeName, summary);
  return { flow, node_name: flow.node_name, time: flow.time };
}

/** Default values protobuf's JSON mapping leaves out. */
function isDefault(v: unknown): boolean {
  return v === 0 || v === '' || v === false || (Array.isArray(v) && v.length === 0);
}

/**
 * Protobuf JSON mapping (proto field names) of a message built above: Timestamps become
 * RFC 3339 text, BoolValue wrappers their bare value, default scalars are left out.
 */
export function toProtoJson(msg: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(msg)) {
    if (v === undefined || isDefault(v)) continue;
    if (k === 'time' && typeof v === 'object' && v !== null && 'seconds' in v) out[k] = isoOf(v as Timestamp);
    else if (k === 'is_reply' && typeof v === 'object' && v !== null) out[k] = (v as { value: boolean }).value;
    else if (Array.isArray(v)) out[k] = v.map((x: unknown) => (typeof x === 'object' && x !== null ? toProtoJson(x as Record<string, unknown>) : x));
    else if (typeof v === 'object' && v !== null) {
      const inner = toProtoJson(v as Record<string, unknown>);
      // An empty sub-message (e.g. TCP flags with none set) stays, as protojson prints it.
      out[k] = inner;
    } else out[k] = v;
  }
  return out;
}
