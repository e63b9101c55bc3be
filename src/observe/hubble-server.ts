/**
 * Hubble's Observer gRPC API (GetFlows with filters and follow, ServerStatus) over the
 * switch's REST API, so Hubble's own clients read tunswitch flows:
 *
 *   tunswitch hubble serve --listen unix:///run/tunswitch/hubble.sock
 *   hubble observe --server unix:///run/tunswitch/hubble.sock -t drop
 *
 * It is a client of the switch (GET /v1/events, /v1/status), never on the packet path. The
 * service definitions are ours (proto/), with Cilium's names and numbers.
 *
 * GetFlows, as Hubble's server does it:
 *   1. the events the switch still holds, kept when one whitelist filter matches (or there is
 *      no whitelist) and no blacklist filter matches, and inside since/until;
 *   2. of those the last `number` (the first `number` with `first`); number 0 means all of
 *      them, except when following without `since`, where it means none (only new flows);
 *   3. with `follow`, every new matching event until the client cancels.
 */
import { fileURLToPath } from 'node:url';
import { existsSync, rmSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ApiClient } from '../api/client.js';
import type { FlowEvent, StatusInfo } from '../api/types.js';
import { parseFilters, type FilterOptions, type FlowPredicate } from './filter.js';
import { summaryOf } from './format.js';
import { eventTypeOfMessageType, getFlowsResponse, TCP_FLAG_NAMES, type Timestamp } from './hubble.js';
import { TunswitchError } from '../proto/errors.js';

/** proto/ at the repository root (dist/src/observe → ../../../proto). */
export const PROTO_DIR = fileURLToPath(new URL('../../../proto', import.meta.url));

/** Events read from the switch per request: the API's largest `last`. */
const HISTORY_LAST = 100_000;

export const PROTO_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: false,
  oneofs: true,
  includeDirs: [PROTO_DIR],
};

/** Loads our observer.proto (and flow.proto) as grpc-js service definitions. */
export function loadObserverProto(): grpc.GrpcObject {
  const def = protoLoader.loadSync('observer/observer.proto', PROTO_LOADER_OPTIONS);
  return grpc.loadPackageDefinition(def);
}

type Filter = Record<string, unknown>;

/** FlowFilter fields tunswitch cannot match (no L7, DNS, services, workloads): a request using them fails. */
const UNSUPPORTED_FIELDS = [
  'uuid',
  'source_fqdn',
  'destination_fqdn',
  'source_service',
  'destination_service',
  'source_workload',
  'destination_workload',
  'http_status_code',
  'dns_query',
  'http_method',
  'http_path',
  'trace_id',
] as const;

/** A FlowFilter field tunswitch cannot match (gRPC INVALID_ARGUMENT). */
export class UnsupportedFilterError extends TunswitchError {
  constructor(message: string) {
    super('ENOT_SUPPORTED', message);
  }
}

function list(f: Filter, k: string): unknown[] {
  const v = f[k];
  return Array.isArray(v) ? v : [];
}

/** FlowFilter fields taken as text, and the `observe` filter option each one feeds. */
const TEXT_FIELDS: readonly (readonly [keyof FilterOptions, string])[] = [
  ['fromIp', 'source_ip'],
  ['toIp', 'destination_ip'],
  ['fromPod', 'source_pod'],
  ['toPod', 'destination_pod'],
  ['fromLabel', 'source_label'],
  ['toLabel', 'destination_label'],
  ['verdict', 'verdict'],
  ['protocol', 'protocol'],
  ['fromPort', 'source_port'],
  ['toPort', 'destination_port'],
  ['fromIdentity', 'source_identity'],
  ['toIdentity', 'destination_identity'],
  ['trafficDirection', 'traffic_direction'],
];

/**
 * One FlowFilter as a predicate, through the same matcher as `observe`'s flags (values of a
 * field are alternatives, fields are all required).
 */
export function flowFilterPredicate(f: Filter): FlowPredicate {
  for (const k of UNSUPPORTED_FIELDS) {
    if (list(f, k).length > 0) throw new UnsupportedFilterError(`FlowFilter.${k} is not supported by tunswitch (no L7, DNS, services or workloads)`);
  }
  const strs = (k: string): string[] => list(f, k).map(String);
  const o: Record<string, string[]> = {};
  const put = (key: keyof FilterOptions, vals: string[]): void => {
    if (vals.length > 0) o[key] = vals;
  };
  for (const [key, field] of TEXT_FIELDS) put(key, strs(field));
  put('ipVersion', strs('ip_version').map((v) => (v === 'IPv6' ? 'v6' : 'v4')));
  put(
    'tcpFlags',
    list(f, 'tcp_flags').map((t) =>
      TCP_FLAG_NAMES.filter((n) => (t as Record<string, unknown>)[n] === true).join(','),
    ),
  );
  const types = list(f, 'event_type').map((t) => eventTypeOfMessageType(Number((t as { type?: unknown }).type ?? 0)) ?? `unknown-${String((t as { type?: unknown }).type)}`);
  put('type', types);
  const base = parseFilters(o as FilterOptions);
  const replies = list(f, 'reply').map((x) => x === true);
  if (replies.length === 0) return base;
  return (e) => base(e) && replies.includes(e.is_reply);
}

