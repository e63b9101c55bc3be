// Lint config: typescript-eslint's recommended rules over the TypeScript sources, and the
// layering of ARCHITECTURE.md ("Who may import whom") as no-restricted-imports per folder.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// Import paths are matched as written (relative, with the .js extension).
const SRC_NEVER = { regex: '^(\\.\\./)+(bench|test)/', message: 'src/ never imports bench/ or test/ (ARCHITECTURE.md layering).' };

/** no-restricted-imports for a folder: the shared src rule plus the folder's own patterns. */
function layer(files, patterns, extra = []) {
  return { files, rules: { 'no-restricted-imports': ['error', { patterns: [SRC_NEVER, ...patterns], paths: extra }] } };
}

const NODE_IO = ['fs', 'node:fs', 'fs/promises', 'node:fs/promises', 'net', 'node:net', 'child_process', 'node:child_process', 'dgram', 'node:dgram', 'http', 'node:http'].map(
  (name) => ({ name, message: 'datapath/ and tables/ are pure: no Node I/O (ARCHITECTURE.md).' }),
);

export default tseslint.config(
  { ignores: ['dist/**', 'dist-*/**', 'node_modules/**', 'native/build/**', 'bench/results/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { console: 'readonly', process: 'readonly' } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  // ---- layering (one block per folder; a file gets the last block that matches it) ----
  layer(['src/**/*.ts'], []),
  // proto is the leaf: it imports nothing, not even Node (only its own files).
  layer(['src/proto/**/*.ts'], [{ regex: '^(?!\\./)', message: 'src/proto/ is the leaf vocabulary: it imports nothing.' }]),
  // tables: proto and tables only (conntrack and fragments take the flow tuple from proto).
  layer(['src/tables/**/*.ts'], [{ regex: '^\\.\\./(?!proto/)', message: 'src/tables/ imports only src/proto/ (never datapath/, control/ ...).' }], NODE_IO),
  // datapath: proto and tables only.
  layer(['src/datapath/**/*.ts'], [{ regex: '^\\.\\./(?!proto/|tables/)', message: 'src/datapath/ imports only src/proto/ and src/tables/.' }], NODE_IO),
  // lab and observe sit beside cli, never on it (shared text helpers live in src/text/).
  layer(['src/lab/**/*.ts', 'src/observe/**/*.ts'], [{ regex: '^\\.\\./cli/', message: 'src/lab/ and src/observe/ never import src/cli/ (use src/text/).' }]),
  // Known exception: `tunswitch bench` loads the end-to-end harness, which lives in bench/e2e/
  // (it pulls dev dependencies such as vega for its chart). Moving it into src/ is open work.
  { files: ['src/cli/bench.ts'], rules: { 'no-restricted-imports': 'off' } },
);
