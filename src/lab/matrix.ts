/**
 * The connectivity matrix: a list of flows between lab nodes, each with the verdict the
 * policies should give, tried for real from inside the namespaces (in parallel, short
 * timeouts) and explained with the agent's own events:
 *   - a flow that did not get through is explained by the DROPPED event the datapath emitted
 *     for it (drop reason and, for policy drops, why no rule allowed it);
 *   - a flow that got through is explained by the policy-verdict events that allowed it.
 */
import { ApiClient } from '../api/client.js';
import type { FlowEvent } from '../api/types.js';
import { formatTable } from '../text/table.js';
import { pingProbe, tcpProbe, type ProbeResult } from './probe.js';
import type { LabState } from './state.js';
import { sleep } from './sys.js';

export type Verdict = 'allowed' | 'denied';

export interface FlowSpec {
  from: string; // node name
  to: string; // node name, or "outside"
  proto: 'tcp' | 'icmp';
  port?: number; // tcp only
  family?: 4 | 6; // default 4
  expect: Verdict;
}

/** The three-tier example's matrix (examples/three-tier). */
export const THREE_TIER_FLOWS: readonly FlowSpec[] = [
  { from: 'frontend', to: 'backend', proto: 'tcp', port: 8080, expect: 'allowed' },
  { from: 'frontend', to: 'backend', proto: 'tcp', port: 8080, family: 6, expect: 'allowed' },
  { from: 'backend', to: 'db', proto: 'tcp', port: 5432, expect: 'allowed' },
  { from: 'frontend', to: 'outside', proto: 'tcp', port: 80, expect: 'allowed' },
  { from: 'frontend', to: 'db', proto: 'tcp', port: 5432, expect: 'denied' },
  { from: 'frontend', to: 'db', proto: 'tcp', port: 22, expect: 'denied' },
  { from: 'backend', to: 'db', proto: 'tcp', port: 22, expect: 'denied' },
  { from: 'backend', to: 'outside', proto: 'tcp', port: 80, expect: 'denied' },
  { from: 'db', to: 'backend', proto: 'tcp', port: 8080, expect: 'denied' },
  { from: 'db', to: 'outside', proto: 'tcp', port: 80, expect: 'denied' },
  { from: 'db', to: 'frontend', proto: 'icmp', expect: 'denied' },
  { from: 'frontend', to: 'backend', proto: 'icmp', expect: 'denied' },
];

/** Servers the three-tier matrix needs: node -> ports. */
export const THREE_TIER_SERVERS: Readonly<Record<string, readonly number[]>> = {
  backend: [8080],
  db: [5432, 22],
  outside: [80],
};

export interface ResolvedFlow extends FlowSpec {
  fromNetns: string;
  srcIp: string;
  dstIp: string;
}

export interface MatrixRow extends ResolvedFlow {
  got: Verdict;
  probe: ProbeResult;
  reason: string;
  ok: boolean;
}

/** What the matrix needs of a lab: its name (namespaces are <name>-<node>), nodes and outside host. */
export type MatrixLab = Pick<LabState, 'name' | 'nodes' | 'outside'>;

/** Addresses of a lab's nodes (and outside host) by family. */
export function labAddress(s: MatrixLab, node: string, family: 4 | 6): string | undefined {
  if (node === 'outside' && s.outside && !s.nodes.some((n) => n.name === 'outside')) return family === 4 ? s.outside.addr : undefined;
  const n = s.nodes.find((x) => x.name === node);
  return family === 4 ? n?.ipv4 : n?.ipv6;
}

/** Fills in namespaces and addresses; drops flows the lab cannot express (no IPv6, no outside). */
export function resolveFlows(s: MatrixLab, flows: readonly FlowSpec[]): ResolvedFlow[] {
  const out: ResolvedFlow[] = [];
  for (const f of flows) {
    const fam = f.family ?? 4;
    const srcIp = labAddress(s, f.from, fam);
    const dstIp = labAddress(s, f.to, fam);
    if (srcIp === undefined || dstIp === undefined) continue;
    out.push({ ...f, fromNetns: `${s.name}-${f.from}`, srcIp, dstIp });
  }
  return out;
}

function sameIp(a: string, b: string): boolean {
  return a.toLowerCase() === b.toLowerCase();
}

