/**
 * From measurements to the report: each tunswitch result next to the baselines of the same
 * run, the targets met or missed, and the text tables.
 *
 * Ratios are "how many times as good": value / baseline for throughput, baseline / value for
 * latency and CPU, so a ratio above 1 always means tunswitch did better. The C forwarder
 * baseline is the matching one: `fwd` for offload off, `fwd-vnet` for offload on.
 *
 * Targets (issue 10; one run, one loaded machine; TARGETS below, in the issue's words):
 *   1. RTT p50 under one TCP stream   <= 2x OVS userspace (`ovs`)      moonshot <= 1x
 *   2. RTT p50 under one TCP stream   <= 0.25x the C forwarder
 *   3. RTT p99 under 4 streams        <= 3x OVS
 *   4. TCP throughput lost to AQM     <= 5%: the TCP rate during rtt1 against the same
 *                                     system's tcp1 (one stream, no ping)
 *   5. UDP 64 B                       >= 1.0x the C forwarder          moonshot >= 1.5x
 *   6. TCP one stream, plain          >= 1.5x C forwarder (offload off) moonshot >= 2x
 *   7. TCP one stream, offload        >= 0.6x kernel veth (offload on)  moonshot >= 0.8x
 *   8. fair Jain index                >= 0.95
 *   9. 2 workers vs 1                 never worse than 0.95x: every throughput and RTT
 *                                     metric of ts-w2* against its ts-w1* twin
 * And issue 11's, for the cross-host systems (kind xhost):
 *  10. cross-host TCP one stream, offload >= 0.5x the kernel-vxlan baseline (`vxlan`)
 * Cross-host systems are compared with `vxlan` (column x vxlan) besides the same-host baselines.
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
  /** Set when the system cannot run here (e.g. its I/O engine): every case is "n/a (why)". */
  unavailable?: string;
  /** Cases that do not apply to this system, with the reason (e.g. cpu on kernel veth). */
  na?: Record<string, string>;
}

export interface Baseline {
  system: string;
  value: number;
  ratio: number;
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
  /** Kernel vxlan across two hosts: the cross-host systems' baseline. */
  vxlan: Baseline | null;
}

/** What a target compares a value with. */
type Reference =
  | { kind: 'baseline'; system: (s: SystemSpec) => string }
  /** The same system's own result of another metric (AQM loss: rtt1_tcp against tcp1). */
  | { kind: 'own'; metric: MetricId }
  /** The 1-worker twin of a 2-worker system (ts-w2-rw -> ts-w1-rw). */
  | { kind: 'twin' }
  | { kind: 'absolute' };

/**
 * How the measured quantity is formed from value v and reference r:
 *   multiple     v / r        ("<= 2x OVS")
 *   timesAsGood  v / r for higher-is-better metrics, r / v for lower ("never worse than 0.95x")
 *   loss         1 - v / r    ("lost <= 5%")
 *   value        v            ("Jain index >= 0.95")
 */
type Quantity = 'multiple' | 'timesAsGood' | 'loss' | 'value';

export interface TargetDef {
  id: string;
  /** The issue's wording. */
  name: string;
  metrics: readonly MetricId[];
  applies: (s: SystemSpec) => boolean;
  reference: Reference;
  quantity: Quantity;
  op: '<=' | '>=';
  threshold: number;
  moonshot: number | null;
}

const fwdFor = (s: SystemSpec): string => (s.offload ? 'fwd-vnet' : 'fwd');
const isTs = (s: SystemSpec): boolean => s.kind === 'tunswitch';
const isXhost = (s: SystemSpec): boolean => s.kind === 'xhost';

