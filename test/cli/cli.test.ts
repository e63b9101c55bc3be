import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startApiServer, type ApiServer } from '../../src/api/server.js';
import { FakeApi } from '../api/fake-api.js';
import type { EndpointInfo } from '../../src/api/types.js';

// dist*/test/cli/cli.test.js → dist*/src/cli/main.js, whichever outDir this was built into.
const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI as a child process (asynchronously: the server answers from this process). */
function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { env: { ...process.env, TUNSWITCH_SOCKET: '', ...env } }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

function oneErrorLine(r: Run, what: string): string {
  assert.equal(r.code, 1, `${what}: got exit ${r.code} (stderr ${r.stderr}), want 1`);
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 1, `${what}: got ${lines.length} stderr lines (${r.stderr}), want 1`);
  assert.match(lines[0] as string, /^Error: /, `${what}: got ${lines[0]}, want "Error: ..."`);
  return (lines[0] as string).slice('Error: '.length);
}

/** Column start offsets of a header line (columns are separated by 2+ spaces). */
function columnStarts(header: string): number[] {
  const starts = [0];
  const re = /\s{2,}(?=\S)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(header)) !== null) starts.push(m.index + m[0].length);
  return starts;
}

describe('tunswitch CLI', () => {
  let dir: string;
  let sock: string;
  let fake: FakeApi;
  let server: ApiServer;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tsw-cli-'));
    sock = join(dir, 'tunswitch.sock');
    fake = new FakeApi(0xc11);
    server = await startApiServer(fake, { socket: sock });
  });
  after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('listing commands with -o json print what the API returns', async () => {
    const cases: { args: string[]; want: () => unknown }[] = [
      { args: ['endpoint', 'list'], want: () => fake.endpoints },
      { args: ['endpoint', 'get', fake.endpoints[0]!.name], want: () => fake.endpoints[0] },
      { args: ['endpoint', 'get', String(fake.endpoints[1]!.id)], want: () => fake.endpoints[1] },
      { args: ['identity', 'list'], want: () => fake.identities },
      { args: ['identity', 'get', String(fake.identities[2]!.id)], want: () => fake.identities[2] },
      { args: ['policy', 'get'], want: () => fake.policies },
      { args: ['policy', 'get', [...fake.docs.keys()][0]!], want: () => fake.docs.get([...fake.docs.keys()][0]!) },
      { args: ['policy', 'selectors'], want: () => fake.selectors() },
      { args: ['ipcache', 'list'], want: () => fake.ipcache },
      { args: ['ipcache', 'get', fake.endpoints[0]!.ipv4!], want: () => fake.ipcache.find((e) => e.cidr === `${fake.endpoints[0]!.ipv4}/32`) },
      { args: ['ipcache', 'get', '8.8.8.8'], want: () => null },
      { args: ['ct', 'list'], want: () => fake.ct },
      { args: ['config', 'get'], want: () => fake.config },
      { args: ['status'], want: () => fake.status() },
    ];
    for (const c of cases) {
      // Global --socket before the command, -o after it; and --socket after it too.
      for (const args of [['--socket', sock, ...c.args, '-o', 'json'], [...c.args, '--output', 'json', '--socket', sock]]) {
        const r = await cli(args);
        assert.equal(r.code, 0, `${args.join(' ')}: got exit ${r.code} (${r.stderr}), want 0`);
        assert.deepEqual(JSON.parse(r.stdout), c.want(), `${args.join(' ')}: got ${r.stdout}`);
      }
    }
  });

  test('TUNSWITCH_SOCKET picks the socket', async () => {
    const r = await cli(['endpoint', 'list', '-o', 'json'], { TUNSWITCH_SOCKET: sock });
    assert.equal(r.code, 0, `got exit ${r.code} (${r.stderr}), want 0`);
    assert.equal((JSON.parse(r.stdout) as unknown[]).length, fake.endpoints.length, `got ${r.stdout}`);
  });

  test('endpoint list table: one row per endpoint, labels on their own lines, aligned', async () => {
    const r = await cli(['--socket', sock, 'endpoint', 'list']);
    assert.equal(r.code, 0, `got exit ${r.code} (${r.stderr})`);
    const lines = r.stdout.trimEnd().split('\n');
    const header = lines[0]!;
    assert.match(header, /^ENDPOINT\s+NAME\s+POLICY \(ingress\)\s+POLICY \(egress\)\s+IDENTITY\s+LABELS\s+IPv4\s+IPv6\s+OFFLOAD\s+STATUS$/, `got header ${header}`);
    const wantLines = 1 + fake.endpoints.reduce((n, e) => n + Math.max(1, e.labels.length), 0);
    assert.equal(lines.length, wantLines, `got ${lines.length} lines, want ${wantLines}:\n${r.stdout}`);
    const starts = columnStarts(header);
    const nameCol = starts[1]!;
    const idCol = starts[4]!;
    const labelCol = starts[5]!;
    let i = 1;
    for (const e of fake.endpoints) {
      const row = lines[i]!;
      assert.ok(row.startsWith(String(e.id)), `row ${i}: got ${row}, want it to start with ${e.id}`);
      assert.equal(row.slice(nameCol, nameCol + e.name.length), e.name, `row ${i}: got name column ${row.slice(nameCol)}, want ${e.name}`);
      assert.equal(row.slice(idCol).split(/\s+/)[0], String(e.identity), `row ${i}: got identity column ${row.slice(idCol)}, want ${e.identity}`);
      for (let k = 0; k < e.labels.length; k++) {
        const l = lines[i + k]!;
        assert.equal(l.slice(labelCol, labelCol + e.labels[k]!.length), e.labels[k], `row ${i}+${k}: got ${l.slice(labelCol)}, want ${e.labels[k]}`);
      }
      i += Math.max(1, e.labels.length);
    }
  });

  test('tables for people contain the values', async () => {
    const ct = fake.ct[0]!;
    const cases: { args: string[]; want: RegExp[] }[] = [
      { args: ['status'], want: [/^Name:\s+demo$/m, /^Uptime:\s+1h 2m 5s$/m, new RegExp(`^Endpoints:\\s+${fake.endpoints.length}$`, 'm'), /^Packets:\s+forwarded 1234, dropped 56$/m] },
      { args: ['identity', 'list'], want: [/^ID\s+KIND\s+REFS\s+LABELS$/m, /^1\s+reserved\s+1\s+reserved:host$/m] },
      { args: ['ipcache', 'list'], want: [/^PREFIX\s+IDENTITY\s+SOURCE\s+TUNNEL\s+ALSO CLAIMED BY$/m, /^192\.168\.0\.0\/16\s+16777217\s+cidr-policy\s+172\.16\.0\.2$/m] },
      { args: ['ipcache', 'get', '8.8.8.8'], want: [/^8\.8\.8\.8: no prefix matches \(treated as world, identity 2\)$/m] },
      { args: ['ipcache', 'get', '192.168.1.1'], want: [/^Prefix:\s+192\.168\.0\.0\/16$/m, /^Identity:\s+16777217$/m] },
      { args: ['ct', 'list'], want: [/^SHARD\s+PROTO\s+SOURCE\s+DESTINATION\s+STATE\s+EXPIRES/m, new RegExp(`${ct.src.replace(/\./g, '\\.')}\\s+${ct.dst.replace(/\./g, '\\.')}\\s+${ct.state}\\s+${ct.expiresIn}s`)] },
      { args: ['config', 'get'], want: [/^KEY\s+VALUE$/m, /^audit\s+off$/m, /^enforcement\s+default$/m] },
      { args: ['policy', 'get'], want: [/^NAME\s+NAMESPACE\s+KIND\s+RULES\s+REVISION\s+SOURCE$/m, new RegExp(`^${fake.policies[0]!.name}\\s`, 'm')] },
      { args: ['policy', 'get', [...fake.docs.keys()][0]!], want: [/^apiVersion: cilium\.io\/v2$/m, /^kind: CiliumNetworkPolicy$/m] },
      { args: ['endpoint', 'get', fake.endpoints[0]!.name], want: [new RegExp(`^Name:\\s+${fake.endpoints[0]!.name}$`, 'm'), new RegExp(`^Identity:\\s+${fake.endpoints[0]!.identity}$`, 'm')] },
    ];
    for (const c of cases) {
      const r = await cli(['--socket', sock, ...c.args]);
      assert.equal(r.code, 0, `${c.args.join(' ')}: got exit ${r.code} (${r.stderr}), want 0`);
      for (const w of c.want) assert.match(r.stdout, w, `${c.args.join(' ')}: got\n${r.stdout}\nwant ${w}`);
    }
  });

  test('endpoint add and delete send the right requests', async () => {
    const r = await cli(['--socket', sock, 'endpoint', 'add', 'cli-ep', '--label', 'app=web', '-l', 'k8s:tier=front', '--netns', 'demo-x', '--ipv4', '10.42.9.9', '--no-default-route', '-o', 'json']);
    assert.equal(r.code, 0, `add: got exit ${r.code} (${r.stderr})`);
    const call = fake.calls.filter((c) => c[0] === 'addEndpoint').at(-1);
    assert.deepEqual(call?.[1], { name: 'cli-ep', labels: ['app=web', 'k8s:tier=front'], netns: 'demo-x', ipv4: '10.42.9.9', defaultRoute: false }, `got ${JSON.stringify(call?.[1])}`);
    assert.equal((JSON.parse(r.stdout) as EndpointInfo).name, 'cli-ep', `got ${r.stdout}`);

    const r1 = await cli(['--socket', sock, 'endpoint', 'add', 'cli-ep2', '--pid', '4242']);
    assert.equal(r1.code, 0, `add --pid: got exit ${r1.code} (${r1.stderr})`);
    assert.deepEqual(fake.calls.filter((c) => c[0] === 'addEndpoint').at(-1)?.[1], { name: 'cli-ep2', pid: 4242 }, 'add --pid: got another request');

    const dup = await cli(['--socket', sock, 'endpoint', 'add', 'cli-ep', '--netns', 'demo-x']);
    assert.equal(oneErrorLine(dup, 'add duplicate'), 'endpoint "cli-ep" already exists', `got ${dup.stderr}`);

    for (const name of ['cli-ep', 'cli-ep2']) {
      const d = await cli(['--socket', sock, 'endpoint', 'delete', name]);
      assert.equal(d.code, 0, `delete ${name}: got exit ${d.code} (${d.stderr})`);
      assert.equal(d.stdout, `Endpoint ${name} deleted\n`, `got ${d.stdout}`);
      assert.ok(!fake.endpoints.some((e) => e.name === name), `got ${name} still present`);
    }
  });

  test('errors: one line on stderr, exit 1; usage errors exit 2', async () => {
    const notFound = await cli(['--socket', sock, 'endpoint', 'get', 'ghost']);
    assert.equal(oneErrorLine(notFound, 'get ghost'), 'endpoint "ghost" not found');
    assert.equal(notFound.stdout, '', `got stdout ${notFound.stdout}, want none`);

    const noId = await cli(['--socket', sock, 'identity', 'get', '4000000']);
    assert.equal(oneErrorLine(noId, 'identity get'), 'identity 4000000 not found');

    const gone = join(dir, 'nobody-home.sock');
    for (const args of [['endpoint', 'list'], ['status'], ['metrics'], ['ct', 'flush']]) {
      const r = await cli(['--socket', gone, ...args]);
      assert.equal(oneErrorLine(r, args.join(' ')), `cannot reach tunswitch at ${gone}: is "tunswitch run" running?`);
    }

    const n = fake.calls.length;
    const badCfg: [string[], string][] = [
      [['color=blue'], 'config key "color" is unknown (keys: audit, enforcement, cidrMatchPods)'],
      [['audit=maybe'], 'config audit: "maybe" is not on or off'],
      [['enforcement=sometimes'], 'config enforcement: "sometimes" is not one of default, always, never'],
      [['audit'], 'config "audit": expected key=value (keys: audit, enforcement, cidrMatchPods)'],
    ];
    for (const [pairs, want] of badCfg) {
      const r = await cli(['--socket', sock, 'config', 'set', ...pairs]);
      assert.equal(oneErrorLine(r, `config set ${pairs.join(' ')}`), want);
    }
    assert.equal(fake.calls.length, n, `got ${fake.calls.length - n} api calls for bad config, want 0`);

    const usage: string[][] = [
      ['endpointz'],
      ['endpoint', 'list', '-o', 'xml'],
      ['endpoint', 'get'],
      ['endpoint', 'add', 'x', '--netns', 'a', '--pid', '1'],
      ['endpoint', 'add', 'x', '--pid', 'abc'],
      ['endpoint', 'add', 'x', '--ipv4', '1.2.3'],
      ['identity', 'get', 'web'],
      ['ipcache', 'get', 'nope'],
      ['policy', 'delete'],
      ['policy', 'delete', 'a', '--all'],
      ['config', 'set'],
      ['--bogus'],
    ];
    for (const args of usage) {
      const r = await cli(['--socket', sock, ...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: got exit ${r.code} (${r.stderr}), want 2`);
      assert.match(r.stderr, /^Error: \S/, `${args.join(' ')}: got stderr ${r.stderr}, want "Error: ..."`);
      assert.equal(r.stderr.trimEnd().split('\n').length, 1, `${args.join(' ')}: got stderr ${r.stderr}, want one line`);
    }
    const help = await cli(['--help']);
    assert.equal(help.code, 0, `--help: got exit ${help.code}`);
    for (const cmd of ['status', 'endpoint', 'identity', 'policy', 'ipcache', 'ct', 'config', 'metrics']) {
      assert.match(help.stdout, new RegExp(`^  ${cmd}\\b`, 'm'), `--help: got no ${cmd} command`);
    }
  });

  test('policy import sends each file (folders expanded) and validate works offline', async () => {
    const pdir = join(dir, 'policies');
    await mkdir(join(pdir, 'sub'), { recursive: true });
    const good = (name: string): string =>
      `apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: ${name}\nspec:\n  endpointSelector:\n    matchLabels:\n      app: web\n  ingress:\n  - fromEndpoints:\n    - matchLabels:\n        app: db\n`;
    await writeFile(join(pdir, 'b.yaml'), good('pol-b'));
    await writeFile(join(pdir, 'a.yml'), good('pol-a'));
    await writeFile(join(pdir, 'sub', 'c.json'), JSON.stringify({ apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'pol-c' }, spec: { endpointSelector: {} } }));
    await writeFile(join(pdir, 'README.md'), 'not a policy');
    const single = join(dir, 'single.yaml');
    await writeFile(single, good('pol-s'));

    const before = fake.calls.length;
    const r = await cli(['--socket', sock, 'policy', 'import', single, pdir]);
    assert.equal(r.code, 0, `import: got exit ${r.code} (${r.stderr})`);
    const calls = fake.calls.slice(before).filter((c) => c[0] === 'importPolicies');
    assert.equal(calls.length, 1, `got ${calls.length} import requests, want 1 (every file in one request)`);
    const sent = (calls[0] as unknown[]).filter((_x, i) => i > 0 && i % 2 === 0);
    const wantFiles = [single, join(pdir, 'a.yml'), join(pdir, 'b.yaml'), join(pdir, 'sub', 'c.json')];
    assert.deepEqual(sent, wantFiles, `got files ${JSON.stringify(sent)}, want ${JSON.stringify(wantFiles)}`);
    assert.match(r.stdout, new RegExp(`^Revision: ${fake.revision}$`, 'm'), `got ${r.stdout}, want Revision: ${fake.revision}`);
    assert.match(r.stdout, /single\.yaml: 1 policy \(pol-s\)/, `got ${r.stdout}`);

    const missing = await cli(['--socket', sock, 'policy', 'import', join(dir, 'nope.yaml')]);
    assert.equal(oneErrorLine(missing, 'import missing'), `${join(dir, 'nope.yaml')}: no such file or folder`);

    const empty = join(dir, 'empty');
    await mkdir(empty);
    const e = await cli(['--socket', sock, 'policy', 'import', empty]);
    assert.equal(oneErrorLine(e, 'import empty'), `${empty}: no .yaml, .yml or .json files in this folder`);

    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, 'INVALID\n');
    const ri = await cli(['--socket', sock, 'policy', 'import', bad]);
    assert.equal(oneErrorLine(ri, 'import invalid'), `${bad}: policy "x" spec: is required`);

    // A file with no policies is refused before anything is sent, unless --allow-empty.
    const nothing = join(dir, 'nothing.yaml');
    await writeFile(nothing, '# every policy commented out\n');
    const callsBefore = fake.calls.length;
    const rn = await cli(['--socket', sock, 'policy', 'import', single, nothing]);
    assert.equal(oneErrorLine(rn, 'import no policies'), `${nothing}: contains no policies (pass --allow-empty to accept it)`);
    assert.equal(fake.calls.length, callsBefore, `import no policies: got ${fake.calls.length - callsBefore} API calls, want 0`);
    const ra = await cli(['--socket', sock, 'policy', 'import', '--allow-empty', nothing]);
    assert.equal(ra.code, 0, `import --allow-empty: got exit ${ra.code} (${ra.stderr}), want 0`);

    // Offline validate: no agent at this socket.
    const gone = join(dir, 'gone.sock');
    const v = await cli(['--socket', gone, 'policy', 'validate', pdir]);
    assert.equal(v.code, 0, `validate: got exit ${v.code} (${v.stderr})`);
    assert.match(v.stdout, /a\.yml: valid \(pol-a\)/, `got ${v.stdout}`);
    assert.match(v.stdout, /c\.json: valid \(pol-c\)/, `got ${v.stdout}`);
    const vj = await cli(['--socket', gone, 'policy', 'validate', single, '-o', 'json']);
    assert.deepEqual(JSON.parse(vj.stdout), [{ file: single, valid: true, policies: ['pol-s'] }], `got ${vj.stdout}`);

    const broken = join(dir, 'broken.yaml');
    await writeFile(broken, good('pol-x').replace('endpointSelector', 'endpointSelektor'));
    const vb = await cli(['--socket', gone, 'policy', 'validate', broken]);
    const msg = oneErrorLine(vb, 'validate broken');
    assert.ok(msg.startsWith(`${broken}: `), `got ${msg}, want it to name ${broken}`);
    assert.match(msg, /endpointSelektor/, `got ${msg}, want it to name the field`);

    const va = await cli(['--socket', sock, 'policy', 'validate', '--agent', single]);
    assert.equal(va.code, 0, `validate --agent: got exit ${va.code} (${va.stderr})`);
    assert.equal(fake.calls.at(-1)?.[0], 'validatePolicies', `validate --agent: got call ${JSON.stringify(fake.calls.at(-1))}`);
  });

  test('policy delete one and --all; ct flush; config set', async () => {
    const name = [...fake.docs.keys()][0]!;
    const d1 = await cli(['--socket', sock, 'policy', 'delete', name]);
    assert.equal(d1.code, 0, `delete: got ${d1.code} (${d1.stderr})`);
    assert.match(d1.stdout, new RegExp(`^Deleted ${name.replace('/', '\\/')}\\nRevision: ${fake.revision}\\n$`), `got ${d1.stdout}`);
    const left = [...fake.docs.keys()];
    const d2 = await cli(['--socket', sock, 'policy', 'delete', '--all', '-o', 'json']);
    assert.deepEqual(JSON.parse(d2.stdout), { revision: fake.revision, policies: left }, `got ${d2.stdout}`);

    const n = fake.ct.length;
    const f = await cli(['--socket', sock, 'ct', 'flush']);
    assert.equal(f.stdout, `Flushed ${n} ${n === 1 ? 'entry' : 'entries'}\n`, `got ${f.stdout}`);

    const cases: [string[], object][] = [
      [['audit=on'], { audit: true }],
      [['enforcement=always', 'audit=off'], { enforcement: 'always', audit: false }],
      [['audit=true'], { audit: true }],
    ];
    for (const [pairs, want] of cases) {
      const r = await cli(['--socket', sock, 'config', 'set', ...pairs, '-o', 'json']);
      assert.equal(r.code, 0, `config set ${pairs}: got ${r.code} (${r.stderr})`);
      assert.deepEqual(fake.calls.at(-1), ['setConfig', want], `config set ${pairs}: got ${JSON.stringify(fake.calls.at(-1))}`);
      assert.deepEqual(JSON.parse(r.stdout), fake.config, `got ${r.stdout}`);
    }
  });

  test('metrics: only cilium_* and tunswitch_* series', async () => {
    const r = await cli(['--socket', sock, 'metrics', '-o', 'json']);
    assert.equal(r.code, 0, `got ${r.code} (${r.stderr})`);
    const obj = JSON.parse(r.stdout) as Record<string, { labels: Record<string, string>; value: number }[]>;
    const names = Object.keys(obj).sort();
    assert.deepEqual(names, ['cilium_drop_count_total', 'cilium_forward_count_total', 'tunswitch_batch_seconds', 'tunswitch_worker_restarts_total'], `got ${names}`);
    assert.equal(obj.cilium_drop_count_total!.length, 2, `got ${JSON.stringify(obj.cilium_drop_count_total)}`);
    assert.deepEqual(obj.cilium_drop_count_total![0]!.labels, { direction: 'INGRESS', reason: 'Policy denied' }, 'got other labels');
    const t = await cli(['--socket', sock, 'metrics', '--match', 'drop']);
    const lines = t.stdout.trimEnd().split('\n');
    assert.match(lines[0]!, /^METRIC\s+LABELS\s+VALUE$/, `got ${lines[0]}`);
    assert.equal(lines.length, 3, `got ${t.stdout}, want header + 2 rows`);
    assert.match(lines[1]!, /^cilium_drop_count_total\s+direction="INGRESS" reason="Policy denied"\s+\d+$/, `got ${lines[1]}`);
  });
});
