/**
 * Link impairments (src/runtime/impair.ts, src/runtime/link-spec.ts): the delay line against a
 * naive sorted list on seeded random input, and the statistics of every knob with fixed
 * seeds: delay ordering, jitter bounds and spread, random and Gilbert-Elliott loss, the EDT
 * rate, duplication, reordering, the delay line's limit, crash repair, and the parser's
 * errors.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { BURST_MS, DelayLine, ImpairShard, IMPAIR_LOSS, IMPAIR_OVERLIMIT, IMPAIR_QUEUED, LinkTable, HORIZON_MS } from '../../src/runtime/impair.js';
import { formatLinkSpec, linkParamsFromLabels, parseLinkSpec, LinkSpecError, type LinkParams } from '../../src/runtime/link-spec.js';
import { Rand } from '../helpers/rand.js';

const PORTS = 8;
const SLOTS = 4096;
/** A realistic clock value (ms since the epoch, as sharedNowMs()). */
const T0 = 1_764_580_000_000.25;

function params(o: Partial<LinkParams>): LinkParams {
  return { delayMs: 0, jitterMs: 0, distribution: 'uniform', loss: 0, ge: null, duplicate: 0, reorder: 0, rateBps: 0, limitBytes: 1 << 30, seed: 7, ...o };
}

function shard(lp: LinkParams | null, port = 1, slots = SLOTS): ImpairShard {
  const t = LinkTable.create(PORTS);
  t.set(port, lp);
  const s = new ImpairShard(t, DelayLine.create(slots, PORTS), 0, slots);
  s.enabled(port); // the worker's copy of the settings, as each transmit round takes it
  return s;
}

/** Admits n packets of `len` bytes at port p at time `now` (slots 0..n-1); returns the verdicts. */
function admitAll(s: ImpairShard, p: number, n: number, len: number, now: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const v = s.admit(p, i, len, now);
    out.push(v);
    if (v === IMPAIR_QUEUED && s.line.count >= s.line.cap) {
      s.line.pop(Infinity);
    }
  }
  return out;
}

/** Pops everything (due at any time): [slot, due, copies][]. */
function drain(line: DelayLine): [number, number, number][] {
  const out: [number, number, number][] = [];
  while (line.pop(Infinity)) out.push([line.outSlot, line.outDue, line.outCopies]);
  return out;
}

function meanStd(xs: number[]): { mean: number; std: number } {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const v = xs.reduce((a, b) => a + (b - mean) ** 2, 0) / xs.length;
  return { mean, std: Math.sqrt(v) };
}

describe('delay line', () => {
  it('pops in send-time order, FIFO among equal times, like a naive sorted list (seeded random)', () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      const r = new Rand(seed);
      const line = DelayLine.create(256, PORTS);
      const model: { slot: number; due: number; seq: number }[] = [];
      const free = Array.from({ length: 256 }, (_, i) => 255 - i);
      let seq = 0;
      let now = 0;
      for (let step = 0; step < 5000; step++) {
        if (free.length > 0 && r.int(3) !== 0) {
          const slot = free.pop() as number;
          const due = now + r.int(8); // many equal times
          line.push(slot, r.int(PORTS), 100, 1, due);
          model.push({ slot, due, seq: seq++ });
        } else {
          now += r.int(3);
          model.sort((a, b) => a.due - b.due || a.seq - b.seq);
          while (model.length > 0 && (model[0] as { due: number }).due <= now) {
            const want = model.shift() as { slot: number; due: number };
            assert.equal(line.pop(now), true, `seed ${seed} step ${step}: pop got nothing, want slot ${want.slot}`);
            assert.equal(line.outSlot, want.slot, `seed ${seed} step ${step}: got slot ${line.outSlot}, want ${want.slot}`);
            free.push(want.slot);
          }
          assert.equal(line.pop(now), false, `seed ${seed} step ${step}: popped a packet that is not due`);
        }
        assert.equal(line.count, model.length, `seed ${seed}: count got ${line.count}, want ${model.length}`);
      }
    }
  });

  it('repair() keeps valid entries in order, drops duplicated and claimed slots, recounts bytes', () => {
    const line = DelayLine.create(64, PORTS);
    for (let i = 0; i < 20; i++) line.push(i, 2, 1000, 1, 100 - i);
    // A torn swap: entry 5 overwritten with a copy of entry 6 (same slot twice).
    const i32 = new Int32Array(line.sab);
    i32[4 + 5 * 4] = i32[4 + 6 * 4] as number;
    const queued = new Uint8Array(64);
    queued[19] = 1; // claimed by the egress queue: not the delay line's
    const kept = line.repair(queued);
    assert.equal(kept, 18, `kept got ${kept}, want 18`);
    assert.equal(line.portBytes(2), 18_000, `bytes got ${line.portBytes(2)}, want 18000`);
    let last = -Infinity;
    for (const [slot, due] of drain(line)) {
      assert.ok(due >= last, `due ${due} after ${last}: heap order broken`);
      assert.equal(queued[slot], 1, `slot ${slot} kept but not marked queued`);
      last = due;
    }
  });
});

