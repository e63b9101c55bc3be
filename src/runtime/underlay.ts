/**
 * The underlay port: a UDP socket on node-ip:8472 that carries VXLAN to and from the other
 * switches (and Linux vxlan devices). It is port UNDERLAY_PORT of the runtime, read by the
 * I/O loop like a TUN port and written by the shard workers.
 *
 * Receive (I/O thread): the I/O engine reads the socket like a TUN fd (io_uring multishot
 * read; the read/write engine uses one recvmmsg per batch), one datagram per slot at the
 * slot's start. IoLoop.dispatch hands each
 * one to UnderlayReader.decapSlot before hashing it to a shard (with UDP GRO, see below,
 * decapGro does this and coalesces first):
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
 *
 * Offload (GSO super-packets, and checksum-partial packets, from a port with offload on):
 *   1. process(): a TCP GSO packet always passes (step 2 cuts it to the tunnel MTU); a UDP
 *      GSO packet whose datagrams (headers + gso_size) are over the inner MTU is too big as
 *      a plain packet would be (tooBig: ICMP, 136, C_VXLAN_TOO_BIG), since the splitter never
 *      changes UDP datagram boundaries
 *   2. sendSlots(): a packet with a virtio GSO type or NEEDS_CSUM goes through GsoSplitter
 *      (src/datapath/gso.ts, the splitter plain ports use) into the shard's transmit arena:
 *      TCP segments of at most the inner MTU, UDP datagrams of gso_size, complete checksums,
 *      each with SEG_HEADROOM free bytes in front so the 22-byte VXLAN + inner Ethernet
 *      header is written over the virtio header in place (no second copy), and the frames
 *      of one packet lie back to back. A packet the splitter refuses is dropped with 236
 *      GSO_SPLIT, counted. Segments join the sendmmsg batch like plain packets; split
 *      packets and segments count in C_GSO_SPLIT_{PKTS,SEGS}
 *   3. with udpGso (UnderlayShard option), the back-to-back frames of one packet go out as
 *      few datagrams with a UDP_SEGMENT control message (udpSendBatch's gso sizes): the
 *      kernel cuts them into the outer datagrams (UDP tunnel GSO)
 * Receive with offload (UDP GRO; read/write engine, 64 KiB slots): the socket has UDP_GRO
 * on, so the kernel hands over several same-size datagrams of one sender as one buffer (a
 * UDP_SEGMENT sender's packet arrives whole; datagrams sent one by one are merged only where
 * the underlay device does GRO) with their size in a control message. decapGro cuts the
 * buffer, and same-flow TCP segments of one VNI become one TSO packet (GsoCoalescer) before
 * the pipeline: one policy verdict, one conntrack update, one egress-queue entry and one
 * TUN write instead of ~45, as a coalesced GSO packet from a TUN port is handled today. The
 * io_uring engine reads without control messages, so it leaves UDP_GRO off (plain datagrams,
 * as before). A packet that did not coalesce is still a plain packet; toward an offload port
 * the port writer may coalesce it (gro on), as for any other input.
 */
import { loadBinding, type TunBinding } from '../io/native.js';
import { DROP_FRAG_NEEDED, DROP_GSO_SPLIT, DROP_INVALID, DROP_WRITE_ERROR } from '../datapath/drop.js';
import { GsoCoalescer, GsoSplitter } from '../datapath/gso.js';
import { MAX_SPLIT_SEGMENTS, SPLIT_ARENA_ROOM } from '../datapath/gso-port.js';
import { VNET_F_NEEDS_CSUM, VNET_FLAGS, VNET_GSO_ECN, VNET_GSO_SIZE, VNET_GSO_TYPE, VNET_GSO_UDP_L4, VNET_HDR_LEN, VNET_HDR_LEN_FIELD } from '../datapath/vnet.js';
import { VXLAN_PAYLOAD_HDR, VXLAN_PORT, VxlanResult, vxlanDecapPayload, vxlanEncapPayload } from '../datapath/vxlan.js';
import { icmpTooBig, oversizeMayFragment } from '../datapath/icmp-too-big.js';
import type { Pipeline } from '../datapath/pipeline.js';
import { UNDERLAY_PORT } from '../tables/tableset.js';
import { countDrop, C_GSO_SPLIT_PKTS, C_GSO_SPLIT_SEGS, C_VXLAN_RX_BYTES, C_VXLAN_RX_PKTS, C_VXLAN_TOO_BIG, C_VXLAN_TX_BYTES, C_VXLAN_TX_PKTS } from '../tables/events.js';
import { DIR_EGRESS } from '../proto/direction.js';
import { MAX_BATCH, type RuntimeShared } from './shared.js';
import { TunswitchError } from '../proto/errors.js';

