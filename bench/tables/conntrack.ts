/**
 * Conntrack benchmarks, on tables of a realistic size (tens of MB, beyond the CPU caches).
 *
 *   ct-hit     lookup() + update() of a live IPv4 TCP flow, what the pipeline does for every
 *              packet of a known flow. The table (HIT_CAPACITY slots, 128 B each) holds
 *              HIT_FLOWS flows (half full); the PacketInfos looked up are a rotating pool of
 *              POOL of them, picked at random, 25% in the reply direction.
 *   ct-create  create() of a flow not in the table (a TCP SYN; the pipeline has done the
 *              missing lookup() before). POOL distinct new flows rotate; the table
 *              (CREATE_CAPACITY slots) is flushed in beforeEach, untimed, before the pool
 *              wraps, so it never holds more than POOL entries (at most half full).
 */
import { PacketInfo, IPPROTO_TCP, TCP_ACK, TCP_SYN } from '../../src/datapath/packet.js';
import { ConntrackTable } from '../../src/tables/conntrack.js';
import type { Rand } from '../../test/helpers/rand.js';
import type { MicroCase } from '../micro.js';
import { NOW_S } from '../datapath/pipeline.js';

export const HIT_CAPACITY = 1 << 18;
export const HIT_FLOWS = 1 << 17;
export const CREATE_CAPACITY = 1 << 17;
export const POOL = 1 << 16;

function randomFlow(r: Rand, flags: number): PacketInfo {
  const pi = new PacketInfo();
  pi.family = 4;
  pi.proto = IPPROTO_TCP;
  pi.src0 = (0x0a000000 | r.int(1 << 24)) >>> 0;
  pi.dst0 = (0x0a000000 | r.int(1 << 24)) >>> 0;
  pi.sport = 1024 + r.int(64512);
  pi.dport = r.pick([80, 443, 8080, 5432]);
  pi.tcpFlags = flags;
  pi.totalLen = 60 + r.int(1400);
  pi.l4Off = 20;
  pi.ttl = 64;
  return pi;
}

function reversed(f: PacketInfo): PacketInfo {
  const pi = new PacketInfo();
  pi.family = f.family;
  pi.proto = f.proto;
  pi.src0 = f.dst0;
  pi.dst0 = f.src0;
  pi.sport = f.dport;
  pi.dport = f.sport;
  pi.tcpFlags = TCP_ACK;
  pi.totalLen = f.totalLen;
  pi.l4Off = 20;
  pi.ttl = 64;
  return pi;
}

export function conntrackCases(r: Rand, batch: number, quick: boolean): MicroCase[] {
  const shrink = quick ? 6 : 0;
  const hitCap = HIT_CAPACITY >> shrink;
  const hitFlows = HIT_FLOWS >> shrink;
  const createCap = CREATE_CAPACITY >> shrink;
  const pool = POOL >> shrink;

  // ---- ct-hit ----
  const hit = new ConntrackTable(new SharedArrayBuffer(ConntrackTable.bytesFor(hitCap)), 0, hitCap);
  const flows: PacketInfo[] = [];
  for (let i = 0; i < hitFlows; i++) {
    const f = randomFlow(r, TCP_ACK);
    if (hit.lookup(f, NOW_S) >= 0) continue; // a duplicate 5-tuple
    if (hit.create(f, 256 + r.int(1 << 20), NOW_S) < 0) throw new Error('ct bench set-up: table full');
    flows.push(f);
  }
  const hits: PacketInfo[] = [];
  for (let i = 0; i < pool; i++) {
    const f = r.pick(flows);
    hits.push(r.int(4) === 0 ? reversed(f) : f);
  }
  const hitMask = pool - 1;
  let hitCur = 0;
  let hitMiss = 0;

  // ---- ct-create ----
  const cr = new ConntrackTable(new SharedArrayBuffer(ConntrackTable.bytesFor(createCap)), 0, createCap);
  const fresh: PacketInfo[] = [];
  const seen = new Set<string>();
  while (fresh.length < pool) {
    const f = randomFlow(r, TCP_SYN);
    const k = `${f.src0}:${f.sport}:${f.dst0}:${f.dport}`;
    if (seen.has(k)) continue;
    seen.add(k);
    fresh.push(f);
  }
  let crCur = pool;
  let crBase = 0;
  let crFail = 0;

  return [
    {
      name: 'ct-hit',
      opsPerCall: batch,
      fn: () => {
        let miss = 0;
        const base = hitCur;
        for (let i = 0; i < batch; i++) {
          const pi = hits[(base + i) & hitMask] as PacketInfo;
          const idx = hit.lookup(pi, NOW_S);
          if (idx < 0) miss++;
          else hit.update(idx, pi, hit.lastDir, NOW_S);
        }
        hitCur = (base + batch) & hitMask;
        hitMiss += miss;
      },
      check: () => (hitMiss === 0 ? '' : `${hitMiss} lookups missed`),
      note: `lookup + update; ${hitCap} slots holding ${flows.length} IPv4 TCP flows; ${pool} PacketInfos rotating, 25% reply direction`,
    },
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
          if (cr.create(fresh[base + i] as PacketInfo, 1000, NOW_S) < 0) fail++;
        }
        crFail += fail;
      },
      check: () => (crFail === 0 ? '' : `${crFail} creates failed`),
      note: `create of a new IPv4 TCP SYN flow; ${createCap} slots, ${pool} distinct flows rotating, flushed (untimed) before reuse`,
    },
  ];
}