describe('impairments', () => {
  it('delay without jitter keeps order and adds exactly the delay', () => {
    const s = shard(params({ delayMs: 20 }));
    for (let i = 0; i < 100; i++) assert.equal(s.admit(1, i, 100, T0 + i * 0.1), IMPAIR_QUEUED);
    const out = drain(s.line);
    out.forEach(([slot, due], i) => {
      assert.equal(slot, i, `position ${i}: got slot ${slot}, want ${i}`);
      assert.ok(Math.abs(due - (T0 + i * 0.1 + 20)) < 1e-6, `slot ${i}: due ${due - T0}, want ${i * 0.1 + 20}`);
    });
    assert.equal(s.line.portBytes(1), 0, 'bytes left after draining');
  });

  it('nothing leaves the delay line before it is due; wakeMs is the next send time', () => {
    const s = shard(params({ delayMs: 20 }));
    s.beginRound();
    s.admit(1, 0, 100, T0);
    assert.equal(s.wakeMs, T0 + 20, `wakeMs got ${s.wakeMs - T0}, want 20`);
    assert.equal(s.popDue(T0 + 19.9), false, 'popped 0.1 ms early');
    assert.equal(s.popDue(T0 + 20), true, 'not popped when due');
  });

  const jitterCases = [
    { dist: 'uniform' as const, lo: 15, hi: 25, std: 5 / Math.sqrt(3) },
    { dist: 'normal' as const, lo: 5, hi: 35, std: 5 * 0.986 }, // N(0,1) cut at ±3 has sd 0.986
  ];
  for (const c of jitterCases) {
    it(`jitter 5ms ${c.dist}: every delay in [${c.lo}, ${c.hi}] ms, mean 20, spread as the distribution's`, () => {
      const s = shard(params({ delayMs: 20, jitterMs: 5, distribution: c.dist, seed: 42 }));
      const xs: number[] = [];
      for (let i = 0; i < 20000; i++) xs.push(s.delaySample(1));
      const min = Math.min(...xs);
      const max = Math.max(...xs);
      assert.ok(min >= c.lo && max <= c.hi, `range got [${min}, ${max}], want within [${c.lo}, ${c.hi}]`);
      const { mean, std } = meanStd(xs);
      assert.ok(Math.abs(mean - 20) < 0.15, `mean got ${mean}, want 20 ± 0.15`);
      assert.ok(Math.abs(std - c.std) / c.std < 0.05, `std got ${std}, want ${c.std} ± 5%`);
      if (c.dist === 'normal') {
        const within1 = xs.filter((x) => Math.abs(x - 20) <= 5).length / xs.length;
        assert.ok(Math.abs(within1 - 0.6827) < 0.02, `share within 1 sd got ${within1}, want 0.683 ± 0.02`);
      }
    });
  }

  it('jitter larger than the delay never gives a negative delay', () => {
    const s = shard(params({ delayMs: 1, jitterMs: 10, seed: 3 }));
    for (let i = 0; i < 5000; i++) {
      const d = s.delaySample(1);
      assert.ok(d >= 0 && d <= 11, `delay got ${d}, want within [0, 11]`);
    }
  });

  it('random loss 20% with a fixed seed: rate within ±1% of 20% over 20000 packets, same seed same pattern', () => {
    const pattern = (seed: number): number[] => admitAll(shard(params({ loss: 0.2, seed })), 1, 20000, 100, T0);
    const a = pattern(1234);
    const lost = a.filter((v) => v === IMPAIR_LOSS).length / a.length;
    assert.ok(Math.abs(lost - 0.2) < 0.01, `loss got ${lost}, want 0.2 ± 0.01`);
    assert.deepEqual(pattern(1234), a, 'the same seed gave another loss pattern');
    assert.notDeepEqual(pattern(1235), a, 'another seed gave the same loss pattern');
  });

  it('Gilbert-Elliott p=5% r=20%: loss p/(p+r) = 20% in bursts of mean 1/r = 5 (random loss: 1.25)', () => {
    const bursts = (v: number[]): number => {
      let n = 0;
      let total = 0;
      let run = 0;
      for (const x of v) {
        if (x === IMPAIR_LOSS) run++;
        else if (run > 0) {
          n++;
          total += run;
          run = 0;
        }
      }
      return total / n;
    };
    const ge = admitAll(shard(params({ ge: { p: 0.05, r: 0.2, bad: 1, good: 0 }, seed: 99 })), 1, 50000, 100, T0);
    const lost = ge.filter((v) => v === IMPAIR_LOSS).length / ge.length;
    assert.ok(Math.abs(lost - 0.2) < 0.02, `gemodel loss got ${lost}, want 0.2 ± 0.02`);
    const b = bursts(ge);
    assert.ok(b > 4.5 && b < 5.5, `gemodel mean burst got ${b}, want 5 ± 0.5`);
    const rnd = bursts(admitAll(shard(params({ loss: 0.2, seed: 99 })), 1, 50000, 100, T0));
    assert.ok(rnd > 1.15 && rnd < 1.35, `random mean burst got ${rnd}, want 1.25 ± 0.1`);
  });

  it('duplicate 10% and reorder 25%: shares within tolerance; a reordered packet skips the delay', () => {
    const s = shard(params({ delayMs: 50, duplicate: 0.1, reorder: 0.25, seed: 5 }));
    const n = 4000;
    for (let i = 0; i < n; i++) s.admit(1, i, 100, T0);
    const out = drain(s.line);
    const dup = out.filter(([, , c]) => c === 2).length / n;
    const early = out.filter(([, due]) => due === T0).length / n;
    assert.ok(Math.abs(dup - 0.1) < 0.015, `duplicate share got ${dup}, want 0.1 ± 0.015`);
    assert.ok(Math.abs(early - 0.25) < 0.02, `reordered share got ${early}, want 0.25 ± 0.02`);
    assert.ok(out.every(([, due]) => due === T0 || due === T0 + 50), 'a packet neither delayed nor reordered');
  });

  it('the delay line refuses packets past its byte limit and past its packet cap', () => {
    const s = shard(params({ delayMs: 10, limitBytes: 4096 }));
    const v = [0, 1, 2].map((i) => s.admit(1, i, 1500, T0));
    assert.deepEqual(v, [IMPAIR_QUEUED, IMPAIR_QUEUED, IMPAIR_OVERLIMIT], `verdicts got ${v}`);
    const t = LinkTable.create(PORTS);
    t.set(1, params({ delayMs: 10 }));
    const capped = new ImpairShard(t, DelayLine.create(64, PORTS), 0, 4);
    capped.enabled(1);
    const w = [0, 1, 2, 3, 4].map((i) => capped.admit(1, i, 100, T0));
    assert.deepEqual(w, [0, 0, 0, 0, IMPAIR_OVERLIMIT], `verdicts with a 4-packet cap got ${w}`);
  });

  {
    it('rate 8mbit (EDT): 1000-byte packets depart 1 ms apart; the gate holds the backlog in the queue', () => {
      const s = shard(params({ rateBps: 8e6 }));
      const start = T0;
      let now = start;
      let admitted = 0;
      let held = 0;
      // A backlog of 500 packets, offered every 0.1 ms as the worker would (one round each).
      while (admitted < 500) {
        s.beginRound();
        while (admitted < 500 && s.mayAdmit(1, now)) {
          assert.equal(s.admit(1, admitted, 1000, now), IMPAIR_QUEUED);
          admitted++;
        }
        if (admitted < 500) {
          held++;
          assert.ok(s.wakeMs > now - BURST_MS - 0.1 && s.wakeMs <= now + HORIZON_MS, `wakeMs got now+${s.wakeMs - now}, want within (-${BURST_MS}, ${HORIZON_MS}] ms`);
        }
        // Never more than the horizon (plus one packet) ahead of the clock.
        assert.ok(s.line.count <= HORIZON_MS + BURST_MS + 2, `delay line holds ${s.line.count} packets; the backlog should wait in the queue`);
        while (s.line.pop(now)) {
          /* sent */
        }
        now += 0.1;
      }
      assert.ok(held > 400, `gate closed in ${held} rounds, want most of them`);
      const elapsed = now - start;
      const rate = (500 * 1000 * 8) / elapsed / 1000; // Mbit/s
      assert.ok(Math.abs(rate - 8) < 0.1, `rate got ${rate} Mbit/s, want 8 ± 0.1`);
      // Idle for five minutes: the next packet departs at once (with the bucket's burst), not on the old clock.
      const later = now + 300_000;
      drain(s.line);
      s.beginRound();
      assert.equal(s.mayAdmit(1, later), true, 'gate closed after a long idle time');
      s.admit(1, 0, 1000, later);
      s.line.pop(Infinity);
      assert.equal(s.line.outDue, later - BURST_MS, `departure after idle got now+${s.line.outDue - later}, want now-${BURST_MS}`);
    });
  }

  it('a lock held by a dead worker is released by recovery', () => {
    const t = LinkTable.create(PORTS);
    t.set(1, params({ rateBps: 8e6 }));
    const i32 = t.i;
    Atomics.store(i32, 1 * 2 + 1, 2); // shard 1's worker died holding port 1's lock
    t.releaseLocks(2);
    const s = new ImpairShard(t, DelayLine.create(16, PORTS), 0, 16);
    s.enabled(1);
    assert.equal(s.admit(1, 0, 1000, T0), IMPAIR_QUEUED);
    assert.equal(Atomics.load(i32, 1 * 2 + 1), 0, 'lock not free after admit');
  });

  it('two shards share a port\'s rate (one EDT clock per port)', () => {
    const t = LinkTable.create(PORTS);
    t.set(3, params({ rateBps: 8e6 }));
    const a = new ImpairShard(t, DelayLine.create(SLOTS, PORTS), 0, SLOTS);
    const b = new ImpairShard(t, DelayLine.create(SLOTS, PORTS), 1, SLOTS);
    a.enabled(3);
    b.enabled(3);
    const deps: number[] = [];
    for (let i = 0; i < 10; i++) {
      (i % 2 === 0 ? a : b).admit(3, i, 1000, T0);
    }
    for (const line of [a.line, b.line]) for (const [, due] of drain(line)) deps.push(due - T0);
    deps.sort((x, y) => x - y);
    deps.forEach((d, i) => assert.ok(Math.abs(d - (i - BURST_MS)) < 1e-3, `departure ${i} got ${d} ms, want ${i - BURST_MS}`));
  });

  it('a change from the control thread is picked up; clearing turns the port off', () => {
    const t = LinkTable.create(PORTS);
    const s = new ImpairShard(t, DelayLine.create(16, PORTS), 0, 16);
    assert.equal(s.enabled(2), false, 'port on before any setting');
    t.set(2, params({ delayMs: 5 }));
    assert.equal(s.enabled(2), true, 'setting not seen');
    assert.deepEqual(t.get(2), params({ delayMs: 5 }), 'get() does not give back what set() wrote');
    t.set(2, null);
    assert.equal(s.enabled(2), false, 'clear not seen');
    assert.equal(t.get(2), null);
  });
});

