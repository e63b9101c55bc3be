/**
 * A fake ControlApi for the API server and CLI tests: the layer below the server, filled
 * with seeded random data and recording every call. Errors follow the contract: unknown
 * names and numbers throw the *_NOT_FOUND TunswitchErrors.
 */
import { TunswitchError } from '../../src/control/errors.js';
import type {
  AgentConfig,
  ControlApi,
  CtEntryInfo,
  EndpointAddRequest,
  EndpointInfo,
  FlowEvent,
  IdentityInfo,
  IpcacheInfo,
  PolicyFileText,
  PolicyImportResult,
  PolicyInfo,
  StatusInfo,
} from '../../src/api/types.js';
import { Rand } from '../helpers/rand.js';

function notHere(what: string): never {
  throw new TunswitchError('ENOT_SUPPORTED', `${what} is not available in the fake API`);
}

const WORDS = ['web', 'db', 'cache', 'api', 'front', 'back', 'auth', 'queue', 'search', 'edge'];

export class FakeApi implements ControlApi {
  readonly rand: Rand;
  endpoints: EndpointInfo[] = [];
  identities: IdentityInfo[] = [];
  policies: PolicyInfo[] = [];
  docs = new Map<string, unknown>();
  ipcache: IpcacheInfo[] = [];
  ct: CtEntryInfo[] = [];
  events: FlowEvent[] = [];
  config: AgentConfig = { audit: false, enforcement: 'default' };
  revision = 1;
  metricsText = '';
  /** Every call as [method, ...args]. */
  calls: unknown[][] = [];
  private subs = new Set<(e: FlowEvent) => void>();