export { UNDERLAY_PORT };

/** Bytes at the end of each slot holding the tunnel endpoint and VNI (see the file comment). */
export const SLOT_TRAILER = 8;
const TR_DST = SLOT_TRAILER;
const TR_VNI = 4;

/** virtio-net header GSO type byte offset; 0 = not a GSO packet. */
const VNET_GSO_TYPE_OFF = VNET_GSO_TYPE;
/** Free bytes the splitter leaves before each segment's virtio header: VXLAN + Ethernet fit over both. */
export const SEG_HEADROOM = VXLAN_PAYLOAD_HDR - VNET_HDR_LEN;
/** UDP header bytes. */
const UDP_HLEN = 8;

function ipv4Word(ip: string): number {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  if (!m) throw new TunswitchError('ECONFIG_INVALID', `underlay: ${JSON.stringify(ip)} is not an IPv4 address`);
  return ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
}

/**
 * Datagrams of one UDP GRO buffer the reader coalesces (Linux hands over at most 64 from
 * GRO, UDP_GRO_CNT_MAX, and a UDP_SEGMENT sender's packet whole, at most 128 on 6.x); a
 * buffer with more is cut into separate slots, and what has no slot left is dropped, counted.
 */
export const GRO_MAX_SEGS = 128;
/** A slot big enough for a UDP GRO buffer (64 KiB UDP payload) and a 64 KiB coalesced packet: offload on. */
const GRO_MIN_SLOT = 65536 + SLOT_TRAILER;

/** The I/O thread's side: opens the socket and decapsulates what the engine reads from it. */
export class UnderlayReader {
  readonly fd: number;
  private readonly native: TunBinding;
  private readonly buf: Uint8Array;
  private readonly dv: DataView;
  private readonly slotSize: number;
  private readonly res = new VxlanResult();
  /** UDP_GRO is on (enableGro): reads give buffers of several datagrams, see decapGro. */
  gro = false;
  /** The free-list length decapGro left (it takes slots from, and gives them back to, the top). */
  nFree = 0;
  /** Counters since start (noun + event); read by the unit tests, not exported as metrics yet. */
  groBuffersRead = 0;
  groDatagramsRead = 0;
  groPacketsBuilt = 0;
  groDatagramsMerged = 0;
  /** Datagrams of a GRO buffer dropped because no free slot was left for them. */
  groDatagramsNoSlot = 0;
  private readonly coalescer: GsoCoalescer;
  private readonly segOff = new Int32Array(GRO_MAX_SEGS);
  private readonly segLen = new Int32Array(GRO_MAX_SEGS);

  /** linux6644Safe: GsoCoalescer's option (gso.ts rule 9), as the shards' port writers use it. */
  constructor(
    rt: RuntimeShared,
    readonly hdr: number,
    nodeIp: string,
    linux6644Safe = true,
  ) {
    this.coalescer = new GsoCoalescer(GRO_MAX_SEGS, { linux6644Safe });
    this.native = loadBinding();
    this.fd = this.native.udpOpen(ipv4Word(nodeIp), VXLAN_PORT);
    this.buf = new Uint8Array(rt.slab);
    this.dv = new DataView(rt.slab);
    this.slotSize = rt.slotSize;
  }

  /**
   * Turns UDP_GRO on for a read engine that passes the segment size on (recvmmsg with
   * control messages: the read/write engine), when slots hold 64 KiB (offload on) and
   * packets carry a virtio header. TUNSWITCH_UNDERLAY_GRO=0 in the switch's environment
   * keeps it off (for comparisons). Returns whether it is on.
   */
  enableGro(): boolean {
    if (this.gro) return true;
    if (this.hdr !== VNET_HDR_LEN || this.slotSize < GRO_MIN_SLOT || process.env.TUNSWITCH_UNDERLAY_GRO === '0') return false;
    this.gro = this.native.udpSetGro(this.fd, true);
    return this.gro;
  }

