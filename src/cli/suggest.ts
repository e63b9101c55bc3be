/**
 * "Did you mean" for names the user typed (endpoints, policies, labs, nodes): the known names
 * within a small edit distance, closest first. Pure; no I/O.
 */

/** Edit distance between a and b, case-insensitive; a swap of two neighbours counts as one edit (optimal string alignment). */
export function editDistance(a: string, b: string): number {
  const x = a.toLowerCase();
  const y = b.toLowerCase();
  const d: number[][] = Array.from({ length: x.length + 1 }, (_, i) => Array.from({ length: y.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= x.length; i++) {
    for (let j = 1; j <= y.length; j++) {
      const row = d[i] as number[];
      const up = d[i - 1] as number[];
      const cost = x[i - 1] === y[j - 1] ? 0 : 1;
      let v = Math.min((up[j] as number) + 1, (row[j - 1] as number) + 1, (up[j - 1] as number) + cost);
      if (i > 1 && j > 1 && x[i - 1] === y[j - 2] && x[i - 2] === y[j - 1]) v = Math.min(v, ((d[i - 2] as number[])[j - 2] as number) + 1);
      row[j] = v;
    }
  }
  return (d[x.length] as number[])[y.length] as number;
}

/** Known names close to `typed` (distance <= max(1, len/3), or a prefix of it), best first, at most 3. */
export function suggest(typed: string, known: readonly string[]): string[] {
  const limit = Math.max(1, Math.floor(typed.length / 3));
  const scored: { name: string; d: number }[] = [];
  for (const name of new Set(known)) {
    if (name === typed) continue;
    const d = editDistance(typed, name);
    const prefix = typed.length >= 2 && name.toLowerCase().startsWith(typed.toLowerCase());
    if (d <= limit || prefix) scored.push({ name, d: prefix ? Math.min(d, limit) : d });
  }
  scored.sort((a, b) => a.d - b.d || a.name.localeCompare(b.name));
  return scored.slice(0, 3).map((s) => s.name);
}

/** ` (did you mean "web"?)` / ` (did you mean "a" or "b"?)`, or '' when nothing is close. */
export function didYouMean(typed: string, known: readonly string[]): string {
  const s = suggest(typed, known);
  if (s.length === 0) return '';
  const quoted = s.map((n) => `"${n}"`);
  const list = quoted.length === 1 ? quoted[0] : `${quoted.slice(0, -1).join(', ')} or ${quoted[quoted.length - 1]}`;
  return ` (did you mean ${list}?)`;
}
