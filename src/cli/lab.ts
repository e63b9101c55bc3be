/**
 * `tunswitch lab up|down|status|exec|demo`: labs of network namespaces wired to a switch,
 * like containerlab. The lab file is the `tunswitch run` config (src/runtime/config.ts);
 * each lab runs its own agent with its socket at /run/tunswitch/<name>/tunswitch.sock.
 */
import { InvalidArgumentError, type Command } from 'commander';
import type { LabStatus } from '../lab/lab.js';
import { DEFAULT_OUTSIDE_CIDR, parseOutsideCidr } from '../lab/outside.js';
import type { LabState } from '../lab/state.js';
import { cliName, print, withOutput, type CliContext } from './context.js';
import { registerDemo } from './demo.js';
import { formatTable } from './table.js';
import { didYouMean } from './suggest.js';

export function formatLabNodes(s: LabState): string {
  const rows: (string | undefined)[][] = s.nodes.map((n) => [n.name, n.netns, n.ipv4, n.ipv6]);
  if (s.outside) rows.push(['outside', s.outside.netns, s.outside.addr, undefined]);
  return formatTable(['NODE', 'NAMESPACE', 'IPv4', 'IPv6'], rows) + `\nsocket ${s.socket}   log ${s.log}\n`;
}

export function formatLabStatus(labs: readonly LabStatus[]): string {
  if (labs.length === 0) return 'no labs\n';
  return formatTable(
    ['NAME', 'PID', 'RUNNING', 'ENDPOINTS', 'SOCKET', 'FILE'],
    labs.map((l) => [l.name, l.pid, l.running ? 'yes' : 'no (agent gone; lab down cleans up)', l.endpoints ?? '-', l.socket, l.file]),
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

function parseSeconds(s: string): number {
  if (!/^\d+$/.test(s) || Number(s) < 1) throw new InvalidArgumentError(`"${s}" is not a number of seconds.`);
  return Number(s);
}

export function register(program: Command, ctx: CliContext): void {
  const lab = program.command('lab').description('labs: namespaces per node wired to a switch (up, down, status, exec, demo)');
  // `lab exec NAME NODE cmd -x` passes -x to cmd: options after the operands belong to it.
  lab.enablePositionalOptions();

  withOutput(
    lab
      .command('up')
      .argument('<file>', 'lab file (the YAML "tunswitch run -c" reads)')
      .description('create a namespace per node, start the agent in the background, wait until every node is attached')
      .option('--outside [cidr]', `also make an "outside" host on a veth from the root namespace (default ${DEFAULT_OUTSIDE_CIDR})`, parseCidrArg)
      .option('--metrics-addr <host:port>', 'serve Prometheus /metrics there (default: none)')
      .option('--timeout <seconds>', 'how long to wait for the agent', parseSeconds, 30),
  ).action(async (file: string, o: { outside?: string | boolean; metricsAddr?: string; timeout: number }, cmd: Command) => {
    const json = cmd.opts().output === 'json';
    const { labUp } = await import('../lab/lab.js');
    const s = await labUp(file, {
      outside: o.outside ?? false,
      metricsAddr: o.metricsAddr ?? null,
      readyTimeoutMs: o.timeout * 1000,
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
      const { labDown } = await import('../lab/lab.js');
      const r = await labDown(target, { log: (m) => ctx.warn(m) });
      if (!r.wasRunning && r.removed.length === 0) {
        const { listLabNames } = await import('../lab/state.js');
        const hint = didYouMean(r.name, listLabNames());
        if (hint !== '') throw new Error(`lab "${r.name}" is not running${hint}`);
      }
      if (r.wasRunning) ctx.out(`lab "${r.name}" is down\n`);
      else if (r.removed.length > 0) ctx.out(`lab "${r.name}" was not running; removed what it left: ${r.removed.join(', ')}\n`);
      else ctx.out(`lab "${r.name}" is not running\n`);
    });

  withOutput(lab.command('status').alias('ls').description('list labs: name, agent pid, running, endpoints, socket')).action(async (_o, cmd: Command) => {
    const { labStatus } = await import('../lab/lab.js');
    const labs = await labStatus();
    print(ctx, cmd, labs, () => formatLabStatus(labs));
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
}
