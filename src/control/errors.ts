/**
 * The control plane's errors are the one root in src/proto/errors.ts (codes, HTTP statuses,
 * exit codes); this module re-exports it so control-plane files keep a short import.
 */
export { ERRORS, InternalError, TunswitchError, errorCodeTable, exitCodeForCode, isErrorCode, isTunswitchError, statusForCode, type ErrorCode } from '../proto/errors.js';
