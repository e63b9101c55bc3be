/**
 * Name resolution inside a lab. `ip netns exec NS cmd` bind-mounts every file of
 * /etc/netns/NS/ over the same file in /etc, so a hosts file written there lets
 * `curl backend:8080` work inside the lab. Each node is known as `<node>` and
 * `<node>.<lab>`; the outside host (if any) as `outside`; the switch's host port as `host`.
 * With a host port, resolv.conf points at the switch's DNS responder too, so DNS clients
 * (nslookup, dig, resolvers that skip /etc/hosts) find the nodes the same way.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NETNS_ETC, type LabState } from './state.js';

export interface HostEntry {
  name: string;
  ipv4?: string;
  ipv6?: string;
}

/** The hosts file text for a lab (the same for every namespace of the lab). */
export function renderHosts(lab: string, entries: readonly HostEntry[]): string {
  const lines = [`# written by "tunswitch lab up ${lab}"; removed by "tunswitch lab down ${lab}"`, '127.0.0.1\tlocalhost', '::1\tlocalhost ip6-localhost ip6-loopback'];
  for (const e of entries) {
    const names = `${e.name} ${e.name}.${lab}`;
    if (e.ipv4) lines.push(`${e.ipv4}\t${names}`);
    if (e.ipv6) lines.push(`${e.ipv6}\t${names}`);
  }
  return lines.join('\n') + '\n';
}

/** The entries a lab's hosts files list: nodes, then the host port and the outside host. */
export function hostEntries(s: LabState): HostEntry[] {
  const out: HostEntry[] = s.nodes.map((n) => {
    const e: HostEntry = { name: n.name };
    if (n.ipv4) e.ipv4 = n.ipv4;
    if (n.ipv6) e.ipv6 = n.ipv6;
    return e;
  });
  if (s.hostIpv4 && !s.nodes.some((n) => n.name === 'host')) {
    const h: HostEntry = { name: 'host', ipv4: s.hostIpv4 };
    if (s.hostIpv6) h.ipv6 = s.hostIpv6;
    out.push(h);
  }
  if (s.outside && !s.nodes.some((n) => n.name === 'outside')) out.push({ name: 'outside', ipv4: s.outside.addr });
  return out;
}

/**
 * The resolv.conf of a lab's namespaces: the switch's DNS responder on the host port
 * (src/runtime/dns.ts) answers NAME and NAME.<lab>; null when the lab has no host port.
 */
export function renderResolvConf(s: Pick<LabState, 'name' | 'hostIpv4'>): string | null {
  if (!s.hostIpv4) return null;
  return `# written by "tunswitch lab up ${s.name}": the switch answers the lab's names\nnameserver ${s.hostIpv4}\nsearch ${s.name}\noptions timeout:1 attempts:2\n`;
}

/** Writes /etc/netns/<ns>/hosts (and resolv.conf, with a host port) for every namespace of the lab. */
export function writeHostsFiles(s: LabState): void {
  const text = renderHosts(s.name, hostEntries(s));
  const resolv = renderResolvConf(s);
  for (const ns of s.namespaces) {
    const dir = join(NETNS_ETC, ns);
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    writeFileSync(join(dir, 'hosts'), text, { mode: 0o644 });
    if (resolv !== null) writeFileSync(join(dir, 'resolv.conf'), resolv, { mode: 0o644 });
  }
}

/** Removes /etc/netns/<ns> for each namespace (the directory is ours: we made it). */
export function removeHostsFiles(namespaces: readonly string[]): void {
  for (const ns of namespaces) rmSync(join(NETNS_ETC, ns), { recursive: true, force: true });
}
