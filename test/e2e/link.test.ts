/**
 * Link impairments end to end (src/runtime/impair.ts): a real switch between two namespaces,
 * `tunswitch link set|show|clear`, and real clients measuring what the settings promise:
 *   - the lab file's `link:` block is in force at start-up;
 *   - ping's RTT follows a 20 ms delay (p50 in 20-30 ms) and drops back under 5 ms after clear;
 *   - 20% loss gives ping a loss in 10-30%, counted as drop reason 237 in metrics and observe;
 *   - --duplicate 50% gives ping duplicate replies for 10-30 of 40 requests;
 *   - iperf3 TCP follows --rate 50mbit within ±25%;
 *   - a packet waiting 2 s in the delay line costs the switch almost no CPU (no busy spin);
 *   - bad flags are usage errors (exit 2) naming the flag; an unknown endpoint exits 1.
 * The delay sits on b's port (packets to b), so an echo request a -> b is delayed and its reply
 * is not: RTT ~ delay. Addresses from 10.81.0.0/24 only; lab names start with lk81.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { Lab, nsRun, requireE2e, sleep } from './helpers.js';
import type { LinkInfo } from '../../src/api/types.js';

const TAG = (process.pid % 100).toString(36);

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : (s[Math.min(s.length - 1, Math.floor(s.length * q))] as number);
}

function rtts(stdout: string): number[] {
  return [...stdout.matchAll(/time=([0-9.]+) ms/g)].map((m) => Number(m[1]));
}

/** utime + stime of a process and all its threads, in ms. */
function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return ((Number(rest[11]) + Number(rest[12])) * 1000) / 100; // CLK_TCK 100
}

