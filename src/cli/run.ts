/**
 * `tunswitch run -c FILE`: the agent in the foreground. Logs go to stderr (--log-level,
 * --log-format text|json); the API listens on --socket; SIGINT, SIGTERM and SIGHUP remove
 * every device the switch made and exit 0 (SIGHUP does not reload).
 */
import { InvalidArgumentError, type Command } from 'commander';
import { listenSocket, packageVersion, UsageError, type CliContext } from './context.js';
import { parseListen } from './hubble.js';
import { makeLogger, parseLogFormat, parseLogLevel, type LogFormat, type LogLevel } from './log.js';
import type { KvstoreFlags } from './run-kvstore.js';

function parseDriverName(s: string): string {
  if (s !== 'none' && !/^[a-z0-9][a-z0-9._-]{0,62}$/.test(s)) throw new InvalidArgumentError(`"${s}" is not a driver name (a-z, 0-9, ".", "_", "-").`);
  return s;
}

export function register(program: Command, _ctx: CliContext): void {
  program
    .command('run')
    .description('run the switch in the foreground for a lab config (namespaces <name>-<node> must exist)')
    .requiredOption('-c, --config <file>', 'lab/run config (YAML)')
    .option('--state-dir <dir>', 'state directory (endpoints, identities, policies survive a restart)')
    .option('--metrics-addr <host:port>', 'Prometheus /metrics address', '127.0.0.1:9962')
    .option('--force-partial-restore', 'start even when state entries cannot be restored: skip each one and log it (they are dropped at the next save)')
    .option('--no-metrics', 'do not serve /metrics on TCP')
    .option('--no-events', 'do not emit trace and policy-verdict events (drops are always reported)')
    .option('--docker', 'Docker mode: serve the network driver "tunswitch" (/run/docker/plugins/tunswitch.sock), and attach containers labelled tunswitch.enable=true (network_mode: none)')
    .option('--docker-socket <path>', 'Docker engine API socket (implies --docker; default DOCKER_HOST, else /var/run/docker.sock)')
    .option('--docker-driver <name>', 'the network driver\'s name, the socket /run/docker/plugins/NAME.sock; "none": no driver (implies --docker)', parseDriverName)
    .option('--kvstore <url>', 'cluster mode: share identities, ipcache, nodes and policies through etcd (etcd://HOST:PORT)')
    .option('--node-name <name>', 'this node\'s name in the cluster (default: the config\'s kvstore.nodeName, else its name)')
    .option('--node-ip <ipv4>', 'this node\'s underlay address: VXLAN (UDP 8472) is sent from and received on it (without --kvstore: static tunnel entries only)')
    .option('--lease-ttl <seconds>', 'kvstore lease TTL: a dead node\'s entries vanish after it')
    .option('--hubble-listen <addr>', "also serve Hubble's Observer gRPC API there (unix:///path or host:port)", parseListen)
    .option('--log-level <level>', 'debug, info, warn or error', parseLogLevel, 'info')
    .option('--log-format <format>', 'text (<time> <LEVEL> <message>) or json (one object per line)', parseLogFormat, 'text')
    .action(async (o: { config: string; stateDir?: string; metricsAddr: string; metrics: boolean; events: boolean; docker?: boolean; dockerSocket?: string; dockerDriver?: string; hubbleListen?: string; logLevel: LogLevel; logFormat: LogFormat; forcePartialRestore?: boolean } & KvstoreFlags, cmd: Command) => {
      const logger = makeLogger(o.logLevel, o.logFormat);
      // The runtime (Piscina, the native binding, prom-client) loads only for `run`.
      const { loadRunConfig } = await import('../runtime/config.js');
      const { startSwitch } = await import('../runtime/switch.js');
      let cfg = loadRunConfig(o.config);
      const { applyKvstoreFlags } = await import('./run-kvstore.js');
      try {
        cfg = applyKvstoreFlags(cfg, o);
      } catch (e) {
        if (e instanceof UsageError) cmd.error(e.message, { exitCode: 2, code: 'tunswitch.usage' });
        throw e;
      }
      let docker: { socketPath?: string; driverName?: string | null } | null = null;
      if (o.docker || o.dockerSocket !== undefined || o.dockerDriver !== undefined) {
        docker = {};
        if (o.dockerSocket) docker.socketPath = o.dockerSocket;
        if (o.dockerDriver !== undefined) docker.driverName = o.dockerDriver === 'none' ? null : o.dockerDriver;
      }
      if (o.metrics && !/^[0-9.]+:\d{1,5}$|^\[[0-9a-f:]+\]:\d{1,5}$|^localhost:\d{1,5}$/i.test(o.metricsAddr)) {
        throw new UsageError(`--metrics-addr: ${JSON.stringify(o.metricsAddr)} is not host:port`);
      }
      const sw = await startSwitch(cfg, {
        socket: listenSocket(program),
        stateDir: o.stateDir ?? `/var/lib/tunswitch/${cfg.name}`,
        forcePartialRestore: o.forcePartialRestore === true,
        metricsAddr: o.metrics ? o.metricsAddr : null,
        version: packageVersion(),
        events: o.events,
        docker,
        log: (m: string) => logger.auto(m),
      });
      let hubble: { close(): Promise<void> } | null = null;
      let stopping = false;
      const stop = (sig: string): void => {
        if (stopping) return;
        stopping = true;
        logger.log('info', `${sig}: stopping, removing devices`);
        const hubbleClosed = hubble !== null ? hubble.close().catch(() => undefined) : Promise.resolve();
        hubbleClosed.then(() => sw.stop()).then(
          () => process.exit(0),
          (e: unknown) => {
            logger.log('error', `stopping failed: ${(e as Error).message}`);
            process.exit(1);
          },
        );
      };
      // SIGUSR2: end one shard worker thread, to see the supervisor restart it (fault injection).
      process.on('SIGUSR2', () => {
        logger.log('warn', 'SIGUSR2: ending a shard worker thread (fault injection)');
        void sw.killShardWorker();
      });
      process.on('SIGINT', () => stop('SIGINT'));
      process.on('SIGTERM', () => stop('SIGTERM'));
      // SIGHUP (the terminal closed): the same clean shutdown as SIGTERM, devices and socket
      // removed, exit 0. It does not reload the config: restart to apply a changed file.
      process.on('SIGHUP', () => stop('SIGHUP'));
      try {
        const r = await sw.ready;
        logger.log('info', `ready: ${r.endpoints} endpoints, ${cfg.workers} shard workers${cfg.offload ? ', offload on' : ''}`);
        if (o.hubbleListen !== undefined) {
          const { startHubbleServer } = await import('../observe/hubble-server.js');
          hubble = await startHubbleServer({
            socket: listenSocket(program),
            listen: o.hubbleListen,
            log: (m) => logger.log('info', m),
          });
        }
      } catch (e) {
        await sw.stop().catch(() => undefined);
        throw e;
      }
      await new Promise(() => undefined); // until a signal
    });
}
