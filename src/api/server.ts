/**
 * The REST API server: the unix socket (and the /metrics TCP listener), request plumbing and
 * errors. The routes are in src/api/routes.ts, the request checks in src/api/validate.ts, the
 * contract they call in src/api/types.ts (ControlApi).
 *
 * Request handling, in order:
 *   1. Match the route by method and path (an unknown path is 404 naming it; a known path with
 *      another method is 405 with an Allow header).
 *   2. Read the body (at most MAX_API_BODY_BYTES; more is 413) and parse it as JSON.
 *   3. Check the body's shape; a problem names the field (`body.labels: ...`), code EBAD_REQUEST.
 *   4. Call the ControlApi and send its result as JSON (204 when it returns nothing).
 *   5. A thrown TunswitchError becomes `{ "error": { "code", "message" } }` with the status
 *      the one error table gives its code (src/proto/errors.ts); anything else is a 500 with
 *      code EINTERNAL, logged with its stack under a request id.
 *
 * `GET /v1/events?follow=1` is the one streaming route: NDJSON, one FlowEvent per line, until
 * the client goes away (then the subscription is dropped). A client that reads too slowly
 * loses events rather than growing the server's buffers (see STREAM_HIGH_WATER_BYTES).
 *
 * If `metricsAddr` is given, a second, TCP listener serves only `GET /metrics`, for Prometheus.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { chmod, lstat, mkdir, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { statusForCode, TunswitchError } from '../proto/errors.js';
import type { ControlApi } from './types.js';
import { MAX_API_BODY_BYTES, type ApiErrorBody } from './extra-types.js';
import { firstInvalidUtf8 } from '../control/policy/parse.js';
import { buildRoutes, STREAMED, type Ctx, type Route } from './routes.js';
import { bad, show } from './validate.js';

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

/** HTTP status for a TunswitchError code: the one table (src/proto/errors.ts). */
export { statusForCode };

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
      reject(new TunswitchError('EBODY_TOO_LARGE', `body: larger than the limit of ${limit} bytes`));
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
        reject(new TunswitchError('EBAD_REQUEST', `body: not UTF-8: invalid byte 0x${(bytes[bad] ?? 0).toString(16).padStart(2, '0')} at byte offset ${bad}`));
        return;
      }
      const text = bytes.toString('utf8');
      try {
        resolve(JSON.parse(text));
      } catch (e) {
        reject(new TunswitchError('EBAD_REQUEST', `body: not valid JSON: ${(e as Error).message}`));
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
            throw new TunswitchError('EMETHOD_NOT_ALLOWED', `${method} ${path}: method not allowed (allowed: ${allowed.join(', ')})`);
          }
          throw new TunswitchError('ENO_ROUTE', `no such API route: ${method} ${path}`);
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
        if (e instanceof TunswitchError) {
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
