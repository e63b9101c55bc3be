/**
 * `policy trace`: resolves the two ends of a checked trace query (src/api/validate.ts) to
 * identities and endpoints, then runs traceFlow (src/control/trace.ts) over the published
 * tables for each identity pair. An end given by labels may stand for several identities;
 * up to MAX_TRACE_PAIRS pairs are traced and the first is the answer shown.
 */
import { TunswitchError } from './errors.js';
import { formatLabel, type LabelSet } from './labels.js';
import { tryParsePrefix } from './cidr.js';
import { parseLabels, type EndpointManager } from './endpoint-manager.js';
import type { AgentContext } from './agent-context.js';
import { traceFlow, type TraceEnd, type TraceResult } from './trace.js';
import type { IpcacheInfo, RuleRef, TraceEndQuery, TraceQuery } from '../api/types.js';

/** At most this many identity pairs are traced for ends given by labels. */
const MAX_TRACE_PAIRS = 64;

export class Tracer {
  constructor(
    private readonly ctx: AgentContext,
    private readonly endpoints: EndpointManager,
    private readonly ipcacheLookup: (ip: string) => IpcacheInfo | null,
    private readonly ruleName: (cookie: number) => RuleRef | null,
  ) {}

  trace(q: TraceQuery): TraceResult {
    const notes: string[] = [];
    const src = this.ends('src', q.src, notes);
    const dst = this.ends('dst', q.dst, notes);
    this.namedPortNotes(dst, q.proto, q.port, notes);
    return this.each(src, dst, q.proto, q.port, q.protoName, notes);
  }

  private identityLabels(id: number): string[] {
    const i = this.ctx.allocator.get(id);
    return i ? i.labels.labels.map(formatLabel) : [];
  }

  private end(side: 'src' | 'dst', e: TraceEndQuery, notes: string[]): TraceEnd {
    if (e.endpoint !== undefined) {
      const rec = this.endpoints.find(e.endpoint);
      return { name: rec.name, identity: rec.identity, labels: rec.labels.labels.map(formatLabel), ep: rec.id };
    }
    if (e.labels !== undefined) return this.labelEnds(parseLabels(e.labels, `body.${side}`), notes)[0] as TraceEnd;
    const ip = e.ip as string;
    const p = tryParsePrefix(ip, true);
    if (!p || (p.bits !== 32 && p.bits !== 128)) throw new TunswitchError('EBAD_REQUEST', `body.${side}.ip: ${JSON.stringify(ip)} is not an IP address`);
    const local = [...this.endpoints.records()].find((r) => r.ipv4 === ip || r.ipv6 === ip);
    if (local) return { name: local.name, identity: local.identity, labels: local.labels.labels.map(formatLabel), ep: local.id };
    const hit = this.ipcacheLookup(ip);
    if (!hit) notes.push(`${ip} is not in the ipcache: it is treated as world (identity 2)`);
    const id = hit ? hit.identity : 2;
    return { name: ip, identity: id, labels: this.identityLabels(id), ep: -1 };
  }

  /** An end given by labels may stand for several identities (selection by subset). */
  private ends(side: 'src' | 'dst', e: TraceEndQuery, notes: string[]): TraceEnd[] {
    const one = this.end(side, e, notes);
    if (e.labels === undefined) return [one];
    return this.labelEnds(parseLabels(e.labels, `body.${side}`), []);
  }

  /**
   * The identities whose labels include every label of `set` (as a selector selects them),
   * each with a local endpoint that has it when there is one. Without any, one end with
   * identity 0 (only rules that select every identity can match it).
   */
  private labelEnds(set: LabelSet, notes: string[]): TraceEnd[] {
    const out: TraceEnd[] = [];
    for (const id of this.ctx.allocator.list().sort((a, b) => a.id - b.id)) {
      if (id.kind !== 'workload' || !set.labels.every((l) => id.labels.values(l.key, l.source).includes(l.value))) continue;
      const local = [...this.endpoints.records()].find((r) => r.identity === id.id);
      out.push({ name: local ? local.name : id.labels.canonical, identity: id.id, labels: id.labels.labels.map(formatLabel), ep: local ? local.id : -1 });
    }
    if (out.length > 0) return out;
    notes.push(`no identity has the labels ${set.canonical}: only rules that select every identity can match it`);
    return [{ name: set.canonical, identity: 0, labels: set.labels.map(formatLabel), ep: -1 }];
  }

  /** Says which named ports in use the traced port is, on the destination identity (where names resolve). */
  private namedPortNotes(dsts: TraceEnd[], proto: number, port: number, notes: string[]): void {
    const protoName = proto === 6 ? 'TCP' : proto === 17 ? 'UDP' : proto === 132 ? 'SCTP' : '';
    for (const n of this.ctx.compiler.namedPortList()) {
      if (n.protocol !== 'ANY' && n.protocol !== protoName) continue;
      for (const d of dsts) {
        const hit = n.identities.find((x) => x.identity === d.identity);
        if (hit === undefined) notes.push(`named port "${n.name}" (${n.protocol}) is not declared by ${d.name}: rules using it do not match this flow`);
        else if (hit.ports.includes(port)) notes.push(`named port "${n.name}" (${n.protocol}) resolves to ${hit.ports.join(', ')} on ${d.name}: rules using it match port ${port}`);
        else notes.push(`named port "${n.name}" (${n.protocol}) resolves to ${hit.ports.join(', ')} on ${d.name}, not ${port}`);
      }
    }
  }

  /** Traces every (source, destination) pair considered; the first pair is the answer shown. */
  private each(srcs: TraceEnd[], dsts: TraceEnd[], proto: number, port: number, protoName: string, notes: string[]): TraceResult {
    const pairs: [TraceEnd, TraceEnd][] = [];
    for (const s of srcs) for (const d of dsts) if (pairs.length < MAX_TRACE_PAIRS) pairs.push([s, d]);
    if (srcs.length * dsts.length > MAX_TRACE_PAIRS) notes.push(`${srcs.length * dsts.length} identity pairs match the labels given; only the first ${MAX_TRACE_PAIRS} are traced`);
    const results = pairs.map(([s, d], i) => traceFlow(this.ctx.tables.tables, s, d, proto, port, protoName, (c) => this.ruleName(c), i === 0 ? notes : []));
    const first = results[0] as TraceResult;
    if (pairs.length === 1) return first;
    first.considered = results.map((r) => ({ source: r.source.name, source_identity: r.source.identity, destination: r.destination.name, destination_identity: r.destination.identity, verdict: r.verdict }));
    const denied = results.filter((r) => r.verdict === 'DENIED').length;
    notes.push(
      denied === 0 || denied === results.length
        ? `${results.length} identity pairs match the labels given; all are ${first.verdict}`
        : `${results.length} identity pairs match the labels given: ${results.length - denied} ALLOWED, ${denied} DENIED (see considered); the verdict shown is for the first`,
    );
    return first;
  }
}