  /**
   * A read of `len` bytes at the start of `slot` that holds datagrams of gsoSize bytes back to
   * back (a UDP GRO buffer; gsoSize 0: one datagram, as decapSlot) becomes packets in slots:
   *   1. every datagram must decapsulate, all with one VNI (one sender identity), and there
   *      may be at most GRO_MAX_SEGS of them; otherwise step 4
   *   2. each inner packet gets a zeroed virtio header over the end of its VXLAN + Ethernet
   *      header (in place), and GsoCoalescer (gso.ts, rules 1-10: same flow, consecutive
   *      sequence, ACK/PSH only, checksums verified) builds same-flow TCP segments into
   *      one TSO packet in a free slot taken as its arena: one pipeline pass, one policy
   *      verdict and one TUN write for the lot
   *   3. the coalescer's output: the packet built at the arena's start keeps that slot; the
   *      lowest-placed packet left in `slot` moves to its start; any other one is copied to
   *      a free slot. Unused slots go back to the free list
   *   4. otherwise each datagram goes to a slot of its own (copied, then decapSlot: a bad one
   *      carries its drop code as before)
   * Output: slots outSlot[at..at+c) with lengths outLen[..], VNI in each trailer; returns c
   * (at most GRO_MAX_SEGS). Extra slots come from the top of free[0..nFree); the new length
   * is this.nFree. A datagram with no slot left is dropped and counted (groDatagramsNoSlot).
   */
  decapGro(slot: number, len: number, gsoSize: number, free: Int32Array, nFree: number, outSlot: Int32Array, outLen: Int32Array, at: number): number {
    this.nFree = nFree;
    const S = this.slotSize;
    const max = S - SLOT_TRAILER;
    if (gsoSize <= 0 || gsoSize >= len || len > max) {
      outSlot[at] = slot;
      outLen[at] = this.decapSlot(slot, len);
      return 1;
    }
    const buf = this.buf;
    const base = slot * S;
    const n = ((len + gsoSize - 1) / gsoSize) | 0;
    this.groBuffersRead++;
    this.groDatagramsRead += n;
    // Step 1.
    const r = this.res;
    const segOff = this.segOff;
    const segLen = this.segLen;
    let vni = 0;
    let ok = n <= GRO_MAX_SEGS && nFree > 0;
    for (let k = 0; ok && k < n; k++) {
      const p = base + k * gsoSize;
      const dl = k === n - 1 ? len - k * gsoSize : gsoSize;
      if (vxlanDecapPayload(buf, p, dl, r) !== 0 || (k > 0 && r.vni !== vni)) {
        ok = false;
        break;
      }
      vni = r.vni;
      segOff[k] = r.innerOff - VNET_HDR_LEN;
      segLen[k] = r.innerLen + VNET_HDR_LEN;
    }
    if (!ok) return this.cutGro(slot, len, gsoSize, n, free, outSlot, outLen, at);
    // Step 2.
    for (let k = 0; k < n; k++) buf.fill(0, segOff[k] as number, (segOff[k] as number) + VNET_HDR_LEN);
    const arena = free[--this.nFree] as number;
    const aBase = arena * S;
    const co = this.coalescer;
    const built = co.groupsBuilt;
    const merged = co.packetsMerged;
    const m = co.coalesce(buf, segOff, segLen, n, aBase, max, false);
    this.groPacketsBuilt += co.groupsBuilt - built;
    this.groDatagramsMerged += co.packetsMerged - merged;
    // Step 3.
    let low = -1;
    for (let j = 0; j < m; j++) {
      const o = co.outOff[j] as number;
      if (o >= base && o < base + S && (low < 0 || o < (co.outOff[low] as number))) low = j;
    }
    let c = 0;
    let arenaUsed = false;
    for (let j = 0; j < m; j++) {
      const o = co.outOff[j] as number;
      const L = co.outLen[j] as number;
      let dst: number;
      if (o === aBase) {
        dst = arena;
        arenaUsed = true;
      } else if (j === low) {
        dst = slot;
        if (o !== base) buf.copyWithin(base, o, o + L);
      } else {
        if (this.nFree === 0) {
          this.groDatagramsNoSlot++;
          continue;
        }
        dst = free[--this.nFree] as number;
        buf.copyWithin(dst * S, o, o + L);
      }
      this.dv.setInt32(dst * S + S - TR_VNI, vni, true);
      outSlot[at + c] = dst;
      outLen[at + c] = L;
      c++;
    }
    if (!arenaUsed) free[this.nFree++] = arena;
    if (low < 0) free[this.nFree++] = slot;
    return c;
  }

