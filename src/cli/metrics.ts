/**
 * `tunswitch metrics`: the agent's Prometheus series (cilium_* and tunswitch_*) as a table,
 * like `cilium metrics list`, or as `{ name: [{ labels, value }] }` with -o json.
 */
import type { Command } from 'commander';
import { print, withOutput, type CliContext } from './context.js';
import { formatTable } from '../text/table.js';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  /** A number, or "NaN" / "+Inf" / "-Inf" (JSON has no such numbers). */
  value: number | string;
}

const SHOWN = /^(cilium|tunswitch)_/;

function unescapeLabel(s: string): string {
  return s.replace(/\\(.)/g, (_m, c: string) => (c === 'n' ? '\n' : c));
}

/**
 * Parses the Prometheus text exposition format (comments and timestamps are skipped).
 * Lines that do not parse are skipped too: the table shows what it can.
 */
export function parsePrometheus(text: string): Sample[] {
  const out: Sample[] = [];
  const lineRe = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$/;
  const labelRe = /([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?\s*/gy;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = lineRe.exec(line);
    if (m === null) continue;
    const labels: Record<string, string> = {};
    const body = m[2] ?? '';
    labelRe.lastIndex = 0;
    let ok = true;
    while (labelRe.lastIndex < body.length) {
      const l = labelRe.exec(body);
      if (l === null) {
        ok = false;
        break;
      }
      labels[l[1] as string] = unescapeLabel(l[2] as string);
    }
    if (!ok) continue;
    const tok = m[3] as string;
    let value: number | string;
    if (/^[+-]?inf$/i.test(tok)) value = tok.startsWith('-') ? '-Inf' : '+Inf';
    else if (/^nan$/i.test(tok)) value = 'NaN';
    else {
      value = Number(tok);
      if (!Number.isFinite(value)) continue;
    }
    out.push({ name: m[1] as string, labels, value });
  }
  return out;
}

export function metricsObject(samples: readonly Sample[]): Record<string, { labels: Record<string, string>; value: number | string }[]> {
  const obj: Record<string, { labels: Record<string, string>; value: number | string }[]> = {};
  for (const s of samples) (obj[s.name] ??= []).push({ labels: s.labels, value: s.value });
  return obj;
}

export function formatMetrics(samples: readonly Sample[]): string {
  return formatTable(
    ['METRIC', 'LABELS', 'VALUE'],
    samples.map((s) => [
      s.name,
      Object.entries(s.labels)
        .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
        .join(' '),
      s.value,
    ]),
  );
}

export function register(program: Command, ctx: CliContext): void {
  withOutput(
    program
      .command('metrics')
      .option('-p, --match <text>', 'only series whose name contains this text')
      .description('show the agent metrics (cilium_* and tunswitch_* series)'),
  ).action(async (o: { match?: string }, cmd: Command) => {
    const text = await ctx.client().text('/metrics');
    const samples = parsePrometheus(text).filter((s) => SHOWN.test(s.name) && (o.match === undefined || s.name.includes(o.match)));
    print(ctx, cmd, metricsObject(samples), () => formatMetrics(samples));
  });
}
