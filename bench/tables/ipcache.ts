/**
 * ipcache lookups with 1M prefixes per family loaded (the micro suite; the bulk-load and
 * commit costs are measured by bench/tables/ipcache.bench.ts).
 *
 *   ipcache-v4-1M  lookup4, and leafIdentity on a hit (as the pipeline does). Loaded:
 *                  1M prefixes, lengths uniform in 8..32; prefixes up to /24 anywhere,
 *                  longer ones inside POD_SUBNETS /24s (endpoint /32s cluster in pod CIDRs,
 *                  and tbl8 groups are bounded). Looked up: LOOKUP_POOL addresses, half
 *                  uniformly random (tbl24 path, mostly cache-cold), half inside the pod /24s
 *                  (tbl24 + tbl8 path), read in pool order so consecutive lookups touch
 *                  unrelated cache lines.
 *   ipcache-v6-1M  lookup6 + leafIdentity. Loaded: 1M prefixes in fd00::/8, 10% /48, 30% /64,
 *                  60% /128 (the probe list is then [128, 64, 48]). Looked up: 80% addresses
 *                  inside a loaded prefix (random host bits), 20% misses (2001:db8::/32).
 *   ipcache-v{4,6}-1M-hot  the same tables and address mixes, but only HOT_SET distinct
 *                  destinations, so the table lines they need stay in cache: the cost of the
 *                  LPM itself, next to the cost of its cache misses above. Real traffic sits
 *                  between the two (destinations repeat, but not only 4096 of them).
 */
import { IPCACHE_FLAG_LOCAL, type Ipcache } from '../../src/tables/ipcache.js';
import type { TableSetWriter } from '../../src/tables/tableset.js';
import type { Rand } from '../../test/helpers/rand.js';
import type { MicroCase } from '../micro.js';
import { SCENARIO_ENDPOINTS, endpointIdentity, endpointIpv4 } from '../datapath/pipeline.js';

/** Issue target for one LPM with 1M prefixes, ns. */
export const TARGET_LPM_NS = 40;
export const POD_SUBNETS = 16384;
/** Addresses looked up, rotating (a power of two). */
export const LOOKUP_POOL = 1 << 20;
const kV6Pool = 1 << 16;
/** Destinations in the cache-warm variants (a power of two). */
export const HOT_SET = 4096;

export interface IpcacheFixture {
  /** The pod /24s (address with the last byte 0). */
  pods: Uint32Array;
  /** Up to kV6Pool loaded IPv6 prefixes: 4 words each, and their lengths. */
  v6Prefixes: Uint32Array;
  v6Lens: Uint8Array;
  v6Count: number;
}

/**
 * Adds n4 IPv4 prefixes of lengths minLen4..32, n6 IPv6 prefixes and the scenario endpoints'
 * /32s through the writer. (Quick mode raises minLen4: the short prefixes, not their number,
 * make a load slow, since a /8 rewrites 65536 tbl24 slots.)
 */
export function loadIpcache(w: TableSetWriter, r: Rand, n4: number, n6: number, minLen4 = 8): IpcacheFixture {
  const pods = new Uint32Array(POD_SUBNETS);
  for (let i = 0; i < POD_SUBNETS; i++) pods[i] = (r.u32() & 0xffffff00) >>> 0;
  const v6Prefixes = new Uint32Array(4 * kV6Pool);
  const v6Lens = new Uint8Array(kV6Pool);
  let v6Count = 0;
  const ipc = w.ipcache;
  ipc.batch(() => {
    for (let i = 0; i < n4; i++) {
      const len = r.range(minLen4, 32);
      const a = len > 24 ? ((pods[r.int(POD_SUBNETS)] as number) | r.int(256)) >>> 0 : r.u32();
      ipc.upsert4(a, len, 256 + r.int(1 << 20));
    }
    const a6 = [0, 0, 0, 0];
    for (let i = 0; i < n6; i++) {
      a6[0] = (0xfd000000 | r.int(1 << 24)) >>> 0;
      a6[1] = r.u32();
      a6[2] = r.u32();
      a6[3] = r.u32();
      const k = r.int(10);
      const len = k < 1 ? 48 : k < 4 ? 64 : 128;
      ipc.upsert6(a6, len, 256 + r.int(1 << 20));
      if (v6Count < kV6Pool) {
        v6Prefixes.set(a6, 4 * v6Count);
        v6Lens[v6Count++] = len;
      }
    }
    for (let ep = 0; ep < SCENARIO_ENDPOINTS; ep++) ipc.upsert4(endpointIpv4(ep), 32, endpointIdentity(ep), 0, IPCACHE_FLAG_LOCAL);
  });
  return { pods, v6Prefixes, v6Lens, v6Count };
}

