/**
 * Pool safety: two switches, labs or Docker networks whose address pools overlap are refused,
 * with an error naming the other user of the prefix.
 *
 * Two sources are checked before a pool is used:
 *   1. the registry, one JSON file per claim under /run/tunswitch/pools (TUNSWITCH_POOL_DIR
 *      overrides it): { owner, pid, start, prefixes }. A file whose process is gone (or whose
 *      pid was reused: the start time in /proc/PID/stat differs) is stale and removed;
 *   2. the host's routing table (`ip route show`, main table): a route for the prefix or for
 *      a part of it, on a device that is not the claimer's own, means someone else already
 *      sends that traffic somewhere (another switch's host port, a Docker bridge, a VPN).
 *      A broader route (10.0.0.0/8 via eth0) does not count: the pool's own, more specific
 *      route wins over it.
 * Claiming writes our file first and then reads the others, so of two claimers racing for
 * the same prefix at least one sees the other (both may fail; neither silently wins).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { TunswitchError } from '../control/errors.js';
import { prefixContains, tryParsePrefix, type Prefix } from '../control/cidr.js';

export const DEFAULT_POOL_DIR = '/run/tunswitch/pools';

export function poolDir(): string {
  const d = process.env.TUNSWITCH_POOL_DIR;
  return d !== undefined && d !== '' ? d : DEFAULT_POOL_DIR;
}

/** One claim as stored in the registry. */
export interface PoolClaimRecord {
  /** Who uses the pool, for the error message: `switch "demo" (pid 123)`. */
  owner: string;
  pid: number;
  /** Field 22 of /proc/PID/stat (start time in clock ticks): tells a reused pid apart. */
  start: string;
  prefixes: string[];
}

export interface PoolClaim {
  readonly file: string;
  readonly prefixes: readonly Prefix[];
  release(): void;
}

function procStart(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count from the last ")".
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[19] ?? null; // field 22 overall = index 19 after "pid (comm) "
  } catch {
    return null;
  }
}

export function overlaps(a: Prefix, b: Prefix): boolean {
  return a.family === b.family && (prefixContains(a, b) || prefixContains(b, a));
}

function parseList(prefixes: readonly string[], what: string): Prefix[] {
  return prefixes.map((t) => {
    const p = tryParsePrefix(t, false);
    if (!p) throw new TunswitchError('ECIDR_INVALID', `${what}: ${JSON.stringify(t)} is not a prefix`);
    return p;
  });
}

/** The live claims in the registry (stale files are removed on the way). */
export function listClaims(dir = poolDir()): (PoolClaimRecord & { file: string })[] {
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.json'));
  } catch {
    return [];
  }
  const out: (PoolClaimRecord & { file: string })[] = [];
  for (const n of names) {
    const file = join(dir, n);
    let rec: PoolClaimRecord;
    try {
      rec = JSON.parse(readFileSync(file, 'utf8')) as PoolClaimRecord;
    } catch {
      continue; // being written, or removed meanwhile
    }
    if (!Number.isInteger(rec.pid) || !Array.isArray(rec.prefixes)) continue;
    if (procStart(rec.pid) !== rec.start) {
      rmSync(file, { force: true }); // its process is gone: stale
      continue;
    }
    out.push({ ...rec, file });
  }
  return out;
}

/** Host routes (main table) as [prefix, the route's line]; default routes are left out. */
export function hostRoutes(): { prefix: Prefix; line: string; dev: string }[] {
  const out: { prefix: Prefix; line: string; dev: string }[] = [];
  for (const fam of ['-4', '-6']) {
    let text = '';
    try {
      text = execFileSync('ip', ['-o', fam, 'route', 'show', 'table', 'main'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    } catch {
      continue; // no ip, or no IPv6: nothing to compare with
    }
    for (const raw of text.split('\n')) {
      const line = raw.trim().replace(/\\\s*/g, ' ');
      if (line === '') continue;
      let first = line.split(/\s+/)[0] as string;
      if (first === 'default' || first === 'unreachable' || first === 'blackhole' || first === 'prohibit') continue;
      if (!first.includes('/')) first += fam === '-4' ? '/32' : '/128';
      const p = tryParsePrefix(first, false);
      if (!p) continue;
      const dev = /\sdev\s+(\S+)/.exec(line)?.[1] ?? '';
      out.push({ prefix: p, line, dev });
    }
  }
  return out;
}

/**
 * Throws (ECONFIG_INVALID, one line) if a prefix overlaps a live claim of another process or
 * claim, or a host route for it or a part of it on a device not in `ownDevices`.
 */
export function checkPools(prefixes: readonly string[], what: string, opts: { dir?: string; ownDevices?: readonly string[]; ignoreFile?: string } = {}): void {
  const mine = parseList(prefixes, what);
  for (const c of listClaims(opts.dir ?? poolDir())) {
    if (c.file === opts.ignoreFile) continue;
    const theirs = parseList(c.prefixes, c.file);
    for (const a of mine) {
      for (const b of theirs) {
        if (overlaps(a, b)) throw new TunswitchError('ECONFIG_INVALID', `${what}: pool ${a.text} overlaps ${b.text} of ${c.owner} (registry ${c.file})`);
      }
    }
  }
  const own = new Set(opts.ownDevices ?? []);
  for (const r of hostRoutes()) {
    if (own.has(r.dev)) continue;
    for (const a of mine) {
      if (r.prefix.family === a.family && prefixContains(a, r.prefix)) {
        throw new TunswitchError('ECONFIG_INVALID', `${what}: pool ${a.text} overlaps the host route "${r.line}" (another switch, lab, Docker network or VPN uses it)`);
      }
    }
  }
}

let seq = 0;

/** Checks, then records the claim; release() (or the process's end) gives it back. */
export function claimPools(prefixes: readonly string[], owner: string, opts: { dir?: string; ownDevices?: readonly string[] } = {}): PoolClaim {
  const dir = opts.dir ?? poolDir();
  const parsed = parseList(prefixes, owner);
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const file = join(dir, `${process.pid}-${++seq}.json`);
  const rec: PoolClaimRecord = { owner, pid: process.pid, start: procStart(process.pid) ?? '', prefixes: parsed.map((p) => p.text) };
  writeFileSync(`${file}.tmp`, JSON.stringify(rec));
  renameSync(`${file}.tmp`, file);
  try {
    checkPools(prefixes, owner, { dir, ignoreFile: file, ownDevices: opts.ownDevices ?? [] });
  } catch (e) {
    rmSync(file, { force: true });
    throw e;
  }
  return {
    file,
    prefixes: parsed,
    release: () => rmSync(file, { force: true }),
  };
}
