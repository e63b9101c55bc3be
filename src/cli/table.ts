/**
 * Aligned-column tables for people (machines get `-o json`). A cell may be a list of strings:
 * it then spans several lines, as the LABELS column of `cilium endpoint list` does.
 */

export type Cell = string | number | boolean | null | undefined | readonly string[];

/** Space between columns. */
const GAP = '   ';

function cellLines(c: Cell): string[] {
  if (c === null || c === undefined) return [''];
  if (Array.isArray(c)) return c.length === 0 ? [''] : c.map(String);
  return String(c).split('\n');
}

/** Formats `rows` under `headers`, each column as wide as its widest line; ends with a newline. */
export function formatTable(headers: readonly string[], rows: readonly (readonly Cell[])[]): string {
  const grid = rows.map((r) => headers.map((_, i) => cellLines(r[i])));
  const width = headers.map((h, i) => Math.max(h.length, ...grid.map((r) => Math.max(...(r[i] as string[]).map((l) => l.length)))));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(width[i] as number)))
      .join(GAP)
      .trimEnd();
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
