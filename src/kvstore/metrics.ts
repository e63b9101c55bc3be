/**
 * Prometheus metrics of cluster mode, computed at scrape time from the kvstore session:
 *   tunswitch_kvstore_operations_total{op, outcome}   etcd operations by kind (ok / failed)
 *   tunswitch_kvstore_connected                       1 while the session is connected
 *   tunswitch_kvstore_remote_ipcache_entries          other nodes' entries in the ipcache
 *   tunswitch_kvstore_nodes                           nodes in the cluster (this one included)
 *   tunswitch_kvstore_identities                      identity numbers in etcd
 *   tunswitch_kvstore_pending_writes                  writes queued while etcd is away
 */
import { Gauge, type Registry } from 'prom-client';
import type { KvCluster } from './cluster.js';
import { C_VXLAN_RX_BYTES, C_VXLAN_RX_PKTS, C_VXLAN_TOO_BIG, C_VXLAN_TX_BYTES, C_VXLAN_TX_PKTS } from '../tables/events.js';

export function registerKvMetrics(registry: Registry, kv: KvCluster): void {
  new Gauge({
    name: 'tunswitch_kvstore_operations_total',
    help: 'kvstore (etcd) operations by kind and outcome',
    labelNames: ['op', 'outcome'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [op, c] of Object.entries(kv.session.ops)) {
        this.set({ op, outcome: 'ok' }, c.ok);
        this.set({ op, outcome: 'failed' }, c.failed);
      }
    },
  });
  const simple: [string, string, () => number][] = [
    ['tunswitch_kvstore_connected', '1 while the kvstore session is connected', () => (kv.session.state === 'connected' ? 1 : 0)],
    ['tunswitch_kvstore_remote_ipcache_entries', 'Other nodes\' ipcache entries followed from the kvstore', () => kv.ipcache.remote.size],
    ['tunswitch_kvstore_nodes', 'Nodes in the cluster, this one included', () => kv.nodes.nodes.size],
    ['tunswitch_kvstore_identities', 'Identity numbers allocated in the kvstore', () => kv.identities.known.size],
    ['tunswitch_kvstore_pending_writes', 'Writes queued while the kvstore is away', () => kv.session.pendingWrites],
  ];
  for (const [name, help, get] of simple) {
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(get());
      },
    });
  }
}

/**
 * VXLAN packets and bytes through the underlay port, summed over the shards' counters:
 *   tunswitch_vxlan_packets_total{direction="tx"|"rx"}, tunswitch_vxlan_bytes_total{...}
 * (bytes are UDP payload: VXLAN header, inner Ethernet, inner packet).
 */
export function registerVxlanMetrics(registry: Registry, counters: readonly SharedArrayBuffer[]): void {
  const views = counters.map((c) => new Float64Array(c));
  const sum = (slot: number): number => views.reduce((n, v) => n + (v[slot] as number), 0);
  new Gauge({
    name: 'tunswitch_vxlan_packets_total',
    help: 'VXLAN packets sent to (tx) and received from (rx) other nodes',
    labelNames: ['direction'],
    registers: [registry],
    collect() {
      this.set({ direction: 'tx' }, sum(C_VXLAN_TX_PKTS));
      this.set({ direction: 'rx' }, sum(C_VXLAN_RX_PKTS));
      this.set({ direction: 'too_big' }, sum(C_VXLAN_TOO_BIG)); // answered with ICMP frag-needed / packet too big
    },
  });
  new Gauge({
    name: 'tunswitch_vxlan_bytes_total',
    help: 'VXLAN UDP payload bytes sent (tx) and received (rx)',
    labelNames: ['direction'],
    registers: [registry],
    collect() {
      this.set({ direction: 'tx' }, sum(C_VXLAN_TX_BYTES));
      this.set({ direction: 'rx' }, sum(C_VXLAN_RX_BYTES));
    },
  });
}
