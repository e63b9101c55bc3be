/**
 * Reserved security identities, with Cilium's numbers (pkg/identity/numericidentity.go).
 * Leaf module: imports nothing.
 */

export const ID_UNKNOWN = 0;
export const ID_HOST = 1;
export const ID_WORLD = 2;
export const ID_UNMANAGED = 3;
export const ID_HEALTH = 4;
export const ID_INIT = 5;
export const ID_REMOTE_NODE = 6;
export const ID_KUBE_APISERVER = 7;
export const ID_INGRESS = 8;

/** The reserved identities by their label name (`reserved:<name>`). */
export const RESERVED_IDENTITY = {
  host: ID_HOST,
  world: ID_WORLD,
  unmanaged: ID_UNMANAGED,
  health: ID_HEALTH,
  init: ID_INIT,
  'remote-node': ID_REMOTE_NODE,
  'kube-apiserver': ID_KUBE_APISERVER,
  ingress: ID_INGRESS,
} as const;
export type ReservedName = keyof typeof RESERVED_IDENTITY;

const NAME_BY_ID: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(RESERVED_IDENTITY).map(([n, id]) => [id, n]));

/** The name of a reserved identity (`world`), or undefined for any other number. */
export function reservedName(id: number): string | undefined {
  return NAME_BY_ID[id];
}

/** Identities from here up are derived from workload labels. */
export const MIN_WORKLOAD_IDENTITY = 256;
export const MAX_WORKLOAD_IDENTITY = 65535;
/** Bit 24 marks a local-scope identity (here: CIDR identities). */
export const LOCAL_IDENTITY_FLAG = 1 << 24;
