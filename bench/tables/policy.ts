/**
 * Policy table benchmarks.
 *
 *   policy-lookup        PolicyTable.lookup() for endpoint B, ingress, in a table holding the
 *                        policies of SCENARIO_ENDPOINTS endpoints (ENTRIES_PER_DIR entries per
 *                        endpoint and direction). B's set, like every other, mixes what
 *                        compiled CiliumNetworkPolicies produce: L3+L4 rules on exact ports
 *                        (/24), 16-port ranges (/20), L4-only rules (identity 0), L3+protocol
 *                        (/8), L3-only (/0), ICMP types, and a few denies, so a lookup first
 *                        probes the deny lengths, then the allow lengths from the longest.
 *                        Queried: 80% flows some entry allows (or denies), 20% flows nothing
 *                        matches (every present length is probed).
 *   publish-100k-policy  one op = add PUBLISH_ENTRIES entries (over 500 endpoints, both
 *                        directions, the same mix) to an empty PolicyTable of TableSet's default
 *                        capacity through PolicyTableWriter, then WriteLog.commit(). The
 *                        entries are built beforehand (compiling is not publishing); the table,
 *                        log and writer are made fresh in beforeEach, untimed.
 */
import { L4_FULL_PREFIX, L4_PROTO_PREFIX, PolicyTable, PolicyTableWriter, type PolicyEntry } from '../../src/tables/policy.js';
import { DIR_EGRESS, DIR_INGRESS } from '../../src/proto/direction.js';
import { PublishControl, WriteLog } from '../../src/tables/publish.js';
import type { TableSetWriter } from '../../src/tables/tableset.js';
import type { Rand } from '../../test/helpers/rand.js';
import type { MicroCase } from '../micro.js';
import {
  EP_A,
  EP_B,
  SCENARIO_ENDPOINTS,
  SERVER_PORT,
  endpointIdentity,
} from '../datapath/pipeline.js';

/** Issue target: 100k policy entries published in at most 1 s. */
export const TARGET_PUBLISH_100K_NS = 1e9;
export const ENTRIES_PER_DIR = 200;
export const PUBLISH_ENTRIES = 100_000;
/** TableSet's default policy capacity (the publish benchmark uses the same). */
const kPolicyCapacity = 1 << 18;

const kTcp = 6;
const kUdp = 17;
const kIcmp = 1;
const kCommonPorts = [80, 443, 8080, 8443, 5432, 3306, 6379, 9090, 9100, 2379, 53, 25, 11211, 27017, 5672, 4222];

/** Remote identities policies name (workload identities, plus the reserved world/host). */
function identityPool(r: Rand, n: number): number[] {
  const ids = [1, 2];
  for (let i = 0; i < n; i++) ids.push(256 + r.int(1 << 20));
  return ids;
}

function keyOf(e: PolicyEntry): string {
  const m = e.prefixLen === 0 ? 0 : ((0xffffff << (L4_FULL_PREFIX - e.prefixLen)) & 0xffffff);
  return `${e.ep}/${e.dir}/${e.identity}/${(((e.proto << 16) | e.port) & m) >>> 0}/${e.prefixLen}`;
}

/**
 * Appends `n` entries with distinct keys for (ep, dir): the mix described in the file
 * comment. `ids` are the remote identities allow rules name, `denyIds` those deny rules name.
 */
export function realisticEntries(
  r: Rand, ep: number, dir: 0 | 1, n: number, ids: readonly number[], denyIds: readonly number[],
  out: PolicyEntry[], seen: Set<string>, cookie: { next: number },
): void {
  let made = 0;
  while (made < n) {
    const k = r.int(100);
    const e: PolicyEntry = { ep, dir, identity: r.pick(ids), proto: kTcp, port: 0, prefixLen: L4_FULL_PREFIX, deny: false, cookie: 0 };
    if (k < 55) {
      e.proto = r.bool(0.85) ? kTcp : kUdp;
      e.port = r.bool(0.6) ? r.pick(kCommonPorts) : 1024 + r.int(64512);
    } else if (k < 65) {
      e.port = (64 + r.int(4032)) << 4; // a 16-port block above 1023
      e.prefixLen = L4_FULL_PREFIX - 4;
    } else if (k < 75) {
      e.identity = 0;
      e.proto = r.bool(0.5) ? kTcp : kUdp;
      e.port = r.pick(kCommonPorts);
    } else if (k < 83) {
      e.proto = r.bool(0.7) ? kTcp : kUdp;
      e.prefixLen = L4_PROTO_PREFIX;
    } else if (k < 90) {
      e.proto = 0;
      e.prefixLen = 0;
    } else if (k < 96) {
      e.proto = kIcmp;
      e.port = r.pick([0, 8]);
    } else {
      e.identity = r.pick(denyIds);
      e.port = r.pick([22, 23, 3389, 1024 + r.int(64512)]);
      e.deny = true;
    }
    const key = keyOf(e);
    if (seen.has(key)) continue;
    seen.add(key);
    e.cookie = cookie.next++;
    out.push(e);
    made++;
  }
}

export interface PolicyFixture {
  entries: number;
  /** B's ingress entries (what policy-lookup queries). */
  ingressB: PolicyEntry[];
  ids: number[];
}

