/**
 * Keeps the micro benchmark harness (bench/micro.ts) from rotting: runs the real entry point
 * in quick mode (tiny tables, tiny time budgets) in a child process and checks the JSON it
 * writes. The numbers themselves are not checked (quick-mode numbers mean nothing), only
 * their shape and internal consistency.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const entry = fileURLToPath(new URL('../../bench/micro.js', import.meta.url));

const required = [
  'parse-v4',
  'ipcache-v4-1M',
  'ipcache-v6-1M',
  'policy-lookup',
  'ct-hit',
  'ct-create',
  'pipeline-established-v4',
  'pipeline-new-flow-v4',
  'vxlan-encap-decap-v4',
  'vxlan-encap4-decap4-v4',
  'publish-100k-policy',
  'heap-growth-per-packet',
];

/** name -> target the issue sets (ns per op, or bytes per packet for the heap check). */
const targets: [string, number, string][] = [
  ['pipeline-established-v4', 150, 'ns/op'],
  ['pipeline-new-flow-v4', 600, 'ns/op'],
  ['ipcache-v4-1M', 40, 'ns/op'],
  ['ipcache-v6-1M', 40, 'ns/op'],
  ['publish-100k-policy', 1e9, 'ns/op'],
  ['heap-growth-per-packet', 1, 'bytes/packet'],
];

interface Row {
  name: string;
  nsPerOp: number;
  opsPerSec: number;
  target?: number;
  targetUnit?: string;
  meetsTarget?: boolean;
  bytesPerPacket?: number;
  samples?: number;
  error?: string;
}

test('npm run bench harness, quick mode: exit 0 and a well-formed micro.json', { timeout: 240_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'tunswitch-bench-'));
  try {
    const out = join(dir, 'micro.json');
    const r = spawnSync(process.execPath, [entry], {
      env: { ...process.env, TUNSWITCH_BENCH_QUICK: '1', TUNSWITCH_BENCH_OUT: out },
      encoding: 'utf8',
      timeout: 230_000,
    });
    assert.equal(r.status, 0, `bench exit status: got ${r.status}, want 0\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
    for (const name of required) {
      assert.ok(r.stdout.includes(name), `table on stdout: got no row for ${name}, want one`);
    }

    const rows = JSON.parse(readFileSync(out, 'utf8')) as Row[];
    assert.ok(Array.isArray(rows), `micro.json: got ${typeof rows}, want an array`);
    const names = rows.map((x) => x.name);
    for (const name of required) assert.ok(names.includes(name), `micro.json names: got ${names.join(',')}, want ${name} among them`);
    assert.equal(new Set(names).size, names.length, `micro.json names: got duplicates in ${names.join(',')}, want none`);

    for (const x of rows) {
      assert.equal(x.error, undefined, `${x.name}.error: got ${x.error}, want none`);
      assert.ok(Number.isFinite(x.nsPerOp) && x.nsPerOp > 0, `${x.name}.nsPerOp: got ${x.nsPerOp}, want a positive number`);
      assert.ok(Number.isFinite(x.opsPerSec) && x.opsPerSec > 0, `${x.name}.opsPerSec: got ${x.opsPerSec}, want a positive number`);
      // opsPerSec is derived from nsPerOp; allow for rounding of both.
      const want = 1e9 / x.nsPerOp;
      assert.ok(Math.abs(x.opsPerSec - want) <= Math.max(1, want * 0.01), `${x.name}.opsPerSec: got ${x.opsPerSec}, want ~${want}`);
      if (x.name !== 'heap-growth-per-packet') {
        assert.ok((x.samples ?? 0) >= 1, `${x.name}.samples: got ${x.samples}, want >= 1`);
      }
    }

    for (const [name, target, unit] of targets) {
      const x = rows.find((y) => y.name === name) as Row;
      assert.equal(x.target, target, `${name}.target: got ${x.target}, want ${target}`);
      assert.equal(x.targetUnit, unit, `${name}.targetUnit: got ${x.targetUnit}, want ${unit}`);
      const measured = unit === 'bytes/packet' ? (x.bytesPerPacket as number) : x.nsPerOp;
      const meets = unit === 'bytes/packet' ? measured < target : measured <= target;
      // meetsTarget is computed before rounding; only check it away from the boundary.
      if (Math.abs(measured - target) > 0.01 * target) {
        assert.equal(x.meetsTarget, meets, `${name}.meetsTarget: got ${x.meetsTarget}, want ${meets} (measured ${measured}, target ${target})`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
