/** `tunswitch ct list|flush`, like `cilium bpf ct`. */
import type { Command } from 'commander';
import type { CtEntryInfo } from '../api/types.js';
import { print, withOutput, type CliContext } from './context.js';
import { formatTable } from '../text/table.js';

export function formatCt(es: readonly CtEntryInfo[]): string {
  return formatTable(
    ['SHARD', 'PROTO', 'SOURCE', 'DESTINATION', 'STATE', 'EXPIRES', 'IDENTITY', 'PACKETS', 'BYTES', 'FLAGS'],
    es.map((e) => [e.shard, e.proto, e.src, e.dst, e.state, `${e.expiresIn}s`, e.identity, e.packets, e.bytes, e.flags]),
  );
}

export function register(program: Command, ctx: CliContext): void {
  const ct = program.command('ct').description('connection tracking');

  withOutput(ct.command('list').alias('ls').description('list tracked connections')).action(async (_o, cmd: Command) => {
    const es = await ctx.client().get<CtEntryInfo[]>('/v1/ct');
    print(ctx, cmd, es, () => formatCt(es));
  });

  withOutput(ct.command('flush').description('remove every tracked connection')).action(async (_o, cmd: Command) => {
    const r = await ctx.client().delete<{ flushed: number }>('/v1/ct');
    print(ctx, cmd, r, () => `Flushed ${r.flushed} ${r.flushed === 1 ? 'entry' : 'entries'}\n`);
  });
}
