/**
 * Cluster mode: one switch of several sharing identities, ipcache, nodes and policies through
 * etcd. This module wires the kvstore parts (session, identities, ipcache, nodes, policies)
 * to the agent through its hooks (src/control/agent-hooks.ts). It runs in the control thread,
 * the only writer of the published tables.
 *
 *   identities  every number in etcd is taken into the local allocator (one reference held by
 *               the watch), so selectors and the compiler see other nodes' identities; local
 *               endpoints get their number from etcd (hooks.identityNumber).
 *   ipcache     local endpoint addresses are published under the lease; other nodes' entries
 *               are written into the shared-memory ipcache with their node's IP as tunnel
 *               endpoint, one table commit per watch batch.
 *   nodes       this node's record under the lease; `node list` shows every node.
 *   policies    imported policies are stored; other nodes' imports are compiled here.
 */
import type { Agent } from '../control/agent.js';
import { LabelSet } from '../control/labels.js';
import { TunswitchError, isTunswitchError } from '../control/errors.js';
import { tryParsePrefix } from '../control/cidr.js';
import type { KvstoreStatus, NodeInfo } from '../api/types.js';
import { KvSession } from './session.js';
import { KvIdentities } from './identities.js';
import { KvIpcache, type RemoteIpEntry } from './ipcache.js';
import { KvNodes } from './nodes.js';
import { KvPolicies } from './policies.js';

export interface ClusterOptions {
  url: string;
  node: string;
  /** Underlay IPv4 address of this node (tunnel endpoint others send to). */
  nodeIp: string;
  leaseTtl: number;
  /** Identity GC grace period and pass period (ms). */
  gcGraceMs?: number;
  gcIntervalMs?: number;
  log?: (msg: string) => void;
}

export class KvCluster {
  readonly session: KvSession;
  readonly identities: KvIdentities;
  readonly ipcache: KvIpcache;
  readonly nodes: KvNodes;
  readonly policies: KvPolicies;
  /** Identities whose watch reference this cluster holds in the agent's allocator. */
  private readonly heldIds = new Map<number, string>();
  /** ipcache prefix text -> owning node, for entries written from the kvstore. */
  private readonly remoteCidrs = new Map<string, string>();
  private applyingRemotePolicy = false;
  /** Remote entries the ipcache refused (full table): status and metrics. */
  ipcacheRejected = 0;
  private readonly log: (msg: string) => void;
  private readonly hostIpWord: number;

  constructor(
    private readonly agent: Agent,
    private readonly opts: ClusterOptions,
  ) {
    this.log = opts.log ?? (() => undefined);
    const hp = tryParsePrefix(opts.nodeIp, true);
    if (!hp || hp.family !== 4 || hp.bits !== 32) throw new TunswitchError('ECONFIG_INVALID', `kvstore.nodeIp: ${JSON.stringify(opts.nodeIp)} is not an IPv4 address`);
    this.hostIpWord = hp.words[0] as number;
    this.session = new KvSession({ url: opts.url, node: opts.node, leaseTtl: opts.leaseTtl, log: this.log });
    this.identities = new KvIdentities(this.session, {
      min: 256,
      max: 65535,
      gcGraceMs: opts.gcGraceMs ?? 60_000,
      gcIntervalMs: opts.gcIntervalMs ?? 30_000,
      onChange: (added, removed) => this.onIdentities(added, removed),
    });
    this.ipcache = new KvIpcache(this.session, opts.nodeIp, { apply: (u, d) => this.onRemoteIpcache(u, d) });
    this.nodes = new KvNodes(this.session);
    this.policies = new KvPolicies(this.session, {
      importText: (text, file) => this.withRemotePolicy(() => void this.agent.importPolicyText(text, file)),
      deleteKey: (key) =>
        this.withRemotePolicy(() => {
          try {
            this.agent.deletePolicy(key); // by repository key (kind/namespace/name)
          } catch (e) {
            if (!isTunswitchError(e, 'EPOLICY_NOT_FOUND')) throw e;
          }
        }),
    });
  }

  /** Connects (rejects after `timeoutMs` without etcd), registers the node, starts every watch, installs the hooks. */
  async start(timeoutMs = 10_000): Promise<void> {
    await this.session.start(timeoutMs);
    const pool = this.agent.opts;
    await this.nodes.register(this.opts.nodeIp, pool.pool4.text, pool.pool6 ? pool.pool6.text : null);
    await this.identities.start();
    await this.nodes.start();
    await this.ipcache.start();
    await this.policies.start();
    this.installHooks();
    this.log(`kvstore ${this.session.url}: node ${this.opts.node} (${this.opts.nodeIp}), lease TTL ${this.opts.leaseTtl} s, ${this.nodes.nodes.size} nodes, ${this.identities.known.size} identities, ${this.ipcache.remote.size} remote ipcache entries`);
  }

