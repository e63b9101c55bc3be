/**
 * Pipeline benchmarks: a whole Pipeline.process() per op, IPv4 TCP between two local
 * endpoints, both with ingress and egress enforcement, over the shared TableSet that also
 * holds the 1M-prefix ipcache and ~100 endpoints' policies (bench/micro.ts builds it).
 *
 *   pipeline-established-v4  BATCH distinct established flows (handshake done at set-up, the
 *                            verdict cached in conntrack); each op is one PSH|ACK data packet
 *                            A -> B: parse, source check, endpoint + ipcache lookups, CT hit
 *                            and update, cached verdict, TTL, output.
 *   pipeline-new-flow-v4     each op is a SYN of a flow conntrack has not seen (the source
 *                            port varies): CT miss, egress policy of A, ingress policy of B,
 *                            CT create, policy-verdict and trace events, TTL, output. The
 *                            conntrack table is flushed in beforeEach (untimed) when the next
 *                            batch of source ports would wrap, so it never fills and never
 *                            holds more than NEW_FLOW_PORTS entries (about half its capacity).
 *
 * Untimed hooks restore the TTL and IPv4 checksum bytes the pipeline decremented (so the
 * packets never reach TTL 1) and drain the event rings (the control thread's job).
 */
import { Pipeline } from '../../src/datapath/pipeline.js';
import { ConntrackTable } from '../../src/tables/conntrack.js';
import { FragmentTable } from '../../src/tables/fragments.js';
import { EventRing, createCounters } from '../../src/tables/events.js';
import { EP_ENFORCE_EGRESS, EP_ENFORCE_INGRESS } from '../../src/tables/endpoints.js';
import { TableSetWriter, type TableSet } from '../../src/tables/tableset.js';
import { MAX_BATCH } from '../../src/runtime/shared.js';
import { TCP_ACK, TCP_PSH, TCP_SYN } from '../../src/proto/ip.js';
import { PacketSlab, ipv4Tcp } from '../../test/helpers/packets.js';
import type { MicroCase } from '../micro.js';

/** Issue targets, ns per packet. */
export const TARGET_ESTABLISHED_NS = 150;
export const TARGET_NEW_FLOW_NS = 600;

/** Endpoints in the scenario; endpoint 0 is A (the client), 1 is B (the server). */
export const SCENARIO_ENDPOINTS = 100;
export const EP_A = 0;
export const EP_B = 1;
export const PORT_A = 0;
export const PORT_B = 1;
export const SERVER_PORT = 80;
/** Identity of endpoint i (workload identities start at 256). */
export function endpointIdentity(ep: number): number {
  return 1000 + ep * 7;
}
/** IPv4 of endpoint i: 10.0.(i >> 8).(i & 255 + 1). */
export function endpointIpv4(ep: number): number {
  return (0x0a000000 | ((ep >> 8) << 8) | ((ep & 0xff) + 1)) >>> 0;
}

/** The synthetic clock (seconds) every benchmark batch runs at. */
export const NOW_S = 1_700_000_000;
/** Source ports the new-flow benchmark cycles through before it flushes conntrack. */
export const NEW_FLOW_PORTS = 65536 - 1024;
const kNewFlowCtCapacity = 1 << 17;
const kEstablishedCtCapacity = 1 << 16;
const kEventRing = 8192;
const kIpv4Ttl = 8;
const kIpv4Csum = 10;
const kIpv4Hlen = 20;

/** A pipeline with its own shard state and a slab of packets it processes per call. */
export class FlowBench {
  readonly pipeline: Pipeline;
  readonly ct: ConntrackTable;
  readonly events: EventRing;
  readonly offs: Uint32Array;
  readonly lens: Uint32Array;
  /** TTL and checksum bytes of every packet as built (restored between calls). */
  private readonly saved: Uint8Array;
  /** Packets that did not come out on the expected port (must stay 0). */
  bad = 0;

