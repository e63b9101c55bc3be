/**
 * The Docker network driver: libnetwork's remote driver protocol, served by `tunswitch run
 * --docker` on /run/docker/plugins/<name>.sock (default name "tunswitch"), so that a compose
 * file needs only
 *
 *     networks:
 *       default:
 *         driver: tunswitch
 *
 * The engine finds the plugin by its socket's name and POSTs JSON to /<Interface>.<Method>.
 * What each call does here:
 *   1. CreateNetwork: the network's subnet (from the engine's IPAM, IPv4Data[0].Pool and its
 *      Gateway) is checked against every other pool user (src/runtime/pools.ts) unless it lies
 *      inside the switch's own pool; then its gateway goes on the switch's host port and its
 *      subnet is routed into the switch. DeleteNetwork undoes it.
 *   2. CreateEndpoint: records the address the engine's IPAM gave (Interface.Address).
 *   3. Join: finds the container behind the endpoint (the engine sends only ids: the network's
 *      inspect maps the endpoint id to the container name, the container list gives its
 *      labels), adds a switch endpoint whose port is a TUN left in the switch's namespace
 *      (PortSpec.handoff), and answers with that device as SrcName and DstPrefix "eth": the
 *      engine moves it into the container, renames it eth0, gives it the address and a
 *      default route via the gateway. The TUN's fd stays with the switch across the move.
 *   4. Leave: removes the switch endpoint (closing the fd deletes the device, wherever it is).
 *   5. DeleteEndpoint: forgets the address.
 * Everything else the engine may call (EndpointOperInfo, Program/RevokeExternalConnectivity,
 * DiscoverNew/Delete, Allocate/FreeNetwork) is answered with an empty success.
 *
 * Names: the engine's embedded DNS (127.0.0.11) serves networks of a remote driver too
 * (tested with Engine 20.10: service names, container names, aliases, all replicas of a
 * scaled service), so the driver does not answer DNS itself.
 *
 * Errors go back as {"Err": "one line"}; the engine shows them to the user (for example
 * `docker-compose up` prints "... NetworkDriver.CreateNetwork: tunswitch: ...").
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import type { EndpointAddRequest } from '../api/types.js';
import { endpointNameFor, identityLabelsFor, linkFor, sanitizeEndpointName, type ContainerFacts } from './watcher.js';
import { oneLine } from '../text/oneline.js';
import { TunswitchError } from '../proto/errors.js';
import type { LinkParams } from '../runtime/link-spec.js';

export const DEFAULT_DRIVER_NAME = 'tunswitch';
export const PLUGIN_DIR = '/run/docker/plugins';
const CONTENT_TYPE = 'application/vnd.docker.plugins.v1+json';
/** A request body larger than this is refused (the engine's are a few hundred bytes). */
const MAX_BODY = 1 << 20;

/** One subnet of a network as the driver keeps it. */
export interface NetworkSubnet {
  /** "10.97.0.64/26" */
  pool: string;
  /** "10.97.0.65" (no prefix), or '' when the engine gave none. */
  gateway: string;
}

/** What the driver needs from the switch (the control thread implements it). */
export interface DriverHost {
  /** Makes the network's subnets usable (pool check, host port gateway and route). */
  addNetwork(id: string, name: string, v4: NetworkSubnet, v6: NetworkSubnet | null): Promise<void>;
  removeNetwork(id: string): Promise<void>;
  /** Adds an endpoint whose TUN stays in the switch's namespace; returns the device name. */
  addHandoffEndpoint(req: EndpointAddRequest, sandbox: string): Promise<{ tun: string }>;
  deleteEndpoint(name: string): Promise<void>;
  hasEndpoint(name: string): boolean;
  /** Link impairments from the container's tunswitch.link.* labels. */
  setLink?(name: string, lp: LinkParams): void;
}

/** Container facts the driver needs, found from the engine's ids. */
export interface ContainerResolver {
  /** The container joining endpoint `eid` of network `nid`. */
  byEndpoint(nid: string, eid: string): Promise<Pick<ContainerFacts, 'id' | 'name' | 'labels'>>;
  /** A network's subnets and name (for a network created before this switch started). */
  network(nid: string): Promise<{ name: string; v4: NetworkSubnet | null; v6: NetworkSubnet | null; driver: string }>;
  /** The networks of this driver that exist in the engine now. */
  networksOfDriver(driver: string): Promise<string[]>;
}

/** A request of the engine the driver refuses (code EBAD_REQUEST). */
export class DriverError extends TunswitchError {
  constructor(message: string) {
    super('EBAD_REQUEST', message);
    this.name = 'DriverError';
  }
}

interface EndpointState {
  nid: string;
  ipv4?: string;
  ipv6?: string;
  /** The switch endpoint's name once joined. */
  name?: string;
}

