/**
 * Link impairments of an endpoint, as text (`delay: 20ms`, `loss: 1%`, `rate: 100mbit`) and as
 * numbers: the one parser behind the CLI flags, the API body, the lab file's `link:` block and
 * Docker's `tunswitch.link.*` labels. Each caller names its fields its own way (`--rate`,
 * `body.rate`, `nodes.a.link.rate`, `label tunswitch.link.rate`) through `field`.
 *
 * Semantics (netem's, applied by src/runtime/impair.ts after the port's egress queue):
 *   delay, jitter   every packet waits delay ± jitter (uniform: delay + U(-jitter, jitter);
 *                   normal: delay + jitter * N(0,1), cut at ±3 jitter), never below 0; with
 *                   jitter, packets leave in the order of their send times, so they reorder
 *   loss            random: each packet is lost with this probability; gemodel: the
 *                   Gilbert-Elliott chain (p: good→bad, r: bad→good, loss `bad` in the bad
 *                   state, `good` in the good state)
 *   duplicate       a packet is sent twice with this probability
 *   reorder         a packet skips the delay with this probability (needs a delay)
 *   rate            bits per second the link serializes (earliest departure time): the
 *                   backlog waits in the CoDel queue, not in the delay line
 *   limit           bytes the delay line of the port may hold; beyond, drops (reason 238)
 *   seed            the random stream (loss, duplicate, reorder, jitter) is reproducible
 *
 * Leaf module: imports nothing.
 */

/** The text form (API body, lab file, `link show -o json`). Absent: off. */
export interface LinkSpec {
  delay?: string;
  jitter?: string;
  distribution?: 'uniform' | 'normal';
  loss?: string;
  lossModel?: string;
  duplicate?: string;
  reorder?: string;
  rate?: string;
  limit?: string;
  seed?: number;
}

export const LINK_SPEC_KEYS: readonly (keyof LinkSpec)[] = ['delay', 'jitter', 'distribution', 'loss', 'lossModel', 'duplicate', 'reorder', 'rate', 'limit', 'seed'];

/** Gilbert-Elliott parameters, probabilities 0..1. */
export interface GeModel {
  p: number;
  r: number;
  bad: number;
  good: number;
}

/** The numeric form the control thread writes for the workers. */
export interface LinkParams {
  delayMs: number;
  jitterMs: number;
  distribution: 'uniform' | 'normal';
  /** Random loss probability (0..1); 0 when `ge` is set. */
  loss: number;
  ge: GeModel | null;
  duplicate: number;
  reorder: number;
  /** Bits per second; 0 = no rate limit. */
  rateBps: number;
  limitBytes: number;
  /** uint32 */
  seed: number;
}

/** Delay-line bytes per port when `limit` is not given. */
export const LINK_DEFAULT_LIMIT_BYTES = 4 << 20;
export const LINK_MAX_DELAY_MS = 60_000;
/** 10 kbit: a 64 KiB GSO packet then takes under a minute, which the EDT clock's range allows. */
export const LINK_MIN_RATE_BPS = 10_000;
export const LINK_MAX_RATE_BPS = 1e12;

/** Thrown by parseLinkSpec; `field` is the caller's name of the bad input. */
export class LinkSpecError extends Error {
  constructor(
    readonly field: string,
    readonly problem: string,
  ) {
    super(`${field}: ${problem}`);
    this.name = 'LinkSpecError';
  }
}

const DUR_UNIT_MS: Readonly<Record<string, number>> = { us: 0.001, ms: 1, s: 1000 };
const RATE_UNIT: Readonly<Record<string, number>> = { bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9, tbit: 1e12 };
const SIZE_UNIT: Readonly<Record<string, number>> = { '': 1, b: 1, kib: 1024, mib: 1 << 20, gib: 1 << 30, kb: 1000, mb: 1e6, gb: 1e9 };

function show(v: unknown): string {
  return typeof v === 'string' ? JSON.stringify(v) : String(v);
}

/** "20ms", "1.5s", "250us" -> ms, or null. */
export function linkDurationMs(v: unknown): number | null {
  if (typeof v !== 'string') return null;
  const m = /^([0-9]+(?:\.[0-9]+)?)(us|ms|s)$/.exec(v.trim());
  return m ? Number(m[1]) * (DUR_UNIT_MS[m[2] as string] as number) : null;
}

/** "1%", "0.5%" -> 0.01, 0.005, or null (0..100%). */
export function linkPercent(v: unknown): number | null {
  if (typeof v !== 'string') return null;
  const m = /^([0-9]+(?:\.[0-9]+)?)%$/.exec(v.trim());
  if (!m) return null;
  const x = Number(m[1]);
  return x <= 100 ? x / 100 : null;
}

