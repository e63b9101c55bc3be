/**
 * Network namespaces and endpoint plumbing through iproute2's `ip` (async child processes).
 *
 * An endpoint is a TUN device opened by the switch (TunDevice) and then moved into the
 * endpoint's namespace, renamed (default eth0), addressed and routed there. The switch keeps
 * the fd: a TUN fd stays valid after its device changes namespace (the test proves it).
 *
 * A TUN has no link layer, so every route is a device route (`dev eth0`, no gateway).
 *
 * Lifetime (verified by test/io/tun.test.ts):
 *   - closing the last fd of a non-persistent TUN deletes the device in whatever namespace it
 *     sits in; detachEndpoint() then finds nothing to delete.
 *   - detachEndpoint() while the fd is open deletes the device; the fd stays open but the
 *     queue is detached, so reads and writes fail (EBADFD) until it is closed.
 *   - deleting the namespace while the fd is open deletes the device too (a TUN is a virtual
 *     device, so the kernel does not move it back to the initial namespace).
 *
 * Every failure is a NetnsError with a stable code and a one-line message naming the ip
 * command and its stderr.
 */
import { runCommand } from './exec.js';
import { oneLine } from '../text/oneline.js';
import { isIPv4, isIPv6 } from 'node:net';
import { TunswitchError } from '../proto/errors.js';

/** Where a command runs: a named namespace (ip netns), or the namespace of a process. */
export type NetnsRef = { name: string } | { pid: number };

/** ESYSTEM: ip failed, timed out or is not installed; EBAD_REQUEST: a bad argument. */
export type NetnsErrorCode = 'ESYSTEM' | 'EBAD_REQUEST';

export class NetnsError extends TunswitchError {
  constructor(
    code: NetnsErrorCode,
    message: string,
    readonly command: string = '',
    readonly stderr: string = '',
  ) {
    super(code, message);
    this.name = 'NetnsError';
  }
}

const IP = 'ip';
const NSENTER = 'nsenter';
/** Any single ip invocation is quick; a hung one is a bug worth a clear error. */
const COMMAND_TIMEOUT_MS = 10_000;

/* ------------------------------------------------------------------------------------ */
/* Validation: every value reaching argv is checked, so nothing can pose as an option.   */

const IFNAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,14}$/;
const NETNS_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$/;

function invalid(msg: string): NetnsError {
  return new NetnsError('EBAD_REQUEST', msg);
}

function checkIfname(what: string, name: string): void {
  if (typeof name !== 'string' || !IFNAME_RE.test(name)) {
    throw invalid(`netns: ${what} "${String(name)}" is not a valid interface name (1-15 of [A-Za-z0-9_.:@-])`);
  }
}

function checkNetnsName(name: string): void {
  if (typeof name !== 'string' || !NETNS_RE.test(name)) {
    throw invalid(`netns: namespace name "${String(name)}" is not valid ([A-Za-z0-9_.-], not starting with "." or "-")`);
  }
}

function checkRef(ref: NetnsRef): void {
  if ('name' in ref) checkNetnsName(ref.name);
  else if (!Number.isInteger(ref.pid) || ref.pid <= 0) throw invalid(`netns: pid ${String(ref.pid)} is not a process id`);
}

function checkInt(what: string, v: number, lo: number, hi: number): void {
  if (!Number.isInteger(v) || v < lo || v > hi) throw invalid(`netns: ${what} must be an integer in [${lo}, ${hi}], got ${v}`);
}

/** "a.b.c.d" (+ prefix, default 32) or "a.b.c.d/len" -> "a.b.c.d/len". Same for IPv6. */
function withPrefix(what: string, addr: string, prefix: number | undefined, family: 4 | 6): string {
  let a = addr;
  let p = prefix;
  const slash = addr.indexOf('/');
  if (slash >= 0) {
    if (prefix !== undefined) throw invalid(`netns: ${what} "${addr}" has a prefix and ${what}Prefix is also set`);
    a = addr.slice(0, slash);
    p = Number(addr.slice(slash + 1));
  }
  const max = family === 4 ? 32 : 128;
  if (family === 4 ? !isIPv4(a) : !isIPv6(a)) throw invalid(`netns: ${what} "${addr}" is not an IPv${family} address`);
  p ??= max;
  checkInt(`${what} prefix`, p, 0, max);
  return `${a}/${p}`;
}

