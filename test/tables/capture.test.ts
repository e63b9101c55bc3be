/**
 * Capture ring (src/tables/capture.ts) and the control side that turns it into pcap
 * (src/control/capture.ts): layout, filter, full ring, snap length, several capture slots at
 * once, a naive reference model on seeded random input, a producer in another thread, the pcap
 * bytes (parsed back with the small reader below), the controller's slots and stop conditions,
 * and the request checks (src/api/capture-stream.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { Rand } from '../helpers/rand.js';
import {
  CaptureRing,
  CR_CAP_LEN,
  CR_DROPPED,
  CR_DST_EP,
  CR_ORIG_LEN,
  CR_TAG,
  CR_SRC_EP,
  CR_TS_SEC,
  CR_TS_USEC,
  CR_VERDICT,
  HEADER_BYTES,
  NO_EP_INDEX,
  RECORD_HEADER_BYTES,
  VERDICT_ANY,
  VERDICT_DROPPED_BIT,
  VERDICT_FORWARDED_BIT,
  MAX_CAPTURES,
  armedWord,
  kArmed,
  kCapacity,
  kFilterEp,
  kSlotBase,
  kSlotData,
  kSlotWords,
  kSnaplen,
  kVerdictMask,
} from '../../src/tables/capture.js';
import {
  CaptureBusyError,
  CaptureController,
  LINKTYPE_RAW,
  pcapGlobalHeader,
  pcapRecord,
  type CaptureSink,
  type CaptureSummary,
} from '../../src/control/capture.js';
import { checkCaptureRequest } from '../../src/api/capture-stream.js';
import { TunswitchError } from '../../src/control/errors.js';

/** Arms slot 0 alone under generation `gen` (what the controller does for one capture). */
function arm(r: CaptureRing, gen: number, ep: number, mask: number, snap: number): void {
  r.publish(0);
  r.setSlot(0, ep, mask, snap);
  r.publish(armedWord(gen, 1));
}

// ------------------------------------------------------------------------------ helpers

interface PcapFile {
  magic: number;
  major: number;
  minor: number;
  snaplen: number;
  linktype: number;
  records: { sec: number; usec: number; incl: number; orig: number; data: Buffer }[];
}

/** A tiny pcap reader (little-endian, microsecond files only), independent of the writer. */
function readPcap(b: Buffer): PcapFile {
  assert.ok(b.length >= 24, `got ${b.length} bytes, want at least a 24-byte global header`);
  const f: PcapFile = { magic: b.readUInt32LE(0), major: b.readUInt16LE(4), minor: b.readUInt16LE(6), snaplen: b.readUInt32LE(16), linktype: b.readUInt32LE(20), records: [] };
  let p = 24;
  while (p < b.length) {
    assert.ok(b.length - p >= 16, `got a record header cut at byte ${p} of ${b.length}`);
    const incl = b.readUInt32LE(p + 8);
    assert.ok(b.length - p - 16 >= incl, `got a record at ${p} with incl_len ${incl} past the end (${b.length})`);
    f.records.push({ sec: b.readUInt32LE(p), usec: b.readUInt32LE(p + 4), incl, orig: b.readUInt32LE(p + 12), data: b.subarray(p + 16, p + 16 + incl) });
    p += 16 + incl;
  }
  return f;
}

/** An IPv4-looking packet of `len` bytes whose bytes encode `tag` (so each is recognisable). */
function packet(len: number, tag: number): Uint8Array {
  const b = new Uint8Array(len);
  if (len > 0) b[0] = 0x45;
  for (let i = 1; i < len; i++) b[i] = (tag * 31 + i * 7) & 0xff;
  return b;
}

/** A sink that keeps everything. */
function memorySink(): CaptureSink & { chunks: Buffer[]; summary: CaptureSummary | null; bytes(): Buffer } {
  const s = {
    chunks: [] as Buffer[],
    summary: null as CaptureSummary | null,
    data(c: Buffer) {
      s.chunks.push(Buffer.from(c));
    },
    end(sum: CaptureSummary) {
      assert.equal(s.summary, null, 'got sink.end twice, want once');
      s.summary = sum;
    },
    bytes: () => Buffer.concat(s.chunks),
  };
  return s;
}

