/**
 * The ipcache as the API shows and changes it: list (with each prefix's owners), longest match
 * read from the published tables exactly as a worker reads them, and the API's own claims
 * (remote prefixes added by hand). Entries checked by src/api/validate.ts.
 */
import { TunswitchError } from './errors.js';
import { formatV4, tryParsePrefix, type Prefix } from './cidr.js';
import type { AgentContext } from './agent-context.js';
import { CONTROL_READER_SLOT } from './trace.js';
import type { IpcacheEntryRequest, IpcacheInfo } from '../api/types.js';

export class IpcacheService {
  constructor(private readonly ctx: AgentContext) {}

  list(): IpcacheInfo[] {
    return this.ctx.tables.ipcache.list().map((e) => this.info(e));
  }

  /** One entry as the API shows it: the resolved owner is the source; `owners` lists every claim. */
  private info(e: { cidr: string; identity: number; tunnel: number }): IpcacheInfo {
    const owners = this.ctx.ipc.owners(e.cidr);
    const out: IpcacheInfo = { cidr: e.cidr, identity: e.identity, source: owners[0] ?? 'api', owners };
    if (e.tunnel) out.tunnel = formatV4(e.tunnel);
    const node = this.ctx.hooks().ipcacheNode?.(e.cidr);
    if (node !== undefined && owners.includes('kvstore')) out.node = node; // remote entries: owner kvstore (src/kvstore/cluster.ts)
    return out;
  }

  /** Adds checked entries as the API's claims; one revision. */
  upsert(entries: readonly IpcacheEntryRequest[]): { added: number } {
    this.ctx.ipc.batch(() => {
      for (const e of entries) this.ctx.ipc.set(e.cidr, 'api', { identity: e.identity, tunnel: e.tunnel ?? 0 });
    });
    this.ctx.publish();
    return { added: entries.length };
  }

  delete(cidr: string): { deleted: boolean } {
    const p = typeof cidr === 'string' ? tryParsePrefix(cidr, true) : null;
    if (!p) throw new TunswitchError('EBAD_REQUEST', `cidr: ${JSON.stringify(cidr)} is not a prefix`);
    // Only the API's own claim goes: an endpoint or policy holding the prefix keeps it.
    const ok = this.ctx.ipc.clear(p.text, 'api');
    this.ctx.publish();
    return { deleted: ok };
  }

  /** Longest match for `ip`, read from the published tables exactly as a worker reads them. */
  get(ip: string): IpcacheInfo | null {
    const p = typeof ip === 'string' ? tryParsePrefix(ip, true) : null;
    if (!p || (p.bits !== 32 && p.bits !== 128)) throw new TunswitchError('EBAD_REQUEST', `ip: ${JSON.stringify(ip)} is not an IP address`);
    const ts = this.ctx.tables.tables;
    const side = ts.control.enter(CONTROL_READER_SLOT);
    let leaf = 0;
    let len = 0;
    let identity = 0;
    let tunnel = 0;
    try {
      ts.useSide(side);
      const w = p.words;
      leaf = p.family === 4 ? ts.ipcache.lookup4(w[0] as number) : ts.ipcache.lookup6(w[0] as number, w[1] as number, w[2] as number, w[3] as number);
      if (leaf !== 0) {
        len = ts.ipcache.leafPrefixLen(leaf);
        identity = ts.ipcache.leafIdentity(leaf);
        tunnel = ts.ipcache.leafTunnel(leaf);
      }
    } finally {
      ts.control.leave(CONTROL_READER_SLOT);
    }
    if (leaf === 0) return null;
    const hit = tryParsePrefix(`${ip}/${len}`, false) as Prefix;
    return this.info({ cidr: hit.text, identity, tunnel });
  }
}
