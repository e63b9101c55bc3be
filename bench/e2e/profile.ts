/**
 * Summaries of V8 CPU profiles (`node --cpu-prof`, `.cpuprofile` JSON): self time per
 * function, aggregated over all nodes of the same function (name, file, line), top first.
 *
 * Self time of a node = the sum of the time deltas of the samples taken while that node was
 * on top of the stack. `(idle)` is time the thread slept in epoll; `(program)` is V8/native
 * work outside JavaScript; `(garbage collector)` is GC.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';

export interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface SelfTime {
  fn: string;
  where: string;
  ms: number;
  /** Percent of all sampled time, idle included. */
  pct: number;
  /** Percent of the non-idle time. */
  busyPct: number;
}

export interface ProfileSummary {
  file: string;
  totalMs: number;
  idleMs: number;
  top: SelfTime[];
}

function shortUrl(url: string): string {
  if (url === '') return '';
  const m = /(?:dist[^/]*\/)(.*)$/.exec(url);
  if (m) return m[1] as string;
  const n = /node_modules\/(.*)$/.exec(url);
  if (n) return `node_modules/${n[1]}`;
  return url.replace(/^file:\/\//, '').replace(/^node:/, 'node:');
}

export function summarizeProfile(p: CpuProfile, file = '', topN = 15): ProfileSummary {
  const byId = new Map<number, CpuProfile['nodes'][number]>();
  for (const n of p.nodes) byId.set(n.id, n);
  const selfUs = new Map<number, number>();
  let total = 0;
  // timeDeltas[i] is the time from sample i-1 to sample i; attribute it to sample i's node.
  for (let i = 0; i < p.samples.length; i++) {
    const d = Math.max(0, p.timeDeltas[i] ?? 0);
    const id = p.samples[i] as number;
    selfUs.set(id, (selfUs.get(id) ?? 0) + d);
    total += d;
  }
  const agg = new Map<string, { fn: string; where: string; us: number }>();
  for (const [id, us] of selfUs) {
    const n = byId.get(id);
    if (!n) continue;
    const fn = n.callFrame.functionName || '(anonymous)';
    const where = n.callFrame.url ? `${shortUrl(n.callFrame.url)}:${n.callFrame.lineNumber + 1}` : '';
    const key = `${fn}\u0000${where}`;
    const a = agg.get(key) ?? { fn, where, us: 0 };
    a.us += us;
    agg.set(key, a);
  }
  const idle = [...agg.values()].filter((a) => a.fn === '(idle)').reduce((s, a) => s + a.us, 0);
  const busy = Math.max(1, total - idle);
  const top = [...agg.values()]
    .sort((a, b) => b.us - a.us)
    .slice(0, topN)
    .map((a) => ({
      fn: a.fn,
      where: a.where,
      ms: a.us / 1000,
      pct: total > 0 ? (100 * a.us) / total : 0,
      busyPct: a.fn === '(idle)' ? 0 : (100 * a.us) / busy,
    }));
  return { file, totalMs: total / 1000, idleMs: idle / 1000, top };
}

/** Summaries of every .cpuprofile in `dir` (one per thread: main, control, shard workers). */
export function summarizeProfileDir(dir: string, topN = 15): ProfileSummary[] {
  let names: string[];
  try {
    names = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).sort();
  } catch {
    return [];
  }
  return names.map((f) => summarizeProfile(JSON.parse(readFileSync(join(dir, f), 'utf8')) as CpuProfile, basename(f), topN));
}

export function renderProfile(s: ProfileSummary): string {
  const lines = [`${s.file}: ${(s.totalMs / 1000).toFixed(1)} s sampled, ${((100 * s.idleMs) / Math.max(1, s.totalMs)).toFixed(0)}% idle`];
  for (const t of s.top) {
    lines.push(`  ${t.busyPct.toFixed(1).padStart(5)}% busy ${t.ms.toFixed(0).padStart(7)} ms  ${t.fn}${t.where ? `  ${t.where}` : ''}`);
  }
  return lines.join('\n') + '\n';
}
