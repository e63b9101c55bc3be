/**
 * `policy trace`: the verdict for a flow without sending traffic. When both ends are
 * endpoints (or the destination is an address), the published tables are read exactly as a
 * shard worker reads them, so the answer is the datapath's answer; an end given only by
 * labels uses the identity those labels have (or would have), and the tables of the
 * endpoints involved.
 */
import { COOKIE_ALLOW_LOCALHOST, M_CONFIG_FLAGS, M_POLICY_REVISION, type TableSet } from '../tables/tableset.js';
import { POLICY_MATCH_NAMES } from '../tables/policy.js';
import { DIR_EGRESS, DIR_INGRESS } from '../proto/direction.js';
import { NO_INDEX } from '../tables/events.js';
import { dropReasonText } from '../datapath/drop.js';
import { PolicyDecision } from '../datapath/policy-decision.js';


export interface TraceEnd {
  name: string;
  identity: number;
  labels: string[];
  ep: number; // -1: not a local endpoint
}

export interface TraceStep {
  direction: 'EGRESS' | 'INGRESS';
  endpoint: string;
  enforced: boolean;
  result: 'ALLOWED' | 'DENIED' | 'AUDIT' | 'NOT ENFORCED';
  match: string;
  rule: unknown;
  reason?: string;
}

export interface TraceResult {
  source: TraceEnd;
  destination: TraceEnd;
  protocol: string;
  port: number;
  verdict: 'ALLOWED' | 'DENIED';
  /** The policy revision of the tables traced (the one `status` shows and workers enforce). */
  revision: number;
  drop_reason?: number;
  drop_reason_desc?: string;
  steps: TraceStep[];
  notes: string[];
  /** When an end was given by labels: every identity pair traced (selection by subset). */
  considered?: { source: string; source_identity: number; destination: string; destination_identity: number; verdict: 'ALLOWED' | 'DENIED' }[];
}

/** The table reader slot the control thread uses for traces (shard workers use 0..n-1). */
export const CONTROL_READER_SLOT = 63;

export function traceFlow(
  tables: TableSet,
  src: TraceEnd,
  dst: TraceEnd,
  proto: number,
  port: number,
  protoName: string,
  ruleName: (cookie: number) => unknown,
  notes: string[],
): TraceResult {
  const steps: TraceStep[] = [];
  let verdict: 'ALLOWED' | 'DENIED' = 'ALLOWED';
  let dropCode = 0;
  let revision = 0;
  const side = tables.control.enter(CONTROL_READER_SLOT);
  try {
    tables.useSide(side);
    revision = tables.meta[M_POLICY_REVISION] as number;
    const decision = new PolicyDecision(tables);
    const cfg = tables.meta[M_CONFIG_FLAGS] as number;
    const check = (ep: number, dir: number, remote: number, who: string): void => {
      const dirName = dir === DIR_EGRESS ? 'EGRESS' : 'INGRESS';
      const v = decision.decide(ep, dir, remote, proto, port, cfg);
      if (decision.enforced === 0) {
        steps.push({ direction: dirName, endpoint: who, enforced: false, result: 'NOT ENFORCED', match: 'none', rule: null, reason: 'no policy selects this endpoint in this direction' });
        return;
      }
      const match = POLICY_MATCH_NAMES[decision.match] ?? 'none';
      const rule = decision.cookie === NO_INDEX ? null : ruleName(decision.cookie);
      if (decision.cookie === COOKIE_ALLOW_LOCALHOST) {
        steps.push({ direction: dirName, endpoint: who, enforced: true, result: 'ALLOWED', match, rule, reason: 'allow-localhost: the host may reach local endpoints' });
        return;
      }
      if (v === 1 && decision.audited === 0) {
        steps.push({ direction: dirName, endpoint: who, enforced: true, result: 'ALLOWED', match, rule });
        return;
      }
      const reason = decision.lookup === -1 ? 'a deny rule matches' : 'no rule allows it and the endpoint is default-deny in this direction';
      if (v === 1) {
        steps.push({ direction: dirName, endpoint: who, enforced: true, result: 'AUDIT', match, rule, reason: `${reason} (audit mode: allowed and reported)` });
        return;
      }
      steps.push({ direction: dirName, endpoint: who, enforced: true, result: 'DENIED', match, rule, reason });
      if (verdict === 'ALLOWED') {
        verdict = 'DENIED';
        dropCode = -v;
      }
    };
    if (src.ep >= 0) check(src.ep, DIR_EGRESS, dst.identity, src.name);
    else notes.push(`source ${src.name} is not a local endpoint: no egress policy applies`);
    if (dst.ep >= 0) check(dst.ep, DIR_INGRESS, src.identity, dst.name);
    else notes.push(`destination ${dst.name} is not a local endpoint: no ingress policy applies`);
  } finally {
    tables.control.leave(CONTROL_READER_SLOT);
  }
  const out: TraceResult = { source: src, destination: dst, protocol: protoName, port, verdict, revision, steps, notes };
  if (dropCode !== 0) {
    out.drop_reason = dropCode;
    out.drop_reason_desc = dropReasonText(dropCode);
  }
  return out;
}

