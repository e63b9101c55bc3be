/**
 * "Did you mean" for names the user typed (endpoints, policies, labs, nodes): the known names
 * within a small edit distance, closest first. Pure; no I/O.
 */

/** Levenshtein distance between a and b (case-insensitive). */
export function editDistance(a: string, b: string): number {
  const x = a.toLowerCase();
  const y = b.toLowerCase();
  let prev = Array.from({ length: y.length + 1 }, (_, j) => j);
  for (let i = 1; i <= x.length; i++) {
    const cur = [i];
    for (let j = 1; j <= y.length; j++) {
      const sub = (prev[j - 1] as number) + (x[i - 1] === y[j - 1] ? 0 : 1);
      cur.push(Math.min((prev[j] as number) + 1, (cur[j - 1] as number) + 1, sub));
    }
    prev = cur;
  }
  return prev[y.length] as number;
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
