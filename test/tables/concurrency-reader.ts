/**
 * Reader thread of the publication concurrency test (concurrency.test.ts). It attaches to the
 * published TableSet and, batch after batch until told to stop, runs the pipeline and direct
 * table lookups inside one claimed revision, checking invariants the writer keeps in every
 * commit. A torn entry or a batch that mixes two revisions breaks at least one of them.
 *
 * Invariants (the writer's side is described in concurrency.test.ts):
 *   I1  every prefix P_i resolves (v4 and v6) to an identity X of pair i: (X - BASE) % N === i
 *   I2  the v4 and v6 prefixes of pair i give the same identity
 *   I3  the v4 leaf's prefix length matches X's generation (24 when even, 26 when odd)
 *   I4  the policy allows (ep 1, egress, X, TCP, port f(X)) with cookie X, and not f(X) + 1
 *   I5  the entry of an identity this reader saw earlier for pair i is gone once i moved on
 *   I6  the sum of the N identities equals the checksum word the writer published with them
 *   I7  the policy revision never goes back, and is stable within a batch
 *   I8  a packet from endpoint A to P_i with dport f(X) is forwarded to the host port with
 *       destination identity X and cookie X; with dport f(X) + 1 it is dropped with 133
 */
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { Pipeline } from '../../src/datapath/pipeline.js';
import { DROP_POLICY } from '../../src/datapath/drop.js';
import { ConntrackTable } from '../../src/tables/conntrack.js';
import { FragmentTable } from '../../src/tables/fragments.js';
import { EventRing, createCounters } from '../../src/tables/events.js';
import { M_POLICY_REVISION, TableSet, type TableSetShared } from '../../src/tables/tableset.js';
import { ipv4Tcp } from '../helpers/packets.js';

export interface ReaderData {
  shared: TableSetShared;
  readerSlot: number;
  /** Int32Array over a SAB: [0] stop flag, [1] readers ready count. */
  ctl: SharedArrayBuffer;
  n: number;
  base: number;
  sumWord: number;
  hostPort: number;
  epPort: number;
  /** Pipeline packets per batch (the rest of the pairs are checked by direct lookups). */
  packetsPerBatch: number;
}

export interface ReaderReport {
  slot: number;
  batches: number;
  checks: number;
  violations: number;
  /** Batches whose policy revision differed from the previous batch's. */
  revisionChanges: number;
  firstViolations: string[];
}

/** The port the policy allows for identity x (the writer uses the same function). */
export function portOf(x: number): number {
  return 1024 + ((Math.imul(x, 0x9e3779b1) >>> 0) % 60000);
}

export function addr4(i: number): number {
  return (0x0a020000 | (i << 8) | 5) >>> 0; // 10.2.i.5
}

const TCP = 6;

