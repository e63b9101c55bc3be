/**
 * Supervision: a shard worker that dies is restarted by the main thread, the restart is
 * counted, traffic keeps flowing, and the shard's conntrack (shared memory) survives.
 * `tunswitch run` ends one shard worker thread on SIGUSR2 (fault injection).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Lab, requireE2e, sleep } from './helpers.js';

const TAG = (process.pid % 1000).toString(36);

describe('tunswitch run: a crashed shard worker is restarted with its state', () => {
  const lab = new Lab({
    name: `e2e${TAG}s`,
    workers: 1,
    nodes: [
      { name: 'a', labels: { app: 'a' } },
      { name: 'b', labels: { app: 'b' } },
    ],
  });

  before(async () => {
    await requireE2e();
    await lab.create();
    const n = await lab.start();
    assert.equal(n, 2, `ready: got ${n} endpoints, want 2`);
  });

  after(async () => {
    await lab.destroy();
  });

  it('restarts the worker, counts it, keeps conntrack, keeps forwarding', async () => {
    const p1 = await lab.ping('a', lab.v4('b'));
    assert.equal(p1.code, 0, `ping before: ${p1.stdout}${p1.stderr}`);
    const ctBefore = await lab.cliJson<unknown[]>(['ct', 'list', '-o', 'json']);
    assert.ok(ctBefore.length >= 1, `conntrack before: got ${ctBefore.length} entries, want >= 1`);
    const st0 = await lab.cliJson<{ workerRestarts: number }>(['status', '-o', 'json']);
    assert.equal(st0.workerRestarts, 0);

    assert.ok(lab.agent, 'agent running');
    lab.agent.kill('SIGUSR2');
    let restarts = 0;
    for (let i = 0; i < 50 && restarts === 0; i++) {
      await sleep(100);
      restarts = (await lab.cliJson<{ workerRestarts: number }>(['status', '-o', 'json'])).workerRestarts;
    }
    assert.equal(restarts, 1, `worker restarts: got ${restarts}, want 1; log:\n${lab.agentLog}`);
    assert.match(lab.agentLog, /shard 0: worker died/);

    const ctAfter = await lab.cliJson<unknown[]>(['ct', 'list', '-o', 'json']);
    assert.ok(ctAfter.length >= ctBefore.length, `conntrack after restart: got ${ctAfter.length} entries, want >= ${ctBefore.length}`);
    const p2 = await lab.ping('a', lab.v4('b'));
    assert.equal(p2.code, 0, `ping after the restart: ${p2.stdout}${p2.stderr}`);
  });
});
