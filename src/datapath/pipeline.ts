/**
 * The lxc pipeline: what Cilium's bpf_lxc.c does for a packet leaving an endpoint, in one
 * function over shared tables. One Pipeline per worker (per shard); it owns the shard's
 * conntrack and fragment tables, counters and event ring, and reads the published tables.
 *
 * For a packet entering from endpoint E (its TUN port):
 *   1. parse                        (drop: 134 INVALID, 135, 139, 156 ...)
 *   2. source check                 the source address must be E's        (else 132; an
 *                                   endpoint with no address of the family owns none)
 *   3. fragments                    later fragments look up the ports of their first one
 *                                   (175 FRAG_NOT_FOUND); the first is recorded at step 10
 *   4. protocol                     TCP, UDP, SCTP, ICMP, ICMPv6 only      (else 137)
 *   5. destination                  local endpoint D (endpoint table) or ipcache LPM; a miss
 *                                   is world (2) and the event says the ipcache missed
 *   6. conntrack                    ICMP errors found through their inner header are RELATED;
 *                                   REPLY and RELATED skip policy; ESTABLISHED is re-checked
 *                                   whenever the policy revision changed since the last check
 *   7. egress policy of E           lookup(E, egress, dst identity, proto, dport)
 *   8. ingress policy of D          lookup(D, ingress, E's identity, proto, dport), if D is local
 *                                   no entry: 133 POLICY; a deny entry: 181 POLICY_DENY;
 *                                   audit mode turns either into an allow marked audited
 *   9. conntrack create             for an allowed new flow, charged to E (a full table evicts;
 *                                   155 only when E is at its quota, see tables/conntrack.ts)
 *  10. first fragment record        only now that policy allowed it, so denied datagrams take
 *                                   no slot (157 only when E is at its fragment quota)
 *  11. TTL / hop limit              <= 1: 196 TTL_EXCEEDED; else decrement (IPv4 checksum
 *                                   patched incrementally)
 *  12. output                       D's port; else the ipcache's tunnel endpoint through the
 *                                   underlay port (VXLAN, when the switch has one: outTunnel
 *                                   is the node to send to, outSrcId the VNI); else the host
 *                                   port (a tunnel endpoint without underlay: marked in
 *                                   outTunnel, sent as is); else 151
 *
 * A packet entering from the host port takes the same steps without 2 and 7: its source
 * identity comes from the ipcache (miss: world) and its destination must be a local endpoint.
 * A packet from the underlay port (decapsulated VXLAN from another node) takes the host
 * port's steps, but its source identity is the VNI the caller puts in `tunnelSrcId` (Cilium
 * trusts the tunnel's identity the same way); a negative tunnelSrcId is the drop code the
 * decapsulation found (183 INVALID_VNI, 166 UNSUPPORTED_L2, 134 INVALID). Its destination
 * must be a local endpoint, whose ingress policy decides.
 * A packet from a port that is neither an endpoint's nor the host port is dropped at step 2
 * with 203 EP_NOT_READY.
 *
 * Result: `process()` returns the output port (>= 0) or a negative drop code, and leaves
 * the details in the out* fields. Nothing is allocated per packet.
 */
import { PacketInfo } from './packet.js';
import { DIR_EGRESS, DIR_INGRESS } from '../proto/direction.js';
import { ID_WORLD } from '../proto/identity.js';
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, isIcmp } from '../proto/ip.js';
import { parsePacket, parseInner } from './parse.js';
import { PolicyDecision } from './policy-decision.js';
import { decrementTtl4, decrementHopLimit6 } from './checksum.js';
import {
  DROP_CT_CREATE_FAILED,
  DROP_CT_UNKNOWN_PROTO,
  DROP_EP_NOT_READY,
  DROP_FRAG_NOSUPPORT,
  DROP_FRAG_NOT_FOUND,
  DROP_INVALID_SIP,
  DROP_INVALID_VNI,
  DROP_TTL_EXCEEDED,
  DROP_UNROUTABLE,
} from './drop.js';
import { CT_ESTABLISHED, CT_NEW, CT_RELATED, CT_REOPENED, CT_REPLY, OWNER_HOST, ownerSlot, type ConntrackTable } from '../tables/conntrack.js';
import type { FragmentTable } from '../tables/fragments.js';
import { POLICY_MATCH_NONE } from '../tables/policy.js';
import {
  CFG_HOST_PORT,
  M_CONFIG_FLAGS,
  M_HOST_PORT,
  M_POLICY_REVISION,
  M_TUNNEL_PORT,
  M_TUNNEL_MTU,
  NO_EP,
  type TableSet,
} from '../tables/tableset.js';
import {
  C_AUDITED,
  C_CT_CREATE_FAILED,
  C_DROP_EVENTS,
  C_POLICY_EVENTS,
  C_TRACE_EVENTS,
  EV_DROP,
  EV_POLICY,
  EV_TRACE,
  EventWriter,
  NO_INDEX,
  V_AUDIT,
  V_DROPPED,
  V_FORWARDED,
  countDrop,
  countForward,
  type EventRing,
} from '../tables/events.js';


