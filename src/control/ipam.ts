/**
 * IPAM: hands out addresses from the IPv4 (and optional IPv6) pool. The first address of
 * the pool is kept for the host port; the network and broadcast addresses of IPv4 are never
 * given out. Allocation is deterministic (lowest free address), so a restart that restores
 * the same endpoints restores the same addresses.
 */
import { TunswitchError } from './errors.js';
import { formatV4, formatV6, tryParsePrefix, type Prefix } from './cidr.js';

export class Ipam {
  private readonly used4 = new Set<number>();
  private readonly used6 = new Set<string>();
  /**
   * Further IPv4/IPv6 ranges whose addresses are handed out by someone else (a Docker
   * network's IPAM) and only claimed here: claim4/claim6 accept them, allocate never uses them.
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
    const n = v4(addr);
    const base = this.pool4.words[0] as number;
    const size = 2 ** (32 - this.pool4.bits);
    const inExtra = this.extra.some((x) => x.family === 4 && (((n ^ (x.words[0] as number)) >>> 0) >>> (32 - x.bits) === 0 || x.bits === 0));
    if (inExtra) {
      if (this.used4.has(n)) throw new TunswitchError('EBAD_REQUEST', `${owner}: ipv4 ${addr} is already in use`);
      this.used4.add(n);
      return;
    }
    if (n < base || n >= base + size) throw new TunswitchError('EBAD_REQUEST', `${owner}: ipv4 ${addr} is outside the pool ${this.pool4.text}`);
    if (this.used4.has(n) || n === base + 1) throw new TunswitchError('EBAD_REQUEST', `${owner}: ipv4 ${addr} is already in use`);
    this.used4.add(n);
  }

  allocate4(owner: string): string {
    const base = this.pool4.words[0] as number;
    const size = 2 ** (32 - this.pool4.bits);
    // .0 network, .1 host port, last = broadcast
    for (let i = 2; i < size - 1; i++) {
      const n = (base + i) >>> 0;
      if (!this.used4.has(n)) {
        this.used4.add(n);
        return formatV4(n);
      }
    }
    throw new TunswitchError('EBAD_REQUEST', `${owner}: the IPv4 pool ${this.pool4.text} is exhausted`);
  }

  release4(addr: string): void {
    this.used4.delete(v4(addr));
  }

  claim6(addr: string, owner: string): void {
    const key = addr.toLowerCase();
    if (this.used6.has(key)) throw new TunswitchError('EBAD_REQUEST', `${owner}: ipv6 ${addr} is already in use`);
    this.used6.add(key);
  }

  /** IPv6 mirrors the IPv4 host part into the pool (fd00:42::a for 10.42.0.10), for readability. */
  allocate6(ipv4: string, owner: string): string | undefined {
    if (!this.pool6) return undefined;
    const w = [...this.pool6.words];
    w[3] = ((w[3] as number) | (v4(ipv4) & 0xffff)) >>> 0;
    const a = formatV6(w);
    this.claim6(a, owner);
    return a;
  }

  release6(addr: string): void {
    this.used6.delete(addr.toLowerCase());
  }
}

/** An IPv4 address as a u32 (callers pass addresses already validated). */
function v4(s: string): number {
  const p = tryParsePrefix(s, true);
  if (!p || p.family !== 4) throw new TunswitchError('EBAD_REQUEST', `${JSON.stringify(s)} is not an IPv4 address`);
  return p.words[0] as number;
}
