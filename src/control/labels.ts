/**
 * Labels: the vocabulary identities and policies are written in.
 *
 * A label is (source, key, value). The text form is `source:key=value`:
 *   `k8s:app=web`      source k8s, key app, value web
 *   `app=web`          no source: `unspec` on an endpoint label, "any source" in a selector
 *   `reserved:host`    source reserved, key host, empty value
 *   `cidr:10.0.0.0/8`  source cidr, the key is the prefix (IPv6 keys keep their colons)
 * The source is the text before the first ':' when that ':' comes before any '='.
 * Only the sources below are accepted, so a typo such as `k8:app` is an error rather than a
 * silently different label.
 */
import { TunswitchError } from './errors.js';

export const LABEL_SOURCES = ['container', 'k8s', 'reserved', 'cidr', 'unspec', 'any'] as const;
export type LabelSource = (typeof LABEL_SOURCES)[number];

export interface Label {
  readonly source: LabelSource;
  readonly key: string;
  readonly value: string;
}

const SOURCE_SET: ReadonlySet<string> = new Set(LABEL_SOURCES);

export function isLabelSource(s: string): s is LabelSource {
  return SOURCE_SET.has(s);
}

/** Returns null when `key` is acceptable, or the reason it is not. */
export function labelKeyProblem(key: string): string | null {
  if (key.length === 0) return 'is empty';
  if (key.length > 317) return 'is longer than 317 characters';
  // ';' separates labels in the canonical form and '=' separates key from value.
  if (/[\s;=,]/.test(key)) return 'contains whitespace, ";", "," or "="';
  return null;
}

/** Returns null when `value` is acceptable, or the reason it is not. */
export function labelValueProblem(value: string): string | null {
  if (value.length > 255) return 'is longer than 255 characters';
  if (/[\s;,]/.test(value)) return 'contains whitespace, ";" or ","';
  return null;
}

/** Splits an optional `source:` prefix off a key (`k8s:app` -> k8s, app). */
export function splitSource(text: string, defaultSource: LabelSource): { source: LabelSource; rest: string } {
  const colon = text.indexOf(':');
  const eq = text.indexOf('=');
  if (colon < 0 || (eq >= 0 && eq < colon)) return { source: defaultSource, rest: text };
  const src = text.slice(0, colon);
  if (!isLabelSource(src)) {
    throw new TunswitchError('ELABEL_INVALID', `label "${text}": unknown source "${src}" (want one of ${LABEL_SOURCES.join(', ')})`);
  }
  return { source: src, rest: text.slice(colon + 1) };
}

export function makeLabel(source: LabelSource, key: string, value = ''): Label {
  const kp = labelKeyProblem(key);
  if (kp !== null) throw new TunswitchError('ELABEL_INVALID', `label key "${key}" ${kp}`);
  const vp = labelValueProblem(value);
  if (vp !== null) throw new TunswitchError('ELABEL_INVALID', `label "${key}" value "${value}" ${vp}`);
  return { source, key, value };
}

/** Parses `[source:]key[=value]`. Without a source the label gets `defaultSource` (unspec). */
export function parseLabel(text: string, defaultSource: LabelSource = 'unspec'): Label {
  const { source, rest } = splitSource(text.trim(), defaultSource);
  const eq = rest.indexOf('=');
  const key = eq < 0 ? rest : rest.slice(0, eq);
  const value = eq < 0 ? '' : rest.slice(eq + 1);
  return makeLabel(source, key, value);
}

/** The text form; `unspec` labels print without a source so `app=web` round-trips. */
export function formatLabel(l: Label): string {
  const head = l.source === 'unspec' ? l.key : `${l.source}:${l.key}`;
  return l.value === '' ? head : `${head}=${l.value}`;
}

function compareLabels(a: Label, b: Label): number {
  if (a.source !== b.source) return a.source < b.source ? -1 : 1;
  if (a.key !== b.key) return a.key < b.key ? -1 : 1;
  return 0;
}

/**
 * An immutable set of labels, at most one per (source, key), sorted by source then key.
 * `canonical` is the sorted text forms joined by ';' and is the identity of the set: two
 * sets with the same labels have the same canonical string.
 */
export class LabelSet {
  readonly labels: readonly Label[];
  readonly canonical: string;

  private constructor(sorted: Label[]) {
    this.labels = Object.freeze(sorted);
    this.canonical = sorted.map(formatLabel).join(';');
  }

  static readonly EMPTY = new LabelSet([]);

