/**
 * What every command group gets: the API client for the chosen socket, the `-o` option and
 * the output helpers. A group file exports `register(program, ctx)`; src/cli/main.ts lists them.
 */
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { isIP, isIPv4, isIPv6 } from 'node:net';
import { ApiClient } from '../api/client.js';
import { API_SOCKET_ENV, DEFAULT_API_SOCKET } from '../api/extra-types.js';
import { LAB_RUN_ROOT } from '../lab/root.js';
import { discoverSocket } from './discover.js';
export { cliName, commandName } from '../text/hint.js';

export type OutputFormat = 'table' | 'json';

export interface CliContext {
  /** The switch to talk to: --socket, --lab, TUNSWITCH_SOCKET, else the only one running (src/cli/discover.ts). */
  socket(): string;

  /** A client for that socket. */
  client(): ApiClient;
  /** Writes to stdout. */
  out(text: string): void;
  /** Writes a warning line to stderr. */
  warn(text: string): void;
}

/** The signature of a command group's registration function. */
export type RegisterFn = (program: Command, ctx: CliContext) => void;

export function makeContext(program: Command): CliContext {
  return {
    socket: () =>
      discoverSocket({
        socket: program.opts().socket as string | undefined,
        lab: program.opts().lab as string | undefined,
        env: process.env[API_SOCKET_ENV],
        root: LAB_RUN_ROOT,
      }),
    client() {
      return new ApiClient(this.socket());
    },
    out: (text) => {
      process.stdout.write(text);
    },
    warn: (text) => {
      process.stderr.write(text.endsWith('\n') ? text : text + '\n');
    },
  };
}

/** Where `run` listens: --socket, TUNSWITCH_SOCKET, else the default socket (no discovery). */
export function listenSocket(program: Command): string {
  const explicit = program.opts().socket as string | undefined;
  if (explicit !== undefined && explicit !== '') return explicit;
  const env = process.env[API_SOCKET_ENV];
  return env !== undefined && env !== '' ? env : DEFAULT_API_SOCKET;
}

/** A usage error found after commander parsed the line (a bad combination of flags): exit code 2. */
export { UsageError } from '../proto/errors.js';

/** Adds `-o, --output <table|json>` to a command. */
export function withOutput(cmd: Command): Command {
  return cmd.addOption(new Option('-o, --output <format>', 'output format').choices(['table', 'json']).default('table'));
}

/** The -o value of the command an action runs for (the action's last argument). */
export function outputOf(cmd: Command): OutputFormat {
  return (cmd.opts().output as OutputFormat | undefined) ?? 'table';
}

/** Prints `value` as JSON for `-o json`, else the table `render` makes. */
export function print(ctx: CliContext, cmd: Command, value: unknown, render: () => string): void {
  if (outputOf(cmd) === 'json') ctx.out(JSON.stringify(value, null, 2) + '\n');
  else ctx.out(render());
}

// Argument parsers: a bad value is a usage error (exit code 2) naming the value.

export function parsePositiveInt(s: string): number {
  if (!/^\d+$/.test(s) || Number(s) <= 0 || !Number.isSafeInteger(Number(s))) throw new InvalidArgumentError(`"${s}" is not a positive integer.`);
  return Number(s);
}

export function parseNonNegativeInt(s: string): number {
  if (!/^\d+$/.test(s) || !Number.isSafeInteger(Number(s))) throw new InvalidArgumentError(`"${s}" is not a non-negative integer.`);
  return Number(s);
}

export function parseIPv4(s: string): string {
  if (!isIPv4(s)) throw new InvalidArgumentError(`"${s}" is not an IPv4 address.`);
  return s;
}

export function parseIPv6(s: string): string {
  if (!isIPv6(s)) throw new InvalidArgumentError(`"${s}" is not an IPv6 address.`);
  return s;
}

export function parseIP(s: string): string {
  if (isIP(s) === 0) throw new InvalidArgumentError(`"${s}" is not an IP address.`);
  return s;
}

/** Collects a repeatable option into a list. */
export function collect<T>(parse: (s: string) => T): (s: string, prev: T[] | undefined) => T[] {
  return (s, prev) => [...(prev ?? []), parse(s)];
}

/** The package's version (dist/src/cli/*.js -> package.json at the repository root). */
export function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}
