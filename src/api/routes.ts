/**
 * The API's routes: each versioned path and method mapped onto one ControlApi method
 * (src/api/types.ts), after its request is checked (src/api/validate.ts). A handler returns
 * the JSON to send (undefined = 204), or takes over the response and returns STREAMED.
 *
 * New routes go in buildRoutes, next to the routes of the same resource.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { TunswitchError } from '../proto/errors.js';
import type { ControlApi } from './types.js';
import { checkConfigPatch, checkEndpointAddRequest, checkIdentityParam, checkIpcacheEntries, checkPolicyImport, checkPolicyText, checkLinkBody, checkQueuePatch, checkTraceRequest, queryBool, queryInt } from './validate.js';
import { checkCaptureRequest, serveCapture } from './capture-stream.js';

export interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  params: string[];
  body: () => Promise<unknown>;
}

export type Handler = (c: Ctx) => unknown;
export const STREAMED = Symbol('streamed');

export interface Route {
  method: string;
  re: RegExp;
  handler: Handler;
}

/**
 * A streaming client with more than this many bytes unsent loses the events that arrive until
 * it catches up. 1 MiB is a few thousand events: far more than a terminal shows, small enough
 * that a stuck client costs little.
 */
const STREAM_HIGH_WATER_BYTES = 1024 * 1024;

/** Default and largest `last` for /v1/events. */
const EVENTS_DEFAULT_LAST = 100;
const EVENTS_MAX_LAST = 100_000;