  /** Builds a set from labels or their text forms. Two values for one (source, key) is an error. */
  static from(items: Iterable<Label | string>, defaultSource: LabelSource = 'unspec'): LabelSet {
    const out: Label[] = [];
    for (const it of items) out.push(typeof it === 'string' ? parseLabel(it, defaultSource) : makeLabel(it.source, it.key, it.value));
    out.sort(compareLabels);
    for (let i = 1; i < out.length; i++) {
      const a = out[i - 1] as Label;
      const b = out[i] as Label;
      if (compareLabels(a, b) === 0) {
        if (a.value !== b.value) {
          throw new TunswitchError('ELABEL_INVALID', `label "${a.source}:${a.key}" is given twice with different values ("${a.value}", "${b.value}")`);
        }
        out.splice(i, 1);
        i--;
      }
    }
    return new LabelSet(out);
  }

  /** Parses the canonical form (or any ';'-separated list of labels). */
  static parse(text: string): LabelSet {
    const parts = text.split(';').map((s) => s.trim()).filter((s) => s.length > 0);
    return LabelSet.from(parts);
  }

  /** Builds from a `{key: value}` map with one source, as Kubernetes labels come. */
  static fromMap(map: Readonly<Record<string, string>>, source: LabelSource): LabelSet {
    return LabelSet.from(Object.entries(map).map(([k, v]) => makeLabel(source, k, v)));
  }

  get size(): number {
    return this.labels.length;
  }

  /** True when a label with this key exists; `source` 'any' (default) matches every source. */
  has(key: string, source: LabelSource = 'any'): boolean {
    for (const l of this.labels) if (l.key === key && (source === 'any' || l.source === source)) return true;
    return false;
  }

  /** Values of the labels with this key (from any source when `source` is 'any'). */
  values(key: string, source: LabelSource = 'any'): string[] {
    const out: string[] = [];
    for (const l of this.labels) if (l.key === key && (source === 'any' || l.source === source)) out.push(l.value);
    return out;
  }

  hasSource(source: LabelSource): boolean {
    for (const l of this.labels) if (l.source === source) return true;
    return false;
  }

  equals(o: LabelSet): boolean {
    return this.canonical === o.canonical;
  }

  toStrings(): string[] {
    return this.labels.map(formatLabel);
  }

  toString(): string {
    return this.canonical;
  }
}

/**
 * The security-relevant label rule (which labels make up an identity).
 *
 * Kept: every `reserved:` and `cidr:` label, and every other label except the ones below,
 * which change per pod, per rollout or per node and would give each replica its own
 * identity. Dropped (keys, any source):
 *   - keys under `io.kubernetes.` except `io.kubernetes.pod.namespace`
 *   - keys under `kubernetes.io/` or `k8s.io/`, or with a `*.kubernetes.io/` or `*.k8s.io/`
 *     prefix, except `app.kubernetes.io/*` (the recommended app labels stay)
 *   - `pod-template-hash`, `pod-template-generation`, `controller-revision-hash`,
 *     `controller-uid`, `etcd_node`, and keys starting with `annotation.`
 * Kept explicitly: `io.kubernetes.pod.namespace`, `io.cilium.k8s.namespace.labels.*`,
 * `io.cilium.k8s.policy.*`, `app.kubernetes.io/*`.
 * This follows the spirit of Cilium's default label filter; it is written for tunswitch.
 */
export function isSecurityRelevant(l: Label): boolean {
  if (l.source === 'reserved' || l.source === 'cidr') return true;
  const k = l.key;
  if (k === 'io.kubernetes.pod.namespace') return true;
  if (k.startsWith('io.cilium.k8s.namespace.labels.') || k.startsWith('io.cilium.k8s.policy.')) return true;
  if (k.startsWith('app.kubernetes.io/')) return true;
  if (k.startsWith('io.kubernetes.')) return false;
  const slash = k.indexOf('/');
  if (slash > 0) {
    const prefix = k.slice(0, slash);
    if (prefix === 'kubernetes.io' || prefix === 'k8s.io' || prefix.endsWith('.kubernetes.io') || prefix.endsWith('.k8s.io')) return false;
  }
  if (k === 'pod-template-hash' || k === 'pod-template-generation' || k === 'controller-revision-hash' || k === 'controller-uid' || k === 'etcd_node') return false;
  if (k.startsWith('annotation.')) return false;
  return true;
}

/** The security-relevant subset of `set` (see isSecurityRelevant). */
export function securityLabels(set: LabelSet): LabelSet {
  const kept = set.labels.filter(isSecurityRelevant);
  return kept.length === set.labels.length ? set : LabelSet.from(kept);
}
