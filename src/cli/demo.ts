/**
 * `tunswitch lab demo [--once] [--keep]` (what `npm start` runs, as root):
 *   1. take down a previous demo lab, if any
 *   2. bring up examples/three-tier (frontend, backend, db) plus an outside host
 *   3. start answering servers: backend :8080, db :5432 and :22, outside :80
 *   4. run the connectivity matrix and print FROM TO PORT EXPECTED GOT REASON, the reasons
 *      coming from the agent's drop and policy-verdict events
 *   5. without --once: print every flow the switch sees (observe --follow) until Ctrl-C
 *   6. take the lab down, unless --keep
 * With --once it stops after the matrix and fails if a flow disagrees with the expectation.
 */
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError, type Command } from 'commander';
import { ApiClient } from '../api/client.js';
import type { FlowEvent } from '../api/types.js';
import { formatCompact } from '../observe/format.js';
import type { ServerHandle } from '../lab/probe.js';
import type { LabState } from '../lab/state.js';
import { cliName, type CliContext } from './context.js';
import { durationParser } from './duration.js';
import { TunswitchError } from '../proto/errors.js';

/** dist/src/cli/demo.js -> examples/three-tier/lab.yaml at the repository root. */
export function demoLabFile(): string {
  return fileURLToPath(new URL('../../../examples/three-tier/lab.yaml', import.meta.url));
}

export interface DemoOptions {
  once: boolean;
  keep: boolean;
  file: string;
  /** Per-flow timeout of the matrix, ms. */
  timeoutMs: number;
}

/** Ctrl-C during the demo (caught below; never shown). */
class Interrupted extends TunswitchError {
  constructor() {
    super('EFAILED', 'interrupted');
  }
}

export async function runDemo(ctx: CliContext, o: DemoOptions): Promise<void> {
  // The lab and runtime modules load only when the demo runs (start-up of other commands).
  const { labDown, labUp } = await import('../lab/lab.js');
  const { formatMatrix, runMatrix, THREE_TIER_FLOWS, THREE_TIER_SERVERS } = await import('../lab/matrix.js');
  const { startServer } = await import('../lab/probe.js');
  const { readLabState } = await import('../lab/state.js');
  const { loadRunConfig } = await import('../runtime/config.js');
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new TunswitchError('EPERMISSION', `lab demo needs root (network namespaces and TUN devices): run "sudo npm start" or "sudo ${cliName()} lab demo"`);
  }
  const step = (msg: string): void => ctx.out(`==> ${msg}\n`);
  const detail = (msg: string): void => ctx.out(`    ${msg}\n`);
  const cfg = loadRunConfig(o.file);
  const name = cfg.name;

  // Ctrl-C: the first one ends the current phase and tears down; a second one exits at once.
  const stop = new AbortController();
  let sigints = 0;
  const onSigint = (): void => {
    sigints++;
    if (sigints > 1) {
      ctx.warn(`interrupted twice: leaving the lab as it is; "${cliName()} lab down ${name}" removes it`);
      process.exit(130);
    }
    ctx.warn('\ninterrupted: tearing down (Ctrl-C again to leave everything as it is)');
    stop.abort();
  };
  process.on('SIGINT', onSigint);
  const check = (): void => {
    if (stop.signal.aborted) throw new Interrupted();
  };

  const servers: ServerHandle[] = [];
  let mismatches = 0;
  let up = false;
  try {
    if (readLabState(name)) {
      step(`taking down the previous "${name}" lab`);
      await labDown(name, { log: detail });
    }
    check();
    step(`bringing up ${o.file}`);
    const lab: LabState = await labUp(o.file, { outside: true, log: detail });
    up = true;
    check();

    step('starting servers inside the namespaces');
    for (const [node, ports] of Object.entries(THREE_TIER_SERVERS)) {
      const ns = `${name}-${node}`;
      if (!lab.namespaces.includes(ns)) continue;
      servers.push(await startServer(ns, node, ports));
      detail(`${node}: listening on ${ports.join(', ')} (pid ${servers[servers.length - 1]?.pid})`);
    }
    check();

    step(`connectivity matrix (${THREE_TIER_FLOWS.length} flows in parallel, ${o.timeoutMs} ms each)`);
    const rows = await runMatrix(lab, THREE_TIER_FLOWS, { timeoutMs: o.timeoutMs });
    ctx.out('\n' + formatMatrix(rows) + '\n');
    mismatches = rows.filter((r) => !r.ok).length;
    step(mismatches === 0 ? `all ${rows.length} flows as expected` : `${mismatches} of ${rows.length} flows disagree with the expectation`);
    check();

    if (!o.once) {
      step('following flows (Ctrl-C to stop). In another terminal, try:');
      detail(`${cliName()} lab exec ${name} frontend -- curl -s backend:8080`);
      detail(`${cliName()} lab exec ${name} frontend -- curl -s outside:80`);
      detail(`${cliName()} lab exec ${name} db -- curl -s --max-time 2 backend:8080      (denied)`);
      detail(`tunswitch --socket ${lab.socket} endpoint list`);
      const client = new ApiClient(lab.socket);
      await client.stream(
        '/v1/events?follow=1',
        (v) => {
          ctx.out(formatCompact(v as FlowEvent) + '\n');
        },
        stop.signal,
      );
      if (!stop.signal.aborted) ctx.warn('the agent closed the event stream');
    }
  } catch (e) {
    if (!(e instanceof Interrupted)) {
      await teardown();
      throw e;
    }
  }
  await teardown();
  if (o.once && mismatches > 0) throw new TunswitchError('EFAILED', `${mismatches} flow(s) disagree with the expected verdict (see the table above)`);

  async function teardown(): Promise<void> {
    process.off('SIGINT', onSigint);
    if (o.keep && up) {
      for (const s of servers) s.release();
      step(`keeping lab "${name}" (${cliName()} lab status; ${cliName()} lab down ${name})`);
      return;
    }
    for (const s of servers) await s.stop().catch(() => undefined);
    if (readLabState(name)) {
      step(`taking lab "${name}" down`);
      await labDown(name, { log: detail });
    }
  }
}

export function registerDemo(lab: Command, ctx: CliContext): void {
  lab
    .command('demo')
    .description('the three-tier example end to end: lab up, servers, connectivity matrix, live flows, lab down (needs root)')
    .option('--once', 'stop after the matrix; exit non-zero if a flow disagrees with the expectation')
    .option('--keep', 'leave the lab (and its servers) running at the end')
    .option('-c, --config <file>', 'lab file with frontend, backend and db nodes', demoLabFile())
    .option('--timeout <duration>', 'per-flow timeout of the matrix: 1500ms, 2s (a bare number is in ms)', (s) => {
      const ms = durationParser('ms')(s);
      if (ms < 100) throw new InvalidArgumentError(`"${s}" is shorter than 100ms.`);
      return ms;
    }, 1500)
    .action(async (opts: { once?: boolean; keep?: boolean; config: string; timeout: number }) => {
      await runDemo(ctx, { once: opts.once === true, keep: opts.keep === true, file: opts.config, timeoutMs: opts.timeout });
    });
}
