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
import { FILTER_FLAGS, FilterError, parseFilters, type FilterOptions, type FlowPredicate } from '../observe/filter.js';
import { formatCompact, formatJson, formatTable, formatTableLine } from '../observe/format.js';
import { collect, parseNonNegativeInt, type CliContext } from './context.js';

export type ObserveFormat = 'compact' | 'json' | 'table';

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
  if (!ac.signal.aborted) throw new Error(`tunswitch at ${client.socket} ended the event stream (did the agent stop?)`);
}

/** Writes events in one of observe's formats. */
function printer(ctx: CliContext, format: ObserveFormat): { history(events: FlowEvent[]): void; event(e: FlowEvent): void } {
  switch (format) {
    case 'json':
      return {
        history: (events) => {
          for (const e of events) ctx.out(formatJson(e) + '\n');
        },
        event: (e) => ctx.out(formatJson(e) + '\n'),
      };
    case 'table':
      // Followed rows are padded to fixed widths; there is no knowing the widest row ahead.
      return {
        history: (events) => {
          ctx.out(formatTableLine(null));
          for (const e of events) ctx.out(formatTableLine(e));
        },
        event: (e) => ctx.out(formatTableLine(e)),
      };
    case 'compact':
      return {
        history: (events) => {
          for (const e of events) ctx.out(formatCompact(e) + '\n');
        },
        event: (e) => ctx.out(formatCompact(e) + '\n'),
      };
  }
}

function formatBatch(events: readonly FlowEvent[], format: ObserveFormat): string {
  if (format === 'table') return formatTable(events);
  const line = format === 'json' ? formatJson : formatCompact;
  return events.map((e) => line(e) + '\n').join('');
}

export function register(program: Command, ctx: CliContext): void {
  const cmd = program
    .command('observe')
    .description('show flow events (drops, policy verdicts, traces), like hubble observe')
    .option('-f, --follow', 'keep printing new events until Ctrl-C')
    .option('--last <n>', `the last n matching events (default ${DEFAULT_LAST}; with --follow, 0)`, parseNonNegativeInt)
    .option('--all', 'every matching event the agent still holds')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['compact', 'json', 'table']).default('compact'));
  addFilterOptions(cmd);
  cmd.action(async (o: Record<string, unknown>, c: Command) => {
    const match = filtersOf(c, o as FilterOptions);
    const format = o.output as ObserveFormat;
    const given = c.getOptionValueSource('last') === 'cli';
    if (o.all === true && given) c.error('--all and --last exclude each other', { exitCode: 2, code: 'tunswitch.conflictingOption' });
    if (o.follow === true) {
      const p = printer(ctx, format);
      const lastMatching = o.all === true ? HISTORY_LAST : given ? (o.last as number) : 0;
      await followEvents(ctx, match, p.event, { lastMatching, onHistory: p.history });
      return;
    }
    const last = o.all === true ? HISTORY_LAST : given ? (o.last as number) : DEFAULT_LAST;
    const history = await ctx.client().get<FlowEvent[]>(`/v1/events?last=${HISTORY_LAST}`);
    const shown = last === 0 ? [] : history.filter(match).slice(-last);
    if (shown.length === 0 && format !== 'json') {
      ctx.warn('no matching events');
      return;
    }
    ctx.out(formatBatch(shown, format));
  });
}
