/**
 * Kubernetes namespaces as objects. A namespace has a name and labels; every endpoint is in
 * exactly one (`default` unless it names another). From them the agent derives the labels
 * Cilium puts on a pod, which is what namespaced policies and namespaceSelectors match:
 *
 *   k8s:io.kubernetes.pod.namespace=<name>
 *   k8s:io.cilium.k8s.namespace.labels.<key>=<value>     for each label of the namespace
 *   k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=<name>
 *                                                         (Kubernetes sets this label on every
 *                                                          namespace; it cannot be changed)
 *
 * Endpoints written the old way, with those labels by hand, keep working: the namespace
 * label names the namespace, and a namespace not declared yet is created with the namespace
 * labels found on the endpoint. The derived labels always come from the namespace object.
 */
import { TunswitchError } from './errors.js';
import { LabelSet, labelKeyProblem, labelValueProblem, makeLabel, type Label } from './labels.js';
import { NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX } from './policy/types.js';

export const DEFAULT_NAMESPACE = 'default';
/** The label Kubernetes puts on every namespace, with the namespace's name as its value. */
export const METADATA_NAME_LABEL = 'kubernetes.io/metadata.name';

const NS_NAME_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export function namespaceNameProblem(name: unknown): string | null {
  if (typeof name !== 'string' || name.length > 63 || !NS_NAME_RE.test(name)) return `${JSON.stringify(name)} is not a namespace name (1-63 of a-z, 0-9 and "-")`;
  return null;
}

/** Checks `{key: value}` namespace labels; `where` names the field in errors. */
export function checkNamespaceLabels(v: unknown, where: string): Map<string, string> {
  const out = new Map<string, string>();
  if (v === undefined || v === null) return out;
  if (typeof v !== 'object' || Array.isArray(v)) throw new TunswitchError('EBAD_REQUEST', `${where}: must be a mapping of label key to value`);
  for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
    const kp = labelKeyProblem(k) ?? (k.includes(':') ? 'must not carry a source' : null);
    if (kp !== null) throw new TunswitchError('EBAD_REQUEST', `${where}.${k}: label key ${kp}`);
    if (k === METADATA_NAME_LABEL) throw new TunswitchError('EBAD_REQUEST', `${where}.${k}: is set by tunswitch to the namespace's name`);
    if (typeof val !== 'string') throw new TunswitchError('EBAD_REQUEST', `${where}.${k}: ${JSON.stringify(val)} must be a string`);
    const vp = labelValueProblem(val);
    if (vp !== null) throw new TunswitchError('EBAD_REQUEST', `${where}.${k}: value ${vp}`);
    out.set(k, val);
  }
  return out;
}

export interface NamespaceInfo {
  name: string;
  /** Every label, `kubernetes.io/metadata.name` included. */
  labels: Record<string, string>;
  endpoints: string[];
}

/** Is this label one the namespace derives (so not the endpoint's own)? */
export function isNamespaceDerived(l: Label): boolean {
  return l.key === NAMESPACE_LABEL || l.key.startsWith(NAMESPACE_LABELS_PREFIX);
}

export class Namespaces {
  /** name -> labels set by the user (metadata.name excluded: it is always derived). */
  private readonly byName = new Map<string, Map<string, string>>([[DEFAULT_NAMESPACE, new Map()]]);

  has(name: string): boolean {
    return this.byName.has(name);
  }

  names(): string[] {
    return [...this.byName.keys()].sort();
  }

  /** The namespace's labels, `kubernetes.io/metadata.name` included. */
  labels(name: string): Record<string, string> {
    const m = this.byName.get(name);
    if (m === undefined) throw new TunswitchError('ENAMESPACE_NOT_FOUND', `namespace "${name}" not found`);
    const out: Record<string, string> = {};
    for (const k of [...m.keys()].sort()) out[k] = m.get(k) as string;
    out[METADATA_NAME_LABEL] = name;
    return out;
  }

  /** Creates the namespace or replaces its labels. Returns whether anything changed. */
  set(name: string, labels: Map<string, string>): boolean {
    const p = namespaceNameProblem(name);
    if (p !== null) throw new TunswitchError('EBAD_REQUEST', `namespace: ${p}`);
    const old = this.byName.get(name);
    this.byName.set(name, new Map(labels));
    if (old === undefined) return true;
    return old.size !== labels.size || [...labels].some(([k, v]) => old.get(k) !== v);
  }

  /** Sets and removes labels of an existing namespace. Returns whether anything changed. */
  relabel(name: string, set: Map<string, string>, remove: readonly string[]): boolean {
    const old = this.byName.get(name);
    if (old === undefined) throw new TunswitchError('ENAMESPACE_NOT_FOUND', `namespace "${name}" not found`);
    const next = new Map(old);
    for (const k of remove) next.delete(k);
    for (const [k, v] of set) next.set(k, v);
    return this.set(name, next);
  }

  delete(name: string): void {
    if (name === DEFAULT_NAMESPACE) throw new TunswitchError('EBAD_REQUEST', `namespace "${DEFAULT_NAMESPACE}" cannot be deleted`);
    if (!this.byName.delete(name)) throw new TunswitchError('ENAMESPACE_NOT_FOUND', `namespace "${name}" not found`);
  }

  /**
   * Splits an endpoint's labels into its own labels and its namespace. `requested` is the
   * namespace the request names (if any); a hand-written namespace label must agree with it.
   * An undeclared namespace named by hand-written labels is created from them.
   */
  placeEndpoint(labels: LabelSet, requested: string | undefined, where: string): { own: LabelSet; namespace: string } {
    const byLabel = labels.values(NAMESPACE_LABEL);
    if (byLabel.length > 1) throw new TunswitchError('EBAD_REQUEST', `${where}.labels: ${NAMESPACE_LABEL} is given twice`);
    const fromLabel = byLabel[0];
    if (requested !== undefined && fromLabel !== undefined && fromLabel !== requested) {
      throw new TunswitchError('EBAD_REQUEST', `${where}.namespace: "${requested}" disagrees with the label ${NAMESPACE_LABEL}=${fromLabel}`);
    }
    const ns = requested ?? fromLabel ?? DEFAULT_NAMESPACE;
    const p = namespaceNameProblem(ns);
    if (p !== null) throw new TunswitchError('EBAD_REQUEST', `${where}.namespace: ${p}`);
    if (!this.byName.has(ns)) {
      if (fromLabel === undefined) throw new TunswitchError('ENAMESPACE_NOT_FOUND', `${where}.namespace: namespace "${ns}" not found (create it first: tunswitch namespace create ${ns})`);
      const hinted = new Map<string, string>();
      for (const l of labels.labels) {
        if (!l.key.startsWith(NAMESPACE_LABELS_PREFIX)) continue;
        const k = l.key.slice(NAMESPACE_LABELS_PREFIX.length);
        if (k !== METADATA_NAME_LABEL) hinted.set(k, l.value);
      }
      this.set(ns, hinted);
    }
    return { own: LabelSet.from(labels.labels.filter((l) => !isNamespaceDerived(l))), namespace: ns };
  }

  /** An endpoint's full label set: its own labels plus the ones its namespace gives it. */
  endpointLabels(own: LabelSet, namespace: string): LabelSet {
    const derived: Label[] = [makeLabel('k8s', NAMESPACE_LABEL, namespace)];
    for (const [k, v] of Object.entries(this.labels(namespace))) derived.push(makeLabel('k8s', NAMESPACE_LABELS_PREFIX + k, v));
    return LabelSet.from([...own.labels, ...derived]);
  }
}
