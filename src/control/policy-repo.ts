/**
 * The policy repository: the loaded policies with the text each came from, imported and
 * deleted as a whole.
 *
 * An import is atomic and costs one revision, however many files it carries:
 *   1. parse every file (a parse error in any file throws before anything changes);
 *   2. refuse an empty import unless allowEmpty (again before any change);
 *   3. compile once (PolicyCompiler.upsertPolicies: one diff for the whole set);
 *   4. publish once (one policy revision, the number returned); compiled entries that do not
 *      fit the policy table are refused before anything is written (ETABLE_FULL), and the
 *      compiler puts the policies it had back, so nothing changes;
 *   5. persist once, then tell the cluster hooks (kvstore mode) file by file.
 */
import { TunswitchError, isTunswitchError } from './errors.js';
import { parsePolicyFile } from './policy/parse.js';
import type { Policy } from './policy/types.js';
import type { LabelSet } from './labels.js';
import type { PolicySource } from './state-store.js';
import type { AgentContext } from './agent-context.js';
import { COOKIE_ALLOW_LOCALHOST } from '../tables/tableset.js';
import type { PolicyFileText, PolicyImportResult, PolicyInfo, RuleRef, SelectorInfo } from '../api/types.js';

export class PolicyRepository {
  /** Policy key -> the file it came from (persisted; re-parsed on restore). */
  private readonly sources = new Map<string, PolicySource>();
  /** Policy key -> the policy revision that published it. */
  private readonly revisions = new Map<string, number>();

  constructor(
    private readonly ctx: AgentContext,
    /** The labels of a local endpoint's identity (for defaultDenyBy), or undefined. */
    private readonly endpointLabels: (ep: number) => LabelSet | undefined,
  ) {}

  validate(text: string, fileName: string): { policies: string[] } {
    if (typeof text !== 'string') throw new TunswitchError('EBAD_REQUEST', 'body.text: must be a string');
    if (typeof fileName !== 'string') throw new TunswitchError('EBAD_REQUEST', 'body.fileName: must be a string');
    return { policies: parsePolicyFile(text, fileName).map((p) => p.name) };
  }

  /** Imports every file or none (see the top of this file); returns the one new revision. */
  import(files: readonly PolicyFileText[], allowEmpty = false): PolicyImportResult {
    if (!Array.isArray(files) || files.length === 0) throw new TunswitchError('EBAD_REQUEST', 'body.files: must be a non-empty list of {text, fileName}');
    const parsed = files.map((f, i) => {
      if (typeof f?.text !== 'string') throw new TunswitchError('EBAD_REQUEST', `body.files[${i}].text: must be a string`);
      if (typeof f.fileName !== 'string') throw new TunswitchError('EBAD_REQUEST', `body.files[${i}].fileName: must be a string`);
      const pols = parsePolicyFile(f.text, f.fileName); // throws before any change
      if (pols.length === 0 && !allowEmpty) throw new TunswitchError('EPOLICY_INVALID', `${f.fileName}: contains no policies (allow an empty file with --allow-empty, or allowEmpty: true in the API)`);
      return { file: f, pols };
    });
    const all = parsed.flatMap((x) => x.pols);
    // Changes pending from others (identities) get their own publish, so a refused import
    // below cannot drop them.
    const pending = this.ctx.compiler.sync();
    if (pending.changed) this.ctx.publish(pending);
    let revision: number;
    try {
      revision = all.length === 0 ? this.ctx.publish() : this.ctx.compiler.upsertPoliciesWith(all, (diff) => this.ctx.publish(diff));
    } catch (e) {
      if (isTunswitchError(e, 'ETABLE_FULL')) throw new TunswitchError('ETABLE_FULL', `policy import refused, nothing changed: ${e.message}`);
      throw e;
    }
    for (const { file, pols } of parsed) {
      for (const p of pols) {
        this.sources.set(p.key, { file: file.fileName, text: file.text });
        this.revisions.set(p.key, revision);
      }
    }
    this.ctx.persist();
    for (const { file, pols } of parsed) this.ctx.hooks().policiesImported?.(file.text, file.fileName, pols.map((p) => ({ key: p.key, name: p.name })));
    return { revision, policies: all.map((p) => p.name), files: parsed.map(({ file, pols }) => ({ fileName: file.fileName, policies: pols.map((p) => p.name) })) };
  }

