/** `tunswitch namespace list|get|create|label|delete`: Kubernetes namespaces and their labels. */
import type { Command } from 'commander';
import { apiPath } from '../api/client.js';
import type { NamespaceInfo } from '../control/namespaces.js';
import { labelChangesOrUsage } from './endpoint.js';
import { print, withOutput, type CliContext } from './context.js';
import { formatKeyValues, formatTable } from '../text/table.js';

function labelList(n: NamespaceInfo): string[] {
  return Object.entries(n.labels).map(([k, v]) => `${k}=${v}`);
}

export function formatNamespaces(ns: readonly NamespaceInfo[]): string {
  return formatTable(
    ['NAME', 'LABELS', 'ENDPOINTS'],
    ns.map((n) => [n.name, labelList(n), n.endpoints.join(',') || '-']),
  );
}

function formatNamespace(n: NamespaceInfo): string {
  return formatKeyValues([
    ['Name', n.name],
    ['Labels', labelList(n)],
    ['Endpoints', n.endpoints.length > 0 ? n.endpoints : '-'],
  ]);
}

export function register(program: Command, ctx: CliContext): void {
  const ns = program.command('namespace').alias('ns').description('Kubernetes namespaces: their labels select endpoints in namespaced policies');

  withOutput(ns.command('list').alias('ls').description('list namespaces')).action(async (_o, cmd: Command) => {
    const list = await ctx.client().get<NamespaceInfo[]>('/v1/namespace');
    print(ctx, cmd, list, () => formatNamespaces(list));
  });

  withOutput(ns.command('get').argument('<name>', 'namespace').description('show one namespace')).action(async (name: string, _o, cmd: Command) => {
    const n = await ctx.client().get<NamespaceInfo>(apiPath('/v1/namespace', name));
    print(ctx, cmd, n, () => formatNamespace(n));
  });

  withOutput(
    ns
      .command('create')
      .argument('<name>', 'namespace')
      .argument('[labels...]', 'key=value labels')
      .description('create a namespace (or replace its labels)'),
  ).action(async (name: string, labels: string[], _o, cmd: Command) => {
    const { set, remove } = labelChangesOrUsage(cmd, labels);
    if (remove.length > 0) cmd.error('create takes key=value labels only', { exitCode: 2, code: 'tunswitch.usage' });
    const body = { labels: Object.fromEntries(set.map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)])) };
    const n = await ctx.client().put<NamespaceInfo>(apiPath('/v1/namespace', name), body);
    print(ctx, cmd, n, () => formatNamespace(n));
  });

  withOutput(
    ns
      .command('label')
      .argument('<name>', 'namespace')
      .argument('<changes...>', 'key=value to set, key- to remove (as kubectl label)')
      .description('change a namespace\'s labels: every endpoint in it gets a new identity and policy'),
  ).action(async (name: string, changes: string[], _o, cmd: Command) => {
    const n = await ctx.client().post<NamespaceInfo>(`${apiPath('/v1/namespace', name)}/labels`, labelChangesOrUsage(cmd, changes));
    print(ctx, cmd, n, () => formatNamespace(n));
  });

  ns.command('delete')
    .alias('rm')
    .argument('<name>', 'namespace (must have no endpoints)')
    .description('delete a namespace')
    .action(async (name: string) => {
      await ctx.client().delete(apiPath('/v1/namespace', name));
      ctx.out(`Namespace ${name} deleted\n`);
    });
}
