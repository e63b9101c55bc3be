/**
 * A test world for the lxc pipeline: the published tables (TableSet + TableSetWriter), one
 * shard's conntrack and fragment tables, counters, an event ring and a Pipeline over them,
 * with a controllable clock.
 *
 *   const w = makeWorld();
 *   w.endpoint({ ep: 1, identity: 1001, ipv4: '10.0.0.1', port: 11, egress: true });
 *   w.allow({ ep: 1, dir: DIR_EGRESS, identity: 1002, proto: PROTO_TCP, port: 80, cookie: 7 });
 *   const r = w.run(ipv4Tcp({ src: '10.0.0.1', dst: '10.0.0.2', sport: 1, dport: 80 }), 11);
 *
 * Table changes made through the helpers are published by `commit()`; `run()` commits any
 * pending change first, so a scenario reads top to bottom. Every commit that follows a change
 * of endpoints, policy, ipcache or config bumps the policy revision, as the control plane does
 * for changes that can alter a verdict.
 *
 * The world is for tests: it allocates freely. Only the Pipeline inside runs the hot path.
 */
import { Pipeline } from '../../src/datapath/pipeline.js';
import { ConntrackTable, type ConntrackOptions } from '../../src/tables/conntrack.js';
import { FragmentTable, type FragmentOptions } from '../../src/tables/fragments.js';
import { EP_AUDIT, EP_ENFORCE_EGRESS, EP_ENFORCE_INGRESS } from '../../src/tables/endpoints.js';
import {
  EventReader,
  EventRing,
  createCounters,
  dropBytesSlot,
  dropPacketsSlot,
  forwardBytesSlot,
  forwardPacketsSlot,
  totalDropped,
} from '../../src/tables/events.js';
import { IPCACHE_FLAG_HOST, IPCACHE_FLAG_LOCAL } from '../../src/tables/ipcache.js';
import { L4_FULL_PREFIX, type PolicyEntry } from '../../src/tables/policy.js';
import {
  CFG_ALLOW_LOCALHOST,
  CFG_AUDIT,
  CFG_HOST_PORT,
  M_CONFIG_FLAGS,
  M_HOST_PORT,
  M_POLICY_REVISION,
  TableSet,
  TableSetWriter,
  type TableSetOptions,
} from '../../src/tables/tableset.js';
import { ip4, ip6 } from './packets.js';

import { ID_HOST, ID_WORLD } from '../../src/proto/identity.js';

export { ID_HOST, ID_WORLD };

/** Small tables: the ipcache's tbl24 is fixed-size, everything else is kept tiny. */
export const SMALL_TABLES: TableSetOptions = {
  ipcache: { tbl8Groups: 64, leaves: 4096, v6Capacity: 1024 },
  policyCapacity: 1 << 12,
  maxEndpoints: 64,
};

export interface WorldOptions {
  tables?: TableSetOptions;
  /** Conntrack slots (power of two >= 8). Default 1024. */
  ctCapacity?: number;
  ct?: ConntrackOptions;
  /** Fragment table slots. Default 256. */
  fragCapacity?: number;
  frag?: FragmentOptions;
  /** Event ring records. Default 4096. */
  eventCapacity?: number;
  /** Start of the clock, seconds. Default 1_700_000_000. */
  now?: number;
  readerSlot?: number;
}

export interface EndpointSpec {
  ep: number;
  identity: number;
  ipv4?: string;
  ipv6?: string;
  /** TUN port of the endpoint (input and output). */
  port: number;
  ingress?: boolean;
  egress?: boolean;
  audit?: boolean;
  /** Also put the endpoint's addresses in the ipcache (as Cilium does). Default true. */
  ipcache?: boolean;
}

/** A policy entry; defaults: identity 0 (any), proto 0, port 0, prefix /24 when a port is given. */
export interface RuleSpec {
  ep: number;
  dir: 0 | 1;
  identity?: number;
  proto?: number;
  port?: number;
  prefixLen?: number;
  cookie?: number;
}

export interface RunResult {
  /** process() return value: output port (>= 0) or a negative drop code. */
  out: number;
  reason: number;
  matchType: number;
  cookie: number;
  srcId: number;
  dstId: number;
  ctState: number;
  dir: number;
  audited: number;
  ipcacheMiss: number;
  srcEp: number;
  dstEp: number;
  tunnel: number;
  /** The packet bytes after processing (TTL decremented when forwarded). */
  bytes: Uint8Array;
}

export interface EventView {
  type: number;
  timeS: number;
  reason: number;
  verdict: number;
  dir: number;
  srcId: number;
  dstId: number;
  family: number;
  proto: number;
  ports: number;
  src: number[];
  dst: number[];
  tcpFlags: number;
  ctState: number;
  matchType: number;
  isReply: number;
  ipcacheMiss: number;
  audited: number;
  cookie: number;
  srcEp: number;
  dstEp: number;
  length: number;
}

/** Offset at which run() places a packet in its buffer (non-zero on purpose). */
const RUN_OFFSET = 64;

