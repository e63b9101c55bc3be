/**
 * The one way control-plane changes reach the datapath: compiler diffs (policy entries,
 * endpoint enforcement flags, CIDR ipcache claims), endpoint records and the agent-wide config
 * flags are written into the table writers' log, and `commit()` publishes them as one new
 * policy revision.
 *
 * The policy revision is the meta word M_POLICY_REVISION: the number users see (`status`,
 * `policy import`, `policy list`, `policy trace`), the number workers compare with the one an
 * established flow's verdict was cached at, and the number metrics export. Every publish that
 * can change a verdict (policy, endpoint flags, identities, ipcache, audit) bumps it once.
 */
import type { PolicyDiff } from './policy/compile.js';
import type { IpcacheOwners } from './ipcache-owners.js';
import { tryParsePrefix, type Prefix } from './cidr.js';
import { EP_AUDIT, EP_ENFORCE_EGRESS, EP_ENFORCE_INGRESS } from '../tables/endpoints.js';
import { CFG_ALLOW_LOCALHOST, CFG_AUDIT, CFG_HOST_PORT, M_CONFIG_FLAGS, M_POLICY_REVISION, type TableSetWriter } from '../tables/tableset.js';

/** What the publisher needs of an endpoint to write its record. */
export interface PublishedEndpoint {
  identity: number;
  port: number;
  ipv4?: string;
  ipv6?: string;
}

export interface Enforcement {
  ingress: boolean;
  egress: boolean;
  audit: boolean;
}

export class TablePublisher {
  constructor(
    private readonly tables: TableSetWriter,
    private readonly ipc: IpcacheOwners,
    /** The endpoint behind an index, or undefined (removed meanwhile). */
    private readonly endpoint: (ep: number) => PublishedEndpoint | undefined,
    /** The enforcement the compiler decided for an endpoint. */
    private readonly enforcement: (ep: number) => Enforcement,
  ) {}

  /** The policy revision last published (or being prepared, before commit). */
  get revision(): number {
    return this.tables.meta(M_POLICY_REVISION);
  }

  /**
   * Writes a compiler diff into the tables (no publish). Throws ETABLE_FULL before writing
   * anything when the policy entries do not fit (PolicyTableWriter.checkRoom).
   */
  write(diff: PolicyDiff): void {
    const pw = this.tables.policy;
    pw.checkRoom(diff.removed, diff.added);
    for (const e of diff.removed) pw.remove(e);
    for (const e of diff.added) pw.add(e);
    for (const c of diff.ipcache.removed) this.ipc.clear(c.prefix, 'cidr-policy');
    for (const c of diff.ipcache.added) this.ipc.set(c.prefix, 'cidr-policy', { identity: c.identity });
    for (const enf of diff.enforcement) this.writeEndpoint(enf.ep);
  }

  /** Publishes everything written since the last commit as one new policy revision; returns it. */
  commit(): number {
    const rev = this.tables.bumpPolicyRevision();
    this.tables.commit();
    return rev;
  }

  /** write(diff) then commit(). */
  publish(diff?: PolicyDiff): number {
    if (diff) this.write(diff);
    return this.commit();
  }

  /** The endpoint table record of `ep`: identity, addresses, port, enforcement flags. */
  writeEndpoint(ep: number): void {
    const rec = this.endpoint(ep);
    if (!rec) return;
    const enf = this.enforcement(ep);
    let flags = 0;
    if (enf.ingress) flags |= EP_ENFORCE_INGRESS;
    if (enf.egress) flags |= EP_ENFORCE_EGRESS;
    if (enf.audit) flags |= EP_AUDIT;
    const r: { identity: number; ipv4?: number; ipv6?: number[]; port: number; flags: number } = { identity: rec.identity, port: rec.port, flags };
    if (rec.ipv4) r.ipv4 = (tryParsePrefix(rec.ipv4) as Prefix).words[0] as number;
    if (rec.ipv6) r.ipv6 = [...(tryParsePrefix(rec.ipv6) as Prefix).words];
    this.tables.endpoints.upsert(ep, r);
  }

  /** The agent-wide flags: audit, host port present; allow-localhost is always on (Cilium's default). */
  writeConfig(audit: boolean, hostPort: boolean): void {
    let flags = CFG_ALLOW_LOCALHOST;
    if (audit) flags |= CFG_AUDIT;
    if (hostPort) flags |= CFG_HOST_PORT;
    this.tables.setMeta(M_CONFIG_FLAGS, flags);
  }
}
