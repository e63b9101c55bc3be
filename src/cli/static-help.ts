/**
 * Start-up fast path for the outputs that are the same for every run of one build:
 * `tunswitch --help`, `tunswitch GROUP --help`, `tunswitch completion bash|zsh` and
 * `tunswitch --version`. `npm run build` renders each once with the real program
 * (scripts/static-help.mjs, run by scripts/post-build.mjs) into dist/src/cli/static/. This
 * module is main.ts's first import: when the command line is one of those forms, it prints
 * the stored text and exits during module evaluation, before commander and the command
 * groups are evaluated. It measured 1.9x -> 1.1-1.5x `node -e 0` (test/cli/startup.test.ts).
 *
 * It stands back (the CLI runs as usual) when:
 *   1. the program being run is not main.js (tests and tools import main.js);
 *   2. TUNSWITCH_NO_STATIC_HELP is set (the generator itself);
 *   3. stdout is a terminal that is not 80 columns wide (commander wraps help to the terminal;
 *      the files are rendered for a pipe, which is 80 columns);
 *   4. the file is missing, or older than a CLI module (a tsc-only rebuild made it stale).
 */
import { readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
export const STATIC_DIR = join(HERE, 'static');
export const NO_STATIC_ENV = 'TUNSWITCH_NO_STATIC_HELP';

/** The stored file for a command line (arguments after the script), or null for none. */
export function staticFileFor(args: readonly string[]): string | null {
  const help = (a: string | undefined): boolean => a === '--help' || a === '-h';
  if (args.length === 1 && help(args[0])) return 'help.txt';
  if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) return 'version.txt';
  if (args.length === 2 && args[0] === 'completion' && (args[1] === 'bash' || args[1] === 'zsh')) return `completion-${args[1]}.txt`;
  if (args.length === 2 && help(args[1]) && /^[a-z]+$/.test(args[0] as string)) return `help-${args[0] as string}.txt`;
  return null;
}

function newestModuleMs(): number {
  let newest = 0;
  for (const f of readdirSync(HERE)) {
    if (!f.endsWith('.js')) continue;
    const m = statSync(join(HERE, f)).mtimeMs;
    if (m > newest) newest = m;
  }
  return newest;
}

function storedText(): string | null {
  const script = process.argv[1];
  if (script === undefined || process.env[NO_STATIC_ENV]) return null;
  const name = staticFileFor(process.argv.slice(2));
  if (name === null) return null;
  if (process.stdout.isTTY === true && process.stdout.columns !== 80) return null;
  try {
    if (realpathSync(script) !== join(HERE, 'main.js')) return null;
    const file = join(STATIC_DIR, name);
    if (statSync(file).mtimeMs < newestModuleMs()) return null;
    return readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

const text = storedText();
if (text !== null) {
  // Pipes and files are written synchronously on Linux, so nothing is lost by exiting here.
  process.stdout.write(text);
  process.exit(0);
}
