/**
 * gso-*: GsoCoalescer.coalesce() and GsoSplitter.split() (src/datapath/gso.ts), ns per segment.
 *
 *   gso-coalesce-64         64 TCPv4 segments (2 flows x 32, MSS 1448, timestamps) read from an
 *                           offload TUN (NEEDS_CSUM: no checksum to verify) -> 2-4 GSO packets
 *   gso-coalesce-64-verify  the same with full checksums, verified before merging (a plain port)
 *   gso-split-64            one TCPv4 GSO packet of 64 x 1000-byte segments -> 64 segments
 *                           with full checksums (a port without offload)
 *   gso-port-udp64          GsoPortWriter.write (src/datapath/gso-port.ts) of 64 UDP datagrams
 *                           of 64 bytes, 16 flows, to a port with USO: what the transmit step
 *                           adds per packet to `tunswitch bench`'s udp64 (nothing coalesces)
 *   gso-port-uso-64         64 UDP datagrams of 1200 bytes, 2 flows, full checksums verified,
 *                           to a port with USO -> 2 USO packets
 * One op = one segment (one packet).
 */
import { pathToFileURL } from 'node:url';
import { GsoCoalescer, GsoSplitter } from '../../src/datapath/gso.js';
import { GsoPortWriter } from '../../src/datapath/gso-port.js';
import { ipv4Tcp, ipv4Udp } from '../../test/helpers/packets.js';
import type { Rand } from '../../test/helpers/rand.js';
import type { MicroCase } from '../micro.js';

const SEGS = 64;
const SLOT = 2048;
const VH = 12;
const TS = [1, 1, 8, 10, 0, 0, 1, 0, 0, 0, 2, 0];

function coalesceCase(r: Rand, verify: boolean): MicroCase {
  const arenaLen = 4 * 70000;
  const buf = new Uint8Array(SEGS * SLOT + arenaLen);
  const off = new Int32Array(SEGS);
  const len = new Int32Array(SEGS);
  const seq = [r.u32(), r.u32()];
  for (let i = 0; i < SEGS; i++) {
    const f = i & 1;
    const payload = new Uint8Array(1448);
    for (let k = 0; k < payload.length; k++) payload[k] = r.u32() & 0xff;
    const p = ipv4Tcp({ src: '10.92.0.1', dst: `10.92.0.${2 + f}`, sport: 40000 + f, dport: 5001, flags: 0x10, seq: seq[f]!, ack: 1, ipId: i, df: true, payload, tcpOptions: TS });
    seq[f] = (seq[f]! + 1448) >>> 0;
    buf.set(p, i * SLOT + VH);
    if (!verify) {
      buf[i * SLOT] = 1; // NEEDS_CSUM at the TCP checksum (the field's value does not matter here)
      buf[i * SLOT + 6] = 20;
      buf[i * SLOT + 8] = 16;
    }
    off[i] = i * SLOT;
    len[i] = p.length + VH;
  }
  const c = new GsoCoalescer(SEGS);
  let outs = 0;
  let calls = 0;
  return {
    name: verify ? 'gso-coalesce-64-verify' : 'gso-coalesce-64',
    opsPerCall: SEGS,
    fn: () => {
      outs += c.coalesce(buf, off, len, SEGS, SEGS * SLOT, arenaLen, false);
      calls++;
    },
    check: () => (calls > 0 && outs / calls <= 4 ? '' : `got ${outs / calls} outputs per call, want <= 4 (segments did not merge)`),
    note: `${SEGS} TCPv4 segments, 2 flows, MSS 1448 with timestamps, ${verify ? 'full checksums verified' : 'NEEDS_CSUM (offload TUN)'}; one op = one segment`,
  };
}