/** A route destination: IPv4 or IPv6 CIDR. Returns the family. */
function cidrFamily(cidr: string): 4 | 6 {
  const slash = cidr.indexOf('/');
  const a = slash >= 0 ? cidr.slice(0, slash) : cidr;
  const p = slash >= 0 ? Number(cidr.slice(slash + 1)) : NaN;
  if (isIPv4(a) && Number.isInteger(p) && p >= 0 && p <= 32) return 4;
  if (isIPv6(a) && Number.isInteger(p) && p >= 0 && p <= 128) return 6;
  throw invalid(`netns: route "${cidr}" is not an IPv4 or IPv6 CIDR (address/prefix)`);
}

/* ------------------------------------------------------------------------------------ */
/* Running ip                                                                            */

function argvFor(ns: NetnsRef | null, args: readonly string[]): [string, string[]] {
  if (ns === null) return [IP, [...args]];
  if ('name' in ns) return [IP, ['-n', ns.name, ...args]];
  return [NSENTER, [`--net=/proc/${ns.pid}/ns/net`, IP, ...args]];
}

interface RunResult {
  ok: boolean;
  stdout: string;
  stderr: string;
  command: string;
}

async function run(ns: NetnsRef | null, args: readonly string[]): Promise<RunResult> {
  const [file, argv] = argvFor(ns, args);
  const r = await runCommand(file, argv, COMMAND_TIMEOUT_MS);
  if (r.missing) {
    const pkg = file === IP ? 'iproute2' : 'util-linux';
    throw new NetnsError('ESYSTEM', `netns: "${file}" is not installed (apt-get install ${pkg})`, r.command);
  }
  if (r.timedOut) throw new NetnsError('ESYSTEM', `netns: ${r.command}: timed out after ${COMMAND_TIMEOUT_MS} ms`, r.command);
  return { ok: r.code === 0, stdout: r.stdout, stderr: r.stderr, command: r.command };
}

/** Runs ip and throws a NetnsError naming the command and its stderr on failure. */
async function ip(ns: NetnsRef | null, args: readonly string[]): Promise<string> {
  const r = await run(ns, args);
  if (!r.ok) throw new NetnsError('ESYSTEM', `netns: ${r.command}: ${oneLine(r.stderr, '; ') || 'failed with no message'}`, r.command, r.stderr);
  return r.stdout;
}

/* ------------------------------------------------------------------------------------ */
/* Namespaces                                                                            */

/** Whether `ip netns` knows a namespace of this name. */
export async function netnsExists(name: string): Promise<boolean> {
  checkNetnsName(name);
  const out = await ip(null, ['netns', 'list']);
  for (const line of out.split('\n')) {
    // Lines look like "name" or "name (id: 3)".
    if (line.split(' ', 1)[0] === name) return true;
  }
  return false;
}

export async function createNetns(name: string): Promise<void> {
  checkNetnsName(name);
  await ip(null, ['netns', 'add', name]);
}

/** Deletes the namespace; returns false if it did not exist. */
export async function deleteNetns(name: string): Promise<boolean> {
  if (!(await netnsExists(name))) return false;
  await ip(null, ['netns', 'delete', name]);
  return true;
}

/* ------------------------------------------------------------------------------------ */
/* Endpoints                                                                             */

export interface AttachOptions {
  /** The TUN device's name in the switch's namespace (TunDevice.name). */
  tun: string;
  netns: NetnsRef;
  /** Its name inside the namespace; default "eth0". */
  ifname?: string;
  /** "10.199.1.1" with ipv4Prefix (default 32), or "10.199.1.1/24". */
  ipv4?: string;
  ipv4Prefix?: number;
  /** "fd00:199::1" with ipv6Prefix (default 128), or "fd00:199::1/64". Added with nodad. */
  ipv6?: string;
  ipv6Prefix?: number;
  mtu?: number;
  txqueuelen?: number;
  /** CIDRs routed via the device (device routes; `ip route replace`, so repeats are fine). */
  routes?: string[];
  /** Default route(s) via the device, for each family that has an address. */
  defaultRoute?: boolean;
}

