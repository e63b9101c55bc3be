/**
 * The underlay port: a UDP socket on node-ip:8472 that carries VXLAN to and from the other
 * switches (and Linux vxlan devices). It is port UNDERLAY_PORT of the runtime, read by the
 * I/O loop like a TUN port and written by the shard workers.
 *
 * Receive (I/O thread): the I/O engine reads the socket like a TUN fd (io_uring multishot
 * read or read(2)), one datagram per slot at the slot's start. IoLoop.dispatch hands each
 * one to UnderlayReader.decapSlot before hashing it to a shard:
 *   1. decapsulate (src/datapath/vxlan.ts); on success move the inner IP packet down to
 *      slot + hdr (memmove) behind a zeroed virtio-net header, so the slot looks exactly like
 *      a packet read from a TUN device: the shard hash sees the inner addresses (both
 *      directions of a flow meet on one shard) and the worker writes it to the destination
 *      TUN unchanged
 *   2. the VNI (the sender's identity), or the decap drop code, goes into the slot trailer
 *
 * Send (shard worker, UnderlayShard):
 *   1. process(): reads the trailer of a packet from the underlay into pipeline.tunnelSrcId,
 *      runs the pipeline, and for a packet whose output is the underlay port writes its
 *      destination node (outTunnel) and VNI (outSrcId) into the trailer; the packet then
 *      waits in the underlay port's egress queue like any other
 *   2. sendSlots(): for the packets the egress queue releases, moves each up 22 bytes inside
 *      its slot, writes the VXLAN + inner Ethernet headers in front (vxlanEncapPayload), and
 *      sends them with one sendmmsg (native/src/udp.c) per MAX_BATCH
 *
 * Slot trailer (the last SLOT_TRAILER bytes of a slot, which packet data never reaches here):
 *   slotSize-8  u32  tunnel endpoint (IPv4) of an outgoing packet
 *   slotSize-4  i32  VNI of the packet (in: the sender's identity, or a negative drop code
 *                    from decapsulation; out: the source identity to put in the VNI)
 *
 * Counters: C_VXLAN_{TX,RX}_{PKTS,BYTES} in the shard's counters (UDP payload bytes);
 * decapsulation errors are drops of the pipeline, with their reason.
 *
 * MTU: endpoints of a switch with an underlay get MTU - 50 (VXLAN_OVERHEAD), as Cilium sets
 * its endpoints' MTU in tunnel mode, so an encapsulated packet fits the underlay MTU; the
 * socket never refuses a larger one (IP_PMTUDISC_DONT: the kernel fragments it). When the
 * underlay device's MTU is smaller than the configured one (meta M_TUNNEL_MTU = the smaller
 * of the two - 50, set by the control thread from underlayDeviceMtu), a packet over it that
 * must not be fragmented (IPv4 with DF, any IPv6) is answered with ICMP frag-needed / packet
 * too big (src/datapath/icmp-too-big.ts, tooBig below), counted as drop 136 and in
 * C_VXLAN_TOO_BIG, never dropped silently.
 * GSO super-packets (offload on) are not segmented for the tunnel: they are dropped with
 * 136 FRAG_NEEDED and counted (run refuses offload with an underlay for that reason).
 */
import { loadBinding, type TunBinding } from '../io/native.js';
import { DROP_FRAG_NEEDED, DROP_INVALID, DROP_WRITE_ERROR } from '../datapath/drop.js';
import { VXLAN_PAYLOAD_HDR, VXLAN_PORT, VxlanResult, vxlanDecapPayload, vxlanEncapPayload } from '../datapath/vxlan.js';
import { icmpTooBig, oversizeMayFragment } from '../datapath/icmp-too-big.js';
import type { Pipeline } from '../datapath/pipeline.js';
import { UNDERLAY_PORT } from '../tables/tableset.js';
import { countDrop, C_VXLAN_RX_BYTES, C_VXLAN_RX_PKTS, C_VXLAN_TOO_BIG, C_VXLAN_TX_BYTES, C_VXLAN_TX_PKTS } from '../tables/events.js';
import { DIR_EGRESS } from '../proto/direction.js';
import { MAX_BATCH, type RuntimeShared } from './shared.js';
import { TunswitchError } from '../proto/errors.js';

export { UNDERLAY_PORT };

