#!/usr/bin/env node
// Renders the outputs src/cli/static-help.ts serves (top-level and per-group --help,
// completion bash|zsh, --version) with the real CLI, into dist/src/cli/static/. Each is
// rendered for a pipe (80 columns), without the fast path, and kept only when the command
// exits 0 with nothing on stderr.
import { execFile } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const MAIN = 'dist/src/cli/main.js';
const DIR = 'dist/src/cli/static';
const { COMMAND_GROUPS } = await import(pathToFileURL(MAIN).href);
const { staticFileFor, NO_STATIC_ENV } = await import(pathToFileURL('dist/src/cli/static-help.js').href);

const forms = [['--help'], ['--version'], ['completion', 'bash'], ['completion', 'zsh'], ...COMMAND_GROUPS.map((g) => [g.name, '--help'])];
rmSync(DIR, { recursive: true, force: true });
mkdirSync(DIR, { recursive: true });
const env = { ...process.env, [NO_STATIC_ENV]: '1' };
delete env.TUNSWITCH_SOCKET;
delete env.COLUMNS;
const run = (args) =>
  new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { encoding: 'utf8', env, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err || stderr !== '') process.stderr.write(`static-help: tunswitch ${args.join(' ')} failed (${(err?.message ?? stderr).trim()}); not stored\n`);
      else writeFileSync(join(DIR, staticFileFor(args)), stdout);
      resolve();
    });
  });
// A few at a time: the build machine is shared.
const queue = [...forms];
await Promise.all([0, 1, 2].map(async () => {
  while (queue.length > 0) await run(queue.shift());
}));
