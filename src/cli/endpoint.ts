/** `tunswitch endpoint list|get|add|delete`, like `cilium endpoint`. */
import { InvalidArgumentError, Option, type Command } from 'commander';
import { apiPath } from '../api/client.js';
import type { EndpointAddRequest, EndpointInfo, QueueSettings } from '../api/types.js';
import { collect, parseIPv4, parseIPv6, parsePositiveInt, print, UsageError, withOutput, type CliContext } from './context.js';
import { formatKeyValues, formatTable } from '../text/table.js';
import { TunswitchError } from '../control/errors.js';

function enforcement(on: boolean, audit: boolean): string {
  if (!on) return 'Disabled';
  return audit ? 'Enabled (audit)' : 'Enabled';
}

export function formatEndpoints(eps: readonly EndpointInfo[]): string {
  return formatTable(
    ['ENDPOINT', 'NAME', 'POLICY (ingress)', 'POLICY (egress)', 'IDENTITY', 'LABELS', 'IPv4', 'IPv6', 'OFFLOAD', 'STATUS'],
    eps.map((e) => [
      e.id,
      e.name,
      enforcement(e.policy.ingress, e.policy.audit),
      enforcement(e.policy.egress, e.policy.audit),
      e.identity,
      e.labels,
      e.ipv4,
      e.ipv6,
      e.offload === undefined ? undefined : e.offload ? 'on' : 'plain',
      e.state,
    ]),
  );
}

export function formatEndpoint(e: EndpointInfo): string {
  return formatKeyValues([
    ['ID', e.id],
    ['Name', e.name],
    ['Identity', e.identity],
    ['Namespace', e.namespace],
    ['Labels', e.labels],
    ['Named ports', e.ports?.map((p) => `${p.name}=${p.port}/${p.protocol}`)],
    ['IPv4', e.ipv4],
    ['IPv6', e.ipv6],
    ['Netns', e.netns],
    ['Interface', e.ifname],
    ['TUN', e.tun],
    ['Port', e.port],
    ['Offload', offloadText(e)],
    ['Ingress policy', enforcement(e.policy.ingress, e.policy.audit)],
    ['Egress policy', enforcement(e.policy.egress, e.policy.audit)],
    ['State', e.state],
  ]);
}

/** "on (csum tso4 tso6 uso4 uso6)" or "plain (no TSO/USO offered)". */
function offloadText(e: EndpointInfo): string | undefined {
  if (e.offload === undefined) return undefined;
  return e.offload ? `on (${(e.offloadFlags ?? []).join(' ')})` : 'plain (no TSO/USO offered)';
}

/** `--offload` values: true|false (also on|off, yes|no). */
export function parseOffloadArg(s: string): boolean {
  const v = s.toLowerCase();
  if (v === 'true' || v === 'on' || v === 'yes') return true;
  if (v === 'false' || v === 'off' || v === 'no') return false;
  throw new InvalidArgumentError(`"${s}" is not true or false.`);
}

/** `--label` values: `key=value` or `source:key=value`, or a bare key; no spaces. */
export function parseLabelArg(s: string): string {
  if (s === '' || /\s/.test(s) || s.startsWith('=')) throw new InvalidArgumentError(`"${s}" is not a label (key=value).`);
  return s;
}

/** `http=80/TCP` (protocol defaults to TCP). */
export function parseNamedPortArg(s: string): NonNullable<EndpointAddRequest['ports']>[number] {
  const m = /^([a-z0-9-]{1,15})=(\d{1,5})(?:\/(TCP|UDP|SCTP))?$/i.exec(s);
  if (!m) throw new InvalidArgumentError(`"${s}" is not NAME=PORT[/PROTOCOL], e.g. http=80/TCP.`);
  return { name: m[1] as string, port: Number(m[2]), protocol: (m[3] ?? 'TCP').toUpperCase() as 'TCP' | 'UDP' | 'SCTP' };
}

/** kubectl-style label changes: `key=value` sets, `key-` removes. */
export function parseLabelChanges(changes: readonly string[]): { set: string[]; remove: string[] } {
  const set: string[] = [];
  const remove: string[] = [];
  for (const c of changes) {
    if (c.endsWith('-') && !c.includes('=')) remove.push(c.slice(0, -1));
    else if (c.includes('=') && !c.startsWith('=') && !/\s/.test(c)) set.push(c);
    else throw new TunswitchError('EBAD_REQUEST', `"${c}" is not key=value or key-`);
  }
  return { set, remove };
}