export const TARGETS: readonly TargetDef[] = [
  { id: 'rtt1-ovs', name: 'RTT p50 under one TCP stream ≤ 2× OVS userspace', metrics: ['rtt1_p50'], applies: isTs, reference: { kind: 'baseline', system: () => 'ovs' }, quantity: 'multiple', op: '<=', threshold: 2, moonshot: 1 },
  { id: 'rtt1-fwd', name: 'RTT p50 under one TCP stream ≤ 0.25× the C forwarder', metrics: ['rtt1_p50'], applies: isTs, reference: { kind: 'baseline', system: fwdFor }, quantity: 'multiple', op: '<=', threshold: 0.25, moonshot: null },
  { id: 'rtt4-ovs', name: 'RTT p99 under 4 streams ≤ 3× OVS', metrics: ['rtt4_p99'], applies: isTs, reference: { kind: 'baseline', system: () => 'ovs' }, quantity: 'multiple', op: '<=', threshold: 3, moonshot: null },
  { id: 'aqm-loss', name: 'TCP throughput lost to AQM ≤ 5%', metrics: ['rtt1_tcp'], applies: isTs, reference: { kind: 'own', metric: 'tcp1' }, quantity: 'loss', op: '<=', threshold: 0.05, moonshot: null },
  { id: 'udp64-fwd', name: 'UDP 64 B ≥ 1.0× the C forwarder', metrics: ['udp64'], applies: isTs, reference: { kind: 'baseline', system: fwdFor }, quantity: 'multiple', op: '>=', threshold: 1.0, moonshot: 1.5 },
  { id: 'tcp-plain', name: 'TCP one stream, plain ≥ 1.5× C forwarder', metrics: ['tcp1'], applies: (s) => isTs(s) && !s.offload, reference: { kind: 'baseline', system: () => 'fwd' }, quantity: 'multiple', op: '>=', threshold: 1.5, moonshot: 2 },
  { id: 'tcp-offload', name: 'TCP one stream, offload ≥ 0.6× kernel veth', metrics: ['tcp1'], applies: (s) => isTs(s) && s.offload, reference: { kind: 'baseline', system: () => 'veth' }, quantity: 'multiple', op: '>=', threshold: 0.6, moonshot: 0.8 },
  { id: 'fair', name: 'fair Jain index ≥ 0.95', metrics: ['fair_jain'], applies: isTs, reference: { kind: 'absolute' }, quantity: 'value', op: '>=', threshold: 0.95, moonshot: null },
  { id: 'xhost-vxlan', name: 'Cross-host TCP one stream, offload ≥ 0.5× kernel vxlan', metrics: ['tcp1'], applies: (s) => isXhost(s) && s.offload, reference: { kind: 'baseline', system: () => 'vxlan' }, quantity: 'multiple', op: '>=', threshold: 0.5, moonshot: null },
  {
    id: 'workers',
    name: '2 workers vs 1 never worse than 0.95×',
    metrics: ['tcp1', 'tcp4', 'udp64', 'rtt1_p50', 'rtt1_p99', 'rtt4_p50', 'rtt4_p99'],
    applies: (s) => isTs(s) && s.workers === 2,
    reference: { kind: 'twin' },
    quantity: 'timesAsGood',
    op: '>=',
    threshold: 0.95,
    moonshot: null,
  },
];

/** The 1-worker system a 2-worker one is compared with. */
export function twinOf(id: string): string {
  return id.replace(/^ts-w2/, 'ts-w1');
}