function main(): void {
  const d = workerData as ReaderData;
  const tables = TableSet.attach(d.shared);
  const ctCap = 1024;
  const ct = new ConntrackTable(new SharedArrayBuffer(ConntrackTable.bytesFor(ctCap)), 0, ctCap);
  const frags = new FragmentTable(new SharedArrayBuffer(FragmentTable.bytesFor(16)), 0, 16);
  const pipeline = new Pipeline(tables, ct, frags, createCounters(), EventRing.create(64), d.readerSlot);
  pipeline.eventsEnabled = false;
  const ctl = new Int32Array(d.ctl);
  const n = d.n;

  // One packet template from A (10.0.0.1) to 10.2.0.5:1; patched per packet.
  const tpl = ipv4Tcp({ src: '10.0.0.1', dst: '10.2.0.5', sport: 40000, dport: 1 });
  const buf = new Uint8Array(tpl.length);
  const dv = new DataView(buf.buffer);
  const l4 = (tpl[0]! & 0x0f) << 2;

  const lastSeen = new Int32Array(n).fill(-1);
  const rep: ReaderReport = { slot: d.readerSlot, batches: 0, checks: 0, violations: 0, revisionChanges: 0, firstViolations: [] };
  const fail = (msg: string): void => {
    rep.violations++;
    if (rep.firstViolations.length < 10) rep.firstViolations.push(`batch ${rep.batches}: ${msg}`);
  };
  const ok = (): void => {
    rep.checks++;
  };

  let lastRev = -1;
  let now = 1_700_000_000;
  let start = 0;
  Atomics.add(ctl, 1, 1);
  while (Atomics.load(ctl, 0) === 0) {
    pipeline.beginBatch(now, 0);
    const ipc = tables.ipcache;
    const pol = tables.policy;
    const rev = tables.meta[M_POLICY_REVISION] as number;
    // I7
    if (rev < lastRev) fail(`revision went back from ${lastRev} to ${rev}`);
    else ok();
    if (rev !== lastRev && lastRev >= 0) rep.revisionChanges++;
    lastRev = rev;

    let sum = 0;
    for (let i = 0; i < n; i++) {
      const leaf = ipc.lookup4(addr4(i));
      const x = leaf === 0 ? 0 : ipc.leafIdentity(leaf);
      sum = (sum + x) >>> 0;
      // I1
      if (leaf === 0 || x < d.base || (x - d.base) % n !== i) {
        fail(`pair ${i}: v4 leaf ${leaf} identity ${x} is not one of this pair`);
        continue;
      }
      ok();
      const gen = Math.floor((x - d.base) / n);
      // I2
      const leaf6 = ipc.lookup6(0xfd020000, (i << 16) >>> 0, 0, 5);
      const x6 = leaf6 === 0 ? 0 : ipc.leafIdentity(leaf6);
      if (x6 !== x) fail(`pair ${i}: v6 identity ${x6}, v4 identity ${x}`);
      else ok();
      // I3
      const len = ipc.leafPrefixLen(leaf);
      const wantLen = gen % 2 === 0 ? 24 : 26;
      if (len !== wantLen) fail(`pair ${i}: identity ${x} (generation ${gen}) on a /${len} leaf, want /${wantLen}`);
      else ok();
      // I4
      const p = portOf(x);
      const v = pol.lookup(1, 1, x, TCP, p);
      if (v !== 1 || pol.outCookie !== x) fail(`pair ${i}: policy for identity ${x} port ${p}: got ${v} cookie ${pol.outCookie}, want 1 cookie ${x}`);
      else ok();
      const v2 = pol.lookup(1, 1, x, TCP, p + 1);
      if (v2 !== 0) fail(`pair ${i}: policy for identity ${x} port ${p + 1}: got ${v2}, want 0`);
      else ok();
      // I5
      const prev = lastSeen[i] as number;
      if (prev >= 0 && prev !== x) {
        if (prev > x) fail(`pair ${i}: identity went back from ${prev} to ${x}`);
        const v3 = pol.lookup(1, 1, prev, TCP, portOf(prev));
        if (v3 !== 0) fail(`pair ${i}: entry of old identity ${prev} still present next to ${x}`);
        else ok();
      }
      lastSeen[i] = x;
    }
    // I6
    const want = tables.meta[d.sumWord] as number;
    if (sum !== want) fail(`identity sum ${sum}, published checksum ${want}`);
    else ok();

    // I8: through the whole pipeline.
    for (let k = 0; k < d.packetsPerBatch; k++) {
      const i = (start + k) % n;
      const leaf = ipc.lookup4(addr4(i));
      const x = leaf === 0 ? 0 : ipc.leafIdentity(leaf);
      const p = portOf(x);
      for (let probe = 0; probe < 2; probe++) {
        buf.set(tpl);
        dv.setUint32(16, addr4(i));
        dv.setUint16(l4 + 2, p + probe);
        const out = pipeline.process(buf, dv, 0, buf.length, d.epPort);
        if (probe === 0) {
          if (out !== d.hostPort || pipeline.outDstId !== x || pipeline.outCookie !== x) {
            fail(`pipeline pair ${i}: allowed port ${p}: out ${out} dstId ${pipeline.outDstId} cookie ${pipeline.outCookie}, want ${d.hostPort} ${x} ${x}`);
          } else ok();
        } else if (out !== DROP_POLICY) {
          fail(`pipeline pair ${i}: port ${p + 1}: out ${out}, want ${DROP_POLICY}`);
        } else ok();
      }
    }
    start = (start + d.packetsPerBatch) % n;

    // I7, within the batch.
    if ((tables.meta[M_POLICY_REVISION] as number) !== rev) fail('revision changed within a batch');
    else ok();
    pipeline.endBatch();
    rep.batches++;
    ct.flush();
    now++;
  }
  parentPort?.postMessage(rep);
}

// The test file imports portOf/addr4 from here; only a worker thread runs the loop.
if (!isMainThread) main();
