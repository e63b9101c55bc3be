/**
 * Drop reasons: the single table of every reason a packet can be dropped for.
 *
 * The datapath returns a verdict >= 0 or a negative DROP_* constant; the absolute value of
 * that constant is the reason code used by counters, events, metrics and the CLI.
 *
 * Ranges:
 *   0            success (never a drop; present so counters can index by code directly)
 *   2            generic error
 *   130..229     Cilium's codes. Numbers, meanings and the sense of each message follow
 *                Cilium's bpf/lib/drop_reasons.h and pkg/monitor/api/drop.go, so a reason
 *                seen here means the same thing it means in `cilium monitor` / Hubble.
 *                Codes Cilium marks as unused are listed too (so their numbers are never
 *                reused by mistake) but tunswitch does not produce them.
 *   230..255     tunswitch's own reasons (things that only exist in a userspace switch:
 *                shard queues, TUN writes). Cilium does not use this range today.
 *
 * All codes fit in a byte, so counter arrays are MAX_DROP_CODE (256, defined with the counter
 * layout in src/tables/events.ts) long.
 */
import { MAX_DROP_CODE } from '../tables/events.js';
import { InternalError } from '../proto/errors.js';

export interface DropReason {
  /** Positive reason code, 0..MAX_DROP_CODE-1. */
  readonly code: number;
  /** Constant name without the DROP_ prefix, as in Cilium (e.g. INVALID_SIP). */
  readonly name: string;
  /** One line for humans. */
  readonly text: string;
}


export const DROP_OK = 0;
export const DROP_GENERIC = -2;

// Cilium codes (bpf/lib/drop_reasons.h).
export const DROP_UNUSED1 = -130;
export const DROP_UNUSED2 = -131;
export const DROP_INVALID_SIP = -132;
export const DROP_POLICY = -133;
export const DROP_INVALID = -134;
export const DROP_CT_INVALID_HDR = -135;
export const DROP_FRAG_NEEDED = -136;
export const DROP_CT_UNKNOWN_PROTO = -137;
export const DROP_UNUSED4 = -138;
export const DROP_UNKNOWN_L3 = -139;
export const DROP_MISSED_TAIL_CALL = -140;
export const DROP_WRITE_ERROR = -141;
export const DROP_UNKNOWN_L4 = -142;
export const DROP_UNKNOWN_ICMP4_CODE = -143;
export const DROP_UNKNOWN_ICMP4_TYPE = -144;
export const DROP_UNKNOWN_ICMP6_CODE = -145;
export const DROP_UNKNOWN_ICMP6_TYPE = -146;
export const DROP_NO_TUNNEL_KEY = -147;
export const DROP_UNUSED5 = -148;
export const DROP_UNUSED6 = -149;
export const DROP_UNKNOWN_TARGET = -150;
export const DROP_UNROUTABLE = -151;
export const DROP_UNUSED7 = -152;
export const DROP_CSUM_L3 = -153;
export const DROP_CSUM_L4 = -154;
export const DROP_CT_CREATE_FAILED = -155;
export const DROP_INVALID_EXTHDR = -156;
export const DROP_FRAG_NOSUPPORT = -157;
export const DROP_NO_SERVICE = -158;
export const DROP_UNSUPP_SERVICE_PROTO = -159;
export const DROP_NO_TUNNEL_ENDPOINT = -160;
export const DROP_NAT_46X64_DISABLED = -161;
export const DROP_EDT_HORIZON = -162;
export const DROP_UNKNOWN_CT = -163;
export const DROP_HOST_UNREACHABLE = -164;
export const DROP_NO_CONFIG = -165;
export const DROP_UNSUPPORTED_L2 = -166;
export const DROP_NAT_NO_MAPPING = -167;
export const DROP_NAT_UNSUPP_PROTO = -168;
export const DROP_NO_FIB = -169;
export const DROP_ENCAP_PROHIBITED = -170;
export const DROP_INVALID_IDENTITY = -171;
export const DROP_UNKNOWN_SENDER = -172;
export const DROP_NAT_NOT_NEEDED = -173;
export const DROP_IS_CLUSTER_IP = -174;
export const DROP_FRAG_NOT_FOUND = -175;
export const DROP_FORBIDDEN_ICMP6 = -176;
export const DROP_NOT_IN_SRC_RANGE = -177;
export const DROP_PROXY_LOOKUP_FAILED = -178;
export const DROP_PROXY_SET_FAILED = -179;
export const DROP_PROXY_UNKNOWN_PROTO = -180;
export const DROP_POLICY_DENY = -181;
export const DROP_VLAN_FILTERED = -182;
export const DROP_INVALID_VNI = -183;
export const DROP_INVALID_TC_BUFFER = -184;
export const DROP_NO_SID = -185;
export const DROP_UNUSED8 = -186;
export const DROP_NAT46 = -187;
export const DROP_NAT64 = -188;
export const DROP_POLICY_AUTH_REQUIRED = -189;
export const DROP_CT_NO_MAP_FOUND = -190;
export const DROP_SNAT_NO_MAP_FOUND = -191;
export const DROP_INVALID_CLUSTER_ID = -192;
export const DROP_DSR_ENCAP_UNSUPP_PROTO = -193;
export const DROP_NO_EGRESS_GATEWAY = -194;
export const DROP_UNENCRYPTED_TRAFFIC = -195;
export const DROP_TTL_EXCEEDED = -196;
export const DROP_NO_NODE_ID = -197;
export const DROP_RATE_LIMITED = -198;
export const DROP_IGMP_HANDLED = -199;
export const DROP_IGMP_SUBSCRIBED = -200;
export const DROP_MULTICAST_HANDLED = -201;
export const DROP_HOST_NOT_READY = -202;
export const DROP_EP_NOT_READY = -203;
export const DROP_NO_EGRESS_IP = -204;
export const DROP_PUNT_PROXY = -205;
export const DROP_NO_DEVICE = -206;

