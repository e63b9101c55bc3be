/**
 * Request validation, in one place: every body, query and path parameter the API server takes
 * is checked here before the control plane sees it, and each problem names the field
 * (`body.labels: ...`, `query last: ...`) with code EBAD_REQUEST (ECONFIG_INVALID for config
 * values). The control plane's own checks (labels, ports, addresses against the pool) stay
 * with the control plane, which other callers (Docker, the config file) use too.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { TunswitchError } from '../proto/errors.js';
import { tryParsePrefix } from '../control/cidr.js';
import { randomInt } from 'node:crypto';
import { LINK_SPEC_KEYS, LinkSpecError, linkIsNoop, parseLinkSpec, type LinkParams } from '../runtime/link-spec.js';
import type { AgentConfig, EndpointAddRequest, IpcacheEntryRequest, PolicyFileText, QueueSettings, TraceEndQuery, TraceQuery } from './types.js';

export function bad(message: string): never {
  throw new TunswitchError('EBAD_REQUEST', message);
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function show(v: unknown): string {
  return JSON.stringify(v) ?? String(v);
}

function expectObject(v: unknown, known: readonly string[]): Record<string, unknown> {
  if (v === undefined) bad('body: expected a JSON object, got an empty body');
  if (!isObj(v)) bad(`body: expected a JSON object, got ${Array.isArray(v) ? 'an array' : show(v)}`);
  for (const k of Object.keys(v)) {
    if (!known.includes(k)) bad(`body.${k}: unknown field (known: ${known.join(', ')})`);
  }
  return v;
}

function optString(o: Record<string, unknown>, k: string): string | undefined {
  const v = o[k];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') bad(`body.${k}: must be a string, got ${show(v)}`);
  return v;
}

/** Checks an EndpointAddRequest; returns a copy without unknown fields. */
export function checkEndpointAddRequest(v: unknown): EndpointAddRequest {
  const o = expectObject(v, ['name', 'labels', 'netns', 'pid', 'ipv4', 'ipv6', 'defaultRoute', 'namespace', 'ports', 'offload']);
  const name = optString(o, 'name');
  if (name === undefined || name === '') bad('body.name: is required (a non-empty string)');
  const req: EndpointAddRequest = { name };
  const labels = o.labels;
  if (labels !== undefined) {
    const msg = 'body.labels: must be a mapping or a list of "key=value"';
    if (Array.isArray(labels)) {
      labels.forEach((l, i) => {
        if (typeof l !== 'string' || l === '') bad(`${msg}; body.labels[${i}] is ${show(l)}`);
      });
      req.labels = labels.slice() as string[];
    } else if (isObj(labels)) {
      const out: Record<string, string> = {};
      for (const [k, val] of Object.entries(labels)) {
        if (typeof val !== 'string') bad(`body.labels.${k}: must be a string, got ${show(val)}`);
        out[k] = val;
      }
      req.labels = out;
    } else {
      bad(`${msg}, got ${show(labels)}`);
    }
  }
  const netns = optString(o, 'netns');
  if (netns !== undefined) {
    if (netns === '') bad('body.netns: must not be empty');
    req.netns = netns;
  }
  if (o.pid !== undefined) {
    if (typeof o.pid !== 'number' || !Number.isInteger(o.pid) || o.pid <= 0) bad(`body.pid: must be a positive integer, got ${show(o.pid)}`);
    if (netns !== undefined) bad('body.pid: netns and pid exclude each other');
    req.pid = o.pid;
  }
  const ipv4 = optString(o, 'ipv4');
  if (ipv4 !== undefined) {
    if (!isIPv4(ipv4)) bad(`body.ipv4: "${ipv4}" is not an IPv4 address`);
    req.ipv4 = ipv4;
  }
  const ipv6 = optString(o, 'ipv6');
  if (ipv6 !== undefined) {
    if (!isIPv6(ipv6)) bad(`body.ipv6: "${ipv6}" is not an IPv6 address`);
    req.ipv6 = ipv6;
  }
  if (o.defaultRoute !== undefined) {
    if (typeof o.defaultRoute !== 'boolean') bad(`body.defaultRoute: must be true or false, got ${show(o.defaultRoute)}`);
    req.defaultRoute = o.defaultRoute;
  }
  if (o.offload !== undefined) {
    if (typeof o.offload !== 'boolean') bad(`body.offload: must be true or false, got ${show(o.offload)}`);
    req.offload = o.offload;
  }
  const namespace = optString(o, 'namespace');
  if (namespace !== undefined) req.namespace = namespace;
  // The agent checks each port (name, number, protocol) and names the item.
  if (o.ports !== undefined) {
    if (!Array.isArray(o.ports)) bad(`body.ports: must be a list of {name, port, protocol}, got ${show(o.ports)}`);
    req.ports = o.ports as NonNullable<EndpointAddRequest['ports']>;
  }
  return req;
}

