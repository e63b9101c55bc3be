import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MessageChannel } from 'node:worker_threads';
import { decodeMessage, encodeMessage, postEncoded, type ControlToMain, type MainToControl } from '../../src/runtime/messages.js';

test('control messages round-trip through msgpack bytes', () => {
  const rows: (ControlToMain | MainToControl)[] = [
    { type: 'addPort', port: 3, fd: 17 },
    { type: 'removePort', port: 3 },
    { type: 'ready', endpoints: 2, missing: ['c (namespace lab-c)'] },
    { type: 'log', msg: 'endpoint a: 10.42.0.2 identity 256 port 1' },
    { type: 'stopped' },
    { type: 'fatal', msg: 'policy x.yaml: spec.ingress[0]: bad' },
    { type: 'portRemoved', port: 9 },
    { type: 'workerRestart', total: 4, shard: 1, reason: 'worker exited', crashLoop: false },
    { type: 'shutdown' },
  ];
  for (const m of rows) {
    const got = decodeMessage(encodeMessage(m), 'test');
    assert.deepEqual(got, m, `got ${JSON.stringify(got)}, want ${JSON.stringify(m)}`);
  }
});

test('bad bytes are refused with the receiving side named', () => {
  assert.throws(() => decodeMessage({ type: 'shutdown' }, 'main thread'), /main thread: message is not msgpack bytes/);
  assert.throws(() => decodeMessage(encodeMessage({ type: 'x' } as never).subarray(0, 0), 'main thread'));
});

test('postEncoded transfers the bytes to the other side of a port', async () => {
  const { port1, port2 } = new MessageChannel();
  const got = new Promise<unknown>((res) => port2.once('message', res));
  postEncoded(port1, { type: 'addPort', port: 1, fd: 42 });
  const m = decodeMessage<ControlToMain>(await got, 'test');
  assert.deepEqual(m, { type: 'addPort', port: 1, fd: 42 });
  port1.close();
  port2.close();
});
