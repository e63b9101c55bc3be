/**
 * The control plane's door to the one prefix type (src/proto/prefix.ts): the same functions,
 * plus `parsePrefix`, which throws the control plane's ECIDR_INVALID error.
 */
import { prefixOrReason, type Prefix } from '../proto/prefix.js';
import { TunswitchError } from './errors.js';

export { formatV4, formatV6, formatAddr, makePrefix, prefixContains, tryParsePrefix, type Prefix } from '../proto/prefix.js';

export function parsePrefix(text: string): Prefix {
  const p = prefixOrReason(text);
  if (typeof p === 'string') throw new TunswitchError('ECIDR_INVALID', `"${text}" is not an IP prefix (${p})`);
  return p;
}
