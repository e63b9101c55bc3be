/**
 * Quick measurement of the ipcache: bulk-load time and reader lookup cost with many prefixes.
 * Run: node dist/bench/tables/ipcache.bench.js [prefixes]
 *
 * Address sets are generated up front into typed arrays, so the timed loops contain only the
 * lookups (and a sum that keeps the results alive).
 */
import { pathToFileURL } from 'node:url';
import { PublishControl, WriteLog } from '../../src/tables/publish.js';
import { Ipcache, IpcacheWriter } from '../../src/tables/ipcache.js';
import { Rand } from '../../test/helpers/rand.js';

export interface IpcacheBenchResult {
  prefixes4: number;
  prefixes6: number;
  v6Lengths: number;
  load4Ms: number;
  load6Ms: number;
  commitMs: number;
  /** ns per lookup4 + leafIdentity, uniformly random addresses (cache-cold tbl24). */
  lookup4RandomNs: number;
  /** ns per lookup4 + leafIdentity, addresses inside the /24s holding long prefixes (tbl8 path). */
  lookup4PodNs: number;
  /** ns per lookup4 + leafIdentity over a working set of 4096 destinations (cache-warm). */
  lookup4HotNs: number;
  /** ns per lookup4 alone (no leaf read), uniformly random addresses. */
  lookup4OnlyRandomNs: number;
  /** ns per lookup6 that hits an inserted address. */
  lookup6HitNs: number;
  /** ns per lookup6 that misses (probes every present length). */
  lookup6MissNs: number;
}

const kPods = 16384;
const kLens6 = [128, 120, 96, 64, 56, 48, 32, 16];

export function benchIpcache(opts: { prefixes?: number; lookups?: number; seed?: number } = {}): IpcacheBenchResult {
  const n = opts.prefixes ?? 1_000_000;
  const lookups = opts.lookups ?? 10_000_000;
  const r = new Rand(opts.seed ?? 1);
  const ctl = PublishControl.create();
  const log = new WriteLog(ctl);
  let cap6 = 2;
  while (cap6 * 7 < n * 8 + 8) cap6 *= 2;
  const ipc = Ipcache.create({ tbl8Groups: kPods, leaves: 2 * n + 1, v6Capacity: cap6 });
  const w = new IpcacheWriter(ipc, log);
  const pods = new Uint32Array(kPods);
  for (let i = 0; i < kPods; i++) pods[i] = (r.u32() & 0xffffff00) >>> 0;

  let t = process.hrtime.bigint();
  w.batch(() => {
    for (let i = 0; i < n; i++) {
      const len = r.range(8, 32);
      const a = len > 24 ? ((pods[r.int(kPods)] as number) | (r.u32() & 0xff)) >>> 0 : r.u32();
      w.upsert4(a, len, 256 + r.int(1 << 20));
    }
  });
  const load4Ms = Number(process.hrtime.bigint() - t) / 1e6;
  const some6 = new Uint32Array(4 * 65536);
  t = process.hrtime.bigint();
  const a6 = [0, 0, 0, 0];
  w.batch(() => {
    for (let i = 0; i < n; i++) {
      a6[0] = (0xfd000000 | r.int(256)) >>> 0;
      a6[1] = r.u32();
      a6[2] = r.u32();
      a6[3] = r.u32();
      w.upsert6(a6, r.pick(kLens6), 256 + r.int(1 << 20));
      if (i < 65536) some6.set(a6, 4 * i);
    }
  });
  const load6Ms = Number(process.hrtime.bigint() - t) / 1e6;
  t = process.hrtime.bigint();
  log.commit();
  const commitMs = Number(process.hrtime.bigint() - t) / 1e6;

  const m = 1 << 20;
  const rnd = new Uint32Array(m);
  const pod = new Uint32Array(m);
  const miss6 = new Uint32Array(4 * 65536);
  for (let i = 0; i < m; i++) {
    rnd[i] = r.u32();
    pod[i] = ((pods[r.int(kPods)] as number) | r.int(256)) >>> 0;
  }
  for (let i = 0; i < miss6.length; i++) miss6[i] = i % 4 === 0 ? 0x20010db8 : r.u32();

  const side = ctl.enter(0);
  ipc.useSide(side);
  const time4 = (addrs: Uint32Array): number => {
    let sum = 0;
    const mask = addrs.length - 1;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < lookups; i++) sum += ipc.leafIdentity(ipc.lookup4(addrs[i & mask] as number));
    const ns = Number(process.hrtime.bigint() - t0) / lookups;
    if (sum === -1) console.log(sum);
    return ns;
  };
  const time4only = (addrs: Uint32Array): number => {
    let sum = 0;
    const mask = addrs.length - 1;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < lookups; i++) sum += ipc.lookup4(addrs[i & mask] as number);
    const ns = Number(process.hrtime.bigint() - t0) / lookups;
    if (sum === -1) console.log(sum);
    return ns;
  };
  const time6 = (addrs: Uint32Array, count: number): number => {
    let sum = 0;
    const mask = addrs.length / 4 - 1;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < count; i++) {
      const b = (i & mask) << 2;
      sum += ipc.lookup6(addrs[b] as number, addrs[b + 1] as number, addrs[b + 2] as number, addrs[b + 3] as number);
    }
    const ns = Number(process.hrtime.bigint() - t0) / count;
    if (sum === -1) console.log(sum);
    return ns;
  };
  // Warm up (JIT) on small runs first.
  time4(rnd);
  const lookup4RandomNs = time4(rnd);
  const lookup4PodNs = time4(pod);
  const lookup4HotNs = time4(rnd.slice(0, 4096));
  time4only(rnd);
  const lookup4OnlyRandomNs = time4only(rnd);
  const n6 = Math.max(1, Math.floor(lookups / 4));
  time6(some6, n6);
  const lookup6HitNs = time6(some6, n6);
  const lookup6MissNs = time6(miss6, n6);
  ctl.leave(0);
  return {
    prefixes4: n,
    prefixes6: n,
    v6Lengths: kLens6.length,
    load4Ms,
    load6Ms,
    commitMs,
    lookup4RandomNs,
    lookup4PodNs,
    lookup4HotNs,
    lookup4OnlyRandomNs,
    lookup6HitNs,
    lookup6MissNs,
  };
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const n = process.argv[2] === undefined ? undefined : Number(process.argv[2]);
  console.log(benchIpcache(n === undefined ? {} : { prefixes: n }));
}
