/**
 * `tunswitch hubble serve`: Hubble's Observer gRPC API for a running switch, so `hubble
 * observe --server ...` and other Hubble clients read its flows (src/observe/hubble-server.ts).
 * `tunswitch run --hubble-listen ADDR` serves the same from the agent's process.
 */
import { InvalidArgumentError, type Command } from 'commander';
import type { CliContext } from './context.js';

export const DEFAULT_HUBBLE_LISTEN = 'unix:///run/tunswitch/hubble.sock';

/** `unix:///path`, `unix:path` or `host:port`; anything else is a usage error. */
export function parseListen(s: string): string {
  if (/^unix:(\/\/)?\/\S+$/.test(s)) return s;
  if (/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(s)) return s;
  throw new InvalidArgumentError(`"${s}" is neither unix:///path nor host:port.`);
}

export function register(program: Command, ctx: CliContext): void {
  const hubble = program.command('hubble').description("Hubble's Observer gRPC API for hubble observe and other Hubble clients");
  hubble
    .command('serve')
    .description('serve GetFlows and ServerStatus for the chosen switch until Ctrl-C')
    .option('--listen <addr>', `unix:///path or host:port (default ${DEFAULT_HUBBLE_LISTEN})`, parseListen, DEFAULT_HUBBLE_LISTEN)
    .option('--node-name <name>', 'node_name in every flow (default: the switch name)')
    .action(async (o: { listen: string; nodeName?: string }) => {
      const listen = o.listen;
      const { startHubbleServer } = await import('../observe/hubble-server.js');
      const srv = await startHubbleServer({ socket: ctx.socket(), listen, nodeName: o.nodeName, log: (m) => ctx.warn(m) });
      ctx.warn(`try: hubble observe --server ${srv.address} --last 20`);
      await new Promise<void>((resolve) => {
        const stop = (): void => resolve();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
        process.once('SIGHUP', stop);
      });
      await srv.close();
    });
}
