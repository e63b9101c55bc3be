/** ICMP frag-needed / packet too big built in place (src/datapath/icmp-too-big.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { icmpTooBig, oversizeMayFragment, TOO_BIG_FORWARD, ICMP4_ERROR_MAX, ICMP6_ERROR_MAX } from '../../src/datapath/icmp-too-big.js';
import { csumFold, csumPartial, ipv4HeaderChecksum, l4Checksum6 } from '../../src/datapath/checksum.js';
import { DROP_FRAG_NEEDED } from '../../src/datapath/drop.js';

const OFF = 14; // not at 0: the builder must honour the offset

function v4(len: number, df: boolean, proto = 17, icmpType = 8): { buf: Uint8Array; dv: DataView; orig: Uint8Array } {
  const buf = new Uint8Array(4096);
  const dv = new DataView(buf.buffer);
  buf[OFF] = 0x45;
  dv.setUint16(OFF + 2, len);
  dv.setUint16(OFF + 4, 0x1234);
  buf[OFF + 6] = df ? 0x40 : 0;
  buf[OFF + 8] = 63;
  buf[OFF + 9] = proto;
  buf.set([10, 83, 1, 2], OFF + 12);
  buf.set([10, 83, 2, 2], OFF + 16);
  dv.setUint16(OFF + 10, ipv4HeaderChecksum(buf, OFF, 20));
  if (proto === 1) buf[OFF + 20] = icmpType;
  for (let i = OFF + 21; i < OFF + len; i++) buf[i] = i & 0xff;
  return { buf, dv, orig: buf.slice(OFF, OFF + len) };
}

function v6(len: number, nh = 17, icmpType = 128): { buf: Uint8Array; dv: DataView; orig: Uint8Array } {
  const buf = new Uint8Array(4096);
  const dv = new DataView(buf.buffer);
  dv.setUint32(OFF, 0x60000000);
  dv.setUint16(OFF + 4, len - 40);
  buf[OFF + 6] = nh;
  buf[OFF + 7] = 63;
  buf.set([0xfd, 0, 0, 0x83, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2], OFF + 8);
  buf.set([0xfd, 0, 0, 0x83, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2], OFF + 24);
  buf[OFF + 40] = icmpType;
  for (let i = OFF + 41; i < OFF + len; i++) buf[i] = i & 0xff;
  return { buf, dv, orig: buf.slice(OFF, OFF + len) };
}

test('IPv4 with DF: type 3 code 4 with the next-hop MTU, addresses swapped, checksums valid, quote of 548 bytes', () => {
  const { buf, dv, orig } = v4(1428, true);
  assert.equal(oversizeMayFragment(buf, OFF, 1428), false);
  const n = icmpTooBig(buf, dv, OFF, 1428, 1350);
  assert.equal(n, ICMP4_ERROR_MAX, `got length ${n}, want 576`);
  assert.equal(dv.getUint16(OFF + 2), n, 'total length');
  assert.equal(buf[OFF + 9], 1, 'protocol ICMP');
  assert.equal(~csumFold(csumPartial(buf, OFF, 20, 0)) & 0xffff, 0, 'IPv4 header checksum');
  assert.deepEqual([...buf.subarray(OFF + 12, OFF + 20)], [10, 83, 2, 2, 10, 83, 1, 2], 'from the destination to the source');
  assert.deepEqual([buf[OFF + 20], buf[OFF + 21], dv.getUint16(OFF + 26)], [3, 4, 1350], 'type, code, next-hop MTU');
  assert.equal(~csumFold(csumPartial(buf, OFF + 20, n - 20, 0)) & 0xffff, 0, 'ICMP checksum');
  assert.deepEqual([...buf.subarray(OFF + 28, OFF + n)], [...orig.subarray(0, n - 28)], 'the quote is the original packet');
  // A short packet is quoted whole.
  const s = v4(100, true);
  assert.equal(icmpTooBig(s.buf, s.dv, OFF, 100, 60), 128);
});

test('IPv4 without DF goes on (the underlay fragments); an ICMP error gets no error; echo requests do', () => {
  const a = v4(1428, false);
  assert.equal(oversizeMayFragment(a.buf, OFF, 1428), true);
  assert.equal(icmpTooBig(a.buf, a.dv, OFF, 1428, 1350), TOO_BIG_FORWARD);
  assert.deepEqual([...a.buf.subarray(OFF, OFF + 1428)], [...a.orig], 'unchanged');
  for (const t of [3, 4, 5, 11, 12]) {
    const e = v4(1428, true, 1, t);
    assert.equal(icmpTooBig(e.buf, e.dv, OFF, 1428, 1350), DROP_FRAG_NEEDED, `ICMP type ${t}`);
  }
  const echo = v4(1428, true, 1, 8);
  assert.equal(icmpTooBig(echo.buf, echo.dv, OFF, 1428, 1350), ICMP4_ERROR_MAX);
});

test('IPv6: packet too big (type 2) with the MTU, checksum valid, quote up to 1280 bytes; no error about an ICMPv6 error', () => {
  const { buf, dv, orig } = v6(1448);
  const n = icmpTooBig(buf, dv, OFF, 1448, 1350);
  assert.equal(n, ICMP6_ERROR_MAX);
  assert.equal(dv.getUint16(OFF + 4), n - 40, 'payload length');
  assert.equal(buf[OFF + 6], 58);
  assert.deepEqual([...buf.subarray(OFF + 8, OFF + 24)], [...orig.subarray(24, 40)], 'source := original destination');
  assert.deepEqual([...buf.subarray(OFF + 24, OFF + 40)], [...orig.subarray(8, 24)], 'destination := original source');
  assert.deepEqual([buf[OFF + 40], buf[OFF + 41], dv.getUint32(OFF + 44)], [2, 0, 1350]);
  assert.equal(l4Checksum6(buf, OFF, OFF + 40, n - 40, 58), 0, 'ICMPv6 checksum');
  assert.deepEqual([...buf.subarray(OFF + 48, OFF + n)], [...orig.subarray(0, n - 48)]);
  const err = v6(1448, 58, 1);
  assert.equal(icmpTooBig(err.buf, err.dv, OFF, 1448, 1350), DROP_FRAG_NEEDED);
  const echo = v6(1448, 58, 128);
  assert.equal(icmpTooBig(echo.buf, echo.dv, OFF, 1448, 1350), ICMP6_ERROR_MAX);
});

test('garbage never throws: a verdict or a known code', () => {
  const buf = new Uint8Array(2048);
  const dv = new DataView(buf.buffer);
  let seed = 7;
  for (let i = 0; i < 2000; i++) {
    const len = (seed = (seed * 1103515245 + 12345) >>> 0) % 1600;
    for (let j = 0; j < len; j++) buf[j] = (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
    const r = icmpTooBig(buf, dv, 0, len, 1350);
    assert.ok(r === DROP_FRAG_NEEDED || r === TOO_BIG_FORWARD || (r > 0 && r <= ICMP6_ERROR_MAX), `got ${r}`);
  }
});
