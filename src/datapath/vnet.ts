/**
 * The virtio-net header that precedes every packet on a TUN opened with IFF_VNET_HDR
 * (include/uapi/linux/virtio_net.h, struct virtio_net_hdr_mrg_rxbuf). A leaf module: it
 * imports nothing, so the I/O layer (src/io/tun.ts) and the datapath share one definition.
 *
 * We set the header size to 12 with TUNSETVNETHDRSZ (native/src/tun.c explains why). The
 * fields are in host byte order, little endian on every machine we run on (we never call
 * TUNSETVNETBE/LE):
 *
 *   offset width field        meaning
 *   0      u8    flags        NEEDS_CSUM: the L4 checksum is not done yet; the checksum field
 *                             holds the pseudo-header sum and the reader must sum from
 *                             csum_start to the end and store the result at
 *                             csum_start + csum_offset. DATA_VALID (read only): the kernel
 *                             already verified the checksum.
 *   1      u8    gso_type     NONE, TCPV4, UDP (UFO, obsolete), TCPV6, UDP_L4 (USO); | ECN
 *   2      u16   hdr_len      bytes of headers repeated in every segment (a hint)
 *   4      u16   gso_size     payload bytes per segment (the MSS); 0 when gso_type is NONE
 *   6      u16   csum_start   offset of the L4 header from the start of the IP header
 *   8      u16   csum_offset  offset of the checksum field from csum_start (TCP 16, UDP 6)
 *   10     u16   num_buffers  mergeable receive buffers; unused on TUN, written 0
 */

export const VNET_HDR_LEN = 12;

export const VNET_FLAGS = 0;
export const VNET_GSO_TYPE = 1;
export const VNET_HDR_LEN_FIELD = 2;
export const VNET_GSO_SIZE = 4;
export const VNET_CSUM_START = 6;
export const VNET_CSUM_OFFSET = 8;
export const VNET_NUM_BUFFERS = 10;

/** flags */
export const VNET_F_NEEDS_CSUM = 1;
export const VNET_F_DATA_VALID = 2;

/** gso_type */
export const VNET_GSO_NONE = 0;
export const VNET_GSO_TCPV4 = 1;
export const VNET_GSO_UDP = 3;
export const VNET_GSO_TCPV6 = 4;
export const VNET_GSO_UDP_L4 = 5;
/** Set with TCPV4/TCPV6 when the sender uses ECN (CWR only on the first segment). */
export const VNET_GSO_ECN = 0x80;

/** Checksum field offsets from the start of the L4 header (csum_offset values). */
export const TCP_CSUM_OFFSET = 16;
export const UDP_CSUM_OFFSET = 6;

/** Reads a little-endian u16 field of the header at `off`. */
export function vnetGet16(buf: Uint8Array, off: number): number {
  return buf[off]! | (buf[off + 1]! << 8);
}

/** Writes a little-endian u16 field of the header at `off`. */
export function vnetSet16(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v & 0xff;
  buf[off + 1] = (v >>> 8) & 0xff;
}

/** Writes a whole header at buf[off .. off + 12). */
export function vnetWrite(
  buf: Uint8Array, off: number, flags: number, gsoType: number, hdrLen: number, gsoSize: number,
  csumStart: number, csumOffset: number,
): void {
  buf[off + VNET_FLAGS] = flags;
  buf[off + VNET_GSO_TYPE] = gsoType;
  vnetSet16(buf, off + VNET_HDR_LEN_FIELD, hdrLen);
  vnetSet16(buf, off + VNET_GSO_SIZE, gsoSize);
  vnetSet16(buf, off + VNET_CSUM_START, csumStart);
  vnetSet16(buf, off + VNET_CSUM_OFFSET, csumOffset);
  vnetSet16(buf, off + VNET_NUM_BUFFERS, 0);
}

/**
 * Normalises the header of a packet we pass on unchanged: keeps NEEDS_CSUM with its
 * csum_start/csum_offset and any GSO fields, clears DATA_VALID (meaningful only on read) and
 * num_buffers, and zeroes hdr_len/gso_size when gso_type is NONE (a non-zero gso_size on a
 * non-GSO packet is what Linux 6.6.44's extra check looked at; see gso.ts).
 */
export function vnetNormalise(buf: Uint8Array, off: number): void {
  buf[off + VNET_FLAGS] = buf[off + VNET_FLAGS]! & VNET_F_NEEDS_CSUM;
  if (buf[off + VNET_GSO_TYPE] === VNET_GSO_NONE) {
    vnetSet16(buf, off + VNET_HDR_LEN_FIELD, 0);
    vnetSet16(buf, off + VNET_GSO_SIZE, 0);
  }
  vnetSet16(buf, off + VNET_NUM_BUFFERS, 0);
  if ((buf[off + VNET_FLAGS]! & VNET_F_NEEDS_CSUM) === 0) {
    vnetSet16(buf, off + VNET_CSUM_START, 0);
    vnetSet16(buf, off + VNET_CSUM_OFFSET, 0);
  }
}
