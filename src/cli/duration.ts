/**
 * Durations on the command line, as Go and Hubble write them: `500ms`, `10s`, `1m30s`, `2h`.
 * One parser for every flag that takes a time span. A bare number keeps the flag's historical
 * unit (`bareUnitMs`), so old scripts keep working.
 */
import { InvalidArgumentError } from 'commander';

const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Milliseconds in `text`, or null when it is not a duration. */
export function durationMs(text: string, bareUnitMs: number | null): number | null {
  const s = text.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return bareUnitMs === null ? null : Number(s) * bareUnitMs;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  let total = 0;
  let pos = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s)) !== null) {
    total += Number(m[1]) * (UNIT_MS[m[2] as string] as number);
    pos = re.lastIndex;
  }
  if (pos === 0 || pos !== s.length) return null;
  return total;
}

/** A commander parser: a positive duration (`10s`, `500ms`); a bare number is in `bareUnit`. */
export function durationParser(bareUnit: 'ms' | 's'): (s: string) => number {
  return (s: string) => {
    const ms = durationMs(s, UNIT_MS[bareUnit] as number);
    if (ms === null || ms <= 0) throw new InvalidArgumentError(`"${s}" is not a duration (e.g. 500ms, 10s, 1m30s; a bare number is in ${bareUnit === 'ms' ? 'milliseconds' : 'seconds'}).`);
    return Math.round(ms);
  };
}

/**
 * A point in time for --since/--until: an RFC 3339 / ISO time, or a duration meaning "that
 * long ago" (`1m`, `2h30m`). Returns milliseconds since the epoch.
 */
export function timeArg(s: string, now: number = Date.now()): number {
  const ago = durationMs(s, null);
  if (ago !== null) return now - ago;
  if (/^\d{4}-\d{2}-\d{2}/.test(s)) {
    const t = Date.parse(s);
    if (!Number.isNaN(t)) return t;
  }
  throw new InvalidArgumentError(`"${s}" is neither a duration ago (30s, 5m, 1h) nor a time (2024-05-01T10:00:00Z).`);
}
