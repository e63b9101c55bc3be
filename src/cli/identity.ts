/** `tunswitch identity list|get`, like `cilium identity`. */
import type { Command } from 'commander';
import { apiPath } from '../api/client.js';
import type { IdentityInfo } from '../api/types.js';
import { parseNonNegativeInt, print, withOutput, type CliContext } from './context.js';
import { formatKeyValues, formatTable } from '../text/table.js';

export function formatIdentities(ids: readonly IdentityInfo[]): string {
  return formatTable(
    ['ID', 'KIND', 'REFS', 'LABELS'],
    ids.map((i) => [i.id, i.kind, i.refs, i.labels]),
  );
}

export function register(program: Command, ctx: CliContext): void {
  const id = program.command('identity').description('show security identities');

  withOutput(id.command('list').alias('ls').description('list identities')).action(async (_o, cmd: Command) => {
    const ids = await ctx.client().get<IdentityInfo[]>('/v1/identity');
    print(ctx, cmd, ids, () => formatIdentities(ids));
  });

  withOutput(id.command('get').argument('<id>', 'identity number', parseNonNegativeInt).description('show one identity')).action(
    async (n: number, _o, cmd: Command) => {
      const i = await ctx.client().get<IdentityInfo>(apiPath('/v1/identity', n));
      print(ctx, cmd, i, () =>
        formatKeyValues([
          ['ID', i.id],
          ['Kind', i.kind],
          ['References', i.refs],
          ['Labels', i.labels],
        ]),
      );
    },
  );
}
