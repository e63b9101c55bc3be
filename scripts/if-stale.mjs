#!/usr/bin/env node
/**
 * Runs a build command only when its output is older than its inputs:
 *
 *   node scripts/if-stale.mjs --out STAMP_OR_FILE --in PATH [--in PATH ...] [--stamp] -- CMD ARGS...
 *
 * Why: the first `npx tunswitch` in the project links the project into npx's cache and npm
 * runs its `install` and `prepare` scripts again (node-gyp rebuild and tsc: 20-30 s on a busy
 * machine). A fresh clone has no output, so `npm ci` still builds; after a source change the
 * output is older, so it rebuilds. TUNSWITCH_FORCE_BUILD=1 always runs CMD.
 * With --stamp the output is a stamp file written after CMD succeeds.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

const SKIP = new Set(['node_modules', 'build', 'dist', '.git']);

function newest(p) {
  let st;
  try {
    st = statSync(p);
  } catch {
    return 0;
  }
  if (!st.isDirectory()) return st.mtimeMs;
  let m = st.mtimeMs;
  for (const e of readdirSync(p)) {
    if (SKIP.has(e) || e.startsWith('dist')) continue;
    m = Math.max(m, newest(join(p, e)));
  }
  return m;
}

const argv = process.argv.slice(2);
const sep = argv.indexOf('--');
if (sep < 0 || sep === argv.length - 1) {
  process.stderr.write('usage: if-stale.mjs --out FILE --in PATH... [--stamp] -- CMD ARGS...\n');
  process.exit(2);
}
const opts = argv.slice(0, sep);
const cmd = argv.slice(sep + 1);
let out = null;
let stamp = false;
const inputs = [];
for (let i = 0; i < opts.length; i++) {
  if (opts[i] === '--out') out = opts[++i];
  else if (opts[i] === '--in') inputs.push(opts[++i]);
  else if (opts[i] === '--stamp') stamp = true;
  else {
    process.stderr.write(`if-stale.mjs: unknown option ${opts[i]}\n`);
    process.exit(2);
  }
}
let outTime = 0;
try {
  outTime = statSync(out).mtimeMs;
} catch {
  outTime = 0;
}
const inTime = Math.max(0, ...inputs.map(newest));
if (process.env.TUNSWITCH_FORCE_BUILD !== '1' && outTime > 0 && outTime >= inTime) {
  process.stderr.write(`${cmd.join(' ')}: ${out} is up to date\n`);
  process.exit(0);
}
const r = spawnSync(cmd[0], cmd.slice(1), { stdio: 'inherit', shell: process.platform === 'win32' });
if (r.error) {
  process.stderr.write(`${cmd[0]}: ${r.error.message}\n`);
  process.exit(1);
}
if (r.status === 0 && stamp) {
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${new Date().toISOString()}\n`);
}
process.exit(r.status ?? 1);