/** parseLabelChanges, with a bad change as a usage error (exit 2). */
export function labelChangesOrUsage(cmd: Command, changes: readonly string[]): { set: string[]; remove: string[] } {
  try {
    return parseLabelChanges(changes);
  } catch (e) {
    return cmd.error((e as Error).message, { exitCode: 2, code: 'tunswitch.usage' });
  }
}

export function register(program: Command, ctx: CliContext): void {
  const ep = program.command('endpoint').description('manage endpoints');

  ep.command('wait')
    .argument('[names...]', 'endpoint names (default: every endpoint the agent has)')
    .description('wait until the agent answers and the named endpoints are ready (for scripts: no race with Docker or lab attach)')
    .option('--timeout <seconds>', 'give up after this many seconds (exit 1)', parsePositiveInt, 60)
    .action(async (names: string[], o: { timeout: number }) => {
      const deadline = Date.now() + o.timeout * 1000;
      let why = 'the agent did not answer';
      while (true) {
        try {
          const eps = await ctx.client().get<EndpointInfo[]>('/v1/endpoint');
          const byName = new Map(eps.map((e) => [e.name, e]));
          const notReady = names.length > 0 ? names.filter((n) => byName.get(n)?.state !== 'ready') : eps.filter((e) => e.state !== 'ready').map((e) => e.name);
          if (notReady.length === 0) {
            process.stdout.write(`ready: ${(names.length > 0 ? names : eps.map((e) => e.name)).join(', ') || '(no endpoints)'}\n`);
            return;
          }
          why = `not ready: ${notReady.map((n) => `${n} (${byName.get(n)?.state ?? 'missing'})`).join(', ')}`;
        } catch (e) {
          why = `the agent did not answer: ${(e as Error).message}`;
        }
        if (Date.now() >= deadline) throw new TunswitchError('ETIMEOUT', `endpoint wait: gave up after ${o.timeout} s; ${why}`);
        await new Promise((r) => setTimeout(r, 250));
      }
    });

  withOutput(ep.command('list').alias('ls').description('list endpoints')).action(async (_o, cmd: Command) => {
    const eps = await ctx.client().get<EndpointInfo[]>('/v1/endpoint');
    print(ctx, cmd, eps, () => formatEndpoints(eps));
  });

  withOutput(ep.command('get').argument('<id|name>', 'endpoint index or name').description('show one endpoint')).action(
    async (id: string, _o, cmd: Command) => {
      const e = await ctx.client().get<EndpointInfo>(apiPath('/v1/endpoint', id));
      print(ctx, cmd, e, () => formatEndpoint(e));
    },
  );

  withOutput(
    ep
      .command('add')
      .argument('<name>', 'endpoint name')
      .description('create an endpoint: a TUN device in a network namespace')
      .option('-l, --label <key=value>', 'a label (repeat for more)', collect(parseLabelArg))
      .addOption(new Option('--netns <name>', 'named network namespace').conflicts('pid'))
      .addOption(new Option('--pid <pid>', 'use the network namespace of this process').argParser(parsePositiveInt))
      .option('--ipv4 <addr>', 'IPv4 address (default: from the pool)', parseIPv4)
      .option('--ipv6 <addr>', 'IPv6 address (default: from the pool)', parseIPv6)
      .option('--default-route', "route everything the namespace sends through the switch (default routes for IPv4 and IPv6)")
      .option('--no-default-route', 'no default route, only the pool\'s prefix (the default)')
      .option('-n, --namespace <name>', 'Kubernetes namespace (default: default)')
      .option('--port <name=port/proto>', 'a named port, e.g. http=80/TCP (repeat for more)', collect(parseNamedPortArg))
      .option('--offload <true|false>', "offer TSO/USO to the endpoint's kernel (default: the switch's offload); false: a plain port", parseOffloadArg),
  ).action(async (name: string, o: Record<string, unknown>, cmd: Command) => {
    if (o.netns === undefined && o.pid === undefined) throw new UsageError('endpoint add: give the network namespace with --netns NAME or --pid PID');
    const req: EndpointAddRequest = { name };
    if (o.namespace !== undefined) req.namespace = o.namespace as string;
    if (o.port !== undefined) req.ports = o.port as NonNullable<EndpointAddRequest['ports']>;
    if (o.label !== undefined) req.labels = o.label as string[];
    if (o.netns !== undefined) req.netns = o.netns as string;
    if (o.pid !== undefined) req.pid = o.pid as number;
    if (o.ipv4 !== undefined) req.ipv4 = o.ipv4 as string;
    if (o.ipv6 !== undefined) req.ipv6 = o.ipv6 as string;
    if (cmd.getOptionValueSource('defaultRoute') === 'cli') req.defaultRoute = o.defaultRoute as boolean;
    if (o.offload !== undefined) req.offload = o.offload as boolean;
    const e = await ctx.client().put<EndpointInfo>('/v1/endpoint', req);
    print(ctx, cmd, e, () => formatEndpoint(e));
  });

  withOutput(
    ep
      .command('queue')
      .argument('<id|name>', 'endpoint index or name')
      .option('--limit-bytes <size>', 'byte cap of the port\'s egress queue (e.g. 4MiB, 512KiB)')
      .option('--target <duration>', 'CoDel target sojourn time (e.g. 5ms)')
      .option('--interval <duration>', 'CoDel interval (e.g. 100ms)')
      .description('show or change the egress queue (flow-fair DRR + CoDel) of an endpoint\'s port'),
  ).action(async (id: string, o: { limitBytes?: string; target?: string; interval?: string }, cmd: Command) => {
    const patch: { limitBytes?: number; targetMs?: number; intervalMs?: number } = {};
    if (o.limitBytes !== undefined) patch.limitBytes = await sizeArg('--limit-bytes', o.limitBytes);
    if (o.target !== undefined) patch.targetMs = await durationArg('--target', o.target);
    if (o.interval !== undefined) patch.intervalMs = await durationArg('--interval', o.interval);
    const path = `${apiPath('/v1/endpoint', id)}/queue`;
    const q = Object.keys(patch).length > 0 ? await ctx.client().put<QueueSettings>(path, patch) : await ctx.client().get<QueueSettings>(path);
    print(ctx, cmd, q, () => `Endpoint ${id} egress queue: limit ${q.limitBytes} bytes, CoDel target ${q.targetMs} ms, interval ${q.intervalMs} ms\n`);
  });

  withOutput(
    ep
      .command('label')
      .argument('<id|name>', 'endpoint index or name')
      .argument('<changes...>', 'key=value to set, key- to remove (as kubectl label)')
      .description('change an endpoint\'s labels while it runs: new identity, ipcache entry and policy'),
  ).action(async (id: string, changes: string[], _o, cmd: Command) => {
    const e = await ctx.client().post<EndpointInfo>(`${apiPath('/v1/endpoint', id)}/labels`, labelChangesOrUsage(cmd, changes));
    print(ctx, cmd, e, () => formatEndpoint(e));
  });

  ep.command('delete')
    .alias('rm')
    .argument('<id|name>', 'endpoint index or name')
    .description('delete an endpoint and its TUN device')
    .action(async (id: string) => {
      await ctx.client().delete(apiPath('/v1/endpoint', id));
      ctx.out(`Endpoint ${id} deleted\n`);
    });
}

// The size and duration parsers live in src/runtime/config.ts, which loads yaml: they load
// when `endpoint queue` runs, not at start-up (test/cli/startup.test.ts).
async function sizeArg(flag: string, s: string): Promise<number> {
  const { parseBytes } = await import('../runtime/config.js');
  const b = parseBytes(s);
  if (b === null) throw new UsageError(`${flag}: "${s}" is not a size (e.g. 4MiB, 512KiB, 65536)`);
  return b;
}

async function durationArg(flag: string, s: string): Promise<number> {
  const { parseDurationMs } = await import('../runtime/config.js');
  const ms = parseDurationMs(s);
  if (ms === null) throw new UsageError(`${flag}: "${s}" is not a duration (e.g. 5ms, 100ms, 1s)`);
  return ms;
}
