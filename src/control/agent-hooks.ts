/**
 * Where cluster mode (src/kvstore/cluster.ts) plugs into the agent. Every hook is optional;
 * a single switch sets none. Hooks that write to the kvstore run in the background (they
 * return nothing): the agent's local change is already done, and a kvstore failure is
 * counted and retried by the kvstore side, never undone locally.
 */
import type { EndpointInfo, KvstoreStatus, NodeInfo } from '../api/types.js';

export interface AgentHooks {
  /** The cluster-wide number for canonical security labels (takes this node's reference). */
  identityNumber?: (labels: string) => Promise<number>;
  /** One local use of the labels ended (pairs with identityNumber). */
  identityReleased?: (labels: string) => void;
  /** An endpoint is attached and published locally. */
  endpointReady?: (ep: EndpointInfo) => void;
  /** An endpoint is being removed. */
  endpointRemoved?: (ep: EndpointInfo) => void;
  /** Policies were imported through this agent (file text and the policies it defined). */
  policiesImported?: (text: string, fileName: string, policies: { key: string; name: string }[]) => void;
  policiesDeleted?: (keys: string[]) => void;
  /** The node owning an ipcache prefix learnt from the kvstore, or undefined. */
  ipcacheNode?: (cidr: string) => string | undefined;
  status?: () => KvstoreStatus;
  listNodes?: () => NodeInfo[];
}