/**
 * Writes the scenario's policies: perDir (default ENTRIES_PER_DIR) realistic entries per endpoint and
 * direction, plus the two entries the pipeline flow needs (A egress to B on TCP/80, B ingress
 * from A on TCP/80). Deny rules only name identities outside the scenario's endpoints.
 */
export function populatePolicy(w: TableSetWriter, r: Rand, perDir = ENTRIES_PER_DIR): PolicyFixture {
  const ids = identityPool(r, 48);
  for (let ep = 0; ep < 8; ep++) ids.push(endpointIdentity(ep));
  const denyIds = identityPool(r, 4).slice(2);
  const all: PolicyEntry[] = [];
  const seen = new Set<string>();
  const cookie = { next: 1 };
  const flowEntries: PolicyEntry[] = [
    { ep: EP_A, dir: DIR_EGRESS, identity: endpointIdentity(EP_B), proto: kTcp, port: SERVER_PORT, prefixLen: L4_FULL_PREFIX, deny: false, cookie: 0 },
    { ep: EP_B, dir: DIR_INGRESS, identity: endpointIdentity(EP_A), proto: kTcp, port: SERVER_PORT, prefixLen: L4_FULL_PREFIX, deny: false, cookie: 0 },
  ];
  for (const e of flowEntries) {
    seen.add(keyOf(e));
    e.cookie = cookie.next++;
    all.push(e);
  }
  for (let ep = 0; ep < SCENARIO_ENDPOINTS; ep++) {
    realisticEntries(r, ep, DIR_INGRESS, perDir, ids, denyIds, all, seen, cookie);
    realisticEntries(r, ep, DIR_EGRESS, perDir, ids, denyIds, all, seen, cookie);
  }
  for (const e of all) w.policy.add(e);
  w.bumpPolicyRevision();
  return { entries: all.length, ingressB: all.filter((e) => e.ep === EP_B && e.dir === DIR_INGRESS), ids };
}

export function policyLookupCases(pol: PolicyTable, fx: PolicyFixture, r: Rand, batch: number): MicroCase[] {
  const qId = new Uint32Array(batch);
  const qProto = new Uint8Array(batch);
  const qPort = new Uint16Array(batch);
  for (let i = 0; i < batch; i++) {
    if (r.int(10) < 8) {
      const e = r.pick(fx.ingressB);
      qId[i] = e.identity !== 0 ? e.identity : r.pick(fx.ids);
      qProto[i] = e.prefixLen === 0 ? r.pick([kTcp, kUdp]) : e.proto;
      const hostBits = e.prefixLen <= L4_PROTO_PREFIX ? 16 : L4_FULL_PREFIX - e.prefixLen;
      qPort[i] = e.prefixLen <= L4_PROTO_PREFIX ? r.int(65536) : e.port | r.int(1 << hostBits);
    } else {
      qId[i] = 256 + r.int(1 << 20);
      qProto[i] = kTcp;
      qPort[i] = 1024 + r.int(64512);
    }
  }
  const counts = new Float64Array(3); // deny, none, allow
  return [
    {
      name: 'policy-lookup',
      opsPerCall: batch,
      fn: () => {
        for (let i = 0; i < batch; i++) {
          const v = pol.lookup(EP_B, DIR_INGRESS, qId[i] as number, qProto[i] as number, qPort[i] as number);
          counts[v + 1]++;
        }
      },
      check: () => ((counts[0] as number) + (counts[2] as number) === 0 ? 'no lookup matched an entry' : ''),
      note: `endpoint B ingress, ${fx.ingressB.length} entries (lengths 24/20/8/0, ICMP, denies) in a table of ${fx.entries}; 80% matching flows, 20% unmatched`,
    },
  ];
}

export function publishCases(r: Rand, n: number): MicroCase[] {
  const ids = identityPool(r, 256);
  const denyIds = identityPool(r, 8).slice(2);
  const entries: PolicyEntry[] = [];
  const seen = new Set<string>();
  const cookie = { next: 1 };
  const perDir = Math.max(1, Math.ceil(n / 1000));
  for (let ep = 0; entries.length < n; ep++) {
    const dir = (ep & 1) as 0 | 1;
    realisticEntries(r, ep >> 1, dir, Math.min(perDir, n - entries.length), ids, denyIds, entries, seen, cookie);
  }
  let table = PolicyTable.create({ capacity: kPolicyCapacity, maxEndpoints: 4096 });
  let log = new WriteLog(PublishControl.create());
  let writer = new PolicyTableWriter(table, log);
  let published = 0;
  return [
    {
      name: 'publish-100k-policy',
      opsPerCall: 1,
      beforeEach: () => {
        table = PolicyTable.create({ capacity: kPolicyCapacity, maxEndpoints: 4096 });
        log = new WriteLog(PublishControl.create());
        writer = new PolicyTableWriter(table, log);
      },
      fn: () => {
        for (let i = 0; i < entries.length; i++) writer.add(entries[i] as PolicyEntry);
        log.commit();
        published = writer.size;
      },
      target: TARGET_PUBLISH_100K_NS,
      check: () => (published === n ? '' : `published ${published} entries, want ${n}`),
      note: `${n} entries (${Math.ceil(n / perDir / 2)} endpoints x 2 directions) added to an empty table of ${kPolicyCapacity} slots, then one commit(); nsPerOp is the whole publish`,
    },
  ];
}