/** Reads every unread record of `ring` (consumer side), as plain objects. */
function drainAll(ring: CaptureRing): { tag: number; orig: number; cap: number; verdict: number; src: number; dst: number; data: Buffer; sec: number; usec: number }[] {
  const out = [];
  const n = ring.available();
  for (let k = 0; k < n; k++) {
    const w = ring.peek(k);
    const r = ring.words;
    const cap = r[w + CR_CAP_LEN] as number;
    const d = ring.dataOffset(w);
    out.push({
      tag: r[w + CR_TAG] as number,
      orig: r[w + CR_ORIG_LEN] as number,
      cap,
      verdict: r[w + CR_VERDICT] as number,
      src: r[w + CR_SRC_EP] as number,
      dst: r[w + CR_DST_EP] as number,
      data: Buffer.from(ring.bytes.subarray(d, d + cap)),
      sec: r[w + CR_TS_SEC] as number,
      usec: r[w + CR_TS_USEC] as number,
    });
  }
  ring.consume(n);
  return out;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    assert.ok(Date.now() < end, `timed out after ${ms} ms waiting for ${what}`);
    await sleep(5);
  }
}

// ------------------------------------------------------------------------------ ring

test('capture ring: create writes the documented header and sizes', () => {
  const cases = [
    { slots: 2, data: 4 },
    { slots: 16, data: 128 },
    { slots: 256, data: 2048 },
  ];
  for (const c of cases) {
    const r = CaptureRing.create(c.slots, c.data);
    const want = HEADER_BYTES + c.slots * (RECORD_HEADER_BYTES + c.data);
    assert.equal(r.sab.byteLength, want, `slots ${c.slots} data ${c.data}: got ${r.sab.byteLength} bytes, want ${want}`);
    assert.equal(CaptureRing.bytesFor(c.slots, c.data), want, `bytesFor: got ${CaptureRing.bytesFor(c.slots, c.data)}, want ${want}`);
    const h = new Int32Array(r.sab, 0, HEADER_BYTES / 4);
    const fields: [string, number, number][] = [
      ['ARMED', h[kArmed] as number, 0],
      ['CAPACITY', h[kCapacity] as number, c.slots],
      ['SLOT_DATA', h[kSlotData] as number, c.data],
    ];
    for (let i = 0; i < MAX_CAPTURES; i++) {
      const b = kSlotBase + i * kSlotWords;
      fields.push([`slot ${i} FILTER_EP`, h[b + kFilterEp] as number, -1], [`slot ${i} VERDICT_MASK`, h[b + kVerdictMask] as number, 0], [`slot ${i} SNAPLEN`, h[b + kSnaplen] as number, c.data]);
    }
    for (const [name, got, w] of fields) assert.equal(got, w, `slots ${c.slots}: ${name} got ${got}, want ${w}`);
    // A second view over the same memory (another thread) sees the same geometry.
    const again = new CaptureRing(r.sab);
    assert.equal(again.capacity, c.slots, `attach: capacity got ${again.capacity}, want ${c.slots}`);
  }
  for (const [slots, data] of [[3, 64], [0, 64], [16, 6], [16, 0]] as const) {
    assert.throws(() => CaptureRing.create(slots, data), RangeError, `create(${slots}, ${data}): got no RangeError, want one`);
  }
});

test('capture ring: disarmed, beginBatch is false and nothing is recorded', () => {
  const r = CaptureRing.create(8, 64);
  const p = packet(40, 1);
  assert.equal(r.beginBatch(), false, 'got armed, want disarmed after create');
  assert.equal(r.offer(p, 0, p.length, 1, 0, 1), 0, 'offer while disarmed: got recorded, want 0');
  assert.equal(r.available(), 0, `available: got ${r.available()}, want 0`);
  arm(r, 3, -1, VERDICT_ANY, 0);
  assert.equal(r.beginBatch(), true, 'got disarmed, want armed after arm()');
  r.publish(0);
  // The batch that began armed still records (documented); the next one does not.
  assert.equal(r.offer(p, 0, p.length, 1, 0, 1), 1, 'offer in a batch begun armed: got not recorded, want 1');
  assert.equal(r.beginBatch(), false, 'got armed, want disarmed after disarm()');
  assert.equal(r.offer(p, 0, p.length, 1, 0, 1), 0, 'offer after disarm: got recorded, want 0');
  assert.equal(r.available(), 1, `available: got ${r.available()}, want 1`);
});

