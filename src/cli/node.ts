/** `tunswitch node list`: the switches of the cluster (kvstore mode), like `cilium node list`. */
import type { Command } from 'commander';
import type { NodeInfo } from '../api/types.js';
import { print, withOutput, type CliContext } from './context.js';
import { formatTable } from '../text/table.js';

export function formatNodes(ns: readonly NodeInfo[]): string {
  if (ns.length === 0) return 'no nodes (the switch does not run in cluster mode: run --kvstore etcd://HOST:PORT)\n';
  return formatTable(
    ['NAME', 'NODE IP', 'IPV4 CIDR', 'IPV6 CIDR', 'SELF'],
    ns.map((n) => [n.name, n.ip, n.ipv4Cidr ?? '', n.ipv6Cidr ?? '', n.self ? 'yes' : '']),
  );
}

export function register(program: Command, ctx: CliContext): void {
  const node = program.command('node').description('show the nodes of the cluster (kvstore mode)');
  withOutput(node.command('list').alias('ls').description('list every node in the kvstore')).action(async (_o, cmd: Command) => {
    const ns = await ctx.client().get<NodeInfo[]>('/v1/nodes');
    print(ctx, cmd, ns, () => formatNodes(ns));
  });
}