export function buildRoutes(api: ControlApi): Route[] {
  const routes: Route[] = [];
  const add = (method: string, path: string, handler: Handler): void => {
    // ":x" matches one segment; "*x" matches the rest of the path (policy names, CIDRs).
    const src = path
      .split('/')
      .map((seg) => (seg.startsWith(':') ? '([^/]+)' : seg.startsWith('*') ? '(.+)' : seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
      .join('/');
    routes.push({ method, re: new RegExp(`^${src}$`), handler });
  };
  const p = (c: Ctx, i: number): string => c.params[i] as string;

  // ---- switch
  add('GET', '/v1/status', () => api.status());
  // Readiness: 200 while every shard runs and packets can flow, 503 otherwise.
  add('GET', '/v1/healthz', (c) => {
    const st = api.status();
    if (!st.healthy) c.res.statusCode = 503;
    return { healthy: st.healthy, ioEngine: st.ioEngine, shards: st.shards, lastWorkerRestart: st.lastWorkerRestart };
  });
  add('GET', '/v1/config', () => api.getConfig());
  add('PATCH', '/v1/config', async (c) => api.setConfig(checkConfigPatch(await c.body())));
  add('GET', '/v1/nodes', () => api.listNodes());
  add('GET', '/metrics', async (c) => {
    const text = await api.metrics();
    c.res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
    c.res.end(text);
    return STREAMED;
  });

  // ---- endpoints and namespaces
  add('GET', '/v1/endpoint', () => api.listEndpoints());
  add('PUT', '/v1/endpoint', async (c) => {
    const ep = await api.addEndpoint(checkEndpointAddRequest(await c.body()));
    c.res.statusCode = 201;
    return ep;
  });
  add('GET', '/v1/endpoint/:id', (c) => api.getEndpoint(p(c, 0)));
  add('DELETE', '/v1/endpoint/:id', async (c) => {
    await api.deleteEndpoint(p(c, 0));
    return undefined;
  });
  add('GET', '/v1/endpoint/:id/queue', (c) => api.getEndpointQueue(p(c, 0)));
  add('PUT', '/v1/endpoint/:id/queue', async (c) => api.setEndpointQueue(p(c, 0), checkQueuePatch(await c.body())));
  // link impairments (src/runtime/impair.ts)
  add('GET', '/v1/link', () => api.listLinks());
  add('GET', '/v1/endpoint/:id/link', (c) => api.getEndpointLink(p(c, 0)));
  add('PUT', '/v1/endpoint/:id/link', async (c) => api.setEndpointLink(p(c, 0), checkLinkBody(await c.body())));
  add('DELETE', '/v1/endpoint/:id/link', (c) => api.setEndpointLink(p(c, 0), null));
  add('POST', '/v1/endpoint/:id/labels', async (c) => api.labelEndpoint(p(c, 0), await c.body()));
  add('GET', '/v1/namespace', () => api.listNamespaces());
  add('GET', '/v1/namespace/:name', (c) => api.getNamespace(p(c, 0)));
  add('PUT', '/v1/namespace/:name', async (c) => api.putNamespace(p(c, 0), await c.body()));
  add('POST', '/v1/namespace/:name/labels', async (c) => api.labelNamespace(p(c, 0), await c.body()));
  add('DELETE', '/v1/namespace/:name', (c) => api.deleteNamespace(p(c, 0)));

  // ---- identities
  add('GET', '/v1/identity', () => api.listIdentities());
  add('GET', '/v1/identity/:id', (c) => api.getIdentity(checkIdentityParam(p(c, 0))));

  // ---- policy
  add('GET', '/v1/policy', () => api.listPolicies());
  add('PUT', '/v1/policy', async (c) => {
    const { files, allowEmpty } = checkPolicyImport(await c.body());
    return api.importPolicies(files, allowEmpty);
  });
  add('DELETE', '/v1/policy', () => api.deleteAllPolicies());
  add('POST', '/v1/policy/validate', async (c) => {
    const { text, fileName } = checkPolicyText(await c.body());
    return api.validatePolicies(text, fileName);
  });
  add('GET', '/v1/policy/selectors', () => api.selectors());
  add('POST', '/v1/policy/trace', async (c) => api.trace(checkTraceRequest(await c.body())));
  add('GET', '/v1/policy/*name', (c) => api.getPolicy(p(c, 0)));
  add('DELETE', '/v1/policy/*name', (c) => api.deletePolicy(p(c, 0)));

  // ---- ipcache and conntrack
  add('GET', '/v1/ipcache', () => api.listIpcache());
  add('GET', '/v1/ipcache/:ip', (c) => {
    const ip = p(c, 0);
    if (isIP(ip) === 0) throw new TunswitchError('ECIDR_INVALID', `"${ip}" is not an IP address`);
    // null: no prefix covers the address (the datapath treats it as world, identity 2).
    return api.getIpcache(ip);
  });
  add('PUT', '/v1/ipcache', async (c) => api.upsertIpcache(checkIpcacheEntries(await c.body())));
  add('DELETE', '/v1/ipcache/*cidr', (c) => api.deleteIpcache(p(c, 0)));
  add('GET', '/v1/ct', () => api.listCt());
  add('DELETE', '/v1/ct', () => api.flushCt());

  // ---- events and capture
  add('GET', '/v1/events', (c) => {
    const follow = queryBool(c.url, 'follow');
    const last = queryInt(c.url, 'last', follow ? 0 : EVENTS_DEFAULT_LAST, EVENTS_MAX_LAST);
    if (!follow) return api.recentEvents(last);
    streamEvents(api, c, last);
    return STREAMED;
  });
  // Packet capture: a pcap stream until count/duration or the client goes away (src/api/capture-stream.ts).
  add('POST', '/v1/capture', async (c) => {
    const body = checkCaptureRequest(await c.body());
    serveCapture((sink) => api.capture(body, sink), c.res);
    return STREAMED;
  });
  return routes;
}

/** NDJSON: the last `last` events, then each new one, until the client disconnects. */
function streamEvents(api: ControlApi, c: Ctx, last: number): void {
  const { req, res } = c;
  res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
  res.flushHeaders();
  // recentEvents and subscribeEvents run in the same tick: no event falls between them.
  for (const e of api.recentEvents(last)) res.write(JSON.stringify(e) + '\n');
  let unsubscribe: (() => void) | null = api.subscribeEvents((e) => {
    if (res.writableLength > STREAM_HIGH_WATER_BYTES || res.destroyed) return;
    res.write(JSON.stringify(e) + '\n');
  });
  const stop = (): void => {
    if (unsubscribe === null) return;
    const u = unsubscribe;
    unsubscribe = null;
    u();
  };
  req.on('close', stop);
  res.on('close', stop);
  res.on('error', stop);
}
