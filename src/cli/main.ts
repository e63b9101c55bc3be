#!/usr/bin/env node
/**
 * The `tunswitch` command line. Each command group lives in its own file and exports
 * `register(program, ctx)`; COMMAND_GROUPS below lists them, so adding a group (run, lab,
 * observe, monitor, capture, bench, trace) is one import and one entry.
 *
 * Exit codes (the same for every command):
 *   0  success (also --help and --version)
 *   1  a runtime error: the switch refused or failed, a file could not be read, root needed
 *   2  a usage error: unknown command or option, a bad option value, a bad flag combination
 * Errors are one line on stderr: `Error: <message>`.
 */
import './static-help.js'; // first: serves --help, completion and --version from stored text, before the rest loads
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { API_SOCKET_ENV, DEFAULT_API_SOCKET } from '../api/extra-types.js';
import { makeContext, packageVersion, type CliContext, type RegisterFn } from './context.js';
import { exitCodeForCode, TunswitchError } from '../proto/errors.js';
import { suggestionFor, userWords } from './errors.js';
import { oneLine } from '../text/oneline.js';
/**
 * Command groups in help order, each loaded only when needed: a command line that names one
 * group loads that group alone (so `tunswitch observe ...` never loads the lab or bench code);
 * top-level help, completion and an unknown command load them all. Add new groups here.
 */
export const COMMAND_GROUPS: readonly { name: string; load: () => Promise<{ register: RegisterFn }> }[] = [
  { name: 'run', load: () => import('./run.js') },
  { name: 'lab', load: () => import('./lab.js') },
  { name: 'status', load: () => import('./status.js') },
  { name: 'endpoint', load: () => import('./endpoint.js') },
  { name: 'namespace', load: () => import('./namespace.js') },
  { name: 'identity', load: () => import('./identity.js') },
  { name: 'policy', load: () => import('./policy.js') },
  { name: 'ipcache', load: () => import('./ipcache.js') },
  { name: 'node', load: () => import('./node.js') },
  { name: 'ct', load: () => import('./ct.js') },
  { name: 'link', load: () => import('./link.js') },
  { name: 'observe', load: () => import('./observe.js') },
  { name: 'monitor', load: () => import('./monitor.js') },
  { name: 'hubble', load: () => import('./hubble.js') },
  { name: 'capture', load: () => import('./capture.js') },
  { name: 'bench', load: () => import('./bench.js') },
  { name: 'config', load: () => import('./config.js') },
  { name: 'metrics', load: () => import('./metrics.js') },
  { name: 'version', load: () => import('./version.js') },
  { name: 'completion', load: () => import('./completion.js') },
];

/** Options of the program itself that take a value (skipped when looking for the command). */
const GLOBAL_VALUE_OPTIONS = new Set(['--socket', '--lab']);

/**
 * The groups a command line needs: the one it names, none for a bare --version, else all
 * (top-level help, completion, an unknown command that wants a suggestion).
 */
export function groupsFor(argv: readonly string[]): readonly { name: string; load: () => Promise<{ register: RegisterFn }> }[] {
  const args = argv.slice(2);
  let first: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string;
    if (GLOBAL_VALUE_OPTIONS.has(a)) {
      i++;
      continue;
    }
    if (a.startsWith('-')) continue;
    first = a;
    break;
  }
  if (first === undefined) return args.includes('-V') || args.includes('--version') ? [] : COMMAND_GROUPS;
  const g = COMMAND_GROUPS.find((x) => x.name === first);
  return g === undefined || g.name === 'completion' ? COMMAND_GROUPS : [g];
}

export const EXIT_RUNTIME = 1;
export const EXIT_USAGE = 2;

export { oneLine };

/** The whole program, every group registered. */
export async function buildProgram(): Promise<Command> {
  return (await buildProgramWithContext(COMMAND_GROUPS)).program;
}

async function buildProgramWithContext(groups: readonly { load: () => Promise<{ register: RegisterFn }> }[]): Promise<{ program: Command; ctx: CliContext }> {
  const program = new Command('tunswitch');
  program
    .description('a userspace virtual switch with Cilium datapath semantics over TUN devices')
    .version(packageVersion(), '-V, --version')
    .addOption(new Option('--socket <path>', `API socket of the switch (env ${API_SOCKET_ENV}; default: the only switch running, else ${DEFAULT_API_SOCKET})`))
    .addOption(new Option('--lab <name>', 'talk to the switch of this lab (/run/tunswitch/<name>/tunswitch.sock)'))
    .showSuggestionAfterError(true)
    .exitOverride()
    .configureOutput({
      // Commander's own errors ("error: unknown option '-x'") in our one-line form.
      outputError: (str, write) => write(`Error: ${oneLine(str.replace(/^error:\s*/i, ''))}\n`),
    });
  const ctx = makeContext(program);
  const mods = await Promise.all(groups.map((g) => g.load()));
  for (const m of mods) m.register(program, ctx);
  return { program, ctx };
}

/**
 * The exit code for an error an action threw, from the one table (src/proto/errors.ts): 2 for a
 * usage error (EUSAGE: a bad flag combination, an unknown lab in --lab, several switches and no
 * choice; commander's InvalidArgumentError), 1 for everything else.
 */
export function exitCodeOf(e: unknown): number {
  if (e instanceof InvalidArgumentError) return EXIT_USAGE;
  if (e instanceof TunswitchError) return exitCodeForCode(e.code);
  return EXIT_RUNTIME;
}

/** Runs the CLI on `argv` (process.argv form) and returns the exit code. */
export async function runCli(argv: readonly string[]): Promise<number> {
  const { program, ctx } = await buildProgramWithContext(groupsFor(argv));
  try {
    await program.parseAsync(argv as string[]);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version exit 0; everything else commander reports is a usage error.
      return e.exitCode === 0 ? 0 : EXIT_USAGE;
    }
    const msg = e instanceof Error ? e.message : String(e);
    let hint = '';
    try {
      hint = await suggestionFor(e, () => ctx.client());
    } catch {
      hint = '';
    }
    process.stderr.write(`Error: ${oneLine(userWords(msg))}${hint}\n`);
    return exitCodeOf(e);
  }
}

function isMain(): boolean {
  const arg = process.argv[1];
  if (arg === undefined) return false;
  try {
    return pathToFileURL(realpathSync(arg)).href === import.meta.url;
  } catch {
    return false;
  }
}

if (isMain()) {
  process.exitCode = await runCli(process.argv);
}