/** Bytes at the end of each slot holding the tunnel endpoint and VNI (see the file comment). */
export const SLOT_TRAILER = 8;
const TR_DST = SLOT_TRAILER;
const TR_VNI = 4;

/** virtio-net header GSO type byte offset; 0 = not a GSO packet. */
const VNET_GSO_TYPE_OFF = 1;

function ipv4Word(ip: string): number {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  if (!m) throw new TunswitchError('ECONFIG_INVALID', `underlay: ${JSON.stringify(ip)} is not an IPv4 address`);
  return ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
}

/** The I/O thread's side: opens the socket and decapsulates what the engine reads from it. */
export class UnderlayReader {
  readonly fd: number;
  private readonly native: TunBinding;
  private readonly buf: Uint8Array;
  private readonly dv: DataView;
  private readonly slotSize: number;
  private readonly res = new VxlanResult();

  constructor(
    rt: RuntimeShared,
    readonly hdr: number,
    nodeIp: string,
  ) {
    this.native = loadBinding();
    this.fd = this.native.udpOpen(ipv4Word(nodeIp), VXLAN_PORT);
    this.buf = new Uint8Array(rt.slab);
    this.dv = new DataView(rt.slab);
    this.slotSize = rt.slotSize;
  }

  /**
   * The datagram of `len` bytes at the start of `slot` becomes its inner packet at slot + hdr
   * (VNI in the trailer); returns the slot's new length. A datagram that does not decapsulate
   * keeps its bytes and gets the drop code as VNI: the pipeline drops it with that reason.
   */
  decapSlot(slot: number, len: number): number {
    const buf = this.buf;
    const base = slot * this.slotSize;
    const hdr = this.hdr;
    const r = this.res;
    const fits = len > 0 && len <= this.slotSize - SLOT_TRAILER;
    const rc = fits ? vxlanDecapPayload(buf, base, len, r) : DROP_INVALID;
    const vniAt = base + this.slotSize - TR_VNI;
    if (rc !== 0) {
      this.dv.setInt32(vniAt, rc, true);
      return len < this.slotSize - SLOT_TRAILER ? len : this.slotSize - SLOT_TRAILER;
    }
    buf.copyWithin(base + hdr, r.innerOff, r.innerOff + r.innerLen);
    if (hdr > 0) buf.fill(0, base, base + hdr);
    this.dv.setInt32(vniAt, r.vni, true);
    return hdr + r.innerLen;
  }

  close(): void {
    this.native.close(this.fd);
  }
}

/** A shard worker's side: VNI in, encapsulation and batched send out. */
export class UnderlayShard {
  private readonly native: TunBinding;
  private readonly buf: Uint8Array;
  private readonly dv: DataView;
  private readonly lens: Int32Array;
  private readonly portFd: Int32Array;
  private readonly slotSize: number;
  private readonly txOff = new Int32Array(MAX_BATCH);
  private readonly txLen = new Int32Array(MAX_BATCH);
  private readonly txDst = new Int32Array(MAX_BATCH);

  constructor(
    rt: RuntimeShared,
    private readonly hdr: number,
    private readonly counters: Float64Array,
  ) {
    this.native = loadBinding();
    this.buf = new Uint8Array(rt.slab);
    this.dv = new DataView(rt.slab);
    this.lens = new Int32Array(rt.lens);
    this.portFd = new Int32Array(rt.portFd);
    this.slotSize = rt.slotSize;
  }

  /**
   * pipeline.process() for the packet at buf[off, off+len) in `slot` from port inPort, with
   * the tunnel's identity in and the tunnel endpoint and VNI recorded out. Returns what
   * process() returns.
   */
  process(p: Pipeline, buf: Uint8Array, dv: DataView, slot: number, off: number, len: number, inPort: number): number {
    const end = slot * this.slotSize + this.slotSize;
    if (inPort === UNDERLAY_PORT) {
      p.tunnelSrcId = this.dv.getInt32(end - TR_VNI, true);
      this.counters[C_VXLAN_RX_PKTS]++;
      this.counters[C_VXLAN_RX_BYTES] += len + VXLAN_PAYLOAD_HDR;
    }
    const out = p.process(buf, dv, off, len, inPort);
    if (out === UNDERLAY_PORT && out === p.underlayPort) {
      const mtu = p.underlayMtu;
      if (mtu > 0 && len > mtu && inPort !== UNDERLAY_PORT && (this.hdr === 0 || (buf[slot * this.slotSize + VNET_GSO_TYPE_OFF] as number) === 0)) {
        const back = this.tooBig(p, buf, dv, slot, off, len, inPort, mtu);
        if (back !== UNDERLAY_PORT) return back;
      }
      this.dv.setUint32(end - TR_DST, p.outTunnel >>> 0, true);
      this.dv.setInt32(end - TR_VNI, p.outSrcId, true);
    }
    return out;
  }