export interface AttachedEndpoint {
  netns: NetnsRef;
  ifname: string;
}

/**
 * Moves the TUN device into the namespace and sets it up there:
 *   1. `ip link set dev TUN netns NS name IFNAME`  (move and rename in one netlink message,
 *      so a same-named device in either namespace cannot get in the way)
 *   2. mtu / txqueuelen
 *   3. addresses (IPv6 with nodad: a TUN has no neighbours to detect duplicates against)
 *   4. lo up, IFNAME up
 *   5. device routes, then default routes
 * If a step after 1 fails, the device stays inside the namespace: call detachEndpoint.
 */
export async function attachEndpoint(opts: AttachOptions): Promise<AttachedEndpoint> {
  checkIfname('tun', opts.tun);
  checkRef(opts.netns);
  const ifname = opts.ifname ?? 'eth0';
  checkIfname('ifname', ifname);
  const v4 = opts.ipv4 !== undefined ? withPrefix('ipv4', opts.ipv4, opts.ipv4Prefix, 4) : null;
  const v6 = opts.ipv6 !== undefined ? withPrefix('ipv6', opts.ipv6, opts.ipv6Prefix, 6) : null;
  if (opts.mtu !== undefined) checkInt('mtu', opts.mtu, 68, 65535);
  if (opts.txqueuelen !== undefined) checkInt('txqueuelen', opts.txqueuelen, 0, 1 << 20);
  const routes = opts.routes ?? [];
  const families = routes.map(cidrFamily);

  const target = 'name' in opts.netns ? opts.netns.name : String(opts.netns.pid);
  await ip(null, ['link', 'set', 'dev', opts.tun, 'netns', target, 'name', ifname]);

  const ns = opts.netns;
  // addrgenmode none: no IPv6 link-local address, so the kernel sends no router
  // solicitations or MLD reports from fe80:: that the switch would drop as noise.
  const linkArgs: string[] = ['addrgenmode', 'none'];
  if (opts.mtu !== undefined) linkArgs.push('mtu', String(opts.mtu));
  if (opts.txqueuelen !== undefined) linkArgs.push('txqueuelen', String(opts.txqueuelen));
  if (linkArgs.length > 0) await ip(ns, ['link', 'set', 'dev', ifname, ...linkArgs]);
  if (v4 !== null) await ip(ns, ['-4', 'addr', 'add', v4, 'dev', ifname]);
  if (v6 !== null) await ip(ns, ['-6', 'addr', 'add', v6, 'dev', ifname, 'nodad']);
  await ip(ns, ['link', 'set', 'dev', 'lo', 'up']);
  await ip(ns, ['link', 'set', 'dev', ifname, 'up']);
  for (let i = 0; i < routes.length; i++) {
    await ip(ns, [families[i] === 4 ? '-4' : '-6', 'route', 'replace', routes[i] as string, 'dev', ifname]);
  }
  if (opts.defaultRoute === true) {
    if (v4 !== null || v6 === null) await ip(ns, ['-4', 'route', 'replace', 'default', 'dev', ifname]);
    if (v6 !== null) await ip(ns, ['-6', 'route', 'replace', 'default', 'dev', ifname]);
  }
  return { netns: ns, ifname };
}

/** Whether a device of that name exists in the namespace (null = the switch's own). */
export async function linkExists(ns: NetnsRef | null, ifname: string): Promise<boolean> {
  checkIfname('ifname', ifname);
  if (ns !== null) checkRef(ns);
  const r = await run(ns, ['-o', 'link', 'show', 'dev', ifname]);
  if (r.ok) return true;
  if (/does not exist|Cannot find device/i.test(r.stderr)) return false;
  throw new NetnsError('ESYSTEM', `netns: ${r.command}: ${oneLine(r.stderr, '; ') || 'failed with no message'}`, r.command, r.stderr);
}

/**
 * Deletes the endpoint's device inside its namespace if it still exists; returns whether it
 * deleted one. Closing the TUN fd already deletes a non-persistent device, so after close()
 * this is a no-op that returns false. Safe to call after the namespace is gone.
 */
