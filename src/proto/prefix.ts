/**
 * The one IP prefix type: parse, format, contains. Control plane and table text APIs use it;
 * the hot path never does (it works on address words). Leaf module: imports nothing, so it
 * throws no project error class: `prefixOrReason` returns why text is not a prefix, and each
 * caller wraps that reason in its own error code.
 *
 * Address words follow the datapath: IPv4 is one u32 (10.0.0.1 = 0x0a000001), IPv6 is four
 * u32 with word 0 most significant. Host bits are always cleared (10.1.2.3/8 is 10.0.0.0/8,
 * as Cilium does).
 *
 * Text is RFC 5952: lower-case hex, no leading zeros, the longest run (>= 2) of zero groups
 * compressed, the first one on a tie. An IPv4-mapped address (::ffff:0:0/96) has one form,
 * the dotted quad `::ffff:10.0.0.1` (RFC 5952 section 5), whichever form it was given in.
 */

export interface Prefix {
  readonly family: 4 | 6;
  /** Address words, host bits cleared. One word for IPv4, four for IPv6. */
  readonly words: readonly number[];
  /** Prefix length: 0-32 for IPv4, 0-128 for IPv6. */
  readonly bits: number;
  /** Canonical text, e.g. `10.0.0.0/8`, `2001:db8::/32`, `::ffff:10.0.0.0/104`. */
  readonly text: string;
}

const reDec = /^(0|[1-9][0-9]{0,2})$/;
const reHex = /^[0-9a-fA-F]{1,4}$/;

/** Parses a dotted quad into a u32; returns a reason string when it is not one. */
function parseV4(s: string): number | string {
  const parts = s.split('.');
  if (parts.length !== 4) return 'an IPv4 address has four dotted parts';
  let a = 0;
  for (const p of parts) {
    if (!reDec.test(p)) return `bad IPv4 part "${p}"`;
    const v = Number(p);
    if (v > 255) return `IPv4 part ${v} is above 255`;
    a = a * 256 + v;
  }
  return a >>> 0;
}

/** Parses IPv6 text (with an optional trailing dotted quad) into four words, or a reason. */
function parseV6(s: string): number[] | string {
  if (s.includes('%')) return 'zone ids are not allowed';
  const dc = s.indexOf('::');
  if (dc >= 0 && s.indexOf('::', dc + 1) >= 0) return '"::" appears twice';
  const headText = dc >= 0 ? s.slice(0, dc) : s;
  const tailText = dc >= 0 ? s.slice(dc + 2) : '';
  if (dc < 0 && headText === '') return 'empty address';
  const groups = (text: string, lastMayBeV4: boolean): number[] | string => {
    const out: number[] = [];
    if (text === '') return out;
    const parts = text.split(':');
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i] as string;
      if (lastMayBeV4 && i === parts.length - 1 && p.includes('.')) {
        const v4 = parseV4(p);
        if (typeof v4 === 'string') return v4;
        out.push(v4 >>> 16, v4 & 0xffff);
      } else if (reHex.test(p)) {
        out.push(parseInt(p, 16));
      } else {
        return `bad IPv6 group "${p}"`;
      }
    }
    return out;
  };
  const hg = groups(headText, dc < 0);
  if (typeof hg === 'string') return hg;
  const tg = groups(tailText, dc >= 0);
  if (typeof tg === 'string') return tg;
  let all: number[];
  if (dc < 0) {
    if (hg.length !== 8) return `an IPv6 address without "::" has 8 groups, got ${hg.length}`;
    all = hg;
  } else {
    const zeros = 8 - hg.length - tg.length;
    if (zeros < 1) return 'too many groups around "::"';
    all = [...hg, ...new Array<number>(zeros).fill(0), ...tg];
  }
  const w: number[] = [];
  for (let i = 0; i < 4; i++) w.push((((all[2 * i] as number) << 16) | (all[2 * i + 1] as number)) >>> 0);
  return w;
}