export class Pipeline {
  readonly pi = new PacketInfo();
  readonly inner = new PacketInfo();

  // ---- per-packet results (valid after process()) ----
  outReason = 0;
  outMatchType = 0;
  outCookie = 0;
  outSrcId = 0;
  outDstId = 0;
  /** Direction of the decision that dropped (or of the forward): 0 ingress, 1 egress. */
  outDir = 0;
  outCtState = 0;
  outAudited = 0;
  outSrcEp = -1;
  outDstEp = -1;
  outIpcacheMiss = 0;
  /** Tunnel endpoint (IPv4) when the ipcache names one, else 0. */
  outTunnel = 0;
  /** Input: source identity (the VNI) of the next packet from the underlay port, or a drop code. */
  tunnelSrcId = 0;

  // ---- per-batch state ----
  private side = 0;
  private now = 0;
  private nowMs = 0;
  private revision = 0;
  private cfg = 0;
  /** Underlay port of this batch's tables, -1 without one. */
  private tunnelPort = -1;
  private tunnelMtu = 0;

  /** The decision of the enforcement point being evaluated (egress, then ingress). */
  readonly decision: PolicyDecision;

  /** Emit policy-verdict and trace events (drops are always reported). */
  eventsEnabled = true;

  /** The encoder of this shard's event records. */
  private readonly ew: EventWriter;

  constructor(
    readonly tables: TableSet,
    readonly ct: ConntrackTable,
    readonly frags: FragmentTable,
    readonly counters: Float64Array,
    readonly events: EventRing,
    readonly readerSlot: number,
  ) {
    this.decision = new PolicyDecision(tables);
    this.ew = new EventWriter(events);
  }

  /** Claims one consistent revision of the published tables for a batch. */
  beginBatch(nowSec: number, nowMs: number): void {
    this.side = this.tables.control.enter(this.readerSlot);
    this.tables.useSide(this.side);
    this.now = nowSec;
    this.nowMs = nowMs;
    this.revision = this.tables.meta[M_POLICY_REVISION] as number;
    this.cfg = this.tables.meta[M_CONFIG_FLAGS] as number;
    this.tunnelPort = (this.tables.meta[M_TUNNEL_PORT] as number) - 1;
    this.tunnelMtu = this.tables.meta[M_TUNNEL_MTU] as number;
  }

  /** The underlay port of the current batch (-1: none); outputs equal to it go to outTunnel. */
  get underlayPort(): number {
    return this.tunnelPort;
  }

  /** The largest inner packet the underlay carries in the current batch (0: no limit). */
  get underlayMtu(): number {
    return this.tunnelMtu;
  }

  endBatch(): void {
    this.tables.control.leave(this.readerSlot);
  }

