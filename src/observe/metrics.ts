/**
 * Prometheus metrics (prom-client), computed from the shard counters when scraped.
 * Names follow Cilium's where a Cilium metric exists (cilium_drop_count_total{reason,
 * direction}, cilium_forward_count_total{direction}, cilium_policy_*), and tunswitch_* for
 * the runtime's own.
 */
import { Registry, Gauge, Counter } from 'prom-client';
import {
  BATCH_HIST_BUCKETS,
  C_BATCHES,
  C_BATCH_HIST,
  C_BUSY_NS,
  C_PACKETS,
  MAX_DROP_CODE,
  dropBytesSlot,
  dropPacketsSlot,
  forwardBytesSlot,
  forwardPacketsSlot,
} from '../tables/events.js';
import { dropReasonText } from '../datapath/drop.js';
import type { DatapathView } from '../control/datapath-view.js';
import type { Agent } from '../control/agent.js';
import { IO_BACKLOG_DROPS, IO_CRASH_DROPS, IO_CRASH_FREED, IO_FREE_SLOTS, IO_SLOTS, IO_PACKETS_READ, IO_READ_CALLS, IO_READ_ERRORS, IO_SLAB_EXHAUSTED } from '../runtime/shared.js';
import { DROP_QUEUE_FULL, DROP_WORKER_CRASH } from '../datapath/drop.js';

const DIRS = ['INGRESS', 'EGRESS'];