export function ipcacheCases(ipc: Ipcache, fx: IpcacheFixture, r: Rand, batch: number): MicroCase[] {
  const addrs = new Uint32Array(LOOKUP_POOL);
  for (let i = 0; i < LOOKUP_POOL; i++) {
    addrs[i] = (i & 1) === 0 ? r.u32() : ((fx.pods[r.int(POD_SUBNETS)] as number) | r.int(256)) >>> 0;
  }

  const q6 = new Uint32Array(4 * kV6Pool);
  for (let i = 0; i < kV6Pool; i++) {
    if (r.int(10) < 8 && fx.v6Count > 0) {
      const p = r.int(fx.v6Count);
      const len = fx.v6Lens[p] as number;
      for (let w = 0; w < 4; w++) {
        const bits = Math.min(32, Math.max(0, len - 32 * w));
        const m = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
        q6[4 * i + w] = (((fx.v6Prefixes[4 * p + w] as number) & m) | (r.u32() & ~m)) >>> 0;
      }
    } else {
      q6[4 * i] = 0x20010db8;
      q6[4 * i + 1] = r.u32();
      q6[4 * i + 2] = r.u32();
      q6[4 * i + 3] = r.u32();
    }
  }
  return [
    v4Case(ipc, 'ipcache-v4-1M', addrs, LOOKUP_POOL, batch,
      `lookup4 + leafIdentity (on a hit); ${LOOKUP_POOL} addresses rotating, half random, half in the ${POD_SUBNETS} pod /24s holding the >/24 prefixes`),
    v6Case(ipc, 'ipcache-v6-1M', q6, kV6Pool, batch,
      `lookup6 + leafIdentity (on a hit); prefixes 10% /48, 30% /64, 60% /128; ${kV6Pool} addresses rotating, 80% hits, 20% misses`),
    v4Case(ipc, 'ipcache-v4-1M-hot', addrs, HOT_SET, batch,
      `as ipcache-v4-1M, but the addresses are a working set of ${HOT_SET} destinations (cache-warm)`),
    v6Case(ipc, 'ipcache-v6-1M-hot', q6, HOT_SET, batch,
      `as ipcache-v6-1M, but the addresses are a working set of ${HOT_SET} destinations (cache-warm)`),
  ];
}

/** IPv4 lookups over the first `pool` addresses of `addrs` (a power of two), rotating. */
function v4Case(ipc: Ipcache, name: string, addrs: Uint32Array, pool: number, batch: number, note: string): MicroCase {
  const mask = pool - 1;
  let cur = 0;
  let sink = 0;
  let misses = 0;
  let lookups = 0;
  return {
    name,
    opsPerCall: batch,
    fn: () => {
      let s = 0;
      let miss = 0;
      const base = cur;
      for (let i = 0; i < batch; i++) {
        const leaf = ipc.lookup4(addrs[(base + i) & mask] as number);
        if (leaf === 0) miss++;
        else s += ipc.leafIdentity(leaf);
      }
      cur = (base + batch) & mask;
      lookups += batch;
      misses += miss;
      sink ^= s;
    },
    target: TARGET_LPM_NS,
    check: () => (misses < lookups ? '' : `no IPv4 lookup hit (sum ${sink})`),
    note,
  };
}

/** IPv6 lookups over the first `pool` addresses of `q6` (4 words each), rotating. */
function v6Case(ipc: Ipcache, name: string, q6: Uint32Array, pool: number, batch: number, note: string): MicroCase {
  const mask = pool - 1;
  let cur = 0;
  let sink = 0;
  let misses = 0;
  let lookups = 0;
  return {
    name,
    opsPerCall: batch,
    fn: () => {
      let s = 0;
      let miss = 0;
      const base = cur;
      for (let i = 0; i < batch; i++) {
        const b = ((base + i) & mask) << 2;
        const leaf = ipc.lookup6(q6[b] as number, q6[b + 1] as number, q6[b + 2] as number, q6[b + 3] as number);
        if (leaf === 0) miss++;
        else s += ipc.leafIdentity(leaf);
      }
      cur = (base + batch) & mask;
      lookups += batch;
      misses += miss;
      sink ^= s;
    },
    target: TARGET_LPM_NS,
    check: () => (misses > 0 && misses < lookups ? '' : `IPv6 misses ${misses} of ${lookups}: the hit/miss mix is not exercised (sum ${sink})`),
    note,
  };
}
