/**
 * GsoCoalescer / GsoSplitter (src/datapath/gso.ts).
 *
 *   - round trip: seeded random streams (TCP v4/v6, with/without timestamps, PSH, FIN, pure
 *     ACKs, retransmissions, skipped sequence, changing options and windows, short tails,
 *     bad checksums, NEEDS_CSUM inputs, mixed flows; UDP likewise) -> coalesce -> split at
 *     gso_size -> per flow, byte-exact the original packets, every checksum valid.
 *     Nothing the kernel changes differs here because the streams are what a real sender
 *     makes: IPv4 IDs count up per flow, PSH only on a group's last segment. The fields our
 *     split (like the kernel's) may legitimately change are listed in the README text:
 *     IPv4 ID (first + k), TCP flags FIN/PSH (last only) and CWR (first only), UDP/TCP
 *     checksums (recomputed; an IPv4 UDP zero checksum becomes a real one).
 *   - the fast coalescer against a naive model of the same rules, output for output.
 *   - Linux 6.6.44's rejected shapes (tailscale#13052): the predicate, and that no output
 *     of ours has such a shape in the default mode.
 *   - fuzz, and heap growth over 1M calls.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { GsoCoalescer, GsoSplitter, linux6644RejectsGso, UDP_MAX_SEGMENTS } from '../../src/datapath/gso.js';
import { csumFold, csumPartial, ipv4HeaderChecksum, l4Checksum4, l4Checksum6 } from '../../src/datapath/checksum.js';
import { Rand } from '../helpers/rand.js';
import { exposeGc } from '../../bench/micro.js';
import { ipv4Tcp, ipv4Udp, ipv6Tcp, ipv6Udp, ipv4Icmp } from '../helpers/packets.js';

const VH = 12;
const SLOT = 2048;

// ---------------------------------------------------------------------------------------
// Stream generation

interface Flow {
  fam: 4 | 6;
  tcp: boolean;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  ts: boolean;
  tsval: number;
  mss: number;
  seq: number;
  ack: number;
  window: number;
  id: number;
  df: boolean;
  ttl: number;
}

/** One input packet: the IP bytes as sent (full checksum) and the virtio header to give it. */
interface Pkt {
  ip: Uint8Array;
  needsCsum: boolean;
  dataValid: boolean;
}

function tsOption(v: number): number[] {
  // NOP NOP TS(kind 8, len 10, TSval, TSecr)
  return [1, 1, 8, 10, (v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255, 0, 0, 0, 7];
}

function makeFlow(r: Rand, k: number, tcp: boolean): Flow {
  const fam = r.bool() ? 4 : 6;
  return {
    fam, tcp,
    src: fam === 4 ? `10.92.${k}.1` : `fd00:92::${k}:1`,
    dst: fam === 4 ? `10.92.${k}.2` : `fd00:92::${k}:2`,
    sport: 40000 + k, dport: tcp ? 5001 : 5002,
    ts: r.bool(), tsval: r.u32(), mss: r.pick([100, 536, 1000, 1448]), seq: r.u32(), ack: r.u32(),
    window: 502, id: r.int(65536), df: r.bool(0.8), ttl: 64,
  };
}

function build(f: Flow, flags: number, payload: Uint8Array): Uint8Array {
  const id = f.id;
  f.id = (f.id + 1) & 0xffff;
  if (f.tcp) {
    const t = { sport: f.sport, dport: f.dport, flags, seq: f.seq, ack: f.ack, window: f.window, payload, tcpOptions: f.ts ? tsOption(f.tsval) : [] };
    return f.fam === 4 ? ipv4Tcp({ src: f.src, dst: f.dst, ipId: id, df: f.df, ttl: f.ttl, ...t }) : ipv6Tcp({ src: f.src, dst: f.dst, hopLimit: f.ttl, ...t });
  }
  const u = { sport: f.sport, dport: f.dport, payload };
  return f.fam === 4 ? ipv4Udp({ src: f.src, dst: f.dst, ipId: id, df: f.df, ttl: f.ttl, ...u }) : ipv6Udp({ src: f.src, dst: f.dst, hopLimit: f.ttl, ...u });
}

/** The next packet of flow f: mostly full segments, sometimes the odd one the rules must stop at. */
function nextPacket(r: Rand, f: Flow): Pkt {
  const pay = (n: number): Uint8Array => {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = (f.seq + i * 7 + f.sport) & 0xff;
    return b;
  };
  let ip: Uint8Array;
  const e = r.int(100);
  if (!f.tcp) {
    const n = e < 80 ? f.mss : e < 92 ? 1 + r.int(f.mss) : f.mss + 1 + r.int(200);
    ip = build(f, 0, pay(Math.min(n, 1400)));
  } else if (e < 3) {
    ip = build(f, 0x11, new Uint8Array(0)); // FIN
    f.seq = (f.seq + 1) >>> 0;
  } else if (e < 7) {
    ip = build(f, 0x10, new Uint8Array(0)); // pure ACK
  } else if (e < 10) {
    const back = (f.seq - f.mss) >>> 0; // retransmission
    const save = f.seq;
    f.seq = back;
    ip = build(f, 0x10, pay(f.mss));
    f.seq = save;
  } else if (e < 12) {
    f.seq = (f.seq + f.mss) >>> 0; // a lost segment: sequence jumps
    ip = build(f, 0x10, pay(f.mss));
    f.seq = (f.seq + f.mss) >>> 0;
  } else {
    if (f.ts && e < 20) f.tsval = (f.tsval + 1) >>> 0; // options change
    if (e >= 20 && e < 23) f.window++;
    if (e >= 23 && e < 25) f.ack = (f.ack + 1) >>> 0;
    const n = e < 80 ? f.mss : 1 + r.int(f.mss);
    ip = build(f, e >= 88 && e < 96 ? 0x18 : 0x10, pay(n));
    f.seq = (f.seq + n) >>> 0;
  }
  if (r.int(100) < 2 && ip.length > 60) {
    ip[ip.length - 1] ^= 0x5a; // bad checksum (only meaningful on a packet that carries a full one)
    return { ip, needsCsum: false, dataValid: false };
  }
  return { ip, needsCsum: r.int(100) < 20, dataValid: r.int(100) < 10 };
}

interface Batch {
  buf: Uint8Array;
  off: Int32Array;
  len: Int32Array;
  n: number;
  arenaOff: number;
  arenaLen: number;
  pkts: Pkt[];
}

/** The IP packet as it goes into the coalescer: NEEDS_CSUM packets carry the pseudo-header seed. */
function inputBytes(p: Pkt): Uint8Array {
  const out = new Uint8Array(VH + p.ip.length);
  out.set(p.ip, VH);
  const fam = p.ip[0]! >> 4;
  const iph = fam === 4 ? 20 : 40;
  const proto = fam === 4 ? p.ip[9]! : p.ip[6]!;
  if (p.needsCsum && (proto === 6 || proto === 17)) {
    const co = proto === 6 ? 16 : 6;
    out[0] = 1;
    out[6] = iph; out[8] = co;
    const l4Len = p.ip.length - iph;
    let s = fam === 4 ? csumPartial(p.ip, 12, 8, 0) + proto + l4Len : csumPartial(p.ip, 8, 32, 0) + l4Len + proto;
    s = csumFold(s);
    out[VH + iph + co] = s >> 8;
    out[VH + iph + co + 1] = s & 0xff;
  } else if (p.dataValid) {
    out[0] = 2;
  }
  return out;
}

function makeBatch(pkts: Pkt[], arenaLen = 70000 * 4): Batch {
  const n = pkts.length;
  const buf = new Uint8Array(n * SLOT + arenaLen);
  const off = new Int32Array(n);
  const len = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const b = inputBytes(pkts[i]!);
    buf.set(b, i * SLOT);
    off[i] = i * SLOT;
    len[i] = b.length;
  }
  return { buf, off, len, n, arenaOff: n * SLOT, arenaLen, pkts };
}