/** "100mbit", "1gbit", "500kbit", "64000bit" -> bits per second, or null. */
export function linkRateBps(v: unknown): number | null {
  if (typeof v !== 'string') return null;
  const m = /^([0-9]+(?:\.[0-9]+)?)(bit|kbit|mbit|gbit|tbit)$/.exec(v.trim().toLowerCase());
  return m ? Number(m[1]) * (RATE_UNIT[m[2] as string] as number) : null;
}

function linkBytes(v: unknown): number | null {
  if (typeof v !== 'string') return null;
  const m = /^([0-9]+)\s*(b|kib|mib|gib|kb|mb|gb)?$/.exec(v.trim().toLowerCase());
  return m ? Number(m[1]) * (SIZE_UNIT[m[2] ?? ''] as number) : null;
}

/** Gilbert-Elliott text: "gemodel:p=1%,r=30%[,bad=100%][,good=0%]". */
function parseGe(v: string, bad: (msg: string) => never): GeModel {
  const m = /^gemodel:(.*)$/.exec(v.trim());
  if (!m) bad(`${show(v)} is not a loss model (random, or gemodel:p=1%,r=30%[,bad=100%][,good=0%])`);
  const ge: GeModel = { p: -1, r: -1, bad: 1, good: 0 };
  for (const part of (m[1] as string).split(',')) {
    const kv = /^(p|r|bad|good)=(.*)$/.exec(part.trim());
    if (!kv) bad(`${show(part)} is not one of p=, r=, bad=, good= (e.g. gemodel:p=1%,r=30%)`);
    const x = linkPercent(kv[2]);
    if (x === null) bad(`${kv[1]}: ${show(kv[2])} is not a percentage (e.g. 1%, 30%)`);
    ge[kv[1] as keyof GeModel] = x;
  }
  if (ge.p < 0) bad('gemodel needs p= (the chance to go from the good state to the bad one)');
  if (ge.r < 0) bad('gemodel needs r= (the chance to go from the bad state back to the good one)');
  if (ge.p === 0 && ge.r === 0) bad('p and r are both 0%: the chain never moves');
  return ge;
}

/**
 * Checks a LinkSpec (unknown input) and returns its numbers. `field(k)` names key k in
 * errors. `randomSeed` is used when the spec has no seed (pass a fixed one in tests).
 */
export function parseLinkSpec(raw: unknown, field: (k: string) => string, randomSeed: () => number): LinkParams {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new LinkSpecError(field(''), `must be a mapping of ${LINK_SPEC_KEYS.join(', ')}`);
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!(LINK_SPEC_KEYS as readonly string[]).includes(k)) throw new LinkSpecError(field(k), `unknown field (known: ${LINK_SPEC_KEYS.join(', ')})`);
  }
  function fail(k: string, msg: string): never {
    throw new LinkSpecError(field(k), msg);
  }
  const dur = (k: 'delay' | 'jitter'): number => {
    if (o[k] === undefined) return 0;
    const ms = linkDurationMs(o[k]);
    if (ms === null) fail(k, `${show(o[k])} is not a duration (e.g. 20ms, 1.5s, 250us)`);
    if (ms > LINK_MAX_DELAY_MS) fail(k, `${show(o[k])} is longer than 60s`);
    return ms;
  };
  const pct = (k: 'loss' | 'duplicate' | 'reorder'): number => {
    if (o[k] === undefined) return 0;
    const x = linkPercent(o[k]);
    if (x === null) fail(k, `${show(o[k])} is not a percentage from 0% to 100% (e.g. 1%, 0.5%)`);
    return x;
  };
  const p: LinkParams = {
    delayMs: dur('delay'),
    jitterMs: dur('jitter'),
    distribution: 'uniform',
    loss: pct('loss'),
    ge: null,
    duplicate: pct('duplicate'),
    reorder: pct('reorder'),
    rateBps: 0,
    limitBytes: LINK_DEFAULT_LIMIT_BYTES,
    seed: 0,
  };
  if (o.distribution !== undefined) {
    if (o.distribution !== 'uniform' && o.distribution !== 'normal') fail('distribution', `${show(o.distribution)} is not a distribution (uniform or normal)`);
    p.distribution = o.distribution;
  }
  if (o.lossModel !== undefined && o.lossModel !== 'random') {
    if (typeof o.lossModel !== 'string') fail('lossModel', `${show(o.lossModel)} is not a loss model (random, or gemodel:p=1%,r=30%)`);
    p.ge = parseGe(o.lossModel, (msg) => fail('lossModel', msg));
    if (o.loss !== undefined) fail('loss', 'cannot be combined with a gemodel loss model (its p, r, bad, good give the loss)');
  }
  if (o.rate !== undefined) {
    const r = linkRateBps(o.rate);
    if (r === null) fail('rate', `${show(o.rate)} is not a rate (e.g. 100mbit, 1gbit, 500kbit)`);
    if (r < LINK_MIN_RATE_BPS || r > LINK_MAX_RATE_BPS) fail('rate', `${show(o.rate)} must be from 10kbit to 1000gbit`);
    p.rateBps = r;
  }
  if (o.limit !== undefined) {
    const b = linkBytes(o.limit);
    if (b === null || b < 2048 || b > 1 << 30) fail('limit', `${show(o.limit)} must be a size from 2KiB to 1GiB (e.g. 512KiB, 4MiB)`);
    p.limitBytes = b;
  }
  if (o.seed !== undefined) {
    const s = typeof o.seed === 'string' && /^[0-9]+$/.test(o.seed) ? Number(o.seed) : o.seed;
    if (typeof s !== 'number' || !Number.isInteger(s) || s < 0 || s > 0xffffffff) fail('seed', `${show(o.seed)} must be an integer from 0 to 4294967295`);
    p.seed = s;
  } else p.seed = randomSeed() >>> 0;
  if (p.reorder > 0 && p.delayMs === 0) fail('reorder', 'needs a delay (a reordered packet is one that skips the delay)');
  if (p.jitterMs > 0 && p.delayMs === 0) fail('jitter', 'needs a delay (jitter varies the delay)');
  return p;
}

