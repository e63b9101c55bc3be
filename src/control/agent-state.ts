/**
 * The agent's state directory: what is saved (config, identity numbers, endpoints, policy
 * sources) through the StateStore (src/control/state-store.ts: temp file, fsync, rename,
 * directory fsync, schema check), and what a start restores.
 *
 * loadState validates the whole file (StateStore.read) and parses every policy entry before
 * anything is applied. An entry that cannot be restored (its text no longer parses, or does
 * not define the policy its key names) stops the start with ESTATE_INVALID naming the file,
 * the entry and the reason, unless opts.forcePartial: then each such entry is logged and
 * skipped (and the next save drops it).
 */
import { TunswitchError } from './errors.js';
import { StateStore, type PolicySource, type StateFile } from './state-store.js';
import { parsePolicyFile } from './policy/parse.js';
import type { Policy } from './policy/types.js';

/** How restore() treats entries it cannot restore. */
export interface RestoreOptions {
  /** Skip (and log) entries that cannot be restored instead of refusing to start. */
  forcePartial?: boolean;
  log?: (msg: string) => void;
  /**
   * Cluster mode: the kvstore numbers identities, and they are already synced into the
   * allocator when restore runs, so the saved numbering is not loaded (it could only repeat
   * or contradict the cluster's).
   */
  identitiesFromCluster?: boolean;
}

/** A checked state file, its policies parsed, ready to apply. */
export interface RestorePlan {
  file: string;
  state: StateFile;
  policies: [string, PolicySource, Policy][];
}

/** The store of a state directory, or null without one (nothing is saved). */
export function openState(stateDir: string | undefined): StateStore | null {
  return stateDir ? new StateStore(stateDir) : null;
}

export function loadState(store: StateStore, opts: RestoreOptions): RestorePlan | null {
  const state = store.read();
  if (!state) return null;
  const file = store.file;
  const problems: string[] = [];
  const policies: [string, PolicySource, Policy][] = [];
  const parsed = new Map<string, Policy[] | Error>();
  for (const [key, src] of Object.entries(state.policies)) {
    const cacheKey = `${src.file}\u0000${src.text}`;
    let pols = parsed.get(cacheKey);
    if (!pols) {
      try {
        pols = parsePolicyFile(src.text, src.file);
      } catch (e) {
        pols = e as Error;
      }
      parsed.set(cacheKey, pols);
    }
    const at = `policies[${JSON.stringify(key)}]`;
    if (pols instanceof Error) {
      problems.push(`${at}: its text no longer parses: ${pols.message}`);
      continue;
    }
    const p = pols.find((x) => x.key === key);
    if (!p) {
      problems.push(`${at}: its text (from ${src.file}) defines ${pols.map((x) => JSON.stringify(x.key)).join(', ') || 'no policy'}, not this one`);
      continue;
    }
    policies.push([key, src, p]);
  }
  if (problems.length > 0) {
    if (!opts.forcePartial) {
      const more = problems.length > 1 ? ` (and ${problems.length - 1} more entries; --force-partial-restore skips them)` : ' (--force-partial-restore skips it)';
      throw new TunswitchError('ESTATE_INVALID', `${file}: ${problems[0] as string}${more}`);
    }
    for (const p of problems) opts.log?.(`${file}: skipped ${p}`);
  }
  return { file, state, policies };
}
