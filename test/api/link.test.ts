/**
 * Link impairments through the API (GET/PUT/DELETE /v1/endpoint/:id/link, GET /v1/link) with
 * the real Agent and server over a unix socket, ports in memory with a real LinkTable (the
 * shared memory the workers read), and the Docker label path (linkFor).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startApiServer, type ApiServer } from '../../src/api/server.js';
import { ApiClient, ApiError } from '../../src/api/client.js';
import type { LinkInfo } from '../../src/api/types.js';
import { Agent } from '../../src/control/agent.js';
import { TableSet, TableSetWriter } from '../../src/tables/tableset.js';
import { tryParsePrefix, type Prefix } from '../../src/control/cidr.js';
import { LinkTable } from '../../src/runtime/impair.js';
import type { LinkParams } from '../../src/runtime/link-spec.js';
import { DockerAttachError, linkFor } from '../../src/docker/watcher.js';
import { MemPorts } from '../helpers/mem-ports.js';

class LinkPorts extends MemPorts {
  readonly table = LinkTable.create(64);
  override getLink(port: number): LinkParams | null {
    return this.table.get(port);
  }
  override setLink(port: number, lp: LinkParams | null): void {
    this.table.set(port, lp);
  }
}

describe('link API', () => {
  let dir = '';
  let server: ApiServer;
  let client: ApiClient;
  const ports = new LinkPorts();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tsw-link-'));
    const ts = TableSet.create({ ipcache: { tbl8Groups: 16, leaves: 1024, v6Capacity: 256 }, policyCapacity: 1 << 12, maxEndpoints: 64 });
    const agent = new Agent(
      { name: 't', pool4: tryParsePrefix('10.81.0.0/24', false) as Prefix, maxEndpoints: 64, workers: 1, offload: false, config: { audit: false, enforcement: 'default' }, version: 'test' },
      new TableSetWriter(ts),
      ports,
      null,
    );
    await agent.addEndpoint({ name: 'a', labels: ['app=a'], netns: 'x' });
    await agent.addEndpoint({ name: 'b', labels: ['app=b'], netns: 'y' });
    server = await startApiServer(agent, { socket: join(dir, 'api.sock') });
    client = new ApiClient(join(dir, 'api.sock'));
  });
  after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('PUT sets the port\'s words, GET shows them, DELETE clears them', async () => {
    const put = await client.put<LinkInfo>('/v1/endpoint/b/link', { delay: '20ms', jitter: '5ms', loss: '1%', rate: '100mbit', seed: 3 });
    assert.deepEqual(put, { endpoint: 'b', id: put.id, link: { delay: '20ms', jitter: '5ms', distribution: 'uniform', loss: '1%', rate: '100mbit', limit: '4MiB', seed: 3 } });
    const port = [...ports.attached.entries()].find(([, s]) => s.name === 'b')?.[0] as number;
    const lp = ports.table.get(port);
    assert.equal(lp?.delayMs, 20, `shared delay word got ${lp?.delayMs}, want 20`);
    assert.equal(lp?.rateBps, 1e8, `shared rate word got ${lp?.rateBps}, want 1e8`);
    const all = await client.get<LinkInfo[]>('/v1/link');
    assert.deepEqual(all.map((l) => [l.endpoint, l.link === null]), [['a', true], ['b', false]], `GET /v1/link got ${JSON.stringify(all)}`);
    const del = await client.delete<LinkInfo>('/v1/endpoint/b/link');
    assert.equal(del.link, null, `DELETE got ${JSON.stringify(del)}`);
    assert.equal(ports.table.get(port), null, 'shared words not cleared');
    const seeded = await client.put<LinkInfo>('/v1/endpoint/a/link', { loss: '5%' });
    assert.ok(typeof seeded.link?.seed === 'number', 'no seed chosen when none was given');
  });

  const bad: [string, unknown, number, string, string][] = [
    ['/v1/endpoint/b/link', { rate: '100mbits' }, 400, 'EBAD_REQUEST', 'body.rate: "100mbits" is not a rate (e.g. 100mbit, 1gbit, 500kbit)'],
    ['/v1/endpoint/b/link', { delay: 20 }, 400, 'EBAD_REQUEST', 'body.delay: 20 is not a duration (e.g. 20ms, 1.5s, 250us)'],
    ['/v1/endpoint/b/link', { speed: '1%' }, 400, 'EBAD_REQUEST', 'body.speed: unknown field (known: delay, jitter, distribution, loss, lossModel, duplicate, reorder, rate, limit, seed)'],
    ['/v1/endpoint/nosuch/link', { delay: '1ms' }, 404, 'EENDPOINT_NOT_FOUND', 'endpoint "nosuch" not found'],
  ];
  for (const [path, body, status, code, msg] of bad) {
    it(`PUT ${path} ${JSON.stringify(body)} is ${status} ${code}`, async () => {
      const e = await client.put(path, body).then(
        () => null,
        (x: unknown) => x,
      );
      assert.ok(e instanceof ApiError, `got ${String(e)}, want an ApiError`);
      assert.equal(e.status, status, `status got ${e.status}, want ${status}`);
      assert.equal(e.code, code, `code got ${e.code}, want ${code}`);
      assert.equal(e.message, msg, `message got ${e.message}, want ${msg}`);
    });
  }

  it('Docker labels: tunswitch.link.* give the params; a bad one names the label', () => {
    const lp = linkFor({ 'tunswitch.link.delay': '20ms', 'tunswitch.link.rate': '10mbit', app: 'x' });
    assert.equal(lp?.delayMs, 20);
    assert.equal(lp?.rateBps, 1e7);
    assert.equal(linkFor({ app: 'x' }), null);
    assert.throws(
      () => linkFor({ 'tunswitch.link.jitter': '5ms' }),
      (e: unknown) => e instanceof DockerAttachError && e.message === 'label tunswitch.link.jitter: needs a delay (jitter varies the delay)',
    );
  });
});
