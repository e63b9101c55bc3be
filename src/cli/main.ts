#!/usr/bin/env node
/**
 * The `tunswitch` command line. Each command group lives in its own file and exports
 * `register(program, ctx)`; COMMAND_GROUPS below lists them, so adding a group (run, lab,
 * observe, monitor, capture, bench, trace) is one import and one entry.
 *
 * Exit codes: 0 success, 1 an error (one line on stderr: `Error: <message>`), 2 a usage error.
 */
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { Command, CommanderError, Option } from 'commander';
import { API_SOCKET_ENV, DEFAULT_API_SOCKET } from '../api/extra-types.js';
import { makeContext, packageVersion, type RegisterFn } from './context.js';
import { register as registerStatus } from './status.js';
import { register as registerEndpoint } from './endpoint.js';
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

/** Command groups in help order. Add new groups here (run, lab, observe, monitor, capture, bench, trace). */
export const COMMAND_GROUPS: readonly RegisterFn[] = [
  registerRun,
  registerLab,
  registerStatus,
  registerEndpoint,
  registerIdentity,
  registerPolicy,
  registerIpcache,
  registerNode,
  registerCt,
  registerObserve,
  registerMonitor,
  registerCapture,
  registerBench,
  registerConfig,
  registerMetrics,
];

/** Squeezes a message onto one line. */
export function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ').trim();
}

export function buildProgram(): Command {
  const program = new Command('tunswitch');
  program
    .description('a userspace virtual switch with Cilium datapath semantics over TUN devices')
    .version(packageVersion(), '-V, --version')
    .addOption(new Option('--socket <path>', 'API socket of the running agent').env(API_SOCKET_ENV).default(DEFAULT_API_SOCKET))
    .showSuggestionAfterError(true)
    .exitOverride()
    .configureOutput({
      // Commander's own errors ("error: unknown option '-x'") in our one-line form.
      outputError: (str, write) => write(`Error: ${oneLine(str.replace(/^error:\s*/i, ''))}\n`),
    });
  const ctx = makeContext(program);
  for (const reg of COMMAND_GROUPS) reg(program, ctx);
  return program;
}

/** Runs the CLI on `argv` (process.argv form) and returns the exit code. */
export async function runCli(argv: readonly string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv as string[]);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version exit 0; everything else commander reports is a usage error.
      return e.exitCode === 0 ? 0 : 2;
    }
    const msg = e instanceof Error ? e.message : String(e);
    process.stderr.write(`Error: ${oneLine(msg)}\n`);
    return 1;
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
