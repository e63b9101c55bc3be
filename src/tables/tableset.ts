/**
 * TableSet: every published control-plane table in one bundle, so that one `commit()`
 * publishes a consistent revision of all of them and a worker claims one side of all of
 * them per batch.
 *
 * Besides the tables of their own modules (ipcache, endpoints, policy), the set publishes
 * two small arrays:
 *
 * meta (u32 words):
 *   0  POLICY_REVISION   rises with every policy/endpoint/identity change that can alter verdicts
 *   1  CONFIG_FLAGS      bit0 audit mode agent-wide, bit1 host port present, bit2 allow-localhost
 *                        (ingress from reserved:host is allowed when no rule decides, as Cilium)
 *   2  HOST_PORT         output port index of the host port (valid when bit1 is set)
 *   3  HOST_IDENTITY     identity of the host port's own addresses (1, reserved:host)
 *   4  TUNNEL_PORT       1 + the port index of the underlay (VXLAN) port; 0: no tunnel, and
 *                        packets to a tunnel endpoint leave through the host port as before
 *
 * portToEp (u32 per port, MAX_PORTS entries): the endpoint index behind each input port,
 * 0xffffffff for the host port and for unused ports. The I/O thread tags each packet with
 * its input port; the pipeline uses this array to find the sending endpoint.
 */
import { PublishControl, WriteLog, sharedPair } from './publish.js';
import { Ipcache, IpcacheWriter, type IpcacheShared } from './ipcache.js';
import { EndpointTable, EndpointTableWriter, type EndpointTableShared } from './endpoints.js';
import { PolicyTable, PolicyTableWriter, type PolicyTableShared } from './policy.js';

export const MAX_PORTS = 4096;
export const NO_EP = 0xffffffff;

export const M_POLICY_REVISION = 0;
export const M_CONFIG_FLAGS = 1;
export const M_HOST_PORT = 2;
export const M_HOST_IDENTITY = 3;
export const M_TUNNEL_PORT = 4;
/** The largest inner packet that fits the underlay (its MTU - VXLAN overhead); 0: no limit. */
export const M_TUNNEL_MTU = 5;
/** The port index of the underlay UDP socket (src/runtime/underlay.ts): the last one. */
export const UNDERLAY_PORT = MAX_PORTS - 1;
export const META_WORDS = 16;

export const CFG_AUDIT = 1;
export const CFG_HOST_PORT = 2;
export const CFG_ALLOW_LOCALHOST = 4;
/** Rule cookie reported for a flow allowed by allow-localhost. */
export const COOKIE_ALLOW_LOCALHOST = 0xfffffffe;

export interface TableSetShared {
  control: SharedArrayBuffer;
  meta: [Uint32Array, Uint32Array];
  portToEp: [Uint32Array, Uint32Array];
  ipcache: IpcacheShared;
  endpoints: EndpointTableShared;
  policy: PolicyTableShared;
}

export interface TableSetOptions {
  ipcache?: { tbl8Groups?: number; leaves?: number; v6Capacity?: number };
  policyCapacity?: number;
  maxEndpoints?: number;
}

export class TableSet {
  readonly control: PublishControl;
  readonly ipcache: Ipcache;
  readonly endpoints: EndpointTable;
  readonly policy: PolicyTable;
  readonly metaSides: [Uint32Array, Uint32Array];
  readonly portSides: [Uint32Array, Uint32Array];
  meta: Uint32Array;
  portToEp: Uint32Array;

  private constructor(readonly shared: TableSetShared) {
    this.control = new PublishControl(shared.control);
    this.ipcache = Ipcache.attach(shared.ipcache);
    this.endpoints = EndpointTable.attach(shared.endpoints);
    this.policy = PolicyTable.attach(shared.policy);
    this.metaSides = shared.meta;
    this.portSides = shared.portToEp;
    this.meta = shared.meta[0];
    this.portToEp = shared.portToEp[0];
  }

  static create(opts: TableSetOptions = {}): TableSet {
    const control = PublishControl.create();
    const ipcache = Ipcache.create(opts.ipcache);
    const endpoints = EndpointTable.create({ maxEndpoints: opts.maxEndpoints ?? 4096 });
    const policy = PolicyTable.create({ capacity: opts.policyCapacity ?? 1 << 18, maxEndpoints: opts.maxEndpoints ?? 4096 });
    const meta = sharedPair(META_WORDS);
    const portToEp = sharedPair(MAX_PORTS);
    portToEp[0].fill(NO_EP);
    portToEp[1].fill(NO_EP);
    meta[0][M_HOST_IDENTITY] = 1;
    meta[1][M_HOST_IDENTITY] = 1;
    return new TableSet({
      control: control.sab,
      meta,
      portToEp,
      ipcache: ipcache.shared,
      endpoints: endpoints.shared,
      policy: policy.shared,
    });
  }

  static attach(shared: TableSetShared): TableSet {
    return new TableSet(shared);
  }

  /** Points every table at `side` (once per batch, after control.enter). */
  useSide(side: number): void {
    this.ipcache.useSide(side);
    this.endpoints.useSide(side);
    this.policy.useSide(side);
    this.meta = side === 0 ? this.metaSides[0] : this.metaSides[1];
    this.portToEp = side === 0 ? this.portSides[0] : this.portSides[1];
  }
}

/** The control thread's writers over a TableSet, sharing one write log. */
export class TableSetWriter {
  readonly log: WriteLog;
  readonly ipcache: IpcacheWriter;
  readonly endpoints: EndpointTableWriter;
  readonly policy: PolicyTableWriter;
  private readonly metaId: number;
  private readonly portId: number;

  constructor(readonly tables: TableSet) {
    this.log = new WriteLog(tables.control);
    this.ipcache = new IpcacheWriter(tables.ipcache, this.log);
    this.endpoints = new EndpointTableWriter(tables.endpoints, this.log);
    this.policy = new PolicyTableWriter(tables.policy, this.log);
    this.metaId = this.log.register(tables.metaSides[0], tables.metaSides[1]);
    this.portId = this.log.register(tables.portSides[0], tables.portSides[1]);
  }

  setMeta(word: number, value: number): void {
    if (this.log.get(this.metaId, word) !== value >>> 0) this.log.set(this.metaId, word, value);
  }

  meta(word: number): number {
    return this.log.get(this.metaId, word);
  }

  bumpPolicyRevision(): number {
    const r = (this.meta(M_POLICY_REVISION) + 1) >>> 0;
    this.setMeta(M_POLICY_REVISION, r);
    return r;
  }

  setPortEndpoint(port: number, ep: number): void {
    if (port < 0 || port >= MAX_PORTS) throw new RangeError(`port ${port} outside 0..${MAX_PORTS - 1}`);
    this.log.set(this.portId, port, ep >>> 0);
  }

  commit(): number {
    return this.log.commit();
  }
}
