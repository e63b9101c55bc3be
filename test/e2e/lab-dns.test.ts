/**
 * Lab nodes resolve each other by name through DNS, not only through hosts files: `lab up`
 * points every node's resolv.conf at the switch's DNS responder on the host port, which answers
 * NAME and NAME.<lab> from the agent's endpoints. busybox nslookup asks the DNS server only
 * (it never reads /etc/hosts), so an answer proves the responder. Pool 10.97.0.0/26, lab dk97n.
 * Needs root, ip, /dev/net/tun and busybox; in CI it fails (never skips) without them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI_MAIN, requireE2e, sh } from './helpers.js';

const LAB = 'dk97n';

test('lab DNS: nodes resolve each other by name through the switch', { timeout: 120_000 }, async (t) => {
  await requireE2e();
  const dir = mkdtempSync(join(tmpdir(), 'dk97-labdns-'));
  const file = join(dir, 'lab.yaml');
  writeFileSync(file, `name: ${LAB}\npool: { ipv4: 10.97.0.0/26 }\nworkers: 1\nnodes:\n  a: { labels: { app: a } }\n  b: { labels: { app: b }, ipv4: 10.97.0.20 }\npolicies: []\n`);
  const cli = (args: string[]): ReturnType<typeof sh> => sh(process.execPath, [CLI_MAIN, ...args], 60_000);
  t.after(async () => {
    await cli(['lab', 'down', LAB]);
    rmSync(dir, { recursive: true, force: true });
  });
  const up = await cli(['lab', 'up', file]);
  assert.equal(up.code, 0, `lab up: got exit ${up.code}, want 0: ${up.stderr.trim()}`);
  const resolv = readFileSync(`/etc/netns/${LAB}-a/resolv.conf`, 'utf8');
  assert.match(resolv, /^nameserver 10\.97\.0\.1$/m, `resolv.conf of ${LAB}-a: got ${JSON.stringify(resolv)}, want nameserver 10.97.0.1`);
  const cases: [string, string, string | null][] = [
    ['a', 'b', '10.97.0.20'],
    ['a', `b.${LAB}`, '10.97.0.20'],
    ['b', 'a', '10.97.0.2'],
    ['b', 'host', '10.97.0.1'],
    ['a', 'nobody', null],
  ];
  for (const [from, name, want] of cases) {
    const r = await cli(['lab', 'exec', LAB, from, '--', 'busybox', 'nslookup', '-type=a', name]);
    const out = `${r.stdout}${r.stderr}`.trim();
    if (want === null) {
      assert.match(out, /NXDOMAIN|can't find/i, `${from}: nslookup ${name}: got ${JSON.stringify(out)}, want NXDOMAIN`);
    } else {
      assert.ok(out.includes(`Address: ${want}`) && out.includes('10.97.0.1'), `${from}: nslookup ${name}: got ${JSON.stringify(out)}, want ${want} from server 10.97.0.1`);
    }
  }
});
