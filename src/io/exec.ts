/**
 * Running a system command (ip, nsenter, sysctl...) without a shell: the one runner the
 * namespace code (io/netns.ts) and the lab (lab/sys.ts) share. It never rejects: the result
 * says whether the command ran, exited non-zero, was missing or timed out, and each caller
 * turns that into its own error.
 */
import { execFile } from 'node:child_process';

export interface CommandResult {
  /** Exit status; 127 when the command could not run (missing, killed, other spawn error). */
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  /** The command line, for error messages. */
  readonly command: string;
  /** The executable is not installed (ENOENT). */
  readonly missing: boolean;
  /** Killed after the timeout. */
  readonly timedOut: boolean;
}

/** Runs `file argv...`, waiting at most timeoutMs; stdout is capped at 16 MiB. */
export function runCommand(file: string, argv: readonly string[], timeoutMs: number): Promise<CommandResult> {
  const command = [file, ...argv].join(' ');
  return new Promise((resolve) => {
    execFile(file, argv as string[], { timeout: timeoutMs, maxBuffer: 16 << 20, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err === null) {
        resolve({ code: 0, stdout, stderr, command, missing: false, timedOut: false });
        return;
      }
      const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: unknown };
      const code = typeof e.code === 'number' ? e.code : 127;
      const spawnFailed = typeof e.code === 'string';
      resolve({
        code,
        stdout: String(stdout),
        stderr: stderr === '' && spawnFailed ? `${file}: ${err.message}` : String(stderr),
        command,
        missing: e.code === 'ENOENT',
        timedOut: e.killed === true,
      });
    });
  });
}