export async function detachEndpoint(opts: { netns: NetnsRef; ifname?: string }): Promise<boolean> {
  checkRef(opts.netns);
  const ifname = opts.ifname ?? 'eth0';
  checkIfname('ifname', ifname);
  if ('name' in opts.netns && !(await netnsExists(opts.netns.name))) return false;
  if (!(await linkExists(opts.netns, ifname))) return false;
  await ip(opts.netns, ['link', 'del', 'dev', ifname]);
  return true;
}

export interface HostPortOptions {
  ipv4?: string;
  ipv4Prefix?: number;
  ipv6?: string;
  ipv6Prefix?: number;
  mtu?: number;
  /** Pool CIDRs routed from the host into the switch through this device. */
  routes?: string[];
}

/**
 * The host port: a TUN left in the switch's own namespace, addressed, up, with device routes
 * for the endpoint pool so host traffic to endpoints enters the switch.
 */
export async function setupHostPort(tunName: string, opts: HostPortOptions = {}): Promise<void> {
  checkIfname('tunName', tunName);
  const v4 = opts.ipv4 !== undefined ? withPrefix('ipv4', opts.ipv4, opts.ipv4Prefix, 4) : null;
  const v6 = opts.ipv6 !== undefined ? withPrefix('ipv6', opts.ipv6, opts.ipv6Prefix, 6) : null;
  if (opts.mtu !== undefined) checkInt('mtu', opts.mtu, 68, 65535);
  const routes = opts.routes ?? [];
  const families = routes.map(cidrFamily);
  if (opts.mtu !== undefined) await ip(null, ['link', 'set', 'dev', tunName, 'mtu', String(opts.mtu)]);
  // No IPv6 link-local address on the host port either (no router solicitations / MLD).
  await ip(null, ['link', 'set', 'dev', tunName, 'addrgenmode', 'none']);
  if (v4 !== null) await ip(null, ['-4', 'addr', 'replace', v4, 'dev', tunName]);
  if (v6 !== null) await ip(null, ['-6', 'addr', 'replace', v6, 'dev', tunName, 'nodad']);
  await ip(null, ['link', 'set', 'dev', tunName, 'up']);
  for (let i = 0; i < routes.length; i++) {
    await ip(null, [families[i] === 4 ? '-4' : '-6', 'route', 'replace', routes[i] as string, 'dev', tunName]);
  }
}

/**
 * A further network behind the host port (a Docker network of the driver): the gateway
 * address on the host port and a device route for the subnet into the switch.
 */
export async function addHostPortNetwork(tunName: string, gateway: string, subnet: string): Promise<void> {
  checkIfname('tunName', tunName);
  const fam = cidrFamily(subnet);
  if (gateway !== '') {
    const gw = withPrefix('gateway', gateway, undefined, fam);
    await ip(null, [fam === 4 ? '-4' : '-6', 'addr', 'replace', gw, 'dev', tunName, ...(fam === 6 ? ['nodad'] : [])]);
  }
  await ip(null, [fam === 4 ? '-4' : '-6', 'route', 'replace', subnet, 'dev', tunName]);
}

/** Undoes addHostPortNetwork; missing pieces (device gone) are not an error. */
export async function removeHostPortNetwork(tunName: string, gateway: string, subnet: string): Promise<void> {
  checkIfname('tunName', tunName);
  const fam = cidrFamily(subnet);
  await run(null, [fam === 4 ? '-4' : '-6', 'route', 'del', subnet, 'dev', tunName]);
  if (gateway !== '') await run(null, [fam === 4 ? '-4' : '-6', 'addr', 'del', withPrefix('gateway', gateway, undefined, fam), 'dev', tunName]);
}

/** Link settings for a TUN that the engine will move (driver mode): no link-local, MTU. */
export async function prepareHandoff(tunName: string, mtu?: number, txqueuelen?: number): Promise<void> {
  checkIfname('tunName', tunName);
  const args = ['link', 'set', 'dev', tunName, 'addrgenmode', 'none'];
  if (mtu !== undefined) {
    checkInt('mtu', mtu, 68, 65535);
    args.push('mtu', String(mtu));
  }
  if (txqueuelen !== undefined) {
    checkInt('txqueuelen', txqueuelen, 0, 1 << 20);
    args.push('txqueuelen', String(txqueuelen));
  }
  await ip(null, args);
}
