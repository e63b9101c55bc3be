/**
 * The "outside" host of a lab: a namespace `<lab>-outside` that stands for the world beyond
 * the switch. It hangs off the root namespace on a veth pair:
 *
 *   frontend ──eth0(TUN)── switch ──host port <lab>.h── root namespace ──<lab>.out══eth0── outside
 *   10.42.0.2                               10.42.0.1          10.99.0.1        10.99.0.2
 *
 * An endpoint with `defaultRoute: true` sends world traffic to the switch; the switch hands
 * it to the host port; the root namespace forwards it (net.ipv4.ip_forward=1) over the veth;
 * the outside host answers via its route for the pool through 10.99.0.1, and the reply enters
 * the switch through the host port again. To the switch the outside host is `world`
 * (identity 2: its address is in no ipcache prefix).
 *
 * Hosts with a firewall that drops forwarded packets (Docker sets the FORWARD policy to DROP)
 * need `iptables -I FORWARD -i <lab>.h -j ACCEPT` and the same for `-o <lab>.h`.
 */
import { cliName } from '../text/hint.js';
import { LabError, ip, rootLinkExists, run } from './sys.js';
import type { LabOutside } from './state.js';

/** The default subnet between the root namespace and the outside host. */
export const DEFAULT_OUTSIDE_CIDR = '10.99.0.0/24';

/** Checks `cidr` is an IPv4 /24 with a zero host part; returns its first three octets. */
export function parseOutsideCidr(cidr: string): string {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.0\/24$/.exec(cidr);
  if (!m || m.slice(1, 4).some((o) => Number(o) > 255)) {
    throw new LabError('ELAB_INVALID', `outside subnet ${JSON.stringify(cidr)} must be an IPv4 /24 such as ${DEFAULT_OUTSIDE_CIDR}`);
  }
  return `${m[1]}.${m[2]}.${m[3]}`;
}

/** What createOutside will make for lab `lab` (pure: names and addresses). */
export function outsidePlan(lab: string, cidr: string = DEFAULT_OUTSIDE_CIDR): LabOutside {
  const net = parseOutsideCidr(cidr);
  return { netns: `${lab}-outside`, rootIf: `${lab}.out`, cidr, rootAddr: `${net}.1`, addr: `${net}.2` };
}

/** Fails with ELAB_CONFLICT if the root namespace already uses the subnet or the device name. */
async function checkFree(o: LabOutside): Promise<void> {
  if (await rootLinkExists(o.rootIf)) throw new LabError('ELAB_CONFLICT', `device ${o.rootIf} already exists in the root namespace (a lab of the same name left behind? try "${cliName()} lab down")`);
  const net = o.cidr.slice(0, o.cidr.lastIndexOf('.') + 1);
  const addrs = await ip(['-4', '-o', 'addr', 'show']);
  for (const line of addrs.split('\n')) {
    const m = /\sinet\s+(\d+\.\d+\.\d+\.\d+)\//.exec(line);
    if (m && (m[1] as string).startsWith(net)) {
      throw new LabError('ELAB_CONFLICT', `outside subnet ${o.cidr}: ${m[1]} is already an address in the root namespace (${line.split(/\s+/)[1] ?? '?'}); pick another subnet`);
    }
  }
  const routes = (await ip(['-4', 'route', 'show', 'exact', o.cidr])).trim();
  if (routes !== '') throw new LabError('ELAB_CONFLICT', `outside subnet ${o.cidr} is already routed in the root namespace (${routes.split('\n')[0]}); pick another subnet`);
}

/**
 * Makes the outside host for a lab whose IPv4 pool is `pool4`. The namespace must not exist.
 * On failure it removes what it made and rethrows.
 */
export async function createOutside(o: LabOutside, pool4: string): Promise<void> {
  await checkFree(o);
  await ip(['netns', 'add', o.netns]);
  try {
    await ip(['link', 'add', o.rootIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', o.netns]);
    await ip(['addr', 'add', `${o.rootAddr}/24`, 'dev', o.rootIf]);
    await ip(['link', 'set', 'dev', o.rootIf, 'up']);
    await ip(['-n', o.netns, 'link', 'set', 'dev', 'lo', 'up']);
    await ip(['-n', o.netns, 'addr', 'add', `${o.addr}/24`, 'dev', 'eth0']);
    await ip(['-n', o.netns, 'link', 'set', 'dev', 'eth0', 'up']);
    await ip(['-n', o.netns, 'route', 'add', pool4, 'via', o.rootAddr]);
  } catch (e) {
    await removeOutside(o);
    throw e;
  }
}

/** Removes the outside host; deleting the namespace deletes both ends of the veth. Idempotent. */
export async function removeOutside(o: LabOutside): Promise<void> {
  await run('ip', ['netns', 'delete', o.netns]);
  if (await rootLinkExists(o.rootIf)) await run('ip', ['link', 'del', 'dev', o.rootIf]);
}
