/**
 * `tunswitch version`: the CLI's version, Node, the kernel, and the running switch's version
 * and I/O engine (status field `ioEngine`; a switch that does not report it uses the
 * read/write engine). Without a reachable switch the switch lines say so; the exit code is 0.
 */
import { release } from 'node:os';
import type { Command } from 'commander';
import { ApiClient } from '../api/client.js';
import type { StatusInfo } from '../api/types.js';
import { packageVersion, print, withOutput, type CliContext } from './context.js';
import { formatKeyValues } from '../text/table.js';

/** The I/O engine a switch's status reports; older switches only had read/write. */
export const DEFAULT_IO_ENGINE = 'readwrite';

export interface VersionInfo {
  version: string;
  node: string;
  kernel: string;
  platform: string;
  /** The switch's socket, and what it said (null when it did not answer). */
  socket: string | null;
  switchVersion: string | null;
  ioEngine: string;
  /** Why the switch facts are missing. */
  switchError?: string;
}

export function ioEngineOf(status: Partial<StatusInfo> & { ioEngine?: unknown }): string {
  return typeof status.ioEngine === 'string' && status.ioEngine !== '' ? status.ioEngine : DEFAULT_IO_ENGINE;
}

export function register(program: Command, ctx: CliContext): void {
  withOutput(program.command('version').description('version of the CLI, Node, the kernel and the running switch (with its I/O engine)')).action(
    async (_o, cmd: Command) => {
      const v: VersionInfo = {
        version: packageVersion(),
        node: process.version,
        kernel: release(),
        platform: `${process.platform}/${process.arch}`,
        socket: null,
        switchVersion: null,
        ioEngine: DEFAULT_IO_ENGINE,
      };
      try {
        v.socket = ctx.socket();
        const st = await new ApiClient(v.socket, { timeoutMs: 2000 }).get<StatusInfo & { ioEngine?: unknown }>('/v1/status');
        v.switchVersion = st.version;
        v.ioEngine = ioEngineOf(st);
      } catch (e) {
        v.switchError = (e as Error).message;
      }
      print(ctx, cmd, v, () =>
        formatKeyValues([
          ['Version', v.version],
          ['Node', v.node],
          ['Kernel', v.kernel],
          ['Platform', v.platform],
          ['Switch', v.switchVersion !== null ? `${v.switchVersion} at ${v.socket}` : `not reachable (${v.switchError ?? 'no socket'})`],
          ['I/O engine', v.switchVersion !== null ? v.ioEngine : `${v.ioEngine} (default; no switch answered)`],
        ]),
      );
    },
  );
}