/** True when the params change nothing (every impairment off). */
export function linkIsNoop(p: LinkParams): boolean {
  return p.delayMs === 0 && p.loss === 0 && p.ge === null && p.duplicate === 0 && p.reorder === 0 && p.rateBps === 0;
}

function fmtNum(x: number): string {
  return String(Number(x.toPrecision(6)));
}

function fmtMs(ms: number): string {
  if (ms >= 1000 && ms % 1000 === 0) return `${ms / 1000}s`;
  if (ms < 1 && ms > 0) return `${fmtNum(ms * 1000)}us`;
  return `${fmtNum(ms)}ms`;
}

function fmtPct(x: number): string {
  return `${fmtNum(x * 100)}%`;
}

export function formatRate(bps: number): string {
  for (const [u, m] of [['tbit', 1e12], ['gbit', 1e9], ['mbit', 1e6], ['kbit', 1e3]] as const) {
    if (bps >= m) return `${fmtNum(bps / m)}${u}`;
  }
  return `${fmtNum(bps)}bit`;
}

function fmtBytes(b: number): string {
  if (b % (1 << 20) === 0) return `${b / (1 << 20)}MiB`;
  if (b % 1024 === 0) return `${b / 1024}KiB`;
  return `${b}`;
}

/** The text form of params (only what is on; limit and seed always), parseable again. */
export function formatLinkSpec(p: LinkParams): LinkSpec {
  const s: LinkSpec = {};
  if (p.delayMs > 0) s.delay = fmtMs(p.delayMs);
  if (p.jitterMs > 0) {
    s.jitter = fmtMs(p.jitterMs);
    s.distribution = p.distribution;
  }
  if (p.ge !== null) s.lossModel = `gemodel:p=${fmtPct(p.ge.p)},r=${fmtPct(p.ge.r)},bad=${fmtPct(p.ge.bad)},good=${fmtPct(p.ge.good)}`;
  else if (p.loss > 0) s.loss = fmtPct(p.loss);
  if (p.duplicate > 0) s.duplicate = fmtPct(p.duplicate);
  if (p.reorder > 0) s.reorder = fmtPct(p.reorder);
  if (p.rateBps > 0) s.rate = formatRate(p.rateBps);
  s.limit = fmtBytes(p.limitBytes);
  s.seed = p.seed;
  return s;
}

/** Docker label prefix: `tunswitch.link.delay=20ms`, `tunswitch.link.loss-model=gemodel:p=1%,r=30%`. */
export const LINK_LABEL_PREFIX = 'tunswitch.link.';

/**
 * The LinkSpec in a container's labels (keys after the prefix in kebab case:
 * delay, jitter, distribution, loss, loss-model, duplicate, reorder, rate, limit, seed),
 * or null when there is none. Unknown keys are reported by parseLinkSpec.
 */
export function linkSpecFromLabels(labels: Record<string, string>): Record<string, string> | null {
  let out: Record<string, string> | null = null;
  for (const [k, v] of Object.entries(labels)) {
    if (!k.startsWith(LINK_LABEL_PREFIX)) continue;
    const key = k.slice(LINK_LABEL_PREFIX.length).replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
    out ??= {};
    out[key] = v;
  }
  return out;
}

/** Names a LinkSpec key as its label (lossModel -> tunswitch.link.loss-model). */
export function linkLabelName(key: string): string {
  return LINK_LABEL_PREFIX + key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/**
 * A container's link impairments from its `tunswitch.link.*` labels, or null when it has
 * none; a bad label throws LinkSpecError naming it (`label tunswitch.link.rate`).
 */
export function linkParamsFromLabels(labels: Record<string, string>, randomSeed: () => number): LinkParams | null {
  const spec = linkSpecFromLabels(labels);
  if (spec === null) return null;
  const lp = parseLinkSpec(spec, (k) => `label ${linkLabelName(k)}`, randomSeed);
  return linkIsNoop(lp) ? null : lp;
}