  /**
   * Runs the pipeline for the packet at buf[off, off+len) that entered from `inPort`.
   * Returns the output port (>= 0) or a negative drop code (already counted and reported).
   */
  process(buf: Uint8Array, dv: DataView, off: number, len: number, inPort: number): number {
    const pi = this.pi;
    this.outReason = 0;
    this.outMatchType = POLICY_MATCH_NONE;
    this.outCookie = NO_INDEX;
    this.outSrcId = 0;
    this.outDstId = 0;
    this.outDir = DIR_EGRESS;
    this.outCtState = CT_NEW;
    this.outAudited = 0;
    this.outSrcEp = -1;
    this.outDstEp = -1;
    this.outIpcacheMiss = 0;
    this.outTunnel = 0;

    const t = this.tables;
    const srcEpRaw = t.portToEp[inPort] as number;
    const fromHost = srcEpRaw === NO_EP;
    if (fromHost) this.outDir = DIR_INGRESS;
    else this.outSrcEp = srcEpRaw;

    // 1. parse
    const rc = parsePacket(buf, dv, off, len, pi);
    if (rc < 0) return this.drop(rc, len);

    const v4 = pi.family === 4;
    const eps = t.endpoints;
    const ipc = t.ipcache;

    // 2. source check (from an endpoint) or source identity from the ipcache (host port)
    let srcId = 0;
    if (!fromHost) {
      const ep = srcEpRaw;
      // An endpoint without an address of the packet's family (all-zero word(s), which is
      // also what a removed endpoint's record holds) owns no source address of that family.
      if (v4) {
        const own = eps.ipv4(ep);
        if (own === 0 || pi.src0 !== own) return this.drop(DROP_INVALID_SIP, len);
      } else {
        const w0 = eps.ipv6Word(ep, 0);
        const w1 = eps.ipv6Word(ep, 1);
        const w2 = eps.ipv6Word(ep, 2);
        const w3 = eps.ipv6Word(ep, 3);
        if ((w0 | w1 | w2 | w3) === 0 || pi.src0 !== w0 || pi.src1 !== w1 || pi.src2 !== w2 || pi.src3 !== w3) {
          return this.drop(DROP_INVALID_SIP, len);
        }
      }
      srcId = eps.identity(ep);
    } else if (inPort === this.tunnelPort) {
      // From another node: the VNI is the sender's identity; decap problems drop here.
      srcId = this.tunnelSrcId;
      if (srcId <= 0) return this.drop(srcId < 0 ? srcId : DROP_INVALID_VNI, len);
    } else {
      // Only the host port speaks for the host: a port mapped to no endpoint (attached before
      // its endpoint is published, or left over after a removal) must not borrow that role.
      if ((this.cfg & CFG_HOST_PORT) === 0 || inPort !== (t.meta[M_HOST_PORT] as number)) {
        return this.drop(DROP_EP_NOT_READY, len);
      }
      const leaf = v4 ? ipc.lookup4(pi.src0) : ipc.lookup6(pi.src0, pi.src1, pi.src2, pi.src3);
      srcId = leaf === 0 ? ID_WORLD : ipc.leafIdentity(leaf);
    }
    this.outSrcId = srcId;

    // 3. fragments: a later fragment takes the ports of its first (recorded at step 10)
    if (pi.isFragment === 1 && pi.fragOffset !== 0 && !this.frags.lookup(pi, this.now)) {
      return this.drop(DROP_FRAG_NOT_FOUND, len);
    }
    // conntrack and fragment slots are charged to the sending endpoint (quota)
    const owner = fromHost ? OWNER_HOST : ownerSlot(srcEpRaw);

    // 4. protocol
    const proto = pi.proto;
    if (
      proto !== IPPROTO_TCP &&
      proto !== IPPROTO_UDP &&
      proto !== IPPROTO_SCTP &&
      !(proto === IPPROTO_ICMP && v4) &&
      !(proto === IPPROTO_ICMPV6 && !v4)
    ) {
      return this.drop(DROP_CT_UNKNOWN_PROTO, len);
    }

    // 5. destination
    const dstEp = v4 ? eps.byAddr4(pi.dst0) : eps.byAddr6(pi.dst0, pi.dst1, pi.dst2, pi.dst3);
    // The LPM only runs for destinations that are not local endpoints (bench/micro: it is a
    // likely cache miss with 1M prefixes, and a local endpoint's identity is in its record).
    const leaf = dstEp >= 0 ? 0 : v4 ? ipc.lookup4(pi.dst0) : ipc.lookup6(pi.dst0, pi.dst1, pi.dst2, pi.dst3);
    let dstId: number;
    if (dstEp >= 0) {
      dstId = eps.identity(dstEp);
      this.outDstEp = dstEp;
    } else if (leaf !== 0) {
      dstId = ipc.leafIdentity(leaf);
      this.outTunnel = ipc.leafTunnel(leaf);
    } else {
      dstId = ID_WORLD;
      this.outIpcacheMiss = 1;
    }
    this.outDstId = dstId;
    if (fromHost && dstEp < 0) return this.drop(DROP_UNROUTABLE, len);

    // L4 "port" used by policy: ICMP rules carry the ICMP type in the port field.
    const dport = isIcmp(proto) ? pi.icmpType : pi.dport;

    // 6. conntrack
    const ct = this.ct;
    let idx = -1;
    let state = CT_NEW;
    if (pi.icmpInnerOff >= 0) {
      const inner = this.inner;
      if (parseInner(buf, dv, pi.icmpInnerOff, off + pi.totalLen - pi.icmpInnerOff, inner) === 0) {
        // An ICMP error travels back to the quoted packet's sender: its outer destination must
        // be the inner source, or a third party could slip errors past policy as RELATED.
        if (
          inner.src0 === pi.dst0 &&
          inner.src1 === pi.dst1 &&
          inner.src2 === pi.dst2 &&
          inner.src3 === pi.dst3
        ) {
          idx = ct.lookupRelated(inner, this.now);
          if (idx >= 0) state = CT_RELATED;
        }
      }
    }
    if (idx < 0) {
      idx = ct.lookup(pi, this.now);
      if (idx >= 0) state = ct.update(idx, pi, ct.lastDir, this.now);
    }
    this.outCtState = state;

    if (state === CT_ESTABLISHED && ct.policyRevision(idx) === this.revision) {
      // Verdict cached for this revision: the policy is unchanged since the last check.
      this.outMatchType = ct.policyMatchType(idx);
      this.outCookie = ct.policyCookie(idx);
      this.outAudited = ct.policyAudited(idx) ? 1 : 0;
    } else if (state !== CT_REPLY && state !== CT_RELATED) {
      // 7. egress policy of the sending endpoint
      const pd = this.decision;
      let cookie = NO_INDEX;
      let match = POLICY_MATCH_NONE;
      let audited = 0;
      // Each enforcement point reports its own policy verdict (as Cilium's per-endpoint
      // programs do): egress at the sender, ingress at the receiver.
      let egEnforced = 0;
      let egCookie = NO_INDEX;
      let egMatch = POLICY_MATCH_NONE;
      let egAudited = 0;
      if (!fromHost) {
        const v = pd.decide(srcEpRaw, DIR_EGRESS, dstId, proto, dport, this.cfg);
        if (v < 0) return this.policyDrop(v, DIR_EGRESS, len, state, idx);
        cookie = egCookie = pd.cookie;
        match = egMatch = pd.match;
        audited = egAudited = pd.audited;
        egEnforced = pd.enforced;
      }
      // 8. ingress policy of the local destination
      let inEnforced = 0;
      if (dstEp >= 0) {
        const v = pd.decide(dstEp, DIR_INGRESS, srcId, proto, dport, this.cfg);
        if (v < 0) {
          if (this.eventsEnabled && state === CT_NEW && egEnforced !== 0) this.emitVerdictFor(DIR_EGRESS, egCookie, egMatch, egAudited, len);
          return this.policyDrop(v, DIR_INGRESS, len, state, idx);
        }
        inEnforced = pd.enforced;
        if (pd.match !== POLICY_MATCH_NONE || match === POLICY_MATCH_NONE) {
          cookie = pd.cookie;
          match = pd.match;
        }
        audited |= pd.audited;
      }
      this.outMatchType = match;
      this.outCookie = cookie;
      this.outAudited = audited;
      if (audited !== 0) this.counters[C_AUDITED]++;

      // 9. conntrack create for a new flow
      if (state === CT_NEW) {
        // The lookup above missed and nothing touched the table since: reuse its key and hash.
        idx = ct.createAfterMiss(pi, srcId, this.now, owner);
        if (idx < 0) {
          this.counters[C_CT_CREATE_FAILED]++;
          return this.drop(DROP_CT_CREATE_FAILED, len);
        }
        if (this.eventsEnabled) {
          if (egEnforced !== 0) this.emitVerdictFor(DIR_EGRESS, egCookie, egMatch, egAudited, len);
          if (inEnforced !== 0) this.emitVerdictFor(DIR_INGRESS, pd.cookie, pd.match, pd.audited, len);
        }
      }
      ct.setPolicyCache(idx, this.revision, cookie, match, audited !== 0);
    }

    // 10. the first fragment of an allowed datagram: remember its ports for the later ones
    if (pi.isFragment === 1 && pi.fragOffset === 0 && pi.l4Off >= 0 && !this.frags.record(pi, this.now, owner)) {
      return this.drop(DROP_FRAG_NOSUPPORT, len);
    }

    // 11. TTL / hop limit
    if (pi.ttl <= 1) return this.drop(DROP_TTL_EXCEEDED, len);
    if (v4) decrementTtl4(buf, dv, pi.l3Off);
    else decrementHopLimit6(buf, pi.l3Off);

    // 12. output
    let out: number;
    if (dstEp >= 0) {
      out = eps.port(dstEp);
      this.outDir = DIR_INGRESS;
    } else if (this.outTunnel !== 0 && this.tunnelPort >= 0) {
      out = this.tunnelPort; // the caller encapsulates: VNI outSrcId, to outTunnel
    } else if ((this.cfg & CFG_HOST_PORT) !== 0) {
      out = this.tables.meta[M_HOST_PORT] as number;
    } else {
      return this.drop(DROP_UNROUTABLE, len);
    }
    const c = this.counters;
    countForward(c, this.outDir, len);
    if (this.eventsEnabled && idx >= 0 && ct.shouldTrace(idx, state === CT_REPLY ? 1 : 0, pi.tcpFlags, this.now)) {
      this.emit(EV_TRACE, 0, this.outAudited !== 0 ? V_AUDIT : V_FORWARDED, len);
      c[C_TRACE_EVENTS]++;
    }
    return out;
  }

