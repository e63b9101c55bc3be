/**
 * The endpoint DNS responder's wire format (src/runtime/dns.ts): queries built by hand, answers
 * read back field by field; then the UDP server on loopback with a real client socket.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { answerQuery, serveDns, type DnsLookup } from '../../src/runtime/dns.js';
import { Rand } from '../helpers/rand.js';

function query(name: string, type: number, id = 0x1234, flags = 0x0100): Buffer {
  const parts: number[] = [id >> 8, id & 0xff, flags >> 8, flags & 0xff, 0, 1, 0, 0, 0, 0, 0, 0];
  for (const l of name.split('.').filter((x) => x !== '')) parts.push(l.length, ...Buffer.from(l, 'latin1'));
  parts.push(0, type >> 8, type & 0xff, 0, 1);
  return Buffer.from(parts);
}

/** rcode, answer count and the answers' rdata as text. */
function read(r: Buffer): { id: number; rcode: number; aa: boolean; answers: string[] } {
  const an = r.readUInt16BE(6);
  let off = 12;
  while (r[off] !== 0) off += (r[off] as number) + 1;
  off += 5;
  const answers: string[] = [];
  for (let i = 0; i < an; i++) {
    const type = r.readUInt16BE(off + 2);
    const len = r.readUInt16BE(off + 10);
    const d = r.subarray(off + 12, off + 12 + len);
    answers.push(type === 1 ? [...d].join('.') : (d.toString('hex').match(/.{4}/g) ?? []).map((g) => g.replace(/^0+(?=.)/, '')).join(':'));
    off += 12 + len;
  }
  return { id: r.readUInt16BE(0), rcode: (r[3] as number) & 0xf, aa: ((r[2] as number) & 0x04) !== 0, answers };
}

const lookup: DnsLookup = (n) => {
  if (n === 'backend') return { ipv4: ['10.97.0.3'], ipv6: ['fd00:97::3'] };
  if (n === 'v4only') return { ipv4: ['10.97.0.4'], ipv6: [] };
  return null;
};

test('answerQuery: A/AAAA of endpoints by NAME and NAME.zone, NXDOMAIN otherwise', () => {
  const cases: [string, number, number, string[]][] = [
    ['backend', 1, 0, ['10.97.0.3']],
    ['backend.lab97', 1, 0, ['10.97.0.3']],
    ['BackEnd.LAB97.', 1, 0, ['10.97.0.3']],
    ['backend', 28, 0, ['fd00:97:0:0:0:0:0:3']],
    ['v4only', 28, 0, []],
    ['backend', 16, 0, []], // TXT of a known name: NOERROR, no answer
    ['nobody', 1, 3, []],
    ['backend.other', 1, 3, []],
    ['a.backend.lab97', 1, 3, []],
  ];
  for (const [name, type, rcode, want] of cases) {
    const r = answerQuery(query(name, type), 'lab97', lookup);
    assert.ok(r, `${name}/${type}: got no answer`);
    const got = read(r);
    assert.equal(got.id, 0x1234, `${name}/${type}: got id ${got.id}, want the query's`);
    assert.equal(got.rcode, rcode, `${name}/${type}: got rcode ${got.rcode}, want ${rcode}`);
    assert.ok(got.aa, `${name}/${type}: want AA set`);
    assert.deepEqual(got.answers, want, `${name}/${type}: got ${got.answers.join(',')}, want ${want.join(',')}`);
  }
});

test('answerQuery: responses, short and malformed queries, other opcodes; fuzz never throws', () => {
  assert.equal(answerQuery(Buffer.alloc(5), 'z', lookup), null, 'short: no answer');
  assert.equal(answerQuery(query('backend', 1, 1, 0x8100), 'z', lookup), null, 'a response: no answer');
  const notimp = answerQuery(query('backend', 1, 1, 0x2900), 'z', lookup) as Buffer;
  assert.equal((notimp[3] as number) & 0xf, 4, 'opcode UPDATE: NOTIMP');
  const cut = query('backend', 1).subarray(0, 16);
  assert.equal(((answerQuery(cut, 'z', lookup) as Buffer)[3] as number) & 0xf, 1, 'a cut question: FORMERR');
  const rand = new Rand(97);
  for (let i = 0; i < 5000; i++) {
    const q = query('backend.z', 1);
    for (let k = 0; k < 3; k++) q[rand.int(q.length)] = rand.int(256);
    answerQuery(q, 'z', lookup); // must not throw
  }
});

test('serveDns: a UDP client on loopback gets the answer', async () => {
  const port = 20000 + (process.pid % 20000);
  const srv = await serveDns(['127.0.0.1'], 'lab97', lookup, () => undefined, port);
  const c = createSocket('udp4');
  try {
    const got = await new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no answer in 2 s')), 2000);
      c.once('message', (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      c.send(query('backend.lab97', 1, 7), port, '127.0.0.1');
    });
    assert.deepEqual(read(got).answers, ['10.97.0.3'], `got ${read(got).answers.join(',')}, want 10.97.0.3`);
  } finally {
    c.close();
    await srv.close();
  }
});
