/**
 * `tunswitch run -c FILE`: the agent in the foreground. Logs go to stderr; the API listens
 * on --socket; SIGINT/SIGTERM remove every device the switch made and exit 0.
 */
import { InvalidArgumentError, type Command } from 'commander';
import { packageVersion, type CliContext } from './context.js';
import { loadRunConfig } from '../runtime/config.js';
import { startSwitch } from '../runtime/switch.js';

function parseDriverName(s: string): string {
  if (s !== 'none' && !/^[a-z0-9][a-z0-9._-]{0,62}$/.test(s)) throw new InvalidArgumentError(`"${s}" is not a driver name (a-z, 0-9, ".", "_", "-").`);
  return s;
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
    .option('--docker', 'Docker mode: serve the network driver "tunswitch" (/run/docker/plugins/tunswitch.sock), and attach containers labelled tunswitch.enable=true (network_mode: none)')
    .option('--docker-socket <path>', 'Docker engine API socket (implies --docker; default DOCKER_HOST, else /var/run/docker.sock)')
    .option('--docker-driver <name>', 'the network driver\'s name, the socket /run/docker/plugins/NAME.sock; "none": no driver (implies --docker)', parseDriverName)
    .action(async (o: { config: string; stateDir?: string; metricsAddr: string; metrics: boolean; events: boolean; docker?: boolean; dockerSocket?: string; dockerDriver?: string }) => {
      const cfg = loadRunConfig(o.config);
      let docker: { socketPath?: string; driverName?: string | null } | null = null;
      if (o.docker || o.dockerSocket !== undefined || o.dockerDriver !== undefined) {
        docker = {};
        if (o.dockerSocket) docker.socketPath = o.dockerSocket;
        if (o.dockerDriver !== undefined) docker.driverName = o.dockerDriver === 'none' ? null : o.dockerDriver;
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
        docker,
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
