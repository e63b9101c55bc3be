/**
 * The one error root. Every error tunswitch throws on purpose is a TunswitchError (or a
 * subclass) carrying a stable `code` from ERRORS below; the table says, once, what each code
 * means, the HTTP status the API answers with and the exit code the CLI ends with:
 *
 *   - the API server (src/api/server.ts) answers `{ error: { code, message } }` with
 *     `statusForCode(code)`;
 *   - the CLI (src/cli/main.ts) exits with `exitCodeForCode(code)`: 2 for a usage error,
 *     1 for everything else (the switch refused, a file is unreadable, root is needed);
 *   - the docs: `errorCodeTable()` renders the README's table (test/proto/errors.test.ts
 *     checks docs/errors.md against it).
 *
 * Scripts and API clients branch on the code; the message stays free to improve and names the
 * exact input path, e.g.
 * `web.yaml: policy "allow-web" spec.ingress[0].toPorts[0].ports[0].port: "70000" is not a port (1-65535)`.
 *
 * Programmer errors (a broken invariant, a double release, a layout mismatch) throw
 * InternalError (code EINTERNAL): loud, and recognisable as a bug.
 *
 * This module imports nothing, so every layer (tables and datapath included) may use it.
 */

interface ErrorSpec {
  /** HTTP status of an API answer carrying this code. */
  readonly status: number;
  /** CLI exit code: 2 usage, 1 runtime. */
  readonly exit: 1 | 2;
  /** What the code means (one line; the docs table shows it). */
  readonly doc: string;
}

const EXIT_RUNTIME = 1;
const EXIT_USAGE = 2;

/** The stable error codes. Add codes here, never inline. Groups: request, not found, conflict, runtime, system. */
export const ERRORS = {
  // ---- the request or input is wrong (400)
  EBAD_REQUEST: { status: 400, exit: EXIT_RUNTIME, doc: 'an API or CLI request is malformed; the message names the field' },
  EPOLICY_INVALID: { status: 400, exit: EXIT_RUNTIME, doc: 'a policy file or document failed to parse or validate' },
  ECONFIG_INVALID: { status: 400, exit: EXIT_RUNTIME, doc: 'the agent configuration (file, flag or setting) is invalid' },
  ECIDR_INVALID: { status: 400, exit: EXIT_RUNTIME, doc: 'an IP address or prefix is malformed' },
  ELABEL_INVALID: { status: 400, exit: EXIT_RUNTIME, doc: 'a label or label selector is malformed' },
  EUSAGE: { status: 400, exit: EXIT_USAGE, doc: 'a command line usage error: bad flag value or combination, unknown lab, several switches and no choice' },
  ELAB_INVALID: { status: 400, exit: EXIT_RUNTIME, doc: 'a lab argument is malformed (node name, subnet)' },
  // ---- the thing named does not exist (404)
  ENO_ROUTE: { status: 404, exit: EXIT_RUNTIME, doc: 'no API route has that path' },
  EPOLICY_NOT_FOUND: { status: 404, exit: EXIT_RUNTIME, doc: 'no policy with that name (and namespace) is loaded' },
  EENDPOINT_NOT_FOUND: { status: 404, exit: EXIT_RUNTIME, doc: 'no endpoint with that index or name exists' },
  ENAMESPACE_NOT_FOUND: { status: 404, exit: EXIT_RUNTIME, doc: 'no namespace with that name exists' },
  EIDENTITY_NOT_FOUND: { status: 404, exit: EXIT_RUNTIME, doc: 'no identity with that number exists' },
  ENETNS_NOT_FOUND: { status: 404, exit: EXIT_RUNTIME, doc: 'the network namespace (or process) an endpoint names does not exist' },
  ELAB_NOT_RUNNING: { status: 404, exit: EXIT_RUNTIME, doc: 'no lab of that name is running' },
  // ---- the request is fine, the method or size is not (405, 413)
  EMETHOD_NOT_ALLOWED: { status: 405, exit: EXIT_RUNTIME, doc: 'the API route exists but not with that method (the Allow header lists them)' },
  EBODY_TOO_LARGE: { status: 413, exit: EXIT_RUNTIME, doc: 'the request body is larger than the server reads' },
  // ---- conflicts with what exists (409)
  EENDPOINT_EXISTS: { status: 409, exit: EXIT_RUNTIME, doc: 'an endpoint with that index or name already exists' },
  ECAPTURE_BUSY: { status: 409, exit: EXIT_RUNTIME, doc: 'every capture slot is taken (8 captures run at once)' },
  EIDENTITY_CONFLICT: { status: 409, exit: EXIT_RUNTIME, doc: 'the kvstore gave a number or labels that disagree with a live local identity' },
  ELAB_RUNNING: { status: 409, exit: EXIT_RUNTIME, doc: 'a lab of that name is already running' },
  ELAB_CONFLICT: { status: 409, exit: EXIT_RUNTIME, doc: 'something the lab needs (a namespace, device or subnet) is already in use' },
  // ---- the switch cannot do it now or at all (500, 501, 503, 504)
  EIDENTITY_EXHAUSTED: { status: 500, exit: EXIT_RUNTIME, doc: 'the identity number space is used up' },
  ETABLE_FULL: { status: 500, exit: EXIT_RUNTIME, doc: 'a shared-memory table (ipcache, endpoints, policy) has no room left' },
  ENOT_SUPPORTED: { status: 501, exit: EXIT_RUNTIME, doc: 'the request uses a feature tunswitch does not implement or this machine cannot run' },
  ESTATE_INVALID: { status: 500, exit: EXIT_RUNTIME, doc: 'persisted state could not be restored' },
  EKVSTORE: { status: 503, exit: EXIT_RUNTIME, doc: 'the kvstore (etcd) is unreachable or refused an operation' },
  ESTOPPING: { status: 503, exit: EXIT_RUNTIME, doc: 'the switch is shutting down' },
  EDOCKER: { status: 503, exit: EXIT_RUNTIME, doc: 'the Docker engine is unreachable or refused an operation' },
  EUNREACHABLE: { status: 503, exit: EXIT_RUNTIME, doc: 'the CLI cannot reach the switch (no socket, nobody listening, connection lost)' },
  ETIMEOUT: { status: 504, exit: EXIT_RUNTIME, doc: 'something did not answer or get ready in time' },
  EPERMISSION: { status: 500, exit: EXIT_RUNTIME, doc: 'the kernel or a socket refused: run as root' },
  ESYSTEM: { status: 500, exit: EXIT_RUNTIME, doc: 'a system command (ip, sysctl) or system call failed; the message quotes it' },
  ELAB_COMMAND: { status: 500, exit: EXIT_RUNTIME, doc: 'a system command a lab runs (ip, sysctl) failed' },
  ELAB_AGENT: { status: 500, exit: EXIT_RUNTIME, doc: 'the lab agent did not start or did not get ready in time' },
  ETUN: { status: 500, exit: EXIT_RUNTIME, doc: 'a TUN device operation failed (closed, polling)' },
  ENATIVE: { status: 500, exit: EXIT_RUNTIME, doc: 'the native binding cannot be found or loaded (run npm install)' },
  EPROTOCOL: { status: 502, exit: EXIT_RUNTIME, doc: 'the other side (agent, engine) sent something malformed' },
  EFAILED: { status: 500, exit: EXIT_RUNTIME, doc: 'a command ran but reports failures (bench errors, demo flows that disagree)' },
  EINTERNAL: { status: 500, exit: EXIT_RUNTIME, doc: 'a broken invariant inside tunswitch (a bug); the API logs it under a request id' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

/** The root: every error tunswitch means to throw. */
export class TunswitchError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TunswitchError';
    this.code = code;
  }
}