interface NetworkState {
  name: string;
  v4: NetworkSubnet;
  v6: NetworkSubnet | null;
}

/** "10.97.0.2/24" -> "10.97.0.2"; '' -> undefined. */
function bareAddress(a: unknown): string | undefined {
  if (typeof a !== 'string' || a === '') return undefined;
  const s = a.indexOf('/');
  return s >= 0 ? a.slice(0, s) : a;
}

function subnetOf(d: unknown, family: 4 | 6, where: string): NetworkSubnet | null {
  if (d === undefined || d === null) return null;
  if (!Array.isArray(d)) throw new DriverError(`${where}: must be a list`);
  if (d.length === 0) return null;
  if (d.length > 1) throw new DriverError(`${where}: ${d.length} IPv${family} subnets; tunswitch supports one per network`);
  const x = d[0] as { Pool?: unknown; Gateway?: unknown };
  if (typeof x.Pool !== 'string' || x.Pool === '') throw new DriverError(`${where}[0].Pool: missing`);
  return { pool: x.Pool, gateway: bareAddress(x.Gateway) ?? '' };
}

function str(v: unknown, where: string): string {
  if (typeof v !== 'string' || v === '') throw new DriverError(`${where}: missing`);
  return v;
}

/**
 * The protocol's state machine, without HTTP (tests drive it directly). Calls are applied one
 * at a time in arrival order.
 */
