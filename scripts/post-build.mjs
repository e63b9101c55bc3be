#!/usr/bin/env node
// After tsc: the CLI entry is the package's bin, so it must be executable (tsc writes 0644;
// `npx tunswitch` and `npm link` run the file itself), and dist/.build-stamp records the build.
import { chmodSync, writeFileSync } from 'node:fs';

chmodSync('dist/src/cli/main.js', 0o755);
writeFileSync('dist/.build-stamp', new Date().toISOString() + '\n');
// The CLI's stored help, completion and version texts (src/cli/static-help.ts).
await import('./static-help.mjs');
