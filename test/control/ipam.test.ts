import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ipam } from '../../src/control/ipam.js';
import { tryParsePrefix, type Prefix } from '../../src/control/cidr.js';

const P4 = tryParsePrefix('10.72.0.0/24', false) as Prefix;
const P6 = tryParsePrefix('fd00:72::/64', false) as Prefix;

test('ipam: endpoint addresses must be usable pool addresses, with the conflict named', () => {
  const cases: [string, 4 | 6, string, RegExp | null][] = [
    ['v4 in the pool', 4, '10.72.0.9', null],
    ['v4 network', 4, '10.72.0.0', /ipv4 10\.72\.0\.0 is the network address of the pool 10\.72\.0\.0\/24$/],
    ['v4 host port', 4, '10.72.0.1', /ipv4 10\.72\.0\.1 is the host port's address$/],
    ['v4 broadcast', 4, '10.72.0.255', /ipv4 10\.72\.0\.255 is the broadcast address of the pool/],
    ['v4 outside', 4, '10.73.0.5', /ipv4 10\.73\.0\.5 is outside the pool 10\.72\.0\.0\/24$/],
    ['v4 loopback', 4, '127.0.0.1', /is a loopback address/],
    ['v4 link-local', 4, '169.254.1.1', /is a link-local address/],
    ['v4 multicast', 4, '224.0.0.5', /is a multicast address/],
    ['v4 unspecified', 4, '0.0.0.0', /is a unspecified/],
    ['v6 in the pool', 6, 'fd00:72::9', null],
    ['v6 host port (the reported takeover)', 6, 'fd00:72::1', /ipv6 fd00:72::1 is the host port's address$/],
    ['v6 host port, other spelling', 6, 'FD00:0072:0:0:0:0:0:0001', /is the host port's address$/],
    ['v6 network (subnet-router anycast)', 6, 'fd00:72::', /is the network address of the pool fd00:72::\/64$/],
    ['v6 outside the pool', 6, '2001:db8::5', /ipv6 2001:db8::5 is outside the pool fd00:72::\/64$/],
    ['v6 loopback', 6, '::1', /ipv6 ::1 is a loopback address$/],
    ['v6 link-local', 6, 'fe80::1', /ipv6 fe80::1 is a link-local address$/],
    ['v6 multicast', 6, 'ff02::1', /is a multicast address$/],
    ['v6 unspecified', 6, '::', /is a unspecified address$/],
    ['v6 v4-mapped', 6, '::ffff:10.72.0.9', /is a IPv4-mapped address$/],
  ];
  for (const [name, fam, addr, want] of cases) {
    const ipam = new Ipam(P4, P6);
    const run = (): unknown => (fam === 4 ? ipam.claim4(addr, 'endpoint "d"') : ipam.claim6(addr, 'endpoint "d"'));
    if (want === null) assert.doesNotThrow(run, `${name}: ${addr} refused, want accepted`);
    else {
      assert.throws(run, (e: Error & { code?: string }) => {
        assert.match(e.message, want, `${name}: got ${e.message}, want ${want}`);
        assert.match(e.message, /^endpoint "d": /, `${name}: error does not name the endpoint: ${e.message}`);
        assert.equal(e.code, 'EBAD_REQUEST');
        return true;
      }, `${name}: ${addr} accepted, want refused`);
    }
  }
});

test('ipam: an address taken by another endpoint names that endpoint, in any spelling', () => {
  const ipam = new Ipam(P4, P6);
  ipam.claim4('10.72.0.9', 'endpoint "b"');
  assert.equal(ipam.claim6('fd00:72:0::00b', 'endpoint "b"'), 'fd00:72::b', 'canonical ipv6 text');
  assert.throws(() => ipam.claim4("10.72.0.9", "endpoint \"d\""), { message: /^endpoint "d": ipv4 10\.72\.0\.9 is already in use by endpoint "b"$/ });
  assert.throws(() => ipam.claim6("FD00:72::B", "endpoint \"d\""), { message: /^endpoint "d": ipv6 fd00:72::b is already in use by endpoint "b"$/ });
  ipam.release6('fd00:72::000b');
  assert.doesNotThrow(() => ipam.claim6('fd00:72::b', 'endpoint "d"'), 'released address not reusable');
  const no6 = new Ipam(P4);
  assert.throws(() => no6.claim6('fd00:72::9', 'endpoint "e"'), /no pool\.ipv6 is configured/);
});