/** The word `w` with all but its first `bitsInWord` bits cleared (any count, clamped). */
export function maskWord(w: number, bitsInWord: number): number {
  if (bitsInWord <= 0) return 0;
  if (bitsInWord >= 32) return w >>> 0;
  return (w & (0xffffffff << (32 - bitsInWord))) >>> 0;
}

/** `10.0.0.1` for 0x0a000001. */
export function formatV4(w: number): string {
  return `${w >>> 24}.${(w >>> 16) & 255}.${(w >>> 8) & 255}.${w & 255}`;
}

/** RFC 5952 text of four address words; IPv4-mapped addresses keep the dotted quad. */
export function formatV6(words: ArrayLike<number>): string {
  const g: number[] = [];
  for (let i = 0; i < 4; i++) {
    const v = (words[i] as number) >>> 0;
    g.push(v >>> 16, v & 0xffff);
  }
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return `::ffff:${formatV4((words[3] as number) >>> 0)}`;
  }
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]): string => xs.map((x) => x.toString(16)).join(':');
  if (best < 0) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

/** The text of an address of either family (IPv4 in words[0]). */
export function formatAddr(family: 4 | 6, words: ArrayLike<number>): string {
  return family === 4 ? formatV4((words[0] as number) >>> 0) : formatV6(words);
}

/** Canonical `addr/bits` text of a prefix given by words (host bits are not cleared here). */
export function formatPrefix(family: 4 | 6, words: ArrayLike<number>, bits: number): string {
  return `${formatAddr(family, words)}/${bits}`;
}

/** Builds a prefix from words: clears host bits and computes the canonical text. */
export function makePrefix(family: 4 | 6, raw: ArrayLike<number>, bits: number): Prefix {
  const n = family === 4 ? 1 : 4;
  const words: number[] = [];
  for (let i = 0; i < n; i++) words.push(maskWord((raw[i] as number) >>> 0, bits - 32 * i));
  return { family, words, bits, text: formatPrefix(family, words, bits) };
}

/**
 * Parses `addr/len` or, when `allowBareAddress`, a bare address (taken as /32 or /128).
 * Returns the prefix, or a string saying why the text is not one.
 */
export function prefixOrReason(text: string, allowBareAddress = true): Prefix | string {
  if (typeof text !== 'string') return 'not a string';
  const slash = text.indexOf('/');
  const addrText = slash < 0 ? text : text.slice(0, slash);
  if (addrText === '') return 'empty address';
  const family: 4 | 6 = addrText.includes(':') ? 6 : 4;
  const max = family === 4 ? 32 : 128;
  let bits = max;
  if (slash >= 0) {
    const lt = text.slice(slash + 1);
    if (!reDec.test(lt)) return `bad prefix length "${lt}"`;
    bits = Number(lt);
    if (bits > max) return `prefix length ${bits} is above ${max}`;
  } else if (!allowBareAddress) {
    return 'no prefix length';
  }
  const words = family === 4 ? parseV4(addrText) : parseV6(addrText);
  if (typeof words === 'string') return words;
  return makePrefix(family, typeof words === 'number' ? [words] : words, bits);
}

/** Parses prefix text; null when malformed (see prefixOrReason for why). */
export function tryParsePrefix(text: string, allowBareAddress = true): Prefix | null {
  const p = prefixOrReason(text, allowBareAddress);
  return typeof p === 'string' ? null : p;
}

/** True when `inner` lies inside `outer` (same family, not shorter, same leading bits). */
export function prefixContains(outer: Prefix, inner: Prefix): boolean {
  if (outer.family !== inner.family || inner.bits < outer.bits) return false;
  for (let i = 0; i < outer.words.length; i++) {
    if (maskWord(inner.words[i] as number, outer.bits - 32 * i) !== outer.words[i]) return false;
  }
  return true;
}
