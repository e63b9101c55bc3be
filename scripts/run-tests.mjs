#!/usr/bin/env node
// Runs the compiled test files with Node's built-in test runner.
// Unit tests (dist/test/**) always run. End-to-end tests (dist/test/e2e/**) need root,
// namespaces and TUN; in CI (CI=true) they are mandatory and fail loudly if the
// machine cannot run them. Outside CI, TUNSWITCH_E2E=0 leaves them out.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

function walk(dir, out) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

const all = walk('dist/test', []).sort();
const e2e = process.env.TUNSWITCH_E2E !== '0' || process.env.CI === 'true';
const files = all.filter((f) => e2e || !f.includes(`${join('dist', 'test', 'e2e')}`));
const args = ['--test', '--test-concurrency=1', '--test-reporter=spec', ...files];
const r = spawnSync(process.execPath, args, { stdio: 'inherit' });
process.exit(r.status ?? 1);
