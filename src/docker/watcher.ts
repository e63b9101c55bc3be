/**
 * `tunswitch run --docker`, label mode (engines without network plugins, or containers that
 * should not be on a Docker network): containers labelled `tunswitch.enable=true` and started
 * with `network_mode: none` become endpoints. The network driver (driver.ts) is the other way.
 *
 * The watcher follows the Docker engine through its API socket (dockerode):
 *   1. subscribe to container events (start, die, stop, destroy) for labelled containers,
 *   2. list the labelled containers already running and attach each (the events stream is
 *      opened first, so a container that starts in between is seen at least once),
 *   3. on `start`: inspect the container, then agent.addEndpoint({ pid }) — the agent makes a
 *      TUN, moves it into /proc/PID/ns/net as eth0 and gives it a /32 from the pool,
 *   4. on `die` / `stop` / `destroy`: agent.deleteEndpoint(name),
 *   5. if the stream breaks (engine restart), reconnect with backoff and re-list, attaching
 *      what is new and detaching what is gone.
 * Work is done one container at a time in arrival order (one promise chain), so a quick
 * start/die/start of the same container is applied in order.
 *
 * Container labels (all optional except the first):
 *   tunswitch.enable=true        watch this container
 *   tunswitch.name=NAME          endpoint name (default: compose service, then container name)
 *   tunswitch.ipv4=ADDR          fixed address (default: from the pool)
 *   tunswitch.ipv6=ADDR
 *   tunswitch.defaultRoute=true  default route via the switch (e.g. for a `world` egress rule)
 *   tunswitch.namespace=NS       Kubernetes namespace (default: default); it must exist
 *                                (lab file `namespaces:` or `tunswitch namespace create NS`)
 *   tunswitch.ports=http:80/TCP,dns:53/UDP   named ports, for policies written with `port: http`
 *   tunswitch.link.delay=20ms    link impairments of the container's port (also .jitter,
 *   tunswitch.link.rate=10mbit   .distribution, .loss, .loss-model, .duplicate, .reorder,
 *                                .limit, .seed; src/runtime/link-spec.ts)
 * Every other label, except the engine's own (com.docker.*, org.opencontainers.*,
 * org.label-schema.*), becomes an identity label with source `container:`, as Cilium's
 * Docker integration does: `app: web` gives `container:app=web`, which a policy selects with
 * `matchLabels: { app: web }` (no source = any source).
 *
 * The container must run with `network_mode: none`: the switch gives it its only interface.
 * A container that cannot be attached gets one log line; the watcher goes on.
 */
import type { EndpointAddRequest } from '../api/types.js';
import { oneLine } from '../text/oneline.js';
import { TunswitchError } from '../proto/errors.js';
import { LinkSpecError, linkParamsFromLabels, type LinkParams } from '../runtime/link-spec.js';

/** What the watcher needs from the agent (src/control/agent.ts's Agent satisfies it). */
export interface DockerAgent {
  addEndpoint(req: EndpointAddRequest): Promise<unknown>;
  deleteEndpoint(name: string): Promise<void>;
  listEndpoints(): { name: string; netns?: string }[] | Promise<{ name: string; netns?: string }[]>;
  /** Link impairments from the container's tunswitch.link.* labels. */
  setEndpointLink?(name: string, lp: LinkParams | null): unknown;
}

/** The link impairments in a container's labels (null: none); a bad label throws DockerAttachError naming it. */
export function linkFor(labels: Record<string, string>): LinkParams | null {
  try {
    return linkParamsFromLabels(labels, () => (Math.random() * 2 ** 32) >>> 0);
  } catch (e) {
    if (e instanceof LinkSpecError) throw new DockerAttachError(e.message);
    throw e;
  }
}

export interface DockerWatchOptions {
  /** The engine's API socket; default: DOCKER_HOST, else /var/run/docker.sock. */
  socketPath?: string;
  log(msg: string): void;
  /** First reconnect delay after the events stream breaks; doubles up to 10 s. Default 500. */
  retryMs?: number;
}

export interface DockerWatcher {
  /** Stops following events and waits for the attach/detach in progress. Endpoints stay. */
  stop(): Promise<void>;
  /** Resolves when every event received so far has been applied (for tests). */
  idle(): Promise<void>;
}

/** The label that opts a container in, and the label filter handed to the engine. */
export const ENABLE_LABEL = 'tunswitch.enable';
const ENABLE_FILTER = `${ENABLE_LABEL}=true`;

/** Label key prefixes that are the engine's or the image's, not the workload's identity. */
export const IGNORED_LABEL_PREFIXES = ['com.docker.', 'tunswitch.', 'org.opencontainers.', 'org.label-schema.'];

/** A Docker call that is not a stream answers within this time, or counts as failed. */
const CALL_TIMEOUT_MS = 15_000;
const MAX_RETRY_MS = 10_000;
const NAME_MAX = 32;

