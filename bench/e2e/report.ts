/**
 * From measurements to the report: each tunswitch result next to the three baselines of the
 * same run, the targets met or missed, and the text table.
 *
 * Ratios are "how many times as good": value / baseline for throughput, baseline / value for
 * latency, so a ratio above 1 always means tunswitch did better. The C forwarder baseline is
 * the matching one: `fwd` for offload off, `fwd-vnet` for offload on.
 *
 * Targets (all from one run, on one loaded machine):
 *   1. every case:                >= 0.9x the C forwarder
 *   2. TCP, offload off:          >= 1.5x OVS userspace (`ovs`, no offload)
 *   3. TCP, offload on:           >= 5x OVS userspace (`ovs`; `ovs-tso` is shown beside it)
 *   4. TCP, offload on:           >= 0.6x kernel veth
 */
import { METRICS, type MetricId } from './cases.js';
import { SYSTEMS, type SystemSpec } from './systems.js';

export interface ResultRow {
  system: string;
  metric: MetricId;
  value: number;
  unit: string;
  extra: Record<string, number>;
}

export interface SystemOutcome {
  id: string;
  label: string;
  info: Record<string, string | number | boolean>;
  /** Setup or case failures, one line each. */
  errors: string[];
}

export interface Baseline {
  system: string;
  value: number;
  ratio: number;
}

export interface Target {
  name: string;
  baseline: string;
  threshold: number;
  ratio: number | null;
  met: boolean | null;
}

export interface Comparison {
  system: string;
  metric: MetricId;
  value: number;
  unit: string;
  fwd: Baseline | null;
  ovs: Baseline | null;
  /** OVS with its userspace TSO: shown, not a target. */
  ovsTso: Baseline | null;
  veth: Baseline | null;
  targets: Target[];
}

function ratioOf(metric: MetricId, value: number, base: number): number {
  if (!(value > 0) || !(base > 0)) return 0;
  return METRICS[metric].better === 'higher' ? value / base : base / value;
}

function find(rows: readonly ResultRow[], system: string, metric: MetricId): ResultRow | undefined {
  return rows.find((r) => r.system === system && r.metric === metric);
}

function baseline(rows: readonly ResultRow[], system: string, metric: MetricId, value: number): Baseline | null {
  const b = find(rows, system, metric);
  if (!b) return null;
  return { system, value: b.value, ratio: ratioOf(metric, value, b.value) };
}

function target(name: string, b: Baseline | null, baselineId: string, threshold: number): Target {
  if (!b) return { name, baseline: baselineId, threshold, ratio: null, met: null };
  return { name, baseline: baselineId, threshold, ratio: b.ratio, met: b.ratio >= threshold };
}

const isTcp = (m: MetricId): boolean => m === 'tcp1' || m === 'tcp4';

/** Every tunswitch result against the baselines of the same run. */
export function compare(rows: readonly ResultRow[], systems: readonly SystemSpec[] = SYSTEMS): Comparison[] {
  const out: Comparison[] = [];
  for (const s of systems) {
    if (s.kind !== 'tunswitch') continue;
    for (const r of rows) {
      if (r.system !== s.id) continue;
      const fwdId = s.offload ? 'fwd-vnet' : 'fwd';
      const fwd = baseline(rows, fwdId, r.metric, r.value);
      const ovs = baseline(rows, 'ovs', r.metric, r.value);
      const ovsTso = baseline(rows, 'ovs-tso', r.metric, r.value);
      const veth = baseline(rows, 'veth', r.metric, r.value);
      const targets: Target[] = [target(`>= 0.9x ${fwdId}`, fwd, fwdId, 0.9)];
      if (isTcp(r.metric) && !s.offload) targets.push(target('>= 1.5x OVS', ovs, 'ovs', 1.5));
      if (isTcp(r.metric) && s.offload) {
        targets.push(target('>= 5x OVS', ovs, 'ovs', 5));
        targets.push(target('>= 0.6x veth', veth, 'veth', 0.6));
      }
      out.push({ system: s.id, metric: r.metric, value: r.value, unit: r.unit, fwd, ovs, ovsTso, veth, targets });
    }
  }
  return out;
}

export function targetTally(cmp: readonly Comparison[]): { met: number; missed: number; unknown: number } {
  let met = 0;
  let missed = 0;
  let unknown = 0;
  for (const c of cmp) {
    for (const t of c.targets) {
      if (t.met === true) met++;
      else if (t.met === false) missed++;
      else unknown++;
    }
  }
  return { met, missed, unknown };
}

// ---------------------------------------------------------------- text

/** Left-aligned first column, right-aligned others. */
export function renderTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === 0 ? c.padEnd(w[i] as number) : c.padStart(w[i] as number)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

export function fmtValue(v: number, unit: string): string {
  if (!Number.isFinite(v)) return '-';
  if (unit === 'ms') return v < 1 ? v.toFixed(3) : v.toFixed(2);
  if (unit === 'kpps') return v.toFixed(0);
  return v.toFixed(2);
}

const fmtRatio = (b: Baseline | null): string => (b ? `${b.ratio.toFixed(2)}x` : '-');

/** The raw results: one row per metric, one column per system. */
export function renderResults(rows: readonly ResultRow[], systems: readonly SystemSpec[]): string {
  const ids = systems.map((s) => s.id).filter((id) => rows.some((r) => r.system === id));
  const metrics = (Object.keys(METRICS) as MetricId[]).filter((m) => rows.some((r) => r.metric === m));
  const body = metrics.map((m) => [
    `${METRICS[m].label} (${METRICS[m].unit})`,
    ...ids.map((id) => {
      const r = find(rows, id, m);
      return r ? fmtValue(r.value, r.unit) : '-';
    }),
  ]);
  return renderTable(['case', ...ids], body);
}

/** tunswitch against each baseline, with the targets. */
export function renderComparisons(cmp: readonly Comparison[]): string {
  const body = cmp.map((c) => [
    c.system,
    METRICS[c.metric].label,
    `${fmtValue(c.value, c.unit)} ${c.unit}`,
    fmtRatio(c.fwd),
    fmtRatio(c.ovs),
    fmtRatio(c.ovsTso),
    fmtRatio(c.veth),
    c.targets.map((t) => `${t.name}: ${t.met === null ? 'n/a' : t.met ? 'met' : 'MISSED'}`).join('; '),
  ]);
  return renderTable(['tunswitch', 'case', 'value', 'x fwd', 'x OVS', 'x OVS-tso', 'x veth', 'targets'], body);
}