test('capture ring: endpoint and verdict filter', () => {
  const cases = [
    { name: 'any endpoint, any verdict, forwarded', ep: -1, mask: VERDICT_ANY, src: 3, dst: 4, verdict: 2, want: 1 },
    { name: 'any endpoint, any verdict, dropped', ep: -1, mask: VERDICT_ANY, src: 3, dst: -1, verdict: -133, want: 1 },
    { name: 'endpoint is the source', ep: 3, mask: VERDICT_ANY, src: 3, dst: 4, verdict: 2, want: 1 },
    { name: 'endpoint is the destination', ep: 4, mask: VERDICT_ANY, src: 3, dst: 4, verdict: 2, want: 1 },
    { name: 'endpoint is neither', ep: 5, mask: VERDICT_ANY, src: 3, dst: 4, verdict: 2, want: 0 },
    { name: 'from the host port to the endpoint', ep: 4, mask: VERDICT_ANY, src: -1, dst: 4, verdict: 4, want: 1 },
    { name: 'endpoint 0 is a real endpoint', ep: 0, mask: VERDICT_ANY, src: 0, dst: -1, verdict: -151, want: 1 },
    { name: 'endpoint 0, packet of others', ep: 0, mask: VERDICT_ANY, src: 1, dst: 2, verdict: 0, want: 0 },
    { name: 'only dropped, forwarded packet', ep: -1, mask: VERDICT_DROPPED_BIT, src: 3, dst: 4, verdict: 0, want: 0 },
    { name: 'only dropped, dropped packet', ep: 3, mask: VERDICT_DROPPED_BIT, src: 3, dst: 4, verdict: -181, want: 1 },
    { name: 'only forwarded, dropped packet', ep: 3, mask: VERDICT_FORWARDED_BIT, src: 3, dst: 4, verdict: -181, want: 0 },
    { name: 'only forwarded, port 0 (host) is forwarded', ep: 3, mask: VERDICT_FORWARDED_BIT, src: 3, dst: -1, verdict: 0, want: 1 },
    { name: 'empty mask', ep: -1, mask: 0, src: 3, dst: 4, verdict: 1, want: 0 },
  ];
  for (const c of cases) {
    const r = CaptureRing.create(4, 64);
    arm(r, 1, c.ep, c.mask, 0);
    r.beginBatch();
    const p = packet(60, 9);
    const got = r.offer(p, 0, p.length, c.verdict, c.src, c.dst);
    assert.equal(got, c.want, `${c.name}: offer got ${got}, want ${c.want}`);
    const recs = drainAll(r);
    assert.equal(recs.length, c.want, `${c.name}: records got ${recs.length}, want ${c.want}`);
    if (c.want === 1) {
      const rec = recs[0]!;
      const wantVerdict = c.verdict < 0 ? CR_DROPPED | -c.verdict : 0;
      assert.equal(rec.verdict, wantVerdict, `${c.name}: verdict word got ${rec.verdict.toString(16)}, want ${wantVerdict.toString(16)}`);
      assert.equal(rec.src, c.src < 0 ? NO_EP_INDEX : c.src, `${c.name}: src ep got ${rec.src}, want ${c.src}`);
      assert.equal(rec.dst, c.dst < 0 ? NO_EP_INDEX : c.dst, `${c.name}: dst ep got ${rec.dst}, want ${c.dst}`);
    }
  }
});

test('capture ring: a full ring loses records and counts them, then recovers', () => {
  const cases = [
    { slots: 2, offers: 5 },
    { slots: 4, offers: 4 },
    { slots: 8, offers: 20 },
  ];
  for (const c of cases) {
    const r = CaptureRing.create(c.slots, 64);
    arm(r, 1, -1, VERDICT_ANY, 0);
    r.beginBatch();
    let recorded = 0;
    for (let i = 0; i < c.offers; i++) {
      const p = packet(50, i);
      if (r.offer(p, 0, p.length, 1, 0, 1) === 1) recorded++;
    }
    const wantRec = Math.min(c.slots, c.offers);
    assert.equal(recorded, wantRec, `slots ${c.slots} offers ${c.offers}: recorded got ${recorded}, want ${wantRec}`);
    assert.equal(r.lost(), c.offers - wantRec, `slots ${c.slots}: lost got ${r.lost()}, want ${c.offers - wantRec}`);
    const recs = drainAll(r);
    // The oldest records are kept (the producer never overwrites unread ones).
    recs.forEach((rec, i) => assert.deepEqual(rec.data, Buffer.from(packet(50, i)), `slots ${c.slots}: record ${i} holds another packet`));
    const p = packet(50, 99);
    assert.equal(r.offer(p, 0, p.length, 1, 0, 1), 1, `slots ${c.slots}: after draining, offer got not recorded, want 1`);
  }
});

test('capture ring: snap length truncates, original length is kept', () => {
  const cases = [
    { slotData: 128, snap: 0, len: 100, cap: 100 },
    { slotData: 128, snap: 0, len: 300, cap: 128 },
    { slotData: 128, snap: 64, len: 100, cap: 64 },
    { slotData: 128, snap: 64, len: 20, cap: 20 },
    { slotData: 128, snap: 4096, len: 200, cap: 128 },
    { slotData: 128, snap: 64, len: 0, cap: 0 },
  ];
  for (const c of cases) {
    const r = CaptureRing.create(4, c.slotData);
    arm(r, 1, -1, VERDICT_ANY, c.snap);
    r.beginBatch();
    const buf = new Uint8Array(c.len + 10);
    const p = packet(c.len, 5);
    buf.set(p, 7); // not at offset 0: the slab has other packets around it
    r.offer(buf, 7, c.len, 1, 0, 1);
    const [rec] = drainAll(r);
    assert.ok(rec, `len ${c.len}: got no record, want one`);
    assert.equal(rec.cap, c.cap, `snap ${c.snap} len ${c.len}: cap got ${rec.cap}, want ${c.cap}`);
    assert.equal(rec.orig, c.len, `snap ${c.snap} len ${c.len}: orig got ${rec.orig}, want ${c.len}`);
    assert.deepEqual(rec.data, Buffer.from(p.subarray(0, c.cap)), `snap ${c.snap} len ${c.len}: data differs from the packet's first ${c.cap} bytes`);
  }
});

