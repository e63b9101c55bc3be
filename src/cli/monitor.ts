/**
 * `tunswitch monitor`: the datapath's events as they happen, one `cilium monitor`-like line
 * each (src/observe/format.ts formatMonitor), until Ctrl-C (exit 0). Only new events are
 * shown, as with cilium monitor. Flags as cilium monitor's:
 *
 *   -t, --type drop|trace|policy-verdict   (repeatable)
 *   --from EP, --to EP, --related-to EP    endpoint by name or index: the source, the
 *                                          destination, either (repeatable; values OR)
 *   -v                                     verbose: each event's line and then its fields
 *   -j, --json                             one JSON object per event (same as -o json)
 */
import { Option, type Command } from 'commander';
import type { EndpointInfo, FlowEvent } from '../api/types.js';
import type { FilterOptions } from '../observe/filter.js';
import { formatJson, formatMonitor } from '../observe/format.js';
import { collect, type CliContext } from './context.js';
import { filtersOf, followEvents } from './observe.js';
import { fitLine } from '../text/width.js';

/** Endpoint names for `--from/--to/--related-to` values that may be indices. */
async function endpointNames(ctx: CliContext, values: readonly string[]): Promise<string[]> {
  if (!values.some((v) => /^\d+$/.test(v))) return [...values];
  const eps = await ctx.client().get<EndpointInfo[]>('/v1/endpoint');
  return values.map((v) => (/^\d+$/.test(v) ? (eps.find((e) => String(e.id) === v)?.name ?? v) : v));
}

/** `-v`: the monitor line, then the event's fields indented, one per line. */
export function formatVerbose(e: FlowEvent): string {
  const lines = [formatMonitor(e)];
  const add = (k: string, v: unknown): void => {
    if (v !== undefined && v !== '') lines.push(`  ${k.padEnd(12)} ${typeof v === 'string' ? v : JSON.stringify(v)}`);
  };
  add('time', e.time);
  add('verdict', e.verdict);
  add('direction', e.traffic_direction);
  add('reply', e.is_reply ? 'yes' : 'no');
  add('source', `${e.source.endpoint ?? e.IP.source} identity ${e.source.identity} [${e.source.labels.join(' ')}]`);
  add('destination', `${e.destination.endpoint ?? e.IP.destination} identity ${e.destination.identity} [${e.destination.labels.join(' ')}]`);
  if (e.drop_reason !== undefined) add('drop reason', `${e.drop_reason} (${e.drop_reason_desc ?? ''})`);
  add('match', e.policy_match_type);
  add('policy', e.policy);
  add('length', e.length);
  return lines.join('\n');
}

export function register(program: Command, ctx: CliContext): void {
  program
    .command('monitor')
    .description('print datapath events as they happen, like cilium monitor')
    .option('-t, --type <type>', 'only this event type: drop, trace or policy-verdict (repeatable)', collect((s: string) => s))
    .option('--from <endpoint>', 'events whose source is this endpoint (name or index; repeatable)', collect((s: string) => s))
    .option('--to <endpoint>', 'events whose destination is this endpoint (repeatable)', collect((s: string) => s))
    .option('--related-to <endpoint>', 'events from or to this endpoint (repeatable)', collect((s: string) => s))
    .option('-v, --verbose', 'each event with its fields')
    .option('-j, --json', 'one JSON object per event (as -o json)')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'))
    .action(async (o: Record<string, unknown>, c: Command) => {
      const filter: FilterOptions = {};
      if (o.type !== undefined) filter.type = o.type as string[];
      if (o.from !== undefined) filter.fromEndpoint = await endpointNames(ctx, o.from as string[]);
      if (o.to !== undefined) filter.toEndpoint = await endpointNames(ctx, o.to as string[]);
      if (o.relatedTo !== undefined) filter.endpoint = await endpointNames(ctx, o.relatedTo as string[]);
      const match = filtersOf(c, filter);
      const json = o.output === 'json' || o.json === true;
      const verbose = o.verbose === true;
      if (!json) ctx.warn(`Listening for events on ${ctx.socket()}\nPress Ctrl-C to quit`);
      const line = json ? formatJson : verbose ? formatVerbose : (e: FlowEvent): string => fitLine(formatMonitor(e));
      await followEvents(ctx, match, (e) => ctx.out(line(e) + '\n'), { lastMatching: 0 });
    });
}