/** One policy file of a request: `{text, fileName}` at `where` ("body" or "body.files[i]"). */
function checkPolicyFile(o: Record<string, unknown>, where: string): PolicyFileText {
  const text = o.text;
  if (text === undefined) bad(`${where}.text: is required (the policy file contents)`);
  if (typeof text !== 'string') bad(`${where}.text: must be a string, got ${show(text)}`);
  const fileName = o.fileName;
  if (fileName !== undefined && typeof fileName !== 'string') bad(`${where}.fileName: must be a string, got ${show(fileName)}`);
  return { text, fileName: fileName === undefined || fileName === '' ? 'request' : fileName };
}

/** `POST /v1/policy/validate`: one file. */
export function checkPolicyText(v: unknown): PolicyFileText {
  return checkPolicyFile(expectObject(v, ['text', 'fileName']), 'body');
}

/**
 * `PUT /v1/policy`: `{files: [{text, fileName}], allowEmpty}` (every file or none is imported),
 * or one file as `{text, fileName, allowEmpty}`.
 */
export function checkPolicyImport(v: unknown): { files: PolicyFileText[]; allowEmpty: boolean } {
  const o = expectObject(v, ['files', 'text', 'fileName', 'allowEmpty']);
  if (o.allowEmpty !== undefined && typeof o.allowEmpty !== 'boolean') bad(`body.allowEmpty: must be true or false, got ${show(o.allowEmpty)}`);
  const allowEmpty = o.allowEmpty === true;
  if (o.files === undefined) return { files: [checkPolicyFile(o, 'body')], allowEmpty };
  if (o.text !== undefined || o.fileName !== undefined) bad('body: give files, or text and fileName, not both');
  if (!Array.isArray(o.files) || o.files.length === 0) bad(`body.files: must be a non-empty list of {text, fileName}, got ${show(o.files)}`);
  const files = o.files.map((f: unknown, i: number) => {
    if (!isObj(f)) bad(`body.files[${i}]: must be {text, fileName}, got ${show(f)}`);
    for (const k of Object.keys(f)) if (k !== 'text' && k !== 'fileName') bad(`body.files[${i}].${k}: unknown field (known: text, fileName)`);
    return checkPolicyFile(f, `body.files[${i}]`);
  });
  return { files, allowEmpty };
}

const ENFORCEMENT_MODES: readonly AgentConfig['enforcement'][] = ['default', 'always', 'never'];

/** Checks a config patch. Value problems are ECONFIG_INVALID, naming the key. */
export function checkConfigPatch(v: unknown): Partial<AgentConfig> {
  const o = expectObject(v, ['audit', 'enforcement', 'cidrMatchPods']);
  const patch: Partial<AgentConfig> = {};
  if (o.cidrMatchPods !== undefined) {
    if (typeof o.cidrMatchPods !== 'boolean') throw new TunswitchError('ECONFIG_INVALID', `body.cidrMatchPods: must be true or false, got ${show(o.cidrMatchPods)}`);
    patch.cidrMatchPods = o.cidrMatchPods;
  }
  if (o.audit !== undefined) {
    if (typeof o.audit !== 'boolean') throw new TunswitchError('ECONFIG_INVALID', `body.audit: must be true or false, got ${show(o.audit)}`);
    patch.audit = o.audit;
  }
  if (o.enforcement !== undefined) {
    if (typeof o.enforcement !== 'string' || !(ENFORCEMENT_MODES as readonly string[]).includes(o.enforcement)) {
      throw new TunswitchError('ECONFIG_INVALID', `body.enforcement: must be one of ${ENFORCEMENT_MODES.join(', ')}, got ${show(o.enforcement)}`);
    }
    patch.enforcement = o.enforcement as AgentConfig['enforcement'];
  }
  return patch;
}

/** PUT /v1/endpoint/:id/link: a LinkSpec (src/runtime/link-spec.ts); all off means none. */
export function checkLinkBody(v: unknown): LinkParams | null {
  const o = expectObject(v, LINK_SPEC_KEYS);
  try {
    const lp = parseLinkSpec(o, (k) => `body.${k}`, () => randomInt(2 ** 32));
    return linkIsNoop(lp) ? null : lp;
  } catch (e) {
    if (e instanceof LinkSpecError) bad(e.message);
    throw e;
  }
}

export function checkQueuePatch(v: unknown): Partial<QueueSettings> {
  const o = expectObject(v, ['limitBytes', 'targetMs', 'intervalMs']);
  const out: Partial<QueueSettings> = {};
  const num = (k: 'limitBytes' | 'targetMs' | 'intervalMs', lo: number, hi: number, what: string): void => {
    const x = o[k];
    if (x === undefined) return;
    if (typeof x !== 'number' || !Number.isFinite(x) || x < lo || x > hi) bad(`queue ${k}: must be ${what}, got ${show(x)}`);
    out[k] = x;
  };
  num('limitBytes', 2048, 1 << 30, 'a number of bytes from 2048 to 2^30');
  num('targetMs', 0.001, 10_000, 'milliseconds from 0.001 to 10000');
  num('intervalMs', 0.001, 10_000, 'milliseconds from 0.001 to 10000');
  return out;
}