/** whitelist − blacklist over events, as GetFlowsRequest defines it. */
export function requestPredicate(req: { whitelist?: Filter[]; blacklist?: Filter[]; since?: Timestamp | null; until?: Timestamp | null }): FlowPredicate {
  const white = (req.whitelist ?? []).map(flowFilterPredicate);
  const black = (req.blacklist ?? []).map(flowFilterPredicate);
  const since = req.since ? req.since.seconds * 1000 + Math.floor(req.since.nanos / 1e6) : null;
  const until = req.until ? req.until.seconds * 1000 + Math.floor(req.until.nanos / 1e6) : null;
  return (e) => {
    if (white.length > 0 && !white.some((p) => p(e))) return false;
    if (black.some((p) => p(e))) return false;
    if (since !== null || until !== null) {
      const t = Date.parse(e.time);
      if (since !== null && t < since) return false;
      if (until !== null && t > until) return false;
    }
    return true;
  };
}

export interface HubbleServerOptions {
  /** The switch's REST socket. */
  socket: string;
  /** grpc-js address: `unix:///path` or `host:port`. */
  listen: string;
  /** node_name in every flow; default: the switch's name from its status. */
  nodeName?: string;
  log?: (m: string) => void;
}

export interface HubbleServer {
  /** The address bound (for host:0, with the port chosen). */
  address: string;
  close(): Promise<void>;
}

export async function startHubbleServer(o: HubbleServerOptions): Promise<HubbleServer> {
  const api = new ApiClient(o.socket, { timeoutMs: 10_000 });
  const log = o.log ?? ((): void => undefined);
  const started = Date.now();
  let nodeName = o.nodeName;
  const node = async (): Promise<string> => {
    if (nodeName === undefined) {
      try {
        nodeName = (await api.get<StatusInfo>('/v1/status')).name;
      } catch {
        return '';
      }
    }
    return nodeName;
  };

  const pkg = loadObserverProto();
  const svc = (pkg.observer as grpc.GrpcObject).Observer as grpc.ServiceClientConstructor;
  const server = new grpc.Server();

  const getFlows = (call: grpc.ServerWritableStream<Record<string, unknown>, unknown>): void => {
    const req = call.request as { number?: number; first?: boolean; follow?: boolean; whitelist?: Filter[]; blacklist?: Filter[]; since?: Timestamp; until?: Timestamp };
    let match: FlowPredicate;
    try {
      match = requestPredicate(req);
    } catch (e) {
      call.destroy(Object.assign(new Error((e as Error).message), { code: grpc.status.INVALID_ARGUMENT }));
      return;
    }
    if (req.first === true && req.follow === true) {
      call.destroy(Object.assign(new Error('first and follow exclude each other'), { code: grpc.status.INVALID_ARGUMENT }));
      return;
    }
    const ac = new AbortController();
    call.on('cancelled', () => ac.abort());
    call.on('close', () => ac.abort());
    void (async () => {
      const name = await node();
      const send = (e: FlowEvent): void => {
        call.write(getFlowsResponse(e, name, summaryOf(e)));
      };
      const history = await api.get<FlowEvent[]>(`/v1/events?last=${HISTORY_LAST}`);
      const matching = history.filter(match);
      const n = req.number ?? 0;
      const shown = n === 0 ? (req.follow === true && !req.since ? [] : matching) : req.first === true ? matching.slice(0, n) : matching.slice(-n);
      for (const e of shown) send(e);
      if (req.follow !== true) {
        call.end();
        return;
      }
      // The stream replays `skip` past events first; skip them up to the newest one already read.
      let skip = history.length;
      const anchor = skip > 0 ? JSON.stringify(history[skip - 1]) : null;
      await api.stream(
        `/v1/events?follow=1&last=${skip}`,
        (v) => {
          const e = v as FlowEvent;
          if (skip > 0) {
            skip--;
            if (JSON.stringify(e) === anchor) skip = 0;
            return;
          }
          if (match(e)) send(e);
        },
        ac.signal,
      );
      if (!ac.signal.aborted) call.end();
    })().catch((e: unknown) => {
      if (ac.signal.aborted) return;
      log(`GetFlows: ${(e as Error).message}`);
      call.destroy(Object.assign(new Error((e as Error).message), { code: grpc.status.UNAVAILABLE }));
    });
  };

  const serverStatus = (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>): void => {
    void (async () => {
      const [st, events] = await Promise.all([api.get<StatusInfo>('/v1/status'), api.get<FlowEvent[]>(`/v1/events?last=${HISTORY_LAST}`)]);
      cb(null, {
        num_flows: events.length,
        max_flows: HISTORY_LAST,
        seen_flows: events.length,
        uptime_ns: Math.round(st.uptimeSeconds * 1e9) || (Date.now() - started) * 1e6,
        num_connected_nodes: { value: 1 },
        num_unavailable_nodes: { value: 0 },
        version: `tunswitch ${st.version}`,
      });
    })().catch((e: unknown) => cb(Object.assign(new Error((e as Error).message), { code: grpc.status.UNAVAILABLE }), null));
  };

  server.addService(svc.service, { GetFlows: getFlows, ServerStatus: serverStatus });
  if (o.listen.startsWith('unix://')) {
    const path = o.listen.slice('unix://'.length);
    // A socket file left by a crashed server would make bind fail with EADDRINUSE.
    if (existsSync(path)) rmSync(path, { force: true });
  }
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(o.listen, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  const address = o.listen.startsWith('unix:') ? o.listen : o.listen.replace(/:0$/, `:${port}`);
  log(`hubble observer API on ${address}`);
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.tryShutdown(() => resolve());
        // Following streams never end by themselves.
        setTimeout(() => server.forceShutdown(), 500).unref();
      }),
  };
}
