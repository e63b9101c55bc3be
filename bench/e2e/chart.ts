/**
 * The chart: grouped bars, one group per metric and one bar per system, drawn by Vega-Lite and
 * rendered to SVG by Vega headless (no browser, no canvas). One panel per unit:
 *
 *   TCP throughput (Gbit/s)       tcp1, tcp4, and the TCP rate during rtt1/rtt4
 *   UDP 64 B delivered (kpps)     udp64
 *   fairness (Jain index)         fair_jain, 0..1
 *   ping RTT under load (ms)      rtt1_p50/p99, rtt4_p50/p99, on a log scale (veth's bar shows)
 *   CPU per GB (s/GB)             cpu_tcp1, cpu_udp64, on a log scale
 *
 * Each system has a fixed colour (SystemSpec.colour), so it looks the same in every run.
 * Targets that are one value per metric in a run (a baseline times a factor, or an absolute
 * value; report.ts targetLines) are drawn as dashed lines across that metric's group.
 */
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { METRICS, type MetricId } from './cases.js';
import type { ResultRow, TargetLine } from './report.js';

export interface ChartOptions {
  title: string;
  /** System ids in legend order. */
  order: readonly string[];
  labels: Readonly<Record<string, string>>;
  /** Fixed colour per system id. */
  colours: Readonly<Record<string, string>>;
  /** Target lines (report.ts targetLines). */
  lines?: readonly TargetLine[];
}

interface Datum {
  case: string;
  system: string;
  value: number;
}

interface PanelDef {
  metrics: readonly MetricId[];
  title: string;
  log?: boolean;
  domain?: [number, number];
}

/** Short group labels (the panel title gives the unit). */
const SHORT: Readonly<Partial<Record<MetricId, string>>> = {
  tcp1: '1 stream',
  tcp4: '4 streams',
  rtt1_tcp: '1 + ping',
  rtt4_tcp: '4 + ping',
  udp64: 'UDP 64 B',
  fair_jain: 'A+C -> B',
  rtt1_p50: 'p50 (1)',
  rtt1_p99: 'p99 (1)',
  rtt4_p50: 'p50 (4)',
  rtt4_p99: 'p99 (4)',
  cpu_tcp1: 'tcp1',
  cpu_udp64: 'udp64',
};
const short = (m: MetricId): string => SHORT[m] ?? METRICS[m].label;

/** A log axis's domain: whole powers of ten around the values. */
export function logDomain(values: readonly number[]): [number, number] {
  const pos = values.filter((v) => v > 0 && Number.isFinite(v));
  if (pos.length === 0) return [0.01, 1];
  const lo = 10 ** Math.floor(Math.log10(Math.min(...pos)));
  let hi = 10 ** Math.ceil(Math.log10(Math.max(...pos)));
  if (hi <= lo) hi = lo * 10;
  return [lo, hi];
}

const PANELS: readonly (readonly PanelDef[])[] = [
  [
    { metrics: ['tcp1', 'tcp4', 'rtt1_tcp', 'rtt4_tcp'], title: 'TCP throughput (Gbit/s)' },
    { metrics: ['udp64'], title: 'UDP 64 B delivered (kpps)' },
    { metrics: ['fair_jain'], title: 'two senders: Jain index', domain: [0, 1] },
  ],
  [
    { metrics: ['rtt1_p50', 'rtt1_p99', 'rtt4_p50', 'rtt4_p99'], title: 'ping RTT under (1) / (4) TCP streams (ms, log, lower is better)', log: true },
    { metrics: ['cpu_tcp1', 'cpu_udp64'], title: 'switch CPU s per GB (log, lower is better)', log: true },
  ],
];

/** Bar width in pixels. */
const STEP = 9;
/** Narrowest group, so its label fits. */
const MIN_GROUP = 84;

