/**
 * Conntrack benchmarks, on tables of a realistic size (tens of MB, beyond the CPU caches).
 *
 *   ct-hit     lookup() + update() of a live IPv4 TCP flow, what the pipeline does for every
 *              packet of a known flow. The table (HIT_CAPACITY slots, 128 B each) holds
 *              HIT_FLOWS flows (half full); the 5-tuples looked up are a rotating pool of
 *              POOL of them, picked at random, 25% in the reply direction.
 *   ct-hit-hot the same on HOT_FLOWS of those flows only (their entries stay in cache): the
 *              compute part of a hit, next to the cache and TLB misses of ct-hit.
 *   ct-create  create() of a flow not in the table (a TCP SYN; the pipeline has done the
 *              missing lookup() before). POOL distinct new 5-tuples rotate; the table
 *              (CREATE_CAPACITY slots) is flushed in beforeEach, untimed, before the pool
 *              wraps, so it never holds more than POOL entries (at most half full).
 *
 * Like the pipeline, both use one reused PacketInfo: each op first copies its 5-tuple and TCP
 * flags (5 words) from a typed array into it, as parsePacket would from the packet (~1-2 ns).
 */
import { PacketInfo } from '../../src/datapath/packet.js';
import { IPPROTO_TCP, TCP_ACK, TCP_SYN } from '../../src/proto/ip.js';
import { ConntrackTable } from '../../src/tables/conntrack.js';
import type { Rand } from '../../test/helpers/rand.js';
import type { MicroCase } from '../micro.js';
import { NOW_S } from '../datapath/pipeline.js';

export const HIT_CAPACITY = 1 << 18;
export const HIT_FLOWS = 1 << 17;
export const CREATE_CAPACITY = 1 << 17;
export const POOL = 1 << 16;
/** Flows in ct-hit-hot's working set. */
export const HOT_FLOWS = 1024;

/** 5-tuples and flags of flows, one row of FLOW_WORDS per flow (what parse reads from a packet). */
const FLOW_WORDS = 5;

class FlowKeys {
  readonly w: Uint32Array;
  n = 0;
  constructor(readonly capacity: number) {
    this.w = new Uint32Array(capacity * FLOW_WORDS);
  }
  add(src: number, dst: number, sport: number, dport: number, flags: number): void {
    const b = this.n++ * FLOW_WORDS;
    this.w[b] = src;
    this.w[b + 1] = dst;
    this.w[b + 2] = sport;
    this.w[b + 3] = dport;
    this.w[b + 4] = flags;
  }
}

/** Fills the reused PacketInfo with flow i of `k`, as parsePacket would from the packet. */
function load(pi: PacketInfo, k: Uint32Array, i: number): void {
  const b = i * FLOW_WORDS;
  pi.src0 = k[b] as number;
  pi.dst0 = k[b + 1] as number;
  pi.sport = k[b + 2] as number;
  pi.dport = k[b + 3] as number;
  pi.tcpFlags = k[b + 4] as number;
}

function newInfo(): PacketInfo {
  const pi = new PacketInfo();
  pi.family = 4;
  pi.proto = IPPROTO_TCP;
  pi.l3HdrLen = 20;
  pi.l4Off = 20;
  pi.totalLen = 576;
  pi.ttl = 64;
  return pi;
}

function randomTuple(r: Rand): [number, number, number, number] {
  return [(0x0a000000 | r.int(1 << 24)) >>> 0, (0x0a000000 | r.int(1 << 24)) >>> 0, 1024 + r.int(64512), r.pick([80, 443, 8080, 5432])];
}