// tunswitch's own codes (230..255). A failed write counts as Cilium's 141 WRITE_ERROR; a
// destination without an output port as 151 UNROUTABLE.
/** A shard's input queue had no room; the I/O thread applied backpressure by dropping. */
export const DROP_QUEUE_FULL = -230;
/** The output port's egress queue dropped it: CoDel saw a standing queue (sojourn above target for an interval). */
export const DROP_QUEUE_AQM = -233;
/** The output port's egress queue was over its byte limit: dropped from the head of the fattest flow. */
export const DROP_QUEUE_OVERLIMIT = -234;
/** The shard worker died while processing this packet (the packet is dropped so the restart cannot loop). */
export const DROP_WORKER_CRASH = -235;
/** A GSO packet for a port that does not take it whole could not be segmented (malformed, or too many segments). */
export const DROP_GSO_SPLIT = -236;
/** The output port's link impairment lost it (random or Gilbert-Elliott loss, src/runtime/impair.ts). */
export const DROP_LINK_LOSS = -237;
/** The output port's delay line was over its byte or packet limit (link impairments). */
export const DROP_LINK_OVERLIMIT = -238;

/** The table. Sorted by code. Texts are tunswitch's wording of Cilium's meanings. */
export const DROP_REASONS: readonly DropReason[] = Object.freeze([
  r(0, 'OK', 'Success'),
  r(2, 'GENERIC', 'Invalid packet (generic error)'),
  r(130, 'UNUSED1', 'Invalid source mac (unused)'),
  r(131, 'UNUSED2', 'Invalid destination mac (unused)'),
  r(132, 'INVALID_SIP', 'Invalid source ip'),
  r(133, 'POLICY', 'Policy denied'),
  r(134, 'INVALID', 'Invalid packet'),
  r(135, 'CT_INVALID_HDR', 'CT: Truncated or invalid header'),
  r(136, 'FRAG_NEEDED', 'Fragmentation needed'),
  r(137, 'CT_UNKNOWN_PROTO', 'CT: Unknown L4 protocol'),
  r(138, 'UNUSED4', 'CT: Cannot create entry from packet (unused)'),
  r(139, 'UNKNOWN_L3', 'Unsupported L3 protocol'),
  r(140, 'MISSED_TAIL_CALL', 'Missed tail call'),
  r(141, 'WRITE_ERROR', 'Error writing to packet'),
  r(142, 'UNKNOWN_L4', 'Unknown L4 protocol'),
  r(143, 'UNKNOWN_ICMP4_CODE', 'Unknown ICMPv4 code'),
  r(144, 'UNKNOWN_ICMP4_TYPE', 'Unknown ICMPv4 type'),
  r(145, 'UNKNOWN_ICMP6_CODE', 'Unknown ICMPv6 code'),
  r(146, 'UNKNOWN_ICMP6_TYPE', 'Unknown ICMPv6 type'),
  r(147, 'NO_TUNNEL_KEY', 'Error retrieving tunnel key'),
  r(148, 'UNUSED5', 'Error retrieving tunnel options (unused)'),
  r(149, 'UNUSED6', 'Invalid Geneve option (unused)'),
  r(150, 'UNKNOWN_TARGET', 'Unknown L3 target address'),
  r(151, 'UNROUTABLE', 'Stale or unroutable IP'),
  r(152, 'UNUSED7', 'No matching local container found (unused)'),
  r(153, 'CSUM_L3', 'Error while correcting L3 checksum'),
  r(154, 'CSUM_L4', 'Error while correcting L4 checksum'),
  r(155, 'CT_CREATE_FAILED', 'CT: Map insertion failed'),
  r(156, 'INVALID_EXTHDR', 'Invalid IPv6 extension header'),
  r(157, 'FRAG_NOSUPPORT', 'IP fragmentation not supported'),
  r(158, 'NO_SERVICE', 'Service backend not found'),
  r(159, 'UNSUPP_SERVICE_PROTO', 'Unsupported protocol for service'),
  r(160, 'NO_TUNNEL_ENDPOINT', 'No tunnel/encapsulation endpoint'),
  r(161, 'NAT_46X64_DISABLED', 'NAT 46/64 not enabled'),
  r(162, 'EDT_HORIZON', 'Reached EDT rate-limiting drop horizon'),
  r(163, 'UNKNOWN_CT', 'Unknown connection tracking state'),
  r(164, 'HOST_UNREACHABLE', 'Local host is unreachable'),
  r(165, 'NO_CONFIG', 'No configuration available to perform policy decision'),
  r(166, 'UNSUPPORTED_L2', 'Unsupported L2 protocol'),
  r(167, 'NAT_NO_MAPPING', 'No mapping for NAT masquerade'),
  r(168, 'NAT_UNSUPP_PROTO', 'Unsupported protocol for NAT masquerade'),
  r(169, 'NO_FIB', 'FIB lookup failed'),
  r(170, 'ENCAP_PROHIBITED', 'Encapsulation traffic is prohibited'),
  r(171, 'INVALID_IDENTITY', 'Invalid identity'),
  r(172, 'UNKNOWN_SENDER', 'Unknown sender'),
  r(173, 'NAT_NOT_NEEDED', 'NAT not needed'),
  r(174, 'IS_CLUSTER_IP', 'Is a ClusterIP'),
  r(175, 'FRAG_NOT_FOUND', 'First logical datagram fragment not found'),
  r(176, 'FORBIDDEN_ICMP6', 'Forbidden ICMPv6 message'),
  r(177, 'NOT_IN_SRC_RANGE', 'Denied by LB src range check'),
  r(178, 'PROXY_LOOKUP_FAILED', 'Socket lookup failed'),
  r(179, 'PROXY_SET_FAILED', 'Socket assign failed'),
  r(180, 'PROXY_UNKNOWN_PROTO', 'Proxy redirection not supported for protocol'),
  r(181, 'POLICY_DENY', 'Policy denied by denylist'),
  r(182, 'VLAN_FILTERED', 'VLAN traffic disallowed by VLAN filter'),
  r(183, 'INVALID_VNI', 'Incorrect VNI from VTEP'),
  r(184, 'INVALID_TC_BUFFER', 'Failed to update or lookup TC buffer'),
  r(185, 'NO_SID', 'No SID was found for the IP address'),
  r(186, 'UNUSED8', 'SRv6 state was removed during tail call (unused)'),
  r(187, 'NAT46', 'L3 translation from IPv4 to IPv6 failed (NAT46)'),
  r(188, 'NAT64', 'L3 translation from IPv6 to IPv4 failed (NAT64)'),
  r(189, 'POLICY_AUTH_REQUIRED', 'Authentication required'),
  r(190, 'CT_NO_MAP_FOUND', 'No conntrack map found'),
  r(191, 'SNAT_NO_MAP_FOUND', 'No nat map found'),
  r(192, 'INVALID_CLUSTER_ID', 'Invalid ClusterID'),
  r(193, 'DSR_ENCAP_UNSUPP_PROTO', 'Unsupported packet protocol for DSR encapsulation'),
  r(194, 'NO_EGRESS_GATEWAY', 'No egress gateway found'),
  r(195, 'UNENCRYPTED_TRAFFIC', 'Traffic is unencrypted'),
  r(196, 'TTL_EXCEEDED', 'TTL exceeded'),
  r(197, 'NO_NODE_ID', 'No node ID found'),
  r(198, 'RATE_LIMITED', 'Rate limited'),
  r(199, 'IGMP_HANDLED', 'IGMP handled'),
  r(200, 'IGMP_SUBSCRIBED', 'IGMP subscribed'),
  r(201, 'MULTICAST_HANDLED', 'Multicast handled'),
  r(202, 'HOST_NOT_READY', 'Host datapath not ready'),
  r(203, 'EP_NOT_READY', 'Endpoint policy program not available'),
  r(204, 'NO_EGRESS_IP', 'No Egress IP configured'),
  r(205, 'PUNT_PROXY', 'Punt to proxy'),
  r(206, 'NO_DEVICE', 'No device'),
  r(230, 'QUEUE_FULL', 'tunswitch: shard queue full (backpressure)'),
  r(233, 'QUEUE_AQM', 'tunswitch: egress queue AQM drop (CoDel)'),
  r(234, 'QUEUE_OVERLIMIT', 'tunswitch: egress queue over its byte limit'),
  r(235, 'WORKER_CRASH', 'tunswitch: shard worker died on this packet'),
  r(236, 'GSO_SPLIT', 'tunswitch: GSO packet could not be segmented for a port without offload'),
  r(237, 'LINK_LOSS', 'tunswitch: link impairment loss (tunswitch link set --loss)'),
  r(238, 'LINK_OVERLIMIT', 'tunswitch: link impairment delay line over its limit'),
]);

