/**
 * A PortManager test double: ports live in memory, no TUN devices or namespaces. Used by
 * the agent and Docker-mode unit tests.
 */
import type { PortManager, PortSpec } from '../../src/control/agent.js';
import type { QueueSettings } from '../../src/api/types.js';
import type { LinkParams } from '../../src/runtime/link-spec.js';

export class MemPorts implements PortManager {
  next = 1;
  attached = new Map<number, PortSpec>();
  queues = new Map<number, QueueSettings>();
  links = new Map<number, LinkParams>();
  async attach(spec: PortSpec): Promise<{ port: number; tun: string; ifname: string }> {
    const port = this.next++;
    this.attached.set(port, spec);
    return { port, tun: `mem.${port}`, ifname: 'eth0' };
  }
  async detach(port: number): Promise<void> {
    this.attached.delete(port);
    this.queues.delete(port);
    this.links.delete(port);
  }
  getLink(port: number): LinkParams | null {
    return this.links.get(port) ?? null;
  }
  setLink(port: number, lp: LinkParams | null): void {
    if (lp === null) this.links.delete(port);
    else this.links.set(port, lp);
  }
  getQueue(port: number): QueueSettings {
    return this.queues.get(port) ?? { limitBytes: 4 << 20, targetMs: 5, intervalMs: 100 };
  }
  setQueue(port: number, patch: Partial<QueueSettings>): QueueSettings {
    const q = { ...this.getQueue(port), ...patch };
    this.queues.set(port, q);
    return q;
  }
}