  constructor(
    tables: TableSet,
    readerSlot: number,
    ctCapacity: number,
    readonly slab: PacketSlab,
    readonly inPort: number,
    readonly expect: number,
  ) {
    this.ct = new ConntrackTable(new SharedArrayBuffer(ConntrackTable.bytesFor(ctCapacity)), 0, ctCapacity);
    const frags = new FragmentTable(new SharedArrayBuffer(FragmentTable.bytesFor(1024)), 0, 1024);
    this.events = EventRing.create(kEventRing);
    this.pipeline = new Pipeline(tables, this.ct, frags, createCounters(), this.events, readerSlot);
    const n = slab.count;
    this.offs = new Uint32Array(n);
    this.lens = new Uint32Array(n);
    this.saved = new Uint8Array(n * 3);
    for (let i = 0; i < n; i++) {
      const off = slab.off(i);
      this.offs[i] = off;
      this.lens[i] = slab.len(i);
      this.saved[i * 3] = slab.buf[off + kIpv4Ttl] as number;
      this.saved[i * 3 + 1] = slab.buf[off + kIpv4Csum] as number;
      this.saved[i * 3 + 2] = slab.buf[off + kIpv4Csum + 1] as number;
    }
  }

  get opsPerCall(): number {
    return this.slab.count;
  }

  /** One pass over the slab (the timed body). */
  run(): void {
    this.bad += runSlab(this.pipeline, this.slab.buf, this.slab.dv, this.offs, this.lens, this.inPort, this.expect);
  }

  /** Puts back the TTL and header checksum bytes the pipeline rewrote. */
  restore(): void {
    const b = this.slab.buf;
    const s = this.saved;
    for (let i = 0; i < this.offs.length; i++) {
      const off = this.offs[i] as number;
      b[off + kIpv4Ttl] = s[i * 3] as number;
      b[off + kIpv4Csum] = s[i * 3 + 1] as number;
      b[off + kIpv4Csum + 1] = s[i * 3 + 2] as number;
    }
  }

  drainEvents(): void {
    this.events.consume(this.events.available());
  }
}

/**
 * Runs every packet of the slab through the pipeline, in batches of MAX_BATCH as the shard
 * worker does. Returns the number of packets not sent to `expect`. Allocates nothing.
 */
function runSlab(
  p: Pipeline, buf: Uint8Array, dv: DataView, offs: Uint32Array, lens: Uint32Array, inPort: number, expect: number,
): number {
  const n = offs.length;
  let bad = 0;
  for (let i = 0; i < n; i += MAX_BATCH) {
    const end = i + MAX_BATCH < n ? i + MAX_BATCH : n;
    p.beginBatch(NOW_S, 0);
    for (let j = i; j < end; j++) {
      if (p.process(buf, dv, offs[j] as number, lens[j] as number, inPort) !== expect) bad++;
    }
    p.endBatch();
  }
  return bad;
}

/**
 * The tables and endpoints of the pipeline benchmarks. The constructor writes the endpoints
 * (not yet committed); the caller adds ipcache and policy entries through `writer` and calls
 * commit(); pipelineCases() then builds the flows.
 */
export class PipelineScenario {
  readonly writer: TableSetWriter;
  established!: FlowBench;
  newFlow!: FlowBench;
  private newFlowCursor = NEW_FLOW_PORTS;

  constructor(readonly tables: TableSet) {
    this.writer = new TableSetWriter(tables);
    const w = this.writer;
    for (let ep = 0; ep < SCENARIO_ENDPOINTS; ep++) {
      w.endpoints.upsert(ep, {
        identity: endpointIdentity(ep),
        ipv4: endpointIpv4(ep),
        port: ep,
        flags: EP_ENFORCE_INGRESS | EP_ENFORCE_EGRESS,
      });
      w.setPortEndpoint(ep, ep);
    }
    w.bumpPolicyRevision();
  }

  commit(): void {
    this.writer.commit();
  }