  constructor(seed: number) {
    this.rand = new Rand(seed);
    const r = this.rand;
    const nEp = r.range(2, 6);
    for (let i = 0; i < nEp; i++) {
      const name = `${WORDS[i]}-${r.int(100)}`;
      const labels = Array.from({ length: r.range(0, 3) }, (_, k) => `k8s:${WORDS[(i + k) % WORDS.length]}=${r.pick(WORDS)}`);
      this.endpoints.push({
        id: i + 1,
        name,
        labels,
        identity: 256 + r.int(60000),
        ipv4: `10.42.0.${r.range(2, 250)}`,
        ...(r.bool() ? { ipv6: `fd00:42::${r.range(2, 0xfff).toString(16)}` } : {}),
        netns: `demo-${name}`,
        ifname: 'eth0',
        port: i,
        tun: `tsw${i}`,
        policy: { ingress: r.bool(), egress: r.bool(), audit: r.bool(0.2) },
        state: r.pick(['ready', 'attaching', 'detached'] as const),
      });
    }
    this.identities.push({ id: 1, labels: ['reserved:host'], kind: 'reserved', refs: 1 }, { id: 2, labels: ['reserved:world'], kind: 'reserved', refs: 1 });
    for (const e of this.endpoints) this.identities.push({ id: e.identity, labels: e.labels, kind: 'workload', refs: r.range(1, 3) });
    const nPol = r.range(1, 4);
    for (let i = 0; i < nPol; i++) {
      const name = `pol-${WORDS[i]}`;
      const ns = r.bool() ? 'default' : undefined;
      this.policies.push({ name, ...(ns ? { namespace: ns } : {}), kind: 'CiliumNetworkPolicy', rules: r.range(1, 5), source: `${name}.yaml`, revision: i + 1 });
      this.docs.set(ns ? `${ns}/${name}` : name, { apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name, ...(ns ? { namespace: ns } : {}) }, spec: { endpointSelector: { matchLabels: { app: WORDS[i] } } } });
    }
    for (const e of this.endpoints) this.ipcache.push({ cidr: `${e.ipv4}/32`, identity: e.identity, source: 'endpoint' });
    this.ipcache.push({ cidr: '192.168.0.0/16', identity: 16777217, source: 'cidr-policy', tunnel: '172.16.0.2' });
    const nCt = r.range(1, 5);
    for (let i = 0; i < nCt; i++) {
      this.ct.push({
        shard: r.int(4),
        proto: r.pick(['TCP', 'UDP', 'ICMP']),
        src: `10.42.0.${r.range(2, 250)}:${r.range(1024, 65535)}`,
        dst: `10.42.0.${r.range(2, 250)}:${r.pick([53, 80, 443])}`,
        state: r.pick(['SYN_SENT', 'ESTABLISHED', 'CLOSING']),
        expiresIn: r.range(1, 21600),
        identity: 256 + r.int(1000),
        packets: r.int(100000),
        bytes: r.int(1e9),
        flags: r.pick(['', 'SEEN_NON_SYN', 'RX_CLOSING']),
      });
    }
    const nEv = r.range(3, 8);
    for (let i = 0; i < nEv; i++) this.events.push(this.makeEvent(i));
    this.metricsText = [
      '# HELP cilium_drop_count_total Total dropped packets',
      '# TYPE cilium_drop_count_total counter',
      `cilium_drop_count_total{direction="INGRESS",reason="Policy denied"} ${r.int(1000)}`,
      `cilium_drop_count_total{direction="EGRESS",reason="Policy denied"} ${r.int(1000)}`,
      `cilium_forward_count_total{direction="EGRESS"} ${r.int(100000)}`,
      `tunswitch_worker_restarts_total ${r.int(5)}`,
      `tunswitch_batch_seconds ${(r.int(1000) / 1e6).toString()}`,
      `process_resident_memory_bytes ${r.int(1e8)}`,
      '',
    ].join('\n');
  }

  makeEvent(i: number): FlowEvent {
    const r = this.rand;
    const src = `10.42.0.${r.range(2, 250)}`;
    const dst = `10.42.0.${r.range(2, 250)}`;
    return {
      time: new Date(Date.UTC(2024, 0, 1, 0, 0, i)).toISOString(),
      verdict: r.pick(['FORWARDED', 'DROPPED', 'AUDIT'] as const),
      event_type: 'policy-verdict',
      traffic_direction: r.pick(['INGRESS', 'EGRESS'] as const),
      is_reply: r.bool(),
      IP: { ipVersion: 'IPv4', source: src, destination: dst },
      l4: { protocol: 'TCP', source_port: r.range(1024, 65535), destination_port: 80 },
      source: { identity: 256 + r.int(100), labels: [], ip: src },
      destination: { identity: 256 + r.int(100), labels: [], ip: dst },
      length: r.range(40, 1500),
    };
  }

  /** Delivers a new event to the subscribers (and the recent list). */
  emit(e: FlowEvent): void {
    this.events.push(e);
    for (const fn of this.subs) fn(e);
  }
  get subscribers(): number {
    return this.subs.size;
  }

  private findEndpoint(idOrName: string): EndpointInfo {
    const e = this.endpoints.find((x) => String(x.id) === idOrName || x.name === idOrName);
    if (!e) throw new TunswitchError('EENDPOINT_NOT_FOUND', `endpoint "${idOrName}" not found`);
    return e;
  }

  status(): StatusInfo {
    this.calls.push(['status']);
    return {
      name: 'demo',
      version: '0.1.0',
      uptimeSeconds: 3725,
      policyRevision: this.revision,
      endpoints: this.endpoints.length,
      identities: this.identities.length,
      policies: this.policies.length,
      workers: 2,
      workerRestarts: 0,
      lastWorkerRestart: '',
      ioEngine: 'uring',
      shards: [{ shard: 0, state: 'running', restarts: 0, crashLoop: false }],
      healthy: true,
      ports: this.endpoints.length,
      offload: true,
      config: { ...this.config },
      counters: { forwarded: 1234, dropped: 56 },
    };
  }
  listEndpoints(): EndpointInfo[] {
    this.calls.push(['listEndpoints']);
    return this.endpoints;
  }
  getEndpoint(idOrName: string): EndpointInfo {
    this.calls.push(['getEndpoint', idOrName]);
    return this.findEndpoint(idOrName);
  }
  async addEndpoint(req: EndpointAddRequest): Promise<EndpointInfo> {
    this.calls.push(['addEndpoint', req]);
    if (req.name === 'unsupported') throw new TunswitchError('ENOT_SUPPORTED', 'endpoints from pids are not supported here');
    if (req.name === 'boom') throw new Error('kaboom');
    if (req.name === 'badlabel') throw new TunswitchError('ELABEL_INVALID', 'label "=x": empty key');
    if (this.endpoints.some((e) => e.name === req.name)) throw new TunswitchError('EENDPOINT_EXISTS', `endpoint "${req.name}" already exists`);
    const labels = Array.isArray(req.labels) ? req.labels : Object.entries(req.labels ?? {}).map(([k, v]) => `${k}=${v}`);
    const e: EndpointInfo = {
      id: this.endpoints.length + 1,
      name: req.name,
      labels,
      identity: 40000 + this.endpoints.length,
      ipv4: req.ipv4 ?? '10.42.0.251',
      netns: req.netns ?? (req.pid ? `/proc/${req.pid}/ns/net` : `demo-${req.name}`),
      ifname: 'eth0',
      port: this.endpoints.length,
      tun: `tsw${this.endpoints.length}`,
      policy: { ingress: false, egress: false, audit: false },
      state: 'ready',
    };
    this.endpoints.push(e);
    return e;
  }
  queue = { limitBytes: 4 << 20, targetMs: 5, intervalMs: 100 };
  getEndpointLink(idOrName: string): never {
    this.calls.push(['getEndpointLink', idOrName]);
    notHere('link impairments');
  }
  setEndpointLink(idOrName: string): never {
    this.calls.push(['setEndpointLink', idOrName]);
    notHere('link impairments');
  }
  listLinks(): never {
    notHere('link impairments');
  }
  getEndpointQueue(idOrName: string): { limitBytes: number; targetMs: number; intervalMs: number } {
    this.calls.push(['getEndpointQueue', idOrName]);
    return { ...this.queue };
  }
  setEndpointQueue(idOrName: string, patch: Partial<{ limitBytes: number; targetMs: number; intervalMs: number }>): { limitBytes: number; targetMs: number; intervalMs: number } {
    this.calls.push(['setEndpointQueue', idOrName, patch]);
    this.queue = { ...this.queue, ...patch };
    return { ...this.queue };
  }

  async deleteEndpoint(idOrName: string): Promise<void> {
    this.calls.push(['deleteEndpoint', idOrName]);
    const e = this.findEndpoint(idOrName);
    this.endpoints = this.endpoints.filter((x) => x !== e);
  }
  listIdentities(): IdentityInfo[] {
    this.calls.push(['listIdentities']);
    return this.identities;
  }
  getIdentity(id: number): IdentityInfo {
    this.calls.push(['getIdentity', id]);
    const i = this.identities.find((x) => x.id === id);
    if (!i) throw new TunswitchError('EIDENTITY_NOT_FOUND', `identity ${id} not found`);
    return i;
  }
  importPolicies(files: PolicyFileText[]): PolicyImportResult {
    this.calls.push(['importPolicies', ...files.flatMap((f) => [f.text, f.fileName])]);
    const bad = files.find((f) => f.text.includes('INVALID'));
    if (bad) throw new TunswitchError('EPOLICY_INVALID', `${bad.fileName}: policy "x" spec: is required`);
    this.revision++;
    const per = files.map((f) => ({ fileName: f.fileName, policies: [...f.text.matchAll(/name: (\S+)/g)].map((m) => m[1] as string) }));
    return { revision: this.revision, policies: per.flatMap((f) => f.policies), files: per };
  }
  validatePolicies(text: string, fileName: string): { policies: string[] } {
    this.calls.push(['validatePolicies', text, fileName]);
    if (text.includes('INVALID')) throw new TunswitchError('EPOLICY_INVALID', `${fileName}: policy "x" spec: is required`);
    return { policies: [...text.matchAll(/name: (\S+)/g)].map((m) => m[1] as string) };
  }
  listPolicies(): PolicyInfo[] {
    this.calls.push(['listPolicies']);
    return this.policies;
  }
  getPolicy(name: string): unknown {
    this.calls.push(['getPolicy', name]);
    if (!this.docs.has(name)) throw new TunswitchError('EPOLICY_NOT_FOUND', `policy "${name}" not found`);
    return this.docs.get(name);
  }
  deletePolicy(name: string): PolicyImportResult {
    this.calls.push(['deletePolicy', name]);
    if (!this.docs.has(name)) throw new TunswitchError('EPOLICY_NOT_FOUND', `policy "${name}" not found`);
    this.docs.delete(name);
    return { revision: ++this.revision, policies: [name] };
  }
  deleteAllPolicies(): PolicyImportResult {
    this.calls.push(['deleteAllPolicies']);
    const names = [...this.docs.keys()];
    this.docs.clear();
    return { revision: ++this.revision, policies: names };
  }
  selectors(): { selector: string; identities: number[] }[] {
    this.calls.push(['selectors']);
    return this.endpoints.map((e) => ({ selector: `&LabelSelector{MatchLabels:map[string]string{any.name: ${e.name},}}`, identities: [e.identity, 2] }));
  }
  listIpcache(): IpcacheInfo[] {
    this.calls.push(['listIpcache']);
    return this.ipcache;
  }
  getIpcache(ip: string): IpcacheInfo | null {
    this.calls.push(['getIpcache', ip]);
    if (ip.startsWith('192.168.')) return this.ipcache[this.ipcache.length - 1] as IpcacheInfo;
    return this.ipcache.find((e) => e.cidr === `${ip}/32`) ?? null;
  }
  listCt(): CtEntryInfo[] {
    this.calls.push(['listCt']);
    return this.ct;
  }
  flushCt(): { flushed: number } {
    this.calls.push(['flushCt']);
    const n = this.ct.length;
    this.ct = [];
    return { flushed: n };
  }
  getConfig(): AgentConfig {
    this.calls.push(['getConfig']);
    return { ...this.config };
  }
  setConfig(patch: Partial<AgentConfig>): AgentConfig {
    this.calls.push(['setConfig', patch]);
    this.config = { ...this.config, ...patch };
    return { ...this.config };
  }
  async metrics(): Promise<string> {
    this.calls.push(['metrics']);
    return this.metricsText;
  }
  // The parts of the contract these tests do not exercise answer ENOT_SUPPORTED.
  listNodes = (): never => notHere('nodes');
  labelEndpoint = (): never => notHere('endpoint labelling');
  listNamespaces = (): never => notHere('namespaces');
  getNamespace = (): never => notHere('namespaces');
  putNamespace = (): never => notHere('namespaces');
  labelNamespace = (): never => notHere('namespaces');
  deleteNamespace = (): never => notHere('namespaces');
  trace = (): never => notHere('policy trace');
  upsertIpcache = (): never => notHere('ipcache updates');
  deleteIpcache = (): never => notHere('ipcache updates');
  capture = (): never => notHere('packet capture');

  recentEvents(last: number): FlowEvent[] {
    this.calls.push(['recentEvents', last]);
    return last === 0 ? [] : this.events.slice(-last);
  }
  subscribeEvents(fn: (e: FlowEvent) => void): () => void {
    this.calls.push(['subscribeEvents']);
    this.subs.add(fn);
    return () => {
      this.subs.delete(fn);
    };
  }
}

/** Polls `cond` every 5 ms until it holds or `ms` pass. */
export async function waitFor(cond: () => boolean, ms = 2000): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 5));
  }
  return true;
}