describe('link impairments', () => {
  const lab = new Lab({
    name: `lk81${TAG}`,
    workers: 2,
    pool: { v4: '10.81.0', v6: 'fd00:81::', prefix: 'lk81' },
    extraConfig: ['hostPort: false'],
    nodes: [
      { name: 'a', labels: { app: 'a' } },
      { name: 'b', labels: { app: 'b' } },
    ],
  });
  let a = '';
  let b = '';

  async function ping(count: number, interval: string, wait = '2'): Promise<{ got: number[]; sent: number; stdout: string }> {
    const r = await nsRun(lab.ns('a'), ['ping', '-n', '-c', String(count), '-i', interval, '-W', wait, b], 30_000);
    return { got: rtts(r.stdout), sent: count, stdout: r.stdout };
  }

  async function dropCount(reason: string): Promise<number> {
    const m = await lab.cliJson<Record<string, { labels: Record<string, string>; value: number }[]>>(['metrics']);
    let s = 0;
    for (const x of m.cilium_drop_count_total ?? []) if (x.labels.reason?.startsWith(reason)) s += Number(x.value);
    return s;
  }

  before(async () => {
    await requireE2e();
    await lab.create();
    // The lab file's link: block on node b.
    const cfg = readFileSync(lab.configFile, 'utf8').replace(/^ {2}b: \{ labels: (\{[^}]*\}) \}$/m, '  b: { labels: $1, link: { delay: 10ms, seed: 1 } }');
    assert.match(cfg, /link: \{ delay: 10ms/, 'could not add the link: block to the lab file');
    writeFileSync(lab.configFile, cfg);
    assert.equal(await lab.start(), 2);
    a = lab.v4('a');
    b = lab.v4('b');
    assert.ok(a.startsWith('10.81.0.') && b.startsWith('10.81.0.'));
  });
  after(async () => {
    await lab.destroy();
  });

  it('the lab file\'s link: block is in force (delay 10ms: RTT p50 10-20 ms)', async (t) => {
    const shown = await lab.cliJson<LinkInfo>(['link', 'show', 'b']);
    assert.deepEqual(shown.link, { delay: '10ms', limit: '4MiB', seed: 1 }, `link show b got ${JSON.stringify(shown.link)}`);
    const none = await lab.cliJson<LinkInfo>(['link', 'show', 'a']);
    assert.equal(none.link, null, `link show a got ${JSON.stringify(none.link)}, want null`);
    const p = await ping(10, '0.05');
    const p50 = quantile(p.got, 0.5);
    t.diagnostic(`lab file delay 10ms: RTT p50 ${p50} ms over ${p.got.length}/10`);
    assert.ok(p.got.length >= 9, `replies got ${p.got.length}/10, want >= 9`);
    assert.ok(p50 >= 10 && p50 < 20, `RTT p50 got ${p50} ms, want 10-20`);
  });

  it('ping RTT follows --delay 20ms --jitter 2ms (p50 20-30 ms) and is back under 5 ms after clear', async (t) => {
    const set = await lab.cli(['link', 'set', 'b', '--delay', '20ms', '--jitter', '2ms', '--distribution', 'normal', '--seed', '7']);
    assert.equal(set.code, 0, `link set: ${set.stderr}`);
    assert.match(set.stdout, /b\s+20ms\s+2ms normal/, `link set output: ${set.stdout}`);
    const p = await ping(30, '0.05');
    const p50 = quantile(p.got, 0.5);
    const min = Math.min(...p.got);
    t.diagnostic(`delay 20ms jitter 2ms normal: RTT min ${min} p50 ${p50} p90 ${quantile(p.got, 0.9)} ms over ${p.got.length}/30`);
    assert.ok(p.got.length >= 28, `replies got ${p.got.length}/30, want >= 28`);
    assert.ok(p50 >= 20 && p50 <= 30, `RTT p50 got ${p50} ms, want 20-30`);
    assert.ok(min >= 14, `RTT min got ${min} ms, want >= 14 (20 ms - 3 x 2 ms jitter)`);

    const clr = await lab.cli(['link', 'clear', 'b']);
    assert.equal(clr.code, 0, `link clear: ${clr.stderr}`);
    assert.equal((await lab.cliJson<LinkInfo>(['link', 'show', 'b'])).link, null);
    const q = await ping(20, '0.05');
    const q50 = quantile(q.got, 0.5);
    t.diagnostic(`after clear: RTT p50 ${q50} ms over ${q.got.length}/20`);
    assert.ok(q.got.length >= 19, `replies got ${q.got.length}/20, want >= 19`);
    assert.ok(q50 < 5, `RTT p50 after clear got ${q50} ms, want < 5`);
  });

  it('--loss 20% gives ping a loss in 10-30%, counted as drop reason 237 (metrics, observe)', async (t) => {
    const before237 = await dropCount('tunswitch: link impairment loss');
    const set = await lab.cli(['link', 'set', 'b', '--loss', '20%', '--seed', '11']);
    assert.equal(set.code, 0, `link set: ${set.stderr}`);
    const p = await ping(200, '0.01', '1');
    const loss = 1 - p.got.length / p.sent;
    const drops = (await dropCount('tunswitch: link impairment loss')) - before237;
    t.diagnostic(`loss 20%: ping lost ${(loss * 100).toFixed(1)}% of 200; drop reason 237 counted ${drops}`);
    assert.ok(loss >= 0.1 && loss <= 0.3, `ping loss got ${(loss * 100).toFixed(1)}%, want 10-30%`);
    assert.ok(drops >= 200 * loss - 2 && drops <= 200 * loss + 2, `drop reason 237 counted ${drops}, want ~${Math.round(200 * loss)} (the pings lost)`);
    const obs = await lab.cli(['observe', '--verdict', 'DROPPED', '--last', '500', '-o', 'json']);
    assert.equal(obs.code, 0, `observe: ${obs.stderr}`);
    assert.match(obs.stdout, /link impairment loss/, 'observe does not show the link loss drops');
    assert.equal((await lab.cli(['link', 'clear', 'b'])).code, 0);
  });

  it('--duplicate 50% makes ping see duplicates (DUP!) for about half its requests', async (t) => {
    assert.equal((await lab.cli(['link', 'set', 'b', '--duplicate', '50%', '--seed', '5'])).code, 0);
    const r = await nsRun(lab.ns('a'), ['ping', '-n', '-c', '40', '-i', '0.02', '-W', '1', b], 20_000);
    const dups = (r.stdout.match(/DUP!/g) ?? []).length;
    t.diagnostic(`duplicate 50%: ${dups} duplicate replies to 40 requests`);
    assert.ok(dups >= 10 && dups <= 30, `duplicates got ${dups}, want 10-30 of 40`);
    assert.equal((await lab.cli(['link', 'clear', 'b'])).code, 0);
  });

  it('iperf3 TCP follows --rate 50mbit within ±25%', async (t) => {
    const set = await lab.cli(['link', 'set', 'b', '--rate', '50mbit']);
    assert.equal(set.code, 0, `link set: ${set.stderr}`);
    const srv = lab.background('b', ['iperf3', '-s', '-1', '-B', b, '-p', '5381']);
    try {
      await lab.waitListening('b', 'tcp', 5381);
      const aqm0 = await dropCount('tunswitch: egress queue AQM');
      const r = await nsRun(lab.ns('a'), ['iperf3', '-c', b, '-p', '5381', '-t', '4', '-O', '1', '-J'], 30_000);
      assert.equal(r.code, 0, `iperf3: ${r.stderr.trim()} ${r.stdout.slice(0, 300)}`);
      const bps = (JSON.parse(r.stdout) as { end?: { sum_received?: { bits_per_second?: number } } }).end?.sum_received?.bits_per_second ?? 0;
      const aqm = (await dropCount('tunswitch: egress queue AQM')) - aqm0;
      const retr = (JSON.parse(r.stdout) as { end?: { sum_sent?: { retransmits?: number } } }).end?.sum_sent?.retransmits ?? -1;
      t.diagnostic(`rate 50mbit: iperf3 TCP received ${(bps / 1e6).toFixed(1)} Mbit/s (goodput; 48.3 is the most 1448-byte segments in 1500-byte packets carry), CoDel drops ${aqm}, retransmits ${retr}`);
      assert.ok(bps >= 37.5e6 && bps <= 62.5e6, `iperf3 rate got ${(bps / 1e6).toFixed(1)} Mbit/s, want 37.5-62.5`);
    } finally {
      if (srv.child.exitCode === null) srv.child.kill('SIGKILL');
      await srv.done;
    }
    assert.equal((await lab.cli(['link', 'clear', 'b'])).code, 0);
  });

  it('a packet waiting 2 s in the delay line costs the switch almost no CPU (no busy spin)', async (t) => {
    assert.equal((await lab.cli(['link', 'set', 'b', '--delay', '2s'])).code, 0);
    const pid = lab.agent?.pid as number;
    const pinger = nsRun(lab.ns('a'), ['ping', '-n', '-c', '1', '-W', '4', b], 10_000);
    await sleep(300);
    const c0 = cpuMs(pid);
    await sleep(1500);
    const used = cpuMs(pid) - c0;
    const p = await pinger;
    const rtt = rtts(p.stdout)[0] ?? NaN;
    t.diagnostic(`delay 2s: switch CPU ${used} ms over 1.5 s while the packet waited; RTT ${rtt} ms`);
    assert.ok(rtt >= 2000 && rtt < 2300, `RTT got ${rtt} ms, want 2000-2300`);
    assert.ok(used < 400, `switch CPU got ${used} ms over 1.5 s, want < 400 (a spinning worker uses ~1500)`);
    assert.equal((await lab.cli(['link', 'clear', 'b'])).code, 0);
  });

  it('link and queue settings made through the API survive a restart; the lab file\'s link: block wins for its node', async (t) => {
    const steps: [string[], string][] = [
      [['link', 'set', 'a', '--delay', '7ms', '--seed', '3'], 'link set a'],
      [['endpoint', 'queue', 'a', '--target', '3ms'], 'endpoint queue a'],
      [['link', 'set', 'b', '--delay', '30ms'], 'link set b'],
    ];
    for (const [args, what] of steps) {
      const r = await lab.cli(args);
      assert.equal(r.code, 0, `${what}: ${r.stderr}`);
    }
    const st = await lab.stop();
    assert.equal(st.code, 0, `stop: exit ${st.code}`);
    assert.equal(await lab.start(), 2, 'endpoints after the restart');
    const la = await lab.cliJson<LinkInfo>(['link', 'show', 'a']);
    assert.deepEqual(la.link, { delay: '7ms', limit: '4MiB', seed: 3 }, `link show a after the restart got ${JSON.stringify(la.link)}`);
    const qa = await lab.cliJson<{ targetMs: number }>(['endpoint', 'queue', 'a']);
    assert.equal(qa.targetMs, 3, `queue target of a after the restart got ${qa.targetMs} ms, want 3`);
    const lb = await lab.cliJson<LinkInfo>(['link', 'show', 'b']);
    assert.deepEqual(lb.link, { delay: '10ms', limit: '4MiB', seed: 1 }, `link show b after the restart got ${JSON.stringify(lb.link)}, want the lab file's`);
    // both delays are in force: 7 ms towards a, 10 ms towards b
    const p = await ping(10, '0.05');
    const p50 = quantile(p.got, 0.5);
    t.diagnostic(`after a restart: link a 7ms (saved) + link b 10ms (lab file): RTT p50 ${p50} ms over ${p.got.length}/10`);
    assert.ok(p.got.length >= 9, `replies got ${p.got.length}/10, want >= 9`);
    assert.ok(p50 >= 17 && p50 < 27, `RTT p50 got ${p50} ms, want 17-27`);
    assert.equal((await lab.cli(['link', 'clear', 'a'])).code, 0);
    assert.equal((await lab.cli(['endpoint', 'queue', 'a', '--target', '5ms'])).code, 0);
  });

  it('bad flags are usage errors naming the flag (exit 2); an unknown endpoint exits 1', async () => {
    const cases: [string[], number, string][] = [
      [['link', 'set', 'b', '--rate', '100mbits'], 2, 'Error: --rate: "100mbits" is not a rate (e.g. 100mbit, 1gbit, 500kbit)'],
      [['link', 'set', 'b', '--delay', '20'], 2, 'Error: --delay: "20" is not a duration (e.g. 20ms, 1.5s, 250us)'],
      [['link', 'set', 'b', '--loss', '5'], 2, 'Error: --loss: "5" is not a percentage from 0% to 100% (e.g. 1%, 0.5%)'],
      [['link', 'set', 'b', '--reorder', '5%'], 2, 'Error: --reorder: needs a delay (a reordered packet is one that skips the delay)'],
      [['link', 'set', 'b'], 2, 'Error: link set: give at least one of --delay'],
      [['link', 'set', 'nosuch', '--delay', '1ms'], 1, 'Error: endpoint "nosuch" not found'],
    ];
    for (const [args, code, msg] of cases) {
      const r = await lab.cli(args);
      assert.equal(r.code, code, `tunswitch ${args.join(' ')}: exit got ${r.code}, want ${code} (${r.stderr.trim()})`);
      assert.ok(r.stderr.startsWith(msg), `tunswitch ${args.join(' ')}: stderr got ${JSON.stringify(r.stderr.trim())}, want it to start with ${JSON.stringify(msg)}`);
      assert.equal(r.stderr.trim().split('\n').length, 1, `stderr is not one line: ${r.stderr}`);
    }
  });
});
