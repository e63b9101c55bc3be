/**
 * Worker side of bench/runtime/dispatch.ts. As a Piscina task (default export) it handles one
 * batch descriptor; as a plain worker_thread (workerData.ring set) it runs a ring loop like
 * workers/shard.ts: wait on HEAD, process, publish DONE.
 */
import { isMainThread, workerData } from 'node:worker_threads';

export interface Desc {
  slab: SharedArrayBuffer;
  first: number;
  count: number;
  workNs: number;
}

/** Stand-in for the pipeline: touches each packet's first bytes and spins workNs per packet. */
export function work(u8: Uint8Array, first: number, count: number, workNs: number): number {
  let acc = 0;
  for (let i = 0; i < count; i++) {
    const off = ((first + i) & 1023) * 2048;
    acc = (acc + (u8[off] as number) + (u8[off + 9] as number)) | 0;
    if (workNs > 0) {
      const end = process.hrtime.bigint() + BigInt(workNs);
      while (process.hrtime.bigint() < end) acc++;
    }
  }
  return acc;
}

let cached: Uint8Array | null = null;
let cachedSab: SharedArrayBuffer | null = null;

export default function handle(d: Desc): number {
  if (cachedSab !== d.slab) {
    cached = new Uint8Array(d.slab);
    cachedSab = d.slab;
  }
  return work(cached as Uint8Array, d.first, d.count, d.workNs);
}

// Ring mode: 0 HEAD, 1 DONE, 2 STOP, 8.. descriptors (first, count) pairs.
if (!isMainThread && workerData && (workerData as { ring?: SharedArrayBuffer }).ring) {
  const wd = workerData as { ring: SharedArrayBuffer; slab: SharedArrayBuffer; workNs: number };
  const ring = new Int32Array(wd.ring);
  const u8 = new Uint8Array(wd.slab);
  for (;;) {
    const head = Atomics.load(ring, 0);
    const done = Atomics.load(ring, 1);
    if (head === done) {
      if (Atomics.load(ring, 2) !== 0) break;
      Atomics.wait(ring, 0, head, 50);
      continue;
    }
    const k = 8 + (done & 255) * 2;
    work(u8, ring[k] as number, ring[k + 1] as number, wd.workNs);
    Atomics.store(ring, 1, done + 1);
    Atomics.notify(ring, 1);
  }
}