function panel(rows: readonly ResultRow[], def: PanelDef, opts: ChartOptions, systems: readonly string[], colours: readonly string[]): object | null {
  const data: Datum[] = [];
  for (const r of rows) {
    if (!def.metrics.includes(r.metric) || !Number.isFinite(r.value)) continue;
    if (def.log && !(r.value > 0)) continue;
    data.push({ case: short(r.metric), system: opts.labels[r.system] ?? r.system, value: Number(r.value.toPrecision(6)) });
  }
  if (data.length === 0) return null;
  const cases = def.metrics.map(short).filter((c) => data.some((d) => d.case === c));
  const lines = (opts.lines ?? []).filter((l) => def.metrics.includes(l.metric) && cases.includes(short(l.metric)) && Number.isFinite(l.value) && l.value > 0);
  // A log axis has no zero: bars start at the power of ten below the smallest value.
  const domain = def.log ? logDomain([...data.map((d) => d.value), ...lines.map((l) => l.value)]) : def.domain;
  const scale = { ...(def.log ? { type: 'log' } : {}), ...(domain ? { domain } : {}) };
  const x = { field: 'case', type: 'nominal', title: null, sort: cases, axis: { labelAngle: 0, labelLimit: MIN_GROUP } };
  // A log axis is labelled at the powers of ten only.
  const decades: number[] = [];
  if (def.log && domain) for (let v = domain[0]; v <= domain[1] * 1.0001; v *= 10) decades.push(Number(v.toPrecision(3)));
  const y = { field: 'value', type: 'quantitative', title: null, scale, ...(def.log ? { axis: { values: decades, format: '~g' } } : {}) };
  const bars = {
    mark: { type: 'bar', tooltip: true, clip: true },
    encoding: {
      x,
      xOffset: { field: 'system', type: 'nominal', sort: systems },
      y,
      ...(def.log && domain ? { y2: { datum: domain[0] } } : {}),
      color: { field: 'system', type: 'nominal', title: 'system', scale: { domain: systems, range: colours }, legend: { labelLimit: 260 } },
    },
  };
  const layers: object[] = [bars];
  if (lines.length > 0) {
    // Labels of lines on the same group alternate between its right and left end.
    const nth = new Map<string, number>();
    const ldata = lines.map((l) => {
      const c = short(l.metric);
      const i = nth.get(c) ?? 0;
      nth.set(c, i + 1);
      return { case: c, value: Number(l.value.toPrecision(6)), label: l.label, left: i % 2 === 1 };
    });
    layers.push({
      data: { values: ldata },
      mark: { type: 'rule', color: 'black', strokeDash: [5, 3], strokeWidth: 1.5 },
      encoding: { x: { ...x, bandPosition: 0 }, x2: { field: 'case', bandPosition: 1 }, y },
    });
    for (const left of [false, true]) {
      const vals = ldata.filter((d) => d.left === left);
      if (vals.length === 0) continue;
      layers.push({
        data: { values: vals },
        mark: { type: 'text', align: left ? 'left' : 'right', baseline: 'bottom', dx: left ? 2 : -2, dy: -1, fontSize: 9 },
        encoding: { x: { ...x, bandPosition: left ? 0 : 1 }, y, text: { field: 'label' } },
      });
    }
  }
  return {
    title: def.title,
    data: { values: data },
    // A fixed width, not a step: a step on x conflicts with the rule layer's band positions.
    width: cases.length * Math.max(MIN_GROUP, STEP * Math.max(1, systems.length) + 12),
    height: 240,
    layer: layers,
  };
}

/** The Vega-Lite spec for the results (exported for tests). */
export function chartSpec(rows: readonly ResultRow[], opts: ChartOptions): TopLevelSpec {
  // Only the systems with results, in legend order, each with its own fixed colour.
  const present = opts.order.filter((id) => rows.some((r) => r.system === id));
  const systems = present.map((id) => opts.labels[id] ?? id);
  const colours = present.map((id) => opts.colours[id] ?? '#000000');
  const rowsOut = PANELS.map((defs) => defs.map((d) => panel(rows, d, opts, systems, colours)).filter((p): p is object => p !== null)).filter((r) => r.length > 0);
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: opts.title,
    background: 'white',
    vconcat: rowsOut.map((r) => ({ hconcat: r })),
    resolve: { scale: { color: 'shared' } },
  } as unknown as TopLevelSpec;
}

/** Renders the results to an SVG document. */
export async function renderChartSvg(rows: readonly ResultRow[], opts: ChartOptions): Promise<string> {
  const vgSpec = compile(chartSpec(rows, opts)).spec;
  const view = new vega.View(vega.parse(vgSpec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
