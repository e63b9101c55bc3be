/**
 * IP prefixes for the control plane (policy CIDR peers, CIDR identities, ipcache entries).
 * Not hot-path code: clarity first. The address words follow the datapath convention:
 * IPv4 is one u32 (10.0.0.1 = 0x0a000001), IPv6 is four u32 with word 0 most significant.
 */
import { TunswitchError } from './errors.js';

export interface Prefix {
  readonly family: 4 | 6;
  /** Address words, host bits cleared. One word for IPv4, four for IPv6. */
  readonly words: readonly number[];
  /** Prefix length: 0-32 for IPv4, 0-128 for IPv6. */
  readonly bits: number;
  /** Canonical text, e.g. `10.0.0.0/8`, `2001:db8::/32`. */
  readonly text: string;
}

function parseV4(s: string): number | null {
  const parts = s.split('.');
  if (parts.length !== 4) return null;
  let v = 0;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    v = v * 256 + n;
  }
  return v >>> 0;
}

function parseV6(s: string): number[] | null {
  if (s.length === 0 || s.includes(':::')) return null;
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const groups = (part: string): number[] | null => {
    if (part === '') return [];
    const out: number[] = [];
    const items = part.split(':');
    for (let i = 0; i < items.length; i++) {
      const it = items[i] as string;
      if (i === items.length - 1 && it.includes('.')) {
        const v4 = parseV4(it);
        if (v4 === null) return null;
        out.push(v4 >>> 16, v4 & 0xffff);
        continue;
      }
      if (!/^[0-9a-fA-F]{1,4}$/.test(it)) return null;
      out.push(parseInt(it, 16));
    }
    return out;
  };
  const head = groups(halves[0] as string);
  if (head === null) return null;
  let all: number[];
  if (halves.length === 2) {
    const tail = groups(halves[1] as string);
    if (tail === null) return null;
    const fill = 8 - head.length - tail.length;
    if (fill < 1) return null;
    all = [...head, ...new Array<number>(fill).fill(0), ...tail];
  } else {
    all = head;
  }
  if (all.length !== 8) return null;
  const words: number[] = [];
  for (let i = 0; i < 4; i++) words.push((((all[2 * i] as number) << 16) | (all[2 * i + 1] as number)) >>> 0);
  return words;
}

function maskWord(w: number, bitsInWord: number): number {
  if (bitsInWord <= 0) return 0;
  if (bitsInWord >= 32) return w >>> 0;
  return (w & (0xffffffff << (32 - bitsInWord))) >>> 0;
}

export function formatV4(w: number): string {
  return `${w >>> 24}.${(w >>> 16) & 255}.${(w >>> 8) & 255}.${w & 255}`;
}

export function formatV6(words: readonly number[]): string {
  const g: number[] = [];
  for (const w of words) g.push(w >>> 16, w & 0xffff);
  // RFC 5952: compress the longest run (length >= 2) of zero groups, the first one on a tie.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(':');
  if (bestStart < 0) return hex(g);
  return `${hex(g.slice(0, bestStart))}::${hex(g.slice(bestStart + bestLen))}`;
}

function build(family: 4 | 6, raw: readonly number[], bits: number): Prefix {
  const words = raw.map((w, i) => maskWord(w, bits - 32 * i));
  const addr = family === 4 ? formatV4(words[0] as number) : formatV6(words);
  return { family, words, bits, text: `${addr}/${bits}` };
}

/**
 * Parses `addr/len` or a bare address (taken as /32 or /128). Host bits are cleared, as
 * Cilium does. Returns null on malformed input; `parsePrefix` throws instead.
 */
export function tryParsePrefix(text: string, allowBareAddress = true): Prefix | null {
  if (typeof text !== 'string') return null;
  const slash = text.indexOf('/');
  const addr = slash < 0 ? text : text.slice(0, slash);
  const lenText = slash < 0 ? null : text.slice(slash + 1);
  if (lenText === null && !allowBareAddress) return null;
  if (lenText !== null && !/^(0|[1-9][0-9]{0,2})$/.test(lenText)) return null;
  const v4 = parseV4(addr);
  if (v4 !== null) {
    const bits = lenText === null ? 32 : Number(lenText);
    return bits > 32 ? null : build(4, [v4], bits);
  }
  const v6 = addr.includes(':') ? parseV6(addr) : null;
  if (v6 !== null) {
    const bits = lenText === null ? 128 : Number(lenText);
    return bits > 128 ? null : build(6, v6, bits);
  }
  return null;
}

export function parsePrefix(text: string): Prefix {
  const p = tryParsePrefix(text);
  if (p === null) throw new TunswitchError('ECIDR_INVALID', `"${text}" is not an IP prefix`);
  return p;
}

/** True when `inner` lies inside `outer` (same family, not shorter, same leading bits). */
export function prefixContains(outer: Prefix, inner: Prefix): boolean {
  if (outer.family !== inner.family || inner.bits < outer.bits) return false;
  for (let i = 0; i < outer.words.length; i++) {
    if (maskWord(inner.words[i] as number, outer.bits - 32 * i) !== outer.words[i]) return false;
  }
  return true;
}

/** True when the address (as a full-length prefix) lies inside `outer`. */
export function prefixContainsAddr(outer: Prefix, addr: Prefix): boolean {
  return prefixContains(outer, addr);
}