  /**
   * A packet this pipeline forwarded that the egress stage then dropped (AQM, byte limit,
   * write failure): counted by reason and reported as a drop event at the destination's
   * side, with the identities the pipeline had resolved. Re-parses the header only.
   */
  dropAfterForward(buf: Uint8Array, dv: DataView, off: number, len: number, code: number, srcId: number, dstId: number): void {
    this.outMatchType = POLICY_MATCH_NONE;
    this.outCookie = NO_INDEX;
    this.outCtState = CT_ESTABLISHED;
    this.outAudited = 0;
    this.outSrcEp = -1;
    this.outDstEp = -1;
    this.outIpcacheMiss = 0;
    this.outDir = DIR_INGRESS;
    this.outSrcId = srcId;
    this.outDstId = dstId;
    parsePacket(buf, dv, off, len, this.pi);
    this.drop(code, len);
  }

  private policyDrop(code: number, dir: number, len: number, state: number, idx: number): number {
    this.outDir = dir;
    this.outMatchType = this.decision.match;
    this.outCookie = this.decision.cookie;
    // An established flow whose policy now denies it: forget the cached verdict.
    if (idx >= 0 && state !== CT_NEW) this.ct.clearPolicyCache(idx);
    if (this.eventsEnabled && state === CT_NEW) this.emitPolicyVerdict(dir, V_DROPPED, -code, len);
    return this.drop(code, len);
  }

