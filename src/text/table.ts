/**
 * Aligned-column tables for people (machines get `-o json`). A cell may be a list of strings:
 * it then spans several lines, as the LABELS column of `cilium endpoint list` does.
 */

export type Cell = string | number | boolean | null | undefined | readonly string[];

import { terminalWidth, truncate, wrapWords } from './width.js';

/** Space between columns. */
const GAP = '   ';
/** The last column wraps only when at least this many columns are left for it. */
const MIN_WRAP = 20;

function cellLines(c: Cell): string[] {
  if (c === null || c === undefined) return [''];
  if (Array.isArray(c)) return c.length === 0 ? [''] : c.map(String);
  return String(c).split('\n');
}

/**
 * Formats `rows` under `headers`, each column as wide as its widest line; ends with a newline.
 * On a terminal (`maxWidth`, default the TTY's width; null when stdout is not a TTY) the last
 * column wraps at word boundaries to fit, and a line still too wide is cut with a marker.
 */
export function formatTable(headers: readonly string[], rows: readonly (readonly Cell[])[], maxWidth: number | null = terminalWidth()): string {
  let grid = rows.map((r) => headers.map((_, i) => cellLines(r[i])));
  const colWidths = (): number[] => headers.map((h, i) => Math.max(h.length, ...grid.map((r) => Math.max(...(r[i] as string[]).map((l) => l.length)))));
  let width = colWidths();
  const last = headers.length - 1;
  if (maxWidth !== null && last >= 0) {
    const start = width.slice(0, last).reduce((a, b) => a + b, 0) + GAP.length * last;
    const avail = maxWidth - start;
    if (start + (width[last] as number) > maxWidth && avail >= MIN_WRAP) {
      grid = grid.map((r) => r.map((c, i) => (i === last ? c.flatMap((l) => wrapWords(l, avail)) : c)));
      width = colWidths();
    }
  }
  const line = (cells: readonly string[]): string =>
    truncate(
      cells
        .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(width[i] as number)))
        .join(GAP)
        .trimEnd(),
      maxWidth,
    );
  const out = [line(headers)];
  for (const r of grid) {
    const height = Math.max(...r.map((c) => c.length));
    for (let k = 0; k < height; k++) out.push(line(r.map((c) => c[k] ?? '')));
  }
  return out.join('\n') + '\n';
}

/** `Key:   value` lines with the values aligned; a list value continues on the next lines. */
export function formatKeyValues(pairs: readonly (readonly [string, Cell])[]): string {
  const width = Math.max(0, ...pairs.map(([k]) => k.length + 1));
  const out: string[] = [];
  for (const [k, v] of pairs) {
    const lines = cellLines(v);
    lines.forEach((l, i) => out.push(`${(i === 0 ? `${k}:` : '').padEnd(width)}${GAP}${l}`.trimEnd()));
  }
  return out.join('\n') + '\n';
}
