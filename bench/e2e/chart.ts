/**
 * The chart: grouped bars, one group per case and one bar per system, drawn by Vega-Lite and
 * rendered to SVG by Vega headless (no browser, no canvas). Three panels side by side, each
 * in its own unit: TCP in Gbit/s, UDP 64 B in kpps, loaded ping RTT in ms (lower is better).
 */
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { METRICS, type MetricId } from './cases.js';
import type { ResultRow } from './report.js';

export interface ChartOptions {
  title: string;
  /** System ids in legend order. */
  order: readonly string[];
  labels: Readonly<Record<string, string>>;
}

interface Datum {
  case: string;
  system: string;
  value: number;
}

function panel(rows: readonly ResultRow[], metrics: readonly MetricId[], title: string, opts: ChartOptions): object | null {
  const data: Datum[] = [];
  for (const r of rows) {
    if (!metrics.includes(r.metric) || !Number.isFinite(r.value)) continue;
    data.push({ case: METRICS[r.metric].label, system: opts.labels[r.system] ?? r.system, value: Number(r.value.toFixed(4)) });
  }
  if (data.length === 0) return null;
  const sysOrder = opts.order.map((id) => opts.labels[id] ?? id);
  return {
    title,
    data: { values: data },
    mark: { type: 'bar', tooltip: true },
    width: { step: 14 },
    height: 260,
    encoding: {
      x: { field: 'case', type: 'nominal', title: null, sort: metrics.map((m) => METRICS[m].label), axis: { labelAngle: 0 } },
      xOffset: { field: 'system', type: 'nominal', sort: sysOrder },
      y: { field: 'value', type: 'quantitative', title },
      color: { field: 'system', type: 'nominal', sort: sysOrder, title: 'system', scale: { scheme: 'tableau10' } },
    },
  };
}

/** The Vega-Lite spec for the results (exported for tests). */
export function chartSpec(rows: readonly ResultRow[], opts: ChartOptions): TopLevelSpec {
  const panels = [
    panel(rows, ['tcp1', 'tcp4'], 'TCP throughput (Gbit/s)', opts),
    panel(rows, ['udp64'], 'UDP 64 B delivered (kpps)', opts),
    panel(rows, ['rtt_p50', 'rtt_p99'], 'ping RTT under load (ms, lower is better)', opts),
  ].filter((p): p is object => p !== null);
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: opts.title,
    background: 'white',
    hconcat: panels,
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