  /**
   * A packet over the underlay's inner MTU (see the file comment, MTU): IPv4 without DF goes
   * on (UNDERLAY_PORT: the kernel fragments the outer packet); anything else is dropped with
   * 136 FRAG_NEEDED (counted, shown in observe) and, unless it is an ICMP error itself,
   * becomes an ICMP frag-needed / packet-too-big to its sender, written to the port it came
   * from. Returns the new output (the sender's port) or the drop code.
   */
  private tooBig(p: Pipeline, buf: Uint8Array, dv: DataView, slot: number, off: number, len: number, inPort: number, mtu: number): number {
    if (oversizeMayFragment(buf, off, len)) return UNDERLAY_PORT;
    p.dropAfterForward(buf, dv, off, len, DROP_FRAG_NEEDED, p.outSrcId, p.outDstId);
    const w = icmpTooBig(buf, dv, off, len, mtu);
    if (w <= 0) return DROP_FRAG_NEEDED;
    const base = slot * this.slotSize;
    if (this.hdr > 0) buf.fill(0, base, base + this.hdr); // a plain packet: no GSO, no checksum offload
    this.lens[slot] = this.hdr + w;
    this.counters[C_VXLAN_TOO_BIG]++;
    return inPort;
  }

  /**
   * Encapsulates the packets in slots[0..n) (released by the underlay port's egress queue)
   * and sends them; what cannot be encapsulated or sent is counted as dropped. The caller
   * gives the slots back.
   */
  sendSlots(slots: Int32Array, n: number): void {
    const buf = this.buf;
    const hdr = this.hdr;
    let q = 0;
    for (let k = 0; k < n; k++) {
      const slot = slots[k] as number;
      const base = slot * this.slotSize;
      const end = base + this.slotSize;
      const off = base + hdr;
      const len = (this.lens[slot] as number) - hdr;
      // A GSO super-packet cannot be segmented here; one that does not fit the slot either.
      if ((hdr > 0 && (buf[base + VNET_GSO_TYPE_OFF] as number) !== 0) || off + VXLAN_PAYLOAD_HDR + len > end - SLOT_TRAILER) {
        this.countDrop(DROP_FRAG_NEEDED, len);
        continue;
      }
      const vni = this.dv.getInt32(end - TR_VNI, true);
      const dst = this.dv.getUint32(end - TR_DST, true);
      buf.copyWithin(off + VXLAN_PAYLOAD_HDR, off, off + len);
      const w = vxlanEncapPayload(buf, off + VXLAN_PAYLOAD_HDR, len, vni);
      if (w < 0) {
        this.countDrop(w, len);
        continue;
      }
      this.txOff[q] = off;
      this.txLen[q] = w;
      this.txDst[q] = dst | 0;
      q++;
      if (q === MAX_BATCH) {
        this.flush(q);
        q = 0;
      }
    }
    if (q > 0) this.flush(q);
  }

  private flush(q: number): void {
    const fd = this.portFd[UNDERLAY_PORT] as number;
    let sent = 0;
    if (fd >= 0) {
      try {
        sent = this.native.udpSendBatch(fd, this.buf, this.txOff, this.txLen, this.txDst, 0, q, VXLAN_PORT);
      } catch {
        sent = 0;
      }
    }
    for (let k = 0; k < sent; k++) {
      this.counters[C_VXLAN_TX_PKTS]++;
      this.counters[C_VXLAN_TX_BYTES] += this.txLen[k] as number;
    }
    for (let k = sent; k < q; k++) this.countDrop(DROP_WRITE_ERROR, this.txLen[k] as number);
  }

  private countDrop(code: number, len: number): void {
    countDrop(this.counters, code, DIR_EGRESS, 1, len);
  }
}
