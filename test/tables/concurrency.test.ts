/**
 * Publication under real concurrency: the test thread writes, two worker threads read.
 *
 * The writer keeps N pairs. Pair i is an ipcache prefix P_i (10.2.i.0/24 or /26, alternating
 * with each generation, plus fd02:0:i::/48 or /64) mapping to identity X_i, and the policy
 * entry (endpoint 1, egress, X_i, TCP, port f(X_i)) with cookie X_i. A change of pair i picks
 * the next identity (X = BASE + generation * N + i, so every identity names its pair and its
 * generation), moves the prefixes to the other length (delete + insert, so tbl24 / tbl8 /
 * v6 lengths are rewritten, not only a leaf) and replaces the policy entry, all in one
 * commit together with a checksum word (the sum of the identities) and a revision bump.
 * Commits carry 1..3 pair changes. The readers (concurrency-reader.ts) check, inside each
 * batch, that everything they see belongs to one commit; see that file for the invariants.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { mask4 } from '../../src/tables/ipcache.js';
import { EP_ENFORCE_EGRESS } from '../../src/tables/endpoints.js';
import { CFG_HOST_PORT, M_CONFIG_FLAGS, M_HOST_PORT, TableSet, TableSetWriter } from '../../src/tables/tableset.js';
import { Rand } from '../helpers/rand.js';
import { addr4, portOf, type ReaderData, type ReaderReport } from './concurrency-reader.js';

const N = 64;
const BASE = 0x100000;
const SUM_WORD = 8;
const HOST_PORT = 0;
const EP_PORT = 11;
const READERS = 2;
const MIN_UPDATES = 100_000;
const TCP = 6;

function v6Words(i: number): number[] {
  return [0xfd020000, (i << 16) >>> 0, 0, 0];
}

test('readers never see a torn or mixed revision while the writer churns ipcache and policy', { timeout: 60_000 }, async () => {
  const tables = TableSet.create({ ipcache: { tbl8Groups: 128, leaves: 4096, v6Capacity: 1024 }, policyCapacity: 1 << 12, maxEndpoints: 8 });
  const w = new TableSetWriter(tables);
  w.endpoints.upsert(1, { identity: 1001, ipv4: 0x0a000001, port: EP_PORT, flags: EP_ENFORCE_EGRESS });
  w.setPortEndpoint(EP_PORT, 1);
  w.setMeta(M_CONFIG_FLAGS, CFG_HOST_PORT);
  w.setMeta(M_HOST_PORT, HOST_PORT);

  const gen = new Int32Array(N);
  const cur = new Uint32Array(N);
  const ident = (i: number, g: number): number => BASE + g * N + i;
  const len4 = (g: number): number => (g % 2 === 0 ? 24 : 26);
  const len6 = (g: number): number => (g % 2 === 0 ? 48 : 64);
  const net4 = (i: number, g: number): number => (addr4(i) & mask4(len4(g))) >>> 0;
  let sum = 0;
  for (let i = 0; i < N; i++) {
    const x = ident(i, 0);
    cur[i] = x;
    w.ipcache.upsert4(net4(i, 0), len4(0), x);
    w.ipcache.upsert6(v6Words(i), len6(0), x);
    w.policy.add({ ep: 1, dir: 1, identity: x, proto: TCP, port: portOf(x), prefixLen: 24, deny: false, cookie: x });
    sum = (sum + x) >>> 0;
  }
  w.setMeta(SUM_WORD, sum);
  w.bumpPolicyRevision();
  w.commit();

  const ctl = new Int32Array(new SharedArrayBuffer(8));
  const script = fileURLToPath(new URL('./concurrency-reader.js', import.meta.url));
  const workers: Worker[] = [];
  const reports: Promise<ReaderReport>[] = [];
  for (let r = 0; r < READERS; r++) {
    const data: ReaderData = {
      shared: tables.shared,
      readerSlot: 1 + r,
      ctl: ctl.buffer as SharedArrayBuffer,
      n: N,
      base: BASE,
      sumWord: SUM_WORD,
      hostPort: HOST_PORT,
      epPort: EP_PORT,
      packetsPerBatch: 8,
    };
    const wk = new Worker(script, { workerData: data });
    workers.push(wk);
    reports.push(
      new Promise<ReaderReport>((resolve, reject) => {
        wk.once('message', (m: ReaderReport) => resolve(m));
        wk.once('error', reject);
        wk.once('exit', (code) => reject(new Error(`reader ${r} exited with code ${code} before reporting`)));
      }),
    );
  }

  let updates = 0;
  let commits = 0;
  const started = Date.now();
  try {
    // Wait until both readers run, so the churn overlaps their batches.
    while (Atomics.load(ctl, 1) < READERS) {
      if (Date.now() - started > 20_000) throw new Error('readers did not start within 20 s');
      await new Promise((res) => setTimeout(res, 5));
    }
    const rand = new Rand(0xc0ffee);
    while (updates < MIN_UPDATES) {
      const group = rand.range(1, 3);
      for (let k = 0; k < group; k++) {
        const i = rand.int(N);
        const g = gen[i] as number;
        const old = cur[i] as number;
        const ng = g + 1;
        const nx = ident(i, ng);
        w.ipcache.batch(() => {
          w.ipcache.delete4(net4(i, g), len4(g));
          w.ipcache.upsert4(net4(i, ng), len4(ng), nx);
          w.ipcache.delete6(v6Words(i), len6(g));
          w.ipcache.upsert6(v6Words(i), len6(ng), nx);
        });
        w.policy.remove({ ep: 1, dir: 1, identity: old, proto: TCP, port: portOf(old), prefixLen: 24 });
        w.policy.add({ ep: 1, dir: 1, identity: nx, proto: TCP, port: portOf(nx), prefixLen: 24, deny: false, cookie: nx });
        gen[i] = ng;
        cur[i] = nx;
        sum = (sum - old + nx) >>> 0;
        updates += 6;
      }
      w.setMeta(SUM_WORD, sum);
      w.bumpPolicyRevision();
      w.commit();
      commits++;
      // Yield now and then so that the readers' messages and the timers are served.
      if ((commits & 1023) === 0) await new Promise((res) => setImmediate(res));
    }
  } finally {
    Atomics.store(ctl, 0, 1);
  }
  const got = await Promise.all(reports);
  await Promise.all(workers.map((wk) => wk.terminate()));
  const elapsed = Date.now() - started;

  let checks = 0;
  let violations = 0;
  let changes = 0;
  for (const r of got) {
    checks += r.checks;
    violations += r.violations;
    changes += r.revisionChanges;
    assert.ok(r.batches > 50, `reader ${r.slot}: got ${r.batches} batches, want > 50`);
  }
  const detail = got.flatMap((r) => r.firstViolations).join('\n');
  assert.equal(violations, 0, `violations: got ${violations}, want 0\n${detail}`);
  assert.ok(updates >= MIN_UPDATES, `updates: got ${updates}, want >= ${MIN_UPDATES}`);
  assert.ok(checks > 100_000, `checks: got ${checks}, want > 100000`);
  // The readers really ran during the churn: they saw many different revisions. (On a busy
  // 2-core machine the three threads interleave coarsely; a few hundred is typical there.)
  assert.ok(changes > 20, `revision changes seen by readers: got ${changes}, want > 20 (elapsed ${elapsed} ms)`);
  // The writer's final state is what a fresh reader sees.
  const side = tables.control.enter(0);
  tables.useSide(side);
  for (let i = 0; i < N; i++) {
    const leaf = tables.ipcache.lookup4(addr4(i));
    const x = tables.ipcache.leafIdentity(leaf);
    assert.equal(x, cur[i], `final pair ${i}: got identity ${x}, want ${cur[i]}`);
  }
  tables.control.leave(0);
});
