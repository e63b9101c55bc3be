/**
 * A tunswitch command line with only `observe` and `monitor`, for the CLI tests (so they do
 * not depend on src/cli/main.ts listing the groups). Same conventions as main.ts: `Error: `
 * lines, exit 2 for usage errors, 1 for the rest.
 */
import { Command, CommanderError } from 'commander';
import { makeContext } from '../../src/cli/context.js';
import { register as registerObserve } from '../../src/cli/observe.js';
import { register as registerMonitor } from '../../src/cli/monitor.js';
import { oneLine } from '../../src/text/oneline.js';

const program = new Command('tunswitch')
  .option('--socket <path>', 'API socket of the running agent')
  .exitOverride()
  .configureOutput({ outputError: (str, write) => write(`Error: ${oneLine(str.replace(/^error:\s*/i, ''))}\n`) });
const ctx = makeContext(program);
registerObserve(program, ctx);
registerMonitor(program, ctx);
try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    process.exitCode = e.exitCode === 0 ? 0 : 2;
  } else {
    process.stderr.write(`Error: ${oneLine(e instanceof Error ? e.message : String(e))}\n`);
    process.exitCode = 1;
  }
}
