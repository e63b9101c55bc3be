/**
 * One enforcement point's policy decision: what the pipeline does for the egress of a sender
 * and the ingress of a receiver, and what `policy trace` reports without traffic. Keeping it in
 * one place means the trace gives exactly the datapath's answer.
 *
 * Precedence, in order:
 *   1. the direction is not enforced for the endpoint      -> allowed (enforced = 0)
 *   2. an allow entry matches                               -> allowed, its cookie and match type
 *   3. a deny entry matches                                 -> 181 POLICY_DENY
 *   4. no entry, ingress from reserved:host, allow-localhost -> allowed (Cilium's default)
 *   5. audit mode (per endpoint or agent-wide)              -> allowed, audited = 1
 *   6. otherwise                                            -> 133 POLICY
 * (The policy table's lookup already makes a deny win over any allow, see tables/policy.ts.)
 *
 * Hot path: one instance per pipeline, results in fields, nothing allocated.
 */
import { DROP_POLICY, DROP_POLICY_DENY } from './drop.js';
import { EP_AUDIT, EP_ENFORCE_EGRESS, EP_ENFORCE_INGRESS } from '../tables/endpoints.js';
import { POLICY_MATCH_L3_ONLY, POLICY_MATCH_NONE } from '../tables/policy.js';
import { DIR_INGRESS } from '../proto/direction.js';
import { ID_HOST } from '../proto/identity.js';
import { CFG_ALLOW_LOCALHOST, CFG_AUDIT, COOKIE_ALLOW_LOCALHOST, type TableSet } from '../tables/tableset.js';
import { NO_INDEX } from '../tables/events.js';

export class PolicyDecision {
  /** Rule cookie that decided (NO_INDEX: none). */
  cookie = NO_INDEX;
  /** POLICY_MATCH_* of the deciding entry. */
  match = POLICY_MATCH_NONE;
  /** 1 when a deny or a missing allow was let through by audit mode. */
  audited = 0;
  /** 1 when the direction is enforced for the endpoint. */
  enforced = 0;
  /** The table lookup's own answer: 1 allow, -1 deny, 0 no entry (before steps 4-6). */
  lookup = 0;

  constructor(readonly tables: TableSet) {}

  /**
   * Decides for endpoint `ep` in direction `dir` (0 ingress, 1 egress) against `remoteId`,
   * with the agent-wide config flags `cfg` (meta CONFIG_FLAGS of the side being read).
   * Returns 1 when allowed, else DROP_POLICY or DROP_POLICY_DENY.
   */
  decide(ep: number, dir: number, remoteId: number, proto: number, dport: number, cfg: number): number {
    this.cookie = NO_INDEX;
    this.match = POLICY_MATCH_NONE;
    this.audited = 0;
    this.enforced = 0;
    this.lookup = 0;
    const flags = this.tables.endpoints.flags(ep);
    // 1. not enforced
    if ((flags & (dir === DIR_INGRESS ? EP_ENFORCE_INGRESS : EP_ENFORCE_EGRESS)) === 0) return 1;
    this.enforced = 1;
    const pol = this.tables.policy;
    const v = pol.lookup(ep, dir, remoteId, proto, dport);
    this.lookup = v;
    if (v !== 0) {
      this.cookie = pol.outCookie;
      this.match = pol.outMatchType;
      // 2. allow
      if (v === 1) return 1;
    } else if (dir === DIR_INGRESS && remoteId === ID_HOST && (cfg & CFG_ALLOW_LOCALHOST) !== 0) {
      // 4. allow-localhost: the host reaches local endpoints unless a rule denies it
      this.cookie = COOKIE_ALLOW_LOCALHOST;
      this.match = POLICY_MATCH_L3_ONLY;
      return 1;
    }
    // 5. audit
    if ((flags & EP_AUDIT) !== 0 || (cfg & CFG_AUDIT) !== 0) {
      this.audited = 1;
      return 1;
    }
    // 3. deny, 6. no rule allows
    return v === -1 ? DROP_POLICY_DENY : DROP_POLICY;
  }
}
