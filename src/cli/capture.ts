/**
 * `tunswitch capture ENDPOINT [-w FILE|-] [-F pcap|pcapng] [-s SNAPLEN] [--count N]
 * [--verdict FORWARDED|DROPPED] [--duration 10s]`: the packets the switch sees at an endpoint
 * (sent by it or to it). Without -w, one line per packet with its verdict, drop reason and
 * direction; with -w, a pcap (or pcapng, whose packet comments carry the verdict, drop
 * reason and direction) with LINKTYPE_RAW (101) for tcpdump, tshark and Wireshark; `-w -`
 * streams to stdout, so `tunswitch capture a -w - | tcpdump -r -` is live.
 *
 * The agent streams the pcap on `POST /v1/capture` and ends it after --count packets or
 * --duration seconds (without either, at Ctrl-C). The packet and lost counts arrive as
 * HTTP trailers. This side writes only whole pcap records, so a file cut short by Ctrl-C
 * is still valid.
 *
 * Packets are as the switch decided on them: a forwarded packet's TTL / hop limit is
 * already decremented; a dropped packet is as it arrived.
 */
import { createWriteStream } from 'node:fs';
import { Writable } from 'node:stream';
import { InvalidArgumentError, type Command } from 'commander';
import type { CaptureFormat, CaptureRequest, CaptureVerdict } from '../control/capture.js';
import { parsePositiveInt, type CliContext } from './context.js';
import { durationParser } from './duration.js';
import { fitLine } from '../text/width.js';


export function parseVerdict(s: string): CaptureVerdict {
  const v = s.toUpperCase();
  if (v !== 'FORWARDED' && v !== 'DROPPED') throw new InvalidArgumentError(`"${s}" is not FORWARDED or DROPPED.`);
  return v;
}

function parseFormat(s: string): CaptureFormat {
  if (s !== 'pcap' && s !== 'pcapng') throw new InvalidArgumentError(`"${s}" is not pcap or pcapng.`);
  return s;
}

function parseSnaplen(s: string): number {
  if (!/^\d+$/.test(s) || Number(s) < 1 || Number(s) > 65535) throw new InvalidArgumentError(`"${s}" is not a snap length (1-65535 bytes).`);
  return Number(s);
}

export function register(program: Command, ctx: CliContext): void {
  program
    .command('capture')
    .description('the packets the switch sees at an endpoint: a live view, or a pcap/pcapng file for tcpdump/tshark (-w)')
    .argument('<endpoint>', 'endpoint name or index')
    .option('-w, --write <file>', 'write a capture file ("-" for stdout, e.g. | tcpdump -r -); without -w, one line per packet')
    .option('-c, --count <n>', 'stop after this many packets', parsePositiveInt)
    .option('--verdict <verdict>', 'only FORWARDED or only DROPPED packets', parseVerdict)
    .option('--duration <duration>', 'stop after this long: 10s, 500ms, 2m (a bare number is in seconds)', (s: string) => durationParser('s')(s) / 1000)
    .option('-s, --snaplen <bytes>', 'bytes kept per packet (default: all the switch keeps, 2048)', parseSnaplen)
    .option('-F, --format <format>', 'pcap, or pcapng with verdict, drop reason and direction in each packet comment (tshark shows them)', parseFormat, 'pcap')
    .action(async (endpoint: string, o: { write?: string; count?: number; verdict?: CaptureVerdict; duration?: number; snaplen?: number; format: CaptureFormat }) => {
      const live = o.write === undefined;
      const body: CaptureRequest = { endpoint };
      if (o.count !== undefined) body.count = o.count;
      if (o.verdict !== undefined) body.verdict = o.verdict;
      if (o.duration !== undefined) body.duration = o.duration;
      if (o.snaplen !== undefined) body.snaplen = o.snaplen;
      // The live view reads the verdict from the pcapng comments.
      if (live || o.format === 'pcapng') body.format = 'pcapng';
      const toStdout = o.write === '-';
      const where = live ? 'the terminal' : toStdout ? 'stdout' : (o.write as string);
      const ac = new AbortController();
      const onSig = (): void => ac.abort();
      process.once('SIGINT', onSig);
      process.once('SIGTERM', onSig);
      const sinkless = new Writable({ write: (_c, _e, cb) => cb() });
      const { livePacketLine, runCapture } = await import('./capture-run.js');
      try {
        const r = await runCapture(
          ctx.socket(),
          body,
          () => (live ? sinkless : toStdout ? process.stdout : createWriteStream(o.write as string)),
          () => {
            const limits = [o.count !== undefined ? `${o.count} packets` : '', o.duration !== undefined ? `${o.duration} s` : ''].filter((s) => s !== '');
            ctx.warn(`capturing at ${endpoint}${o.verdict ? ` (${o.verdict} only)` : ''}, ${body.format ?? 'pcap'}, link-type RAW (101)${limits.length > 0 ? `, up to ${limits.join(' or ')}` : ', Ctrl-C to stop'}`);
          },
          ac.signal,
          live ? (b) => ctx.out(fitLine(livePacketLine(b)) + '\n') : undefined,
        );
        const msg = `captured ${r.packets} packets${r.lost !== null ? ` (${r.lost} lost)` : ''} to ${where}${r.interrupted ? ' (interrupted)' : ''}\n`;
        if (toStdout || live) process.stderr.write(msg);
        else ctx.out(msg);
      } finally {
        process.off('SIGINT', onSig);
        process.off('SIGTERM', onSig);
      }
    });
}
