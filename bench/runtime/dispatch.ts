/**
 * Dispatch cost: Piscina `run()` per batch versus a shared-memory ring per shard (the design
 * workers/shard.ts uses). Both carry the same batch descriptor (slab, first slot, count) and
 * do the same stand-in work; one batch per shard is in flight at a time, as ordering needs.
 *
 *   npm run build && node dist/bench/runtime/dispatch.js [--batches N] [--work-ns NS]
 *
 * Reports batches/s and µs per batch for each mode and batch size, and the share of a batch's
 * time that is dispatch overhead when a packet costs --work-ns in the pipeline (default 200 ns,
 * the measured pipeline-established-v4 cost; the real cost of the stand-in work is measured on
 * the main thread and subtracted). Writes bench/results/dispatch.json.
 */
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { writeFileSync, mkdirSync } from 'node:fs';
import { Piscina } from 'piscina';
import { work } from './dispatch-worker.js';

const here = dirname(fileURLToPath(import.meta.url));
const WORKER = join(here, 'dispatch-worker.js');

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(name);
  if (i < 0) return dflt;
  const v = Number(process.argv[i + 1]);
  if (!Number.isFinite(v) || v < 0) throw new Error(`${name}: ${process.argv[i + 1]} is not a number`);
  return v;
}

/** Atomics.waitAsync (V8 has it; the ES2022 lib typings do not). */
interface AtomicsAsync {
  waitAsync(a: Int32Array, i: number, v: number, t: number): { async: boolean; value: Promise<string> | string };
}

interface Row {
  mode: 'piscina-run' | 'ring' | 'ring-pipelined';
  batchSize: number;
  batchesPerSec: number;
  usPerBatch: number;
  workUsPerBatch: number;
  overheadShare: number;
}

async function piscinaMode(slab: SharedArrayBuffer, batches: number, size: number, workNs: number): Promise<number> {
  const pool = new Piscina({ filename: WORKER, minThreads: 1, maxThreads: 1 });
  for (let i = 0; i < 200; i++) await pool.run({ slab, first: i, count: size, workNs }); // warm-up
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < batches; i++) await pool.run({ slab, first: i, count: size, workNs });
  const dt = Number(process.hrtime.bigint() - t0) / 1e9;
  await pool.destroy();
  return batches / dt;
}

async function ringMode(slab: SharedArrayBuffer, batches: number, size: number, workNs: number): Promise<number> {
  const ringSab = new SharedArrayBuffer((8 + 512) * 4);
  const ring = new Int32Array(ringSab);
  const w = new Worker(WORKER, { workerData: { ring: ringSab, slab, workNs } });
  await new Promise((r) => setTimeout(r, 100));
  const one = async (i: number): Promise<void> => {
    const head = Atomics.load(ring, 0);
    const k = 8 + (head & 255) * 2;
    ring[k] = i;
    ring[k + 1] = size;
    Atomics.store(ring, 0, head + 1);
    Atomics.notify(ring, 0);
    // The main thread must not block: wait for DONE asynchronously, as the I/O loop would.
    while (Atomics.load(ring, 1) !== head + 1) {
      const r = (Atomics as unknown as AtomicsAsync).waitAsync(ring, 1, head, 100);
      if (r.async) await r.value;
    }
  };
  for (let i = 0; i < 200; i++) await one(i);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < batches; i++) await one(i);
  const dt = Number(process.hrtime.bigint() - t0) / 1e9;
  Atomics.store(ring, 2, 1);
  Atomics.notify(ring, 0);
  await w.terminate();
  return batches / dt;
}

/**
 * What the switch does: the I/O thread appends batches to the ring and goes back to reading;
 * it never waits for a batch to finish (the worker transmits and returns the slots). Order is
 * kept because one worker consumes the ring in order. Waits only when the ring is full.
 */
