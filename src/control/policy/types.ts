/**
 * The internal, validated form of a policy. parse.ts produces it from CiliumNetworkPolicy,
 * CiliumClusterwideNetworkPolicy and Kubernetes NetworkPolicy; compile.ts consumes it, and so
 * does the tests' reference evaluator (test/control/policy-reference.ts). Namespace scoping has already been applied to every selector here.
 *
 * Rule element semantics (one item of ingress/egress/ingressDeny/egressDeny):
 *   peers === null && ports === null  -> selects no traffic (`ingress: [{}]`: default deny only)
 *   peers === null                    -> any peer (L4-only rule; includes world)
 *   ports === null                    -> any protocol and port (L3-only rule)
 *   otherwise                         -> a listed peer AND a listed port
 * An empty array (e.g. `toPorts: [{ports: []}]`) is "given but empty" and matches nothing.
 */
import type { LabelSelector, PeerSelector } from './selector.js';
import type { Direction } from '../../proto/direction.js';

export type { Direction };
export type Section = 'ingress' | 'egress' | 'ingressDeny' | 'egressDeny';
export const SECTIONS: readonly Section[] = ['ingress', 'egress', 'ingressDeny', 'egressDeny'];

export function sectionDirection(s: Section): Direction {
  return s === 'ingress' || s === 'ingressDeny' ? 'ingress' : 'egress';
}
export function sectionIsDeny(s: Section): boolean {
  return s === 'ingressDeny' || s === 'egressDeny';
}

export const ENTITIES = [
  'all',
  'world',
  'cluster',
  'host',
  'init',
  'ingress',
  'unmanaged',
  'remote-node',
  'health',
  'none',
  'kube-apiserver',
] as const;
export type Entity = (typeof ENTITIES)[number];

export type Peer =
  | { readonly kind: 'selector'; readonly selector: PeerSelector }
  | { readonly kind: 'entity'; readonly entity: Entity };

export type L4Protocol = 'TCP' | 'UDP' | 'SCTP' | 'ANY' | 'ICMP' | 'ICMPv6';

/**
 * One port item. For TCP/UDP/SCTP/ANY: port 0 means every port, else port..endPort
 * (endPort === port for a single port). For ICMP/ICMPv6: port is the ICMP type, endPort equal.
 */
export interface PortSpec {
  readonly protocol: L4Protocol;
  readonly port: number;
  readonly endPort: number;
  /**
   * A named port (`port: http`): port and endPort are 0 and the number is resolved per
   * endpoint, on the destination of the flow (the subject for ingress, each selected peer for
   * egress), from the ports the endpoints declare. Unresolved, it matches nothing.
   */
  readonly name?: string;
}

/** A port an endpoint declares under a name (Kubernetes containerPort name). */
export interface NamedPort {
  readonly name: string;
  readonly port: number;
  readonly protocol: 'TCP' | 'UDP' | 'SCTP';
}

export interface RuleElement {
  readonly peers: readonly Peer[] | null;
  readonly ports: readonly PortSpec[] | null;
}

export interface PolicyRule {
  /** Index of this rule in the policy (0 for `spec`, i for `specs[i]`). */
  readonly index: number;
  readonly description: string | null;
  /** Which endpoints the rule applies to (namespace scoping applied). */
  readonly subject: LabelSelector;
  readonly ingress: readonly RuleElement[];
  readonly egress: readonly RuleElement[];
  readonly ingressDeny: readonly RuleElement[];
  readonly egressDeny: readonly RuleElement[];
  /** The rule has an ingress (egress) part: it switches that direction to enforcement. */
  readonly hasIngress: boolean;
  readonly hasEgress: boolean;
  /** Resolved enableDefaultDeny (Cilium: defaults to true when the direction is present). */
  readonly defaultDenyIngress: boolean;
  readonly defaultDenyEgress: boolean;
}

export type PolicyKind = 'CiliumNetworkPolicy' | 'CiliumClusterwideNetworkPolicy' | 'NetworkPolicy';

export interface Policy {
  readonly kind: PolicyKind;
  readonly name: string;
  /** null for clusterwide policies and for namespaced kinds given without a namespace. */
  readonly namespace: string | null;
  /** Repository key: `kind/namespace/name`. */
  readonly key: string;
  /** File the policy came from (for messages). */
  readonly file: string;
  readonly rules: readonly PolicyRule[];
}

export function policyKey(kind: PolicyKind, namespace: string | null, name: string): string {
  return `${kind}/${namespace ?? ''}/${name}`;
}

/** Agent-wide policy settings. */
export interface PolicyConfig {
  /** Cilium's policy enforcement mode. */
  readonly enforcement: 'default' | 'always' | 'never';
  /** Audit mode: verdicts are computed and reported, drops are not applied (datapath flag). */
  readonly audit: boolean;
  /** Cilium CIDR rules also select workload identities by their endpoints' addresses (off by default). */
  readonly cidrMatchPods?: boolean;
}

export const DEFAULT_POLICY_CONFIG: PolicyConfig = { enforcement: 'default', audit: false };

/** The namespace label Cilium puts on every pod. */
export const NAMESPACE_LABEL = 'io.kubernetes.pod.namespace';
/** Prefix of the labels that carry a pod's namespace labels (for namespaceSelector). */
export const NAMESPACE_LABELS_PREFIX = 'io.cilium.k8s.namespace.labels.';
