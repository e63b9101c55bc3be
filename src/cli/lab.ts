/**
 * `tunswitch lab up|down|status|exec|demo`: labs of network namespaces wired to a switch,
 * like containerlab. The lab file is the `tunswitch run` config (src/runtime/config.ts);
 * each lab runs its own agent with its socket at /run/tunswitch/<name>/tunswitch.sock.
 */
import { closeSync, existsSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { InvalidArgumentError, type Command } from 'commander';
import type { LabStatus } from '../lab/lab.js';
import { DEFAULT_OUTSIDE_CIDR, parseOutsideCidr } from '../lab/outside.js';
import type { LabState } from '../lab/state.js';
import { cliName, print, withOutput, type CliContext } from './context.js';
import { registerDemo } from './demo.js';
import { formatTable } from '../text/table.js';
import { registerMatrix } from './lab-multihost.js';
import { didYouMean } from './suggest.js';
import { durationParser } from './duration.js';
import { TunswitchError, UsageError } from '../proto/errors.js';

export function formatLabNodes(s: LabState): string {
  const rows: (string | undefined)[][] = s.nodes.map((n) => [n.name, n.netns, n.ipv4, n.ipv6]);
  if (s.outside) rows.push(['outside', s.outside.netns, s.outside.addr, undefined]);
  return formatTable(['NODE', 'NAMESPACE', 'IPv4', 'IPv6'], rows) + `\nsocket ${s.socket}   log ${s.log}\n`;
}

/** `a=10.42.0.2, b=10.42.0.20`: each node with its first address. */
export function nodesText(l: Pick<LabStatus, 'nodes'>): string {
  return l.nodes.map((n) => `${n.name}=${n.ipv4 ?? n.ipv6 ?? '?'}`).join(', ') || '-';
}

export function formatLabStatus(labs: readonly LabStatus[]): string {
  if (labs.length === 0) return 'no labs\n';
  return formatTable(
    ['NAME', 'STATE', 'PID', 'ENDPOINTS', 'NODES', 'SOCKET'],
    labs.map((l) => [l.name, l.running ? 'running' : 'agent gone (lab down cleans up)', l.pid, l.endpoints ?? '-', nodesText(l), l.socket]),
  );
}

/** `lab inspect`: like `containerlab inspect`, one row per node with its namespace, addresses and state. */
export function formatLabInspect(l: LabStatus): string {
  const state = l.running ? 'running' : 'agent gone';
  const rows: (string | undefined)[][] = l.nodes.map((n) => [n.name, n.netns, n.ipv4, n.ipv6, state]);
  if (l.outside) rows.push(['outside', ...l.outside.split(' '), undefined, 'outside host']);
  return (
    `lab ${l.name}: ${state}, agent pid ${l.pid}, started ${l.startedAt}\nfile ${l.file}\nsocket ${l.socket}   log ${l.log}\n\n` +
    formatTable(['NODE', 'NAMESPACE', 'IPv4', 'IPv6', 'STATE'], rows)
  );
}

function parseCidrArg(s: string): string {
  try {
    parseOutsideCidr(s);
  } catch (e) {
    throw new InvalidArgumentError(`${(e as Error).message}.`);
  }
  return s;
}


/** Prints `file` and then what is appended to it, until Ctrl-C. */
async function followFile(file: string, out: (t: string) => void): Promise<void> {
  let pos = 0;
  const readMore = (): void => {
    const size = statSync(file).size;
    if (size < pos) pos = 0; // truncated or replaced
    if (size === pos) return;
    const fd = openSync(file, 'r');
    try {
      const buf = Buffer.alloc(size - pos);
      readSync(fd, buf, 0, buf.length, pos);
      pos = size;
      out(buf.toString('utf8'));
    } finally {
      closeSync(fd);
    }
  };
  readMore();
  await new Promise<void>((resolve) => {
    const t = setInterval(() => {
      try {
        readMore();
      } catch {
        // the lab went down: its log moved; stop following
        clearInterval(t);
        resolve();
      }
    }, 250);
    process.once('SIGINT', () => {
      clearInterval(t);
      resolve();
    });
  });
}

export function register(program: Command, ctx: CliContext): void {
  const lab = program.command('lab').description('labs: namespaces per node wired to a switch (up, down, status, inspect, logs, exec, demo)');
  // `lab exec NAME NODE cmd -x` passes -x to cmd: options after the operands belong to it.
  lab.enablePositionalOptions();

  withOutput(
    lab
      .command('up')
      .argument('<file>', 'lab file (the YAML "tunswitch run -c" reads)')
      .description('create a namespace per node, start the agent in the background, wait until every node is attached')
      .option('--outside [cidr]', `also make an "outside" host on a veth from the root namespace (default ${DEFAULT_OUTSIDE_CIDR})`, parseCidrArg)
      .option('--metrics-addr <host:port>', 'serve Prometheus /metrics there (default: none)')
      .option('--timeout <duration>', 'how long to wait for the agent: 30s, 2m (a bare number is in seconds)', durationParser('s'), 30_000),
  ).action(async (file: string, o: { outside?: string | boolean; metricsAddr?: string; timeout: number }, cmd: Command) => {
    const json = cmd.opts().output === 'json';
    const { isMultiHostLabFile } = await import('../lab/multihost-file.js');
    if (isMultiHostLabFile(file)) {
      // A lab of several hosts (src/lab/multihost.ts): one switch per host namespace, etcd, VXLAN.
      if (o.outside !== undefined || o.metricsAddr !== undefined) throw new UsageError(`${file}: --outside and --metrics-addr are for single-host labs`);
      const { multiHostUp } = await import('../lab/multihost.js');
      const { formatMultiHostUp } = await import('./lab-multihost.js');
      const m = await multiHostUp(file, { readyTimeoutMs: Math.max(o.timeout, 60_000), log: (t) => ctx.warn(t) });
      print(ctx, cmd, m, () => formatMultiHostUp(m));
      if (!json) ctx.out(`\nTry: ${cliName()} lab matrix ${m.name}    ${cliName()} --lab ${m.name}-${m.hosts[0]?.name ?? 'HOST'} node list\n`);
      return;
    }
    const { labUp } = await import('../lab/lab.js');
    const s = await labUp(file, {
      outside: o.outside ?? false,
      metricsAddr: o.metricsAddr ?? null,
      readyTimeoutMs: o.timeout,
      log: (m) => ctx.warn(m),
    });
    print(ctx, cmd, s, () => formatLabNodes(s));
    if (!json) ctx.out(`\nTry: ${cliName()} lab exec ${s.name} ${s.nodes[0]?.name ?? 'NODE'} -- ip addr\n`);
  });

  lab
    .command('down')
    .argument('<name|file>', 'lab name or lab file')
    .description('stop the agent, delete the namespaces, hosts files and devices the lab made')
    .action(async (target: string) => {
      const { multiHostTarget } = await import('../lab/multihost-file.js');
      const multi = multiHostTarget(target);
      if (multi !== null) {
        const { multiHostDown } = await import('../lab/multihost.js');
        const r = await multiHostDown(multi, { log: (m) => ctx.warn(m) });
        ctx.out(r.wasRunning ? `lab "${r.name}" is down\n` : `lab "${r.name}" was not running; removed what it left: ${r.removed.join(', ') || 'nothing'}\n`);
        return;
      }
      const { labDown } = await import('../lab/lab.js');
      const r = await labDown(target, { log: (m) => ctx.warn(m) });
      if (!r.wasRunning && r.removed.length === 0) {
        const { listLabNames } = await import('../lab/state.js');
        const hint = didYouMean(r.name, listLabNames());
        if (hint !== '') throw new TunswitchError('ELAB_NOT_RUNNING', `lab "${r.name}" is not running${hint}`);
      }
      if (r.wasRunning) ctx.out(`lab "${r.name}" is down\n`);
      else if (r.removed.length > 0) ctx.out(`lab "${r.name}" was not running; removed what it left: ${r.removed.join(', ')}\n`);
      else ctx.out(`lab "${r.name}" is not running\n`);
    });

  withOutput(lab.command('status').alias('ls').description('list labs: name, agent pid, running, endpoints, socket')).action(async (_o, cmd: Command) => {
    const { labStatus } = await import('../lab/lab.js');
    const labs = await labStatus();
    const { multiHostStatus } = await import('../lab/multihost.js');
    const multi = await multiHostStatus();
    if (multi.length === 0) print(ctx, cmd, labs, () => formatLabStatus(labs));
    else {
      const { formatMultiHostStatus } = await import('./lab-multihost.js');
      print(ctx, cmd, [...labs, ...multi], () => (labs.length > 0 ? formatLabStatus(labs) : '') + formatMultiHostStatus(multi));
    }
  });

  withOutput(lab.command('inspect').argument('<name>', 'lab name').description('nodes, namespaces, addresses and state of a lab (like containerlab inspect)')).action(
    async (name: string, _o, cmd: Command) => {
      const { labStatus } = await import('../lab/lab.js');
      const labs = await labStatus();
      const l = labs.find((x) => x.name === name);
      if (l === undefined) throw new TunswitchError('ELAB_NOT_RUNNING', `lab "${name}" is not running${didYouMean(name, labs.map((x) => x.name))}`);
      print(ctx, cmd, l, () => formatLabInspect(l));
    },
  );

  lab
    .command('logs')
    .argument('<name>', 'lab name')
    .option('-f, --follow', 'keep printing what the agent writes (a running lab)')
    .description("the lab agent's log; after lab down, the copy kept in /var/log/tunswitch/<name>.log")
    .action(async (name: string, o: { follow?: boolean }) => {
      const { keptLogPath, labPaths, listLabNames } = await import('../lab/state.js');
      const live = labPaths(name).log;
      const file = existsSync(live) ? live : keptLogPath(name);
      if (!existsSync(file)) throw new TunswitchError('ELAB_NOT_RUNNING', `no log for lab "${name}" (neither ${live} nor ${file})${didYouMean(name, listLabNames())}`);
      if (o.follow !== true) {
        ctx.out(readFileSync(file, 'utf8'));
        return;
      }
      await followFile(file, (t) => ctx.out(t));
    });

  lab
    .command('exec')
    .argument('<name>', 'lab name')
    .argument('<node>', 'node name (or "outside")')
    .argument('<command...>', 'command and its arguments (put "--" before a command with options of its own)')
    .passThroughOptions()
    .allowUnknownOption() // the program's own parse already set aside `-c1` of `ping -c1`: keep it, in order
    .description('run a command inside a node\'s namespace, with its names in /etc/hosts; the exit code is passed through')
    .action(async (name: string, node: string, argv: string[]) => {
      const { labExec } = await import('../lab/lab.js');
      const code = await labExec(name, node, argv).catch(async (e: unknown) => {
        const { listLabNames, readLabState } = await import('../lab/state.js');
        if (readLabState(name) === null && e instanceof Error) e.message += didYouMean(name, listLabNames());
        throw e;
      });
      if (code !== 0) process.exit(code);
    });

  registerDemo(lab, ctx);
  registerMatrix(lab, ctx);
}
