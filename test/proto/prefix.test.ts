import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatPrefix, makePrefix, prefixContains, prefixOrReason, tryParsePrefix, type Prefix } from '../../src/proto/prefix.js';
import { parsePrefix } from '../../src/control/cidr.js';
import { parseCidr } from '../../src/tables/ipcache.js';
import { Rand } from '../helpers/rand.js';

function p(text: string): Prefix {
  const r = prefixOrReason(text);
  if (typeof r === 'string') assert.fail(`${text}: ${r}`);
  return r;
}

test('IPv4-mapped prefixes have one text, whichever form they were given in', () => {
  const cases: [string, string][] = [
    ['::ffff:10.0.0.1', '::ffff:10.0.0.1/128'],
    ['::ffff:a00:1', '::ffff:10.0.0.1/128'],
    ['::FFFF:0A00:0001/128', '::ffff:10.0.0.1/128'],
    ['0:0:0:0:0:ffff:10.0.0.0/104', '::ffff:10.0.0.0/104'],
    ['::ffff:0:0/96', '::ffff:0.0.0.0/96'],
  ];
  for (const [text, want] of cases) {
    assert.equal(p(text).text, want, `prefix ${text}: got ${p(text).text}, want ${want}`);
    // The control plane's and the ipcache's doors give the same text: an API-added mapped
    // prefix is listed by the ipcache under the text its owner recorded.
    const ctl = parsePrefix(text).text;
    const c = parseCidr(text);
    const ipc = formatPrefix(c.family, c.words, c.bits);
    assert.equal(ctl, want, `control ${text}: got ${ctl}, want ${want}`);
    assert.equal(ipc, want, `ipcache ${text}: got ${ipc}, want ${want}`);
  }
});

test('RFC 5952 text: lower case, longest zero run compressed, first on a tie', () => {
  const cases: [string, string][] = [
    ['2001:DB8:0:0:1:0:0:1', '2001:db8::1:0:0:1/128'],
    ['2001:db8:0:0:0:0:2:1/128', '2001:db8::2:1/128'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1/128'],
    ['fd00::1/8', 'fd00::/8'],
    ['10.1.2.3/8', '10.0.0.0/8'],
    ['0.0.0.0/0', '0.0.0.0/0'],
    ['::', '::/128'],
  ];
  for (const [text, want] of cases) assert.equal(p(text).text, want, `${text}: got ${p(text).text}, want ${want}`);
});

test('bad prefix text gives a reason, never a prefix', () => {
  const bad: [string, RegExp][] = [
    ['10.0.0.256', /above 255/],
    ['10.0.0.0/33', /above 32/],
    ['1::2::3', /appears twice/],
    ['fe80::1%eth0', /zone/],
    ['1.2.3.4::', /bad IPv6 group/],
    ['10.0.0', /four dotted parts/],
    ['', /empty/],
  ];
  for (const [text, want] of bad) {
    const r = prefixOrReason(text);
    assert.equal(typeof r, 'string', `${JSON.stringify(text)}: got a prefix, want a reason`);
    assert.match(r as string, want, `${JSON.stringify(text)}: got reason ${String(r)}, want ${want}`);
    assert.equal(tryParsePrefix(text), null);
  }
  assert.equal(tryParsePrefix('10.0.0.1', false), null, 'a bare address is refused when a length is required');
});

test('prefixContains agrees with a naive bit-by-bit check on random prefixes', () => {
  const r = new Rand(16);
  const bit = (x: Prefix, i: number): number => ((x.words[i >>> 5] as number) >>> (31 - (i & 31))) & 1;
  for (let n = 0; n < 2000; n++) {
    const fam: 4 | 6 = r.bool(0.5) ? 4 : 6;
    const max = fam === 4 ? 32 : 128;
    const words = fam === 4 ? [r.u32()] : [r.u32(), r.u32(), r.u32(), r.u32()];
    const outer = makePrefix(fam, words, r.int(max + 1));
    const flip = r.int(max);
    const w2 = words.slice();
    if (r.bool(0.5)) w2[flip >>> 5] = ((w2[flip >>> 5] as number) ^ (1 << (31 - (flip & 31)))) >>> 0;
    const inner = makePrefix(fam, w2, r.int(max + 1));
    let want = inner.bits >= outer.bits;
    for (let i = 0; want && i < outer.bits; i++) if (bit(outer, i) !== bit(inner, i)) want = false;
    const got = prefixContains(outer, inner);
    assert.equal(got, want, `${outer.text} contains ${inner.text}: got ${got}, want ${want}`);
    assert.equal(p(outer.text).text, outer.text, `round trip of ${outer.text}`);
  }
});