function splitCase(r: Rand): MicroCase {
  const seg = 1000;
  const payload = new Uint8Array(SEGS * seg);
  for (let k = 0; k < payload.length; k++) payload[k] = r.u32() & 0xff;
  const p = ipv4Tcp({ src: '10.92.0.1', dst: '10.92.0.2', sport: 40000, dport: 5001, flags: 0x18, seq: r.u32(), ack: 1, ipId: 1, df: true, payload, tcpOptions: TS });
  const arenaLen = SEGS * (VH + 52) + payload.length;
  const buf = new Uint8Array(VH + p.length + arenaLen);
  buf.set(p, VH);
  buf[0] = 1; // NEEDS_CSUM
  buf[1] = 1; // TCPV4
  buf[2] = 52;
  buf[4] = seg & 0xff;
  buf[5] = seg >> 8;
  buf[6] = 20;
  buf[8] = 16;
  const sp = new GsoSplitter(SEGS);
  const at = VH + p.length;
  let bad = 0;
  return {
    name: 'gso-split-64',
    opsPerCall: SEGS,
    fn: () => {
      if (sp.split(buf, 0, VH + p.length, at, arenaLen, 1500) !== SEGS) bad++;
    },
    check: () => (bad === 0 ? '' : `${bad} splits did not give ${SEGS} segments`),
    note: `one TCPv4 GSO packet, ${SEGS} x ${seg}-byte segments with timestamps -> ${SEGS} segments, full checksums; one op = one segment`,
  };
}

function portCase(r: Rand, size: number, flows: number): MicroCase {
  const arenaLen = 1 << 20;
  const buf = new Uint8Array(SEGS * SLOT + arenaLen);
  const off = new Int32Array(SEGS);
  const len = new Int32Array(SEGS);
  for (let i = 0; i < SEGS; i++) {
    const f = i % flows;
    const payload = new Uint8Array(size - 28);
    for (let k = 0; k < payload.length; k++) payload[k] = r.u32() & 0xff;
    const p = ipv4Udp({ src: '10.92.0.1', dst: `10.92.0.${2 + f}`, sport: 40000 + f, dport: 9, ipId: i, payload });
    buf.set(p, i * SLOT + VH);
    off[i] = i * SLOT;
    len[i] = p.length + VH;
  }
  const w = new GsoPortWriter(1024, { gro: true, mtu: 1500, linux6644Safe: false });
  let outs = 0;
  let calls = 0;
  const want = size >= 256 ? flows : SEGS;
  return {
    name: size >= 256 ? 'gso-port-uso-64' : 'gso-port-udp64',
    opsPerCall: SEGS,
    fn: () => {
      w.write(buf, off, len, 0, SEGS, true, true, SEGS * SLOT, arenaLen, 1024);
      outs += w.m;
      calls++;
    },
    check: () => (calls > 0 && outs / calls === want ? '' : `got ${outs / calls} outputs per call, want ${want}`),
    note: `${SEGS} IPv4/UDP datagrams of ${size} bytes, ${flows} flows, to a port with TSO and USO (gro on); one op = one datagram`,
  };
}

export function gsoCases(r: Rand): MicroCase[] {
  return [coalesceCase(r, false), coalesceCase(r, true), splitCase(r), portCase(r, 64, 16), portCase(r, 1200, 2)];
}

/** Runs only these cases (node dist/bench/datapath/gso.js), briefly: the machine is shared. */
export async function main(): Promise<void> {
  const { Rand } = await import('../../test/helpers/rand.js');
  const r = new Rand(1);
  for (const c of gsoCases(r)) {
    for (let i = 0; i < 200; i++) c.fn();
    const samples: number[] = [];
    for (let s = 0; s < 31; s++) {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < 20; i++) c.fn();
      samples.push(Number(process.hrtime.bigint() - t0) / 20 / c.opsPerCall);
    }
    samples.sort((a, b) => a - b);
    const problem = c.check?.() ?? '';
    console.log(`${c.name}: median ${samples[15]!.toFixed(0)} ns/segment (min ${samples[0]!.toFixed(0)})${problem !== '' ? `  ERROR ${problem}` : ''}`);
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
