/**
 * A naive policy evaluator, written from Cilium's documented semantics with no entries, no
 * prefixes and no caches. It exists to check the compiler: for any flow, the compiled entries
 * must give the same verdict as evaluate().
 *
 * For a flow in direction `dir`, the subject is the endpoint whose policy applies (the source
 * for egress, the destination for ingress) and the peer is the other side.
 *   1. Mode never: nothing is enforced, everything is allowed.
 *   2. The rules that apply are those whose endpointSelector selects the subject's labels.
 *   3. The direction is enforced when the mode is always, the subject is initializing
 *      (`reserved:init`), or some applying rule has an allow or deny part for the direction.
 *      It is default-deny under the same conditions, except that rules with
 *      enableDefaultDeny false for the direction do not count.
 *   4. A rule item matches when its peer part and its port part both match (see types.ts for
 *      missing parts). A matching deny item denies, whatever else matches.
 *   5. Otherwise a matching allow item allows; with no match, default deny drops and
 *      default allow lets the flow through.
 * Peers: a workload is a peer without reserved or cidr labels. Endpoint selectors marked
 * clusterOnly select workloads only. CIDR items match a peer by its address (`ip`, when given)
 * or by its `cidr:` label, inside the prefix and outside every except; a /0 item also matches
 * world. Entities match the reserved labels they name; `cluster` also matches workloads.
 */
import type { LabelSet } from '../../src/control/labels.js';
import { parsePrefix, prefixContains, type Prefix } from '../../src/control/cidr.js';
import { type Direction, type NamedPort, type Peer, type Policy, type PolicyConfig, type PortSpec, type RuleElement } from '../../src/control/policy/types.js';
import { IPPROTO } from '../../src/proto/ip.js';

export interface FlowEnd {
  readonly identity: number;
  readonly labels: LabelSet;
  /** The address, when known; CIDR rules then match on it. */
  readonly ip?: string;
  /** Named ports the endpoint declares (used when it is the destination). */
  readonly ports?: readonly NamedPort[];
}

export interface Verdict {
  readonly allowed: boolean;
  /** A deny rule matched. */
  readonly deny: boolean;
  /** The direction is enforced for the subject. */
  readonly enforced: boolean;
}

function isWorkload(p: FlowEnd): boolean {
  return !p.labels.hasSource('reserved') && !p.labels.hasSource('cidr');
}

function hasReserved(p: FlowEnd, name: string): boolean {
  return p.labels.has(name, 'reserved');
}

function cidrMatches(cidr: Prefix, except: readonly Prefix[], peer: FlowEnd, pods: boolean): boolean {
  if (pods && isWorkload(peer) && peer.ip !== undefined) {
    const a = parsePrefix(peer.ip);
    return prefixContains(cidr, a) && !except.some((e) => prefixContains(e, a));
  }
  let addr: Prefix | null = null;
  if (peer.ip !== undefined && !isWorkload(peer)) addr = parsePrefix(peer.ip);
  else {
    const l = peer.labels.labels.find((x) => x.source === 'cidr');
    if (l !== undefined) addr = parsePrefix(l.key);
  }
  if (addr !== null && peer.labels.hasSource('cidr')) {
    return prefixContains(cidr, addr) && !except.some((e) => prefixContains(e, addr as Prefix));
  }
  return cidr.bits === 0 && hasReserved(peer, 'world');
}

const CLUSTER_NAMES = ['host', 'remote-node', 'init', 'ingress', 'health', 'unmanaged', 'kube-apiserver'];

function peerMatches(peer: Peer, p: FlowEnd): boolean {
  if (peer.kind === 'entity') {
    switch (peer.entity) {
      case 'all':
        return true;
      case 'none':
        return false;
      case 'cluster':
        return isWorkload(p) || CLUSTER_NAMES.some((n) => hasReserved(p, n));
      default:
        return hasReserved(p, peer.entity);
    }
  }
  const s = peer.selector;
  if (s.kind === 'labels') return (!s.clusterOnly || isWorkload(p)) && s.selector.matches(p.labels);
  return cidrMatches(s.cidr, s.except, p, s.pods === true);
}

/** `dst`: the flow's destination, whose declared names resolve a named port. */
function portMatches(spec: PortSpec, proto: number, port: number, dst: FlowEnd): boolean {
  if (spec.name !== undefined) {
    const protoName = proto === IPPROTO.TCP ? 'TCP' : proto === IPPROTO.UDP ? 'UDP' : proto === IPPROTO.SCTP ? 'SCTP' : '';
    if (spec.protocol !== 'ANY' && spec.protocol !== protoName) return false;
    return (dst.ports ?? []).some((np) => np.name === spec.name && np.protocol === protoName && np.port === port);
  }
  switch (spec.protocol) {
    case 'ICMP':
      return proto === IPPROTO.ICMP && port === spec.port;
    case 'ICMPv6':
      return proto === IPPROTO.ICMPV6 && port === spec.port;
    case 'TCP':
      if (proto !== IPPROTO.TCP) return false;
      break;
    case 'UDP':
      if (proto !== IPPROTO.UDP) return false;
      break;
    case 'SCTP':
      if (proto !== IPPROTO.SCTP) return false;
      break;
    case 'ANY':
      if (proto !== IPPROTO.TCP && proto !== IPPROTO.UDP && proto !== IPPROTO.SCTP) return false;
      break;
  }
  return spec.port === 0 || (port >= spec.port && port <= spec.endPort);
}

function elementMatches(el: RuleElement, peer: FlowEnd, proto: number, port: number, dst: FlowEnd): boolean {
  if (el.peers === null && el.ports === null) return false;
  const l3 = el.peers === null || el.peers.some((p) => peerMatches(p, peer));
  const l4 = el.ports === null || el.ports.some((s) => portMatches(s, proto, port, dst));
  return l3 && l4;
}

/** The verdict for one flow; `port` is the destination port, or the ICMP type for ICMP. */
export function evaluate(
  policies: readonly Policy[],
  config: PolicyConfig,
  src: FlowEnd,
  dst: FlowEnd,
  dir: Direction,
  proto: number,
  port: number,
): Verdict {
  if (config.enforcement === 'never') return { allowed: true, deny: false, enforced: false };
  const subject = dir === 'egress' ? src : dst;
  const peer = dir === 'egress' ? dst : src;
  const forced = config.enforcement === 'always' || hasReserved(subject, 'init');
  let enforced = forced;
  let defaultDeny = forced;
  let deny = false;
  let allow = false;
  for (const pol of policies) {
    for (const r of pol.rules) {
      if (!r.subject.matches(subject.labels)) continue;
      const has = dir === 'ingress' ? r.hasIngress : r.hasEgress;
      const dd = dir === 'ingress' ? r.defaultDenyIngress : r.defaultDenyEgress;
      if (has) {
        enforced = true;
        if (dd) defaultDeny = true;
      }
      const allows = dir === 'ingress' ? r.ingress : r.egress;
      const denies = dir === 'ingress' ? r.ingressDeny : r.egressDeny;
      if (denies.some((el) => elementMatches(el, peer, proto, port, dst))) deny = true;
      if (allows.some((el) => elementMatches(el, peer, proto, port, dst))) allow = true;
    }
  }
  if (!enforced) return { allowed: true, deny: false, enforced: false };
  return { allowed: !deny && (allow || !defaultDeny), deny, enforced: true };
}
