/**
 * IPAM: hands out addresses from the IPv4 (and optional IPv6) pool. The first address of
 * the pool is kept for the host port; the network and broadcast addresses of IPv4 are never
 * given out. Allocation is deterministic (lowest free address), so a restart that restores
 * the same endpoints restores the same addresses.
 *
 * An address asked for explicitly (config, API, lab, restored state) must pass
 * addressProblem(): inside the pool of its family, not the pool's network address (IPv6: the
 * subnet-router anycast address), not its broadcast address (IPv4), not the host port's, and
 * not unspecified, loopback, link-local, multicast or reserved. claim4/claim6 add "not taken
 * by another endpoint", naming that endpoint.
 */
import { TunswitchError } from './errors.js';
import { formatV4, formatV6, prefixContains, tryParsePrefix, type Prefix } from './cidr.js';

/** Special-purpose ranges no endpoint may use, with the name the error gives them. */
const SPECIAL: [string, string][] = [
  ['0.0.0.0/8', 'unspecified ("this network")'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local'],
  ['224.0.0.0/4', 'multicast'],
  ['240.0.0.0/4', 'reserved (including broadcast 255.255.255.255)'],
  ['::/128', 'unspecified'],
  ['::1/128', 'loopback'],
  ['::ffff:0:0/96', 'IPv4-mapped'],
  ['fe80::/10', 'link-local'],
  ['ff00::/8', 'multicast'],
];
const SPECIAL_PREFIXES: [Prefix, string][] = SPECIAL.map(([c, why]) => [tryParsePrefix(c, false) as Prefix, why]);

/**
 * Why `addr` (a full-length prefix) cannot be an endpoint address in `pool`, or null if it can.
 * The text names the conflict, e.g. `fd00:72::1 is the host port's address`.
 */
export function addressProblem(addr: Prefix, pool: Prefix | undefined): string | null {
  const text = addr.text.replace(/\/\d+$/, '');
  for (const [p, why] of SPECIAL_PREFIXES) {
    if (prefixContains(p, addr)) return `${text} is a ${why} address`;
  }
  const fam = addr.family === 4 ? 'ipv4' : 'ipv6';
  if (!pool) return `${text}: no pool.${fam} is configured`;
  if (!prefixContains(pool, addr)) return `${text} is outside the pool ${pool.text}`;
  const hostBits = (addr.family === 4 ? 32 : 128) - pool.bits;
  if (hostBits === 0) return null;
  const last = addr.words.length - 1;
  // offsets within the pool of the addresses that are never an endpoint's
  let allZero = true;
  for (let i = 0; i < addr.words.length; i++) if (addr.words[i] !== pool.words[i]) allZero = false;
  if (allZero) return `${text} is the network address of the pool ${pool.text}`;
  let hostPort = true;
  for (let i = 0; i < last; i++) if (addr.words[i] !== pool.words[i]) hostPort = false;
  if (hostPort && (addr.words[last] as number) === (((pool.words[last] as number) + 1) >>> 0)) return `${text} is the host port's address`;
  if (addr.family === 4 && hostBits >= 2) {
    const bcast = ((pool.words[0] as number) + 2 ** hostBits - 1) >>> 0;
    if ((addr.words[0] as number) === bcast) return `${text} is the broadcast address of the pool ${pool.text}`;
  }
  return null;
}

export class Ipam {
  /** address -> owner ("endpoint \"a\"") */
  private readonly used4 = new Map<number, string>();
  private readonly used6 = new Map<string, string>();
  /**
   * Further IPv4 ranges whose addresses are handed out by someone else (a Docker network's
   * IPAM) and only claimed here: claim4 accepts them, allocate4 never uses them.
   */
  private readonly extra: Prefix[] = [];

  constructor(
    readonly pool4: Prefix,
    readonly pool6?: Prefix,
  ) {}

  /** The host port's addresses: the first usable address of each pool. */
  hostAddress4(): string {
    return formatV4(((this.pool4.words[0] as number) + 1) >>> 0);
  }

  hostAddress6(): string | undefined {
    if (!this.pool6) return undefined;
    const w = [...this.pool6.words];
    w[3] = ((w[3] as number) + 1) >>> 0;
    return formatV6(w);
  }

  addExtraPool(p: Prefix): void {
    if (!this.extra.some((x) => x.text === p.text)) this.extra.push(p);
  }

  removeExtraPool(p: Prefix): void {
    const i = this.extra.findIndex((x) => x.text === p.text);
    if (i >= 0) this.extra.splice(i, 1);
  }

  claim4(addr: string, owner: string): void {
    const p = tryParsePrefix(addr, true);
    if (!p || p.family !== 4 || p.bits !== 32) throw new TunswitchError('EBAD_REQUEST', `${owner}: ${JSON.stringify(addr)} is not an IPv4 address`);
    const n0 = p.words[0] as number;
    const extra = this.extra.find((x) => x.family === 4 && (x.bits === 0 || ((n0 ^ (x.words[0] as number)) >>> 0) >>> (32 - x.bits) === 0));
    const why = addressProblem(p, extra ?? this.pool4);
    if (why) throw new TunswitchError('EBAD_REQUEST', `${owner}: ipv4 ${why}`);
    const n = p.words[0] as number;
    const by = this.used4.get(n);
    if (by !== undefined) throw new TunswitchError('EBAD_REQUEST', `${owner}: ipv4 ${addr} is already in use by ${by}`);
    this.used4.set(n, owner);
  }

  allocate4(owner: string): string {
    const base = this.pool4.words[0] as number;
    const size = 2 ** (32 - this.pool4.bits);
    // .0 network, .1 host port, last = broadcast
    for (let i = 2; i < size - 1; i++) {
      const n = (base + i) >>> 0;
      if (!this.used4.has(n)) {
        this.used4.set(n, owner);
        return formatV4(n);
      }
    }
    throw new TunswitchError('EBAD_REQUEST', `${owner}: the IPv4 pool ${this.pool4.text} is exhausted`);
  }

  release4(addr: string): void {
    this.used4.delete(v4(addr));
  }

  /** Claims an IPv6 address for `owner`; returns its canonical text (RFC 5952). */
  claim6(addr: string, owner: string): string {
    const p = tryParsePrefix(addr, true);
    if (!p || p.family !== 6 || p.bits !== 128) throw new TunswitchError('EBAD_REQUEST', `${owner}: ${JSON.stringify(addr)} is not an IPv6 address`);
    const why = addressProblem(p, this.pool6);
    if (why) throw new TunswitchError('EBAD_REQUEST', `${owner}: ipv6 ${why}`);
    const key = formatV6(p.words);
    const by = this.used6.get(key);
    if (by !== undefined) throw new TunswitchError('EBAD_REQUEST', `${owner}: ipv6 ${key} is already in use by ${by}`);
    this.used6.set(key, owner);
    return key;
  }

  /** IPv6 mirrors the IPv4 host part into the pool (fd00:42::a for 10.42.0.10), for readability. */
  allocate6(ipv4: string, owner: string): string | undefined {
    if (!this.pool6) return undefined;
    const w = [...this.pool6.words];
    w[3] = ((w[3] as number) | (v4(ipv4) & 0xffff)) >>> 0;
    return this.claim6(formatV6(w), owner);
  }

  release6(addr: string): void {
    const p = tryParsePrefix(addr, true);
    if (p) this.used6.delete(formatV6(p.words));
  }
}

/** An IPv4 address as a u32 (callers pass addresses already validated). */
function v4(s: string): number {
  const p = tryParsePrefix(s, true);
  if (!p || p.family !== 4) throw new TunswitchError('EBAD_REQUEST', `${JSON.stringify(s)} is not an IPv4 address`);
  return p.words[0] as number;
}
