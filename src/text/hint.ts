/**
 * How hints spell the CLI, so that a line the CLI prints works when pasted into a shell.
 * Imports only Node built-ins (src/lab uses it too).
 */
import { accessSync, constants as fsConstants } from 'node:fs';
import { delimiter, join } from 'node:path';

/**
 * How a hint should spell the CLI so that it works when pasted: "tunswitch" when an executable
 * of that name is on the user's PATH, else "npx tunswitch" (which runs the project's own bin).
 * Folders inside node_modules do not count: npm run and npx put them on PATH, the shell has not.
 */
export function commandName(env: NodeJS.ProcessEnv): string {
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (dir === '' || dir.includes('node_modules')) continue;
    try {
      accessSync(join(dir, 'tunswitch'), fsConstants.X_OK);
      return 'tunswitch';
    } catch {
      // not here
    }
  }
  return 'npx tunswitch';
}

/** How to type this CLI in a hint pasted into a shell (see commandName). */
export function cliName(): string {
  return commandName(process.env);
}
