/**
 * The bench's option defaults and list parser, in a module that loads nothing heavy, so the
 * CLI can describe `tunswitch bench` without loading the harness (src/cli/bench.ts).
 */
import { fileURLToPath } from 'node:url';

/** bench/results at the repository root (dist/bench/e2e/options.js → ../../../bench/results). */
export const DEFAULT_OUT_DIR = fileURLToPath(new URL('../../../bench/results', import.meta.url));

export type CaseId = 'tcp1' | 'tcp4' | 'udp64' | 'rtt1' | 'rtt4' | 'fair' | 'cpu';
export const CASES: readonly CaseId[] = ['tcp1', 'tcp4', 'udp64', 'rtt1', 'rtt4', 'fair', 'cpu'];
/** Other names accepted by --cases. */
export const CASE_ALIASES: Readonly<Record<string, readonly CaseId[]>> = {
  ping: ['rtt1'],
  rtt: ['rtt1', 'rtt4'],
};

/** Case ids for a --cases list (aliases expanded, duplicates removed, in CASES order). */
export function parseCases(s: string): CaseId[] {
  const want = new Set<CaseId>();
  for (const raw of s.split(',')) {
    const v = raw.trim();
    if (v === '') continue;
    const alias = CASE_ALIASES[v];
    if (alias) for (const c of alias) want.add(c);
    else if ((CASES as readonly string[]).includes(v)) want.add(v as CaseId);
    else throw new Error(`--cases: "${v}" is not one of ${[...CASES, ...Object.keys(CASE_ALIASES)].join(', ')}`);
  }
  if (want.size === 0) throw new Error('--cases: the list is empty');
  return CASES.filter((c) => want.has(c));
}

/** The bench's system ids (bench/e2e/systems.ts checks at load that SYSTEMS has exactly these). */
export const SYSTEM_IDS: readonly string[] = [
  'veth', 'ovs', 'ovs-tso', 'fwd', 'fwd-vnet',
  'ts-w1', 'ts-w1-rw', 'ts-w1-tso', 'ts-w1-tso-rw', 'ts-w2', 'ts-w2-rw', 'ts-w2-tso', 'ts-w2-tso-rw',
  'ts-w1-noev', 'ts-w1-obs',
  'vxlan', 'ts-xhost', 'ts-xhost-tso', 'ts-xhost-ugso',
];

/** Without --systems: all but the UDP_SEGMENT experiment (ts-xhost-ugso, run it by name). */
export const DEFAULT_SYSTEM_IDS: readonly string[] = SYSTEM_IDS.filter((id) => id !== 'ts-xhost-ugso');

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
