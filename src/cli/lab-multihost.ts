/**
 * The multi-host side of `tunswitch lab` (src/lab/multihost.ts): the tables `lab up` and
 * `lab status` print for a lab of several hosts, and `lab matrix NAME`, the three-tier
 * connectivity matrix of a running lab (single- or multi-host), explained with the events of
 * every switch involved.
 */
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { TunswitchError } from '../proto/errors.js';
import type { MultiHostStatus } from '../lab/multihost.js';
import type { MultiHostState } from '../lab/multihost-state.js';
import { cliName, print, withOutput, type CliContext } from './context.js';
import { durationParser } from './duration.js';
import { didYouMean } from './suggest.js';
import { formatTable } from '../text/table.js';

export function formatMultiHostUp(s: MultiHostState): string {
  const rows = s.hosts.flatMap((h) => h.nodes.map((n) => [n.name, h.name, n.netns, n.ipv4, n.ipv6]));
  return (
    formatTable(['NODE', 'HOST', 'NAMESPACE', 'IPv4', 'IPv6'], rows) +
    '\n' +
    formatTable(['HOST', 'NAMESPACE', 'UNDERLAY IP', 'POOL', 'SOCKET'], s.hosts.map((h) => [h.name, h.netns, h.ip, h.pool, h.socket])) +
    `\netcd ${s.etcdUrl}   underlay ${s.underlay} (namespace ${s.underlayNetns})\n`
  );
}

export function formatMultiHostStatus(labs: readonly MultiHostStatus[]): string {
  let out = '';
  for (const l of labs) {
    const etcd = l.etcdRunning === null ? 'external' : l.etcdRunning ? 'running' : 'gone';
    out += `\nlab ${l.name} (multi-host): etcd ${l.etcd} ${etcd}, underlay ${l.underlay}\n`;
    out += formatTable(
      ['HOST', 'STATE', 'PID', 'UNDERLAY IP', 'SEES NODES', 'NODES', 'SOCKET'],
      l.hosts.map((h) => [
        h.name,
        h.running ? 'running' : 'switch gone (lab down cleans up)',
        h.pid,
        h.ip,
        h.clusterNodes === null ? '-' : h.clusterNodes.join(','),
        h.nodes.map((n) => `${n.name}=${n.ipv4 ?? n.ipv6 ?? '?'}`).join(', '),
        h.socket,
      ]),
    );
  }
  return out;
}

export function registerMatrix(lab: Command, ctx: CliContext): void {
  withOutput(
    lab
      .command('matrix')
      .argument('<name>', 'a running lab (single- or multi-host) with frontend, backend and db nodes')
      .description('the three-tier connectivity matrix of a running lab: servers, probes, verdicts explained by the switches\' events; exit 1 on a mismatch')
      .option('--timeout <duration>', 'per-flow timeout: 1500ms, 2s (a bare number is in ms)', (v) => {
        const ms = durationParser('ms')(v);
        if (ms < 100) throw new InvalidArgumentError(`"${v}" is shorter than 100ms.`);
        return ms;
      }, 1500),
  ).action(async (name: string, o: { timeout: number }, cmd: Command) => {
    const { formatMatrix, runMatrix, THREE_TIER_FLOWS, THREE_TIER_SERVERS } = await import('../lab/matrix.js');
    const { startServer } = await import('../lab/probe.js');
    const { readLabState, listLabNames } = await import('../lab/state.js');
    const { readMultiHostState, listMultiHostNames } = await import('../lab/multihost-state.js');
    const multi = readMultiHostState(name);
    const single = multi ? null : readLabState(name);
    if (!multi && !single) throw new TunswitchError('ELAB_NOT_RUNNING', `lab "${name}" is not running${didYouMean(name, [...listLabNames(), ...listMultiHostNames()])}`);
    const labView = multi
      ? { name, nodes: multi.hosts.flatMap((h) => h.nodes), socket: (multi.hosts[0] as MultiHostState['hosts'][number]).socket }
      : (single as NonNullable<typeof single>);
    const namespaces = multi ? multi.namespaces : (single as NonNullable<typeof single>).namespaces;
    const servers = [];
    try {
      for (const [node, ports] of Object.entries(THREE_TIER_SERVERS)) {
        const ns = `${name}-${node}`;
        if (namespaces.includes(ns)) servers.push(await startServer(ns, node, ports));
      }
      const opts = multi ? { timeoutMs: o.timeout, eventSockets: multi.hosts.map((h) => h.socket) } : { timeoutMs: o.timeout };
      const rows = await runMatrix(labView, THREE_TIER_FLOWS, opts);
      if (rows.length === 0) throw new TunswitchError('EFAILED', `lab "${name}" has none of the three-tier flows' nodes (frontend, backend, db)`);
      print(ctx, cmd, rows, () => {
        const where = multi ? ` (hosts: ${multi.hosts.map((h) => `${h.name}: ${h.nodes.map((n) => n.name).join(', ')}`).join('; ')})` : '';
        return formatMatrix(rows) + `\n${rows.filter((r) => r.ok).length} of ${rows.length} flows as expected${where}\n`;
      });
      const bad = rows.filter((r) => !r.ok).length;
      if (bad > 0) throw new TunswitchError('EFAILED', `${bad} flow(s) disagree with the policy (see the table; "${cliName()} observe --verdict DROPPED" on each host)`);
    } finally {
      for (const s of servers) await s.stop().catch(() => undefined);
    }
  });
}
