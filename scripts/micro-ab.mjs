#!/usr/bin/env node
// Same-run A/B of the datapath micro benchmarks: the old tree against this one.
//
//   node scripts/micro-ab.mjs REF_OR_DIR [--rounds N] [--only SUBSTRING]
//   npm run bench:ab -- HEAD~1
//
// REF_OR_DIR is a built checkout (a directory with dist/) or a git ref; a ref is checked out
// into a temporary worktree under /tmp and compiled (tsc) once. Each round runs every case
// once in a fresh process per tree, alternating old/new, so both see the same machine state
// (load, frequency, other processes). The report is the median ns/op over the rounds per case
// and the ratio new/old; issue 16's rule is that no case regresses by more than 5%.
// Cases: parse, conntrack and pipeline (bench/datapath, bench/tables), built from each tree's
// own bench modules, so a change to what a case measures shows up as a change, too.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, symlinkSync, cpSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = resolve(dirname(fileURLToPath(import.meta.url)), '..');

async function child(tree, only) {
  const t = (p) => import(pathToFileURL(join(tree, 'dist', p)).href);
  const { Bench } = await import('tinybench');
  const { TableSet } = await t('src/tables/tableset.js');
  const { PipelineScenario, pipelineCases } = await t('bench/datapath/pipeline.js');
  const { parseCases } = await t('bench/datapath/parse.js');
  const { conntrackCases } = await t('bench/tables/conntrack.js');
  const { loadIpcache } = await t('bench/tables/ipcache.js');
  const { populatePolicy } = await t('bench/tables/policy.js');
  const { Rand } = await t('test/helpers/rand.js');
  const r = new Rand(1);
  const tables = TableSet.create({
    ipcache: { tbl8Groups: 16384, leaves: 200_000 + 1024, v6Capacity: 1 << 18 },
    policyCapacity: 1 << 18,
    maxEndpoints: 4096,
  });
  const sc = new PipelineScenario(tables);
  loadIpcache(sc.writer, r, 100_000, 100_000, 8);
  populatePolicy(sc.writer, r, 200);
  sc.commit();
  const cases = [...parseCases(r, 1024), ...conntrackCases(r, 1024, false), ...pipelineCases(sc, 1024)]
    .filter((c) => only === '' || c.name.includes(only));
  const b = new Bench({ time: 1000, warmupTime: 200, iterations: 32 });
  for (const c of cases) b.add(c.name, c.fn, { beforeEach: c.beforeEach, afterEach: c.afterEach });
  await b.run();
  const out = {};
  b.tasks.forEach((task, i) => {
    const res = task.result;
    const p50ms = res.latency?.p50 ?? res.p50;
    out[task.name] = (p50ms * 1e6) / cases[i].opsPerCall;
  });
  process.stdout.write(JSON.stringify(out));
}

function checkoutRef(ref) {
  const git = (...a) => spawnSync('git', a, { cwd: here, encoding: 'utf8' });
  const sha = git('rev-parse', '--verify', `${ref}^{commit}`);
  if (sha.status !== 0) {
    console.error(`micro-ab: ${ref}: not a directory with dist/ and not a git ref`);
    process.exit(2);
  }
  const id = sha.stdout.trim();
  const dir = `/tmp/tunswitch-ab-${id.slice(0, 12)}`;
  if (!existsSync(join(dir, 'dist', 'bench', 'datapath', 'pipeline.js'))) {
    if (!existsSync(dir)) {
      const w = git('worktree', 'add', '--detach', dir, id);
      if (w.status !== 0) { console.error(`micro-ab: git worktree add: ${w.stderr.trim()}`); process.exit(1); }
    }
    if (!existsSync(join(dir, 'node_modules'))) symlinkSync(join(here, 'node_modules'), join(dir, 'node_modules'));
    mkdirSync(join(dir, 'native', 'build'), { recursive: true });
    cpSync(join(here, 'native', 'build'), join(dir, 'native', 'build'), { recursive: true });
    console.error(`micro-ab: compiling ${ref} (${id.slice(0, 12)}) in ${dir}`);
    const c = spawnSync(process.execPath, [join(here, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: dir, stdio: 'inherit' });
    if (c.status !== 0) { console.error(`micro-ab: tsc failed in ${dir}`); process.exit(1); }
  }
  return dir;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function main(argv) {
  if (argv[0] === '--child') return child(argv[1], argv[2] ?? '');
  let rounds = 5;
  let only = '';
  let ref;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--rounds') {
      rounds = Number(argv[++i]);
      if (!Number.isInteger(rounds) || rounds < 1 || rounds > 50) { console.error('micro-ab: --rounds: an integer from 1 to 50'); process.exit(2); }
    } else if (a === '--only') only = argv[++i] ?? '';
    else if (a === '-h' || a === '--help') {
      console.log('usage: node scripts/micro-ab.mjs REF_OR_DIR [--rounds N] [--only SUBSTRING]'); return;
    } else if (ref === undefined) ref = a;
    else { console.error(`micro-ab: unexpected argument ${a}`); process.exit(2); }
  }
  if (ref === undefined) { console.error('micro-ab: give the old tree: a git ref (HEAD~1) or a built checkout'); process.exit(2); }
  const oldTree = existsSync(join(ref, 'dist')) ? resolve(ref) : checkoutRef(ref);
  const trees = { old: oldTree, new: here };
  const samples = { old: {}, new: {} };
  for (let k = 0; k < rounds; k++) {
    for (const side of k % 2 === 0 ? ['old', 'new'] : ['new', 'old']) {
      const p = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child', trees[side], only], { cwd: here, encoding: 'utf8', maxBuffer: 1 << 20 });
      if (p.status !== 0) { console.error(`micro-ab: ${side} tree failed:\n${p.stderr}`); process.exit(1); }
      for (const [name, ns] of Object.entries(JSON.parse(p.stdout))) (samples[side][name] ??= []).push(ns);
    }
    console.error(`micro-ab: round ${k + 1}/${rounds} done`);
  }
  console.log(`old: ${oldTree}\nnew: ${here}\nmedian ns/op over ${rounds} rounds (alternating processes)\n`);
  console.log(`${'case'.padEnd(28)} ${'old'.padStart(9)} ${'new'.padStart(9)} ${'new/old'.padStart(8)}`);
  let worst = 0;
  for (const name of Object.keys(samples.new)) {
    const o = samples.old[name];
    const n = median(samples.new[name]);
    if (o === undefined) { console.log(`${name.padEnd(28)} ${'-'.padStart(9)} ${n.toFixed(1).padStart(9)}`); continue; }
    const ratio = n / median(o);
    worst = Math.max(worst, ratio);
    console.log(`${name.padEnd(28)} ${median(o).toFixed(1).padStart(9)} ${n.toFixed(1).padStart(9)} ${ratio.toFixed(3).padStart(8)}`);
  }
  console.log(`\nworst ratio ${worst.toFixed(3)} (${worst > 1.05 ? 'more than 5% slower' : 'within 5%'})`);
}

await main(process.argv.slice(2));
