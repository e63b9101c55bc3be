/**
 * `tunswitch run`'s kvstore flags (--kvstore, --node-name, --node-ip, --lease-ttl) over the
 * config's `kvstore:` section. Its own module so that `run` loads the config parser (and
 * yaml) only when it runs.
 */
import { UsageError } from '../proto/errors.js';
import { checkKvstore, DEFAULT_LEASE_TTL, type RunConfig } from '../runtime/config.js';

export interface KvstoreFlags {
  kvstore?: string;
  nodeName?: string;
  nodeIp?: string;
  leaseTtl?: string;
}

/** A bad flag value is a UsageError: exit 2 with one line naming the flag. */
export { UsageError };

/** The command line's kvstore flags over the config's `kvstore:` (a usage error names the flag). */
export function applyKvstoreFlags(cfg: RunConfig, o: KvstoreFlags): RunConfig {
  const any = o.kvstore !== undefined || o.nodeName !== undefined || o.nodeIp !== undefined || o.leaseTtl !== undefined;
  if (!any) return cfg;
  const base = cfg.kvstore;
  if (o.kvstore === undefined && !base) {
    // --node-ip alone: the VXLAN underlay without a kvstore (static tunnel entries).
    if (o.nodeName !== undefined || o.leaseTtl !== undefined) throw new UsageError('--node-name and --lease-ttl need --kvstore (or kvstore: in the config)');
    const ip = o.nodeIp as string;
    if (!/^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.test(ip) || ip.split('.').some((x) => Number(x) > 255)) throw new UsageError(`--node-ip: ${JSON.stringify(ip)} is not an IPv4 address`);
    return underlayOnly(cfg, ip);
  }
  const flag: Record<string, string> = { url: '--kvstore', nodeName: '--node-name', nodeIp: '--node-ip', leaseTtl: '--lease-ttl' };
  const kvstore = checkKvstore(
    {
      url: o.kvstore ?? base?.url,
      nodeName: o.nodeName ?? base?.nodeName ?? cfg.name,
      nodeIp: o.nodeIp ?? base?.nodeIp,
      leaseTtl: o.leaseTtl !== undefined ? (/^[0-9]+$/.test(o.leaseTtl) ? Number(o.leaseTtl) : o.leaseTtl) : (base?.leaseTtl ?? DEFAULT_LEASE_TTL),
    },
    (field, msg) => {
      throw new UsageError(`${flag[field] ?? field}: ${msg}`);
    },
  );
  return { ...cfg, kvstore, underlay: { ip: kvstore.nodeIp } };
}

function underlayOnly(cfg: RunConfig, ip: string): RunConfig {
  return { ...cfg, underlay: { ip } };
}

