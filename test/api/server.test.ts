import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { createServer as createNetServer } from 'node:net';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startApiServer, statusForCode, parseListenAddr, type ApiServer } from '../../src/api/server.js';
import { ApiClient, ApiError } from '../../src/api/client.js';
import type { FlowEvent } from '../../src/api/types.js';
import { FakeApi, waitFor } from './fake-api.js';

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: unknown;
}

function raw(socket: string, method: string, path: string, body?: string | Buffer, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, method, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = text === '' ? undefined : JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

function errorOf(r: Reply): { code: string; message: string } {
  const e = (r.json as { error?: { code: string; message: string } } | undefined)?.error;
  assert.ok(e, `got body ${r.text}, want an error body`);
  return e;
}

describe('api server', () => {
  let dir: string;
  let sock: string;
  let fake: FakeApi;
  let server: ApiServer;
  const internal: { e: unknown; requestId: string; method: string; path: string }[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tsw-api-'));
    sock = join(dir, 'run', 'nested', 'api.sock'); // parent folders do not exist yet
    fake = new FakeApi(0x5eed1);
    server = await startApiServer(fake, { socket: sock, metricsAddr: '127.0.0.1:0', onInternalError: (e, r) => internal.push({ e, ...r }) });
  });
  after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('socket is created with mode 0600 in a new folder', async () => {
    const st = await stat(sock);
    assert.ok(st.isSocket(), 'got not a socket, want a socket');
    assert.equal(st.mode & 0o777, 0o600, `got mode ${(st.mode & 0o777).toString(8)}, want 600`);
  });

  test('GET routes return what the ControlApi returns', async () => {
    const ep = fake.endpoints[1]!;
    const pol = [...fake.docs.keys()][0]!;
    const cases: { path: string; want: () => unknown }[] = [
      { path: '/v1/status', want: () => fake.status() },
      { path: '/v1/endpoint', want: () => fake.endpoints },
      { path: `/v1/endpoint/${ep.id}`, want: () => ep },
      { path: `/v1/endpoint/${ep.name}`, want: () => ep },
      { path: '/v1/identity', want: () => fake.identities },
      { path: `/v1/identity/${ep.identity}`, want: () => fake.identities.find((i) => i.id === ep.identity) },
      { path: '/v1/policy', want: () => fake.policies },
      { path: '/v1/policy/selectors', want: () => fake.selectors() },
      { path: `/v1/policy/${encodeURIComponent(pol)}`, want: () => fake.docs.get(pol) },
      { path: '/v1/ipcache', want: () => fake.ipcache },
      { path: `/v1/ipcache/${ep.ipv4}`, want: () => fake.ipcache.find((e) => e.cidr === `${ep.ipv4}/32`) },
      { path: '/v1/ipcache/192.168.7.7', want: () => fake.ipcache[fake.ipcache.length - 1] },
      { path: `/v1/ipcache/${encodeURIComponent('fd00:99::1')}`, want: () => null },
      { path: '/v1/ipcache/fd00:99::1', want: () => null },
      { path: '/v1/ct', want: () => fake.ct },
      { path: '/v1/config', want: () => fake.config },
      { path: '/v1/events?last=2', want: () => fake.events.slice(-2) },
      { path: '/v1/events', want: () => fake.events.slice(-100) },
    ];
    for (const c of cases) {
      const r = await raw(sock, 'GET', c.path);
      assert.equal(r.status, 200, `GET ${c.path}: got status ${r.status} (${r.text}), want 200`);
      assert.match(String(r.headers['content-type']), /^application\/json/, `GET ${c.path}: got content-type ${r.headers['content-type']}, want application/json`);
      assert.deepEqual(r.json, c.want(), `GET ${c.path}: got ${r.text}, want ${JSON.stringify(c.want())}`);
    }
  });

  test('endpoint queue: GET shows the settings, PUT changes them, bad values are 400 naming the field', async () => {
    const ep = fake.endpoints[0]!;
    const g = await raw(sock, 'GET', `/v1/endpoint/${ep.name}/queue`);
    assert.equal(g.status, 200, `GET queue: got ${g.status} ${g.text}`);
    assert.deepEqual(g.json, { limitBytes: 4 << 20, targetMs: 5, intervalMs: 100 });
    const u = await raw(sock, 'PUT', `/v1/endpoint/${ep.name}/queue`, JSON.stringify({ targetMs: 2 }), { 'content-type': 'application/json' });
    assert.equal(u.status, 200, `PUT queue: got ${u.status} ${u.text}`);
    assert.deepEqual(u.json, { limitBytes: 4 << 20, targetMs: 2, intervalMs: 100 });
    for (const [body, re] of [
      [{ limitBytes: 10 }, /queue limitBytes: must be a number of bytes from 2048/],
      [{ targetMs: '5ms' }, /queue targetMs: must be milliseconds/],
      [{ depth: 3 }, /depth: unknown field/],
    ] as const) {
      const r = await raw(sock, 'PUT', `/v1/endpoint/${ep.name}/queue`, JSON.stringify(body), { 'content-type': 'application/json' });
      assert.equal(r.status, 400, `PUT ${JSON.stringify(body)}: got ${r.status}, want 400`);
      assert.match(errorOf(r).message, re);
    }
  });

  test('errors map to HTTP statuses by code', async () => {
    const cases: { method: string; path: string; body?: unknown; status: number; code: string; msg: RegExp }[] = [
      { method: 'GET', path: '/v1/endpoint/nosuch', status: 404, code: 'EENDPOINT_NOT_FOUND', msg: /endpoint "nosuch" not found/ },
      { method: 'DELETE', path: '/v1/endpoint/nosuch', status: 404, code: 'EENDPOINT_NOT_FOUND', msg: /nosuch/ },
      { method: 'GET', path: '/v1/identity/99', status: 404, code: 'EIDENTITY_NOT_FOUND', msg: /identity 99/ },
      { method: 'GET', path: '/v1/identity/abc', status: 400, code: 'EBAD_REQUEST', msg: /identity "abc": not an identity number/ },
      { method: 'GET', path: '/v1/policy/nosuch', status: 404, code: 'EPOLICY_NOT_FOUND', msg: /nosuch/ },
      { method: 'DELETE', path: '/v1/policy/nosuch', status: 404, code: 'EPOLICY_NOT_FOUND', msg: /nosuch/ },
      { method: 'PUT', path: '/v1/policy', body: { text: 'INVALID', fileName: 'bad.yaml' }, status: 400, code: 'EPOLICY_INVALID', msg: /^bad\.yaml: / },
      { method: 'POST', path: '/v1/policy/validate', body: { text: 'INVALID', fileName: 'v.yaml' }, status: 400, code: 'EPOLICY_INVALID', msg: /^v\.yaml: / },
      { method: 'GET', path: '/v1/ipcache/10.1.2', status: 400, code: 'ECIDR_INVALID', msg: /"10\.1\.2" is not an IP address/ },
      { method: 'PUT', path: '/v1/endpoint', body: { name: fake.endpoints[0]!.name }, status: 409, code: 'EENDPOINT_EXISTS', msg: /already exists/ },
      { method: 'PUT', path: '/v1/endpoint', body: { name: 'unsupported' }, status: 501, code: 'ENOT_SUPPORTED', msg: /not supported/ },
      { method: 'PUT', path: '/v1/endpoint', body: { name: 'badlabel' }, status: 400, code: 'ELABEL_INVALID', msg: /empty key/ },
      { method: 'PUT', path: '/v1/endpoint', body: { name: 'boom' }, status: 500, code: 'EINTERNAL', msg: /kaboom/ },
      { method: 'PATCH', path: '/v1/config', body: { enforcement: 'sometimes' }, status: 400, code: 'ECONFIG_INVALID', msg: /^body\.enforcement: must be one of default, always, never, got "sometimes"$/ },
      { method: 'PATCH', path: '/v1/config', body: { audit: 'yes' }, status: 400, code: 'ECONFIG_INVALID', msg: /^body\.audit: must be true or false/ },
      { method: 'PATCH', path: '/v1/config', body: { mode: 1 }, status: 400, code: 'EBAD_REQUEST', msg: /^body\.mode: unknown field/ },
      { method: 'GET', path: '/v1/events?last=x', status: 400, code: 'EBAD_REQUEST', msg: /query last/ },
      { method: 'GET', path: '/v1/events?follow=maybe', status: 400, code: 'EBAD_REQUEST', msg: /query follow/ },
      { method: 'GET', path: '/v1/nothing/here', status: 404, code: 'ENO_ROUTE', msg: /no such API route: GET \/v1\/nothing\/here/ },
      { method: 'GET', path: '/v2/status', status: 404, code: 'ENO_ROUTE', msg: /\/v2\/status/ },
      { method: 'POST', path: '/v1/status', status: 405, code: 'EMETHOD_NOT_ALLOWED', msg: /method not allowed \(allowed: GET\)/ },
      { method: 'GET', path: '/v1/endpoint/%E0%A4%A', status: 400, code: 'EBAD_REQUEST', msg: /percent-encoding/ },
    ];
    for (const c of cases) {
      const r = await raw(sock, c.method, c.path, c.body === undefined ? undefined : JSON.stringify(c.body));
      assert.equal(r.status, c.status, `${c.method} ${c.path}: got status ${r.status} (${r.text}), want ${c.status}`);
      const e = errorOf(r);
      assert.equal(e.code, c.code, `${c.method} ${c.path}: got code ${e.code}, want ${c.code}`);
      assert.match(e.message, c.msg, `${c.method} ${c.path}: got message ${e.message}, want ${c.msg}`);
      assert.ok(!e.message.includes('\n'), `${c.method} ${c.path}: got a multi-line message, want one line`);
    }
    const r = await raw(sock, 'POST', '/v1/status');
    assert.equal(r.headers.allow, 'GET', `got Allow ${r.headers.allow}, want GET`);
  });

  test('an internal error reaches onInternalError with its stack and the request id the 500 carries', async () => {
    internal.length = 0;
    const r = await raw(sock, 'PUT', '/v1/endpoint', JSON.stringify({ name: 'boom' }), { 'content-type': 'application/json' });
    assert.equal(r.status, 500, `status got ${r.status}, want 500`);
    const id = String(r.headers['x-request-id']);
    assert.match(id, /^[0-9a-z]+-[0-9a-z]+$/, `x-request-id got ${id}`);
    assert.match(String((r.json as { error?: { message?: string } }).error?.message ?? r.text), new RegExp(`request ${id}`), `body got ${r.text}, want the request id`);
    assert.equal(internal.length, 1, `onInternalError calls got ${internal.length}, want 1`);
    const got = internal[0]!;
    assert.equal(got.requestId, id, `logged request id got ${got.requestId}, want ${id}`);
    assert.equal(`${got.method} ${got.path}`, 'PUT /v1/endpoint');
    assert.match((got.e as Error).stack ?? '', /kaboom[\s\S]*at /, 'the logged error has no stack');
  });

  test('a body that is not UTF-8 is refused with the byte offset (no replacement characters)', async () => {
    const body = Buffer.concat([Buffer.from('{"text":"a'), Buffer.from([0xe9]), Buffer.from('","fileName":"x.yaml"}')]);
    const r = await raw(sock, 'PUT', '/v1/policy', body, { 'content-type': 'application/json' });
    assert.equal(r.status, 400, `status got ${r.status} (${r.text}), want 400`);
    assert.match(r.text, /body: not UTF-8: invalid byte 0xe9 at byte offset 10/, `got ${r.text}`);
  });

  test('statusForCode table', () => {
    const cases: [string, number][] = [
      ['EBAD_REQUEST', 400], ['EPOLICY_INVALID', 400], ['ECONFIG_INVALID', 400], ['ECIDR_INVALID', 400], ['ELABEL_INVALID', 400],
      ['EPOLICY_NOT_FOUND', 404], ['EENDPOINT_NOT_FOUND', 404], ['ENETNS_NOT_FOUND', 404], ['EIDENTITY_NOT_FOUND', 404], ['EENDPOINT_EXISTS', 409],
      ['ENOT_SUPPORTED', 501], ['EINTERNAL', 500], ['ESTATE_INVALID', 500], ['EIDENTITY_EXHAUSTED', 500],
    ];
    for (const [code, want] of cases) assert.equal(statusForCode(code), want, `statusForCode(${code}): got ${statusForCode(code)}, want ${want}`);
  });

  test('PUT /v1/endpoint body validation names the field', async () => {
    const cases: { body: string; msg: RegExp }[] = [
      { body: '{"name": "x",', msg: /^body: not valid JSON: / },
      { body: '', msg: /^body: expected a JSON object, got an empty body$/ },
      { body: '[1,2]', msg: /^body: expected a JSON object, got an array$/ },
      { body: '"web"', msg: /^body: expected a JSON object, got "web"$/ },
      { body: '{}', msg: /^body\.name: is required/ },
      { body: '{"name": 7}', msg: /^body\.name: must be a string, got 7$/ },
      { body: '{"name": "x", "labels": 5}', msg: /^body\.labels: must be a mapping or a list of "key=value", got 5$/ },
      { body: '{"name": "x", "labels": ["a=b", 3]}', msg: /^body\.labels: must be a mapping or a list of "key=value"; body\.labels\[1\] is 3$/ },
      { body: '{"name": "x", "labels": {"app": 1}}', msg: /^body\.labels\.app: must be a string, got 1$/ },
      { body: '{"name": "x", "pid": -4}', msg: /^body\.pid: must be a positive integer, got -4$/ },
      { body: '{"name": "x", "pid": 1.5}', msg: /^body\.pid: must be a positive integer/ },
      { body: '{"name": "x", "pid": 10, "netns": "a"}', msg: /^body\.pid: netns and pid exclude each other$/ },
      { body: '{"name": "x", "ipv4": "10.0.0.256"}', msg: /^body\.ipv4: "10\.0\.0\.256" is not an IPv4 address$/ },
      { body: '{"name": "x", "ipv6": "10.0.0.1"}', msg: /^body\.ipv6: "10\.0\.0\.1" is not an IPv6 address$/ },
      { body: '{"name": "x", "defaultRoute": "yes"}', msg: /^body\.defaultRoute: must be true or false/ },
      { body: '{"name": "x", "label": {}}', msg: /^body\.label: unknown field \(known: name, labels,/ },
    ];
    const before = fake.calls.filter((c) => c[0] === 'addEndpoint').length;
    for (const c of cases) {
      const r = await raw(sock, 'PUT', '/v1/endpoint', c.body);
      assert.equal(r.status, 400, `body ${c.body}: got status ${r.status}, want 400`);
      const e = errorOf(r);
      assert.equal(e.code, 'EBAD_REQUEST', `body ${c.body}: got code ${e.code}, want EBAD_REQUEST`);
      assert.match(e.message, c.msg, `body ${c.body}: got ${e.message}, want ${c.msg}`);
    }
    const after = fake.calls.filter((c) => c[0] === 'addEndpoint').length;
    assert.equal(after, before, `got ${after - before} addEndpoint calls for bad bodies, want 0`);

    const policyCases: { body: string; msg: RegExp }[] = [
      { body: '{}', msg: /^body\.text: is required/ },
      { body: '{"text": 1}', msg: /^body\.text: must be a string, got 1$/ },
      { body: '{"text": "a", "fileName": false}', msg: /^body\.fileName: must be a string, got false$/ },
    ];
    for (const c of policyCases) {
      for (const [method, path] of [['PUT', '/v1/policy'], ['POST', '/v1/policy/validate']] as const) {
        const r = await raw(sock, method, path, c.body);
        assert.equal(r.status, 400, `${method} ${path} ${c.body}: got ${r.status}, want 400`);
        assert.match(errorOf(r).message, c.msg, `${method} ${path} ${c.body}: got ${errorOf(r).message}, want ${c.msg}`);
      }
    }
  });

  test('write routes call the ControlApi with the checked request', async () => {
    const r1 = await raw(sock, 'PUT', '/v1/endpoint', JSON.stringify({ name: 'new1', labels: { app: 'web' }, ipv4: '10.42.0.77', defaultRoute: false }));
    assert.equal(r1.status, 201, `PUT /v1/endpoint: got ${r1.status} (${r1.text}), want 201`);
    const call = fake.calls.filter((c) => c[0] === 'addEndpoint').at(-1);
    assert.deepEqual(call?.[1], { name: 'new1', labels: { app: 'web' }, ipv4: '10.42.0.77', defaultRoute: false }, `got addEndpoint(${JSON.stringify(call?.[1])})`);
    assert.equal((r1.json as { name: string }).name, 'new1', `got ${r1.text}, want the new endpoint`);

    const r2 = await raw(sock, 'DELETE', '/v1/endpoint/new1');
    assert.equal(r2.status, 204, `DELETE endpoint: got ${r2.status}, want 204`);
    assert.equal(r2.text, '', `DELETE endpoint: got body ${r2.text}, want none`);
    assert.ok(!fake.endpoints.some((e) => e.name === 'new1'), 'got endpoint still present, want deleted');

    const rev = fake.revision;
    const r3 = await raw(sock, 'PUT', '/v1/policy', JSON.stringify({ text: 'name: a\nname: b\n', fileName: 'x.yaml' }));
    assert.deepEqual(r3.json, { revision: rev + 1, policies: ['a', 'b'], files: [{ fileName: 'x.yaml', policies: ['a', 'b'] }] }, `PUT policy: got ${r3.text}`);
    assert.deepEqual(fake.calls.at(-1), ['importPolicies', 'name: a\nname: b\n', 'x.yaml'], `got ${JSON.stringify(fake.calls.at(-1))}`);

    const r3b = await raw(sock, 'PUT', '/v1/policy', JSON.stringify({ text: 'name: c\n' }));
    assert.deepEqual(fake.calls.at(-1), ['importPolicies', 'name: c\n', 'request'], `no fileName: got ${JSON.stringify(fake.calls.at(-1))}`);
    assert.equal(r3b.status, 200, `got ${r3b.status}, want 200`);

    const r4 = await raw(sock, 'POST', '/v1/policy/validate', JSON.stringify({ text: 'name: z\n', fileName: 'z.yaml' }));
    assert.deepEqual(r4.json, { policies: ['z'] }, `validate: got ${r4.text}`);

    const name = [...fake.docs.keys()].find((k) => k.includes('/')) ?? [...fake.docs.keys()][0]!;
    const r5 = await raw(sock, 'DELETE', `/v1/policy/${encodeURIComponent(name)}`);
    assert.equal(r5.status, 200, `DELETE policy ${name}: got ${r5.status} (${r5.text}), want 200`);
    assert.deepEqual((r5.json as { policies: string[] }).policies, [name], `DELETE policy: got ${r5.text}`);

    const left = [...fake.docs.keys()];
    const r6 = await raw(sock, 'DELETE', '/v1/policy');
    assert.deepEqual((r6.json as { policies: string[] }).policies, left, `DELETE all: got ${r6.text}, want ${JSON.stringify(left)}`);

    const nCt = fake.ct.length;
    const r7 = await raw(sock, 'DELETE', '/v1/ct');
    assert.deepEqual(r7.json, { flushed: nCt }, `flush: got ${r7.text}, want ${nCt}`);

    const r8 = await raw(sock, 'PATCH', '/v1/config', JSON.stringify({ audit: true, enforcement: 'always' }));
    assert.deepEqual(r8.json, { audit: true, enforcement: 'always' }, `PATCH config: got ${r8.text}`);
    assert.deepEqual(fake.calls.at(-1), ['setConfig', { audit: true, enforcement: 'always' }], `got ${JSON.stringify(fake.calls.at(-1))}`);
  });

  test('a body over the limit gets 413 and nothing is called', async () => {
    const n = fake.calls.length;
    const big = Buffer.alloc(8 * 1024 * 1024 + 10, 0x20);
    const r = await raw(sock, 'PUT', '/v1/policy', big);
    assert.equal(r.status, 413, `got ${r.status}, want 413`);
    assert.match(errorOf(r).message, /larger than the limit of 8388608 bytes/, `got ${errorOf(r).message}`);
    // Chunked (no content-length): counted while reading.
    const r2 = await new Promise<number>((resolve, reject) => {
      const req = request({ socketPath: sock, method: 'PUT', path: '/v1/policy' }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      for (let i = 0; i < 9; i++) req.write(Buffer.alloc(1024 * 1024, 0x20));
      req.end();
    });
    assert.equal(r2, 413, `chunked: got ${r2}, want 413`);
    assert.equal(fake.calls.length, n, `got ${fake.calls.length - n} api calls, want 0`);
    const c = new ApiClient(sock);
    await assert.rejects(c.put('/v1/policy', { text: 'x'.repeat(9 * 1024 * 1024) }), (e: ApiError) => {
      assert.equal(e.status, 413, `client: got status ${e.status}, want 413`);
      assert.equal(e.code, 'EBODY_TOO_LARGE', `client: got code ${e.code}`);
      return true;
    });
    // The server still works afterwards.
    assert.equal((await raw(sock, 'GET', '/v1/status')).status, 200, 'got a broken server after 413');
  });

  test('/metrics on the socket and on TCP; TCP serves nothing else', async () => {
    const r = await raw(sock, 'GET', '/metrics');
    assert.equal(r.status, 200, `got ${r.status}, want 200`);
    assert.match(String(r.headers['content-type']), /^text\/plain; version=0\.0\.4/, `got ${r.headers['content-type']}`);
    assert.equal(r.text, fake.metricsText, 'socket /metrics: got other text, want the api text');
    const addr = server.metricsAddress;
    assert.ok(addr && addr.port > 0, `got metrics address ${JSON.stringify(addr)}, want a port`);
    const tcp = async (path: string): Promise<{ status: number; text: string }> => {
      const res = await fetch(`http://127.0.0.1:${addr.port}${path}`);
      return { status: res.status, text: await res.text() };
    };
    const m = await tcp('/metrics');
    assert.equal(m.status, 200, `TCP /metrics: got ${m.status}, want 200`);
    assert.equal(m.text, fake.metricsText, 'TCP /metrics: got other text');
    for (const p of ['/v1/status', '/v1/endpoint', '/']) {
      const x = await tcp(p);
      assert.equal(x.status, 404, `TCP ${p}: got ${x.status}, want 404`);
    }
  });

  test('events follow: NDJSON lines, then unsubscribe when the client leaves', async () => {
    const client = new ApiClient(sock);
    for (const last of [0, 2]) {
      const got: FlowEvent[] = [];
      const ac = new AbortController();
      const recent = fake.events.slice(-last);
      const done = client.stream(`/v1/events?follow=1&last=${last}`, (v) => got.push(v as FlowEvent), ac.signal);
      assert.ok(await waitFor(() => fake.subscribers === 1), `last=${last}: got ${fake.subscribers} subscribers, want 1`);
      const fresh = [fake.makeEvent(100), fake.makeEvent(101), fake.makeEvent(102)];
      for (const e of fresh) fake.emit(e);
      const want = [...(last === 0 ? [] : recent), ...fresh];
      assert.ok(await waitFor(() => got.length >= want.length), `last=${last}: got ${got.length} events, want ${want.length}`);
      assert.deepEqual(got, want, `last=${last}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
      ac.abort();
      await done;
      assert.ok(await waitFor(() => fake.subscribers === 0), `last=${last}: got ${fake.subscribers} subscribers after disconnect, want 0`);
    }
    // Raw: content type and one JSON object per line.
    await new Promise<void>((resolve, reject) => {
      const req = request({ socketPath: sock, path: '/v1/events?follow=1&last=1' }, (res) => {
        assert.equal(res.headers['content-type'], 'application/x-ndjson', `got ${res.headers['content-type']}`);
        res.setEncoding('utf8');
        res.once('data', (d: string) => {
          assert.ok(d.endsWith('\n'), `got ${JSON.stringify(d)}, want a newline-terminated line`);
          assert.deepEqual(JSON.parse(d), fake.events.at(-1), `got ${d}`);
          req.destroy();
          resolve();
        });
      });
      req.on('error', (e) => ((e as NodeJS.ErrnoException).code === 'ECONNRESET' ? undefined : reject(e)));
      req.end();
    });
    assert.ok(await waitFor(() => fake.subscribers === 0), `raw: got ${fake.subscribers} subscribers, want 0`);
  });

  test('client errors: server message and code; unreachable socket', async () => {
    const c = new ApiClient(sock);
    await assert.rejects(c.get('/v1/endpoint/ghost'), (e: ApiError) => {
      assert.equal(e.message, 'endpoint "ghost" not found', `got ${e.message}`);
      assert.equal(e.code, 'EENDPOINT_NOT_FOUND', `got ${e.code}`);
      assert.equal(e.status, 404, `got ${e.status}`);
      return true;
    });
    assert.equal(await c.delete('/v1/endpoint/' + fake.endpoints.at(-1)!.id), undefined, 'got a value for 204, want undefined');
    const missing = join(dir, 'missing.sock');
    for (const path of [missing, join(dir, 'stale.sock')]) {
      if (path !== missing) await makeStaleSocket(path);
      await assert.rejects(new ApiClient(path).get('/v1/status'), (e: ApiError) => {
        assert.equal(e.message, `cannot reach tunswitch at ${path}: is "tunswitch run" running?`, `got ${e.message}`);
        assert.equal(e.status, 0, `got ${e.status}`);
        return true;
      });
      await assert.rejects(new ApiClient(path).stream('/v1/events?follow=1', () => undefined), /cannot reach tunswitch/);
    }
  });

  test('parseListenAddr', () => {
    const good: [string, string, number][] = [['127.0.0.1:9962', '127.0.0.1', 9962], ['[::1]:80', '::1', 80], ['localhost:0', 'localhost', 0]];
    for (const [s, host, port] of good) assert.deepEqual(parseListenAddr(s), { host, port }, `parseListenAddr(${s})`);
    for (const s of ['9962', '127.0.0.1', '::1:80', '1.2.3.4:70000', '']) {
      assert.throws(() => parseListenAddr(s), /is not host:port/, `parseListenAddr(${s}): got no error, want one`);
    }
  });
});

/** A unix socket file nobody listens on: a child binds it and is killed before it can clean up. */
async function makeStaleSocket(path: string): Promise<void> {
  const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  assert.ok(existsSync(path), `stale socket ${path}: got missing, want present`);
}

describe('api server start-up and shutdown', () => {
  test('stale socket is replaced; a live one or a regular file is refused; close removes the socket', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tsw-api2-'));
    try {
      const sock = join(dir, 'a.sock');
      await makeStaleSocket(sock);
      const fake = new FakeApi(7);
      const s = await startApiServer(fake, { socket: sock });
      assert.equal((await raw(sock, 'GET', '/v1/status')).status, 200, 'got no answer on the replaced socket');
      await assert.rejects(startApiServer(fake, { socket: sock }), /another process is listening on it/);
      // An open stream must not keep close() waiting.
      const stream = new ApiClient(sock).stream('/v1/events?follow=1', () => undefined).catch((e: Error) => e);
      assert.ok(await waitFor(() => fake.subscribers === 1), 'got no subscriber');
      await s.close();
      assert.ok(!existsSync(sock), 'got socket file after close, want removed');
      const res = await stream;
      assert.ok(res instanceof Error || res === undefined, `got ${String(res)}`);
      assert.ok(await waitFor(() => fake.subscribers === 0), `got ${fake.subscribers} subscribers after close, want 0`);

      const file = join(dir, 'plain');
      await writeFile(file, 'not a socket');
      await assert.rejects(startApiServer(fake, { socket: file }), /exists and is not a socket/);
      assert.ok(existsSync(file), 'got the regular file removed, want kept');

      // A busy metrics port fails start-up and leaves no socket behind.
      const blocker = createNetServer().listen(0, '127.0.0.1');
      await new Promise((r) => blocker.once('listening', r));
      const port = (blocker.address() as { port: number }).port;
      const sock2 = join(dir, 'b.sock');
      await assert.rejects(startApiServer(fake, { socket: sock2, metricsAddr: `127.0.0.1:${port}` }), /metricsAddr 127\.0\.0\.1:\d+: cannot listen/);
      assert.ok(!existsSync(sock2), 'got a socket left behind after a failed start');
      blocker.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
