/**
 * The underlay UDP socket of the native binding (native/src/udp.c) on loopback: batched
 * send to per-datagram destinations, batched receive into listed slots at an offset, the
 * truncation rule, EAGAIN, and bounds checks. No root needed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadBinding } from '../../src/io/native.js';

const LO = 0x7f000001;
const PA = 23798;
const PB = 23799;

async function recvAll(fd: number, slab: Uint8Array, slotSize: number, slots: Int32Array, lens: Int32Array, srcs: Int32Array, want: number, maxLen: number): Promise<number> {
  const deadline = Date.now() + 2000;
  let got = 0;
  while (got < want && Date.now() < deadline) {
    got += loadBinding().udpRecvBatch(fd, slab, slotSize, slots, got, want - got, lens, 12, maxLen, srcs.subarray(got));
    if (got < want) await new Promise((r) => setTimeout(r, 10));
  }
  return got;
}

test('udpSendBatch -> udpRecvBatch on loopback: slots, offset, lengths, sources, truncation', async () => {
  const b = loadBinding();
  const a = b.udpOpen(LO, PA);
  const c = b.udpOpen(LO, PB);
  try {
    assert.equal(b.udpRecvBatch(c, new Uint8Array(4096), 2048, new Int32Array([0]), 0, 1, new Int32Array(2), 12, 100), 0, 'EAGAIN: 0 datagrams');
    const tx = new Uint8Array(8192);
    const sizes = [100, 1400, 50, 3000];
    const offs = new Int32Array([0, 2048, 4096, 5000]);
    for (let i = 0; i < sizes.length; i++) tx.fill(i + 1, offs[i] as number, (offs[i] as number) + (sizes[i] as number));
    const sent = b.udpSendBatch(a, tx, offs, new Int32Array(sizes), new Int32Array([LO, LO, LO, LO]), 0, 4, PB);
    assert.equal(sent, 4, `got ${sent} sent, want 4`);
    const slotSize = 2048;
    const slab = new Uint8Array(slotSize * 8);
    const slots = new Int32Array([5, 2, 7, 0]);
    const lens = new Int32Array(8).fill(-1);
    const srcs = new Int32Array(4);
    const got = await recvAll(c, slab, slotSize, slots, lens, srcs, 4, 2000);
    assert.equal(got, 4, `got ${got} datagrams, want 4`);
    const rows: [string, number, number][] = [
      ['slot 5 len', lens[5] as number, 100],
      ['slot 2 len', lens[2] as number, 1400],
      ['slot 7 len', lens[7] as number, 50],
      ['slot 0 len (3000 > maxLen 2000: truncated, reported 0)', lens[0] as number, 0],
      ['slot 5 first byte (at offset 12)', slab[5 * slotSize + 12] as number, 1],
      ['slot 2 last byte', slab[2 * slotSize + 12 + 1399] as number, 2],
      ['slot 7 byte before the offset untouched', slab[7 * slotSize + 11] as number, 0],
      ['source', srcs[0] as number, LO],
    ];
    for (const [what, g, w] of rows) assert.equal(g, w, `${what}: got ${g}, want ${w}`);
  } finally {
    b.close(a);
    b.close(c);
  }
});

test('udp binding argument checks throw, nothing is sent', () => {
  const b = loadBinding();
  const a = b.udpOpen(LO, PA);
  try {
    assert.throws(() => b.udpSendBatch(a, new Uint8Array(10), new Int32Array([5]), new Int32Array([10]), new Int32Array([LO]), 0, 1, PB), /outside the slab/);
    assert.throws(() => b.udpRecvBatch(a, new Uint8Array(100), 64, new Int32Array([3]), 0, 1, new Int32Array(8), 0, 64), /outside the slab/);
    assert.throws(() => b.udpRecvBatch(a, new Uint8Array(100), 64, new Int32Array([0]), 0, 1, new Int32Array(8), 12, 64), /slotOff \+ maxLen/);
    assert.throws(() => b.udpOpen(LO, 0), /port/);
    assert.throws(() => b.udpOpen(LO, PA), /bind\(127\.0\.0\.1:23798\)/, 'a second bind of the same address fails with the address in the message');
  } finally {
    b.close(a);
  }
});
