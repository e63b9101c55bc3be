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
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { API_SOCKET_ENV, DEFAULT_API_SOCKET } from '../api/extra-types.js';
import { makeContext, packageVersion, UsageError, type CliContext, type RegisterFn } from './context.js';
import { suggestionFor, userWords } from './errors.js';
import { DiscoverError } from './discover.js';
import { register as registerStatus } from './status.js';
import { register as registerEndpoint } from './endpoint.js';
import { register as registerNamespace } from './namespace.js';
import { register as registerIdentity } from './identity.js';
import { register as registerPolicy } from './policy.js';
import { register as registerIpcache } from './ipcache.js';
import { register as registerNode } from './node.js';
import { register as registerCt } from './ct.js';
import { register as registerConfig } from './config.js';
import { register as registerMetrics } from './metrics.js';
import { register as registerRun } from './run.js';
import { register as registerLab } from './lab.js';
import { register as registerObserve } from './observe.js';
import { register as registerMonitor } from './monitor.js';
import { register as registerCapture } from './capture.js';
import { register as registerBench } from './bench.js';
import { register as registerVersion } from './version.js';
import { register as registerCompletion } from './completion.js';
import { register as registerHubble } from './hubble.js';

/** Command groups in help order. Add new groups here (run, lab, observe, monitor, capture, bench, trace). */
export const COMMAND_GROUPS: readonly RegisterFn[] = [
  registerRun,
  registerLab,
  registerStatus,
  registerEndpoint,
  registerNamespace,
  registerIdentity,
  registerPolicy,
  registerIpcache,
  registerNode,
  registerCt,
  registerObserve,
  registerMonitor,
  registerHubble,
  registerCapture,
  registerBench,
  registerConfig,
  registerMetrics,
  registerVersion,
  registerCompletion,
];

export const EXIT_RUNTIME = 1;
export const EXIT_USAGE = 2;

/** Squeezes a message onto one line. */
export function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ').trim();
}

export function buildProgram(): Command {
  return buildProgramWithContext().program;
}

function buildProgramWithContext(): { program: Command; ctx: CliContext } {
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
  for (const reg of COMMAND_GROUPS) reg(program, ctx);
  return { program, ctx };
}

/**
 * The exit code for an error an action threw: 2 for a usage error (a bad flag combination, an
 * unknown lab in --lab, several switches and no choice), 1 for everything else.
 */
export function exitCodeOf(e: unknown): number {
  if (e instanceof UsageError || e instanceof DiscoverError || e instanceof InvalidArgumentError) return EXIT_USAGE;
  return EXIT_RUNTIME;
}

/** Runs the CLI on `argv` (process.argv form) and returns the exit code. */
export async function runCli(argv: readonly string[]): Promise<number> {
  const { program, ctx } = buildProgramWithContext();
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