export class NetworkDriver {
  private readonly networks = new Map<string, NetworkState>();
  private readonly endpoints = new Map<string, EndpointState>();
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    readonly driverName: string,
    private readonly host: DriverHost,
    private readonly resolver: ContainerResolver,
    private readonly log: (msg: string) => void,
  ) {}

  /** Registers the networks of this driver that the engine already has (a switch restart). */
  async adoptExisting(): Promise<void> {
    const ids = await this.resolver.networksOfDriver(this.driverName);
    for (const id of ids) {
      try {
        await this.ensureNetwork(id);
      } catch (e) {
        this.log(`docker network ${id.slice(0, 12)}: not usable: ${(e as Error).message}`);
      }
    }
  }

  /** Handles one call; resolves to the JSON answer (errors become {Err}). */
  handle(method: string, body: Record<string, unknown>): Promise<Record<string, unknown>> {
    const p = this.queue.then(() => this.dispatch(method, body));
    this.queue = p.catch(() => undefined);
    return p.catch((e: unknown) => {
      const msg = `${this.driverName}: ${oneLine((e as Error).message ?? String(e), '; ')}`;
      this.log(`docker driver: ${method}: ${msg}`);
      return { Err: msg };
    });
  }

  private async dispatch(method: string, b: Record<string, unknown>): Promise<Record<string, unknown>> {
    switch (method) {
      case 'Plugin.Activate':
        return { Implements: ['NetworkDriver'] };
      case 'NetworkDriver.GetCapabilities':
        return { Scope: 'local', ConnectivityScope: 'local' };
      case 'NetworkDriver.CreateNetwork':
        return this.createNetwork(b);
      case 'NetworkDriver.DeleteNetwork':
        return this.deleteNetwork(str(b.NetworkID, 'NetworkID'));
      case 'NetworkDriver.CreateEndpoint':
        return this.createEndpoint(b);
      case 'NetworkDriver.DeleteEndpoint':
        return this.deleteEndpoint(str(b.EndpointID, 'EndpointID'));
      case 'NetworkDriver.EndpointOperInfo':
        return { Value: {} };
      case 'NetworkDriver.Join':
        return this.join(b);
      case 'NetworkDriver.Leave':
        return this.leave(str(b.EndpointID, 'EndpointID'));
      case 'NetworkDriver.DiscoverNew':
      case 'NetworkDriver.DiscoverDelete':
      case 'NetworkDriver.ProgramExternalConnectivity':
      case 'NetworkDriver.RevokeExternalConnectivity':
      case 'NetworkDriver.AllocateNetwork':
      case 'NetworkDriver.FreeNetwork':
        return {};
      default:
        throw new DriverError(`unknown method ${method}`);
    }
  }

  private async createNetwork(b: Record<string, unknown>): Promise<Record<string, unknown>> {
    const nid = str(b.NetworkID, 'NetworkID');
    const v4 = subnetOf(b.IPv4Data, 4, 'IPv4Data');
    const v6 = subnetOf(b.IPv6Data, 6, 'IPv6Data');
    if (!v4) throw new DriverError('the network has no IPv4 subnet (use the default IPAM driver, or give ipam.config.subnet)');
    // The engine sends no name; the label the compose file or `docker network create` set is the best we have.
    await this.host.addNetwork(nid, `network ${nid.slice(0, 12)}`, v4, v6);
    this.networks.set(nid, { name: nid.slice(0, 12), v4, v6 });
    this.log(`docker network ${nid.slice(0, 12)}: ${v4.pool}${v6 ? ` ${v6.pool}` : ''}, gateway ${v4.gateway || '(none)'}`);
    return {};
  }

  /** The network's state; a network created before this switch started is looked up. */
  private async ensureNetwork(nid: string): Promise<NetworkState> {
    const have = this.networks.get(nid);
    if (have) return have;
    const n = await this.resolver.network(nid);
    if (!n.v4) throw new DriverError(`network ${n.name}: no IPv4 subnet`);
    await this.host.addNetwork(nid, `network "${n.name}"`, n.v4, n.v6);
    const st = { name: n.name, v4: n.v4, v6: n.v6 };
    this.networks.set(nid, st);
    this.log(`docker network "${n.name}" (existing): ${n.v4.pool}`);
    return st;
  }

  private async deleteNetwork(nid: string): Promise<Record<string, unknown>> {
    if (!this.networks.has(nid)) return {};
    for (const [eid, ep] of this.endpoints) if (ep.nid === nid) await this.deleteEndpoint(eid);
    this.networks.delete(nid);
    await this.host.removeNetwork(nid);
    return {};
  }

  private async createEndpoint(b: Record<string, unknown>): Promise<Record<string, unknown>> {
    const nid = str(b.NetworkID, 'NetworkID');
    const eid = str(b.EndpointID, 'EndpointID');
    await this.ensureNetwork(nid);
    const iface = (b.Interface ?? {}) as { Address?: unknown; AddressIPv6?: unknown };
    const ipv4 = bareAddress(iface.Address);
    if (!ipv4) throw new DriverError('CreateEndpoint: the engine gave no IPv4 address (Interface.Address); tunswitch needs the network IPAM to assign one');
    const st: EndpointState = { nid, ipv4 };
    const v6 = bareAddress(iface.AddressIPv6);
    if (v6) st.ipv6 = v6;
    this.endpoints.set(eid, st);
    return {};
  }

  private async deleteEndpoint(eid: string): Promise<Record<string, unknown>> {
    const ep = this.endpoints.get(eid);
    if (!ep) return {};
    if (ep.name !== undefined && this.host.hasEndpoint(ep.name)) await this.host.deleteEndpoint(ep.name);
    this.endpoints.delete(eid);
    return {};
  }

  private async join(b: Record<string, unknown>): Promise<Record<string, unknown>> {
    const nid = str(b.NetworkID, 'NetworkID');
    const eid = str(b.EndpointID, 'EndpointID');
    const sandbox = str(b.SandboxKey, 'SandboxKey');
    const net = await this.ensureNetwork(nid);
    const ep = this.endpoints.get(eid);
    if (!ep) throw new DriverError(`Join: endpoint ${eid.slice(0, 12)} was not created through this switch (restart the container)`);
    const c = await this.resolver.byEndpoint(nid, eid);
    const labels = identityLabelsFor(c.labels);
    let link: LinkParams | null;
    try {
      link = linkFor(c.labels);
    } catch (e) {
      throw new DriverError(`Join: container ${c.name}: ${(e as Error).message}`);
    }
    // The compose service name first (web, web-2 for replica 2), then the container name;
    // a name taken already (the same service in another project) falls back to the next.
    const candidates = [endpointNameFor(c), sanitizeEndpointName(c.name), `c-${c.id.slice(0, 12)}`];
    const name = candidates.find((n) => n !== '' && !this.host.hasEndpoint(n));
    if (name === undefined) throw new DriverError(`Join: container ${c.name}: endpoint names ${candidates.join(', ')} are all in use`);
    const req: EndpointAddRequest = { name, labels, defaultRoute: false };
    if (ep.ipv4) req.ipv4 = ep.ipv4;
    if (ep.ipv6) req.ipv6 = ep.ipv6;
    const { tun } = await this.host.addHandoffEndpoint(req, sandbox);
    ep.name = name;
    if (link !== null) this.host.setLink?.(name, link);
    this.log(`docker: container ${c.name} (${c.id.slice(0, 12)}) joined as endpoint ${name}: ${ep.ipv4}${ep.ipv6 ? ` ${ep.ipv6}` : ''}, port ${tun}`);
    const out: Record<string, unknown> = { InterfaceName: { SrcName: tun, DstPrefix: 'eth' } };
    if (net.v4.gateway !== '') out.Gateway = net.v4.gateway;
    else out.DisableGatewayService = true;
    if (net.v6 && net.v6.gateway !== '' && ep.ipv6) out.GatewayIPv6 = net.v6.gateway;
    return out;
  }

  private async leave(eid: string): Promise<Record<string, unknown>> {
    const ep = this.endpoints.get(eid);
    if (!ep || ep.name === undefined) return {};
    const name = ep.name;
    delete ep.name;
    if (this.host.hasEndpoint(name)) await this.host.deleteEndpoint(name);
    this.log(`docker: endpoint ${name} left`);
    return {};
  }

  /** Removes every endpoint this driver added (the switch is stopping). */
  async stop(): Promise<void> {
    await this.queue;
  }
}

