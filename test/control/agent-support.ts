/** An agent over in-memory tables and ports, for control-plane tests that need no root. */
import { Agent } from '../../src/control/agent.js';
import { checkIpcacheEntries, checkTraceRequest } from '../../src/api/validate.js';
import type { TraceResult } from '../../src/control/trace.js';
import { MemPorts } from '../helpers/mem-ports.js';
import { TableSet, TableSetWriter } from '../../src/tables/tableset.js';
import { tryParsePrefix, type Prefix } from '../../src/control/cidr.js';

export function makeTestAgent(opts: { policyCapacity?: number; stateDir?: string } = {}): { agent: Agent; ports: MemPorts; tables: TableSet } {
  const ts = TableSet.create({ ipcache: { tbl8Groups: 16, leaves: 1024, v6Capacity: 256 }, policyCapacity: opts.policyCapacity ?? 1 << 12, maxEndpoints: 64 });
  const ports = new MemPorts();
  const agent = new Agent(
    {
      name: 't',
      pool4: tryParsePrefix('10.42.0.0/24', false) as Prefix,
      pool6: tryParsePrefix('fd00:42::/64', false) as Prefix,
      maxEndpoints: 64,
      workers: 1,
      offload: false,
      config: { audit: false, enforcement: 'default' },
      version: 'test',
      ...(opts.stateDir !== undefined ? { stateDir: opts.stateDir } : {}),
    },
    new TableSetWriter(ts),
    ports,
    null,
  );
  return { agent, ports, tables: ts };
}

/** Reads the published policy table as a worker would. */
export function publishedVerdict(ts: TableSet, ep: number, dir: number, identity: number, proto: number, port: number): number {
  const side = ts.control.enter(7);
  ts.useSide(side);
  const v = ts.policy.lookup(ep, dir, identity, proto, port);
  ts.control.leave(7);
  return v;
}

/** `policy trace` with a raw request body, checked as the API server checks it. */
export function traceOf(agent: Agent, body: unknown): TraceResult {
  return agent.trace(checkTraceRequest(body));
}

/** `PUT /v1/ipcache` with a raw request body, checked as the API server checks it. */
export function upsertOf(agent: Agent, body: unknown): { added: number } {
  return agent.upsertIpcache(checkIpcacheEntries(body));
}