export class World {
  readonly tables: TableSet;
  readonly writer: TableSetWriter;
  readonly ct: ConntrackTable;
  readonly frags: FragmentTable;
  readonly counters: Float64Array;
  readonly events: EventRing;
  readonly pipeline: Pipeline;
  /** Clock in seconds and milliseconds within the second, as the shard loop passes it. */
  now: number;
  nowMs = 0;
  private dirty = false;
  private cfg = 0;
  private buf = new Uint8Array(4096);
  private dv = new DataView(this.buf.buffer);

  constructor(opts: WorldOptions = {}) {
    this.tables = TableSet.create(opts.tables ?? SMALL_TABLES);
    this.writer = new TableSetWriter(this.tables);
    const ctCap = opts.ctCapacity ?? 1024;
    this.ct = new ConntrackTable(new SharedArrayBuffer(ConntrackTable.bytesFor(ctCap)), 0, ctCap, opts.ct);
    const fragCap = opts.fragCapacity ?? 256;
    this.frags = new FragmentTable(new SharedArrayBuffer(FragmentTable.bytesFor(fragCap)), 0, fragCap, opts.frag);
    this.counters = createCounters();
    this.events = EventRing.create(opts.eventCapacity ?? 4096);
    this.pipeline = new Pipeline(this.tables, this.ct, this.frags, this.counters, this.events, opts.readerSlot ?? 0);
    this.now = opts.now ?? 1_700_000_000;
  }

  // ---- tables ----

  /** Adds or replaces an endpoint, its port mapping, and (by default) its ipcache entries. */
  endpoint(s: EndpointSpec): this {
    const flags =
      (s.ingress ? EP_ENFORCE_INGRESS : 0) | (s.egress ? EP_ENFORCE_EGRESS : 0) | (s.audit ? EP_AUDIT : 0);
    const rec: { identity: number; port: number; flags: number; ipv4?: number; ipv6?: number[] } = {
      identity: s.identity,
      port: s.port,
      flags,
    };
    if (s.ipv4 !== undefined) rec.ipv4 = ip4(s.ipv4);
    if (s.ipv6 !== undefined) rec.ipv6 = ip6(s.ipv6);
    this.writer.endpoints.upsert(s.ep, rec);
    this.writer.setPortEndpoint(s.port, s.ep);
    if (s.ipcache !== false) {
      if (s.ipv4 !== undefined) this.writer.ipcache.upsert(`${s.ipv4}/32`, { identity: s.identity, flags: IPCACHE_FLAG_LOCAL });
      if (s.ipv6 !== undefined) this.writer.ipcache.upsert(`${s.ipv6}/128`, { identity: s.identity, flags: IPCACHE_FLAG_LOCAL });
    }
    this.dirty = true;
    return this;
  }

  /** Removes an endpoint record (the port mapping stays, as after a half-done teardown). */
  removeEndpoint(ep: number): this {
    this.writer.endpoints.remove(ep);
    this.dirty = true;
    return this;
  }

  /** ipcache prefix -> identity (optional tunnel endpoint as a dotted IPv4). */
  ipcache(cidr: string, identity: number, tunnel?: string): this {
    this.writer.ipcache.upsert(cidr, { identity, tunnel: tunnel === undefined ? 0 : ip4(tunnel) });
    this.dirty = true;
    return this;
  }

  deleteIpcache(cidr: string): this {
    this.writer.ipcache.delete(cidr);
    this.dirty = true;
    return this;
  }

  allow(r: RuleSpec): this {
    this.writer.policy.add(this.entry(r, false));
    this.dirty = true;
    return this;
  }

  deny(r: RuleSpec): this {
    this.writer.policy.add(this.entry(r, true));
    this.dirty = true;
    return this;
  }

  removeRule(r: RuleSpec): boolean {
    const e = this.entry(r, false);
    const ok = this.writer.policy.remove(e);
    this.dirty = true;
    return ok;
  }

  /** Removes every policy entry of endpoint `ep` (both directions). */
  clearPolicy(ep: number): this {
    this.writer.policy.clearEndpoint(ep);
    this.dirty = true;
    return this;
  }

  /** The host port: output for non-local destinations, source of host/remote traffic. */
  hostPort(port: number, hostAddr?: string): this {
    this.cfg |= CFG_HOST_PORT;
    this.writer.setMeta(M_CONFIG_FLAGS, this.cfg);
    this.writer.setMeta(M_HOST_PORT, port);
    if (hostAddr !== undefined) {
      this.writer.ipcache.upsert(hostAddr.includes(':') ? `${hostAddr}/128` : `${hostAddr}/32`, {
        identity: ID_HOST,
        flags: IPCACHE_FLAG_HOST,
      });
    }
    this.dirty = true;
    return this;
  }

  noHostPort(): this {
    this.cfg &= ~CFG_HOST_PORT;
    this.writer.setMeta(M_CONFIG_FLAGS, this.cfg);
    this.dirty = true;
    return this;
  }