export interface Target {
  id: string;
  name: string;
  system: string;
  metric: MetricId;
  value: number;
  /** The reference: a system id, `<metric>` of the same system, or '' for an absolute target. */
  reference: string;
  referenceValue: number | null;
  /** The quantity the threshold applies to (see Quantity); null without a reference value. */
  measured: number | null;
  op: '<=' | '>=';
  threshold: number;
  moonshot: number | null;
  met: boolean | null;
  moonshotMet: boolean | null;
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

/** Every tunswitch result against the baselines of the same run. */
export function compare(rows: readonly ResultRow[], systems: readonly SystemSpec[] = SYSTEMS): Comparison[] {
  const out: Comparison[] = [];
  for (const s of systems) {
    if (s.kind !== 'tunswitch' && s.kind !== 'xhost') continue;
    for (const r of rows) {
      if (r.system !== s.id) continue;
      out.push({
        system: s.id,
        metric: r.metric,
        value: r.value,
        unit: r.unit,
        fwd: baseline(rows, fwdFor(s), r.metric, r.value),
        ovs: baseline(rows, 'ovs', r.metric, r.value),
        ovsTso: baseline(rows, 'ovs-tso', r.metric, r.value),
        veth: baseline(rows, 'veth', r.metric, r.value),
        vxlan: s.kind === 'xhost' ? baseline(rows, 'vxlan', r.metric, r.value) : null,
      });
    }
  }
  return out;
}

/** The measured quantity of a target (see Quantity); null when it cannot be formed. */
export function measure(q: Quantity, metric: MetricId, value: number, ref: number | null): number | null {
  if (!Number.isFinite(value)) return null;
  if (q === 'value') return value;
  if (ref === null || !(ref > 0)) return null;
  switch (q) {
    case 'multiple':
      return value / ref;
    case 'loss':
      return 1 - value / ref;
    case 'timesAsGood':
      return value > 0 ? ratioOf(metric, value, ref) : null;
  }
}

function meets(op: '<=' | '>=', measured: number | null, threshold: number | null): boolean | null {
  if (measured === null || threshold === null) return null;
  return op === '<=' ? measured <= threshold : measured >= threshold;
}

/** Every target of every tunswitch result present, met or missed (null: no reference). */
export function evaluateTargets(rows: readonly ResultRow[], systems: readonly SystemSpec[] = SYSTEMS): Target[] {
  const out: Target[] = [];
  for (const s of systems) {
    for (const d of TARGETS) {
      if (!d.applies(s)) continue;
      for (const metric of d.metrics) {
        const r = find(rows, s.id, metric);
        if (!r) continue;
        let reference = '';
        let refRow: ResultRow | undefined;
        if (d.reference.kind === 'baseline') {
          reference = d.reference.system(s);
          refRow = find(rows, reference, metric);
        } else if (d.reference.kind === 'own') {
          reference = `${s.id} ${d.reference.metric}`;
          refRow = find(rows, s.id, d.reference.metric);
        } else if (d.reference.kind === 'twin') {
          reference = twinOf(s.id);
          refRow = find(rows, reference, metric);
        }
        const refValue = d.reference.kind === 'absolute' ? null : (refRow?.value ?? null);
        const measured = d.reference.kind !== 'absolute' && refValue === null ? null : measure(d.quantity, metric, r.value, refValue);
        out.push({
          id: d.id,
          name: d.name,
          system: s.id,
          metric,
          value: r.value,
          reference,
          referenceValue: refValue,
          measured,
          op: d.op,
          threshold: d.threshold,
          moonshot: d.moonshot,
          met: meets(d.op, measured, d.threshold),
          moonshotMet: meets(d.op, measured, d.moonshot),
        });
      }
    }
  }
  return out;
}

export function targetTally(targets: readonly Target[]): { met: number; missed: number; unknown: number } {
  let met = 0;
  let missed = 0;
  let unknown = 0;
  for (const t of targets) {
    if (t.met === true) met++;
    else if (t.met === false) missed++;
    else unknown++;
  }
  return { met, missed, unknown };
}

/** A horizontal line on a chart panel: where the value of a target sits in this run. */
export interface TargetLine {
  metric: MetricId;
  value: number;
  label: string;
}

/**
 * The targets that are one value per metric in a run (a baseline times a factor, or an
 * absolute value), for the chart; one line per (target, reference system) present.
 */
export function targetLines(rows: readonly ResultRow[], systems: readonly SystemSpec[] = SYSTEMS): TargetLine[] {
  const out: TargetLine[] = [];
  const seen = new Set<string>();
  for (const s of systems) {
    for (const d of TARGETS) {
      if (!d.applies(s) || (d.quantity !== 'multiple' && d.quantity !== 'value')) continue;
      for (const metric of d.metrics) {
        if (!find(rows, s.id, metric)) continue;
        let value = d.threshold;
        let label = `${d.op === '<=' ? '≤' : '≥'} ${d.threshold}`;
        if (d.reference.kind === 'baseline') {
          const ref = d.reference.system(s);
          const b = find(rows, ref, metric);
          if (!b) continue;
          value = d.threshold * b.value;
          label = `${d.op === '<=' ? '≤' : '≥'}${d.threshold}× ${ref}`;
        } else if (d.reference.kind !== 'absolute') continue;
        const key = `${metric} ${label}`;
        if (seen.has(key)) continue;
        seen.add(key);
        out.push({ metric, value, label });
      }
    }
  }
  return out;
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

/** The raw results: one row per metric, one column per system; "n/a" where a case does not apply. */
export function renderResults(rows: readonly ResultRow[], systems: readonly SystemSpec[], outcomes: readonly SystemOutcome[] = []): string {
  const ids = systems.map((s) => s.id).filter((id) => rows.some((r) => r.system === id) || outcomes.some((o) => o.id === id && o.unavailable));
  const metrics = (Object.keys(METRICS) as MetricId[]).filter((m) => rows.some((r) => r.metric === m));
  const body = metrics.map((m) => [
    `${METRICS[m].label} (${METRICS[m].unit})`,
    ...ids.map((id) => {
      const r = find(rows, id, m);
      if (r) return fmtValue(r.value, r.unit);
      const o = outcomes.find((x) => x.id === id);
      return o && (o.unavailable || o.na?.[METRICS[m].case]) ? 'n/a' : '-';
    }),
  ]);
  let text = renderTable(['case', ...ids], body);
  const notes: string[] = [];
  for (const o of outcomes) {
    if (o.unavailable) notes.push(`  ${o.id}: n/a (${o.unavailable})`);
    for (const [c, why] of Object.entries(o.na ?? {})) notes.push(`  ${o.id} ${c}: n/a (${why})`);
  }
  if (notes.length > 0) text += notes.join('\n') + '\n';
  return text;
}

/** tunswitch against each baseline. */
export function renderComparisons(cmp: readonly Comparison[]): string {
  // x vxlan only when a cross-host system has it (older reports have no such field).
  const vx = cmp.some((c) => (c.vxlan ?? null) !== null);
  const body = cmp.map((c) => [c.system, METRICS[c.metric].label, `${fmtValue(c.value, c.unit)} ${c.unit}`, fmtRatio(c.fwd), fmtRatio(c.ovs), fmtRatio(c.ovsTso), fmtRatio(c.veth), ...(vx ? [fmtRatio(c.vxlan ?? null)] : [])]);
  return renderTable(['tunswitch', 'case', 'value', 'x fwd', 'x OVS', 'x OVS-tso', 'x veth', ...(vx ? ['x vxlan'] : [])], body);
}

/** How a target's measured quantity reads: "1.30×", "3.2%", "0.97". */
export function fmtMeasured(t: Pick<Target, 'id' | 'measured'>): string {
  if (t.measured === null) return '-';
  const d = TARGETS.find((x) => x.id === t.id);
  if (d?.quantity === 'loss') return `${(t.measured * 100).toFixed(1)}%`;
  if (d?.quantity === 'value') return t.measured.toFixed(3);
  return `${t.measured.toFixed(2)}×`;
}

/** One row per target: system, target (the issue's words), value, reference, measured, result. */
export function renderTargets(targets: readonly Target[]): string {
  const body = targets.map((t) => {
    const unit = METRICS[t.metric].unit;
    const result = t.met === null ? 'n/a (no reference)' : t.met ? (t.moonshotMet ? 'met (moonshot too)' : 'met') : 'MISSED';
    const ref = t.reference === '' ? '-' : `${t.reference}${t.referenceValue !== null ? ` ${fmtValue(t.referenceValue, unit)}` : ' -'}`;
    return [t.system, t.name, `${METRICS[t.metric].label} ${fmtValue(t.value, unit)} ${unit}`, ref, fmtMeasured(t), result];
  });
  return renderTable(['tunswitch', 'target', 'value', 'reference', 'measured', 'result'], body);
}
