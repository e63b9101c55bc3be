/**
 * Errors in the user's words. The API names request fields (`body.netns: ...`) and passes on
 * what `ip` said; the CLI says which flag or which thing on the machine is meant, and adds
 * "did you mean" for names it can list (endpoints, policies).
 */
import { ApiError, type ApiClient } from '../api/client.js';
import { didYouMean } from './suggest.js';

function kebab(s: string): string {
  return s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** Known messages of the switch or of `ip`, rewritten; each rule is [pattern, replacement]. */
const REWRITES: readonly [RegExp, string | ((...m: string[]) => string)][] = [
  [/^body: needs netns or pid$/, 'give the network namespace with --netns NAME or --pid PID'],
  [
    /^(?:internal error: )?(?:netns: )?ip link set dev \S+ netns (\S+) name (\S+): RTNETLINK answers: File exists$/,
    (_m, ns, ifname) => `the network namespace (${/^\d+$/.test(ns as string) ? `of pid ${ns}` : ns}) already has a device named ${ifname}; tunswitch names the endpoint's device ${ifname}: delete it there ("ip link del ${ifname}") or use another namespace`,
  ],
  [/^(?:internal error: )?(?:netns: )?.*RTNETLINK answers: Operation not permitted$/, 'the kernel refused (Operation not permitted): run as root'],
  // body.labels.app: ... → --label app: ... ; body.ipv4: ... → --ipv4: ...
  [/\bbody\.labels\.([^\s:]+)/g, (_m, k) => `--label ${k}`],
  [/\bbody\.([A-Za-z0-9]+)\b/g, (_m, f) => `--${kebab(f as string)}`],
  [/^body: /, ''],
];

/** `msg` with API field paths and known system messages put in the user's words. */
export function userWords(msg: string): string {
  let s = msg;
  for (const [re, rep] of REWRITES) s = s.replace(re, rep as (substring: string, ...args: unknown[]) => string);
  return s;
}

/**
 * For an "endpoint/policy not found" error, the names the switch knows, as a "did you mean"
 * suffix; '' otherwise or when the switch does not answer.
 */
export async function suggestionFor(e: unknown, client: () => ApiClient): Promise<string> {
  if (!(e instanceof ApiError)) return '';
  const m = /"([^"]+)"/.exec(e.message);
  if (m === null) return '';
  const typed = m[1] as string;
  try {
    if (e.code === 'EENDPOINT_NOT_FOUND') {
      const eps = await client().get<{ name: string }[]>('/v1/endpoint');
      return didYouMean(typed, eps.map((x) => x.name));
    }
    if (e.code === 'EPOLICY_NOT_FOUND') {
      const ps = await client().get<{ name: string; namespace?: string }[]>('/v1/policy');
      return didYouMean(typed, ps.flatMap((p) => (p.namespace ? [p.name, `${p.namespace}/${p.name}`] : [p.name])));
    }
  } catch {
    return '';
  }
  return '';
}