  private drop(code: number, len: number): number {
    countDrop(this.counters, code, this.outDir, 1, len);
    this.outReason = -code;
    this.emit(EV_DROP, -code, V_DROPPED, len);
    this.counters[C_DROP_EVENTS]++;
    return code;
  }

  /** A forwarded policy verdict for one enforcement point, with that point's rule. */
  private emitVerdictFor(dir: number, cookie: number, match: number, audited: number, len: number): void {
    const c = this.outCookie;
    const m = this.outMatchType;
    const a = this.outAudited;
    this.outCookie = cookie;
    this.outMatchType = match;
    this.outAudited = audited;
    this.emitPolicyVerdict(dir, V_FORWARDED, 0, len);
    this.outCookie = c;
    this.outMatchType = m;
    this.outAudited = a;
  }

  private emitPolicyVerdict(dir: number, verdict: number, reason: number, len: number): void {
    const saved = this.outDir;
    this.outDir = dir;
    this.emit(EV_POLICY, reason, this.outAudited !== 0 && verdict === V_FORWARDED ? V_AUDIT : verdict, len);
    this.outDir = saved;
    this.counters[C_POLICY_EVENTS]++;
  }

  private emit(type: number, reason: number, verdict: number, len: number): void {
    const w = this.ew;
    if (!w.begin(type, this.now, this.nowMs)) return;
    const pi = this.pi;
    w.verdict(reason, verdict, this.outDir);
    w.peers(this.outSrcId, this.outDstId, this.outSrcEp, this.outDstEp);
    w.flow(pi);
    w.state(pi.tcpFlags, this.outCtState, this.outMatchType, this.outCtState === CT_REPLY, this.outIpcacheMiss, this.outAudited, this.outCookie);
    w.commit(pi.totalLen > 0 ? pi.totalLen : len);
  }
}

export { CT_ESTABLISHED, CT_NEW, CT_RELATED, CT_REOPENED, CT_REPLY };
