/**
 * Start-up budget: a command that needs no heavy library (vega, the runtime, Piscina,
 * prom-client, yaml, the bench harness) starts in at most 2x plain `node -e 0`, measured in
 * the same run as a ratio of medians, so a busy machine slows both sides alike.
 *
 * `--help`, `GROUP --help`, `completion bash|zsh` and `--version` are served from the texts
 * the build stores (src/cli/static-help.ts); `endpoint list --help` takes the ordinary path
 * (one command group loaded). The stored texts are checked against the program's own output,
 * and the module test runs without them, so it still sees what a light command loads.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { COMMAND_GROUPS } from '../../src/cli/main.js';
import { NO_STATIC_ENV, STATIC_DIR, staticFileFor } from '../../src/cli/static-help.js';

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

const COMMANDS: readonly string[][] = [['--version'], ['--help'], ['observe', '--help'], ['completion', 'bash'], ['endpoint', 'list', '--help']];

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
  const r = spawnSync(process.execPath, ['--no-warnings', '--experimental-loader', hook, MAIN, 'status', '--help'], { encoding: 'utf8', env: { ...process.env, [NO_STATIC_ENV]: '1' } });
  assert.equal(r.status, 0, `got exit ${r.status} (${r.stderr}), want 0`);
  const loaded = r.stderr.split('\n').filter((l) => l.startsWith('LOADED '));
  assert.ok(loaded.length > 5, `got ${loaded.length} loaded modules, want the hook to see the CLI's modules`);
  for (const heavy of ['/vega', '/vega-lite/', '/piscina/', '/prom-client/', '/yaml/', '/dockerode/', 'bench/e2e/harness', 'runtime/switch', '@grpc']) {
    const hit = loaded.find((l) => l.includes(heavy));
    assert.equal(hit, undefined, `status --help loaded ${hit}, want no ${heavy}`);
  }
});

test('the stored help, completion and version texts are the program\'s own output, for every group', () => {
  const forms: string[][] = [['--help'], ['-h'], ['--version'], ['completion', 'bash'], ['completion', 'zsh'], ['observe', '--help'], ['capture', '-h'], ['lab', '--help']];
  for (const g of COMMAND_GROUPS) {
    const f = staticFileFor([g.name, '--help']);
    assert.ok(f !== null && existsSync(`${STATIC_DIR}/${f}`), `got no stored text ${f} for "${g.name} --help", want one (npm run build stores them)`);
  }
  for (const argv of forms) {
    const fast = spawnSync(process.execPath, [MAIN, ...argv], { encoding: 'utf8' });
    const slow = spawnSync(process.execPath, [MAIN, ...argv], { encoding: 'utf8', env: { ...process.env, [NO_STATIC_ENV]: '1' } });
    assert.equal(fast.status, 0, `tunswitch ${argv.join(' ')}: got exit ${fast.status} (${fast.stderr}), want 0`);
    assert.equal(fast.status, slow.status, `tunswitch ${argv.join(' ')}: exit got ${fast.status} stored, ${slow.status} built, want the same`);
    assert.equal(fast.stdout, slow.stdout, `tunswitch ${argv.join(' ')}: the stored text differs from the program's output`);
    assert.ok(fast.stdout.length > 4, `tunswitch ${argv.join(' ')}: got "${fast.stdout}", want some output`);
  }
});
