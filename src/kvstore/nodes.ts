/**
 * Nodes in etcd (cilium/state/nodes/v1/default/<name>): this node's record under its lease,
 * and every node's record followed into `nodes`. A node whose lease expired disappears here.
 */
import type { KvSession } from './session.js';
import { PrefixWatch, type KvEvent } from './watch.js';
import { NODE_PREFIX, nodeKey, type NodeValue } from './keys.js';

export interface NodeInfo {
  name: string;
  ip: string;
  ipv4Cidr: string | null;
  ipv6Cidr: string | null;
  self: boolean;
}

export class KvNodes {
  readonly nodes = new Map<string, NodeInfo>();
  private readonly watch: PrefixWatch;

  constructor(
    private readonly s: KvSession,
    private readonly onChange: (added: NodeInfo[], removed: NodeInfo[]) => void = () => undefined,
  ) {
    this.watch = new PrefixWatch(s, NODE_PREFIX, 'nodes', (evs, initial) => this.onBatch(evs, initial));
  }

  async register(ip: string, ipv4Cidr: string | null, ipv6Cidr: string | null): Promise<void> {
    const v: NodeValue = {
      Name: this.s.node,
      Cluster: 'default',
      IPAddresses: [{ Type: 'InternalIP', IP: ip }],
      IPv4AllocCIDR: ipv4Cidr,
      IPv6AllocCIDR: ipv6Cidr,
    };
    await this.s.putOwned(nodeKey(this.s.node), JSON.stringify(v), 'node-put');
  }

  start(): Promise<void> {
    return this.watch.start();
  }

  stop(): Promise<void> {
    return this.watch.stop();
  }

  list(): NodeInfo[] {
    return [...this.nodes.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  private onBatch(evs: KvEvent[], initial: boolean): void {
    const added: NodeInfo[] = [];
    const removed: NodeInfo[] = [];
    const seen = initial ? new Set<string>() : null;
    for (const ev of evs) {
      const name = ev.key.slice(NODE_PREFIX.length);
      if (ev.type === 'delete') {
        const old = this.nodes.get(name);
        if (old) {
          this.nodes.delete(name);
          removed.push(old);
        }
        continue;
      }
      let v: Partial<NodeValue>;
      try {
        v = JSON.parse(ev.value) as Partial<NodeValue>;
      } catch {
        continue;
      }
      const ip = Array.isArray(v.IPAddresses) ? v.IPAddresses.find((a) => a && a.Type === 'InternalIP')?.IP : undefined;
      if (typeof ip !== 'string') continue;
      const n: NodeInfo = {
        name,
        ip,
        ipv4Cidr: typeof v.IPv4AllocCIDR === 'string' ? v.IPv4AllocCIDR : null,
        ipv6Cidr: typeof v.IPv6AllocCIDR === 'string' ? v.IPv6AllocCIDR : null,
        self: name === this.s.node,
      };
      seen?.add(name);
      this.nodes.set(name, n);
      added.push(n);
    }
    if (seen) {
      for (const [name, n] of [...this.nodes]) {
        if (!seen.has(name)) {
          this.nodes.delete(name);
          removed.push(n);
        }
      }
    }
    if (added.length > 0 || removed.length > 0) this.onChange(added, removed);
  }
}