async function ringPipelined(slab: SharedArrayBuffer, batches: number, size: number, workNs: number): Promise<number> {
  const ringSab = new SharedArrayBuffer((8 + 512) * 4);
  const ring = new Int32Array(ringSab);
  const w = new Worker(WORKER, { workerData: { ring: ringSab, slab, workNs } });
  await new Promise((r) => setTimeout(r, 100));
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < batches; i++) {
    const head = Atomics.load(ring, 0);
    while (head - Atomics.load(ring, 1) >= 256) {
      const r = (Atomics as unknown as AtomicsAsync).waitAsync(ring, 1, Atomics.load(ring, 1), 100);
      if (r.async) await r.value;
    }
    const k = 8 + (head & 255) * 2;
    ring[k] = i;
    ring[k + 1] = size;
    Atomics.store(ring, 0, head + 1);
    Atomics.notify(ring, 0);
  }
  while (Atomics.load(ring, 1) !== batches) {
    const r = (Atomics as unknown as AtomicsAsync).waitAsync(ring, 1, Atomics.load(ring, 1), 100);
    if (r.async) await r.value;
  }
  const dt = Number(process.hrtime.bigint() - t0) / 1e9;
  Atomics.store(ring, 2, 1);
  Atomics.notify(ring, 0);
  await w.terminate();
  return batches / dt;
}

/** What the stand-in work of one batch really costs on this thread (µs), without dispatch. */
function calibrate(slab: SharedArrayBuffer, size: number, workNs: number): number {
  const u8 = new Uint8Array(slab);
  const n = 2000;
  for (let i = 0; i < 200; i++) work(u8, i, size, workNs);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) work(u8, i, size, workNs);
  return Number(process.hrtime.bigint() - t0) / 1000 / n;
}

async function main(): Promise<void> {
  const batches = arg('--batches', 3000);
  const workNs = arg('--work-ns', 200);
  const slab = new SharedArrayBuffer(1024 * 2048);
  const rows: Row[] = [];
  for (const size of [1, 16, 64]) {
    for (const mode of ['piscina-run', 'ring', 'ring-pipelined'] as const) {
      const bps =
        mode === 'ring'
          ? await ringMode(slab, batches, size, workNs)
          : mode === 'ring-pipelined'
            ? await ringPipelined(slab, batches, size, workNs)
            : await piscinaMode(slab, batches, size, workNs);
      const us = 1e6 / bps;
      const workUs = calibrate(slab, size, workNs);
      rows.push({ mode, batchSize: size, batchesPerSec: Math.round(bps), usPerBatch: +us.toFixed(2), workUsPerBatch: +workUs.toFixed(2), overheadShare: +Math.max(0, (us - workUs) / us).toFixed(3) });
      process.stderr.write('.');
    }
  }
  process.stderr.write('\n');
  const pad = (s: string | number, n: number): string => String(s).padEnd(n);
  console.log(`${pad('MODE', 13)}${pad('BATCH', 7)}${pad('BATCHES/S', 11)}${pad('US/BATCH', 10)}${pad('WORK US', 9)}DISPATCH SHARE`);
  for (const r of rows) {
    console.log(`${pad(r.mode, 13)}${pad(r.batchSize, 7)}${pad(r.batchesPerSec, 11)}${pad(r.usPerBatch, 10)}${pad(r.workUsPerBatch, 9)}${(r.overheadShare * 100).toFixed(1)}%`);
  }
  for (const size of [1, 16, 64]) {
    const a = rows.find((r) => r.mode === 'piscina-run' && r.batchSize === size) as Row;
    const b = rows.find((r) => r.mode === 'ring' && r.batchSize === size) as Row;
    const c = rows.find((r) => r.mode === 'ring-pipelined' && r.batchSize === size) as Row;
    console.log(
      `batch ${size}: ring round trip ${(b.batchesPerSec / a.batchesPerSec).toFixed(1)}x, pipelined ring ${(c.batchesPerSec / a.batchesPerSec).toFixed(1)}x piscina run() in batches/s`,
    );
  }
  const out = join(here, '..', '..', '..', 'bench', 'results');
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'dispatch.json'), JSON.stringify({ workNs, batches, rows }, null, 2) + '\n');
}

main().catch((e: unknown) => {
  console.error(`Error: ${(e as Error).message}`);
  process.exit(1);
});
