/**
 * Prometheus metrics of GSO on transmit (src/datapath/gso-port.ts), summed over the shards'
 * counters at scrape time:
 *   tunswitch_gso_packets_total{op="split"}                GSO packets segmented for a port
 *   tunswitch_gso_segments_total                           segments those splits made
 *   tunswitch_gso_packets_total{op="coalesced",proto}      GSO packets built from a batch (tcp, udp)
 *   tunswitch_gso_coalesced_input_packets_total            packets merged into them
 */
import { Gauge, type Registry } from 'prom-client';
import { C_GRO_MERGED, C_GRO_TCP_BUILT, C_GRO_UDP_BUILT, C_GSO_SPLIT_PKTS, C_GSO_SPLIT_SEGS } from '../tables/events.js';

export function registerGsoMetrics(registry: Registry, counters: readonly SharedArrayBuffer[]): void {
  const views = counters.map((c) => new Float64Array(c));
  const sum = (slot: number): number => views.reduce((n, v) => n + (v[slot] as number), 0);
  new Gauge({
    name: 'tunswitch_gso_packets_total',
    help: 'GSO packets split for a port (op=split) or built by coalescing a batch (op=coalesced, proto tcp|udp)',
    labelNames: ['op', 'proto'],
    registers: [registry],
    collect() {
      this.set({ op: 'split', proto: 'any' }, sum(C_GSO_SPLIT_PKTS));
      this.set({ op: 'coalesced', proto: 'tcp' }, sum(C_GRO_TCP_BUILT));
      this.set({ op: 'coalesced', proto: 'udp' }, sum(C_GRO_UDP_BUILT));
    },
  });
  new Gauge({
    name: 'tunswitch_gso_segments_total',
    help: 'Segments made by splitting GSO packets',
    registers: [registry],
    collect() {
      this.set(sum(C_GSO_SPLIT_SEGS));
    },
  });
  new Gauge({
    name: 'tunswitch_gso_coalesced_input_packets_total',
    help: 'Packets merged into coalesced GSO packets',
    registers: [registry],
    collect() {
      this.set(sum(C_GRO_MERGED));
    },
  });
}