function genStream(r: Rand, n: number, flows: number, udp: boolean): Pkt[] {
  const fs: Flow[] = [];
  for (let k = 0; k < flows; k++) fs.push(makeFlow(r, k, udp ? r.bool(0.6) === false : true));
  const out: Pkt[] = [];
  for (let i = 0; i < n; i++) {
    if (r.int(100) < 2) {
      out.push({ ip: ipv4Icmp({ src: '10.92.9.1', dst: '10.92.9.2' }), needsCsum: false, dataValid: false });
      continue;
    }
    // Bursty: mostly the same flow as before.
    const f = fs[r.int(100) < 70 && i > 0 ? (i * 7) % flows : r.int(flows)]!;
    out.push(nextPacket(r, f));
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Checks

function flowKey(ip: Uint8Array): string {
  const fam = ip[0]! >> 4;
  if (fam === 4) {
    const proto = ip[9]!;
    const l4 = (ip[0]! & 15) * 4;
    return `4/${proto}/${ip.subarray(12, 20).join('.')}/${proto === 6 || proto === 17 ? ip.subarray(l4, l4 + 4).join('.') : ''}`;
  }
  return `6/${ip[6]}/${ip.subarray(8, 40).join('.')}/${ip.subarray(40, 44).join('.')}`;
}

function checksumsValid(ip: Uint8Array): boolean {
  const fam = ip[0]! >> 4;
  if (fam === 4) {
    const iph = (ip[0]! & 15) * 4;
    if (ipv4HeaderChecksum(ip, 0, iph) !== ((ip[10]! << 8) | ip[11]!)) return false;
    const proto = ip[9]!;
    if (proto !== 6 && proto !== 17) return true;
    return l4Checksum4(ip, 0, iph, ip.length - iph, proto) === 0;
  }
  const proto = ip[6]!;
  if (proto !== 6 && proto !== 17) return true;
  return l4Checksum6(ip, 0, 40, ip.length - 40, proto) === 0;
}

/** Splits every output of a coalesce call back into segments (IP bytes, virtio header checked zero). */
function splitAll(b: Batch, c: GsoCoalescer, m: number): Uint8Array[] {
  const sp = new GsoSplitter(64);
  const segs: Uint8Array[] = [];
  for (let j = 0; j < m; j++) {
    const o = c.outOff[j]!;
    const L = c.outLen[j]!;
    const one = new Uint8Array(L + 70000 + 64 * VH * 2);
    one.set(b.buf.subarray(o, o + L), 0);
    const k = sp.split(one, 0, L, L, one.length - L, 0);
    assert.ok(k >= 1, `output ${j}: split returned ${k}, want >= 1`);
    for (let s = 0; s < k; s++) {
      const so = sp.outOff[s]!;
      const seg = one.slice(so, so + sp.outLen[s]!);
      assert.deepEqual([...seg.subarray(0, VH)], new Array(VH).fill(0), `output ${j} segment ${s}: virtio header not zero`);
      segs.push(seg.subarray(VH));
    }
  }
  return segs;
}

function perFlow(list: Uint8Array[]): Map<string, Uint8Array[]> {
  const m = new Map<string, Uint8Array[]>();
  for (const p of list) {
    const k = flowKey(p);
    let a = m.get(k);
    if (a === undefined) m.set(k, (a = []));
    a.push(p);
  }
  return m;
}

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

/** "" when equal, else where and how two packets first differ (short). */
function diff(got: Uint8Array, want: Uint8Array): string {
  if (got.length !== want.length) return `length ${got.length}, want ${want.length}`;
  for (let i = 0; i < got.length; i++) {
    if (got[i] !== want[i]) return `first difference at byte ${i}: got ${hex(got.subarray(i, i + 8))}, want ${hex(want.subarray(i, i + 8))}; header got ${hex(got.subarray(0, 64))}`;
  }
  return '';
}

function assertRoundTrip(what: string, b: Batch, c: GsoCoalescer, m: number): void {
  const segs = splitAll(b, c, m);
  const want = perFlow(b.pkts.map((p) => p.ip));
  const got = perFlow(segs);
  assert.equal(segs.length, b.n, `${what}: got ${segs.length} segments after split, want ${b.n}`);
  for (const [k, w] of want) {
    const g = got.get(k) ?? [];
    assert.equal(g.length, w.length, `${what}: flow ${k}: got ${g.length} packets, want ${w.length}`);
    for (let i = 0; i < w.length; i++) {
      const d = diff(g[i]!, w[i]!);
      if (d !== '') assert.fail(`${what}: flow ${k} packet ${i}: ${d}`);
      if (checksumsValid(w[i]!)) assert.ok(checksumsValid(g[i]!), `${what}: flow ${k} packet ${i}: checksum invalid`);
    }
  }
}

/** Every GSO output is >= 2 segments, a type we know, and (safe mode) not a 6.6.44-rejected shape. */
function assertShapes(what: string, b: Batch, c: GsoCoalescer, m: number, safe: boolean): number {
  let gsoCount = 0;
  for (let j = 0; j < m; j++) {
    const o = c.outOff[j]!;
    const L = c.outLen[j]!;
    const t = b.buf[o + 1]!;
    if (t === 0) {
      assert.equal(b.buf[o + 4]! | (b.buf[o + 5]! << 8), 0, `${what}: output ${j}: non-GSO with gso_size != 0`);
      continue;
    }
    gsoCount++;
    const gso = b.buf[o + 4]! | (b.buf[o + 5]! << 8);
    const cs = b.buf[o + 6]! | (b.buf[o + 7]! << 8);
    const co = b.buf[o + 8]! | (b.buf[o + 9]! << 8);
    const hdrLen = b.buf[o + 2]! | (b.buf[o + 3]! << 8);
    const ipLen = L - VH;
    assert.ok(ipLen - hdrLen > gso, `${what}: output ${j}: one-segment GSO packet (payload ${ipLen - hdrLen}, gso_size ${gso})`);
    assert.equal(b.buf[o], 1, `${what}: output ${j}: flags got ${b.buf[o]}, want NEEDS_CSUM`);
    if (safe) assert.ok(!linux6644RejectsGso(ipLen, gso, cs, t === 5 ? 8 : 20, co), `${what}: output ${j}: shape Linux 6.6.44 rejects (len ${ipLen}, gso ${gso})`);
  }
  return gsoCount;
}

// ---------------------------------------------------------------------------------------
// Naive model of the rules (Maps and objects; no typed arrays, no shared state)

interface NInfo {
  fam: number;
  proto: number;
  key: string | null;
  barrier: boolean;
  cand: boolean;
  iph: number;
  hdr: number;
  pay: number;
  csum: number; // 0 unknown 1 good -1 bad
}

function naiveInfo(p: Uint8Array, allowUdp: boolean): NInfo {
  const none: NInfo = { fam: 0, proto: 0, key: null, barrier: false, cand: false, iph: 0, hdr: 0, pay: 0, csum: 0 };
  if (p.length < VH + 20) return none;
  const ip = p.subarray(VH);
  const dv = new DataView(ip.buffer, ip.byteOffset, ip.byteLength);
  const fam = ip[0]! >> 4;
  let proto: number;
  let iph: number;
  if (fam === 4) {
    iph = (ip[0]! & 15) * 4;
    if (iph < 20 || dv.getUint16(2) > ip.length || dv.getUint16(2) < iph) return none;
    proto = ip[9]!;
    const frag = dv.getUint16(6) & 0x3fff;
    if ((frag & 0x1fff) !== 0) return { ...none, barrier: true };
  } else if (fam === 6) {
    if (ip.length < 40) return none;
    iph = 40;
    proto = ip[6]!;
  } else {
    return none;
  }
  if (proto !== 6 && !(proto === 17 && allowUdp)) return none;
  const total = fam === 4 ? dv.getUint16(2) : dv.getUint16(4) + 40;
  if (total > ip.length || total - iph < (proto === 6 ? 20 : 8)) return none;
  const l4 = iph;
  const key = `${fam}/${proto}/${hex(fam === 4 ? ip.subarray(12, 20) : ip.subarray(8, 40))}/${hex(ip.subarray(l4, l4 + 4))}`;
  const info: NInfo = { fam, proto, key, barrier: false, cand: false, iph, hdr: 0, pay: 0, csum: 0 };
  if (proto === 6) {
    const doff = (ip[l4 + 12]! >> 4) * 4;
    if (doff < 20 || doff > total - iph) return { ...info, key: null };
    info.hdr = iph + doff;
  } else {
    info.hdr = iph + 8;
  }
  if (p[1] !== 0 || total !== ip.length) return info;
  if (fam === 4 && (iph !== 20 || (dv.getUint16(6) & 0x2000) !== 0 || ipv4HeaderChecksum(ip, 0, 20) !== dv.getUint16(10))) return info;
  if (proto === 6 && ip[l4 + 13] !== 0x10 && ip[l4 + 13] !== 0x18) return info;
  if (proto === 17 && dv.getUint16(l4 + 4) !== total - iph) return info;
  info.pay = total - info.hdr;
  if (info.pay < 1) return info;
  if ((p[0]! & 1) !== 0) {
    if ((p[6]! | (p[7]! << 8)) !== iph || (p[8]! | (p[9]! << 8)) !== (proto === 6 ? 16 : 6)) return info;
    info.csum = 1;
  } else if ((p[0]! & 2) !== 0) {
    info.csum = 1;
  }
  info.cand = true;
  return info;
}

function naiveCsumOk(p: Uint8Array, inf: NInfo): boolean {
  const ip = p.subarray(VH);
  const l4Len = ip.length - inf.iph;
  if (inf.proto === 17) {
    const c = (ip[inf.iph + 6]! << 8) | ip[inf.iph + 7]!;
    if (inf.fam === 4) return c === 0 || l4Checksum4(ip, 0, inf.iph, l4Len, 17) === 0;
    return c !== 0 && l4Checksum6(ip, 0, inf.iph, l4Len, 17) === 0;
  }
  return (inf.fam === 4 ? l4Checksum4(ip, 0, 20, l4Len, 6) : l4Checksum6(ip, 0, 40, l4Len, 6)) === 0;
}

interface NGroup {
  members: number[];
  open: boolean;
  seg: number;
  total: number;
  seqNext: number;
}

function naiveCoalesce(input: Uint8Array[], allowUdp: boolean, safe: boolean): Uint8Array[] {
  const infos = input.map((p) => naiveInfo(p, allowUdp));
  const latest = new Map<string, NGroup>();
  const order: (NGroup | number)[] = [];
  const u32 = (p: Uint8Array, o: number): number => ((p[o]! << 24) | (p[o + 1]! << 16) | (p[o + 2]! << 8) | p[o + 3]!) >>> 0;
  for (let i = 0; i < input.length; i++) {
    const inf = infos[i]!;
    const p = input[i]!;
    if (inf.key === null) {
      if (inf.barrier) latest.clear();
      order.push(i);
      continue;
    }
    const g = latest.get(inf.key);
    if (g !== undefined && g.open && inf.cand) {
      const h = input[g.members[0]!]!;
      const hi = infos[g.members[0]!]!;
      let ok = inf.pay <= g.seg && hi.hdr + g.total + inf.pay <= 65535 && hi.proto === inf.proto;
      if (inf.proto === 17 && g.members.length >= UDP_MAX_SEGMENTS) ok = false;
      if (ok && inf.fam === 4) ok = p[VH + 1] === h[VH + 1] && p[VH + 8] === h[VH + 8] && p[VH + 6]! >> 5 === h[VH + 6]! >> 5;
      if (ok && inf.fam === 6) ok = hex(p.subarray(VH, VH + 4)) === hex(h.subarray(VH, VH + 4)) && p[VH + 7] === h[VH + 7];
      if (ok && inf.proto === 6) {
        const l4 = VH + inf.iph;
        ok = inf.hdr === hi.hdr && u32(p, l4 + 8) === u32(h, l4 + 8) && p[l4 + 14] === h[l4 + 14] && p[l4 + 15] === h[l4 + 15] &&
          hex(p.subarray(l4 + 20, VH + inf.hdr)) === hex(h.subarray(l4 + 20, VH + hi.hdr)) && u32(p, l4 + 4) === g.seqNext;
      }
      if (ok) {
        if (hi.csum === 0) {
          hi.csum = naiveCsumOk(h, hi) ? 1 : -1;
          if (hi.csum === -1) g.open = false;
        }
        if (hi.csum === 1) {
          if (inf.csum === 0) inf.csum = naiveCsumOk(p, inf) ? 1 : -1;
          if (inf.csum === 1) {
            g.members.push(i);
            g.total += inf.pay;
            g.seqNext = (g.seqNext + inf.pay) >>> 0;
            if (inf.pay < g.seg) g.open = false;
            if (inf.proto === 6 && (p[VH + inf.iph + 13]! & 8) !== 0) g.open = false;
            continue;
          }
        }
      }
    }
    const ng: NGroup = { members: [i], open: inf.cand && inf.csum !== -1, seg: inf.pay, total: inf.pay, seqNext: 0 };
    if (inf.cand && inf.proto === 6) {
      ng.seqNext = (u32(p, VH + inf.iph + 4) + inf.pay) >>> 0;
      if ((p[VH + inf.iph + 13]! & 8) !== 0) ng.open = false;
    }
    latest.set(inf.key, ng);
    order.push(ng);
  }
  const out: Uint8Array[] = [];
  const norm = (p: Uint8Array): Uint8Array => {
    const q = p.slice();
    if (q.length < VH) return q;
    q[0] = q[0]! & 1;
    if (q[1] === 0) q.fill(0, 2, 6);
    q[10] = 0; q[11] = 0;
    if ((q[0]! & 1) === 0) q.fill(0, 6, 10);
    return q;
  };
  for (const e of order) {
    if (typeof e === 'number') {
      out.push(norm(input[e]!));
      continue;
    }
    let members = e.members;
    const hi = infos[members[0]!]!;
    const rej = (ms: number[]): boolean => {
      const tot = ms.reduce((a, i) => a + infos[i]!.pay, 0);
      return linux6644RejectsGso(hi.hdr + tot, e.seg, hi.iph, hi.proto === 6 ? 20 : 8, hi.proto === 6 ? 16 : 6);
    };
    if (members.length >= 2 && safe && rej(members)) {
      const tail = infos[members[members.length - 1]!]!.pay;
      members = members.length > 2 && tail < e.seg && !rej(members.slice(0, -1)) ? members.slice(0, -1) : members.slice(0, 1);
    }
    if (members.length >= 2) {
      const h = input[members[0]!]!;
      const tot = members.reduce((a, i) => a + infos[i]!.pay, 0);
      const q = new Uint8Array(VH + hi.hdr + tot);
      q.set(h.subarray(0, VH + hi.hdr + hi.pay));
      let w = VH + hi.hdr + hi.pay;
      for (const i of members.slice(1)) {
        q.set(input[i]!.subarray(VH + infos[i]!.hdr), w);
        w += infos[i]!.pay;
      }
      const dv = new DataView(q.buffer);
      const ipLen = hi.hdr + tot;
      const l4 = VH + hi.iph;
      if (hi.fam === 4) {
        dv.setUint16(VH + 2, ipLen);
        dv.setUint16(VH + 10, ipv4HeaderChecksum(q, VH, 20));
      } else {
        dv.setUint16(VH + 4, ipLen - 40);
      }
      const l4Len = ipLen - hi.iph;
      if (hi.proto === 6) q[l4 + 13] = input[members[members.length - 1]!]![l4 + 13]!;
      else dv.setUint16(l4 + 4, l4Len);
      let s = hi.fam === 4 ? csumPartial(q, VH + 12, 8, 0) : csumPartial(q, VH + 8, 32, 0);
      s += hi.proto + l4Len;
      dv.setUint16(l4 + (hi.proto === 6 ? 16 : 6), csumFold(s));
      q.fill(0, 0, VH);
      q[0] = 1;
      q[1] = hi.proto === 17 ? 5 : hi.fam === 4 ? 1 : 4;
      dv.setUint16(2, hi.hdr, true);
      dv.setUint16(4, e.seg, true);
      dv.setUint16(6, hi.iph, true);
      dv.setUint16(8, hi.proto === 6 ? 16 : 6, true);
      out.push(q);
    }
    for (const i of e.members.slice(members.length >= 2 ? members.length : 0)) out.push(norm(input[i]!));
  }
  return out;
}

function outputs(b: Batch, c: GsoCoalescer, m: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let j = 0; j < m; j++) out.push(b.buf.slice(c.outOff[j]!, c.outOff[j]! + c.outLen[j]!));
  return out;
}

function assertSameAsNaive(what: string, b: Batch, input: Uint8Array[], c: GsoCoalescer, m: number, allowUdp: boolean, safe: boolean): void {
  const want = naiveCoalesce(input, allowUdp, safe);
  const got = outputs(b, c, m);
  assert.equal(got.length, want.length, `${what}: got ${got.length} outputs, want ${want.length} (naive model)`);
  for (let j = 0; j < want.length; j++) {
    const d = diff(got[j]!, want[j]!);
    if (d !== '') assert.fail(`${what}: output ${j} vs the naive model: ${d}`);
  }
}

function inputsOf(b: Batch): Uint8Array[] {
  const a: Uint8Array[] = [];
  for (let i = 0; i < b.n; i++) a.push(b.buf.slice(b.off[i]!, b.off[i]! + b.len[i]!));
  return a;
}

// ---------------------------------------------------------------------------------------

describe('GsoCoalescer + GsoSplitter round trip', () => {
  const cases: { name: string; udp: boolean; allowUdp: boolean; safe: boolean }[] = [
    { name: 'TCP, linux6644Safe', udp: false, allowUdp: false, safe: true },
    { name: 'TCP, not linux6644Safe', udp: false, allowUdp: false, safe: false },
    { name: 'TCP+UDP (USO), linux6644Safe', udp: true, allowUdp: true, safe: true },
    { name: 'TCP+UDP (USO), not linux6644Safe', udp: true, allowUdp: true, safe: false },
    { name: 'TCP+UDP, allowUdp false', udp: true, allowUdp: false, safe: false },
  ];
  for (const tc of cases) {
    it(`${tc.name}: seeded random streams come back byte-exact and equal the naive model`, () => {
      let merged = 0;
      for (let seed = 1; seed <= 150; seed++) {
        const r = new Rand(seed * 7919 + (tc.udp ? 1 : 0));
        const n = r.pick([1, 2, 5, 16, 64, 128]);
        const pkts = genStream(r, n, r.range(1, 4), tc.udp);
        const b = makeBatch(pkts);
        const input = inputsOf(b);
        const c = new GsoCoalescer(128, { linux6644Safe: tc.safe });
        const m = c.coalesce(b.buf, b.off, b.len, b.n, b.arenaOff, b.arenaLen, tc.allowUdp);
        const what = `${tc.name} seed ${seed}`;
        assert.ok(m >= 1 && m <= n, `${what}: got m ${m}, want 1..${n}`);
        merged += assertShapes(what, b, c, m, tc.safe);
        assertSameAsNaive(what, b, input, c, m, tc.allowUdp, tc.safe);
        assertRoundTrip(what, b, c, m);
      }
      assert.ok(merged > 50, `${tc.name}: got ${merged} GSO packets over all seeds, want > 50 (the streams must exercise merging)`);
    });
  }

  it('one long flow is cut at the 65535-byte IP limit', () => {
    const r = new Rand(5);
    const f = makeFlow(r, 1, true);
    f.fam = 4; f.src = '10.92.1.1'; f.dst = '10.92.1.2'; f.mss = 1400; f.ts = true;
    const pkts: Pkt[] = [];
    for (let i = 0; i < 100; i++) {
      const payload = new Uint8Array(1400).fill(i);
      pkts.push({ ip: build(f, 0x10, payload), needsCsum: false, dataValid: false });
      f.seq = (f.seq + 1400) >>> 0;
    }
    const b = makeBatch(pkts);
    const c = new GsoCoalescer(128);
    const m = c.coalesce(b.buf, b.off, b.len, b.n, b.arenaOff, b.arenaLen, false);
    // 20 + 32 + 46 * 1400 = 64452 <= 65535 < 20 + 32 + 47 * 1400
    const want = [46, 46, 8];
    assert.equal(m, want.length, `got ${m} outputs, want ${want.length}`);
    for (let j = 0; j < m; j++) {
      const segs = (c.outLen[j]! - VH - 52) / 1400;
      assert.equal(segs, want[j], `output ${j}: got ${segs} segments, want ${want[j]}`);
    }
    assertRoundTrip('65535 limit', b, c, m);
  });

  it('passes everything through when the arena is too small, and merges what fits', () => {
    const r = new Rand(9);
    const f = makeFlow(r, 1, true);
    f.mss = 1000;
    f.ts = true; // equal segments without options would not merge (rule 9)
    const pkts: Pkt[] = [];
    for (let i = 0; i < 8; i++) {
      pkts.push({ ip: build(f, 0x10, new Uint8Array(1000).fill(i)), needsCsum: false, dataValid: false });
      f.seq = (f.seq + 1000) >>> 0;
    }
    const cases: { arena: number; want: number }[] = [
      { arena: 0, want: 8 },
      { arena: 3000, want: 8 }, // a group of 8 needs 12 + hdr + 8000
      { arena: 9000, want: 1 },
    ];
    for (const tc of cases) {
      const b = makeBatch(pkts, tc.arena);
      const c = new GsoCoalescer(16);
      const m = c.coalesce(b.buf, b.off, b.len, b.n, b.arenaOff, b.arenaLen, false);
      assert.equal(m, tc.want, `arena ${tc.arena}: got ${m} outputs, want ${tc.want}`);
      assertRoundTrip(`arena ${tc.arena}`, b, c, m);
    }
  });
});

describe('Linux 6.6.44 GSO check (tailscale/tailscale#13041, #13052)', () => {
  it('linux6644RejectsGso matches the kernel condition', () => {
    // [what, ipLen, gso, csumStart, l4Min, csumOffset, rejected]
    const cases: [string, number, number, number, number, number, boolean][] = [
      ['TCPv4 with timestamps, 2 full segments', 52 + 2 * 1448, 1448, 20, 20, 16, false],
      ['TCPv4 with timestamps, short tail 100', 52 + 1448 + 100, 1448, 20, 20, 16, false],
      ['TCPv4 with timestamps, tail 1400 (52+1400 = 1452 -> remainder 4 <= 40)', 52 + 1448 + 1400, 1448, 20, 20, 16, true],
      ['TCPv6 with timestamps, tail 1380 (remainder 72+1380-1428 = 24 <= 60)', 72 + 1428 + 1380, 1428, 40, 20, 16, true],
      ['TCPv4 no options, full segments (remainder 40 = needed)', 40 + 3 * 1460, 1460, 20, 20, 16, true],
      ['TCPv4 no options, short tail 500 (remainder 540)', 40 + 1460 + 500, 1460, 20, 20, 16, false],
      ['one-segment GSO, no options (remainder = 40)', 40 + 1000, 1000, 20, 20, 16, true],
      ['one-segment GSO with timestamps (remainder 52)', 52 + 1000, 1000, 20, 20, 16, false],
      ['gso_size <= needed', 52 + 3 * 40, 40, 20, 20, 16, true],
      ['USO v4, equal datagrams (remainder 28 = needed)', 28 + 4 * 1000, 1000, 20, 8, 6, true],
      ['USO v4, short tail 300', 28 + 3 * 1000 + 300, 1000, 20, 8, 6, false],
      ['USO v6, equal datagrams', 48 + 4 * 1000, 1000, 40, 8, 6, true],
      ['not GSO (gso_size 0)', 1500, 0, 20, 20, 16, false],
    ];
    for (const [what, ipLen, gso, cs, l4m, co, want] of cases) {
      const got = linux6644RejectsGso(ipLen, gso, cs, l4m, co);
      assert.equal(got, want, `${what}: got rejected=${got}, want ${want}`);
    }
  });

  function flowPkts(fam: 4 | 6, tcp: boolean, ts: boolean, sizes: number[]): Pkt[] {
    const f = makeFlow(new Rand(3), 2, tcp);
    f.fam = fam;
    f.src = fam === 4 ? '10.92.2.1' : 'fd00:92::2:1';
    f.dst = fam === 4 ? '10.92.2.2' : 'fd00:92::2:2';
    f.ts = ts;
    return sizes.map((n, i) => {
      const ip = build(f, 0x10, new Uint8Array(n).fill(i + 1));
      f.seq = (f.seq + n) >>> 0;
      return { ip, needsCsum: false, dataValid: false };
    });
  }

  it('our output avoids the rejected shapes (and merges them when linux6644Safe is off)', () => {
    // [what, packets, udp, outputs' segment counts in safe mode, in unsafe mode]
    const cases: [string, Pkt[], boolean, number[], number[]][] = [
      ['TCPv4 ts, tail 1400 after 1448s: tail sent alone', flowPkts(4, true, true, [1448, 1448, 1400]), false, [2, 1], [3]],
      ['TCPv4 ts, short tail 100: merged', flowPkts(4, true, true, [1448, 1448, 100]), false, [3], [3]],
      ['TCPv4 no options, equal segments: not merged', flowPkts(4, true, false, [1460, 1460, 1460]), false, [1, 1, 1], [3]],
      ['TCPv4 no options, short tail: merged', flowPkts(4, true, false, [1460, 1460, 500]), false, [3], [3]],
      ['TCPv4 no options, [1460, 1400]: never one segment', flowPkts(4, true, false, [1460, 1430]), false, [1, 1], [2]],
      ['TCPv6 ts, tail 1380 after 1428s', flowPkts(6, true, true, [1428, 1428, 1380]), false, [2, 1], [3]],
      ['USO v4 equal datagrams: not merged', flowPkts(4, false, false, [1000, 1000, 1000]), true, [1, 1, 1], [3]],
      ['USO v4 short tail: merged', flowPkts(4, false, false, [1000, 1000, 300]), true, [3], [3]],
      ['single packet: never GSO', flowPkts(4, true, true, [1448]), false, [1], [1]],
    ];
    for (const [what, pkts, udp, wantSafe, wantUnsafe] of cases) {
      for (const safe of [true, false]) {
        const b = makeBatch(pkts);
        const c = new GsoCoalescer(16, { linux6644Safe: safe });
        const m = c.coalesce(b.buf, b.off, b.len, b.n, b.arenaOff, b.arenaLen, udp);
        const got: number[] = [];
        for (let j = 0; j < m; j++) {
          const o = c.outOff[j]!;
          const gso = b.buf[o + 4]! | (b.buf[o + 5]! << 8);
          const hl = b.buf[o + 2]! | (b.buf[o + 3]! << 8);
          got.push(b.buf[o + 1] === 0 ? 1 : Math.ceil((c.outLen[j]! - VH - hl) / gso));
        }
        const want = safe ? wantSafe : wantUnsafe;
        assert.deepEqual(got, want, `${what} (safe ${safe}): got segments per output ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
        assertShapes(what, b, c, m, safe);
        assertRoundTrip(what, b, c, m);
      }
    }
  });
});

describe('GsoSplitter', () => {
  it('splits a TCP GSO packet at the MTU and completes checksums like the kernel', () => {
    const f = makeFlow(new Rand(11), 3, true);
    f.fam = 4; f.src = '10.92.3.1'; f.dst = '10.92.3.2'; f.ts = true; f.id = 100;
    const payload = new Uint8Array(5000);
    for (let i = 0; i < payload.length; i++) payload[i] = i & 0xff;
    const big = build(f, 0x19 | 0x80, payload); // CWR|ACK|PSH|FIN
    const buf = new Uint8Array(65536 * 2);
    buf.set(big, VH);
    buf[1] = 1; // TCPV4
    buf[4] = 1448 & 0xff; buf[5] = 1448 >> 8;
    const sp = new GsoSplitter(16);
    const cases: { mtu: number; segs: number[] }[] = [
      { mtu: 0, segs: [1448, 1448, 1448, 656] },
      { mtu: 1500, segs: [1448, 1448, 1448, 656] },
      { mtu: 1052, segs: [1000, 1000, 1000, 1000, 1000] },
    ];
    for (const tc of cases) {
      const k = sp.split(buf, 0, VH + big.length, 65536, 65536, tc.mtu);
      assert.equal(k, tc.segs.length, `mtu ${tc.mtu}: got ${k} segments, want ${tc.segs.length}`);
      let seqOff = 0;
      for (let s = 0; s < k; s++) {
        const seg = buf.subarray(sp.outOff[s]! + VH, sp.outOff[s]! + sp.outLen[s]!);
        const dv = new DataView(seg.buffer, seg.byteOffset, seg.byteLength);
        const last = s === k - 1;
        const want: [string, number, number][] = [
          ['payload', seg.length - 52, tc.segs[s]!],
          ['IP id', dv.getUint16(4), 100 + s],
          ['seq', dv.getUint32(24), (f.seq + seqOff) >>> 0],
          ['FIN|PSH', seg[33]! & 0x09, last ? 0x09 : 0],
          ['CWR', seg[33]! & 0x80, s === 0 ? 0x80 : 0],
          ['checksums valid', checksumsValid(seg) ? 1 : 0, 1],
          ['payload bytes', seg[52]!, (seqOff) & 0xff],
        ];
        for (const [what, got, w] of want) assert.equal(got, w, `mtu ${tc.mtu} segment ${s} ${what}: got ${got}, want ${w}`);
        seqOff += tc.segs[s]!;
      }
    }
  });

  it('keeps UDP datagram boundaries and completes a NEEDS_CSUM non-GSO packet', () => {
    const f = makeFlow(new Rand(12), 4, false);
    f.fam = 6; f.src = 'fd00:92::4:1'; f.dst = 'fd00:92::4:2';
    const big = build(f, 0, new Uint8Array(2500).fill(7));
    const buf = new Uint8Array(65536 * 2);
    buf.set(big, VH);
    buf[0] = 1; buf[1] = 5; buf[4] = 1000 & 0xff; buf[5] = 1000 >> 8; buf[6] = 40; buf[8] = 6;
    const sp = new GsoSplitter(8);
    const k = sp.split(buf, 0, VH + big.length, 65536, 65536, 500); // MTU ignored for UDP
    assert.equal(k, 3, `got ${k} datagrams, want 3`);
    const sizes = [1000, 1000, 500];
    for (let s = 0; s < k; s++) {
      const seg = buf.subarray(sp.outOff[s]! + VH, sp.outOff[s]! + sp.outLen[s]!);
      assert.equal(seg.length - 48, sizes[s], `datagram ${s}: got ${seg.length - 48} bytes, want ${sizes[s]}`);
      assert.ok(checksumsValid(seg), `datagram ${s}: checksum invalid`);
    }
    // Non-GSO NEEDS_CSUM: the field holds the seed; split completes it.
    const one = inputBytes({ ip: ipv4Tcp({ sport: 1, dport: 2, flags: 0x18, payload: new Uint8Array(300).fill(3) }), needsCsum: true, dataValid: false });
    const b2 = new Uint8Array(4096);
    b2.set(one, 0);
    const k2 = sp.split(b2, 0, one.length, 2048, 2048, 1500);
    assert.equal(k2, 1, `got ${k2}, want 1`);
    assert.ok(checksumsValid(b2.subarray(2048 + VH, 2048 + one.length)), 'completed checksum invalid');
  });

  it('leaves headroom in front of every segment (the underlay writes VXLAN there): frames back to back', () => {
    const f = makeFlow(new Rand(14), 4, true);
    f.fam = 4; f.src = '10.92.4.1'; f.dst = '10.92.4.2'; f.ts = true;
    const big = build(f, 0x18, new Uint8Array(3000).map((_, i) => i & 0xff));
    const buf = new Uint8Array(65536 * 2);
    buf.set(big, VH);
    buf[1] = 1; // TCPV4
    buf[4] = 1448 & 0xff; buf[5] = 1448 >> 8;
    const sp = new GsoSplitter(16);
    const cases: { headroom: number; mtu: number; segs: number[] }[] = [
      { headroom: 0, mtu: 1450, segs: [1398, 1398, 204] },
      { headroom: 10, mtu: 1450, segs: [1398, 1398, 204] },
      { headroom: 10, mtu: 0, segs: [1448, 1448, 104] },
    ];
    for (const tc of cases) {
      const k = sp.split(buf, 0, VH + big.length, 65536, 65536, tc.mtu, tc.headroom);
      assert.equal(k, tc.segs.length, `headroom ${tc.headroom} mtu ${tc.mtu}: got ${k} segments, want ${tc.segs.length}`);
      let at = 65536;
      for (let s = 0; s < k; s++) {
        assert.equal(sp.outOff[s], at + tc.headroom, `headroom ${tc.headroom} segment ${s}: got offset ${sp.outOff[s]}, want ${at + tc.headroom}`);
        const seg = buf.subarray(sp.outOff[s]! + VH, sp.outOff[s]! + sp.outLen[s]!);
        assert.equal(seg.length - 52, tc.segs[s], `headroom ${tc.headroom} segment ${s}: got ${seg.length - 52} payload bytes, want ${tc.segs[s]}`);
        assert.ok(checksumsValid(seg), `headroom ${tc.headroom} segment ${s}: checksum invalid`);
        at = sp.outOff[s]! + sp.outLen[s]!;
      }
    }
    // The arena must hold the headroom too: exactly enough passes, one byte less is refused.
    const need = 3 * (10 + VH + 52) + 3000;
    assert.equal(sp.split(buf, 0, VH + big.length, 65536, need, 1450, 10), 3, `arena ${need}: want 3 segments`);
    assert.equal(sp.split(buf, 0, VH + big.length, 65536, need - 1, 1450, 10), -1, `arena ${need - 1}: want -1`);
  });

  it('refuses malformed packets and a too-small arena with -1, writing nothing', () => {
    const f = makeFlow(new Rand(13), 5, true);
    f.fam = 4; f.src = '10.92.5.1'; f.dst = '10.92.5.2';
    const big = build(f, 0x10, new Uint8Array(3000));
    const mk = (patch: (b: Uint8Array) => void): Uint8Array => {
      const b = new Uint8Array(16384);
      b.set(big, VH);
      b[1] = 1; b[4] = 1000 & 0xff; b[5] = 1000 >> 8;
      patch(b);
      return b;
    };
    const cases: [string, Uint8Array, number, number][] = [
      ['gso_size 0', mk((b) => { b[4] = 0; b[5] = 0; }), 8192, 8],
      ['TCPV6 type on IPv4', mk((b) => { b[1] = 4; }), 8192, 8],
      ['UFO (type 3)', mk((b) => { b[1] = 3; }), 8192, 8],
      ['IP length mismatch', mk((b) => { b[VH + 3] = (b[VH + 3]! + 1) & 0xff; }), 8192, 8],
      ['arena too small', mk(() => {}), 3000, 8],
      ['too many segments', mk(() => {}), 8192, 2],
    ];
    for (const [what, b, arenaLen, maxSeg] of cases) {
      const sp = new GsoSplitter(maxSeg);
      const before = b.slice(8192);
      const k = sp.split(b, 0, VH + big.length, 8192, arenaLen, 0);
      assert.equal(k, -1, `${what}: got ${k}, want -1`);
      assert.equal(hex(b.subarray(8192)), hex(before), `${what}: arena written`);
    }
  });
});

describe('fuzz', () => {
  it('random bytes and truncated headers never throw, and both still work afterwards', () => {
    const r = new Rand(0xf022);
    const c = new GsoCoalescer(64);
    const sp = new GsoSplitter(64);
    for (let round = 0; round < 400; round++) {
      const pkts = genStream(r, r.range(1, 32), r.range(1, 3), true);
      const b = makeBatch(pkts, 70000);
      for (let i = 0; i < b.n; i++) {
        const o = b.off[i]!;
        const k = r.int(6);
        if (k === 0) b.len[i] = r.int(b.len[i]! + 1); // truncated
        else if (k === 1) for (let j = 0; j < 8; j++) b.buf[o + r.int(Math.max(1, b.len[i]!))] = r.u32() & 0xff; // flipped bytes
        else if (k === 2) for (let j = 0; j < VH; j++) b.buf[o + j] = r.u32() & 0xff; // random virtio header
        else if (k === 3) { b.len[i] = r.int(200); for (let j = 0; j < b.len[i]!; j++) b.buf[o + j] = r.u32() & 0xff; } // garbage
      }
      const allow = r.bool();
      const m = c.coalesce(b.buf, b.off, b.len, b.n, b.arenaOff, b.arenaLen, allow);
      assert.ok(m >= 0 && m <= b.n, `round ${round}: got m ${m}, want 0..${b.n}`);
      for (let j = 0; j < m; j++) {
        const k = sp.split(b.buf.slice(), c.outOff[j]!, c.outLen[j]!, b.arenaOff, b.arenaLen, r.pick([0, 576, 1500]));
        assert.ok(k === -1 || k >= 1, `round ${round} output ${j}: split got ${k}`);
      }
      for (let i = 0; i < b.n; i++) {
        const k = sp.split(b.buf, b.off[i]!, b.len[i]!, b.arenaOff, b.arenaLen, r.pick([0, 1500]));
        assert.ok(k === -1 || k >= 1, `round ${round} input ${i}: split got ${k}`);
      }
    }
    // Still correct afterwards.
    const r2 = new Rand(77);
    const pkts = genStream(r2, 64, 2, true);
    const b = makeBatch(pkts);
    const input = inputsOf(b);
    const m = c.coalesce(b.buf, b.off, b.len, b.n, b.arenaOff, b.arenaLen, true);
    assertSameAsNaive('after fuzz', b, input, c, m, true, true);
    assertRoundTrip('after fuzz', b, c, m);
  });
});

describe('allocation', () => {
  it('heap does not grow over 1M coalesce calls (and 100k splits)', () => {
    const gc = exposeGc();
    const f = makeFlow(new Rand(21), 6, true);
    f.mss = 1000;
    const pkts: Pkt[] = [];
    for (let i = 0; i < 4; i++) {
      pkts.push({ ip: build(f, 0x10, new Uint8Array(i === 3 ? 300 : 1000)), needsCsum: true, dataValid: false });
      f.seq = (f.seq + 1000) >>> 0;
    }
    const b = makeBatch(pkts, 16384);
    const c = new GsoCoalescer(4);
    const sp = new GsoSplitter(8);
    const run = (calls: number): number => {
      let x = 0;
      for (let k = 0; k < calls; k++) {
        x += c.coalesce(b.buf, b.off, b.len, b.n, b.arenaOff, 8192, false);
        if ((k & 7) === 0) x += sp.split(b.buf, c.outOff[0]!, c.outLen[0]!, b.arenaOff + 8192, 8192, 0);
      }
      return x;
    };
    run(50_000); // warm up (compilation allocates)
    gc?.();
    const h0 = process.memoryUsage().heapUsed;
    const calls = 1_000_000;
    const x = run(calls);
    const h1 = process.memoryUsage().heapUsed;
    assert.equal(x, calls + calls / 8 * 4, `got ${x} outputs, want ${calls + (calls / 8) * 4} (1 per coalesce, 4 per split)`);
    const perCall = (h1 - h0) / calls;
    assert.ok(perCall < 1, `got heap growth ${h1 - h0} bytes over ${calls} calls (${perCall.toFixed(3)} B/call), want < 1 B/call`);
  });
});