test('capture ring: several slots match a naive queue model on seeded random input', () => {
  for (const seed of [1, 2, 3, 42, 1234]) {
    const rnd = new Rand(seed);
    const slots = rnd.pick([2, 4, 8, 16]);
    const slotData = rnd.pick([16, 64, 256]);
    const r = CaptureRing.create(slots, slotData);
    // model: per capture slot its filter, the ARMED word, what the current batch cached
    type Cfg = { ep: number; mask: number; snap: number };
    const cfg: Cfg[] = [];
    for (let i = 0; i < MAX_CAPTURES; i++) cfg.push({ ep: -1, mask: 0, snap: slotData });
    const queue: { tag: number; orig: number; data: Buffer; verdict: number; src: number; dst: number }[] = [];
    let lost = 0;
    const slotLost = new Array<number>(MAX_CAPTURES).fill(0);
    let gen = 0;
    let armedSlots = 0;
    let batchWord = 0;
    let batchCfg: Cfg[] = [];
    for (let step = 0; step < 4000; step++) {
      const op = rnd.int(12);
      if (op <= 1) {
        // arm a free slot, or free an armed one
        const i = rnd.int(MAX_CAPTURES);
        if ((armedSlots & (1 << i)) === 0) {
          const ep = rnd.bool(0.3) ? -1 : rnd.int(4);
          const mask = rnd.int(4);
          const snap = rnd.pick([0, 8, slotData, slotData * 2]);
          r.setSlot(i, ep, mask, snap);
          cfg[i] = { ep, mask, snap: snap > 0 && snap < slotData ? snap : slotData };
          armedSlots |= 1 << i;
        } else {
          assert.throws(() => r.setSlot(i, 0, 0, 0), /is armed/, `seed ${seed} step ${step}: setSlot on armed slot ${i}: got no error`);
          armedSlots &= ~(1 << i);
        }
        gen++;
        r.publish(armedWord(gen, armedSlots));
      } else if (op === 2) {
        const on = r.beginBatch();
        assert.equal(on, armedSlots !== 0, `seed ${seed} step ${step}: beginBatch got ${on}, want ${armedSlots !== 0}`);
        batchWord = armedWord(gen, armedSlots);
        batchCfg = cfg.map((c) => ({ ...c }));
      } else if (op <= 9) {
        const len = rnd.int(slotData * 2);
        const p = rnd.bytes(len);
        const src = rnd.int(5) - 1;
        const dst = rnd.int(5) - 1;
        const verdict = rnd.bool(0.4) ? -rnd.range(130, 255) : rnd.int(8);
        const got = r.offer(p, 0, len, verdict, src, dst);
        const bit = verdict < 0 ? VERDICT_DROPPED_BIT : VERDICT_FORWARDED_BIT;
        let match = 0;
        let snap = 0;
        for (let i = 0; i < MAX_CAPTURES; i++) {
          if ((batchWord & (1 << i)) === 0) continue;
          const c = batchCfg[i]!;
          if ((c.ep < 0 || src === c.ep || dst === c.ep) && (c.mask & bit) !== 0) {
            match |= 1 << i;
            snap = Math.max(snap, c.snap);
          }
        }
        let want = 0;
        if (match !== 0) {
          if (queue.length >= slots) {
            lost++;
            for (let i = 0; i < MAX_CAPTURES; i++) if ((match & (1 << i)) !== 0) slotLost[i]!++;
            want = -1;
          } else {
            const tag = ((batchWord & ~0xff) | match) >>> 0;
            queue.push({ tag, orig: len, data: Buffer.from(p.subarray(0, Math.min(len, snap))), verdict: verdict < 0 ? CR_DROPPED | -verdict : 0, src: src < 0 ? NO_EP_INDEX : src, dst: dst < 0 ? NO_EP_INDEX : dst });
            want = 1;
          }
        }
        assert.equal(got, want, `seed ${seed} step ${step}: offer got ${got}, want ${want}`);
      } else {
        const recs = drainAll(r);
        assert.equal(recs.length, queue.length, `seed ${seed} step ${step}: drained ${recs.length}, want ${queue.length}`);
        recs.forEach((rec, i) => {
          const m = queue[i]!;
          assert.deepEqual(
            { tag: rec.tag, orig: rec.orig, cap: rec.cap, verdict: rec.verdict, src: rec.src, dst: rec.dst, data: rec.data },
            { tag: m.tag, orig: m.orig, cap: m.data.length, verdict: m.verdict, src: m.src, dst: m.dst, data: m.data },
            `seed ${seed} step ${step}: record ${i} differs from the model`,
          );
        });
        queue.length = 0;
      }
      assert.equal(r.lost(), lost, `seed ${seed} step ${step}: lost got ${r.lost()}, want ${lost}`);
      for (let i = 0; i < MAX_CAPTURES; i++) assert.equal(r.slotLost(i), slotLost[i], `seed ${seed} step ${step}: slot ${i} lost got ${r.slotLost(i)}, want ${slotLost[i]}`);
    }
  }
});

