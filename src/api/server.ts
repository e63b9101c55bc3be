/**
 * The REST API server: versioned JSON routes on a unix socket, mapped onto a ControlApi.
 *
 * Request handling, in order:
 *   1. Match the route by method and path (an unknown path is 404 naming it; a known path with
 *      another method is 405 with an Allow header).
 *   2. Read the body (at most MAX_API_BODY_BYTES; more is 413) and parse it as JSON.
 *   3. Check the body's shape; a problem names the field (`body.labels: ...`), code EBAD_REQUEST.
 *   4. Call the ControlApi and send its result as JSON (204 when it returns nothing).
 *   5. A thrown TunswitchError becomes `{ "error": { "code", "message" } }` with the status
 *      from STATUS_BY_CODE; anything else is a 500 with code EINTERNAL.
 *
 * `GET /v1/events?follow=1` is the one streaming route: NDJSON, one FlowEvent per line, until
 * the client goes away (then the subscription is dropped). A client that reads too slowly
 * loses events rather than growing the server's buffers (see STREAM_HIGH_WATER_BYTES).
 *
 * If `metricsAddr` is given, a second, TCP listener serves only `GET /metrics`, for Prometheus.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, isIP, isIPv4, isIPv6, type AddressInfo } from 'node:net';
import { chmod, lstat, mkdir, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { TunswitchError, type ErrorCode } from '../control/errors.js';
import type { AgentConfig, ControlApi, EndpointAddRequest, QueueSettings } from './types.js';
import { MAX_API_BODY_BYTES, type ApiErrorBody } from './extra-types.js';
import { LINK_SPEC_KEYS, LinkSpecError, linkIsNoop, parseLinkSpec, type LinkParams } from '../runtime/link-spec.js';
import { randomInt } from 'node:crypto';
import { firstInvalidUtf8 } from '../control/policy/parse.js';
import { CaptureBusyError, type CaptureHandle, type CaptureRequest, type CaptureSink } from '../control/capture.js';
import { checkCaptureRequest, serveCapture } from './capture-stream.js';

export interface ApiServerOptions {
  /** Path of the unix socket, e.g. /run/tunswitch/tunswitch.sock. */
  socket: string;
  /** "host:port" ("127.0.0.1:9962", "[::1]:9962") for a TCP listener serving only /metrics. */
  metricsAddr?: string;
  /** Largest request body in bytes (default MAX_API_BODY_BYTES). */
  maxBodyBytes?: number;
  /**
   * Called with errors that are not TunswitchErrors (bugs), for the agent's log, with the id
   * the 500 response also carries (body and x-request-id header), so a user's report and the
   * log line can be matched.
   */
  onInternalError?: (e: unknown, req: { requestId: string; method: string; path: string }) => void;
}

export interface ApiServer {
  /** Where the /metrics TCP listener is bound (useful with port 0), or null without one. */
  readonly metricsAddress: AddressInfo | null;
  /** Stops both listeners, ends open streams and removes the socket file. */
  close(): Promise<void>;
}

/** Numbers the requests that ended in an internal error (request ids in the log and the 500). */
let requestSeq = 0;

/** HTTP status for each error code; codes not listed are 500. */
const STATUS_BY_CODE: Partial<Record<ErrorCode, number>> = {
  EBAD_REQUEST: 400,
  EPOLICY_INVALID: 400,
  ECONFIG_INVALID: 400,
  ECIDR_INVALID: 400,
  ELABEL_INVALID: 400,
  EPOLICY_NOT_FOUND: 404,
  EENDPOINT_NOT_FOUND: 404,
  EIDENTITY_NOT_FOUND: 404,
  EENDPOINT_EXISTS: 409,
  ECAPTURE_BUSY: 409,
  ENOT_SUPPORTED: 501,
  EKVSTORE: 503,
};

