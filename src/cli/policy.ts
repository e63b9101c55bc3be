/**
 * `tunswitch policy import|get|delete|validate|selectors`, like `cilium policy`.
 *
 * import and validate take files or folders (every .yaml, .yml and .json inside, recursively,
 * in name order). validate parses locally, so it works without a running agent; `--agent`
 * asks the agent instead (the same checks, against the agent's version).
 */
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { apiPath } from '../api/client.js';
import type { PolicyImportResult, PolicyInfo } from '../api/types.js';
import type { PolicyImportRequest, PolicyTextRequest } from '../api/extra-types.js';
import { TunswitchError } from '../control/errors.js';
import { expandPolicyPaths } from '../control/policy/files.js';

export { expandPolicyPaths };
import { print, withOutput, type CliContext } from './context.js';
import { formatTable } from '../text/table.js';

async function readText(file: string): Promise<string> {
  try {
    const bytes = await readFile(file);
    const { decodePolicyBytes } = await import('../control/policy/parse.js'); // loaded only when needed
    return decodePolicyBytes(bytes, file);
  } catch (e) {
    if (e instanceof TunswitchError) throw e;
    throw new TunswitchError('EBAD_REQUEST', `${file}: cannot read: ${(e as Error).message}`);
  }
}

export function formatPolicies(ps: readonly PolicyInfo[]): string {
  return formatTable(
    ['NAME', 'NAMESPACE', 'KIND', 'RULES', 'REVISION', 'SOURCE'],
    ps.map((p) => [p.name, p.namespace, p.kind, p.rules, p.revision, p.source]),
  );
}

interface ValidateResult {
  file: string;
  valid: boolean;
  policies?: string[];
  error?: string;
}