  /** Builds both flow benchmarks with `batch` packets each; runs the handshakes. */
  prepare(batch: number): void {
    const a = endpointIpv4(EP_A);
    const b = endpointIpv4(EP_B);
    const payload = new Uint8Array(100).fill(0x61);
    const data: Uint8Array[] = [];
    for (let i = 0; i < batch; i++) {
      data.push(ipv4Tcp({ src: a, dst: b, sport: 10000 + i, dport: SERVER_PORT, flags: TCP_PSH | TCP_ACK, seq: 2, ack: 2, payload }));
    }
    this.established = new FlowBench(this.tables, 0, kEstablishedCtCapacity, new PacketSlab(data), PORT_A, PORT_B);
    // Handshake of every flow: SYN A->B, SYN|ACK B->A, ACK A->B.
    const p = this.established.pipeline;
    p.beginBatch(NOW_S, 0);
    for (let i = 0; i < batch; i++) {
      const sp = 10000 + i;
      step(p, ipv4Tcp({ src: a, dst: b, sport: sp, dport: SERVER_PORT, flags: TCP_SYN, seq: 1 }), PORT_A, PORT_B);
      step(p, ipv4Tcp({ src: b, dst: a, sport: SERVER_PORT, dport: sp, flags: TCP_SYN | TCP_ACK, seq: 1, ack: 2 }), PORT_B, PORT_A);
      step(p, ipv4Tcp({ src: a, dst: b, sport: sp, dport: SERVER_PORT, flags: TCP_ACK, seq: 2, ack: 2 }), PORT_A, PORT_B);
    }
    p.endBatch();
    this.established.drainEvents();

    const syns: Uint8Array[] = [];
    for (let i = 0; i < batch; i++) {
      syns.push(ipv4Tcp({ src: a, dst: b, sport: 1024, dport: SERVER_PORT, flags: TCP_SYN, seq: 1 }));
    }
    this.newFlow = new FlowBench(this.tables, 1, kNewFlowCtCapacity, new PacketSlab(syns), PORT_A, PORT_B);
  }

  /** beforeEach of the new-flow benchmark: fresh source ports for the next batch. */
  nextNewFlowPorts(): void {
    const f = this.newFlow;
    const n = f.offs.length;
    if (this.newFlowCursor + n > NEW_FLOW_PORTS) {
      f.ct.flush();
      this.newFlowCursor = 0;
    }
    for (let i = 0; i < n; i++) {
      f.slab.dv.setUint16((f.offs[i] as number) + kIpv4Hlen, 1024 + this.newFlowCursor + i);
    }
    this.newFlowCursor += n;
    f.restore();
  }

  /** Established-flow packets, `packets` of them (whole passes over the slab), outside tinybench. */
  runEstablished(packets: number): void {
    const f = this.established;
    const passes = Math.ceil(packets / f.opsPerCall);
    for (let k = 0; k < passes; k++) {
      f.run();
      f.restore();
      if ((k & 15) === 15) f.drainEvents();
    }
    f.drainEvents();
  }
}

function step(p: Pipeline, pkt: Uint8Array, inPort: number, want: number): void {
  const got = p.process(pkt, new DataView(pkt.buffer, pkt.byteOffset, pkt.byteLength), 0, pkt.length, inPort);
  if (got !== want) {
    throw new Error(`pipeline bench set-up: handshake packet from port ${inPort}: got ${got} (reason ${p.outReason}), want port ${want}`);
  }
}

export function pipelineCases(s: PipelineScenario, batch: number): MicroCase[] {
  s.prepare(batch);
  const est = s.established;
  const nf = s.newFlow;
  return [
    {
      name: 'pipeline-established-v4',
      opsPerCall: est.opsPerCall,
      fn: () => est.run(),
      afterEach: () => {
        est.restore();
        est.drainEvents();
      },
      target: TARGET_ESTABLISHED_NS,
      check: () => (est.bad === 0 ? '' : `${est.bad} packets were not forwarded to endpoint B`),
      note: `${batch} established TCP flows A->B (100-byte payload), egress+ingress enforcement, verdict cached in CT; beginBatch/endBatch every ${MAX_BATCH} packets`,
    },
    {
      name: 'pipeline-new-flow-v4',
      opsPerCall: nf.opsPerCall,
      fn: () => nf.run(),
      beforeEach: () => s.nextNewFlowPorts(),
      afterEach: () => nf.drainEvents(),
      target: TARGET_NEW_FLOW_NS,
      check: () => (nf.bad === 0 ? '' : `${nf.bad} SYNs were not forwarded to endpoint B`),
      note: `TCP SYN A->B, a new source port per op (${NEW_FLOW_PORTS} ports, CT of ${kNewFlowCtCapacity} slots flushed when they wrap); egress policy of A + ingress policy of B, CT create, 2 events`,
    },
  ];
}
