/**
 * `tunswitch run -c FILE`: the agent in the foreground. Logs go to stderr; the API listens
 * on --socket; SIGINT/SIGTERM remove every device the switch made and exit 0.
 */
import type { Command } from 'commander';
import { packageVersion, type CliContext } from './context.js';
import { checkKvstore, checkUnderlay, DEFAULT_LEASE_TTL, loadRunConfig, type RunConfig } from '../runtime/config.js';
import { startSwitch } from '../runtime/switch.js';

/** A bad flag value: exit 2 with one line naming the flag. */
export class CliUsageError extends Error {}

interface RunFlags {
  config: string;
  stateDir?: string;
  metricsAddr: string;
  metrics: boolean;
  events: boolean;
  docker?: boolean;
  dockerSocket?: string;
  kvstore?: string;
  nodeName?: string;
  nodeIp?: string;
  leaseTtl?: string;
}

/** The command line's kvstore flags over the config's `kvstore:` (a usage error names the flag). */
export function applyKvstoreFlags(cfg: RunConfig, o: Pick<RunFlags, 'kvstore' | 'nodeName' | 'nodeIp' | 'leaseTtl'>): RunConfig {
  const any = o.kvstore !== undefined || o.nodeName !== undefined || o.nodeIp !== undefined || o.leaseTtl !== undefined;
  if (!any) return cfg;
  const base = cfg.kvstore;
  if (o.kvstore === undefined && !base) {
    // --node-ip alone: the VXLAN underlay without a kvstore (static tunnel entries).
    if (o.nodeName !== undefined || o.leaseTtl !== undefined) throw new CliUsageError('--node-name and --lease-ttl need --kvstore (or kvstore: in the config)');
    const ip = o.nodeIp as string;
    if (!/^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.test(ip) || ip.split('.').some((x) => Number(x) > 255)) throw new CliUsageError(`--node-ip: ${JSON.stringify(ip)} is not an IPv4 address`);
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
      throw new CliUsageError(`${flag[field] ?? field}: ${msg}`);
    },
  );
  const out = { ...cfg, kvstore, underlay: { ip: kvstore.nodeIp } };
  try {
    return checkUnderlay(out, '--kvstore');
  } catch (e) {
    throw new CliUsageError((e as Error).message);
  }
}

function underlayOnly(cfg: RunConfig, ip: string): RunConfig {
  try {
    return checkUnderlay({ ...cfg, underlay: { ip } }, '--node-ip');
  } catch (e) {
    throw new CliUsageError((e as Error).message);
  }
}

export function register(program: Command, ctx: CliContext): void {
  program
    .command('run')
    .description('run the switch in the foreground for a lab config (namespaces <name>-<node> must exist)')
    .requiredOption('-c, --config <file>', 'lab/run config (YAML)')
    .option('--state-dir <dir>', 'state directory (endpoints, identities, policies survive a restart)')
    .option('--metrics-addr <host:port>', 'Prometheus /metrics address', '127.0.0.1:9962')
    .option('--no-metrics', 'do not serve /metrics on TCP')
    .option('--no-events', 'do not emit trace and policy-verdict events (drops are always reported)')
    .option('--docker', 'attach running containers labelled tunswitch.enable=true and follow the engine (network_mode: none)')
    .option('--docker-socket <path>', 'Docker engine API socket (implies --docker; default DOCKER_HOST, else /var/run/docker.sock)')
    .option('--kvstore <url>', 'cluster mode: share identities, ipcache, nodes and policies through etcd (etcd://HOST:PORT)')
    .option('--node-name <name>', 'this node\'s name in the cluster (default: the config\'s kvstore.nodeName, else its name)')
    .option('--node-ip <ipv4>', 'this node\'s underlay address: VXLAN (UDP 8472) is sent from and received on it (without --kvstore: static tunnel entries only)')
    .option('--lease-ttl <seconds>', 'kvstore lease TTL: a dead node\'s entries vanish after it')
    .action(async (o: RunFlags, cmd: Command) => {
      let cfg = loadRunConfig(o.config);
      try {
        cfg = applyKvstoreFlags(cfg, o);
      } catch (e) {
        if (e instanceof CliUsageError) cmd.error(e.message, { exitCode: 2, code: 'tunswitch.usage' });
        throw e;
      }
      if (o.metrics && !/^[0-9.]+:\d{1,5}$|^\[[0-9a-f:]+\]:\d{1,5}$|^localhost:\d{1,5}$/i.test(o.metricsAddr)) {
        throw new Error(`--metrics-addr: ${JSON.stringify(o.metricsAddr)} is not host:port`);
      }
      const sw = await startSwitch(cfg, {
        socket: ctx.socket(),
        stateDir: o.stateDir ?? `/var/lib/tunswitch/${cfg.name}`,
        metricsAddr: o.metrics ? o.metricsAddr : null,
        version: packageVersion(),
        events: o.events,
        docker: o.dockerSocket ? { socketPath: o.dockerSocket } : o.docker ? {} : null,
      });
      let stopping = false;
      const stop = (sig: string): void => {
        if (stopping) return;
        stopping = true;
        process.stderr.write(`${new Date().toISOString()} ${sig}: stopping, removing devices\n`);
        sw.stop().then(
          () => process.exit(0),
          (e: unknown) => {
            process.stderr.write(`Error: ${(e as Error).message}\n`);
            process.exit(1);
          },
        );
      };
      // SIGUSR2: end one shard worker thread, to see the supervisor restart it (fault injection).
      process.on('SIGUSR2', () => {
        process.stderr.write(`${new Date().toISOString()} SIGUSR2: ending a shard worker thread (fault injection)\n`);
        void sw.killShardWorker();
      });
      process.on('SIGINT', () => stop('SIGINT'));
      process.on('SIGTERM', () => stop('SIGTERM'));
      try {
        const r = await sw.ready;
        process.stderr.write(`${new Date().toISOString()} ready: ${r.endpoints} endpoints, ${cfg.workers} shard workers${cfg.offload ? ', offload on' : ''}\n`);
      } catch (e) {
        await sw.stop().catch(() => undefined);
        throw e;
      }
      await new Promise(() => undefined); // until a signal
    });
}
