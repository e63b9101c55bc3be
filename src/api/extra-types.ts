/**
 * Wire details of the REST API that src/api/types.ts (the ControlApi contract) leaves open.
 * Shared by the server (src/api/server.ts), the client (src/api/client.ts) and the CLI.
 */

/** Where `tunswitch run` listens and where the CLI looks by default. */
export const DEFAULT_API_SOCKET = '/run/tunswitch/tunswitch.sock';

/** The environment variable that overrides DEFAULT_API_SOCKET for the CLI. */
export const API_SOCKET_ENV = 'TUNSWITCH_SOCKET';

/** Largest request body the server reads; a bigger one gets 413. */
export const MAX_API_BODY_BYTES = 8 * 1024 * 1024;

/** Body of every non-2xx JSON response. `code` is a stable code from src/control/errors.ts. */
export interface ApiErrorBody {
  error: { code: string; message: string };
}

/** Body of `POST /v1/policy/validate` (and, with allowEmpty, a one-file `PUT /v1/policy`). */
export interface PolicyTextRequest {
  text: string;
  /** Named in error messages; defaults to "request". */
  fileName?: string;
  /** PUT only: accept a text with no policies (otherwise EPOLICY_INVALID). */
  allowEmpty?: boolean;
}

/** Body of `PUT /v1/policy`: every file is imported or none, in one policy revision. */
export interface PolicyImportRequest {
  files: { text: string; fileName?: string }[];
  /** Accept files with no policies (otherwise EPOLICY_INVALID). */
  allowEmpty?: boolean;
}