/** What the watcher reads from `docker inspect`. */
export interface ContainerFacts {
  id: string;
  /** Without the leading "/". */
  name: string;
  labels: Record<string, string>;
  networkMode: string;
  running: boolean;
  pid: number;
}

export class DockerAttachError extends TunswitchError {
  constructor(message: string) {
    super('EDOCKER', message);
    this.name = 'DockerAttachError';
  }
}

/** Lower-case, a-z 0-9 and "-", no leading/trailing "-", at most 32 characters. */
export function sanitizeEndpointName(s: string): string {
  let out = s.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/-{2,}/g, '-');
  out = out.replace(/^-+/, '').slice(0, NAME_MAX).replace(/-+$/, '');
  return out;
}

/**
 * The endpoint's name: label tunswitch.name, else the compose service (with "-N" for the
 * N-th replica, N > 1), else the container name; sanitised. Falls back to "c-" + id.
 */
export function endpointNameFor(c: Pick<ContainerFacts, 'id' | 'name' | 'labels'>): string {
  const l = c.labels;
  let base = l['tunswitch.name'];
  if (base === undefined) {
    const svc = l['com.docker.compose.service'];
    if (svc !== undefined && svc !== '') {
      const n = Number(l['com.docker.compose.container-number'] ?? '1');
      base = Number.isInteger(n) && n > 1 ? `${svc}-${n}` : svc;
    } else {
      base = c.name;
    }
  }
  const name = sanitizeEndpointName(base);
  return name === '' ? `c-${c.id.slice(0, 12)}` : name;
}

/** Engine labels that are identity all the same: the compose service and project. */
export const COMPOSE_IDENTITY_LABELS = ['com.docker.compose.service', 'com.docker.compose.project'];

/**
 * The identity labels of a container: `container:KEY=VALUE`, sorted; engine labels are left
 * out except the compose service and project (a policy may select
 * `com.docker.compose.service: db`).
 */
export function identityLabelsFor(labels: Record<string, string>): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(labels)) {
    if (IGNORED_LABEL_PREFIXES.some((p) => k.startsWith(p)) && !COMPOSE_IDENTITY_LABELS.includes(k)) continue;
    out.push(`container:${k}=${v}`);
  }
  return out.sort();
}

function boolLabel(labels: Record<string, string>, key: string): boolean {
  const v = labels[key];
  if (v === undefined) return false;
  const t = v.trim().toLowerCase();
  if (t === 'true' || t === '1' || t === 'yes') return true;
  if (t === 'false' || t === '0' || t === 'no' || t === '') return false;
  throw new DockerAttachError(`label ${key}: ${JSON.stringify(v)} must be true or false`);
}

/** The agent request for a running container; throws DockerAttachError naming the problem. */
export function endpointRequestFor(c: ContainerFacts): EndpointAddRequest {
  if (!c.running || !(c.pid > 0)) throw new DockerAttachError('is not running');
  if (c.networkMode !== 'none') {
    throw new DockerAttachError(`network mode is ${JSON.stringify(c.networkMode)}: tunswitch needs network_mode: none (the switch gives the container its eth0)`);
  }
  const req: EndpointAddRequest = {
    name: endpointNameFor(c),
    labels: identityLabelsFor(c.labels),
    pid: c.pid,
    defaultRoute: boolLabel(c.labels, 'tunswitch.defaultRoute'),
  };
  const v4 = c.labels['tunswitch.ipv4'];
  if (v4 !== undefined && v4.trim() !== '') req.ipv4 = v4.trim();
  const v6 = c.labels['tunswitch.ipv6'];
  if (v6 !== undefined && v6.trim() !== '') req.ipv6 = v6.trim();
  const ns = c.labels['tunswitch.namespace'];
  if (ns !== undefined && ns.trim() !== '') req.namespace = ns.trim();
  const ports = c.labels['tunswitch.ports'];
  if (ports !== undefined && ports.trim() !== '') req.ports = namedPortsLabel(ports);
  return req;
}

/** `http:80/TCP,dns:53/UDP` (protocol defaults to TCP); the agent checks names and numbers. */
function namedPortsLabel(v: string): NonNullable<EndpointAddRequest['ports']> {
  return v.split(',').map((item) => {
    const m = /^\s*([^:\s]+):(\d+)(?:\/(TCP|UDP|SCTP))?\s*$/i.exec(item);
    if (!m) throw new DockerAttachError(`label tunswitch.ports: ${JSON.stringify(item)} is not NAME:PORT[/PROTOCOL]`);
    return { name: m[1] as string, port: Number(m[2]), protocol: (m[3] ?? 'TCP').toUpperCase() as 'TCP' | 'UDP' | 'SCTP' };
  });
}