test('capture ring: a producer in another thread, a consumer here; every offer arrives intact or is counted lost', async () => {
  const ring = CaptureRing.create(64, 256);
  arm(ring, 7, -1, VERDICT_ANY, 0);
  const N = 20000;
  const modUrl = new URL('../../src/tables/capture.js', import.meta.url).href;
  const code = `
    const { workerData, parentPort } = require('node:worker_threads');
    import(${JSON.stringify(modUrl)}).then(({ CaptureRing }) => {
      const r = new CaptureRing(workerData.sab);
      const buf = new Uint8Array(300);
      let recorded = 0;
      for (let i = 0; i < workerData.n; i++) {
        if ((i & 15) === 0) r.beginBatch();
        const len = 20 + (i % 230);
        for (let j = 0; j < len; j++) buf[j] = (i + j * 13) & 0xff;
        if (r.offer(buf, 0, len, i % 3 === 0 ? -133 : 1, i & 3, -1) === 1) recorded++;
      }
      parentPort.postMessage(recorded);
    });`;
  const w = new Worker(code, { eval: true, workerData: { sab: ring.sab, n: N } });
  const recordedP = new Promise<number>((res, rej) => {
    w.once('message', res);
    w.once('error', rej);
  });
  let seen = 0;
  let finished = false;
  void recordedP.then(() => (finished = true));
  let bad = '';
  const check = (): void => {
    const n = ring.available();
    for (let k = 0; k < n; k++) {
      const wd = ring.peek(k);
      const orig = ring.words[wd + CR_ORIG_LEN] as number;
      const d = ring.dataOffset(wd);
      // Recover i from the length and the first byte: len = 20 + i % 230, byte 0 = i & 0xff.
      const b0 = ring.bytes[d] as number;
      for (let j = 1; j < orig && bad === ''; j++) {
        const want = (b0 + j * 13) & 0xff;
        if (ring.bytes[d + j] !== want) bad = `record ${seen + k}: byte ${j} got ${ring.bytes[d + j]}, want ${want} (torn record)`;
      }
    }
    ring.consume(n);
    seen += n;
  };
  while (!finished) {
    check();
    await sleep(0);
  }
  const recorded = await recordedP;
  check();
  await w.terminate();
  assert.equal(bad, '', bad);
  assert.equal(seen, recorded, `consumer saw ${seen} records, want the ${recorded} the producer recorded`);
  assert.equal(seen + ring.lost(), N, `seen ${seen} + lost ${ring.lost()} = ${seen + ring.lost()}, want ${N}`);
});

// ------------------------------------------------------------------------------ pcap bytes

test('pcap: global header bytes follow libpcap 2.4 with LINKTYPE_RAW', () => {
  for (const snap of [64, 2048, 65535]) {
    const h = pcapGlobalHeader(snap);
    const want = Buffer.from([0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, snap & 0xff, (snap >> 8) & 0xff, (snap >> 16) & 0xff, 0, 101, 0, 0, 0]);
    assert.deepEqual(h, want, `snaplen ${snap}: got ${h.toString('hex')}, want ${want.toString('hex')}`);
    const f = readPcap(h);
    assert.equal(f.linktype, LINKTYPE_RAW, `linktype got ${f.linktype}, want ${LINKTYPE_RAW}`);
    assert.equal(f.records.length, 0, `records got ${f.records.length}, want 0`);
  }
});

