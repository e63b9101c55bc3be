/** `tunswitch ipcache list|get`, like `cilium bpf ipcache`. */
import type { Command } from 'commander';
import { apiPath } from '../api/client.js';
import type { IpcacheInfo } from '../api/types.js';
import { parseIP, print, withOutput, type CliContext } from './context.js';
import { formatKeyValues, formatTable } from '../text/table.js';

/** Identity of `world`: what the datapath uses for an address no prefix covers. */
const WORLD_IDENTITY = 2;

export function formatIpcache(es: readonly IpcacheInfo[]): string {
  // Cluster mode: a NODE column names the node that published each remote entry.
  if (es.some((e) => e.node !== undefined)) {
    return formatTable(
      ['PREFIX', 'IDENTITY', 'SOURCE', 'TUNNEL', 'NODE'],
      es.map((e) => [e.cidr, e.identity, e.source, e.tunnel, e.node]),
    );
  }
  return formatTable(
    ['PREFIX', 'IDENTITY', 'SOURCE', 'TUNNEL', 'ALSO CLAIMED BY'],
    es.map((e) => [e.cidr, e.identity, e.source, e.tunnel, (e.owners ?? []).slice(1).join(',') || undefined]),
  );
}

export function register(program: Command, ctx: CliContext): void {
  const ipc = program.command('ipcache').description('show the IP → identity cache');

  withOutput(ipc.command('list').alias('ls').description('list every prefix')).action(async (_o, cmd: Command) => {
    const es = await ctx.client().get<IpcacheInfo[]>('/v1/ipcache');
    print(ctx, cmd, es, () => formatIpcache(es));
  });

  withOutput(ipc.command('get').argument('<ip>', 'an address', parseIP).description('longest-prefix match for an address')).action(
    async (ip: string, _o, cmd: Command) => {
      const e = await ctx.client().get<IpcacheInfo | null>(apiPath('/v1/ipcache', ip));
      print(ctx, cmd, e ?? null, () =>
        e
          ? formatKeyValues([
              ['Address', ip],
              ['Prefix', e.cidr],
              ['Identity', e.identity],
              ['Source', e.source],
              ['Also claimed by', (e.owners ?? []).slice(1).join(', ') || undefined],
              ['Tunnel', e.tunnel],
              ['Node', e.node],
            ])
          : `${ip}: no prefix matches (treated as world, identity ${WORLD_IDENTITY})\n`,
      );
    },
  );
}
