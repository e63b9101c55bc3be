/**
 * `tunswitch link`: link impairments per endpoint (src/runtime/impair.ts), netem's knobs on a
 * switch port.
 *
 *   tunswitch link set EP --delay 20ms --jitter 5ms --loss 1% --rate 100mbit
 *   tunswitch link show [EP] [-o json]
 *   tunswitch link clear EP
 *
 * `set` replaces the endpoint's whole impairment (as `tc qdisc replace`): flags not given are
 * off. The flags are checked here first (a bad value is a usage error, exit 2, naming the
 * flag), then the switch checks them again (it is the one parser, src/runtime/link-spec.ts).
 */
import type { Command } from 'commander';
import { apiPath } from '../api/client.js';
import type { LinkInfo } from '../api/types.js';
import { LINK_SPEC_KEYS, LinkSpecError, linkIsNoop, parseLinkSpec, type LinkSpec } from '../runtime/link-spec.js';
import { print, UsageError, withOutput, type CliContext } from './context.js';
import { formatTable } from '../text/table.js';

/** LinkSpec key -> its flag (lossModel -> --loss-model). */
export function linkFlag(key: string): string {
  return `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** The LinkSpec the flags give; a bad value is a UsageError naming the flag. */
export function linkSpecFromFlags(o: Record<string, unknown>): LinkSpec {
  const spec: Record<string, unknown> = {};
  for (const k of LINK_SPEC_KEYS) if (o[k] !== undefined) spec[k] = o[k];
  if (Object.keys(spec).length === 0) throw new UsageError(`link set: give at least one of ${LINK_SPEC_KEYS.map(linkFlag).join(', ')} (link clear removes them)`);
  try {
    const lp = parseLinkSpec(spec, linkFlag, () => 0);
    if (linkIsNoop(lp)) throw new UsageError('link set: every impairment is off (give --delay, --loss, --loss-model, --duplicate, --reorder or --rate; link clear removes them)');
  } catch (e) {
    if (e instanceof LinkSpecError) throw new UsageError(e.message);
    throw e;
  }
  return spec as LinkSpec;
}

function dash(s: string | undefined): string {
  return s === undefined ? '-' : s;
}

export function formatLinks(list: readonly LinkInfo[]): string {
  const rows = list.map((l) => {
    const s = l.link;
    if (s === null) return [l.endpoint, 'none', '', '', '', '', '', '', ''];
    const jitter = s.jitter === undefined ? '-' : `${s.jitter} ${s.distribution ?? 'uniform'}`;
    const loss = s.lossModel ?? dash(s.loss);
    return [l.endpoint, dash(s.delay), jitter, loss, dash(s.duplicate), dash(s.reorder), dash(s.rate), dash(s.limit), String(s.seed ?? '')];
  });
  return formatTable(['ENDPOINT', 'DELAY', 'JITTER', 'LOSS', 'DUPLICATE', 'REORDER', 'RATE', 'LIMIT', 'SEED'], rows);
}

export function register(program: Command, ctx: CliContext): void {
  const link = program.command('link').description('link impairments of an endpoint: delay, jitter, loss, duplication, reordering, rate');

  withOutput(
    link
      .command('set')
      .argument('<id|name>', 'endpoint index or name')
      .option('--delay <duration>', 'delay every packet (e.g. 20ms, 1s)')
      .option('--jitter <duration>', 'vary the delay by up to this much (e.g. 5ms)')
      .option('--distribution <name>', 'jitter distribution: uniform or normal (default uniform)')
      .option('--loss <percent>', 'lose packets at random (e.g. 1%, 0.5%)')
      .option('--loss-model <model>', 'random, or Gilbert-Elliott: gemodel:p=1%,r=30%[,bad=100%][,good=0%]')
      .option('--duplicate <percent>', 'send packets twice (e.g. 1%)')
      .option('--reorder <percent>', 'send packets at once, skipping the delay (needs --delay)')
      .option('--rate <rate>', 'rate limit of the link (e.g. 100mbit, 1gbit, 500kbit)')
      .option('--limit <size>', 'bytes the delay line may hold (default 4MiB; beyond: drop reason 238)')
      .option('--seed <n>', 'seed of the random stream, for reproducible runs')
      .description('impair the link to an endpoint (replaces its settings; flags not given are off)'),
  ).action(async (id: string, o: Record<string, unknown>, cmd: Command) => {
    const spec = linkSpecFromFlags(o);
    const info = await ctx.client().put<LinkInfo>(`${apiPath('/v1/endpoint', id)}/link`, spec);
    print(ctx, cmd, info, () => formatLinks([info]));
  });

  withOutput(
    link
      .command('show')
      .alias('list')
      .argument('[id|name]', 'endpoint index or name (default: every endpoint)')
      .description('show the link impairments of one or every endpoint'),
  ).action(async (id: string | undefined, _o, cmd: Command) => {
    const list = id === undefined ? await ctx.client().get<LinkInfo[]>('/v1/link') : [await ctx.client().get<LinkInfo>(`${apiPath('/v1/endpoint', id)}/link`)];
    print(ctx, cmd, id === undefined ? list : list[0], () => formatLinks(list));
  });

  link
    .command('clear')
    .argument('<id|name>', 'endpoint index or name')
    .description('remove every impairment of an endpoint\'s link')
    .action(async (id: string) => {
      const info = await ctx.client().delete<LinkInfo>(`${apiPath('/v1/endpoint', id)}/link`);
      ctx.out(`Link of endpoint ${info?.endpoint ?? id} cleared\n`);
    });
}