export function register(program: Command, ctx: CliContext): void {
  const pol = program.command('policy').description('manage network policies (CiliumNetworkPolicy)');

  withOutput(
    pol
      .command('import')
      .argument('<files...>', 'policy files or folders')
      .option('--allow-empty', 'accept a file that contains no policies (otherwise an error)')
      .description('add or replace policies'),
  ).action(
    async (paths: string[], o: { allowEmpty?: boolean }, cmd: Command) => {
      const files = await expandPolicyPaths(paths);
      // Read everything first: a missing file should not leave half the set imported.
      const texts = await Promise.all(files.map(readText));
      const allowEmpty = o.allowEmpty === true;
      if (!allowEmpty) {
        // An empty file is refused before anything is imported (parse errors are left to the agent).
        const { parsePolicyFile } = await import('../control/policy/parse.js'); // yaml loads only here
        files.forEach((f, i) => {
          let n = -1;
          try {
            n = parsePolicyFile(texts[i] as string, f).length;
          } catch {
            n = -1;
          }
          if (n === 0) throw new TunswitchError('EPOLICY_INVALID', `${f}: contains no policies (pass --allow-empty to accept it)`);
        });
      }
      // One request: the switch imports every file or none, in one revision.
      const body: PolicyImportRequest = { files: files.map((f, i) => ({ text: texts[i] as string, fileName: f })) };
      if (allowEmpty) body.allowEmpty = true;
      const r = await ctx.client().put<PolicyImportResult>('/v1/policy', body);
      const results = (r.files ?? []).map((f) => ({ file: f.fileName, revision: r.revision, policies: f.policies }));
      print(ctx, cmd, results, () => {
        const lines = results.map((r) => `${r.file}: ${r.policies.length} ${r.policies.length === 1 ? 'policy' : 'policies'}${r.policies.length ? ` (${r.policies.join(', ')})` : ''}`);
        const last = results[results.length - 1];
        if (last) lines.push(`Revision: ${last.revision}`);
        return lines.join('\n') + '\n';
      });
    },
  );

  withOutput(pol.command('get').argument('[name]', 'one policy (its stored document)').description('list policies, or show one')).action(
    async (name: string | undefined, _o, cmd: Command) => {
      if (name === undefined) {
        const ps = await ctx.client().get<PolicyInfo[]>('/v1/policy');
        print(ctx, cmd, ps, () => formatPolicies(ps));
        return;
      }
      const doc = await ctx.client().get<unknown>(apiPath('/v1/policy', name));
      const { stringify: toYaml } = await import('yaml');
      print(ctx, cmd, doc, () => toYaml(doc));
    },
  );

  withOutput(
    pol
      .command('delete')
      .argument('[name]', 'the policy to delete')
      .option('--all', 'delete every policy')
      .description('delete a policy, or all of them'),
  ).action(async (name: string | undefined, o: { all?: boolean }, cmd: Command) => {
    if ((name === undefined) === (o.all !== true)) {
      cmd.error('give either a policy name or --all', { exitCode: 2, code: 'tunswitch.usage' });
    }
    const r =
      name === undefined
        ? await ctx.client().delete<PolicyImportResult>('/v1/policy')
        : await ctx.client().delete<PolicyImportResult>(apiPath('/v1/policy', name));
    print(ctx, cmd, r, () => `Deleted ${r.policies.length ? r.policies.join(', ') : 'no policies'}\nRevision: ${r.revision}\n`);
  });

  withOutput(
    pol
      .command('validate')
      .argument('<files...>', 'policy files or folders')
      .option('--agent', 'validate through the running agent instead of locally')
      .description('check policy files without importing them'),
  ).action(async (paths: string[], o: { agent?: boolean }, cmd: Command) => {
    const files = await expandPolicyPaths(paths);
    const { parsePolicyFile } = await import('../control/policy/parse.js');
    const results: ValidateResult[] = [];
    for (const file of files) {
      const text = await readText(file);
      try {
        let names: string[];
        if (o.agent === true) {
          const body: PolicyTextRequest = { text, fileName: file };
          names = (await ctx.client().post<{ policies: string[] }>('/v1/policy/validate', body)).policies;
        } else {
          names = parsePolicyFile(text, file).map((p) => (p.namespace ? `${p.namespace}/${p.name}` : p.name));
        }
        results.push({ file, valid: true, policies: names });
      } catch (e) {
        // Only policy errors are per-file findings; anything else (agent unreachable) stops here.
        const code = (e as { code?: unknown }).code;
        if (code !== 'EPOLICY_INVALID') throw e;
        results.push({ file, valid: false, error: (e as Error).message.split('\n')[0] as string });
      }
    }
    print(ctx, cmd, results, () =>
      results
        .filter((r) => r.valid)
        .map((r) => `${r.file}: valid (${(r.policies as string[]).join(', ') || 'no policies'})\n`)
        .join(''),
    );
    const bad = results.filter((r) => !r.valid);
    if (bad.length > 0) {
      if (cmd.opts().output !== 'json') for (const r of bad.slice(0, -1)) ctx.warn(`Error: ${r.error}`);
      throw new TunswitchError('EPOLICY_INVALID', (bad[bad.length - 1] as ValidateResult).error as string);
    }
  });

  withOutput(
    pol
      .command('trace')
      .description('the verdict for a flow without sending traffic: the lookups that matched and the rule that decided')
      .option('--src-endpoint <name>', 'source endpoint (name or id)')
      .option('--src-label <k=v>', 'source labels (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
      .option('--src-ip <ip>', 'source address')
      .option('--dst-endpoint <name>', 'destination endpoint (name or id)')
      .option('--dst-label <k=v>', 'destination labels (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
      .option('--dst-ip <ip>', 'destination address (looked up in the ipcache)')
      .requiredOption('--dport <port/proto>', 'destination port and protocol, e.g. 80/TCP, 53/UDP, 8/ICMP'),
  ).action(async (o: Record<string, unknown>, cmd: Command) => {
    const end = (p: 'src' | 'dst'): Record<string, unknown> => {
      const e: Record<string, unknown> = {};
      if (o[`${p}Endpoint`] !== undefined) e.endpoint = o[`${p}Endpoint`];
      if (o[`${p}Label`] !== undefined) e.labels = o[`${p}Label`];
      if (o[`${p}Ip`] !== undefined) e.ip = o[`${p}Ip`];
      if (Object.keys(e).length !== 1) throw new TunswitchError('EBAD_REQUEST', `give exactly one of --${p}-endpoint, --${p}-label, --${p}-ip`);
      return e;
    };
    const body = { src: end('src'), dst: end('dst'), dport: o.dport };
    type Step = { direction: string; endpoint: string; result: string; match: string; rule: { name?: string; rule_index?: number } | null; reason?: string };
    type Considered = { source: string; source_identity: number; destination: string; destination_identity: number; verdict: string };
    type Trace = { source: { name: string; identity: number }; destination: { name: string; identity: number }; protocol: string; port: number; verdict: string; drop_reason_desc?: string; drop_reason?: number; steps: Step[]; notes: string[]; considered?: Considered[] };
    const r = await ctx.client().post<Trace>('/v1/policy/trace', body);
    print(ctx, cmd, r, () => {
      const head = `${r.source.name} (ID:${r.source.identity}) -> ${r.destination.name} (ID:${r.destination.identity}) ${r.port}/${r.protocol}\n`;
      const rows = r.steps.map((s) => [
        s.direction,
        s.endpoint,
        s.result,
        s.match,
        s.rule && s.rule.name ? `${s.rule.name}[${s.rule.rule_index}]` : '-',
        s.reason ?? '',
      ]);
      const table = formatTable(['DIRECTION', 'ENDPOINT', 'RESULT', 'MATCH', 'RULE', 'WHY'], rows);
      const verdict = `Final verdict: ${r.verdict}${r.drop_reason ? ` (${r.drop_reason} ${r.drop_reason_desc})` : ''}\n`;
      const notes = r.notes.map((n) => `note: ${n}\n`).join('');
      const considered = r.considered
        ? 'Identities considered (labels select by subset):\n' +
          formatTable(
            ['SOURCE', 'DESTINATION', 'VERDICT'],
            r.considered.map((c) => [`${c.source} (ID:${c.source_identity})`, `${c.destination} (ID:${c.destination_identity})`, c.verdict]),
          )
        : '';
      return head + table + notes + considered + verdict;
    });
  });

  withOutput(pol.command('selectors').description('list the selectors in use and the identities each selects')).action(
    async (_o, cmd: Command) => {
      const sels = await ctx.client().get<{ selector: string; identities: number[]; ports?: Record<string, number[]> }[]>('/v1/policy/selectors');
      // Named ports show the numbers they resolve to on each identity ("300: 80").
      const ids = (s: (typeof sels)[number]): string[] => s.identities.map((i) => (s.ports ? `${i}: ${(s.ports[String(i)] ?? []).join(',')}` : String(i)));
      print(ctx, cmd, sels, () => formatTable(['SELECTOR', 'IDENTITIES'], sels.map((s) => [s.selector, ids(s)])));
    },
  );
}
