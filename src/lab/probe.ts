/**
 * Servers and clients inside lab namespaces, for the demo and the end-to-end test. Both are
 * tiny Node programs run with `ip netns exec NS node -e ...`, so they need nothing but Node
 * (no socat or nc, whose flags differ between distributions).
 *
 * The server answers every connection on every port it listens on with a minimal HTTP
 * response, `hello from <node>:<port>`, so `curl backend:8080` and `nc backend 8080` both
 * show who answered. The TCP probe connects, sends a request and counts the flow as
 * connected only once the answer arrives: the whole round trip crossed the switch.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { LabError, run } from './sys.js';

/** argv: node name, then ports. Listens on :: (IPv4 and IPv6), prints "ready" once all listen. */
const SERVER_JS = `
const net = require('net');
const [who, ...ports] = process.argv.slice(1);
let left = ports.length;
for (const p of ports) {
  const srv = net.createServer((c) => {
    let answered = false;
    const answer = () => {
      if (answered) return;
      answered = true;
      const body = 'hello from ' + who + ':' + p + '\\n';
      c.end('HTTP/1.0 200 OK\\r\\ncontent-type: text/plain\\r\\ncontent-length: ' + body.length + '\\r\\nconnection: close\\r\\n\\r\\n' + body);
    };
    c.once('data', answer);
    c.setTimeout(300, answer);
    c.on('error', () => {});
  });
  srv.on('error', (e) => { console.error('listen ' + p + ': ' + e.message); process.exit(1); });
  srv.listen({ port: Number(p), host: '::', ipv6Only: false }, () => { if (--left === 0) console.log('ready'); });
}
process.on('SIGTERM', () => process.exit(0));
`;

/** argv: host, port, timeout ms. Prints one JSON line {ok, detail}. */
const TCP_PROBE_JS = `
const net = require('net');
const [host, port, ms] = process.argv.slice(1);
const out = (ok, detail) => { process.stdout.write(JSON.stringify({ ok, detail }) + '\\n'); process.exit(0); };
const s = net.connect({ host, port: Number(port) });
const timer = setTimeout(() => out(false, connected ? 'connected, no answer' : 'timeout'), Number(ms));
let connected = false, data = '';
s.on('connect', () => { connected = true; s.write('GET / HTTP/1.0\\r\\nhost: ' + host + '\\r\\n\\r\\n'); });
s.on('data', (d) => { data += d; const line = data.split('\\r\\n\\r\\n')[1]; if (line && line.includes('\\n')) { clearTimeout(timer); out(true, line.trim()); } });
s.on('error', (e) => { clearTimeout(timer); out(false, e.code === 'ECONNREFUSED' ? 'refused' : e.code === 'ECONNRESET' ? 'reset' : e.code || e.message); });
`;

export interface ServerHandle {
  netns: string;
  ports: number[];
  pid: number;
  stop(): Promise<void>;
  /** Lets the server outlive this process (lab down stops it with the namespace). */
  release(): void;
}

/** Starts the answering server in `netns`, listening on `ports`; resolves once it listens. */
export function startServer(netns: string, who: string, ports: readonly number[], timeoutMs = 5000): Promise<ServerHandle> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', SERVER_JS, who, ...ports.map(String)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // its own process group: Ctrl-C on the terminal reaches the demo, not the servers
    });
    let out = '';
    let err = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new LabError('ELAB_COMMAND', `server in ${netns} on ${ports.join(', ')}: not listening after ${timeoutMs} ms ${err.trim()}`));
    }, timeoutMs);
    child.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) {
        clearTimeout(timer);
        const stop = (): Promise<void> =>
          new Promise((res) => {
            if (child.exitCode !== null || child.signalCode !== null) {
              res();
              return;
            }
            child.once('exit', () => res());
            child.kill('SIGTERM');
          });
        const release = (): void => {
          child.removeAllListeners('exit');
          child.stdout?.destroy();
          child.stderr?.destroy();
          child.unref();
        };
        resolve({ netns, ports: [...ports], pid: child.pid as number, stop, release });
      }
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new LabError('ELAB_COMMAND', `server in ${netns}: ${e.message}`));
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new LabError('ELAB_COMMAND', `server in ${netns} on ${ports.join(', ')} exited (${code}): ${err.trim()}`));
    });
  });
}

export interface ProbeResult {
  /** The round trip completed (TCP: the answer arrived; ICMP: the echo reply). */
  ok: boolean;
  /** What happened: the answer, "timeout", "refused", ... */
  detail: string;
}

/** A TCP connection from inside `netns` to host:port, with an application-level answer. */
export async function tcpProbe(netns: string, host: string, port: number, timeoutMs: number): Promise<ProbeResult> {
  const r = await run('ip', ['netns', 'exec', netns, process.execPath, '-e', TCP_PROBE_JS, host, String(port), String(timeoutMs)], timeoutMs + 10_000);
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as ProbeResult;
  } catch {
    return { ok: false, detail: `probe failed: ${r.stderr.trim() || `exit ${r.code}`}` };
  }
}

/** One ICMP echo from inside `netns` (ping -c 1). */
export async function pingProbe(netns: string, host: string, timeoutMs: number): Promise<ProbeResult> {
  const secs = String(Math.max(1, Math.round(timeoutMs / 1000)));
  const fam = host.includes(':') ? '-6' : '-4';
  const r = await run('ip', ['netns', 'exec', netns, 'ping', fam, '-n', '-c', '1', '-W', secs, host], timeoutMs + 10_000);
  if (r.code === 0) {
    const m = /time=([\d.]+ ms)/.exec(r.stdout);
    return { ok: true, detail: m ? `reply in ${m[1]}` : 'reply' };
  }
  if (r.code === 127) return { ok: false, detail: 'ping is not installed' };
  return { ok: false, detail: /100% packet loss/.test(r.stdout) ? 'no reply' : r.stderr.trim() || `ping exit ${r.code}` };
}
