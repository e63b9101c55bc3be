/**
 * A small client for the REST API on the unix socket (used by the CLI and by tests).
 *
 * Every failure is an ApiError (a TunswitchError, src/proto/errors.ts) with a one-line message:
 *   - the server's `{ error: { code, message } }` → that message and code, plus the HTTP status
 *     (a code this client does not know becomes EINTERNAL);
 *   - no socket, nobody listening, the connection lost → `cannot reach tunswitch at <socket>: is
 *     "tunswitch run" running?` (code EUNREACHABLE, status 0);
 *   - permission denied on the socket → a hint to run as root (code EPERMISSION, status 0);
 *   - no answer in time → ETIMEOUT; an answer that is not JSON → EPROTOCOL.
 */
import { request, type IncomingMessage } from 'node:http';
import { isErrorCode, TunswitchError, type ErrorCode } from '../proto/errors.js';

export class ApiError extends TunswitchError {
  /** HTTP status, or 0 when no response arrived. */
  readonly status: number;
  constructor(code: ErrorCode | string, status: number, message: string) {
    super(isErrorCode(code) ? code : 'EINTERNAL', message);
    this.name = 'ApiError';
    this.status = status;
  }
}

export interface ApiClientOptions {
  /** Milliseconds to wait for a (non-streaming) answer; default 60 s (adding an endpoint can be slow). */
  timeoutMs?: number;
}

export class ApiClient {
  readonly socket: string;
  private readonly timeoutMs: number;

  constructor(socket: string, options: ApiClientOptions = {}) {
    this.socket = socket;
    this.timeoutMs = options.timeoutMs ?? 60_000;
  }

  get<T = unknown>(path: string): Promise<T> {
    return this.json<T>('GET', path);
  }
  put<T = unknown>(path: string, body?: unknown): Promise<T> {
    return this.json<T>('PUT', path, body);
  }
  patch<T = unknown>(path: string, body?: unknown): Promise<T> {
    return this.json<T>('PATCH', path, body);
  }
  post<T = unknown>(path: string, body?: unknown): Promise<T> {
    return this.json<T>('POST', path, body);
  }
  delete<T = unknown>(path: string, body?: unknown): Promise<T> {
    return this.json<T>('DELETE', path, body);
  }

  /** GET a text resource (e.g. /metrics). */
  async text(path: string): Promise<string> {
    const { status, body } = await this.send('GET', path, undefined);
    if (status >= 400) throw errorFromBody(status, body);
    return body;
  }

  /** Sends a request and parses the JSON answer; a 204 gives undefined. */
  async json<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
    const r = await this.send(method, path, body);
    if (r.status >= 400) throw errorFromBody(r.status, r.body);
    if (r.status === 204 || r.body === '') return undefined as T;
    try {
      return JSON.parse(r.body) as T;
    } catch {
      throw new ApiError('EPROTOCOL', r.status, `${method} ${path}: the server sent something that is not JSON`);
    }
  }

  /**
   * Reads an NDJSON stream, calling `onLine` with each parsed line, until the server ends it
   * or `signal` aborts (then it resolves). A connection lost mid-stream rejects.
   */
  stream(path: string, onLine: (value: unknown) => void, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        resolve();
        return;
      }
      let settled = false;
      const done = (err?: Error): void => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve();
      };
      const req = request({ socketPath: this.socket, path, method: 'GET', headers: { accept: 'application/x-ndjson' } });
      const onAbort = (): void => {
        req.destroy();
        done();
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      req.on('error', (e) => done(signal?.aborted ? undefined : this.connectionError(e)));
      req.on('response', (res) => {
        if ((res.statusCode ?? 0) >= 400) {
          readAll(res).then((b) => done(errorFromBody(res.statusCode ?? 0, b)), (e: Error) => done(e));
          return;
        }
        res.setEncoding('utf8');
        let buf = '';
        res.on('data', (d: string) => {
          buf += d;
          let nl: number;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (line === '') continue;
            let v: unknown;
            try {
              v = JSON.parse(line);
            } catch {
              req.destroy();
              done(new ApiError('EPROTOCOL', res.statusCode ?? 0, `${path}: the server sent a line that is not JSON`));
              return;
            }
            try {
              onLine(v);
            } catch (e) {
              req.destroy();
              done(e as Error);
              return;
            }
          }
        });
        res.on('end', () => done());
        res.on('aborted', () => done(signal?.aborted ? undefined : new ApiError('EUNREACHABLE', 0, `tunswitch at ${this.socket} closed the stream`)));
        res.on('error', (e) => done(signal?.aborted ? undefined : this.connectionError(e)));
      });
      req.end();
    });
  }

  private send(method: string, path: string, body: unknown): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const headers: Record<string, string | number> = { accept: 'application/json' };
      if (payload !== undefined) {
        headers['content-type'] = 'application/json';
        headers['content-length'] = payload.length;
      }
      const req = request({ socketPath: this.socket, path, method, headers, timeout: this.timeoutMs });
      req.on('timeout', () => {
        req.destroy(new ApiError('ETIMEOUT', 0, `tunswitch at ${this.socket} did not answer ${method} ${path} within ${this.timeoutMs / 1000} s`));
      });
      req.on('error', (e) => reject(e instanceof ApiError ? e : this.connectionError(e)));
      req.on('response', (res) => {
        readAll(res).then((b) => resolve({ status: res.statusCode ?? 0, body: b }), (e: Error) => reject(this.connectionError(e)));
      });
      req.end(payload);
    });
  }

  private connectionError(e: Error): ApiError {
    const code = (e as NodeJS.ErrnoException).code ?? 'ECONNRESET';
    if (code === 'ENOENT' || code === 'ECONNREFUSED' || code === 'ENOTSOCK') {
      return new ApiError('EUNREACHABLE', 0, `cannot reach tunswitch at ${this.socket}: is "tunswitch run" running?`);
    }
    if (code === 'EACCES' || code === 'EPERM') {
      return new ApiError('EPERMISSION', 0, `permission denied on ${this.socket}: run as root (the socket is mode 0600)`);
    }
    return new ApiError('EUNREACHABLE', 0, `lost the connection to tunswitch at ${this.socket}: ${e.message}`);
  }
}

function readAll(res: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (d: Buffer) => chunks.push(d));
    res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    res.on('error', reject);
    res.on('aborted', () => reject(new TunswitchError('EUNREACHABLE', 'the response was cut short')));
  });
}

function errorFromBody(status: number, body: string): ApiError {
  try {
    const v = JSON.parse(body) as { error?: { code?: unknown; message?: unknown } };
    if (v && typeof v.error === 'object' && v.error !== null && typeof v.error.message === 'string') {
      const code = typeof v.error.code === 'string' ? v.error.code : 'EINTERNAL';
      return new ApiError(code, status, v.error.message.split('\n')[0] as string);
    }
  } catch {
    // not JSON; fall through
  }
  const first = body.trim().split('\n')[0] ?? '';
  return new ApiError('EINTERNAL', status, `HTTP ${status}${first ? `: ${first}` : ''}`);
}

/** `/v1/endpoint/<encoded>`: builds a path with each parameter percent-encoded. */
export function apiPath(base: string, ...params: (string | number)[]): string {
  return [base, ...params.map((p) => encodeURIComponent(String(p)))].join('/');
}
