/**
 * The bench's option defaults and list parser, in a module that loads nothing heavy, so the
 * CLI can describe `tunswitch bench` without loading the harness (src/cli/bench.ts).
 */
import { fileURLToPath } from 'node:url';
import type { CaseId } from './cases.js';

/** bench/results at the repository root (dist/bench/e2e/options.js → ../../../bench/results). */
export const DEFAULT_OUT_DIR = fileURLToPath(new URL('../../../bench/results', import.meta.url));

export const DEFAULT_SECONDS = 10;
export const DEFAULT_IPCACHE_ENTRIES = 100_000;
/**
 * --quick: 2 s per case, one system per kind (tunswitch with the default engine and with
 * read/write), without the 2-worker tunswitch, the offload variants and the 4-stream cases.
 */
export const QUICK = {
  seconds: 2,
  systems: ['veth', 'ovs', 'fwd', 'ts-w1', 'ts-w1-rw'],
  cases: ['tcp1', 'udp64', 'rtt1', 'fair', 'cpu'] as CaseId[],
};

export function parseList<T extends string>(s: string, known: readonly T[], what: string): T[] {
  const out: T[] = [];
  for (const raw of s.split(',')) {
    const v = raw.trim();
    if (v === '') continue;
    if (!(known as readonly string[]).includes(v)) throw new Error(`--${what}: "${v}" is not one of ${known.join(', ')}`);
    if (!out.includes(v as T)) out.push(v as T);
  }
  if (out.length === 0) throw new Error(`--${what}: the list is empty`);
  return out;
}