  private byName(name: string): Policy {
    const all = this.ctx.compiler.policyList();
    const hit = all.find((p) => p.key === name) ?? all.find((p) => p.name === name);
    if (!hit) throw new TunswitchError('EPOLICY_NOT_FOUND', `policy "${name}" not found`);
    return hit;
  }

  list(): PolicyInfo[] {
    return this.ctx.compiler.policyList().map((p) => {
      const out: PolicyInfo = { name: p.name, kind: p.kind, rules: p.rules.length, source: p.file, revision: this.revisions.get(p.key) ?? 0 };
      if (p.namespace) out.namespace = p.namespace;
      return out;
    });
  }

  get(name: string): unknown {
    const p = this.byName(name);
    return { name: p.name, namespace: p.namespace, kind: p.kind, file: p.file, rules: p.rules.length, source: this.sources.get(p.key)?.text ?? null };
  }

  delete(name: string): PolicyImportResult {
    const p = this.byName(name);
    return this.deleteKeys([p.key], [p.name]);
  }

  deleteAll(): PolicyImportResult {
    const ps = this.ctx.compiler.policyList();
    return this.deleteKeys(
      ps.map((p) => p.key),
      ps.map((p) => p.name),
    );
  }

  /** Deletes policies by key: one compile, one revision, one save. */
  private deleteKeys(keys: string[], names: string[]): PolicyImportResult {
    const revision = this.ctx.publish(keys.length > 0 ? this.ctx.compiler.deletePolicies(keys) : undefined);
    for (const k of keys) {
      this.sources.delete(k);
      this.revisions.delete(k);
    }
    this.ctx.persist();
    this.ctx.hooks().policiesDeleted?.(keys);
    return { revision, policies: names };
  }

  /** Selectors in use, then each named port in use with the numbers it resolves to per identity. */
  selectors(): SelectorInfo[] {
    const c = this.ctx.compiler;
    const out: SelectorInfo[] = c.selectorList().map((s) => ({ selector: s.selector, identities: s.identities }));
    for (const n of c.namedPortList()) {
      out.push({ selector: `port ${n.name}/${n.protocol}`, identities: n.identities.map((x) => x.identity), ports: Object.fromEntries(n.identities.map((x) => [String(x.identity), x.ports])) });
    }
    return out;
  }

  /** The rule behind a verdict's cookie (events and trace name it). */
  ruleName(cookie: number): RuleRef | null {
    if (cookie === COOKIE_ALLOW_LOCALHOST) return { name: '<allow-localhost: the host may reach local endpoints>', rule_index: -1, direction: 'ingress', deny: false };
    const r = this.ctx.compiler.rule(cookie);
    if (!r) return null;
    const out: RuleRef = { name: r.policyName, rule_index: r.ruleIndex, direction: r.direction ?? 'any', deny: r.deny };
    if (r.namespace) out.namespace = r.namespace;
    return out;
  }

  /** Names of the policies whose rules put endpoint `ep` into default-deny for `dir`. */
  defaultDenyBy(ep: number, dir: 'ingress' | 'egress'): string[] {
    const labels = this.endpointLabels(ep);
    if (!labels) return [];
    const out = new Set<string>();
    for (const p of this.ctx.compiler.policyList()) {
      for (const r of p.rules) {
        const has = dir === 'ingress' ? r.hasIngress && r.defaultDenyIngress : r.hasEgress && r.defaultDenyEgress;
        if (has && r.subject.matches(labels)) out.add(p.namespace ? `${p.namespace}/${p.name}` : p.name);
      }
    }
    return [...out];
  }

  // ---------------------------------------------------------------- state

  /** What the state directory keeps: policy key -> source. */
  snapshot(): Record<string, PolicySource> {
    return Object.fromEntries(this.sources);
  }

  /** Loads restored policies (already parsed and checked): one compile, one revision. */
  restore(policies: readonly [string, PolicySource, Policy][]): void {
    if (policies.length === 0) return;
    const revision = this.ctx.publish(this.ctx.compiler.upsertPolicies(policies.map(([, , p]) => p)));
    for (const [key, src] of policies) {
      this.sources.set(key, src);
      this.revisions.set(key, revision);
    }
  }
}