export function queryInt(url: URL, name: string, dflt: number, max: number): number {
  const s = url.searchParams.get(name);
  if (s === null || s === '') return dflt;
  if (!/^\d+$/.test(s) || Number(s) > max) bad(`query ${name}: must be an integer from 0 to ${max}, got "${s}"`);
  return Number(s);
}

export function queryBool(url: URL, name: string): boolean {
  const s = url.searchParams.get(name);
  if (s === null) return false;
  if (s === '' || s === '1' || s === 'true') return true;
  if (s === '0' || s === 'false') return false;
  bad(`query ${name}: must be 1, 0, true or false, got "${s}"`);
}

/** `PUT /v1/ipcache`: `{entries: [{cidr, identity, tunnel?}]}`; prefixes in their canonical text. */
export function checkIpcacheEntries(v: unknown): IpcacheEntryRequest[] {
  const list = isObj(v) ? v.entries : undefined;
  if (!Array.isArray(list)) bad('body.entries: must be a list of {cidr, identity}');
  return list.map((e: unknown, i: number) => {
    const o = (isObj(e) ? e : {}) as { cidr?: unknown; identity?: unknown; tunnel?: unknown };
    const p = typeof o.cidr === 'string' ? tryParsePrefix(o.cidr, true) : null;
    if (!p) bad(`body.entries[${i}].cidr: ${show(o.cidr)} is not a prefix`);
    if (!Number.isInteger(o.identity) || (o.identity as number) < 1 || (o.identity as number) > 0x1ffffff) bad(`body.entries[${i}].identity: ${show(o.identity)} is not an identity`);
    const out: IpcacheEntryRequest = { cidr: p.text, identity: o.identity as number };
    if (o.tunnel !== undefined) {
      const t = typeof o.tunnel === 'string' ? tryParsePrefix(o.tunnel, true) : null;
      if (!t || t.family !== 4 || t.bits !== 32) bad(`body.entries[${i}].tunnel: ${show(o.tunnel)} is not an IPv4 address`);
      out.tunnel = t.words[0] as number;
    }
    return out;
  });
}

/** Protocols `policy trace --dport` takes, by name. */
const TRACE_PROTOS: Record<string, number> = { TCP: 6, UDP: 17, SCTP: 132, ICMP: 1, ICMPV4: 1, ICMPV6: 58 };

function checkTraceEnd(side: 'src' | 'dst', v: unknown): TraceEndQuery {
  const where = `body.${side}`;
  if (!isObj(v)) bad(`${where}: needs endpoint, labels or ip`);
  const e = v as TraceEndQuery;
  const given = [e.endpoint, e.labels, e.ip].filter((x) => x !== undefined).length;
  if (given !== 1) bad(`${where}: give exactly one of endpoint, labels, ip`);
  if (e.endpoint !== undefined && typeof e.endpoint !== 'string') bad(`${where}.endpoint: must be a string`);
  if (e.labels !== undefined && (!Array.isArray(e.labels) || e.labels.some((l) => typeof l !== 'string' || !l.includes('=')))) bad(`${where}.labels: must be a list of "key=value"`);
  if (e.ip !== undefined && typeof e.ip !== 'string') bad(`${where}.ip: ${show(e.ip)} is not an IP address`);
  if (e.endpoint !== undefined) return { endpoint: e.endpoint };
  if (e.labels !== undefined) return { labels: e.labels.slice() };
  return { ip: e.ip as string };
}

/** `POST /v1/policy/trace`: `{src, dst, dport: "80/TCP"}`, each end one of endpoint, labels, ip. */
export function checkTraceRequest(v: unknown): TraceQuery {
  if (!isObj(v)) bad('body: must be an object');
  const dport = v.dport;
  const m = typeof dport === 'string' ? /^(\d{1,5})(?:\/([A-Za-z0-9]+))?$/.exec(dport) : null;
  if (!m) bad(`body.dport: ${show(dport)} is not PORT[/PROTOCOL], e.g. 80/TCP`);
  const port = Number(m[1]);
  const protoName = (m[2] ?? 'TCP').toUpperCase();
  const proto = TRACE_PROTOS[protoName];
  if (proto === undefined) bad(`body.dport: protocol "${m[2]}" is not one of TCP, UDP, SCTP, ICMP, ICMPv6`);
  if (port > (proto === 1 || proto === 58 ? 255 : 65535)) bad(`body.dport: ${port} is out of range for ${protoName}`);
  return { src: checkTraceEnd('src', v.src), dst: checkTraceEnd('dst', v.dst), proto, port, protoName };
}

/** An identity number in a path (`/v1/identity/:id`). */
export function checkIdentityParam(s: string): number {
  if (!/^\d+$/.test(s) || Number(s) > 0xffffffff) bad(`identity "${s}": not an identity number`);
  return Number(s);
}
