/** `tunswitch config get|set key=value...`: the agent settings that can change at run time. */
import type { Command } from 'commander';
import type { AgentConfig } from '../api/types.js';
import { TunswitchError } from '../control/errors.js';
import { print, withOutput, type CliContext } from './context.js';
import { formatTable } from '../text/table.js';

const BOOL_WORDS: Readonly<Record<string, boolean>> = { on: true, off: false, true: true, false: false };
const ENFORCEMENT = ['default', 'always', 'never'] as const;
const KEYS = ['audit', 'enforcement', 'cidrMatchPods'] as const;

/** Parses `key=value` words into a config patch; a bad key or value is ECONFIG_INVALID naming it. */
export function parseConfigPairs(pairs: readonly string[]): Partial<AgentConfig> {
  const patch: Partial<AgentConfig> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new TunswitchError('ECONFIG_INVALID', `config "${pair}": expected key=value (keys: ${KEYS.join(', ')})`);
    const key = pair.slice(0, eq);
    const value = pair.slice(eq + 1);
    if (key === 'audit') {
      const b = BOOL_WORDS[value.toLowerCase()];
      if (b === undefined) throw new TunswitchError('ECONFIG_INVALID', `config audit: "${value}" is not on or off`);
      patch.audit = b;
    } else if (key === 'cidrMatchPods') {
      const b = BOOL_WORDS[value.toLowerCase()];
      if (b === undefined) throw new TunswitchError('ECONFIG_INVALID', `config cidrMatchPods: "${value}" is not on or off`);
      patch.cidrMatchPods = b;
    } else if (key === 'enforcement') {
      if (!(ENFORCEMENT as readonly string[]).includes(value)) {
        throw new TunswitchError('ECONFIG_INVALID', `config enforcement: "${value}" is not one of ${ENFORCEMENT.join(', ')}`);
      }
      patch.enforcement = value as AgentConfig['enforcement'];
    } else {
      throw new TunswitchError('ECONFIG_INVALID', `config key "${key}" is unknown (keys: ${KEYS.join(', ')})`);
    }
  }
  return patch;
}

export function formatConfig(c: AgentConfig): string {
  return formatTable(
    ['KEY', 'VALUE'],
    [
      ['audit', c.audit ? 'on' : 'off'],
      ['enforcement', c.enforcement],
      ['cidrMatchPods', c.cidrMatchPods === true ? 'on' : 'off'],
    ],
  );
}

export function register(program: Command, ctx: CliContext): void {
  const cfg = program.command('config').description('show or change agent settings');

  withOutput(cfg.command('get').description('show the settings')).action(async (_o, cmd: Command) => {
    const c = await ctx.client().get<AgentConfig>('/v1/config');
    print(ctx, cmd, c, () => formatConfig(c));
  });

  withOutput(
    cfg
      .command('set')
      .argument('<key=value...>', `settings: audit=on|off, enforcement=${ENFORCEMENT.join('|')}, cidrMatchPods=on|off`)
      .description('change settings'),
  ).action(async (pairs: string[], _o, cmd: Command) => {
    const patch = parseConfigPairs(pairs);
    const c = await ctx.client().patch<AgentConfig>('/v1/config', patch);
    print(ctx, cmd, c, () => formatConfig(c));
  });
}
