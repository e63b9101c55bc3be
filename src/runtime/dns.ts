/**
 * A small authoritative DNS responder for the switch's endpoints, so lab nodes resolve each
 * other by name through DNS and not only through hosts files. It listens on UDP port 53 of the
 * host port's addresses (the pool's first address); `lab up` points every node's
 * /etc/netns/<ns>/resolv.conf at it.
 *
 * What it answers (RFC 1035 wire format, one question per query, UDP only):
 *   - `NAME`, `NAME.<switch name>` (and a trailing dot): A / AAAA of endpoint NAME, or of the
 *     host port for `host`; other types of a known name: no answer, NOERROR;
 *   - any other name: NXDOMAIN (it is authoritative for its endpoints and forwards nothing);
 *   - an opcode other than QUERY: NOTIMP; a malformed query: FORMERR (or nothing, if even
 *     the header is short).
 * Answers carry a TTL of 5 s, so a re-attached endpoint is seen quickly.
 *
 * Its traffic goes through the datapath like any other: a node whose egress policy is
 * enforced needs a rule that allows the host on 53/UDP (`toEntities: [host]`), as a Cilium
 * pod needs one for kube-dns.
 */
import { createSocket, type Socket } from 'node:dgram';
import { isIPv4, isIPv6 } from 'node:net';
import { TunswitchError } from '../proto/errors.js';

export const DNS_TTL = 5;
const TYPE_A = 1;
const TYPE_AAAA = 28;
const TYPE_ANY = 255;
const CLASS_IN = 1;
const RCODE_FORMERR = 1;
const RCODE_NXDOMAIN = 3;
const RCODE_NOTIMP = 4;
/** Longest query accepted (a UDP DNS message without EDNS is at most 512 bytes). */
const MAX_QUERY = 512;

export interface DnsRecords {
  ipv4: string[];
  ipv6: string[];
}

/** Finds the addresses of a name (already lower-cased, zone and trailing dot removed). */
export type DnsLookup = (name: string) => DnsRecords | null;

function v4Bytes(a: string): number[] {
  return a.split('.').map(Number);
}

function v6Bytes(a: string): number[] {
  const [head, tail] = a.includes('::') ? (a.split('::') as [string, string]) : [a, ''];
  const h = head === '' ? [] : head.split(':');
  const t = tail === '' ? [] : tail.split(':');
  const groups = [...h, ...new Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out: number[] = [];
  for (const g of groups) {
    const n = parseInt(g, 16);
    out.push(n >> 8, n & 0xff);
  }
  return out;
}

/**
 * The answer to one query message, or null when it is not worth one (too short for a
 * header, or a response). `zone` is the switch's name: `b.demo` is `b`.
 */
export function answerQuery(q: Uint8Array, zone: string, lookup: DnsLookup): Buffer | null {
  if (q.length < 12 || q.length > MAX_QUERY) return null;
  const flags = (q[2] as number) << 8 | (q[3] as number);
  if ((flags & 0x8000) !== 0) return null; // a response: never answer those
  const opcode = (flags >> 11) & 0xf;
  const rd = flags & 0x0100;
  const qd = (q[4] as number) << 8 | (q[5] as number);
  const header = (rcode: number, an: number, qdOut: number): number[] => [
    q[0] as number, q[1] as number,
    0x84 | (opcode << 3) | (rd >> 8), rcode, // QR, opcode, AA, RD copied; RA 0
    0, qdOut, an >> 8, an & 0xff, 0, 0, 0, 0,
  ];
  if (opcode !== 0) return Buffer.from(header(RCODE_NOTIMP, 0, 0));
  if (qd !== 1) return Buffer.from(header(RCODE_FORMERR, 0, 0));
  // The question: labels (no compression in a question), type, class.
  let off = 12;
  const labels: string[] = [];
  while (true) {
    if (off >= q.length) return Buffer.from(header(RCODE_FORMERR, 0, 0));
    const len = q[off] as number;
    if (len === 0) {
      off++;
      break;
    }
    if (len > 63 || off + 1 + len > q.length) return Buffer.from(header(RCODE_FORMERR, 0, 0));
    labels.push(Buffer.from(q.subarray(off + 1, off + 1 + len)).toString('latin1').toLowerCase());
    off += 1 + len;
  }
  if (off + 4 > q.length) return Buffer.from(header(RCODE_FORMERR, 0, 0));
  const qtype = (q[off] as number) << 8 | (q[off + 1] as number);
  const qclass = (q[off + 2] as number) << 8 | (q[off + 3] as number);
  const question = Array.from(q.subarray(12, off + 4));
  if (labels.length > 1 && labels[labels.length - 1] === zone.toLowerCase()) labels.pop();
  const rec = labels.length === 1 ? lookup(labels[0] as string) : null;
  if (!rec) return Buffer.from([...header(RCODE_NXDOMAIN, 0, 1), ...question]);
  const answers: number[] = [];
  let an = 0;
  const add = (type: number, bytes: number[]): void => {
    answers.push(0xc0, 12, type >> 8, type & 0xff, 0, CLASS_IN, 0, 0, DNS_TTL >> 8, DNS_TTL & 0xff, 0, bytes.length, ...bytes);
    an++;
  };
  if (qclass === CLASS_IN && (qtype === TYPE_A || qtype === TYPE_ANY)) for (const a of rec.ipv4) if (isIPv4(a)) add(TYPE_A, v4Bytes(a));
  if (qclass === CLASS_IN && (qtype === TYPE_AAAA || qtype === TYPE_ANY)) for (const a of rec.ipv6) if (isIPv6(a)) add(TYPE_AAAA, v6Bytes(a));
  return Buffer.from([...header(0, an, 1), ...question, ...answers]);
}

/** Serves answerQuery on UDP port `port` of each address; resolves once all are bound. */
export async function serveDns(addrs: string[], zone: string, lookup: DnsLookup, log: (m: string) => void, port = 53): Promise<{ close(): Promise<void> }> {
  const socks: Socket[] = [];
  for (const a of addrs) {
    const s = createSocket({ type: isIPv6(a) ? 'udp6' : 'udp4', reuseAddr: false });
    s.on('message', (msg, rinfo) => {
      let out: Buffer | null = null;
      try {
        out = answerQuery(msg, zone, lookup);
      } catch (e) {
        log(`dns: query from ${rinfo.address}: ${(e as Error).message}`);
      }
      if (out) s.send(out, rinfo.port, rinfo.address);
    });
    try {
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.bind(port, a, () => {
          s.off('error', reject);
          resolve();
        });
      });
    } catch (e) {
      s.close();
      for (const x of socks) x.close();
      throw new TunswitchError('ESYSTEM', `dns: cannot listen on ${a} port ${port}: ${(e as Error).message}`);
    }
    s.on('error', (e) => log(`dns: ${a}: ${e.message}`));
    socks.push(s);
  }
  return {
    close: async () => {
      for (const s of socks) await new Promise<void>((r) => s.close(() => r()));
    },
  };
}