export function conntrackCases(r: Rand, batch: number, quick: boolean): MicroCase[] {
  const shrink = quick ? 6 : 0;
  const hitCap = HIT_CAPACITY >> shrink;
  const hitFlows = HIT_FLOWS >> shrink;
  const createCap = CREATE_CAPACITY >> shrink;
  const pool = POOL >> shrink;

  // ---- ct-hit ----
  const hit = new ConntrackTable(new SharedArrayBuffer(ConntrackTable.bytesFor(hitCap)), 0, hitCap);
  const pi = newInfo();
  const live = new FlowKeys(hitFlows);
  const tmp = new FlowKeys(1);
  for (let i = 0; i < hitFlows; i++) {
    const [src, dst, sp, dp] = randomTuple(r);
    tmp.n = 0;
    tmp.add(src, dst, sp, dp, TCP_ACK);
    load(pi, tmp.w, 0);
    if (hit.lookup(pi, NOW_S) >= 0) continue; // a duplicate 5-tuple
    if (hit.create(pi, 256 + r.int(1 << 20), NOW_S) < 0) throw new Error('ct bench set-up: table full');
    live.add(src, dst, sp, dp, TCP_ACK);
  }
  const hits = new FlowKeys(pool);
  for (let i = 0; i < pool; i++) {
    const b = r.int(live.n) * FLOW_WORDS;
    const w = live.w;
    if (r.int(4) === 0) hits.add(w[b + 1] as number, w[b] as number, w[b + 3] as number, w[b + 2] as number, TCP_ACK);
    else hits.add(w[b] as number, w[b + 1] as number, w[b + 2] as number, w[b + 3] as number, TCP_ACK);
  }
  const hk = hits.w;

  // ---- ct-create ----
  const cr = new ConntrackTable(new SharedArrayBuffer(ConntrackTable.bytesFor(createCap)), 0, createCap);
  const fresh = new FlowKeys(pool);
  const seen = new Set<string>();
  while (fresh.n < pool) {
    const [src, dst, sp, dp] = randomTuple(r);
    const k = `${src}:${sp}:${dst}:${dp}`;
    if (seen.has(k)) continue;
    seen.add(k);
    fresh.add(src, dst, sp, dp, TCP_SYN);
  }
  const fk = fresh.w;
  let crCur = pool;
  let crBase = 0;
  let crFail = 0;

  return [
    hitCase('ct-hit', hit, pi, hk, pool, batch,
      `lookup + update; ${hitCap} slots holding ${live.n} IPv4 TCP flows; ${pool} 5-tuples rotating, 25% reply direction`),
    hitCase('ct-hit-hot', hit, pi, hk, Math.min(HOT_FLOWS, pool), batch,
      `as ct-hit, but a working set of ${Math.min(HOT_FLOWS, pool)} flows (cache-warm entries)`),
    {
      name: 'ct-create',
      opsPerCall: batch,
      beforeEach: () => {
        if (crCur + batch > pool) {
          cr.flush();
          crCur = 0;
        }
        crBase = crCur;
        crCur += batch;
      },
      fn: () => {
        let fail = 0;
        const base = crBase;
        for (let i = 0; i < batch; i++) {
          load(pi, fk, base + i);
          if (cr.create(pi, 1000, NOW_S) < 0) fail++;
        }
        crFail += fail;
      },
      check: () => (crFail === 0 ? '' : `${crFail} creates failed`),
      note: `create of a new IPv4 TCP SYN flow; ${createCap} slots, ${pool} distinct 5-tuples rotating, table flushed (untimed) before reuse`,
    },
  ];
}

/** lookup + update over the first `pool` 5-tuples of `keys` (a power of two), rotating. */
function hitCase(name: string, ct: ConntrackTable, pi: PacketInfo, keys: Uint32Array, pool: number, batch: number, note: string): MicroCase {
  const mask = pool - 1;
  let cur = 0;
  let misses = 0;
  return {
    name,
    opsPerCall: batch,
    fn: () => {
      let miss = 0;
      const base = cur;
      for (let i = 0; i < batch; i++) {
        load(pi, keys, (base + i) & mask);
        const idx = ct.lookup(pi, NOW_S);
        if (idx < 0) miss++;
        else ct.update(idx, pi, ct.lastDir, NOW_S);
      }
      cur = (base + batch) & mask;
      misses += miss;
    },
    check: () => (misses === 0 ? '' : `${misses} lookups missed`),
    note,
  };
}
