/**
 * `tunswitch monitor [--type drop|trace|policy-verdict]... [-o json]`: the datapath's events
 * as they happen, one `cilium monitor`-like line each (src/observe/format.ts formatMonitor),
 * until Ctrl-C (exit 0). Only new events are shown, as with cilium monitor.
 */
import { Option, type Command } from 'commander';
import type { FilterOptions } from '../observe/filter.js';
import { formatJson, formatMonitor } from '../observe/format.js';
import { collect, type CliContext } from './context.js';
import { filtersOf, followEvents } from './observe.js';

export function register(program: Command, ctx: CliContext): void {
  program
    .command('monitor')
    .description('print datapath events as they happen, like cilium monitor')
    .option('-t, --type <type>', 'only this event type: drop, trace or policy-verdict (repeatable)', collect((s: string) => s))
    .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'))
    .action(async (o: Record<string, unknown>, c: Command) => {
      const filter: FilterOptions = {};
      if (o.type !== undefined) filter.type = o.type as string[];
      const match = filtersOf(c, filter);
      const json = o.output === 'json';
      if (!json) ctx.warn(`Listening for events on ${ctx.socket()}\nPress Ctrl-C to quit`);
      await followEvents(ctx, match, (e) => ctx.out((json ? formatJson(e) : formatMonitor(e)) + '\n'), { lastMatching: 0 });
    });
}
