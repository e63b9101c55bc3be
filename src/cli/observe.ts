/**
 * `tunswitch observe`: flow events, like `hubble observe`.
 *
 *   tunswitch observe [--last N] [filters...] [-o compact|json|table]
 *       the last N events (default 20) that match the filters, oldest first;
 *   tunswitch observe --follow [--last N] [filters...]
 *       the last N matching events (none unless --last is given, as in Hubble), then each new
 *       matching event as it happens, until Ctrl-C (exit 0).
 *
 * Filtering happens here, on the client: the API serves the agent's recent events
 * (`GET /v1/events?last=N`) and a stream of new ones (`GET /v1/events?follow=1&last=N`).
 */
import { Option, type Command } from 'commander';
import type { FlowEvent } from '../api/types.js';
import { FILTER_FLAGS, FilterError, parseFilters, type FilterKey, type FilterOptions, type FlowPredicate } from '../observe/filter.js';
import { formatCompact, formatDict, formatJson, formatJsonpb, formatTable, formatTableLine } from '../observe/format.js';
import { collect, parseNonNegativeInt, parsePositiveInt, type CliContext } from './context.js';
import { timeArg } from './duration.js';
import { fitLine, fitTable } from '../text/width.js';
import { TunswitchError } from '../proto/errors.js';

/** Events asked for when filtering history on the client: the API's largest `last`. */
export const HISTORY_LAST = 100_000;

/** `--last` when not following and not given, as Hubble's default. */
export const DEFAULT_LAST = 20;

const asString = (s: string): string => s;

/** Adds every filter flag (each repeatable) to `cmd`. */
export function addFilterOptions(cmd: Command): Command {
  for (const f of FILTER_FLAGS) cmd.option(`${f.flag} <${f.arg}>`, `${f.help} (repeatable)`, collect(asString));
  return cmd;
}

/**
 * Builds the predicate from a command's filter flags. A bad value is a usage error (exit 2)
 * with one line naming the flag.
 */
export function filtersOf(cmd: Command, opts: FilterOptions): FlowPredicate {
  try {
    return parseFilters(opts);
  } catch (e) {
    if (e instanceof FilterError) cmd.error(e.message, { exitCode: 2, code: 'tunswitch.invalidFilter' });
    throw e;
  }
}

export interface FollowOptions {
  /** Show this many matching events from the history first (0: only new events). */
  lastMatching: number;
  /** Called with the history shown first (already filtered), before any new event. */
  onHistory?: (events: FlowEvent[]) => void;
}

/**
 * Follows the event stream and calls `onEvent` for each matching event until Ctrl-C (then it
 * resolves), a closed stdout (resolves), or the agent ending the stream (rejects).
 *
 * With `lastMatching` > 0 the history is read first and filtered here, then the stream is
 * opened with the same number of past events; the stream's copy of the history is skipped up
 * to the newest event already shown, so nothing is shown twice and nothing that happened in
 * between is lost.
 */