  /** decapGro step 4: datagram k > 0 copied to a free slot, each decapsulated on its own. */
  private cutGro(slot: number, len: number, gsoSize: number, n: number, free: Int32Array, outSlot: Int32Array, outLen: Int32Array, at: number): number {
    const S = this.slotSize;
    const base = slot * S;
    const buf = this.buf;
    let c = 1;
    for (let k = 1; k < n; k++) {
      if (c === GRO_MAX_SEGS || this.nFree === 0) {
        this.groDatagramsNoSlot += n - k;
        break;
      }
      const p = base + k * gsoSize;
      const dl = k === n - 1 ? len - k * gsoSize : gsoSize;
      const dst = free[--this.nFree] as number;
      buf.copyWithin(dst * S, p, p + dl);
      outSlot[at + c] = dst;
      outLen[at + c] = this.decapSlot(dst, dl);
      c++;
    }
    // Last: decapsulating datagram 0 in place rewrites only its own bytes.
    outSlot[at] = slot;
    outLen[at] = this.decapSlot(slot, gsoSize);
    return c;
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

/** UDP payload bytes one UDP_SEGMENT send may carry (65535 - IPv4 20 - UDP 8). */
const UDP_GSO_MAX_PAYLOAD = 65507;
/** Datagrams per UDP_SEGMENT send: Linux's UDP_MAX_SEGMENTS was 64 before it became 128; we use 64. */
const UDP_GSO_MAX_SEGS = 64;

export interface UnderlayShardOptions {
  /** Largest inner IP packet (the endpoints' MTU, configured MTU - 50). */
  innerMtu: number;
  /** Send each split packet's frames with UDP_SEGMENT (file comment, offload step 3). */
  udpGso: boolean;
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
  /** UDP_SEGMENT size of tx entry i (0: one datagram) and the datagrams it holds. */
  private readonly txGso = new Int32Array(MAX_BATCH);
  private readonly txSegs = new Int32Array(MAX_BATCH);
  private readonly splitter = new GsoSplitter(MAX_SPLIT_SEGMENTS);
  private readonly innerMtu: number;
  private readonly udpGso: boolean;
  /** The pipeline's tunnel MTU of the last batch (0: unknown). */
  private tunnelMtu = 0;

  constructor(
    rt: RuntimeShared,
    private readonly hdr: number,
    private readonly counters: Float64Array,
    opts: UnderlayShardOptions = { innerMtu: 0, udpGso: false },
  ) {
    this.native = loadBinding();
    this.buf = new Uint8Array(rt.slab);
    this.dv = new DataView(rt.slab);
    this.lens = new Int32Array(rt.lens);
    this.portFd = new Int32Array(rt.portFd);
    this.slotSize = rt.slotSize;
    this.innerMtu = opts.innerMtu;
    this.udpGso = opts.udpGso;
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
      // A packet coalesced from a GRO buffer (decapGro) counts the datagrams it came from.
      const segs = this.hdr > 0 ? this.segmentsIn(buf, slot, len) : 1;
      this.counters[C_VXLAN_RX_PKTS] += segs;
      this.counters[C_VXLAN_RX_BYTES] += len + segs * VXLAN_PAYLOAD_HDR;
    }
    const out = p.process(buf, dv, off, len, inPort);
    if (out === UNDERLAY_PORT && out === p.underlayPort) {
      const mtu = p.underlayMtu;
      this.tunnelMtu = mtu;
      if (mtu > 0 && len > mtu && inPort !== UNDERLAY_PORT && this.segmentLen(p, buf, slot, off, len) > mtu) {
        const back = this.tooBig(p, buf, dv, slot, off, len, inPort, mtu);
        if (back !== UNDERLAY_PORT) return back;
      }
      this.dv.setUint32(end - TR_DST, p.outTunnel >>> 0, true);
      this.dv.setInt32(end - TR_VNI, p.outSrcId, true);
    }
    return out;
  }

  /** Datagrams a received packet came in: 1, or a coalesced TSO packet's segment count. */
  private segmentsIn(buf: Uint8Array, slot: number, len: number): number {
    const base = slot * this.slotSize;
    if ((buf[base + VNET_GSO_TYPE_OFF] as number) === 0) return 1;
    const size = ((buf[base + VNET_GSO_SIZE + 1] as number) << 8) | (buf[base + VNET_GSO_SIZE] as number);
    const hl = ((buf[base + VNET_HDR_LEN_FIELD + 1] as number) << 8) | (buf[base + VNET_HDR_LEN_FIELD] as number);
    if (size <= 0 || hl >= len) return 1;
    return ((len - hl + size - 1) / size) | 0;
  }

  /**
   * The largest IP packet the tunnel will carry for this one (offload step 1): len for a
   * plain packet; for UDP GSO its datagrams (headers + gso_size); 0 for TCP GSO (the
   * splitter cuts it to the MTU) and other GSO types (the splitter refuses them).
   */
  private segmentLen(p: Pipeline, buf: Uint8Array, slot: number, off: number, len: number): number {
    if (this.hdr === 0) return len;
    const base = slot * this.slotSize;
    const t = (buf[base + VNET_GSO_TYPE_OFF] as number) & ~VNET_GSO_ECN;
    if (t === 0) return len;
    if (t !== VNET_GSO_UDP_L4 || p.pi.l4Off < off) return 0;
    return p.pi.l4Off - off + UDP_HLEN + (((buf[base + VNET_GSO_SIZE + 1] as number) << 8) | (buf[base + VNET_GSO_SIZE] as number));
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
   * and sends them; what cannot be encapsulated or sent is counted as dropped. GSO and
   * checksum-partial packets are split into buf[arenaOff, arenaOff + arenaLen) (at least
   * SPLIT_ARENA_ROOM bytes; free again when this returns, everything is sent by then). The
   * caller gives the slots back.
   */
  sendSlots(slots: Int32Array, n: number, arenaOff: number, arenaLen: number): void {
    const buf = this.buf;
    const hdr = this.hdr;
    const arenaEnd = arenaOff + arenaLen;
    const mtu = this.tunnelMtu > 0 && (this.innerMtu <= 0 || this.tunnelMtu < this.innerMtu) ? this.tunnelMtu : this.innerMtu;
    let pos = arenaOff;
    let q = 0;
    for (let k = 0; k < n; k++) {
      const slot = slots[k] as number;
      const base = slot * this.slotSize;
      const end = base + this.slotSize;
      const off = base + hdr;
      const len = (this.lens[slot] as number) - hdr;
      const vni = this.dv.getInt32(end - TR_VNI, true);
      const dst = this.dv.getUint32(end - TR_DST, true);
      if (hdr > 0 && ((buf[base + VNET_GSO_TYPE_OFF] as number) !== 0 || ((buf[base + VNET_FLAGS] as number) & VNET_F_NEEDS_CSUM) !== 0)) {
        // Offload step 2: split into the arena behind SEG_HEADROOM, encapsulate in place.
        if (q === 0) pos = arenaOff;
        if (arenaEnd - pos < SPLIT_ARENA_ROOM) {
          this.flush(q);
          q = 0;
          pos = arenaOff;
        }
        const gso = (buf[base + VNET_GSO_TYPE_OFF] as number) !== 0;
        const sp = this.splitter;
        const segs = sp.split(buf, base, len + hdr, pos, arenaEnd - pos, mtu, SEG_HEADROOM);
        if (segs < 0) {
          this.countDrop(DROP_GSO_SPLIT, len);
          continue;
        }
        if (gso) {
          this.counters[C_GSO_SPLIT_PKTS]++;
          this.counters[C_GSO_SPLIT_SEGS] += segs;
        }
        pos = (sp.outOff[segs - 1] as number) + (sp.outLen[segs - 1] as number);
        // UDP_SEGMENT only for datagrams within the MTU (the kernel refuses larger ones; an
        // IPv4 datagram without DF over it goes alone and the kernel fragments it).
        if (this.udpGso && segs > 1 && (mtu <= 0 || (sp.outLen[0] as number) - VNET_HDR_LEN <= mtu)) {
          q = this.queueGso(q, vni, dst, segs);
          continue;
        }
        for (let s = 0; s < segs; s++) {
          const ip = (sp.outOff[s] as number) + VNET_HDR_LEN;
          const w = vxlanEncapPayload(buf, ip, (sp.outLen[s] as number) - VNET_HDR_LEN, vni);
          if (w < 0) {
            this.countDrop(w, (sp.outLen[s] as number) - VNET_HDR_LEN);
            continue;
          }
          q = this.queue(q, ip - VXLAN_PAYLOAD_HDR, w, dst, 0, 1);
        }
        continue;
      }
      // A packet that does not fit the slot with its encapsulation.
      if (off + VXLAN_PAYLOAD_HDR + len > end - SLOT_TRAILER) {
        this.countDrop(DROP_FRAG_NEEDED, len);
        continue;
      }
      buf.copyWithin(off + VXLAN_PAYLOAD_HDR, off, off + len);
      const w = vxlanEncapPayload(buf, off + VXLAN_PAYLOAD_HDR, len, vni);
      if (w < 0) {
        this.countDrop(w, len);
        continue;
      }
      q = this.queue(q, off, w, dst, 0, 1);
    }
    if (q > 0) this.flush(q);
  }

  /**
   * Offload step 3: the splitter's segs frames (back to back, all of one size but the last)
   * as UDP_SEGMENT sends of at most UDP_GSO_MAX_SEGS datagrams and UDP_GSO_MAX_PAYLOAD bytes.
   */
  private queueGso(q: number, vni: number, dst: number, segs: number): number {
    const sp = this.splitter;
    const buf = this.buf;
    let first = -1;
    let bytes = 0;
    let frame = 0;
    let last = 0;
    let count = 0;
    for (let s = 0; s < segs; s++) {
      const ip = (sp.outOff[s] as number) + VNET_HDR_LEN;
      const w = vxlanEncapPayload(buf, ip, (sp.outLen[s] as number) - VNET_HDR_LEN, vni);
      if (w < 0) {
        // Not expected after a good split (the inner packet is the one that was parsed); the
        // run so far goes out, this one is dropped, counted.
        if (count > 0) q = this.queue(q, first, bytes, dst, count > 1 ? frame : 0, count);
        count = 0;
        this.countDrop(w, (sp.outLen[s] as number) - VNET_HDR_LEN);
        continue;
      }
      // Only the last datagram of a UDP_SEGMENT run may be shorter.
      if (count > 0 && (count === UDP_GSO_MAX_SEGS || bytes + w > UDP_GSO_MAX_PAYLOAD || w > frame || last < frame)) {
        q = this.queue(q, first, bytes, dst, count > 1 ? frame : 0, count);
        count = 0;
      }
      if (count === 0) {
        first = ip - VXLAN_PAYLOAD_HDR;
        bytes = 0;
        frame = w;
      }
      bytes += w;
      last = w;
      count++;
    }
    if (count > 0) q = this.queue(q, first, bytes, dst, count > 1 ? frame : 0, count);
    return q;
  }

  /** Adds one send (a datagram, or a UDP_SEGMENT run of segs); flushes a full batch. */
  private queue(q: number, off: number, len: number, dst: number, gsoSize: number, segs: number): number {
    this.txOff[q] = off;
    this.txLen[q] = len;
    this.txDst[q] = dst | 0;
    this.txGso[q] = gsoSize;
    this.txSegs[q] = segs;
    q++;
    if (q === MAX_BATCH) {
      this.flush(q);
      q = 0;
    }
    return q;
  }

  private flush(q: number): void {
    if (q === 0) return;
    const fd = this.portFd[UNDERLAY_PORT] as number;
    let sent = 0;
    if (fd >= 0) {
      try {
        sent = this.udpGso
          ? this.native.udpSendBatch(fd, this.buf, this.txOff, this.txLen, this.txDst, 0, q, VXLAN_PORT, this.txGso)
          : this.native.udpSendBatch(fd, this.buf, this.txOff, this.txLen, this.txDst, 0, q, VXLAN_PORT);
      } catch {
        sent = 0;
      }
    }
    for (let k = 0; k < sent; k++) {
      const segs = this.txSegs[k] as number;
      this.counters[C_VXLAN_TX_PKTS] += segs;
      this.counters[C_VXLAN_TX_BYTES] += this.txLen[k] as number;
    }
    for (let k = sent; k < q; k++) countDrop(this.counters, DROP_WRITE_ERROR, DIR_EGRESS, this.txSegs[k] as number, this.txLen[k] as number);
  }

  private countDrop(code: number, len: number): void {
    countDrop(this.counters, code, DIR_EGRESS, 1, len);
  }
}