/** One line from any error (Docker's JSON messages and multi-line texts included). */
function errorLine(e: unknown): string {
  const err = e as { json?: { message?: string }; message?: string };
  const msg = err?.json?.message ?? err?.message ?? String(e);
  return oneLine(msg, '; ');
}

function withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, rej) => {
    timer = setTimeout(() => rej(new TunswitchError('ETIMEOUT', `${what}: no answer from Docker in ${CALL_TIMEOUT_MS / 1000} s`)), CALL_TIMEOUT_MS);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

interface InspectLike {
  Id: string;
  Name?: string;
  Config?: { Labels?: Record<string, string> | null };
  HostConfig?: { NetworkMode?: string };
  State?: { Running?: boolean; Pid?: number };
}

export function factsFromInspect(i: InspectLike): ContainerFacts {
  return {
    id: i.Id,
    name: (i.Name ?? '').replace(/^\//, ''),
    labels: i.Config?.Labels ?? {},
    networkMode: i.HostConfig?.NetworkMode ?? '',
    running: i.State?.Running === true,
    pid: i.State?.Pid ?? 0,
  };
}

/** The part of a dockerode client the watcher uses (so tests can hand in a double). */
export interface DockerClientLike {
  ping(): Promise<unknown>;
  listContainers(opts: { filters: Record<string, string[]> }): Promise<{ Id: string }[]>;
  getContainer(id: string): { inspect(): Promise<InspectLike> };
  getEvents(opts: { filters: Record<string, string[]> }): Promise<NodeJS.ReadableStream>;
}

interface DockerEvent {
  Type?: string;
  Action?: string;
  status?: string;
  id?: string;
  Actor?: { ID?: string };
}

/**
 * Starts the watcher: attaches the labelled containers that run now, then follows events.
 * Rejects (one line) when the engine cannot be reached at start; later breaks are retried.
 */
export async function watchDocker(agent: DockerAgent, opts: DockerWatchOptions & { client?: DockerClientLike }): Promise<DockerWatcher> {
  let client = opts.client;
  const where = opts.socketPath ?? process.env.DOCKER_HOST ?? '/var/run/docker.sock';
  if (!client) {
    const { default: Docker } = await import('dockerode');
    client = (opts.socketPath ? new Docker({ socketPath: opts.socketPath }) : new Docker()) as unknown as DockerClientLike;
  }
  try {
    await withTimeout(client.ping(), 'ping');
  } catch (e) {
    throw new TunswitchError('EDOCKER', `docker: cannot reach the engine at ${where}: ${errorLine(e)}`);
  }
  const w = new Watcher(agent, client, opts);
  await w.start();
  opts.log(`docker: watching containers labelled ${ENABLE_FILTER} at ${where}`);
  return { stop: () => w.stop(), idle: () => w.idle() };
}

class Watcher {
  /** container id -> endpoint name, for the containers this watcher attached. */
  private readonly attached = new Map<string, string>();
  private queue: Promise<void> = Promise.resolve();
  private stream: NodeJS.ReadableStream | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private retryMs: number;
  private stopped = false;
  private partial = '';

  constructor(
    private readonly agent: DockerAgent,
    private readonly client: DockerClientLike,
    private readonly opts: DockerWatchOptions,
  ) {
    this.retryMs = opts.retryMs ?? 500;
  }

  private log(msg: string): void {
    this.opts.log(`docker: ${msg}`);
  }

  async start(): Promise<void> {
    await this.connect();
    this.enqueue(() => this.resync());
    await this.queue;
  }

  idle(): Promise<void> {
    return this.queue;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const s = this.stream as (NodeJS.ReadableStream & { destroy?: () => void }) | null;
    this.stream = null;
    if (s) {
      s.removeAllListeners();
      s.on('error', () => undefined);
      s.destroy?.();
    }
    await this.queue;
  }

  private enqueue(fn: () => Promise<void>): void {
    this.queue = this.queue.then(fn).catch((e: unknown) => this.log(`internal error: ${errorLine(e)}`));
  }

  /** Opens the events stream; throws if the engine refuses. */
  private async connect(): Promise<void> {
    const s = await withTimeout(
      this.client.getEvents({ filters: { type: ['container'], event: ['start', 'die', 'stop', 'destroy'], label: [ENABLE_FILTER] } }),
      'events',
    );
    if (this.stopped) {
      (s as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
      return;
    }
    this.stream = s;
    this.partial = '';
    s.on('data', (chunk: Buffer | string) => this.onData(chunk));
    s.on('error', (e: unknown) => this.broken(errorLine(e)));
    s.on('end', () => this.broken('the engine closed the events stream'));
  }

  private broken(why: string): void {
    if (this.stopped || this.stream === null) return;
    this.stream = null;
    this.log(`events stream lost (${why}); reconnecting`);
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.retryTimer) return;
    const delay = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect().then(
        () => {
          if (this.stopped) return;
          this.retryMs = this.opts.retryMs ?? 500;
          this.log('events stream back; re-listing containers');
          this.enqueue(() => this.resync());
        },
        (e: unknown) => {
          this.log(`reconnect failed: ${errorLine(e)}; next try in ${Math.min(this.retryMs, MAX_RETRY_MS) / 1000} s`);
          this.scheduleReconnect();
        },
      );
    }, delay);
  }

  private onData(chunk: Buffer | string): void {
    this.partial += typeof chunk === 'string' ? chunk : chunk.toString('utf8');
    let nl: number;
    while ((nl = this.partial.indexOf('\n')) >= 0) {
      const line = this.partial.slice(0, nl).trim();
      this.partial = this.partial.slice(nl + 1);
      if (line !== '') this.onLine(line);
    }
    // Engines that do not end each object with a newline: try the buffer as one object.
    const rest = this.partial.trim();
    if (rest.endsWith('}')) {
      try {
        JSON.parse(rest);
        this.partial = '';
        this.onLine(rest);
      } catch {
        /* incomplete: wait for more */
      }
    }
  }

  private onLine(line: string): void {
    let ev: DockerEvent;
    try {
      ev = JSON.parse(line) as DockerEvent;
    } catch {
      this.log(`ignoring an event that is not JSON: ${line.slice(0, 80)}`);
      return;
    }
    if (ev.Type !== undefined && ev.Type !== 'container') return;
    const id = ev.Actor?.ID ?? ev.id;
    if (typeof id !== 'string' || id === '') return;
    const action = ev.Action ?? ev.status ?? '';
    if (action === 'start') this.enqueue(() => this.attach(id));
    else if (action === 'die' || action === 'stop' || action === 'destroy') this.enqueue(() => this.detach(id, action));
  }

  /** Attaches what runs and is not attached; detaches what this watcher attached and is gone. */
  private async resync(): Promise<void> {
    if (this.stopped) return;
    let running: { Id: string }[];
    try {
      running = await withTimeout(this.client.listContainers({ filters: { label: [ENABLE_FILTER], status: ['running'] } }), 'list');
    } catch (e) {
      this.log(`cannot list containers: ${errorLine(e)}`);
      return;
    }
    const ids = new Set(running.map((c) => c.Id));
    for (const id of [...this.attached.keys()]) if (!ids.has(id)) await this.detach(id, 'gone');
    for (const id of ids) await this.attach(id);
  }

  private async attach(id: string): Promise<void> {
    if (this.stopped || this.attached.has(id)) return;
    const short = id.slice(0, 12);
    let facts: ContainerFacts;
    try {
      facts = factsFromInspect(await withTimeout(this.client.getContainer(id).inspect(), 'inspect'));
    } catch (e) {
      this.log(`container ${short}: not attached: inspect failed: ${errorLine(e)}`);
      return;
    }
    if (!facts.running) return; // it died before we got to it; its die event follows
    const who = `container ${facts.name || short} (${short})`;
    let req: EndpointAddRequest;
    let link: LinkParams | null;
    try {
      req = endpointRequestFor(facts);
      link = linkFor(facts.labels);
    } catch (e) {
      this.log(`${who}: not attached: ${errorLine(e)}`);
      return;
    }
    try {
      // An endpoint of that name may already be this container's (a watcher restarted
      // inside the same agent): adopt it rather than fail.
      const netns = `/proc/${facts.pid}/ns/net`;
      const existing = (await this.agent.listEndpoints()).find((e) => e.name === req.name);
      if (existing && existing.netns === netns) {
        this.attached.set(id, req.name);
        this.log(`${who}: endpoint ${req.name} already attached`);
        return;
      }
      const info = (await this.agent.addEndpoint(req)) as { ipv4?: string; ipv6?: string; identity?: number } | undefined;
      this.attached.set(id, req.name);
      if (link !== null) this.agent.setEndpointLink?.(req.name, link);
      const addr = [info?.ipv4, info?.ipv6].filter((x) => x).join(' ');
      this.log(`${who}: attached as endpoint ${req.name} pid ${facts.pid}${addr ? ` ${addr}` : ''}${info?.identity !== undefined ? ` identity ${info.identity}` : ''}`);
    } catch (e) {
      this.log(`${who}: not attached as endpoint ${req.name}: ${errorLine(e)}`);
    }
  }

  private async detach(id: string, why: string): Promise<void> {
    const name = this.attached.get(id);
    if (name === undefined) return;
    this.attached.delete(id);
    try {
      await this.agent.deleteEndpoint(name);
      this.log(`container ${id.slice(0, 12)} ${why}: endpoint ${name} removed`);
    } catch (e) {
      this.log(`container ${id.slice(0, 12)} ${why}: endpoint ${name}: ${errorLine(e)}`);
    }
  }
}