describe('link spec', () => {
  const field = (k: string): string => `--${k}`;
  const ok: [Record<string, unknown>, Partial<LinkParams>][] = [
    [{ delay: '20ms', jitter: '5ms', loss: '1%', rate: '100mbit' }, { delayMs: 20, jitterMs: 5, loss: 0.01, rateBps: 1e8 }],
    [{ delay: '1.5s', distribution: 'normal', jitter: '250us' }, { delayMs: 1500, jitterMs: 0.25, distribution: 'normal' }],
    [{ lossModel: 'gemodel:p=1%,r=30%' }, { ge: { p: 0.01, r: 0.3, bad: 1, good: 0 } }],
    [{ lossModel: 'gemodel:p=2%,r=50%,bad=80%,good=0.1%' }, { ge: { p: 0.02, r: 0.5, bad: 0.8, good: 0.001 } }],
    [{ duplicate: '0.5%', reorder: '25%', delay: '10ms' }, { duplicate: 0.005, reorder: 0.25, delayMs: 10 }],
    [{ rate: '1gbit', limit: '512KiB', seed: 9 }, { rateBps: 1e9, limitBytes: 512 * 1024, seed: 9 }],
    [{ rate: '500kbit', seed: '12' }, { rateBps: 5e5, seed: 12 }],
  ];
  for (const [input, want] of ok) {
    it(`parses ${JSON.stringify(input)} and formats it back`, () => {
      const got = parseLinkSpec(input, field, () => 7);
      for (const [k, v] of Object.entries(want)) assert.deepEqual(got[k as keyof LinkParams], v, `${k} got ${JSON.stringify(got[k as keyof LinkParams])}, want ${JSON.stringify(v)}`);
      const again = parseLinkSpec(formatLinkSpec(got), field, () => 0);
      assert.deepEqual(again, got, 'format -> parse is not the identity');
    });
  }
  const bad: [Record<string, unknown>, string][] = [
    [{ rate: '100mbits' }, '--rate: "100mbits" is not a rate (e.g. 100mbit, 1gbit, 500kbit)'],
    [{ rate: '1bit' }, '--rate: "1bit" must be from 10kbit to 1000gbit'],
    [{ delay: '20' }, '--delay: "20" is not a duration (e.g. 20ms, 1.5s, 250us)'],
    [{ delay: 20 }, '--delay: 20 is not a duration (e.g. 20ms, 1.5s, 250us)'],
    [{ delay: '2m' }, '--delay: "2m" is not a duration (e.g. 20ms, 1.5s, 250us)'],
    [{ delay: '61s' }, '--delay: "61s" is longer than 60s'],
    [{ loss: '1' }, '--loss: "1" is not a percentage from 0% to 100% (e.g. 1%, 0.5%)'],
    [{ loss: '101%' }, '--loss: "101%" is not a percentage from 0% to 100% (e.g. 1%, 0.5%)'],
    [{ distribution: 'pareto', delay: '1ms' }, '--distribution: "pareto" is not a distribution (uniform or normal)'],
    [{ reorder: '10%' }, '--reorder: needs a delay (a reordered packet is one that skips the delay)'],
    [{ jitter: '5ms' }, '--jitter: needs a delay (jitter varies the delay)'],
    [{ lossModel: 'gemodel:p=1%' }, '--lossModel: gemodel needs r= (the chance to go from the bad state back to the good one)'],
    [{ lossModel: 'gemodel:p=1%,q=2%' }, '--lossModel: "q=2%" is not one of p=, r=, bad=, good= (e.g. gemodel:p=1%,r=30%)'],
    [{ lossModel: 'markov' }, '--lossModel: "markov" is not a loss model (random, or gemodel:p=1%,r=30%[,bad=100%][,good=0%])'],
    [{ lossModel: 'gemodel:p=1%,r=3%', loss: '1%' }, '--loss: cannot be combined with a gemodel loss model (its p, r, bad, good give the loss)'],
    [{ limit: '1k' }, '--limit: "1k" must be a size from 2KiB to 1GiB (e.g. 512KiB, 4MiB)'],
    [{ seed: -1 }, '--seed: -1 must be an integer from 0 to 4294967295'],
    [{ speed: '1mbit' }, '--speed: unknown field (known: delay, jitter, distribution, loss, lossModel, duplicate, reorder, rate, limit, seed)'],
  ];
  for (const [input, msg] of bad) {
    it(`refuses ${JSON.stringify(input)}`, () => {
      assert.throws(() => parseLinkSpec(input, field, () => 0), (e: unknown) => e instanceof LinkSpecError && e.message === msg, `want ${msg}`);
    });
  }

  it('reads Docker labels and names the bad one', () => {
    const lp = linkParamsFromLabels({ 'tunswitch.link.delay': '20ms', 'tunswitch.link.rate': '10mbit', 'tunswitch.link.loss-model': 'gemodel:p=1%,r=30%', app: 'web' }, () => 1);
    assert.equal(lp?.delayMs, 20);
    assert.equal(lp?.rateBps, 1e7);
    assert.equal(lp?.ge?.p, 0.01);
    assert.equal(linkParamsFromLabels({ app: 'web' }, () => 1), null);
    assert.throws(() => linkParamsFromLabels({ 'tunswitch.link.rate': 'fast' }, () => 1), /^LinkSpecError: label tunswitch.link.rate: "fast" is not a rate/);
  });
});