  private installHooks(): void {
    const bg = (what: string, p: Promise<unknown>): void => {
      p.catch((e: unknown) => this.log(`kvstore: ${what}: ${(e as Error).message} (retried when etcd answers)`));
    };
    this.agent.hooks = {
      identityNumber: async (labels) => {
        try {
          return await this.identities.allocate(labels);
        } catch (e) {
          throw new TunswitchError('EKVSTORE', `kvstore ${this.session.url}: identity for "${labels}": ${(e as Error).message}`);
        }
      },
      identityReleased: (labels) => bg(`release identity "${labels}"`, this.identities.release(labels)),
      endpointReady: (ep) => {
        if (ep.ipv4) bg(`publish ${ep.ipv4}`, this.ipcache.publish(ep.ipv4, ep.identity));
        if (ep.ipv6) bg(`publish ${ep.ipv6}`, this.ipcache.publish(ep.ipv6, ep.identity));
      },
      endpointRemoved: (ep) => {
        if (ep.ipv4) bg(`unpublish ${ep.ipv4}`, this.ipcache.unpublish(ep.ipv4));
        if (ep.ipv6) bg(`unpublish ${ep.ipv6}`, this.ipcache.unpublish(ep.ipv6));
      },
      policiesImported: (text, file, pols) => {
        if (!this.applyingRemotePolicy) bg(`store policies ${pols.map((p) => p.name).join(', ')}`, this.policies.publish(text, file, pols));
      },
      policiesDeleted: (keys) => {
        if (!this.applyingRemotePolicy) bg(`delete policies ${keys.join(', ')}`, this.policies.remove(keys));
      },
      ipcacheNode: (cidr) => this.remoteCidrs.get(cidr),
      status: () => this.status(),
      listNodes: () => this.listNodes(),
    };
  }

  private withRemotePolicy(fn: () => void): void {
    this.applyingRemotePolicy = true;
    try {
      fn();
    } finally {
      this.applyingRemotePolicy = false;
    }
  }

  private onIdentities(added: [number, string][], removed: [number, string][]): void {
    const al = this.agent.allocator;
    for (const [id] of removed) {
      if (!this.heldIds.has(id)) continue;
      this.heldIds.delete(id);
      al.release(id);
    }
    for (const [id, labels] of added) {
      if (id < 256 || id > 65535 || this.heldIds.has(id)) continue;
      try {
        al.allocateAs(LabelSet.parse(labels), id);
        this.heldIds.set(id, labels);
      } catch (e) {
        this.log(`kvstore: identity ${id} "${labels}" not taken: ${(e as Error).message}`);
      }
    }
    this.agent.resync();
  }

  /**
   * Other nodes' entries go through the ipcache owner layer as owner `kvstore`
   * (src/control/ipcache-owners.ts): a local endpoint's or the host's own claim on the same
   * prefix wins and is never overwritten or removed by a remote record.
   */
  private onRemoteIpcache(upserts: RemoteIpEntry[], deletes: string[]): void {
    const w = this.agent.tables;
    const ipc = this.agent.ipc;
    ipc.batch(() => {
      for (const ip of deletes) {
        const cidr = hostCidr(ip);
        if (cidr === null || !this.remoteCidrs.has(cidr)) continue;
        this.remoteCidrs.delete(cidr);
        ipc.clear(cidr, 'kvstore');
      }
      for (const e of upserts) {
        const cidr = hostCidr(e.ip);
        const t = tryParsePrefix(e.hostIP, true);
        if (cidr === null) continue;
        // An entry whose host is this node is not remote (a stale record of ours): no tunnel.
        const tunnel = t && t.family === 4 && (t.words[0] as number) !== this.hostIpWord ? (t.words[0] as number) : 0;
        try {
          ipc.set(cidr, 'kvstore', { identity: e.identity, tunnel });
          this.remoteCidrs.set(cidr, e.node);
        } catch (err) {
          ipc.clear(cidr, 'kvstore'); // the claim the full table refused
          // Table full (or a prefix it refuses): count it, keep the rest of the batch.
          this.ipcacheRejected++;
          if (this.ipcacheRejected <= 3 || this.ipcacheRejected % 1000 === 0) {
            this.log(`kvstore: remote ipcache ${cidr} from ${e.node} not installed (${this.ipcacheRejected} so far): ${(err as Error).message}`);
          }
        }
      }
    });
    w.bumpPolicyRevision();
    w.commit();
  }

  listNodes(): NodeInfo[] {
    return this.nodes.list();
  }

  /** The node that published the remote address `ip` (observe: the node of a flow's remote side). */
  remoteNode(ip: string): string | undefined {
    return this.remoteCidrs.get(ip.includes(':') ? `${ip}/128` : `${ip}/32`);
  }

  status(): KvstoreStatus {
    const s = this.session;
    return {
      url: s.url,
      node: s.node,
      state: s.state,
      lastError: s.lastError,
      leaseTtl: s.leaseTtl,
      leaseRenewals: s.leaseRenewals,
      nodes: this.nodes.nodes.size,
      identities: this.identities.known.size,
      remoteIpcacheEntries: this.ipcache.remote.size,
      remoteIpcacheRejected: this.ipcacheRejected,
      ownedKeys: s.ownedCount(),
      pendingWrites: s.pendingWrites,
      operations: { ...s.ops },
    };
  }

  /**
   * Leaves the cluster. `revoke`: delete this node's keys now (clean shutdown); otherwise
   * they go when the lease expires.
   */
  async stop(revoke = true): Promise<void> {
    this.agent.hooks = {};
    await this.policies.stop();
    await this.ipcache.stop();
    await this.nodes.stop();
    await this.identities.stop();
    await this.session.close(revoke);
  }
}

function hostCidr(ip: string): string | null {
  const p = tryParsePrefix(ip, true);
  if (!p || (p.family === 4 && p.bits !== 32) || (p.family === 6 && p.bits !== 128)) return null;
  return p.text;
}
