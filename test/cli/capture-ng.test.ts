/**
 * pcapng from the capture controller's writer: tshark shows each packet's comment (verdict,
 * drop reason, direction), the CLI's splitter counts whole blocks, and the live view line.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packetComment, pcapngHeader, pcapngPacket } from '../../src/control/capture.js';
import { checkCaptureRequest } from '../../src/api/capture-stream.js';
import { CR_DROPPED, NO_EP_INDEX } from '../../src/tables/capture.js';
import { dropReasonText } from '../../src/datapath/drop.js';
import { livePacketLine, PcapSplitter } from '../../src/cli/capture-run.js';

/** An IPv4/TCP SYN 10.96.0.2:40000 -> 10.96.0.3:80, 40 bytes. */
function syn(): Buffer {
  const b = Buffer.alloc(40);
  b[0] = 0x45;
  b.writeUInt16BE(40, 2);
  b[8] = 64;
  b[9] = 6;
  Buffer.from([10, 96, 0, 2]).copy(b, 12);
  Buffer.from([10, 96, 0, 3]).copy(b, 16);
  b.writeUInt16BE(40000, 20);
  b.writeUInt16BE(80, 22);
  b[32] = 0x50;
  b[33] = 0x02;
  return b;
}

const FILE = Buffer.concat([
  pcapngHeader(2048),
  pcapngPacket(1_700_000_000, 123456, syn(), 40, packetComment(CR_DROPPED | 133, 1, 2, 1, dropReasonText)),
  pcapngPacket(1_700_000_001, 5, syn(), 40, packetComment(0, 2, 1, 1, dropReasonText)),
]);

test('packet comments', () => {
  const cases: [number, number, number, number, string][] = [
    [CR_DROPPED | 133, 1, 2, 1, 'verdict=DROPPED reason=133 (Policy denied) direction=egress'],
    [0, 2, 1, 1, 'verdict=FORWARDED direction=ingress'],
    [CR_DROPPED | 181, 3, NO_EP_INDEX, -1, 'verdict=DROPPED reason=181 (Policy denied by denylist) direction=egress'],
  ];
  for (const [v, s, d, ep, want] of cases) {
    const got = packetComment(v, s, d, ep, dropReasonText);
    assert.equal(got, want, `got ${got}, want ${want}`);
  }
});

test('the CLI splitter counts pcapng packets across chunk boundaries; the live line', () => {
  const sp = new PcapSplitter();
  const lines: string[] = [];
  sp.onPacket = (b) => lines.push(livePacketLine(b));
  let out = 0;
  for (let i = 0; i < FILE.length; i += 7) out += sp.push(FILE.subarray(i, i + 7)).length;
  assert.equal(sp.records, 2, `got ${sp.records} packets, want 2`);
  assert.equal(out, FILE.length, `got ${out} bytes passed on, want ${FILE.length}`);
  assert.equal(lines[0], '22:13:20.123456 10.96.0.2:40000 > 10.96.0.3:80 TCP 40 B  verdict=DROPPED reason=133 (Policy denied) direction=egress', `got ${lines[0]}`);
});

test('snaplen and format are checked by the API', () => {
  assert.deepEqual(checkCaptureRequest({ endpoint: 'a', snaplen: 96, format: 'pcapng' }), { endpoint: 'a', snaplen: 96, format: 'pcapng' });
  assert.throws(() => checkCaptureRequest({ endpoint: 'a', snaplen: 0 }), /body\.snaplen: must be an integer from 1 to 65535/);
  assert.throws(() => checkCaptureRequest({ endpoint: 'a', format: 'erf' }), /body\.format: must be "pcap" or "pcapng"/);
});

test('tshark shows the verdict comments', () => {
  const have = spawnSync('tshark', ['--version'], { encoding: 'utf8' });
  if (have.status !== 0) {
    assert.notEqual(process.env.CI, 'true', 'CI needs tshark (the capture tests read with it)');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'cl96-ng-'));
  try {
    const f = join(dir, 'c.pcapng');
    writeFileSync(f, FILE);
    const r = spawnSync('tshark', ['-r', f, '-T', 'fields', '-e', 'frame.comment', '-e', 'ip.src', '-e', 'tcp.dstport'], { encoding: 'utf8' });
    assert.equal(r.status, 0, `tshark: got exit ${r.status} (${r.stderr})`);
    const rows = r.stdout.trim().split('\n');
    assert.deepEqual(rows, ['verdict=DROPPED reason=133 (Policy denied) direction=egress\t10.96.0.2\t80', 'verdict=FORWARDED direction=ingress\t10.96.0.2\t80'], `got ${JSON.stringify(rows)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