describe('lab file link: block', () => {
  const cases: [string, string | null][] = [
    ['{ delay: 20ms, jitter: 5ms, loss: 1%, rate: 100mbit, seed: 4 }', null],
    ['{ rate: fast }', 'lab.yaml: nodes.b.link.rate: "fast" is not a rate (e.g. 100mbit, 1gbit, 500kbit)'],
    ['{ delay: 20 }', 'lab.yaml: nodes.b.link.delay: 20 is not a duration (e.g. 20ms, 1.5s, 250us)'],
    ['{ lag: 1ms }', 'lab.yaml: nodes.b.link.lag: unknown field (known: delay, jitter, distribution, loss, lossModel, duplicate, reorder, rate, limit, seed)'],
    ['20ms', 'lab.yaml: nodes.b.link: must be a mapping of delay, jitter, distribution, loss, lossModel, duplicate, reorder, rate, limit, seed'],
  ];
  for (const [block, want] of cases) {
    it(`link: ${block} -> ${want ?? 'accepted'}`, async () => {
      const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
      const { join } = await import('node:path');
      const { tmpdir } = await import('node:os');
      const { loadRunConfig } = await import('../../src/runtime/config.js');
      const dir = mkdtempSync(join(tmpdir(), 'tsw-linkcfg-'));
      try {
        const file = join(dir, 'lab.yaml');
        writeFileSync(file, `name: lk81c\npool: { ipv4: 10.81.0.0/24 }\nnodes:\n  a: { labels: { app: a } }\n  b: { labels: { app: b }, link: ${block} }\n`);
        if (want === null) {
          const cfg = loadRunConfig(file);
          const b = cfg.nodes.find((n) => n.name === 'b');
          assert.deepEqual(b?.link, params({ delayMs: 20, jitterMs: 5, loss: 0.01, rateBps: 1e8, seed: 4, limitBytes: 4 << 20 }), `link got ${JSON.stringify(b?.link)}`);
          assert.equal(cfg.nodes.find((n) => n.name === 'a')?.link, undefined);
        } else {
          assert.throws(() => loadRunConfig(file), (e: unknown) => e instanceof Error && e.message === want, `want ${want}`);
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
