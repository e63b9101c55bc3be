/**
 * What the agent's parts share (src/control/agent.ts builds it once and hands it to each part
 * in its constructor): the options, the table writers, the identity allocator, the policy
 * compiler, the ipcache owners, the cluster hooks in force, and the two ways a change leaves
 * the control plane: `publish` (tables, one revision) and `persist` (the state directory).
 */
import type { LinkParams } from '../runtime/link-spec.js';
import type { IdentityAllocator } from './identity.js';
import type { PolicyCompiler, PolicyDiff } from './policy/compile.js';
import type { IpcacheOwners } from './ipcache-owners.js';
import type { AgentHooks } from './agent-hooks.js';
import type { TableSetWriter } from '../tables/tableset.js';
import type { AgentConfig, QueueSettings } from '../api/types.js';
import type { Prefix } from './cidr.js';

export interface AgentOptions {
  name: string;
  pool4: Prefix;
  pool6?: Prefix;
  maxEndpoints: number;
  stateDir?: string;
  workers: number;
  offload: boolean;
  config: AgentConfig;
  version: string;
}

export interface PortSpec {
  name: string;
  netns?: string;
  pid?: number;
  ipv4?: string;
  ipv4Prefix: number;
  ipv6?: string;
  ipv6Prefix: number;
  routes: string[];
  defaultRoute: boolean;
  /**
   * Docker network driver mode: make the TUN in the switch's namespace and leave it there,
   * unaddressed; the engine moves it into the container, renames and addresses it.
   */
  handoff?: boolean;
  /** Offer TSO/USO to the endpoint's kernel; absent: the switch's default. */
  offload?: boolean;
}

export interface PortManager {
  /** Creates the endpoint's TUN, moves it into its namespace, addresses it; returns its port. */
  attach(spec: PortSpec): Promise<{ port: number; tun: string; ifname: string; offload?: string[] }>;
  detach(port: number): Promise<void>;
  /** The egress queue settings in force at a port, and a change to them. */
  getQueue(port: number): QueueSettings;
  setQueue(port: number, patch: Partial<QueueSettings>): QueueSettings;
  /** Link impairments of a port (src/runtime/impair.ts), null when off; absent: not available. */
  getLink?(port: number): LinkParams | null;
  setLink?(port: number, lp: LinkParams | null): void;
}

export interface AgentContext {
  readonly opts: AgentOptions;
  readonly tables: TableSetWriter;
  readonly allocator: IdentityAllocator;
  readonly compiler: PolicyCompiler;
  /** Every ipcache claim by owner (endpoint > host > kvstore > cidr-policy > api). */
  readonly ipc: IpcacheOwners;
  /** The cluster hooks in force now (none for a single switch). */
  hooks(): AgentHooks;
  /** Writes a compiler diff into the tables and publishes it: one new policy revision, returned. */
  publish(diff?: PolicyDiff): number;
  /** Saves the state directory (no-op without one). */
  persist(): void;
}
