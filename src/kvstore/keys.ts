/**
 * The kvstore key layout: Cilium's where it has one (cilium/state/...), tunswitch's own where
 * it does not (policies, and the per-label-set index that makes identity allocation a single
 * transaction). One leaf module: every reader and writer of a key builds and parses it here.
 *
 *   cilium/state/identities/v1/id/<id>                  -> canonical labels       (no lease)
 *   cilium/state/identities/v1/value/<labels>/<node>    -> <id>                   (node lease)
 *   tunswitch/state/identities/v1/labels/<labels>       -> <id>                   (no lease)
 *   cilium/state/ip/v1/default/<ip>                     -> IpEntryValue JSON      (node lease)
 *   cilium/state/nodes/v1/default/<name>                -> NodeValue JSON         (node lease)
 *   tunswitch/state/policies/v1/<policy key>            -> PolicyValue JSON       (no lease)
 *
 * The labels index is not in Cilium (which serialises allocation with a kvstore lock): it lets
 * one etcd transaction check both "this number is free" and "these labels have no number",
 * so two nodes creating the same label set at once get the same number. It is also the
 * garbage collector's compare target: every new reference touches it (see identities.ts).
 */

export const IDENTITY_ID_PREFIX = 'cilium/state/identities/v1/id/';
export const IDENTITY_VALUE_PREFIX = 'cilium/state/identities/v1/value/';
export const IDENTITY_LABELS_PREFIX = 'tunswitch/state/identities/v1/labels/';
export const IP_PREFIX = 'cilium/state/ip/v1/default/';
export const NODE_PREFIX = 'cilium/state/nodes/v1/default/';
export const POLICY_PREFIX = 'tunswitch/state/policies/v1/';

export const identityIdKey = (id: number): string => `${IDENTITY_ID_PREFIX}${id}`;
export const identityLabelsKey = (labels: string): string => `${IDENTITY_LABELS_PREFIX}${labels}`;
/** Prefix of every node's reference to one label set (the trailing "/" keeps "a=b" apart from "a=bc"). */
export const identityRefPrefix = (labels: string): string => `${IDENTITY_VALUE_PREFIX}${labels}/`;
export const identityRefKey = (labels: string, node: string): string => `${identityRefPrefix(labels)}${node}`;
export const ipKey = (ip: string): string => `${IP_PREFIX}${ip}`;
export const nodeKey = (name: string): string => `${NODE_PREFIX}${name}`;
export const policyKey = (key: string): string => `${POLICY_PREFIX}${key}`;

/** The id of an identity id key, or -1. */
export function parseIdentityIdKey(key: string): number {
  if (!key.startsWith(IDENTITY_ID_PREFIX)) return -1;
  const s = key.slice(IDENTITY_ID_PREFIX.length);
  return /^[0-9]{1,10}$/.test(s) ? Number(s) : -1;
}

/** Value of cilium/state/ip/v1/default/<ip>: the fields of Cilium's IPIdentityPair that tunswitch uses. */
export interface IpEntryValue {
  IP: string;
  /** Prefix length for non-host entries; null for a host address, as Cilium writes it. */
  Mask: null | number;
  HostIP: string;
  ID: number;
  Key: number;
  /** The node that owns the entry. */
  Metadata: string;
}

/** Value of cilium/state/nodes/v1/default/<name>: the fields of Cilium's node.Node that tunswitch uses. */
export interface NodeValue {
  Name: string;
  Cluster: string;
  IPAddresses: { Type: 'InternalIP'; IP: string }[];
  IPv4AllocCIDR: string | null;
  IPv6AllocCIDR: string | null;
}

/** Value of tunswitch/state/policies/v1/<key>: the source text of the file that defined the policy. */
export interface PolicyValue {
  name: string;
  file: string;
  text: string;
  /** The node that imported it (it has applied it already). */
  origin: string;
}
