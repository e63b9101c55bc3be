/**
 * Start-up budget: a command that needs no heavy library (vega, the runtime, Piscina,
 * prom-client, yaml, the bench harness) starts in at most 2x plain `node -e 0`, measured in
 * the same run as a ratio of medians, so a busy machine slows both sides alike.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const RUNS = 11;
const MAX_RATIO = 2;

function wallMs(args: string[]): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', env: { ...process.env, TUNSWITCH_SOCKET: '' } });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  assert.equal(r.status, 0, `node ${args.join(' ')}: got exit ${r.status} (${r.stderr}), want 0`);
  return ms;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

const COMMANDS: readonly string[][] = [['--version'], ['--help'], ['observe', '--help'], ['completion', 'bash']];

for (const argv of COMMANDS) {
  test(`tunswitch ${argv.join(' ')} starts in <= ${MAX_RATIO}x node -e 0`, () => {
    wallMs(['-e', '0']); // warm the file cache for both
    wallMs([MAIN, ...argv]);
    const base: number[] = [];
    const cli: number[] = [];
    const ratios: number[] = [];
    // Pairs run back to back, and the ratio is taken per pair, so a burst of load (other tests
    // run in parallel) hits both sides of a pair; the median pair decides.
    for (let i = 0; i < RUNS; i++) {
      const b = wallMs(['-e', '0']);
      const c = wallMs([MAIN, ...argv]);
      base.push(b);
      cli.push(c);
      ratios.push(c / b);
    }
    const ratio = median(ratios);
    assert.ok(
      ratio <= MAX_RATIO,
      `tunswitch ${argv.join(' ')}: got ${ratio.toFixed(2)}x node -e 0 (median ${median(cli).toFixed(0)} ms vs ${median(base).toFixed(0)} ms), want <= ${MAX_RATIO}x`,
    );
  });
}

test('the heavy modules are not loaded by a light command', () => {
  // A loader hook that prints every module the CLI resolves; none may be a heavy one.
  const hook =
    'data:text/javascript,' +
    encodeURIComponent(
      `export async function resolve(s, c, next) { const r = await next(s, c); process.stderr.write('LOADED ' + r.url + '\\n'); return r; }`,
    );
  const r = spawnSync(process.execPath, ['--no-warnings', '--experimental-loader', hook, MAIN, 'status', '--help'], { encoding: 'utf8' });
  assert.equal(r.status, 0, `got exit ${r.status} (${r.stderr}), want 0`);
  const loaded = r.stderr.split('\n').filter((l) => l.startsWith('LOADED '));
  assert.ok(loaded.length > 5, `got ${loaded.length} loaded modules, want the hook to see the CLI's modules`);
  for (const heavy of ['/vega', '/vega-lite/', '/piscina/', '/prom-client/', '/yaml/', '/dockerode/', 'bench/e2e/harness', 'runtime/switch', '@grpc']) {
    const hit = loaded.find((l) => l.includes(heavy));
    assert.equal(hit, undefined, `status --help loaded ${hit}, want no ${heavy}`);
  }
});