/** A broken invariant (a bug): code EINTERNAL. Use it for asserts, never for bad input. */
export class InternalError extends TunswitchError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('EINTERNAL', message, options);
    this.name = 'InternalError';
  }
}

/** True when `code` is one of ERRORS. */
export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.prototype.hasOwnProperty.call(ERRORS, code);
}

/** True when `e` is a TunswitchError (with the given code, if one is passed). */
export function isTunswitchError(e: unknown, code?: ErrorCode): e is TunswitchError {
  return e instanceof TunswitchError && (code === undefined || e.code === code);
}

/** HTTP status for a code; unknown codes are 500. */
export function statusForCode(code: string): number {
  return isErrorCode(code) ? ERRORS[code].status : 500;
}

/** CLI exit code for a code: 2 usage, 1 everything else (unknown codes included). */
export function exitCodeForCode(code: string): number {
  return isErrorCode(code) ? ERRORS[code].exit : EXIT_RUNTIME;
}

/** The docs table (markdown): code, HTTP status, exit code, meaning; in the table's order. */
export function errorCodeTable(): string {
  const lines = ['| code | HTTP | exit | meaning |', '|---|---|---|---|'];
  for (const [code, s] of Object.entries(ERRORS) as [ErrorCode, ErrorSpec][]) lines.push(`| \`${code}\` | ${s.status} | ${s.exit} | ${s.doc} |`);
  return lines.join('\n') + '\n';
}

/** A command line usage error (a bad flag value or combination): code EUSAGE, exit 2. */
export class UsageError extends TunswitchError {
  constructor(message: string) {
    super('EUSAGE', message);
    this.name = 'UsageError';
  }
}