export async function followEvents(ctx: CliContext, match: FlowPredicate, onEvent: (e: FlowEvent) => void, opts: FollowOptions): Promise<void> {
  const client = ctx.client();
  let skip = 0; // stream lines that may still be history
  let anchor: string | null = null; // the newest history event, as JSON
  if (opts.lastMatching > 0) {
    const history = await client.get<FlowEvent[]>(`/v1/events?last=${HISTORY_LAST}`);
    opts.onHistory?.(history.filter(match).slice(-opts.lastMatching));
    skip = history.length;
    if (skip > 0) anchor = JSON.stringify(history[skip - 1]);
  } else {
    opts.onHistory?.([]);
  }

  const ac = new AbortController();
  const stop = (): void => ac.abort();
  const onStdoutError = (e: NodeJS.ErrnoException): void => {
    if (e.code === 'EPIPE') stop();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  process.stdout.on('error', onStdoutError);
  try {
    await client.stream(
      `/v1/events?follow=1&last=${skip}`,
      (v) => {
        const e = v as FlowEvent;
        if (skip > 0) {
          skip--;
          if (JSON.stringify(e) === anchor) skip = 0; // everything after the anchor is new
          return;
        }
        if (match(e)) onEvent(e);
      },
      ac.signal,
    );
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    process.stdout.off('error', onStdoutError);
  }
  if (!ac.signal.aborted) throw new TunswitchError('EUNREACHABLE', `tunswitch at ${client.socket} ended the event stream (did the agent stop?)`);
}

/** The output modes of `observe` (Hubble's names; `json` is tunswitch's flat event). */
export const OBSERVE_FORMATS = ['compact', 'dict', 'json', 'jsonpb', 'table'] as const;
export type ObserveFormat = (typeof OBSERVE_FORMATS)[number];

/** One event as text in `format` (with its newline); the table has its own path. */
function lineOf(format: Exclude<ObserveFormat, 'table'>, nodeName: string): (e: FlowEvent) => string {
  switch (format) {
    case 'json':
      return (e) => formatJson(e) + '\n';
    case 'jsonpb':
      return (e) => formatJsonpb(e, nodeName) + '\n';
    case 'dict':
      return (e) => formatDict(e, nodeName);
    case 'compact':
      return (e) => fitLine(formatCompact(e)) + '\n';
  }
}

/** Writes events in one of observe's formats. */
function printer(ctx: CliContext, format: ObserveFormat, nodeName: string): { history(events: FlowEvent[]): void; event(e: FlowEvent): void } {
  if (format === 'table') {
    // Followed rows are padded to fixed widths; there is no knowing the widest row ahead.
    return {
      history: (events) => {
        ctx.out(fitLine(formatTableLine(null).trimEnd()) + '\n');
        for (const e of events) ctx.out(fitLine(formatTableLine(e).trimEnd()) + '\n');
      },
      event: (e) => ctx.out(fitLine(formatTableLine(e).trimEnd()) + '\n'),
    };
  }
  const line = lineOf(format, nodeName);
  return {
    history: (events) => {
      for (const e of events) ctx.out(line(e));
    },
    event: (e) => ctx.out(line(e)),
  };
}

function formatBatch(events: readonly FlowEvent[], format: ObserveFormat, nodeName: string): string {
  if (format === 'table') return fitTable(formatTable(events));
  return events.map(lineOf(format, nodeName)).join('');
}

/**
 * Hubble's `--not`: the filter flag right after it excludes instead of includes. Commander
 * parses every flag as usual; this reads the raw arguments again to find which values a
 * `--not` applied to, and returns the options split into `include` and `exclude`.
 */
export function splitNot(raw: readonly string[], parsed: FilterOptions): { include: FilterOptions; exclude: FilterOptions } {
  const byFlag = new Map<string, FilterKey>();
  for (const f of FILTER_FLAGS) for (const name of f.flag.split(', ')) byFlag.set(name, f.key);
  const exclude: Record<string, string[]> = {};
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] !== '--not') continue;
    const tok = raw[i + 1];
    if (tok === undefined) break;
    const eq = tok.indexOf('=');
    const name = eq > 0 && tok.startsWith('--') ? tok.slice(0, eq) : tok;
    const key = byFlag.get(name);
    if (key === undefined) continue;
    const value = eq > 0 && tok.startsWith('--') ? tok.slice(eq + 1) : raw[i + 2];
    if (value === undefined) continue;
    (exclude[key] ??= []).push(value);
  }
  const include: Record<string, string[]> = {};
  for (const f of FILTER_FLAGS) {
    const v = parsed[f.key];
    if (v === undefined) continue;
    const all = (Array.isArray(v) ? v : [v]).map(String);
    const drop = [...(exclude[f.key] ?? [])];
    const kept = all.filter((x) => {
      const j = drop.indexOf(x);
      if (j < 0) return true;
      drop.splice(j, 1);
      return false;
    });
    if (kept.length > 0) include[f.key] = kept;
  }
  return { include: include as FilterOptions, exclude: exclude as FilterOptions };
}

/** The name Hubble shows as node_name: the switch's name from its status ('' if it does not say). */
async function nodeNameOf(ctx: CliContext): Promise<string> {
  try {
    return (await ctx.client().get<{ name?: string }>('/v1/status')).name ?? '';
  } catch {
    return '';
  }
}