/** Serves a NetworkDriver on a unix socket (the engine's plugin discovery path). */
export async function serveDriver(driver: NetworkDriver, socketPath: string): Promise<{ close(): Promise<void> }> {
  mkdirSync(dirname(socketPath), { recursive: true, mode: 0o755 });
  rmSync(socketPath, { force: true });
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const reply = (status: number, obj: unknown): void => {
      const body = JSON.stringify(obj);
      res.writeHead(status, { 'Content-Type': CONTENT_TYPE, 'Content-Length': Buffer.byteLength(body) });
      res.end(body);
    };
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reply(413, { Err: `${driver.driverName}: request body larger than ${MAX_BODY} bytes` });
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (res.headersSent) return;
      const method = (req.url ?? '').replace(/^\//, '');
      let body: Record<string, unknown> = {};
      const text = Buffer.concat(chunks).toString('utf8').trim();
      if (text !== '') {
        try {
          const parsed: unknown = JSON.parse(text);
          if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) body = parsed as Record<string, unknown>;
        } catch {
          reply(400, { Err: `${driver.driverName}: ${method}: the body is not JSON` });
          return;
        }
      }
      driver.handle(method, body).then(
        (out) => reply(200, out),
        (e: unknown) => reply(500, { Err: String(e) }),
      );
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  chmodSync(socketPath, 0o660);
  return {
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections?.();
        rmSync(socketPath, { force: true });
      }),
  };
}

/** The part of dockerode the resolver uses. */
export interface DockerodeLike {
  getNetwork(id: string): { inspect(): Promise<unknown> };
  listContainers(opts: { all: boolean; filters: Record<string, string[]> }): Promise<{ Id: string; Names?: string[]; Labels?: Record<string, string> }[]>;
  listNetworks(opts: { filters: Record<string, string[]> }): Promise<{ Id: string; Driver?: string }[]>;
}

interface NetworkInspect {
  Name?: string;
  Driver?: string;
  IPAM?: { Config?: { Subnet?: string; Gateway?: string }[] | null };
  Containers?: Record<string, { Name?: string; EndpointID?: string }> | null;
}

/**
 * Finds containers from the engine's ids. During Join the engine holds the container's lock,
 * so `docker inspect` of that container would wait for Join itself; the network's inspect
 * (endpoint id -> container name) and the container list (a lock-free snapshot) do not.
 */
export function dockerResolver(client: DockerodeLike): ContainerResolver {
  const subnets = (n: NetworkInspect): { v4: NetworkSubnet | null; v6: NetworkSubnet | null } => {
    let v4: NetworkSubnet | null = null;
    let v6: NetworkSubnet | null = null;
    for (const c of n.IPAM?.Config ?? []) {
      if (typeof c.Subnet !== 'string') continue;
      const s = { pool: c.Subnet, gateway: bareAddress(c.Gateway) ?? '' };
      if (c.Subnet.includes(':')) v6 ??= s;
      else v4 ??= s;
    }
    return { v4, v6 };
  };
  return {
    async byEndpoint(nid, eid) {
      const n = (await client.getNetwork(nid).inspect()) as NetworkInspect;
      let name: string | undefined;
      for (const c of Object.values(n.Containers ?? {})) if (c.EndpointID === eid && typeof c.Name === 'string') name = c.Name;
      if (name === undefined) throw new DriverError(`Join: the engine does not list endpoint ${eid.slice(0, 12)} on network ${n.Name ?? nid.slice(0, 12)}`);
      const list = await client.listContainers({ all: true, filters: { name: [`^/${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`] } });
      const c = list.find((x) => (x.Names ?? []).includes(`/${name}`));
      if (!c) throw new DriverError(`Join: container "${name}" is not in the engine's container list`);
      return { id: c.Id, name, labels: c.Labels ?? {} };
    },
    async network(nid) {
      const n = (await client.getNetwork(nid).inspect()) as NetworkInspect;
      return { name: n.Name ?? nid.slice(0, 12), driver: n.Driver ?? '', ...subnets(n) };
    },
    async networksOfDriver(driver) {
      const list = await client.listNetworks({ filters: { driver: [driver] } });
      return list.filter((n) => n.Driver === undefined || n.Driver === driver).map((n) => n.Id);
    },
  };
}