function r(code: number, name: string, text: string): DropReason {
  return Object.freeze({ code, name, text });
}

/** Text by code; '' for codes not in the table. Built once at load. */
const TEXT_BY_CODE: string[] = new Array<string>(MAX_DROP_CODE).fill('');
const NAME_BY_CODE: string[] = new Array<string>(MAX_DROP_CODE).fill('');
for (const d of DROP_REASONS) {
  if (d.code < 0 || d.code >= MAX_DROP_CODE || TEXT_BY_CODE[d.code] !== '') {
    throw new InternalError(`drop reason table: bad or duplicate code ${d.code}`);
  }
  TEXT_BY_CODE[d.code] = d.text;
  NAME_BY_CODE[d.code] = d.name;
}

/** True when `code` (positive or negative) is a code in DROP_REASONS. */
export function isKnownDropCode(code: number): boolean {
  const c = code < 0 ? -code : code;
  return Number.isInteger(c) && c < MAX_DROP_CODE && TEXT_BY_CODE[c] !== '';
}

/** Human text for a reason code; accepts the datapath's negative form or the positive one. */
export function dropReasonText(code: number): string {
  const c = code < 0 ? -code : code;
  if (Number.isInteger(c) && c < MAX_DROP_CODE && TEXT_BY_CODE[c] !== '') return TEXT_BY_CODE[c] as string;
  return `Unknown drop reason ${c}`;
}

/** Constant name (without DROP_) for a reason code, e.g. 'POLICY'; 'UNKNOWN_<n>' if not in the table. */
export function dropReasonName(code: number): string {
  const c = code < 0 ? -code : code;
  if (Number.isInteger(c) && c < MAX_DROP_CODE && NAME_BY_CODE[c] !== '') return NAME_BY_CODE[c] as string;
  return `UNKNOWN_${c}`;
}