export function buildMetrics(agent: Agent, view: DatapathView, ioStats?: SharedArrayBuffer): { text(): Promise<string>; registry: Registry } {
  const io = ioStats ? new Float64Array(ioStats) : null;
  const registry = new Registry();
  const started = Date.now();
  let lastBusy = 0;
  let lastAt = Date.now();
  const dropCount = new Counter({ name: 'cilium_drop_count_total', help: 'Dropped packets by reason and direction', labelNames: ['reason', 'direction'], registers: [registry] });
  const dropBytes = new Counter({ name: 'cilium_drop_bytes_total', help: 'Dropped bytes by reason and direction', labelNames: ['reason', 'direction'], registers: [registry] });
  const fwdCount = new Counter({ name: 'cilium_forward_count_total', help: 'Forwarded packets by direction', labelNames: ['direction'], registers: [registry] });
  const fwdBytes = new Counter({ name: 'cilium_forward_bytes_total', help: 'Forwarded bytes by direction', labelNames: ['direction'], registers: [registry] });
  const polChange = new Counter({ name: 'cilium_policy_change_total', help: 'Policy revisions published', registers: [registry] });
  const polRev = new Gauge({ name: 'cilium_policy_max_revision', help: 'Highest policy revision', registers: [registry] });
  const endpoints = new Gauge({ name: 'cilium_endpoint', help: 'Endpoints', registers: [registry] });
  const ctEntries = new Gauge({ name: 'tunswitch_conntrack_entries', help: 'Conntrack entries per shard', labelNames: ['shard'], registers: [registry] });
  const ctOcc = new Gauge({ name: 'tunswitch_conntrack_occupancy_ratio', help: 'Conntrack entries / usable capacity per shard', labelNames: ['shard'], registers: [registry] });
  const ctEvict = new Gauge({ name: 'tunswitch_conntrack_evictions_total', help: 'Conntrack entries evicted to make room for a new flow (expired, unreplied = early drop, oldest = least recently seen, quota = own entry of an endpoint at its quota)', labelNames: ['reason'], registers: [registry] });
  const ctQuota = new Gauge({ name: 'tunswitch_conntrack_quota_refused_total', help: 'New flows refused (drop 155) because the endpoint was at its conntrack quota', registers: [registry] });
  const fragEvict = new Gauge({ name: 'tunswitch_fragment_evictions_total', help: 'Fragment records overwritten while live (oldest = the window was full, quota = own record of an endpoint at its quota)', labelNames: ['reason'], registers: [registry] });
  const fragQuota = new Gauge({ name: 'tunswitch_fragment_quota_refused_total', help: 'First fragments refused (drop 157) because the endpoint was at its fragment quota', registers: [registry] });
  const batches = new Counter({ name: 'tunswitch_batches_total', help: 'Batches processed by shard workers', registers: [registry] });
  const packets = new Counter({ name: 'tunswitch_packets_total', help: 'Packets processed by shard workers', registers: [registry] });
  const busy = new Gauge({ name: 'tunswitch_shard_busy_ratio', help: 'Fraction of wall time shard workers spent processing since the last scrape', registers: [registry] });
  const batchHist = new Gauge({ name: 'tunswitch_batch_size_bucket', help: 'Batch sizes (cumulative counts, le = upper bound)', labelNames: ['le'], registers: [registry] });
  const restarts = new Gauge({ name: 'tunswitch_worker_restarts_total', help: 'Shard worker restarts', registers: [registry] });
  const lostEvents = new Gauge({ name: 'tunswitch_events_lost_total', help: 'Events dropped because an event ring was full (packets are never dropped for this)', registers: [registry] });
  const slabExhausted = new Gauge({ name: 'tunswitch_slab_exhausted_total', help: 'Times the I/O thread found no free slab slot and left packets in the TUN queue (backpressure)', registers: [registry] });
  const ioRead = new Gauge({ name: 'tunswitch_io_packets_read_total', help: 'Packets read from TUN devices by the I/O thread', registers: [registry] });
  const ioCalls = new Gauge({ name: 'tunswitch_io_read_calls_total', help: 'Batched read calls made by the I/O thread', registers: [registry] });
  const ioEngine = new Gauge({ name: 'tunswitch_io_engine', help: 'The I/O engine running (1 for the one in use)', labelNames: ['engine'], registers: [registry] });
  const ioErrors = new Gauge({ name: 'tunswitch_io_read_errors_total', help: 'Read errors reported by the I/O engine', registers: [registry] });
  const crashFreed = new Gauge({ name: 'tunswitch_worker_crash_slots_freed_total', help: 'Slots a dead shard worker held (being written) that recovery returned to the slab', registers: [registry] });
  const shardUp = new Gauge({ name: 'tunswitch_shard_up', help: 'Shard worker running (1) or not (0)', labelNames: ['shard'], registers: [registry] });
  const shardRestarts = new Gauge({ name: 'tunswitch_shard_restarts_total', help: 'Restarts per shard', labelNames: ['shard'], registers: [registry] });
  const shardLoop = new Gauge({ name: 'tunswitch_shard_crash_loop', help: 'Shard in crash-loop back-off (1)', labelNames: ['shard'], registers: [registry] });
  const slabFree = new Gauge({ name: 'tunswitch_slab_free_slots', help: 'Slab slots held by no shard (free or waiting in the kernel buffer ring)', registers: [registry] });
  const slabSlots = new Gauge({ name: 'tunswitch_slab_slots', help: 'Slab slots in all', registers: [registry] });
  const uptime = new Gauge({ name: 'tunswitch_uptime_seconds', help: 'Seconds since start', registers: [registry] });
  let lastRev = 0;

  async function text(): Promise<string> {
    dropCount.reset();
    dropBytes.reset();
    fwdCount.reset();
    fwdBytes.reset();
    for (let r = 1; r < MAX_DROP_CODE; r++) {
      for (let d = 0; d < 2; d++) {
        const n = view.sum(dropPacketsSlot(r, d));
        if (n === 0) continue;
        const labels = { reason: dropReasonText(r), direction: DIRS[d] as string };
        dropCount.inc(labels, n);
        dropBytes.inc(labels, view.sum(dropBytesSlot(r, d)));
      }
    }
    for (let d = 0; d < 2; d++) {
      fwdCount.inc({ direction: DIRS[d] as string }, view.sum(forwardPacketsSlot(d)));
      fwdBytes.inc({ direction: DIRS[d] as string }, view.sum(forwardBytesSlot(d)));
    }
    const st = agent.status();
    if (st.policyRevision > lastRev) {
      polChange.inc(st.policyRevision - lastRev);
      lastRev = st.policyRevision;
    }
    polRev.set(st.policyRevision);
    endpoints.set(st.endpoints);
    view.ct.forEach((t, k) => {
      ctEntries.set({ shard: String(k) }, t.count);
      ctOcc.set({ shard: String(k) }, t.count / t.maxEntries);
    });
    const ce = { expired: 0, unreplied: 0, oldest: 0, quota: 0, quotaRefused: 0 };
    for (const t of view.ct) {
      const e = t.evictions();
      ce.expired += e.expired; ce.unreplied += e.unreplied; ce.oldest += e.oldest; ce.quota += e.quota; ce.quotaRefused += e.quotaRefused;
    }
    for (const r of ['expired', 'unreplied', 'oldest', 'quota'] as const) ctEvict.set({ reason: r }, ce[r]);
    ctQuota.set(ce.quotaRefused);
    const fe = { oldest: 0, quota: 0, quotaRefused: 0 };
    for (const t of view.frags) {
      const e = t.evictions();
      fe.oldest += e.oldest; fe.quota += e.quota; fe.quotaRefused += e.quotaRefused;
    }
    for (const r of ['oldest', 'quota'] as const) fragEvict.set({ reason: r }, fe[r]);
    fragQuota.set(fe.quotaRefused);
    batches.reset();
    batches.inc(view.sum(C_BATCHES));
    packets.reset();
    packets.inc(view.sum(C_PACKETS));
    const b = view.sum(C_BUSY_NS);
    const now = Date.now();
    busy.set(now > lastAt ? (b - lastBusy) / 1e6 / (now - lastAt) / Math.max(1, view.ct.length) : 0);
    lastBusy = b;
    lastAt = now;
    let cum = 0;
    for (let i = 0; i < BATCH_HIST_BUCKETS; i++) {
      cum += view.sum(C_BATCH_HIST + i);
      batchHist.set({ le: i === BATCH_HIST_BUCKETS - 1 ? '+Inf' : String(2 ** i) }, cum);
    }
    restarts.set(st.workerRestarts);
    lostEvents.set(view.lostEvents());
    uptime.set((now - started) / 1000);
    for (const sh of st.shards ?? []) {
      shardUp.set({ shard: String(sh.shard) }, sh.state === 'running' ? 1 : 0);
      shardRestarts.set({ shard: String(sh.shard) }, sh.restarts);
      shardLoop.set({ shard: String(sh.shard) }, sh.crashLoop ? 1 : 0);
    }
    ioEngine.reset();
    ioEngine.set({ engine: st.ioEngine }, 1);
    if (io) {
      // Drops made outside the pipeline, by the I/O thread and by crash recovery.
      const extra: [number, number][] = [
        [-DROP_QUEUE_FULL, io[IO_BACKLOG_DROPS] as number],
        [-DROP_WORKER_CRASH, io[IO_CRASH_DROPS] as number],
      ];
      for (const [r, n] of extra) if (n > 0) dropCount.inc({ reason: dropReasonText(r), direction: 'EGRESS' }, n);
      ioErrors.set(io[IO_READ_ERRORS] as number);
      crashFreed.set(io[IO_CRASH_FREED] as number);
      slabFree.set(io[IO_FREE_SLOTS] as number);
      slabSlots.set(io[IO_SLOTS] as number);
      slabExhausted.set(io[IO_SLAB_EXHAUSTED] as number);
      ioRead.set(io[IO_PACKETS_READ] as number);
      ioCalls.set(io[IO_READ_CALLS] as number);
    }
    return registry.metrics();
  }
  return { text, registry };
}
