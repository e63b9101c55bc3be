import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatKeyValues, formatTable, type Cell } from '../../src/text/table.js';
import { parsePrometheus, metricsObject, type Sample } from '../../src/cli/metrics.js';
import { parseConfigPairs } from '../../src/cli/config.js';
import { formatDuration } from '../../src/cli/status.js';
import { Rand } from '../helpers/rand.js';

const ALPHA = 'abcdefghijklmnopqrstuvwxyz0123456789:=._-';

function word(r: Rand, min: number, max: number): string {
  let s = '';
  const n = r.range(min, max);
  for (let i = 0; i < n; i++) s += ALPHA[r.int(ALPHA.length)];
  return s;
}

test('formatTable: every cell line starts at its column offset, rows span their tallest cell', () => {
  for (let seed = 1; seed <= 200; seed++) {
    const r = new Rand(seed);
    const cols = r.range(1, 6);
    const headers = Array.from({ length: cols }, (_, i) => `H${i}${word(r, 0, 6).toUpperCase()}`);
    const rows: Cell[][] = Array.from({ length: r.range(0, 8) }, () =>
      headers.map(() => (r.bool(0.3) ? Array.from({ length: r.range(0, 3) }, () => word(r, 1, 12)) : r.bool(0.1) ? undefined : word(r, 1, 15))),
    );
    const out = formatTable(headers, rows);
    assert.ok(out.endsWith('\n'), `seed ${seed}: got no final newline`);
    const lines = out.slice(0, -1).split('\n');
    // Reference: column start = sum of previous widths + 3 per gap.
    const cellLines = (c: Cell): string[] => (c === undefined ? [''] : Array.isArray(c) ? (c.length ? c.map(String) : ['']) : [String(c)]);
    const widths = headers.map((h, i) => Math.max(h.length, ...rows.flatMap((row) => cellLines(row[i]).map((l) => l.length))));
    const starts = widths.map((_, i) => widths.slice(0, i).reduce((a, b) => a + b + 3, 0));
    const want: string[][] = [headers.slice()];
    for (const row of rows) {
      const cl = row.map(cellLines);
      const h = Math.max(...cl.map((c) => c.length));
      for (let k = 0; k < h; k++) want.push(cl.map((c) => c[k] ?? ''));
    }
    assert.equal(lines.length, want.length, `seed ${seed}: got ${lines.length} lines, want ${want.length}`);
    want.forEach((cells, li) => {
      const line = lines[li] as string;
      assert.equal(line, line.trimEnd(), `seed ${seed} line ${li}: got trailing spaces`);
      cells.forEach((c, ci) => {
        const at = line.slice(starts[ci], (starts[ci] as number) + c.length);
        assert.equal(at, c, `seed ${seed} line ${li} col ${ci}: got ${JSON.stringify(at)}, want ${JSON.stringify(c)}`);
      });
    });
  }
});

test('formatKeyValues aligns values and continues lists', () => {
  const got = formatKeyValues([
    ['A', 1],
    ['Longer', ['x', 'y']],
    ['C', undefined],
  ]);
  const want = 'A:        1\nLonger:   x\n          y\nC:\n';
  assert.equal(got, want, `got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
});

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

test('parsePrometheus round-trips random series (escapes, special values, comments, timestamps)', () => {
  for (let seed = 1; seed <= 200; seed++) {
    const r = new Rand(seed * 7919);
    const want: Sample[] = [];
    const lines: string[] = [];
    const n = r.range(0, 10);
    for (let i = 0; i < n; i++) {
      const name = `${r.pick(['cilium_', 'tunswitch_', 'go_', ''])}m${word(r, 1, 8).replace(/[^a-z0-9_]/g, '_')}`;
      const labels: Record<string, string> = {};
      const nl = r.range(0, 3);
      for (let k = 0; k < nl; k++) {
        labels[`l${k}`] = r.pick(['', 'plain', 'with space', 'quote"d', 'back\\slash', 'new\nline', 'brace}{', 'comma,x']);
      }
      const value: number | string = r.bool(0.1) ? r.pick(['NaN', '+Inf', '-Inf']) : r.bool() ? r.int(1e9) : r.int(1e6) / 1000;
      if (r.bool(0.3)) lines.push(`# HELP ${name} something`);
      const lab = Object.entries(labels)
        .map(([k, v]) => `${k}="${escapeLabel(v)}"`)
        .join(',');
      lines.push(`${name}${nl > 0 || r.bool(0.2) ? `{${lab}}` : ''} ${value}${r.bool(0.2) ? ' 1700000000000' : ''}`);
      want.push({ name, labels, value });
    }
    const got = parsePrometheus(lines.join('\n') + '\n');
    assert.deepEqual(got, want, `seed ${seed}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
    const obj = metricsObject(got);
    const total = Object.values(obj).reduce((a, v) => a + v.length, 0);
    assert.equal(total, want.length, `seed ${seed}: metricsObject got ${total} samples, want ${want.length}`);
  }
});

test('parsePrometheus skips lines it cannot read', () => {
  const got = parsePrometheus('cilium_ok 1\ngarbage line here\ncilium_bad{x=1} 2\ncilium_nan abc\n  \ncilium_ok2{a="b"} 3\n');
  assert.deepEqual(got, [
    { name: 'cilium_ok', labels: {}, value: 1 },
    { name: 'cilium_ok2', labels: { a: 'b' }, value: 3 },
  ], `got ${JSON.stringify(got)}`);
});

test('parseConfigPairs', () => {
  const good: [string[], object][] = [
    [['audit=on'], { audit: true }],
    [['audit=OFF'], { audit: false }],
    [['audit=true', 'enforcement=never'], { audit: true, enforcement: 'never' }],
    [['enforcement=default'], { enforcement: 'default' }],
    [[], {}],
  ];
  for (const [pairs, want] of good) assert.deepEqual(parseConfigPairs(pairs), want, `parseConfigPairs(${pairs})`);
  const bad: [string, RegExp][] = [
    ['audit=1', /config audit: "1" is not on or off/],
    ['enforcement=Always', /config enforcement: "Always"/],
    ['=on', /expected key=value/],
    ['mtu=1500', /config key "mtu" is unknown/],
  ];
  for (const [p, re] of bad) assert.throws(() => parseConfigPairs([p]), (e: Error & { code?: string }) => re.test(e.message) && e.code === 'ECONFIG_INVALID', `parseConfigPairs(${p}): want ${re}`);
});

test('formatDuration', () => {
  const cases: [number, string][] = [[0, '0s'], [59, '59s'], [60, '1m 0s'], [3725, '1h 2m 5s'], [86400, '1d 0h 0m 0s'], [90061.7, '1d 1h 1m 1s']];
  for (const [s, want] of cases) assert.equal(formatDuration(s), want, `formatDuration(${s}): got ${formatDuration(s)}, want ${want}`);
});