test('pcap: records round-trip through the reader', () => {
  const rnd = new Rand(77);
  const want: { sec: number; usec: number; data: Buffer; orig: number }[] = [];
  const parts = [pcapGlobalHeader(2048)];
  for (let i = 0; i < 50; i++) {
    const data = Buffer.from(rnd.bytes(rnd.int(200)));
    const rec = { sec: rnd.u32(), usec: rnd.int(1_000_000), data, orig: data.length + rnd.int(3) * 1000 };
    want.push(rec);
    parts.push(pcapRecord(rec.sec, rec.usec, rec.data, rec.orig));
  }
  const f = readPcap(Buffer.concat(parts));
  assert.equal(f.records.length, want.length, `records got ${f.records.length}, want ${want.length}`);
  f.records.forEach((r, i) => {
    const w = want[i]!;
    assert.deepEqual({ sec: r.sec, usec: r.usec, incl: r.incl, orig: r.orig, data: r.data }, { sec: w.sec, usec: w.usec, incl: w.data.length, orig: w.orig, data: w.data }, `record ${i} differs`);
  });
});

// ------------------------------------------------------------------------------ controller

function producers(n: number, slots = 16, slotData = 256): CaptureRing[] {
  const out: CaptureRing[] = [];
  for (let i = 0; i < n; i++) out.push(CaptureRing.create(slots, slotData));
  return out;
}

test('capture controller: count stops the capture, disarms, and the pcap parses back', async () => {
  const prod = producers(2);
  const ctl = new CaptureController(prod.map((r) => r.sab), 5);
  const sink = memorySink();
  const h = ctl.start({ endpoint: 2, count: 5 }, sink);
  assert.equal(ctl.active, 1, `active got ${ctl.active} after start, want 1`);
  prod.forEach((r, i) => assert.equal(r.armed() !== 0, true, `ring ${i}: got disarmed after start, want armed`));
  // Three packets on each shard, one of them of another endpoint (filtered in the producer).
  const sent: Buffer[] = [];
  for (let i = 0; i < 4; i++) {
    const r = prod[i % 2]!;
    r.beginBatch();
    const p = packet(40 + i, i);
    r.offer(p, 0, p.length, i === 3 ? -133 : 1, 2, 3);
    sent.push(Buffer.from(p));
    const other = packet(30, 100 + i);
    r.offer(other, 0, other.length, 1, 5, 6);
  }
  await until(() => sink.chunks.length > 1, 'the first drain');
  assert.equal(sink.summary, null, 'got ended after 4 of 5 packets, want running');
  prod[0]!.beginBatch();
  const p5 = packet(99, 5);
  prod[0]!.offer(p5, 0, p5.length, 1, -1, 2);
  sent.push(Buffer.from(p5));
  const extra = packet(70, 6);
  prod[0]!.offer(extra, 0, extra.length, 1, 2, 1); // beyond count: not emitted
  const sum = await h.done;
  assert.deepEqual(sum, { packets: 5, lost: 0, reason: 'count' }, `summary got ${JSON.stringify(sum)}`);
  assert.equal(ctl.active, 0, `active got ${ctl.active} after the end, want 0`);
  prod.forEach((r, i) => assert.equal(r.armed(), 0, `ring ${i}: got armed after the end, want disarmed`));
  const f = readPcap(sink.bytes());
  assert.equal(f.magic, 0xa1b2c3d4, `magic got ${f.magic.toString(16)}`);
  assert.equal(f.snaplen, 256, `snaplen got ${f.snaplen}, want 256 (the slot size)`);
  assert.equal(f.records.length, 5, `records got ${f.records.length}, want 5`);
  const gotData = f.records.map((r) => r.data.toString('hex')).sort();
  const wantData = sent.map((b) => b.toString('hex')).sort();
  assert.deepEqual(gotData, wantData, 'got other packets than the five sent for endpoint 2');
  const now = Date.now() / 1000;
  for (const r of f.records) {
    assert.ok(Math.abs(r.sec - now) < 60, `timestamp got ${r.sec}, want about ${now}`);
    assert.ok(r.usec < 1_000_000, `usec got ${r.usec}, want < 1e6`);
  }
  for (let i = 1; i < f.records.length; i++) {
    const a = f.records[i - 1]!;
    const b = f.records[i]!;
    assert.ok(a.sec < b.sec || (a.sec === b.sec && a.usec <= b.usec), `record ${i} is older than record ${i - 1} within one drain`);
  }
});

