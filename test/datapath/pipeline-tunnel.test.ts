/**
 * The pipeline with an underlay (VXLAN) port, Cilium's tunnel scenarios:
 *   A  local endpoint 10.98.1.2 (identity 300, port 1, ingress and egress enforced)
 *   R  remote endpoint 10.98.2.2 on node 10.99.0.2 (identity 400, in the ipcache with tunnel)
 * A packet to R leaves through the underlay port with outTunnel = R's node and outSrcId (the
 * VNI) = A's identity. A packet from the underlay takes its identity from the VNI, skips the
 * source check, and meets A's ingress policy; the reply of an established flow crosses back
 * as REPLY without policy.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeWorld, type World } from '../helpers/world.js';
import { ip4, ipv4Tcp, ipv4Udp, PROTO_TCP } from '../helpers/packets.js';
import { M_TUNNEL_PORT, UNDERLAY_PORT } from '../../src/tables/tableset.js';
import { DIR_EGRESS, DIR_INGRESS } from '../../src/proto/direction.js';
import { CT_ESTABLISHED, CT_NEW, CT_REPLY } from '../../src/datapath/pipeline.js';
import { DROP_INVALID_VNI, DROP_POLICY, DROP_UNROUTABLE, DROP_UNSUPPORTED_L2 } from '../../src/datapath/drop.js';

function world(tunnel = true): World {
  const w = makeWorld();
  w.endpoint({ ep: 0, identity: 300, ipv4: '10.98.1.2', port: 1, ingress: true, egress: true });
  w.ipcache('10.98.2.2/32', 400, '10.99.0.2');
  w.allow({ ep: 0, dir: DIR_EGRESS, identity: 400, proto: PROTO_TCP, port: 5432 });
  w.allow({ ep: 0, dir: DIR_INGRESS, identity: 400, proto: PROTO_TCP, port: 80 });
  if (tunnel) w.writer.setMeta(M_TUNNEL_PORT, UNDERLAY_PORT + 1);
  w.hostPort(0);
  return w;
}

function fromTunnel(w: World, vni: number, pkt: Uint8Array): ReturnType<World['run']> {
  w.pipeline.tunnelSrcId = vni;
  return w.run(pkt, UNDERLAY_PORT);
}

test('egress to a remote endpoint: out through the underlay port, VNI = source identity, tunnel = its node', () => {
  const w = world();
  const r = w.run(ipv4Tcp({ src: '10.98.1.2', dst: '10.98.2.2', sport: 40000, dport: 5432 }), 1);
  const rows: [string, number, number][] = [
    ['out', r.out, UNDERLAY_PORT],
    ['tunnel', r.tunnel, ip4('10.99.0.2')],
    ['srcId (VNI)', r.srcId, 300],
    ['dstId', r.dstId, 400],
    ['ctState', r.ctState, CT_NEW],
  ];
  for (const [what, got, want] of rows) assert.equal(got, want, `${what}: got ${got}, want ${want}`);
  // The reply comes back through the tunnel with the remote's identity: REPLY, no policy.
  const back = fromTunnel(w, 400, ipv4Tcp({ src: '10.98.2.2', dst: '10.98.1.2', sport: 5432, dport: 40000, flags: 0x12 }));
  assert.equal(back.out, 1, `reply out: got ${back.out}, want A's port 1`);
  assert.equal(back.ctState, CT_REPLY);
  assert.equal(back.srcId, 400);
});

test('without an underlay port a tunnel entry leaves through the host port (as before)', () => {
  const w = world(false);
  const r = w.run(ipv4Tcp({ src: '10.98.1.2', dst: '10.98.2.2', sport: 40000, dport: 5432 }), 1);
  assert.equal(r.out, 0, `got out ${r.out}, want host port 0`);
  assert.equal(r.tunnel, ip4('10.99.0.2'));
});

test('ingress from the tunnel: identity from the VNI, the local ingress policy decides', () => {
  const w = world();
  const rows: [string, number, Uint8Array, number][] = [
    ['allowed identity and port', 400, ipv4Tcp({ src: '10.98.2.2', dst: '10.98.1.2', sport: 1000, dport: 80 }), 1],
    ['allowed identity, other port', 400, ipv4Tcp({ src: '10.98.2.2', dst: '10.98.1.2', sport: 1001, dport: 81 }), DROP_POLICY],
    ['other identity (VNI decides, not the address)', 401, ipv4Tcp({ src: '10.98.2.2', dst: '10.98.1.2', sport: 1002, dport: 80 }), DROP_POLICY],
    ['destination not local', 400, ipv4Udp({ src: '10.98.2.2', dst: '10.98.3.3', sport: 1, dport: 2 }), DROP_UNROUTABLE],
    ['VNI 0', 0, ipv4Tcp({ src: '10.98.2.2', dst: '10.98.1.2', sport: 1003, dport: 80 }), DROP_INVALID_VNI],
    ['decap drop code passed in', DROP_UNSUPPORTED_L2, ipv4Tcp({ src: '10.98.2.2', dst: '10.98.1.2', sport: 1004, dport: 80 }), DROP_UNSUPPORTED_L2],
  ];
  for (const [what, vni, pkt, want] of rows) {
    const r = fromTunnel(w, vni, pkt);
    assert.equal(r.out, want, `${what}: got ${r.out}, want ${want}`);
    if (want >= 0) {
      assert.equal(r.srcId, vni);
      assert.equal(r.dir, DIR_INGRESS);
    }
  }
  assert.equal(w.drops(-DROP_POLICY, DIR_INGRESS), 2, 'policy drops counted on ingress');
  // A second packet of the allowed flow is ESTABLISHED.
  const again = fromTunnel(w, 400, ipv4Tcp({ src: '10.98.2.2', dst: '10.98.1.2', sport: 1000, dport: 80, flags: 0x10 }));
  assert.equal(again.ctState, CT_ESTABLISHED);
  // The local reply goes back into the tunnel with A's identity as VNI.
  const reply = w.run(ipv4Tcp({ src: '10.98.1.2', dst: '10.98.2.2', sport: 80, dport: 1000, flags: 0x12 }), 1);
  assert.equal(reply.out, UNDERLAY_PORT);
  assert.equal(reply.ctState, CT_REPLY);
  assert.equal(reply.srcId, 300);
});