/** Whether an event belongs to the flow's forward direction. */
export function eventMatches(e: FlowEvent, f: ResolvedFlow): boolean {
  if (!sameIp(e.IP.source, f.srcIp) || !sameIp(e.IP.destination, f.dstIp)) return false;
  const proto = e.l4?.protocol ?? '';
  if (f.proto === 'icmp') return proto.startsWith('ICMP');
  return proto === 'TCP' && e.l4?.destination_port === f.port;
}

/** Why a flow was dropped, from the newest matching DROPPED event; null if there is none. */
export function dropReason(events: readonly FlowEvent[], f: ResolvedFlow): string | null {
  for (let i = events.length - 1; i >= 0; i--) {
    const e = events[i] as FlowEvent;
    if (e.verdict !== 'DROPPED' || !eventMatches(e, f)) continue;
    const where = e.traffic_direction === 'EGRESS' ? `${e.source.endpoint ?? f.from} egress` : `${e.destination.endpoint ?? f.to} ingress`;
    let text = `${e.drop_reason_desc ?? `drop reason ${e.drop_reason ?? '?'}`} at ${where}`;
    if (e.policy && 'none' in e.policy) text += `: ${e.policy.none}`;
    else if (e.policy && 'name' in e.policy) text += `: policy ${e.policy.name}${e.policy.deny ? ' (deny rule)' : ''}`;
    return text;
  }
  return null;
}

/** Which policies allowed a flow, from FORWARDED policy-verdict events; null if none logged. */
export function allowReason(events: readonly FlowEvent[], f: ResolvedFlow): string | null {
  const seen = new Set<string>();
  for (const e of events) {
    if (e.event_type !== 'policy-verdict' || e.verdict === 'DROPPED' || !eventMatches(e, f)) continue;
    // The rule's own direction names the side that allowed it (the event's direction is where it was seen).
    if (e.policy && 'name' in e.policy) seen.add(`${e.policy.name} (${(e.policy.direction || e.traffic_direction).toLowerCase()})`);
  }
  return seen.size === 0 ? null : `allowed by ${[...seen].join(', ')}`;
}

/** Decides a row from the probe result and the events. */
export function judge(f: ResolvedFlow, probe: ProbeResult, events: readonly FlowEvent[]): MatrixRow {
  const got: Verdict = probe.ok ? 'allowed' : 'denied';
  let reason: string;
  if (probe.ok) reason = allowReason(events, f) ?? 'allowed (no policy-verdict event: direction not enforced)';
  else reason = dropReason(events, f) ?? `${probe.detail} (no drop event)`;
  return { ...f, got, probe, reason, ok: got === f.expect };
}

export function portText(f: FlowSpec): string {
  return f.proto === 'icmp' ? 'icmp' : `${f.port}/tcp`;
}

export function toText(f: FlowSpec): string {
  return (f.family ?? 4) === 6 ? `${f.to} (IPv6)` : f.to;
}

export function formatMatrix(rows: readonly MatrixRow[]): string {
  return formatTable(
    ['FROM', 'TO', 'PORT', 'EXPECTED', 'GOT', 'REASON'],
    rows.map((r) => [r.from, toText(r), portText(r), r.expect, r.ok ? r.got : `${r.got} (MISMATCH)`, r.reason]),
  );
}

export interface MatrixOptions {
  /** Per flow; default 1500 ms. */
  timeoutMs?: number;
  /** Switches whose events explain the rows (a multi-host lab: every host's); default the lab's socket. */
  eventSockets?: readonly string[];
}

/** Probes every flow at once, then reads the agent's events and explains each outcome. */
export async function runMatrix(s: MatrixLab & { socket: string }, flows: readonly FlowSpec[], opts: MatrixOptions = {}): Promise<MatrixRow[]> {
  const timeoutMs = opts.timeoutMs ?? 1500;
  const resolved = resolveFlows(s, flows);
  const probes = await Promise.all(
    resolved.map((f) => (f.proto === 'icmp' ? pingProbe(f.fromNetns, f.dstIp, timeoutMs) : tcpProbe(f.fromNetns, f.dstIp, f.port as number, timeoutMs))),
  );
  // The control thread drains the shards' event rings every 100 ms.
  await sleep(400);
  const events: FlowEvent[] = [];
  for (const sock of opts.eventSockets ?? [s.socket]) {
    try {
      events.push(...(await new ApiClient(sock, { timeoutMs: 5000 }).get<FlowEvent[]>('/v1/events?last=500')));
    } catch {
      // a switch that does not answer explains nothing; the probes still decide
    }
  }
  return resolved.map((f, i) => judge(f, probes[i] as ProbeResult, events));
}