test('capture controller: stop(), duration and lost records; a late record of the old capture is not the next one\'s', async () => {
  const prod = producers(1, 4, 64);
  const ctl = new CaptureController(prod.map((r) => r.sab), 5);
  const s1 = memorySink();
  const h1 = ctl.start({ endpoint: -1 }, s1);
  // Overflow the 4-slot ring before a drain: 4 kept, 6 lost.
  const r = prod[0]!;
  r.beginBatch();
  for (let i = 0; i < 10; i++) {
    const p = packet(20, i);
    r.offer(p, 0, p.length, 1, 0, 1);
  }
  h1.stop();
  const sum1 = await h1.done;
  assert.deepEqual(sum1, { packets: 4, lost: 6, reason: 'stopped' }, `summary got ${JSON.stringify(sum1)}`);
  assert.equal(readPcap(s1.bytes()).records.length, 4, 'pcap records: want 4');
  assert.equal(ctl.active, 0, `active got ${ctl.active}, want 0 after the end`);

  // A record the late batch writes under the old capture's generation lands after the next
  // capture took the same slot: it is not part of the next capture.
  const s2 = memorySink();
  const t0 = Date.now();
  const h2 = ctl.start({ endpoint: -1, durationS: 0.1, verdict: 'DROPPED' }, s2);
  r.offer(packet(20, 50), 0, 20, -181, 0, 1); // the batch begun under capture 1
  r.beginBatch();
  r.offer(packet(20, 60), 0, 20, 1, 0, 1); // forwarded: filtered
  r.offer(packet(24, 61), 0, 24, -181, 0, 1); // dropped: kept
  const sum2 = await h2.done;
  const ms = Date.now() - t0;
  assert.deepEqual(sum2, { packets: 1, lost: 0, reason: 'duration' }, `summary got ${JSON.stringify(sum2)}`);
  assert.ok(ms >= 90 && ms < 2000, `duration 0.1 s ended after ${ms} ms`);
  const f = readPcap(s2.bytes());
  assert.deepEqual(f.records.map((x) => x.data), [Buffer.from(packet(24, 61))], 'got other records than the one dropped packet');
});

test('capture controller: captures at once each get exactly their packets; a packet both match goes to both', async () => {
  const prod = producers(2, 64, 256);
  const ctl = new CaptureController(prod.map((r) => r.sab), 5);
  const cases = [
    { name: 'endpoint 1, all', opts: { endpoint: 1 } },
    { name: 'endpoint 2, dropped, snaplen 20', opts: { endpoint: 2, verdict: 'DROPPED' as const, snaplen: 20 } },
    { name: 'endpoint 3, forwarded, count 2', opts: { endpoint: 3, verdict: 'FORWARDED' as const, count: 2 } },
  ];
  const sinks = cases.map(() => memorySink());
  const handles = cases.map((c, i) => ctl.start(c.opts, sinks[i]!));
  assert.equal(ctl.active, 3, `active got ${ctl.active}, want 3`);
  // Packets: [src, dst, verdict]. The reference decides who wants each, independently.
  const pkts: [number, number, number][] = [
    [1, 2, 1],
    [2, 1, -133],
    [3, 4, 1],
    [3, 2, -181],
    [4, 3, 2],
    [1, 3, 3],
    [5, 6, 1],
    [2, 5, -133],
  ];
  const want: Buffer[][] = cases.map(() => []);
  pkts.forEach(([src, dst, verdict], k) => {
    const r = prod[k % 2]!;
    r.beginBatch();
    const p = packet(60 + k, k);
    assert.notEqual(r.offer(p, 0, p.length, verdict, src, dst), -1, `packet ${k}: got lost, want recorded or filtered`);
    cases.forEach((c, i) => {
      const o = c.opts as { endpoint: number; verdict?: string; snaplen?: number; count?: number };
      const v = verdict < 0 ? 'DROPPED' : 'FORWARDED';
      if ((src === o.endpoint || dst === o.endpoint) && (o.verdict === undefined || o.verdict === v) && want[i]!.length < (o.count ?? Infinity)) {
        want[i]!.push(Buffer.from(p.subarray(0, o.snaplen ?? p.length)));
      }
    });
  });
  await handles[2]!.done; // count 2
  handles[0]!.stop();
  handles[1]!.stop();
  const sums = await Promise.all(handles.map((h) => h.done));
  cases.forEach((c, i) => {
    const f = readPcap(sinks[i]!.bytes());
    const got = f.records.map((x) => x.data.toString('hex')).sort();
    const w = want[i]!.map((b) => b.toString('hex')).sort();
    assert.deepEqual(got, w, `${c.name}: got ${got.length} packets, want ${w.length} (${JSON.stringify(got)} vs ${JSON.stringify(w)})`);
    assert.equal(sums[i]!.packets, w.length, `${c.name}: summary packets got ${sums[i]!.packets}, want ${w.length}`);
    if (c.opts.snaplen !== undefined) {
      assert.equal(f.snaplen, c.opts.snaplen, `${c.name}: file snaplen got ${f.snaplen}, want ${c.opts.snaplen}`);
      assert.ok(f.records.every((x) => x.orig > x.incl), `${c.name}: got records not cut at the snap length`);
    }
  });
  assert.equal(ctl.active, 0, `active got ${ctl.active}, want 0`);
  prod.forEach((r, i) => assert.equal(r.armed(), 0, `ring ${i}: got armed after every capture ended, want 0`));
});

