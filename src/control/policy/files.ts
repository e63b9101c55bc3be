/** Finding the policy files behind the paths a user gives (files or folders). */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { TunswitchError } from '../errors.js';

const POLICY_EXT = /\.(ya?ml|json)$/i;

/**
 * Expands folders into their policy files (.yaml, .yml, .json; recursively, sorted); files are
 * kept as given. Used by `policy import/validate` and by `run` for the config's `policies:`.
 * A folder with no policy file is an error unless `emptyFolderIsError` is false.
 */
export async function expandPolicyPaths(paths: readonly string[], opts: { emptyFolderIsError?: boolean } = {}): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    const ents = await readdir(dir, { withFileTypes: true });
    ents.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of ents) {
      const p = join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (POLICY_EXT.test(e.name)) out.push(p);
    }
  };
  for (const p of paths) {
    let st;
    try {
      st = await stat(p);
    } catch (e) {
      throw new TunswitchError('EBAD_REQUEST', `${p}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file or folder' : (e as Error).message}`);
    }
    if (st.isDirectory()) {
      const before = out.length;
      await walk(p);
      if (out.length === before && opts.emptyFolderIsError !== false) throw new TunswitchError('EBAD_REQUEST', `${p}: no .yaml, .yml or .json files in this folder`);
    } else {
      out.push(p);
    }
  }
  return out;
}