export function register(program: Command, ctx: CliContext): void {
  const cmd = program
    .command('observe')
    .description('show flow events (drops, policy verdicts, traces), like hubble observe')
    .option('-f, --follow', 'keep printing new events until Ctrl-C')
    .option('--last <n>', `the last n matching events (default ${DEFAULT_LAST}; with --follow, 0)`, parseNonNegativeInt)
    .option('--first <n>', 'the first (oldest) n matching events the switch still holds', parsePositiveInt)
    .option('--all', 'every matching event the agent still holds')
    .option('--since <time>', 'events since this time: a duration ago (30s, 5m, 1h) or an RFC 3339 time', (s: string) => timeArg(s))
    .option('--until <time>', 'events until this time: a duration ago or an RFC 3339 time', (s: string) => timeArg(s))
    .option('--not', 'the next filter flag excludes instead of includes (repeatable), as in Hubble')
    .option('-4, --ipv4', 'IPv4 flows only (--ip-version v4)')
    .option('-6, --ipv6', 'IPv6 flows only (--ip-version v6)')
    .addOption(new Option('-o, --output <format>', 'compact, dict, jsonpb (Hubble\'s flow schema), json (tunswitch\'s flat event) or table').choices(OBSERVE_FORMATS).default('compact'));
  addFilterOptions(cmd);
  cmd.action(async (o: Record<string, unknown>, c: Command) => {
    const opts = { ...(o as FilterOptions) } as Record<string, unknown>;
    const versions: string[] = [];
    if (o.ipv4 === true) versions.push('v4');
    if (o.ipv6 === true) versions.push('v6');
    if (versions.length > 0) opts.ipVersion = [...((opts.ipVersion as string[] | undefined) ?? []), ...versions];
    const raw = ((c.parent as unknown as { rawArgs?: string[] } | null)?.rawArgs ?? []).slice(2);
    const { include, exclude } = splitNot(raw, opts as FilterOptions);
    const hasExclude = Object.keys(exclude).length > 0;
    const keep = filtersOf(c, include);
    const drop = hasExclude ? filtersOf(c, exclude) : null;
    const since = o.since as number | undefined;
    const until = o.until as number | undefined;
    if (since !== undefined && until !== undefined && since > until) c.error('--since is after --until', { exitCode: 2, code: 'tunswitch.conflictingOption' });
    const inTime = (e: FlowEvent): boolean => {
      if (since === undefined && until === undefined) return true;
      const t = Date.parse(e.time);
      return (since === undefined || t >= since) && (until === undefined || t <= until);
    };
    const match: FlowPredicate = (e) => keep(e) && (drop === null || !drop(e)) && inTime(e);
    const format = o.output as ObserveFormat;
    const given = c.getOptionValueSource('last') === 'cli';
    const first = o.first as number | undefined;
    if (o.all === true && given) c.error('--all and --last exclude each other', { exitCode: 2, code: 'tunswitch.conflictingOption' });
    if (first !== undefined && (given || o.all === true)) c.error('--first excludes --last and --all', { exitCode: 2, code: 'tunswitch.conflictingOption' });
    if (first !== undefined && o.follow === true) c.error('--first and --follow exclude each other (as in Hubble)', { exitCode: 2, code: 'tunswitch.conflictingOption' });
    if (until !== undefined && o.follow === true) c.error('--until and --follow exclude each other', { exitCode: 2, code: 'tunswitch.conflictingOption' });
    const nodeName = format === 'jsonpb' || format === 'dict' ? await nodeNameOf(ctx) : '';
    const timeWindow = since !== undefined || until !== undefined;
    if (o.follow === true) {
      const p = printer(ctx, format, nodeName);
      const lastMatching = o.all === true || (timeWindow && !given) ? HISTORY_LAST : given ? (o.last as number) : 0;
      await followEvents(ctx, match, p.event, { lastMatching, onHistory: p.history });
      return;
    }
    // --since/--until without a count show every event in the window, as Hubble does.
    const last = o.all === true || (timeWindow && !given) ? HISTORY_LAST : given ? (o.last as number) : DEFAULT_LAST;
    const history = await ctx.client().get<FlowEvent[]>(`/v1/events?last=${HISTORY_LAST}`);
    const matching = history.filter(match);
    const shown = first !== undefined ? matching.slice(0, first) : last === 0 ? [] : matching.slice(-last);
    if (shown.length === 0 && format !== 'json' && format !== 'jsonpb') {
      ctx.warn('no matching events');
      return;
    }
    ctx.out(formatBatch(shown, format, nodeName));
  });
}