  /** allow-localhost (CFG_ALLOW_LOCALHOST): ingress from reserved:host allowed unless denied. */
  allowLocalhost(on: boolean): this {
    this.cfg = on ? this.cfg | CFG_ALLOW_LOCALHOST : this.cfg & ~CFG_ALLOW_LOCALHOST;
    this.writer.setMeta(M_CONFIG_FLAGS, this.cfg);
    this.dirty = true;
    return this;
  }

  /** Agent-wide policy audit mode (CFG_AUDIT). */
  audit(on: boolean): this {
    this.cfg = on ? this.cfg | CFG_AUDIT : this.cfg & ~CFG_AUDIT;
    this.writer.setMeta(M_CONFIG_FLAGS, this.cfg);
    this.dirty = true;
    return this;
  }

  /** Publishes pending changes (bumping the policy revision if anything changed). */
  commit(): number {
    if (this.dirty) this.writer.bumpPolicyRevision();
    this.dirty = false;
    if (this.writer.log.pending === 0) return this.tables.control.revision();
    return this.writer.commit();
  }

  /** The policy revision the next batch will see (after a commit). */
  get revision(): number {
    return this.tables.metaSides[this.tables.control.active()][M_POLICY_REVISION] as number;
  }

  private entry(r: RuleSpec, deny: boolean): PolicyEntry {
    const port = r.port ?? 0;
    const proto = r.proto ?? 0;
    const prefixLen = r.prefixLen ?? (proto === 0 ? 0 : r.port === undefined ? 8 : L4_FULL_PREFIX);
    return { ep: r.ep, dir: r.dir, identity: r.identity ?? 0, proto, port, prefixLen, deny, cookie: r.cookie ?? 0 };
  }

  // ---- packets ----

  /** Runs one packet that entered from `inPort` as a batch of one. */
  run(pkt: Uint8Array, inPort: number): RunResult {
    this.commit();
    if (RUN_OFFSET + pkt.length > this.buf.length) {
      this.buf = new Uint8Array(RUN_OFFSET + pkt.length);
      this.dv = new DataView(this.buf.buffer);
    }
    this.buf.fill(0xee);
    this.buf.set(pkt, RUN_OFFSET);
    const p = this.pipeline;
    p.beginBatch(this.now, this.nowMs);
    let out: number;
    try {
      out = p.process(this.buf, this.dv, RUN_OFFSET, pkt.length, inPort);
    } finally {
      p.endBatch();
    }
    return {
      out,
      reason: p.outReason,
      matchType: p.outMatchType,
      cookie: p.outCookie,
      srcId: p.outSrcId,
      dstId: p.outDstId,
      ctState: p.outCtState,
      dir: p.outDir,
      audited: p.outAudited,
      ipcacheMiss: p.outIpcacheMiss,
      srcEp: p.outSrcEp,
      dstEp: p.outDstEp,
      tunnel: p.outTunnel,
      bytes: this.buf.slice(RUN_OFFSET, RUN_OFFSET + pkt.length),
    };
  }

  advance(seconds: number): this {
    this.now += seconds;
    return this;
  }

  // ---- counters and events ----

  drops(reason: number, dir: number): number {
    return this.counters[dropPacketsSlot(Math.abs(reason) & 0xff, dir)] as number;
  }

  dropBytes(reason: number, dir: number): number {
    return this.counters[dropBytesSlot(Math.abs(reason) & 0xff, dir)] as number;
  }

  /** All drops, any reason and direction. */
  totalDrops(): number {
    return totalDropped(this.counters);
  }

  forwards(dir: number): number {
    return this.counters[forwardPacketsSlot(dir)] as number;
  }

  forwardBytes(dir: number): number {
    return this.counters[forwardBytesSlot(dir)] as number;
  }

  counter(slot: number): number {
    return this.counters[slot] as number;
  }

  /** Reads and consumes every pending event. */
  drainEvents(): EventView[] {
    const out: EventView[] = [];
    new EventReader(this.events).drain((r) => out.push(decodeEvent(r)));
    return out;
  }
}

/** A plain-object copy of the record the reader is positioned at. */
export function decodeEvent(r: EventReader): EventView {
  return {
    type: r.type,
    timeS: r.timeS,
    reason: r.reason,
    verdict: r.verdict,
    dir: r.dir,
    srcId: r.srcId,
    dstId: r.dstId,
    family: r.family,
    proto: r.proto,
    ports: r.ports,
    src: [r.src(0), r.src(1), r.src(2), r.src(3)],
    dst: [r.dst(0), r.dst(1), r.dst(2), r.dst(3)],
    tcpFlags: r.tcpFlags,
    ctState: r.ctState,
    matchType: r.matchType,
    isReply: r.isReply ? 1 : 0,
    ipcacheMiss: r.ipcacheMiss ? 1 : 0,
    audited: r.audited ? 1 : 0,
    cookie: r.cookie,
    srcEp: r.srcEp,
    dstEp: r.dstEp,
    length: r.length,
  };
}

export function makeWorld(opts: WorldOptions = {}): World {
  return new World(opts);
}