/** HTTP status for a TunswitchError code (exported for tests and for the client's docs). */
export function statusForCode(code: string): number {
  if (code.endsWith('_NOT_FOUND')) return 404;
  return STATUS_BY_CODE[code as ErrorCode] ?? 500;
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

/** An error with its own HTTP status (routing and body problems). */
class HttpError extends TunswitchError {
  readonly status: number;
  constructor(status: number, code: ErrorCode, message: string) {
    super(code, message);
    this.status = status;
  }
}

interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  params: string[];
  body: () => Promise<unknown>;
}

/** A handler returns the JSON to send (undefined = 204), or takes over `res` and returns STREAMED. */
type Handler = (c: Ctx) => unknown;
const STREAMED = Symbol('streamed');

interface Route {
  method: string;
  re: RegExp;
  handler: Handler;
}

// ---------------------------------------------------------------------------------------------
// Body checks. Each names the field it rejects.

function bad(message: string): never {
  throw new HttpError(400, 'EBAD_REQUEST', message);
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function show(v: unknown): string {
  return JSON.stringify(v) ?? String(v);
}

function expectObject(v: unknown, known: readonly string[]): Record<string, unknown> {
  if (v === undefined) bad('body: expected a JSON object, got an empty body');
  if (!isObj(v)) bad(`body: expected a JSON object, got ${Array.isArray(v) ? 'an array' : show(v)}`);
  for (const k of Object.keys(v)) {
    if (!known.includes(k)) bad(`body.${k}: unknown field (known: ${known.join(', ')})`);
  }
  return v;
}

function optString(o: Record<string, unknown>, k: string): string | undefined {
  const v = o[k];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') bad(`body.${k}: must be a string, got ${show(v)}`);
  return v;
}

/** Checks an EndpointAddRequest; returns a copy without unknown fields. */
export function checkEndpointAddRequest(v: unknown): EndpointAddRequest {
  const o = expectObject(v, ['name', 'labels', 'netns', 'pid', 'ipv4', 'ipv6', 'defaultRoute', 'namespace', 'ports', 'offload']);
  const name = optString(o, 'name');
  if (name === undefined || name === '') bad('body.name: is required (a non-empty string)');
  const req: EndpointAddRequest = { name };
  const labels = o.labels;
  if (labels !== undefined) {
    const msg = 'body.labels: must be a mapping or a list of "key=value"';
    if (Array.isArray(labels)) {
      labels.forEach((l, i) => {
        if (typeof l !== 'string' || l === '') bad(`${msg}; body.labels[${i}] is ${show(l)}`);
      });
      req.labels = labels.slice() as string[];
    } else if (isObj(labels)) {
      const out: Record<string, string> = {};
      for (const [k, val] of Object.entries(labels)) {
        if (typeof val !== 'string') bad(`body.labels.${k}: must be a string, got ${show(val)}`);
        out[k] = val;
      }
      req.labels = out;
    } else {
      bad(`${msg}, got ${show(labels)}`);
    }
  }
  const netns = optString(o, 'netns');
  if (netns !== undefined) {
    if (netns === '') bad('body.netns: must not be empty');
    req.netns = netns;
  }
  if (o.pid !== undefined) {
    if (typeof o.pid !== 'number' || !Number.isInteger(o.pid) || o.pid <= 0) bad(`body.pid: must be a positive integer, got ${show(o.pid)}`);
    if (netns !== undefined) bad('body.pid: netns and pid exclude each other');
    req.pid = o.pid;
  }
  const ipv4 = optString(o, 'ipv4');
  if (ipv4 !== undefined) {
    if (!isIPv4(ipv4)) bad(`body.ipv4: "${ipv4}" is not an IPv4 address`);
    req.ipv4 = ipv4;
  }
  const ipv6 = optString(o, 'ipv6');
  if (ipv6 !== undefined) {
    if (!isIPv6(ipv6)) bad(`body.ipv6: "${ipv6}" is not an IPv6 address`);
    req.ipv6 = ipv6;
  }
  if (o.defaultRoute !== undefined) {
    if (typeof o.defaultRoute !== 'boolean') bad(`body.defaultRoute: must be true or false, got ${show(o.defaultRoute)}`);
    req.defaultRoute = o.defaultRoute;
  }
  if (o.offload !== undefined) {
    if (typeof o.offload !== 'boolean') bad(`body.offload: must be true or false, got ${show(o.offload)}`);
    req.offload = o.offload;
  }
  const namespace = optString(o, 'namespace');
  if (namespace !== undefined) req.namespace = namespace;
  // The agent checks each port (name, number, protocol) and names the item.
  if (o.ports !== undefined) {
    if (!Array.isArray(o.ports)) bad(`body.ports: must be a list of {name, port, protocol}, got ${show(o.ports)}`);
    req.ports = o.ports as NonNullable<EndpointAddRequest['ports']>;
  }
  return req;
}

function checkPolicyText(v: unknown): { text: string; fileName: string; allowEmpty: boolean } {
  const o = expectObject(v, ['text', 'fileName', 'allowEmpty']);
  const text = optString(o, 'text');
  if (text === undefined) bad('body.text: is required (the policy file contents)');
  const fileName = optString(o, 'fileName');
  if (o.allowEmpty !== undefined && typeof o.allowEmpty !== 'boolean') bad(`body.allowEmpty: must be true or false, got ${show(o.allowEmpty)}`);
  return { text, fileName: fileName === undefined || fileName === '' ? 'request' : fileName, allowEmpty: o.allowEmpty === true };
}

const ENFORCEMENT_MODES: readonly AgentConfig['enforcement'][] = ['default', 'always', 'never'];

/** Checks a config patch. Value problems are ECONFIG_INVALID, naming the key. */
export function checkConfigPatch(v: unknown): Partial<AgentConfig> {
  const o = expectObject(v, ['audit', 'enforcement', 'cidrMatchPods']);
  const patch: Partial<AgentConfig> = {};
  if (o.cidrMatchPods !== undefined) {
    if (typeof o.cidrMatchPods !== 'boolean') throw new HttpError(400, 'ECONFIG_INVALID', `body.cidrMatchPods: must be true or false, got ${show(o.cidrMatchPods)}`);
    patch.cidrMatchPods = o.cidrMatchPods;
  }
  if (o.audit !== undefined) {
    if (typeof o.audit !== 'boolean') throw new HttpError(400, 'ECONFIG_INVALID', `body.audit: must be true or false, got ${show(o.audit)}`);
    patch.audit = o.audit;
  }
  if (o.enforcement !== undefined) {
    if (typeof o.enforcement !== 'string' || !(ENFORCEMENT_MODES as readonly string[]).includes(o.enforcement)) {
      throw new HttpError(400, 'ECONFIG_INVALID', `body.enforcement: must be one of ${ENFORCEMENT_MODES.join(', ')}, got ${show(o.enforcement)}`);
    }
    patch.enforcement = o.enforcement as AgentConfig['enforcement'];
  }
  return patch;
}

function checkQueuePatch(v: unknown): Partial<QueueSettings> {
  const o = expectObject(v, ['limitBytes', 'targetMs', 'intervalMs']);
  const out: Partial<QueueSettings> = {};
  const num = (k: 'limitBytes' | 'targetMs' | 'intervalMs', lo: number, hi: number, what: string): void => {
    const x = o[k];
    if (x === undefined) return;
    if (typeof x !== 'number' || !Number.isFinite(x) || x < lo || x > hi) bad(`queue ${k}: must be ${what}, got ${show(x)}`);
    out[k] = x;
  };
  num('limitBytes', 2048, 1 << 30, 'a number of bytes from 2048 to 2^30');
  num('targetMs', 0.001, 10_000, 'milliseconds from 0.001 to 10000');
  num('intervalMs', 0.001, 10_000, 'milliseconds from 0.001 to 10000');
  return out;
}

/** PUT /v1/endpoint/:id/link: a LinkSpec (src/runtime/link-spec.ts); all off means none. */
function checkLinkBody(v: unknown): LinkParams | null {
  const o = expectObject(v, LINK_SPEC_KEYS);
  try {
    const lp = parseLinkSpec(o, (k) => `body.${k}`, () => randomInt(2 ** 32));
    return linkIsNoop(lp) ? null : lp;
  } catch (e) {
    if (e instanceof LinkSpecError) bad(e.message);
    throw e;
  }
}

function queryInt(url: URL, name: string, dflt: number, max: number): number {
  const s = url.searchParams.get(name);
  if (s === null || s === '') return dflt;
  if (!/^\d+$/.test(s) || Number(s) > max) bad(`query ${name}: must be an integer from 0 to ${max}, got "${s}"`);
  return Number(s);
}

function queryBool(url: URL, name: string): boolean {
  const s = url.searchParams.get(name);
  if (s === null) return false;
  if (s === '' || s === '1' || s === 'true') return true;
  if (s === '0' || s === 'false') return false;
  bad(`query ${name}: must be 1, 0, true or false, got "${s}"`);
}

// ---------------------------------------------------------------------------------------------
// Routes.

function buildRoutes(api: ControlApi): Route[] {
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

  add('GET', '/v1/status', () => api.status());
  // Readiness: 200 while every shard runs and packets can flow, 503 otherwise.
  add('GET', '/v1/healthz', (c) => {
    const st = api.status();
    const body = { healthy: st.healthy, ioEngine: st.ioEngine, shards: st.shards, lastWorkerRestart: st.lastWorkerRestart };
    if (!st.healthy) c.res.statusCode = 503;
    return body;
  });

  add('GET', '/v1/endpoint', () => api.listEndpoints());
  add('PUT', '/v1/endpoint', async (c) => {
    const req = checkEndpointAddRequest(await c.body());
    const ep = await api.addEndpoint(req);
    c.res.statusCode = 201;
    return ep;
  });
  add('GET', '/v1/endpoint/:id', (c) => api.getEndpoint(p(c, 0)));
  add('GET', '/v1/endpoint/:id/queue', (c) => api.getEndpointQueue(p(c, 0)));
  add('PUT', '/v1/endpoint/:id/queue', async (c) => api.setEndpointQueue(p(c, 0), checkQueuePatch(await c.body())));
  // Optional parts of the API (labels and namespaces): 501 when the agent has none.
  const opt = <A extends unknown[]>(name: string, what: string) => {
    return (...args: A): unknown => {
      const f = (api as unknown as Record<string, unknown>)[name];
      if (typeof f !== 'function') throw new HttpError(501, 'ENOT_SUPPORTED', `${what} is not available`);
      return (f as (...a: A) => unknown).apply(api, args);
    };
  };
  // link impairments (src/runtime/impair.ts)
  add('GET', '/v1/link', () => opt('listLinks', 'link impairments')());
  add('GET', '/v1/endpoint/:id/link', (c) => opt('getEndpointLink', 'link impairments')(p(c, 0)));
  add('PUT', '/v1/endpoint/:id/link', async (c) => opt('setEndpointLink', 'link impairments')(p(c, 0), checkLinkBody(await c.body())));
  add('DELETE', '/v1/endpoint/:id/link', (c) => opt('setEndpointLink', 'link impairments')(p(c, 0), null));
  add('POST', '/v1/endpoint/:id/labels', async (c) => opt('labelEndpoint', 'endpoint labelling')(p(c, 0), await c.body()));
  add('GET', '/v1/namespace', () => opt('listNamespaces', 'namespaces')());
  add('GET', '/v1/namespace/:name', (c) => opt('getNamespace', 'namespaces')(p(c, 0)));
  add('PUT', '/v1/namespace/:name', async (c) => opt('putNamespace', 'namespaces')(p(c, 0), await c.body()));
  add('POST', '/v1/namespace/:name/labels', async (c) => opt('labelNamespace', 'namespaces')(p(c, 0), await c.body()));
  add('DELETE', '/v1/namespace/:name', (c) => opt('deleteNamespace', 'namespaces')(p(c, 0)));
  add('DELETE', '/v1/endpoint/:id', async (c) => {
    await api.deleteEndpoint(p(c, 0));
    return undefined;
  });

  add('GET', '/v1/identity', () => api.listIdentities());
  add('GET', '/v1/identity/:id', (c) => {
    const s = p(c, 0);
    if (!/^\d+$/.test(s) || Number(s) > 0xffffffff) bad(`identity "${s}": not an identity number`);
    return api.getIdentity(Number(s));
  });

  add('GET', '/v1/policy', () => api.listPolicies());
  add('PUT', '/v1/policy', async (c) => {
    const { text, fileName, allowEmpty } = checkPolicyText(await c.body());
    return allowEmpty ? api.importPolicies(text, fileName, true) : api.importPolicies(text, fileName);
  });
  add('DELETE', '/v1/policy', () => api.deleteAllPolicies());
  add('POST', '/v1/policy/validate', async (c) => {
    const { text, fileName } = checkPolicyText(await c.body());
    return api.validatePolicies(text, fileName);
  });
  add('GET', '/v1/policy/selectors', () => api.selectors());
  add('POST', '/v1/policy/trace', async (c) => {
    const t = (api as Partial<{ trace(b: unknown): unknown }>).trace;
    if (typeof t !== 'function') throw new HttpError(501, 'ENOT_SUPPORTED', 'policy trace is not available');
    return t.call(api, await c.body());
  });
  add('GET', '/v1/policy/*name', (c) => api.getPolicy(p(c, 0)));
  add('DELETE', '/v1/policy/*name', (c) => api.deletePolicy(p(c, 0)));

  add('GET', '/v1/ipcache', () => api.listIpcache());
  add('GET', '/v1/nodes', () => (api.listNodes ? api.listNodes() : []));
  add('GET', '/v1/ipcache/:ip', (c) => {
    const ip = p(c, 0);
    if (isIP(ip) === 0) throw new HttpError(400, 'ECIDR_INVALID', `"${ip}" is not an IP address`);
    // null: no prefix covers the address (the datapath treats it as world, identity 2).
    return api.getIpcache(ip);
  });

  add('PUT', '/v1/ipcache', async (c) => {
    const f = (api as Partial<{ upsertIpcache(b: unknown): unknown }>).upsertIpcache;
    if (typeof f !== 'function') throw new HttpError(501, 'ENOT_SUPPORTED', 'ipcache updates are not available');
    return f.call(api, await c.body());
  });
  add('DELETE', '/v1/ipcache/*cidr', (c) => {
    const f = (api as Partial<{ deleteIpcache(s: string): unknown }>).deleteIpcache;
    if (typeof f !== 'function') throw new HttpError(501, 'ENOT_SUPPORTED', 'ipcache updates are not available');
    return f.call(api, p(c, 0));
  });

  add('GET', '/v1/ct', () => api.listCt());
  add('DELETE', '/v1/ct', () => api.flushCt());

  add('GET', '/v1/config', () => api.getConfig());
  add('PATCH', '/v1/config', async (c) => api.setConfig(checkConfigPatch(await c.body())));

  add('GET', '/v1/events', (c) => {
    const follow = queryBool(c.url, 'follow');
    const last = queryInt(c.url, 'last', follow ? 0 : EVENTS_DEFAULT_LAST, EVENTS_MAX_LAST);
    if (!follow) return api.recentEvents(last);
    streamEvents(api, c, last);
    return STREAMED;
  });

  // Packet capture: a pcap stream until count/duration or the client goes away (src/api/capture-stream.ts).
  add('POST', '/v1/capture', async (c) => {
    const f = (api as Partial<{ capture(r: CaptureRequest, s: CaptureSink): CaptureHandle }>).capture;
    if (typeof f !== 'function') throw new HttpError(501, 'ENOT_SUPPORTED', 'packet capture is not available');
    const body = checkCaptureRequest(await c.body());
    try {
      serveCapture((sink) => f.call(api, body, sink), c.res);
    } catch (e) {
      if (e instanceof CaptureBusyError) throw new HttpError(e.status, e.code, e.message);
      throw e;
    }
    return STREAMED;
  });

  add('GET', '/metrics', async (c) => {
    const text = await api.metrics();
    c.res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
    c.res.end(text);
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

// ---------------------------------------------------------------------------------------------
// Request plumbing.

function sendJson(res: ServerResponse, status: number, v: unknown): void {
  const body = JSON.stringify(v) + '\n';
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function sendError(res: ServerResponse, status: number, code: string, message: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body: ApiErrorBody = { error: { code, message } };
  sendJson(res, status, body);
}

function readBody(req: IncomingMessage, limit: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const tooBig = (): void => {
      // Answer now; Node discards the rest of the body (bounded by the server's requestTimeout)
      // so the client can still read the answer on the same connection.
      req.removeAllListeners('data');
      req.resume();
      reject(new HttpError(413, 'EBAD_REQUEST', `body: larger than the limit of ${limit} bytes`));
    };
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > limit) {
      tooBig();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (d: Buffer) => {
      size += d.length;
      if (size > limit) {
        tooBig();
        return;
      }
      chunks.push(d);
    });
    req.on('error', reject);
    req.on('end', () => {
      if (size === 0) {
        resolve(undefined);
        return;
      }
      const bytes = Buffer.concat(chunks);
      const bad = firstInvalidUtf8(bytes);
      if (bad >= 0) {
        // refused, not decoded with replacement characters (policy text would be altered)
        reject(new HttpError(400, 'EBAD_REQUEST', `body: not UTF-8: invalid byte 0x${(bytes[bad] ?? 0).toString(16).padStart(2, '0')} at byte offset ${bad}`));
        return;
      }
      const text = bytes.toString('utf8');
      try {
        resolve(JSON.parse(text));
      } catch (e) {
        reject(new HttpError(400, 'EBAD_REQUEST', `body: not valid JSON: ${(e as Error).message}`));
      }
    });
  });
}

function makeListener(routes: Route[], opts: ApiServerOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const limit = opts.maxBodyBytes ?? MAX_API_BODY_BYTES;
  return (req, res) => {
    void (async () => {
      const method = req.method ?? 'GET';
      let url: URL;
      try {
        url = new URL(req.url ?? '/', 'http://tunswitch');
      } catch {
        sendError(res, 400, 'EBAD_REQUEST', `malformed request target ${show(req.url)}`);
        return;
      }
      const path = url.pathname;
      let route: Route | null = null;
      let params: string[] = [];
      const allowed: string[] = [];
      for (const r of routes) {
        const m = r.re.exec(path);
        if (m === null) continue;
        if (r.method !== method) {
          if (!allowed.includes(r.method)) allowed.push(r.method);
          continue;
        }
        route = r;
        params = m.slice(1);
        break;
      }
      try {
        if (route === null) {
          if (allowed.length > 0) {
            res.setHeader('allow', allowed.join(', '));
            throw new HttpError(405, 'EBAD_REQUEST', `${method} ${path}: method not allowed (allowed: ${allowed.join(', ')})`);
          }
          throw new HttpError(404, 'EBAD_REQUEST', `no such API route: ${method} ${path}`);
        }
        try {
          params = params.map((s) => decodeURIComponent(s));
        } catch {
          bad(`${path}: malformed percent-encoding`);
        }
        let bodyP: Promise<unknown> | null = null;
        const ctx: Ctx = { req, res, url, params, body: () => (bodyP ??= readBody(req, limit)) };
        const out = await route.handler(ctx);
        if (out === STREAMED) return;
        if (out === undefined) {
          res.writeHead(204);
          res.end();
          return;
        }
        sendJson(res, res.statusCode, out);
      } catch (e) {
        if (e instanceof HttpError) {
          sendError(res, e.status, e.code, e.message);
        } else if (e instanceof TunswitchError) {
          sendError(res, statusForCode(e.code), e.code, e.message);
        } else {
          const requestId = `${process.pid.toString(36)}-${(++requestSeq).toString(36)}`;
          opts.onInternalError?.(e, { requestId, method, path });
          const msg = e instanceof Error ? e.message : String(e);
          res.setHeader('x-request-id', requestId);
          sendError(res, 500, 'EINTERNAL', `internal error (request ${requestId}, see the agent log): ${msg}`);
        }
      }
    })();
  };
}

/** Parses "host:port" / "[v6]:port" into listen options; throws ECONFIG_INVALID naming it. */
export function parseListenAddr(addr: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(addr);
  const port = m ? Number(m[3]) : NaN;
  if (m === null || port > 65535) {
    throw new TunswitchError('ECONFIG_INVALID', `metricsAddr: "${addr}" is not host:port (e.g. 127.0.0.1:9962)`);
  }
  return { host: (m[1] ?? m[2]) as string, port };
}

/** True when something accepts connections on the unix socket at `path`. */
function socketAlive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

function listen(server: Server, args: { path: string } | { host: string; port: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error): void => reject(e);
    server.once('error', onError);
    server.listen(args, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      resolve();
      return;
    }
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/**
 * Starts the API on `opts.socket` (mode 0600; the parent directory is created; a stale socket
 * file is removed, a live one is an error) and, if asked, /metrics on `opts.metricsAddr`.
 */
export async function startApiServer(api: ControlApi, opts: ApiServerOptions): Promise<ApiServer> {
  const routes = buildRoutes(api);
  const sock = opts.socket;
  await mkdir(dirname(sock), { recursive: true, mode: 0o755 });
  const st = await lstat(sock).catch(() => null);
  if (st !== null) {
    if (!st.isSocket()) throw new TunswitchError('ECONFIG_INVALID', `api socket ${sock}: exists and is not a socket; not removing it`);
    if (await socketAlive(sock)) throw new TunswitchError('ECONFIG_INVALID', `api socket ${sock}: another process is listening on it (is tunswitch already running?)`);
    await unlink(sock);
  }
  const server = createServer(makeListener(routes, opts));
  await listen(server, { path: sock });
  try {
    await chmod(sock, 0o600);
  } catch (e) {
    await closeServer(server);
    await unlink(sock).catch(() => undefined);
    throw e;
  }

  let metricsServer: Server | null = null;
  if (opts.metricsAddr !== undefined) {
    const where = parseListenAddr(opts.metricsAddr);
    const metricsRoutes = routes.filter((r) => r.re.test('/metrics'));
    metricsServer = createServer(makeListener(metricsRoutes, opts));
    try {
      await listen(metricsServer, where);
    } catch (e) {
      await closeServer(server);
      await unlink(sock).catch(() => undefined);
      throw new TunswitchError('ECONFIG_INVALID', `metricsAddr ${opts.metricsAddr}: cannot listen: ${(e as Error).message}`);
    }
  }

  let closed: Promise<void> | null = null;
  return {
    metricsAddress: metricsServer ? (metricsServer.address() as AddressInfo) : null,
    close(): Promise<void> {
      closed ??= (async () => {
        await Promise.all([closeServer(server), metricsServer ? closeServer(metricsServer) : Promise.resolve()]);
        await unlink(sock).catch(() => undefined);
      })();
      return closed;
    },
  };
}
