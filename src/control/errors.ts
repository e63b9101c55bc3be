/**
 * Control-plane errors. Every error the control plane, the API or the CLI reports carries a
 * stable `code` from the one table below, so scripts and API clients can branch on the code
 * while the message stays free to improve. Messages name the exact input path, e.g.
 * `web.yaml: policy "allow-web" spec.ingress[0].toPorts[0].ports[0].port: "70000" is not a port (1-65535)`.
 *
 * Programmer errors (a broken invariant, a double release) also use this class, with code
 * EINTERNAL, so they are loud and recognisable.
 */

/** The stable error codes and what each one means. Add codes here, never inline. */
export const ERROR_CODES = {
  EPOLICY_INVALID: 'a policy file or document failed to parse or validate',
  EPOLICY_NOT_FOUND: 'no policy with that name (and namespace) is loaded',
  EENDPOINT_NOT_FOUND: 'no endpoint with that index or name exists',
  ENAMESPACE_NOT_FOUND: 'no namespace with that name exists',
  EENDPOINT_EXISTS: 'an endpoint with that index or name already exists',
  ECAPTURE_BUSY: 'every capture slot is taken (8 captures run at once)',
  EIDENTITY_NOT_FOUND: 'no identity with that number exists',
  ENETNS_NOT_FOUND: 'the network namespace (or process) an endpoint names does not exist',
  EIDENTITY_EXHAUSTED: 'the identity number space is used up',
  EIDENTITY_CONFLICT: 'the kvstore gave a number or labels that disagree with a live local identity',
  EKVSTORE: 'the kvstore (etcd) is unreachable or refused an operation',
  ELABEL_INVALID: 'a label or label selector is malformed',
  ECIDR_INVALID: 'an IP prefix is malformed',
  ECONFIG_INVALID: 'the agent configuration is invalid',
  ESTATE_INVALID: 'persisted state could not be restored',
  EBAD_REQUEST: 'an API or CLI request is malformed',
  ENOT_SUPPORTED: 'the request uses a feature tunswitch does not implement',
  EINTERNAL: 'a broken invariant inside tunswitch (a bug)',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class TunswitchError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TunswitchError';
    this.code = code;
  }
}

/** True when `e` is a TunswitchError (with the given code, if one is passed). */
export function isTunswitchError(e: unknown, code?: ErrorCode): e is TunswitchError {
  return e instanceof TunswitchError && (code === undefined || e.code === code);
}
