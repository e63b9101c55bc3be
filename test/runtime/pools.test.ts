/**
 * Pool safety (src/runtime/pools.ts) with a private registry folder: overlapping claims are
 * refused naming the other owner, stale files (dead process) are ignored and removed, and a
 * released claim frees the prefix. Host routes are read for real; the prefixes here are from
 * TEST-NET-2/3 and the documentation IPv6 range, which no host routes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkPools, claimPools, listClaims, overlaps } from '../../src/runtime/pools.js';
import { tryParsePrefix, type Prefix } from '../../src/control/cidr.js';

const P = (s: string): Prefix => tryParsePrefix(s, false) as Prefix;

test('overlaps: containment either way, same family only', () => {
  const cases: [string, string, boolean][] = [
    ['198.51.100.0/24', '198.51.100.0/24', true],
    ['198.51.100.0/24', '198.51.100.128/25', true],
    ['198.51.100.128/25', '198.51.100.0/24', true],
    ['198.51.100.0/25', '198.51.100.128/25', false],
    ['2001:db8::/64', '2001:db8::/48', true],
    ['2001:db8:1::/64', '2001:db8:2::/64', false],
    ['0.0.0.0/0', '2001:db8::/64', false],
  ];
  for (const [a, b, want] of cases) assert.equal(overlaps(P(a), P(b)), want, `overlaps(${a}, ${b}): got ${!want}, want ${want}`);
});

test('claimPools: an overlapping claim is refused naming the owner; release frees it; stale files are removed', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tsw-pools-'));
  try {
    const a = claimPools(['198.51.100.0/24', '2001:db8:5::/64'], 'switch "a" (pid 1)', { dir });
    assert.equal(listClaims(dir).length, 1, 'one live claim');
    const refusals: [string, RegExp][] = [
      ['198.51.100.0/24', /switch "b": pool 198\.51\.100\.0\/24 overlaps 198\.51\.100\.0\/24 of switch "a" \(pid 1\)/],
      ['198.51.100.64/26', /pool 198\.51\.100\.64\/26 overlaps 198\.51\.100\.0\/24 of switch "a"/],
      ['198.51.0.0/16', /pool 198\.51\.0\.0\/16 overlaps 198\.51\.100\.0\/24/],
      ['2001:db8:5::/80', /pool 2001:db8:5::\/80 overlaps 2001:db8:5::\/64/],
    ];
    for (const [p, want] of refusals) {
      assert.throws(() => claimPools([p], 'switch "b"', { dir }), want, `claim ${p}: want an error matching ${want}`);
    }
    assert.equal(readdirSync(dir).filter((f) => f.endsWith('.json')).length, 1, 'a refused claim leaves no file');
    const b = claimPools(['203.0.113.0/24'], 'switch "c"', { dir }); // disjoint: fine
    assert.doesNotThrow(() => checkPools(['198.51.101.0/24'], 'check', { dir }), 'a disjoint prefix passes the check');
    a.release();
    assert.doesNotThrow(() => claimPools(['198.51.100.0/24'], 'switch "d"', { dir }).release(), 'after release the prefix is free');
    b.release();
    // A file whose process is gone (pid 2^22 + 1 does not exist; start time mismatch) is stale.
    const stale = join(dir, 'stale.json');
    writeFileSync(stale, JSON.stringify({ owner: 'switch "dead"', pid: 4194305, start: '1', prefixes: ['198.51.100.0/24'] }));
    assert.doesNotThrow(() => claimPools(['198.51.100.0/24'], 'switch "e"', { dir }).release(), 'a stale claim does not block');
    assert.equal(existsSync(stale), false, 'the stale file was removed');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
