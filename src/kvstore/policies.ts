/**
 * Policies in etcd (tunswitch/state/policies/v1/<policy key>), so that a policy imported on
 * any node applies on every node. The value keeps the source text of the file that defined
 * the policy; each node parses and compiles it itself. Keys have no lease: policies outlive
 * the node that imported them, as CiliumNetworkPolicies outlive the agent that saw them.
 *
 * The importing node has applied the policy already; it skips its own writes when they come
 * back through the watch (value.origin is the node name). The first list applies everything.
 */
import type { KvSession } from './session.js';
import { PrefixWatch, type KvEvent } from './watch.js';
import { POLICY_PREFIX, policyKey, type PolicyValue } from './keys.js';

export interface PolicySink {
  importText(text: string, file: string): void;
  deleteKey(key: string): void;
}

export class KvPolicies {
  private readonly watch: PrefixWatch;
  /** Policy key -> value text last seen (put by anyone). */
  private readonly seen = new Map<string, string>();
  errors: string[] = [];

  constructor(
    private readonly s: KvSession,
    private readonly sink: PolicySink,
  ) {
    this.watch = new PrefixWatch(s, POLICY_PREFIX, 'policies', (evs, initial) => this.onBatch(evs, initial));
  }

  start(): Promise<void> {
    return this.watch.start();
  }

  stop(): Promise<void> {
    return this.watch.stop();
  }

  /** Stores the policies of one imported file (one key per policy, same text). */
  async publish(text: string, file: string, policies: { key: string; name: string }[]): Promise<void> {
    const c = this.s.client;
    for (const p of policies) {
      const v: PolicyValue = { name: p.name, file, text, origin: this.s.node };
      await this.s.op('policy-put', () => c.put(policyKey(p.key)).value(JSON.stringify(v)).exec());
    }
  }

  async remove(keys: string[]): Promise<void> {
    const c = this.s.client;
    for (const k of keys) await this.s.op('policy-delete', () => c.delete().key(policyKey(k)).exec());
  }

  private onBatch(evs: KvEvent[], initial: boolean): void {
    const listed = initial ? new Set<string>() : null;
    for (const ev of evs) {
      const key = ev.key.slice(POLICY_PREFIX.length);
      if (ev.type === 'delete') {
        if (!this.seen.delete(key)) continue;
        this.guard(`delete ${key}`, () => this.sink.deleteKey(key));
        continue;
      }
      listed?.add(key);
      if (this.seen.get(key) === ev.value) continue;
      this.seen.set(key, ev.value);
      let v: Partial<PolicyValue>;
      try {
        v = JSON.parse(ev.value) as Partial<PolicyValue>;
      } catch {
        this.errors.push(`${ev.key}: not JSON`);
        continue;
      }
      if (typeof v.text !== 'string' || typeof v.file !== 'string') continue;
      if (!initial && v.origin === this.s.node) continue; // applied when it was imported here
      this.guard(`import ${key}`, () => this.sink.importText(v.text as string, v.file as string));
    }
    if (listed) {
      for (const key of [...this.seen.keys()]) {
        if (!listed.has(key)) {
          this.seen.delete(key);
          this.guard(`delete ${key}`, () => this.sink.deleteKey(key));
        }
      }
    }
  }

  private guard(what: string, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.errors.push(`policy ${what}: ${(e as Error).message}`);
      if (this.errors.length > 32) this.errors.shift();
    }
  }
}