test('capture controller: slot exhaustion is CaptureBusyError (409); an ended capture frees its slot', async () => {
  const prod = producers(1);
  const ctl = new CaptureController(prod.map((r) => r.sab), 5);
  const handles = [];
  for (let i = 0; i < MAX_CAPTURES; i++) handles.push(ctl.start({ endpoint: i }, memorySink()));
  assert.equal(ctl.busy, true, 'got not busy with every slot taken');
  assert.throws(
    () => ctl.start({ endpoint: -1 }, memorySink()),
    (e: unknown) => e instanceof CaptureBusyError && e.status === 409 && e.code === 'ECAPTURE_BUSY' && /all 8 capture slots are busy/.test(e.message),
    'start #9: got no CaptureBusyError (409, "all 8 capture slots are busy")',
  );
  handles[3]!.stop();
  assert.deepEqual(await handles[3]!.done, { packets: 0, lost: 0, reason: 'stopped' });
  assert.equal(ctl.busy, false, 'got busy after one capture ended');
  const s = memorySink();
  const h = ctl.start({ endpoint: 42, count: 1 }, s);
  const r = prod[0]!;
  r.beginBatch();
  r.offer(packet(30, 1), 0, 30, 1, 42, 7);
  assert.deepEqual(await h.done, { packets: 1, lost: 0, reason: 'count' }, 'capture in the freed slot: got another summary');
  ctl.stopAll();
  const all = await Promise.all(handles.map((x) => x.done));
  assert.ok(all.every((x) => x.reason === 'stopped'), 'stopAll: got captures that did not stop');
  assert.equal(ctl.active, 0, `active got ${ctl.active} after stopAll, want 0`);
  assert.equal(r.armed(), 0, 'ring still armed after stopAll');
});

test('capture controller: a sink that is not ready loses its packets (counted) and holds up no other capture', async () => {
  const prod = producers(1);
  const ctl = new CaptureController(prod.map((r) => r.sab), 5);
  const slow = Object.assign(memorySink(), { ready: () => false });
  const fast = memorySink();
  const hs = ctl.start({ endpoint: 1 }, slow);
  const hf = ctl.start({ endpoint: 1, count: 3 }, fast);
  const r = prod[0]!;
  r.beginBatch();
  for (let i = 0; i < 3; i++) r.offer(packet(40, i), 0, 40, 1, 1, 2);
  assert.deepEqual(await hf.done, { packets: 3, lost: 0, reason: 'count' }, 'fast capture: got another summary');
  hs.stop();
  assert.deepEqual(await hs.done, { packets: 0, lost: 3, reason: 'stopped' }, 'slow capture: got another summary');
});

test('capture controller: with no rings, start is ENOT_SUPPORTED', () => {
  const ctl = new CaptureController([]);
  assert.throws(() => ctl.start({ endpoint: 0 }, memorySink()), (e: unknown) => e instanceof TunswitchError && e.code === 'ENOT_SUPPORTED', 'got no ENOT_SUPPORTED');
  assert.equal(ctl.busy, false, 'got busy, want idle');
});

test('capture request: checks name the field', () => {
  const good = [
    { body: { endpoint: 'web' }, want: { endpoint: 'web' } },
    { body: { endpoint: 3, count: 10 }, want: { endpoint: '3', count: 10 } },
    { body: { endpoint: 'db', verdict: 'DROPPED', duration: 2.5 }, want: { endpoint: 'db', verdict: 'DROPPED', duration: 2.5 } },
  ];
  for (const g of good) assert.deepEqual(checkCaptureRequest(g.body), g.want, `${JSON.stringify(g.body)}: got another request`);
  const badCases: { body: unknown; field: string }[] = [
    { body: undefined, field: 'body:' },
    { body: [1], field: 'body:' },
    { body: {}, field: 'body.endpoint' },
    { body: { endpoint: '' }, field: 'body.endpoint' },
    { body: { endpoint: -1 }, field: 'body.endpoint' },
    { body: { endpoint: 'web', count: 0 }, field: 'body.count' },
    { body: { endpoint: 'web', count: 1.5 }, field: 'body.count' },
    { body: { endpoint: 'web', count: '5' }, field: 'body.count' },
    { body: { endpoint: 'web', verdict: 'dropped' }, field: 'body.verdict' },
    { body: { endpoint: 'web', duration: 0 }, field: 'body.duration' },
    { body: { endpoint: 'web', duration: 1e9 }, field: 'body.duration' },
    { body: { endpoint: 'web', snap: 1 }, field: 'body.snap' },
  ];
  for (const b of badCases) {
    assert.throws(
      () => checkCaptureRequest(b.body),
      (e: unknown) => e instanceof TunswitchError && e.code === 'EBAD_REQUEST' && e.message.startsWith(b.field),
      `${JSON.stringify(b.body)}: got no EBAD_REQUEST starting with ${b.field}`,
    );
  }
});
