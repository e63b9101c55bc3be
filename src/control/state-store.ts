/**
 * The state directory: one JSON file, `state.json`, that lets a restart lose nothing
 * (endpoints, identity numbers, policy sources, agent settings).
 *
 * Writing (write()):
 *   1. the directory is created 0700, or chmod'ed to 0700 if it already exists with more;
 *   2. the state goes to `state.json.tmp` (created 0600, truncated), which is fsync'ed;
 *   3. rename over `state.json` (atomic on POSIX: a reader sees the old or the new file);
 *   4. fsync of the directory, so the rename itself survives a power cut.
 * A crash at any point leaves either the previous complete file or the new complete file.
 *
 * Reading (read()) validates the whole file before anything is applied: JSON, an object,
 * the schema version, every required key (a missing key is an error, never an empty set) and
 * the shape of every entry. Errors name the file and the entry:
 *   `/var/lib/tunswitch/lab/state.json: policies["default/web"].text: missing`.
 *
 * Schema versions: 1 is the current layout. A file without a `version` (written before the
 * field existed) is read as version 1. A later version is refused (downgrade protection).
 */
import { closeSync, chmodSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { TunswitchError } from './errors.js';
import type { AgentConfig, QueueSettings } from '../api/types.js';
import { LinkSpecError, parseLinkSpec, type LinkSpec } from '../runtime/link-spec.js';

export const STATE_SCHEMA_VERSION = 1;
export const STATE_FILE = 'state.json';

export interface StateEndpoint {
  id: number;
  name: string;
  labels: string[];
  ipv4?: string;
  ipv6?: string;
  netns?: string;
  pid?: number;
  defaultRoute: boolean;
  /** Offload asked for when the endpoint was added (absent: the switch's default). */
  offload?: boolean;
  /** Link impairments set through the API (null: cleared through the API; absent: never set). */
  link?: LinkSpec | null;
  /** Egress queue settings set through the API (the fields given; absent: never set). */
  queue?: Partial<QueueSettings>;
}

export interface PolicySource {
  file: string;
  text: string;
}

export interface StateFile {
  version: 1;
  config: AgentConfig;
  identities: unknown;
  endpoints: StateEndpoint[];
  /** policy key -> the file text it came from (re-parsed on restore). */
  policies: Record<string, PolicySource>;
}

const TOP_KEYS = ['version', 'config', 'identities', 'endpoints', 'policies'] as const;

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export class StateStore {
  readonly file: string;

  constructor(readonly dir: string) {
    this.file = join(dir, STATE_FILE);
  }

  private fail(entry: string, reason: string): never {
    throw new TunswitchError('ESTATE_INVALID', `${this.file}: ${entry}: ${reason}`);
  }

  /** Creates the directory 0700, or narrows an existing one to 0700. */
  ensureDir(): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    if ((statSync(this.dir).mode & 0o777) !== 0o700) chmodSync(this.dir, 0o700);
  }

  /** Writes the state durably (see the header). */
  write(state: StateFile): void {
    this.ensureDir();
    const tmp = `${this.file}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      // openSync's mode applies only to a new file: a leftover tmp keeps its mode otherwise
      chmodSync(tmp, 0o600);
      const buf = Buffer.from(JSON.stringify(state, null, 1));
      let off = 0;
      while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.file);
    const dfd = openSync(this.dir, 'r');
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
  }

  /** The validated state, or null when there is no state file yet. */
  read(): StateFile | null {
    if (!existsSync(this.file)) return null;
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (e) {
      return this.fail('(file)', `cannot read: ${(e as Error).message}`);
    }
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (e) {
      return this.fail('(file)', `not valid JSON: ${(e as Error).message}`);
    }
    return this.validate(doc);
  }

  /** Checks every key and entry of a parsed state file; throws ESTATE_INVALID naming the first bad one. */
  validate(doc: unknown): StateFile {
    if (!isObj(doc)) return this.fail('(top)', `must be an object, got ${doc === null ? 'null' : Array.isArray(doc) ? 'an array' : typeof doc}`);
    for (const k of Object.keys(doc)) {
      if (!(TOP_KEYS as readonly string[]).includes(k)) this.fail(k, `unknown key (known: ${TOP_KEYS.join(', ')})`);
    }
    const version = doc.version ?? 1; // files from before the version field are version 1
    if (version !== STATE_SCHEMA_VERSION) {
      this.fail('version', `${JSON.stringify(version)} is not a schema version this tunswitch reads (${STATE_SCHEMA_VERSION})`);
    }
    for (const k of ['config', 'identities', 'endpoints', 'policies']) {
      if (!(k in doc)) this.fail(k, 'missing (a state file lists every key, even when empty)');
    }
    if (!isObj(doc.config)) this.fail('config', 'must be an object');
    const cfg = doc.config;
    if (cfg.enforcement !== undefined && cfg.enforcement !== 'default' && cfg.enforcement !== 'always' && cfg.enforcement !== 'never') {
      this.fail('config.enforcement', `${JSON.stringify(cfg.enforcement)} must be one of default, always, never`);
    }
    if (cfg.audit !== undefined && typeof cfg.audit !== 'boolean') this.fail('config.audit', 'must be true or false');
    if (doc.identities === null || typeof doc.identities !== 'object') this.fail('identities', 'must be an object');
    if (!Array.isArray(doc.endpoints)) this.fail('endpoints', 'must be a list');
    const names = new Set<string>();
    doc.endpoints.forEach((e: unknown, i: number) => {
      const at = `endpoints[${i}]`;
      if (!isObj(e)) this.fail(at, 'must be an object');
      if (typeof e.name !== 'string' || e.name === '') this.fail(`${at}.name`, 'missing or not a string');
      const at2 = `endpoints[${i}] (${e.name})`;
      if (names.has(e.name)) this.fail(at2, 'a second endpoint of this name');
      names.add(e.name);
      if (!Number.isInteger(e.id) || (e.id as number) < 0) this.fail(`${at2}.id`, 'missing or not a non-negative integer');
      if (!Array.isArray(e.labels) || !e.labels.every((l) => typeof l === 'string')) this.fail(`${at2}.labels`, 'missing or not a list of strings');
      if (typeof e.defaultRoute !== 'boolean') this.fail(`${at2}.defaultRoute`, 'missing or not true/false');
      for (const k of ['ipv4', 'ipv6', 'netns'] as const) {
        if (e[k] !== undefined && typeof e[k] !== 'string') this.fail(`${at2}.${k}`, 'must be a string');
      }
      if (e.pid !== undefined && (!Number.isInteger(e.pid) || (e.pid as number) < 1)) this.fail(`${at2}.pid`, 'must be a positive integer');
      if (e.netns === undefined && e.pid === undefined) this.fail(at2, 'has neither netns nor pid');
      if (e.offload !== undefined && typeof e.offload !== 'boolean') this.fail(`${at2}.offload`, 'must be true or false');
      if (e.link !== undefined && e.link !== null) {
        try {
          parseLinkSpec(e.link, (k) => (k === '' ? `${at2}.link` : `${at2}.link.${k}`), () => 0);
        } catch (err) {
          if (!(err instanceof LinkSpecError)) throw err;
          this.fail(err.field, err.problem);
        }
      }
      if (e.queue !== undefined) {
        if (!isObj(e.queue)) this.fail(`${at2}.queue`, 'must be an object of limitBytes, targetMs, intervalMs');
        for (const [k, v] of Object.entries(e.queue)) {
          if (!['limitBytes', 'targetMs', 'intervalMs'].includes(k)) this.fail(`${at2}.queue.${k}`, 'unknown field (known: limitBytes, targetMs, intervalMs)');
          if (typeof v !== 'number' || !(v > 0)) this.fail(`${at2}.queue.${k}`, 'must be a positive number');
        }
      }
    });
    if (!isObj(doc.policies)) this.fail('policies', 'must be an object of policy key to source');
    for (const [key, src] of Object.entries(doc.policies)) {
      const at = `policies[${JSON.stringify(key)}]`;
      if (!isObj(src)) this.fail(at, 'must be an object with file and text');
      if (typeof src.file !== 'string') this.fail(`${at}.file`, 'missing or not a string');
      if (typeof src.text !== 'string') this.fail(`${at}.text`, 'missing or not a string');
    }
    return { ...(doc as unknown as StateFile), version: 1 };
  }
}
