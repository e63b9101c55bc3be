/**
 * The one error table (src/proto/errors.ts): every code maps to a status and an exit code, the
 * API and the CLI use it, and docs/errors.md is generated from it.
 * TUNSWITCH_UPDATE_DOCS=1 rewrites docs/errors.md instead of comparing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ERRORS, TunswitchError, UsageError, InternalError, errorCodeTable, exitCodeForCode, statusForCode } from '../../src/proto/errors.js';
import { exitCodeOf } from '../../src/cli/main.js';
import { ApiError } from '../../src/api/client.js';

const DOC = join(process.cwd(), 'docs', 'errors.md');

export function errorsDoc(): string {
  return [
    '# Error codes',
    '',
    'Generated from `src/proto/errors.ts` (the one table); `test/proto/errors.test.ts` fails when',
    'this file is out of date (`TUNSWITCH_UPDATE_DOCS=1 node --test dist/test/proto/errors.test.js`',
    'rewrites it). Every API error body is `{ "error": { "code", "message" } }` with the HTTP status',
    'below; the CLI prints `Error: <message>` and exits with the exit code below.',
    '',
    errorCodeTable(),
  ].join('\n');
}

test('every code has an E-prefixed name, an HTTP error status, exit 1 or 2 and a meaning', () => {
  for (const [code, s] of Object.entries(ERRORS)) {
    assert.match(code, /^E[A-Z0-9_]+$/, `code ${code}: want E + upper snake case`);
    assert.ok(s.status >= 400 && s.status <= 599, `${code}: status ${s.status}, want 4xx/5xx`);
    assert.ok(s.exit === 1 || s.exit === 2, `${code}: exit ${s.exit}, want 1 or 2`);
    assert.ok(s.doc.length > 10, `${code}: no meaning`);
  }
});

test('statuses and exit codes users rely on are unchanged', () => {
  const want: [string, number, number][] = [
    ['EBAD_REQUEST', 400, 1],
    ['EPOLICY_INVALID', 400, 1],
    ['EENDPOINT_NOT_FOUND', 404, 1],
    ['ENAMESPACE_NOT_FOUND', 404, 1],
    ['EENDPOINT_EXISTS', 409, 1],
    ['ECAPTURE_BUSY', 409, 1],
    ['ENOT_SUPPORTED', 501, 1],
    ['EKVSTORE', 503, 1],
    ['EINTERNAL', 500, 1],
    ['EUSAGE', 400, 2],
    ['ENO_SUCH_CODE', 500, 1],
  ];
  for (const [code, status, exit] of want) {
    assert.equal(statusForCode(code), status, `${code}: got status ${statusForCode(code)}, want ${status}`);
    assert.equal(exitCodeForCode(code), exit, `${code}: got exit ${exitCodeForCode(code)}, want ${exit}`);
  }
});

test('the CLI takes its exit code from the table, for every error kind', () => {
  const cases: [unknown, number][] = [
    [new UsageError('--x: bad'), 2],
    [new TunswitchError('EPOLICY_INVALID', 'x'), 1],
    [new InternalError('broken'), 1],
    [new ApiError('EENDPOINT_NOT_FOUND', 404, 'endpoint "x" not found'), 1],
    [new ApiError('ESOMETHING_NEWER', 418, 'a code this client does not know'), 1],
    [new Error('not ours'), 1],
  ];
  for (const [e, want] of cases) assert.equal(exitCodeOf(e), want, `${(e as Error).message}: got exit ${exitCodeOf(e)}, want ${want}`);
  assert.equal(new ApiError('ESOMETHING_NEWER', 418, 'x').code, 'EINTERNAL', 'an unknown server code: want EINTERNAL');
});

test('docs/errors.md is generated from the table', () => {
  const want = errorsDoc();
  if (process.env.TUNSWITCH_UPDATE_DOCS === '1') writeFileSync(DOC, want);
  const got = readFileSync(DOC, 'utf8');
  assert.equal(got, want, 'docs/errors.md differs from src/proto/errors.ts: rerun with TUNSWITCH_UPDATE_DOCS=1');
});
