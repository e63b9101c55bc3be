/** `tunswitch status`: one screen about the running agent, like `cilium status`. */
import type { Command } from 'commander';
import type { KvstoreStatus, StatusInfo } from '../api/types.js';
import { print, withOutput, type CliContext } from './context.js';
import { formatKeyValues } from '../text/table.js';

/** 3725 → "1h 2m 5s". */
export function formatDuration(seconds: number): string {
  let s = Math.max(0, Math.floor(seconds));
  const parts: string[] = [];
  for (const [unit, n] of [['d', 86400], ['h', 3600], ['m', 60]] as const) {
    if (s >= n || parts.length > 0) {
      parts.push(`${Math.floor(s / n)}${unit}`);
      s %= n;
    }
  }
  parts.push(`${s}s`);
  return parts.join(' ');
}

export const onOff = (b: boolean): string => (b ? 'on' : 'off');

export function formatStatus(st: StatusInfo): string {
  return formatKeyValues([
    ['Name', st.name],
    ['Version', st.version],
    ['Uptime', formatDuration(st.uptimeSeconds)],
    ['Policy revision', st.policyRevision],
    ['Endpoints', st.endpoints],
    ['Identities', st.identities],
    ['Policies', st.policies],
    ['Workers', `${st.workers} (restarts: ${st.workerRestarts}${st.lastWorkerRestart ? `, last: ${st.lastWorkerRestart}` : ''})`],
    ['Shards', (st.shards ?? []).map((s) => `${s.shard}: ${s.state}${s.crashLoop ? ' CRASH LOOP' : ''}${s.restarts > 0 ? ` (${s.restarts} restarts)` : ''}`).join(', ')],
    ['Health', st.healthy === false ? 'NOT FORWARDING (a shard is down or crash-looping)' : 'ok'],
    ['I/O engine', st.ioEngine],
    ['Ports', st.ports],
    ['Offload', onOff(st.offload)],
    ['Enforcement', st.config.enforcement],
    ['Audit', onOff(st.config.audit)],
    ['Packets', `forwarded ${st.counters.forwarded}, dropped ${st.counters.dropped}`],
    ...(st.kvstore ? formatKvstoreRows(st.kvstore) : []),
  ]);
}

function formatKvstoreRows(k: KvstoreStatus): [string, string | number][] {
  const failed = Object.values(k.operations).reduce((n, c) => n + c.failed, 0);
  const ok = Object.values(k.operations).reduce((n, c) => n + c.ok, 0);
  return [
    ['Kvstore', `${k.state} ${k.url}${k.lastError ? ` (${k.lastError})` : ''}`],
    ['Node', `${k.node} (${k.nodes} nodes, lease TTL ${k.leaseTtl} s, ${k.leaseRenewals} lease renewals)`],
    ['Cluster', `${k.identities} identities, ${k.remoteIpcacheEntries} remote ipcache entries${k.remoteIpcacheRejected ? ` (${k.remoteIpcacheRejected} refused: table full)` : ''}`],
    ['Kvstore ops', `${ok} ok, ${failed} failed, ${k.pendingWrites} queued`],
  ];
}

export function register(program: Command, ctx: CliContext): void {
  withOutput(program.command('status').description('show the state of the running agent')).action(async (_opts, cmd: Command) => {
    const st = await ctx.client().get<StatusInfo>('/v1/status');
    print(ctx, cmd, st, () => formatStatus(st));
    // Exit status tells scripts whether packets can flow: 0 healthy, 1 a shard is down.
    if (st.healthy === false) process.exitCode = 1;
  });
}
