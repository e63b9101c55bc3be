/**
 * Policy file parsing and validation.
 *
 * Accepts YAML or JSON text with one or more documents (`---`), a top-level JSON array, or a
 * `List` (`kind: List` / `CiliumNetworkPolicyList`, `items: [...]`). Each item is one of:
 *   - CiliumNetworkPolicy            (apiVersion cilium.io/v2; namespaced)
 *   - CiliumClusterwideNetworkPolicy (apiVersion cilium.io/v2; no namespace)
 *   - NetworkPolicy                  (apiVersion networking.k8s.io/v1), converted to the same
 *                                    internal rules as Cilium does
 * Every field is checked and unknown fields are rejected with their path. A file is all or
 * nothing: one bad document means an error and no policies.
 *
 * Namespace scoping (as Cilium): when a namespaced policy names its namespace, the subject
 * selector only selects endpoints of that namespace, and endpoint peer selectors that do not
 * mention the namespace label (or namespace labels) are limited to it as well. A policy
 * without `metadata.namespace` is not scoped (tunswitch endpoints need not have namespaces).
 *
 * Error messages: `<file>: policy "<name>" <path>: <problem>`, or
 * `<file>: document <n>: <path>: <problem>` before the name is known. Code EPOLICY_INVALID.
 */
import { parseAllDocuments } from 'yaml';
import { TunswitchError } from '../errors.js';
import { labelKeyProblem, labelValueProblem, splitSource, type LabelSource } from '../labels.js';
import { tryParsePrefix, prefixContains, type Prefix } from '../cidr.js';
import { RESERVED_IDENTITY } from '../../proto/identity.js';
import { LabelSelector, SELECTOR_OPERATORS, type Requirement, type SelectorOperator, type PeerSelector } from './selector.js';
import {
  ENTITIES,
  NAMESPACE_LABEL,
  NAMESPACE_LABELS_PREFIX,
  policyKey,
  type Entity,
  type L4Protocol,
  type Peer,
  type Policy,
  type PolicyKind,
  type PolicyRule,
  type PortSpec,
  type RuleElement,
  type Section,
} from './types.js';

type Obj = Record<string, unknown>;

/** ICMP type names Cilium accepts, per family. */
export const ICMP_TYPE_NAMES: { readonly IPv4: Readonly<Record<string, number>>; readonly IPv6: Readonly<Record<string, number>> } = {
  IPv4: {
    EchoReply: 0,
    DestinationUnreachable: 3,
    Redirect: 5,
    Echo: 8,
    EchoRequest: 8,
    RouterAdvertisement: 9,
    RouterSelection: 10,
    TimeExceeded: 11,
    ParameterProblem: 12,
    Timestamp: 13,
    TimestampReply: 14,
    Photuris: 40,
    ExtendedEchoRequest: 42,
    ExtendedEchoReply: 43,
  },
  IPv6: {
    DestinationUnreachable: 1,
    PacketTooBig: 2,
    TimeExceeded: 3,
    ParameterProblem: 4,
    EchoRequest: 128,
    EchoReply: 129,
    MulticastListenerQuery: 130,
    MulticastListenerReport: 131,
    MulticastListenerDone: 132,
    RouterSolicitation: 133,
    RouterAdvertisement: 134,
    NeighborSolicitation: 135,
    NeighborAdvertisement: 136,
    RedirectMessage: 137,
    RouterRenumbering: 138,
    ICMPNodeInformationQuery: 139,
    ICMPNodeInformationResponse: 140,
    InverseNeighborDiscoverySolicitation: 141,
    InverseNeighborDiscoveryAdvertisement: 142,
    HomeAgentAddressDiscoveryRequest: 144,
    HomeAgentAddressDiscoveryReply: 145,
    MobilePrefixSolicitation: 146,
    MobilePrefixAdvertisement: 147,
    DuplicateAddressRequestCodeSuffix: 157,
    DuplicateAddressConfirmationCodeSuffix: 158,
    ExtendedEchoRequest: 160,
    ExtendedEchoReply: 161,
  },
};

const MAX_PORTS_PER_RULE = 40;
const MAX_ICMP_FIELDS = 40;

function show(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  return JSON.stringify(v);
}

function join(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`;
}

/** Where we are: file, document, policy name. fail() throws the formatted error. */
class Ctx {
  name: string | null = null;
  constructor(
    readonly file: string,
    readonly doc: number,
  ) {}
  fail(path: string, problem: string): never {
    const where = this.name !== null ? `policy "${this.name}"` : `document ${this.doc}:`;
    const p = path === '' ? '' : ` ${path}:`;
    throw new TunswitchError('EPOLICY_INVALID', `${this.file}: ${where}${p} ${problem}`);
  }
  obj(v: unknown, path: string): Obj {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(path, `${show(v)} is not an object`);
    return v as Obj;
  }
  list(v: unknown, path: string): unknown[] {
    if (!Array.isArray(v)) this.fail(path, `${show(v)} is not a list`);
    return v;
  }
  /** Optional list: undefined/null -> []. */
  optList(o: Obj, key: string, path: string): unknown[] {
    const v = o[key];
    return v === undefined || v === null ? [] : this.list(v, join(path, key));
  }
  str(v: unknown, path: string): string {
    if (typeof v !== 'string') this.fail(path, `${show(v)} is not a string`);
    return v;
  }
  bool(v: unknown, path: string): boolean {
    if (typeof v !== 'boolean') this.fail(path, `${show(v)} is not true or false`);
    return v;
  }
  /**
   * Rejects fields not in `known`. `unsupported` maps field -> reason for fields that are
   * valid Cilium but not implemented here (reported as "... is not supported: reason").
   */
  fields(o: Obj, path: string, known: readonly string[], unsupported: Readonly<Record<string, string>> = {}): void {
    for (const k of Object.keys(o)) {
      const reason = unsupported[k];
      if (reason !== undefined) {
        if (o[k] === null || o[k] === undefined) continue;
        this.fail(join(path, k), `${k} is not supported: ${reason}`);
      }
      if (!known.includes(k)) this.fail(join(path, k), 'unknown field');
    }
  }
}

// ---------------------------------------------------------------------------------------
// Selectors

/** Cilium's dotted form of a reserved selector key (`reserved.init`), used where ':' is awkward. */
const RESERVED_DOT = 'reserved.';

/**
 * A selector key: `[source:]key`, or `reserved.<name>`. A reserved key must name a reserved
 * identity, so a typo is an error rather than a selector that silently selects nothing.
 */
function parseSelectorKey(ctx: Ctx, text: string, path: string): { source: LabelSource; key: string } {
  let r: { source: LabelSource; rest: string };
  try {
    r = text.startsWith(RESERVED_DOT) ? { source: 'reserved', rest: text.slice(RESERVED_DOT.length) } : splitSource(text, 'any');
  } catch (e) {
    return ctx.fail(path, (e as Error).message);
  }
  const kp = labelKeyProblem(r.rest);
  if (kp !== null) ctx.fail(path, `label key ${JSON.stringify(text)} ${kp}`);
  if (r.source === 'reserved' && !Object.hasOwn(RESERVED_IDENTITY, r.rest)) {
    ctx.fail(path, `${JSON.stringify(text)} is not a reserved identity (want reserved:${Object.keys(RESERVED_IDENTITY).join(', reserved:')})`);
  }
  return { source: r.source, key: r.rest };
}

function labelValue(ctx: Ctx, v: unknown, path: string): string {
  const s = ctx.str(v, path);
  const vp = labelValueProblem(s);
  if (vp !== null) ctx.fail(path, `label value ${JSON.stringify(s)} ${vp}`);
  return s;
}

/** A Kubernetes LabelSelector (`matchLabels`, `matchExpressions`). `mapKey` rewrites keys (namespaceSelector). */
function parseLabelSelector(ctx: Ctx, v: unknown, path: string, mapKey?: (source: LabelSource, key: string) => { source: LabelSource; key: string }): LabelSelector {
  if (v === null || v === undefined) return LabelSelector.ALL;
  const o = ctx.obj(v, path);
  ctx.fields(o, path, ['matchLabels', 'matchExpressions']);
  const reqs: Requirement[] = [];
  const ml = o.matchLabels;
  if (ml !== undefined && ml !== null) {
    const mlo = ctx.obj(ml, join(path, 'matchLabels'));
    for (const [k, val] of Object.entries(mlo)) {
      const p = `${join(path, 'matchLabels')}[${JSON.stringify(k)}]`;
      let sk = parseSelectorKey(ctx, k, p);
      if (mapKey) sk = mapKey(sk.source, sk.key);
      reqs.push({ source: sk.source, key: sk.key, op: 'In', values: [labelValue(ctx, val, p)] });
    }
  }
  const me = ctx.optList(o, 'matchExpressions', path);
  me.forEach((item, i) => {
    const p = `${join(path, 'matchExpressions')}[${i}]`;
    const e = ctx.obj(item, p);
    ctx.fields(e, p, ['key', 'operator', 'values']);
    if (e.key === undefined) ctx.fail(join(p, 'key'), 'is required');
    let sk = parseSelectorKey(ctx, ctx.str(e.key, join(p, 'key')), join(p, 'key'));
    if (mapKey) sk = mapKey(sk.source, sk.key);
    if (e.operator === undefined) ctx.fail(join(p, 'operator'), 'is required');
    const op = ctx.str(e.operator, join(p, 'operator'));
    if (!SELECTOR_OPERATORS.includes(op as SelectorOperator)) {
      ctx.fail(join(p, 'operator'), `${JSON.stringify(op)} is not an operator (want ${SELECTOR_OPERATORS.join(', ')})`);
    }
    const values = ctx.optList(e, 'values', p).map((x, j) => labelValue(ctx, x, `${join(p, 'values')}[${j}]`));
    if ((op === 'In' || op === 'NotIn') && values.length === 0) ctx.fail(join(p, 'values'), `must not be empty for operator ${op}`);
    if ((op === 'Exists' || op === 'DoesNotExist') && values.length > 0) ctx.fail(join(p, 'values'), `must be empty for operator ${op}`);
    reqs.push({ source: sk.source, key: sk.key, op: op as SelectorOperator, values });
  });
  return new LabelSelector(reqs);
}

function nsRequirement(ns: string): Requirement {
  return { source: 'k8s', key: NAMESPACE_LABEL, op: 'In', values: [ns] };
}

function mentionsNamespace(sel: LabelSelector): boolean {
  return sel.hasKey(NAMESPACE_LABEL) || sel.requirements.some((r) => r.key.startsWith(NAMESPACE_LABELS_PREFIX));
}

/** An endpoint peer selector with Cilium's scoping (see the file comment and selector.ts). */
function endpointPeer(sel: LabelSelector, namespace: string | null): Peer {
  if (sel.hasSource('reserved')) return { kind: 'selector', selector: { kind: 'labels', selector: sel, clusterOnly: false } };
  const scoped = namespace !== null && !mentionsNamespace(sel) ? sel.and(nsRequirement(namespace)) : sel;
  return { kind: 'selector', selector: { kind: 'labels', selector: scoped, clusterOnly: true } };
}

// ---------------------------------------------------------------------------------------
// CIDRs, ports, ICMP

function parseCIDR(ctx: Ctx, v: unknown, path: string, allowBare: boolean): Prefix {
  const s = ctx.str(v, path);
  const p = tryParsePrefix(s.trim(), allowBare);
  if (p === null) ctx.fail(path, `${JSON.stringify(s)} is not a CIDR (like 10.0.0.0/8 or 2001:db8::/32)`);
  return p;
}

function cidrPeer(ctx: Ctx, v: unknown, path: string): Peer {
  const cidr = parseCIDR(ctx, v, path, true);
  const sel: PeerSelector = { kind: 'cidr', cidr, except: [] };
  return { kind: 'selector', selector: sel };
}

function cidrSetPeer(ctx: Ctx, v: unknown, path: string): Peer {
  const o = ctx.obj(v, path);
  ctx.fields(o, path, ['cidr', 'except'], {
    cidrGroupRef: 'CiliumCIDRGroup references are not implemented; list the prefixes in cidr/except',
    cidrGroupSelector: 'CiliumCIDRGroup selectors are not implemented; list the prefixes in cidr/except',
  });
  if (o.cidr === undefined || o.cidr === null) ctx.fail(join(path, 'cidr'), 'is required');
  const cidr = parseCIDR(ctx, o.cidr, join(path, 'cidr'), false);
  const except = ctx.optList(o, 'except', path).map((x, i) => {
    const ep = `${join(path, 'except')}[${i}]`;
    const e = parseCIDR(ctx, x, ep, false);
    if (!prefixContains(cidr, e)) ctx.fail(ep, `${JSON.stringify(x)} is not inside cidr ${cidr.text}`);
    return e;
  });
  return { kind: 'selector', selector: { kind: 'cidr', cidr, except } };
}

/** A port number, or a port name (IANA_SVC_NAME: 1-15 of a-z, 0-9, "-", with a letter). */
function parsePortOrName(ctx: Ctx, v: unknown, path: string): number | string {
  if (typeof v === 'string' && /[a-zA-Z]/.test(v)) {
    const s = v.trim();
    if (!/^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$/.test(s) || s.includes('--')) ctx.fail(path, `${JSON.stringify(v)} is not a port (1-65535) or a port name (1-15 of a-z, 0-9 and "-")`);
    return s;
  }
  return parsePortNumber(ctx, v, path);
}

function parsePortNumber(ctx: Ctx, v: unknown, path: string): number {
  let n: number;
  if (typeof v === 'number') {
    n = v;
  } else if (typeof v === 'string') {
    const s = v.trim();
    if (/^[0-9]+$/.test(s)) {
      n = Number(s);
    } else {
      return ctx.fail(path, `${JSON.stringify(v)} is not a port (1-65535)`);
    }
  } else {
    return ctx.fail(path, `${show(v)} is not a port (1-65535)`);
  }
  if (!Number.isInteger(n) || n < 0 || n > 65535) ctx.fail(path, `${JSON.stringify(v)} is not a port (1-65535)`);
  return n;
}

function parseProtocol(ctx: Ctx, v: unknown, path: string, allowed: readonly string[], caseInsensitive: boolean): L4Protocol {
  const s = ctx.str(v, path);
  const u = caseInsensitive ? s.toUpperCase() : s;
  if (!allowed.includes(u)) ctx.fail(path, `${JSON.stringify(s)} is not a protocol (want ${allowed.join(', ')})`);
  return u as L4Protocol;
}

/** One `ports[i]` item of a Cilium toPorts rule. */
function parseCiliumPort(ctx: Ctx, v: unknown, path: string): PortSpec {
  const o = ctx.obj(v, path);
  ctx.fields(o, path, ['port', 'endPort', 'protocol']);
  if (o.port === undefined || o.port === null) ctx.fail(join(path, 'port'), 'is required (use "0" for every port)');
  const port = parsePortOrName(ctx, o.port, join(path, 'port'));
  const protocol = o.protocol === undefined || o.protocol === null ? 'ANY' : parseProtocol(ctx, o.protocol, join(path, 'protocol'), ['TCP', 'UDP', 'SCTP', 'ANY'], true);
  if (typeof port === 'string') return namedPortSpec(ctx, o, protocol, port, path);
  return { protocol, port, endPort: parseEndPort(ctx, o.endPort, port, join(path, 'endPort')) };
}

function namedPortSpec(ctx: Ctx, o: Obj, protocol: L4Protocol, name: string, path: string): PortSpec {
  if (o.endPort !== undefined && o.endPort !== null && o.endPort !== 0) ctx.fail(join(path, 'endPort'), 'cannot be used with a named port');
  return { protocol, port: 0, endPort: 0, name };
}

function parseEndPort(ctx: Ctx, v: unknown, port: number, path: string): number {
  if (v === undefined || v === null) return port;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 65535) ctx.fail(path, `${show(v)} is not a port (1-65535)`);
  // Port 0 is Cilium's "every port" wildcard and takes no range: "0" with endPort 100 would
  // silently mean every port, so it is refused (ask for port 1 to mean 1-100).
  if (port === 0) {
    if (v === 0) return 0;
    return ctx.fail(path, `${v} needs a port of 1 or more: port "0" means every port and takes no endPort`);
  }
  if (v === 0) return port;
  if (v < port) ctx.fail(path, `${v} is below port ${port}`);
  return v;
}

function parseICMPs(ctx: Ctx, items: unknown[], path: string): PortSpec[] {
  const out: PortSpec[] = [];
  items.forEach((it, i) => {
    const p = `${path}[${i}]`;
    const o = ctx.obj(it, p);
    ctx.fields(o, p, ['fields']);
    const fields = ctx.optList(o, 'fields', p);
    if (fields.length > MAX_ICMP_FIELDS) ctx.fail(join(p, 'fields'), `has ${fields.length} items, at most ${MAX_ICMP_FIELDS} are allowed`);
    fields.forEach((f, j) => {
      const fp = `${join(p, 'fields')}[${j}]`;
      const fo = ctx.obj(f, fp);
      ctx.fields(fo, fp, ['family', 'type']);
      let family: 'IPv4' | 'IPv6' = 'IPv4';
      if (fo.family !== undefined && fo.family !== null) {
        const fam = ctx.str(fo.family, join(fp, 'family'));
        if (fam !== 'IPv4' && fam !== 'IPv6') ctx.fail(join(fp, 'family'), `${JSON.stringify(fam)} is not a family (want IPv4 or IPv6)`);
        family = fam;
      }
      const tp = join(fp, 'type');
      if (fo.type === undefined || fo.type === null) ctx.fail(tp, 'is required');
      let type: number;
      if (typeof fo.type === 'number' || (typeof fo.type === 'string' && /^[0-9]+$/.test(fo.type))) {
        type = Number(fo.type);
        if (!Number.isInteger(type) || type < 0 || type > 255) ctx.fail(tp, `${JSON.stringify(fo.type)} is not an ICMP type (0-255 or a name)`);
      } else if (typeof fo.type === 'string') {
        const t = ICMP_TYPE_NAMES[family][fo.type];
        if (t === undefined) ctx.fail(tp, `${JSON.stringify(fo.type)} is not an ${family} ICMP type name (like ${family === 'IPv4' ? 'EchoRequest' : 'EchoRequest, PacketTooBig'})`);
        type = t;
      } else {
        return ctx.fail(tp, `${show(fo.type)} is not an ICMP type (0-255 or a name)`);
      }
      out.push({ protocol: family === 'IPv4' ? 'ICMP' : 'ICMPv6', port: type, endPort: type });
    });
  });
  return out;
}

function parseToPorts(ctx: Ctx, items: unknown[], path: string): PortSpec[] {
  const out: PortSpec[] = [];
  items.forEach((it, i) => {
    const p = `${path}[${i}]`;
    const o = ctx.obj(it, p);
    const noTLS = 'TLS interception needs the L7 proxy, which tunswitch does not have';
    ctx.fields(o, p, ['ports', 'rules'], {
      listener: 'Envoy listeners need the L7 proxy, which tunswitch does not have',
      originatingTLS: noTLS,
      terminatingTLS: noTLS,
      serverNames: 'SNI matching needs the L7 proxy, which tunswitch does not have',
    });
    if (o.rules !== undefined && o.rules !== null) {
      const r = ctx.obj(o.rules, join(p, 'rules'));
      const nonEmpty = Object.values(r).some((x) => x !== null && x !== undefined && !(Array.isArray(x) && x.length === 0) && x !== '');
      if (nonEmpty) ctx.fail(join(p, 'rules'), 'L7 rules are not supported: tunswitch enforces L3/L4 policy only');
    }
    const ports = ctx.optList(o, 'ports', p);
    if (ports.length > MAX_PORTS_PER_RULE) ctx.fail(join(p, 'ports'), `has ${ports.length} items, at most ${MAX_PORTS_PER_RULE} are allowed`);
    ports.forEach((pp, j) => out.push(parseCiliumPort(ctx, pp, `${join(p, 'ports')}[${j}]`)));
  });
  return out;
}

// ---------------------------------------------------------------------------------------
// Cilium rules

const NO_NODES = 'node selectors (host policies) are not implemented; tunswitch has no host endpoint';
const INGRESS_UNSUPPORTED: Record<string, string> = {
  fromRequires: 'fromRequires is deprecated in Cilium and not implemented',
  fromNodes: NO_NODES,
  fromGroups: 'cloud provider groups are not implemented; use fromCIDRSet',
};
const EGRESS_UNSUPPORTED: Record<string, string> = {
  toRequires: 'toRequires is deprecated in Cilium and not implemented',
  toNodes: NO_NODES,
  toGroups: 'cloud provider groups are not implemented; use toCIDRSet',
  toServices: 'service selectors are not implemented; use toEndpoints or toCIDR',
  toFQDNs: 'DNS-based policy needs the DNS proxy, which tunswitch does not have',
};

/** `authentication: {mode: disabled}` (the default) is accepted; any other mode cannot be enforced. */
function parseAuthentication(ctx: Ctx, v: unknown, path: string): void {
  if (v === undefined || v === null) return;
  const o = ctx.obj(v, path);
  ctx.fields(o, path, ['mode']);
  const mode = o.mode === undefined || o.mode === null ? 'disabled' : ctx.str(o.mode, join(path, 'mode'));
  if (mode !== 'disabled') ctx.fail(join(path, 'mode'), `${JSON.stringify(mode)} is not supported: mutual authentication is not implemented (only "disabled")`);
}

function parseElement(ctx: Ctx, v: unknown, path: string, section: Section, namespace: string | null): RuleElement {
  const o = ctx.obj(v, path);
  const ingress = section === 'ingress' || section === 'ingressDeny';
  const pre = ingress ? 'from' : 'to';
  const l3 = [`${pre}Endpoints`, `${pre}CIDR`, `${pre}CIDRSet`, `${pre}Entities`];
  const unsupported = ingress ? INGRESS_UNSUPPORTED : EGRESS_UNSUPPORTED;
  ctx.fields(o, path, [...l3, 'toPorts', 'icmps', 'authentication'], unsupported);
  parseAuthentication(ctx, o.authentication, join(path, 'authentication'));

  const given = l3.filter((k) => Array.isArray(o[k]) && (o[k] as unknown[]).length > 0);
  if (given.length > 1) ctx.fail(path, `combining ${given[0]} and ${given[1]} in one rule is not supported (as in Cilium); write them as two rules`);

  const peers: Peer[] = [];
  ctx.optList(o, `${pre}Endpoints`, path).forEach((x, i) => {
    peers.push(endpointPeer(parseLabelSelector(ctx, x ?? {}, `${join(path, `${pre}Endpoints`)}[${i}]`), namespace));
  });
  ctx.optList(o, `${pre}CIDR`, path).forEach((x, i) => peers.push(cidrPeer(ctx, x, `${join(path, `${pre}CIDR`)}[${i}]`)));
  ctx.optList(o, `${pre}CIDRSet`, path).forEach((x, i) => peers.push(cidrSetPeer(ctx, x, `${join(path, `${pre}CIDRSet`)}[${i}]`)));
  ctx.optList(o, `${pre}Entities`, path).forEach((x, i) => {
    const p = `${join(path, `${pre}Entities`)}[${i}]`;
    const e = ctx.str(x, p);
    if (e === 'world-ipv4' || e === 'world-ipv6') ctx.fail(p, `entity ${JSON.stringify(e)} is not supported: tunswitch has one world identity; use "world" or a CIDR`);
    if (!(ENTITIES as readonly string[]).includes(e)) ctx.fail(p, `${JSON.stringify(e)} is not an entity (want ${ENTITIES.join(', ')})`);
    peers.push({ kind: 'entity', entity: e as Entity });
  });

  const toPorts = ctx.optList(o, 'toPorts', path);
  const icmps = ctx.optList(o, 'icmps', path);
  if (toPorts.length > 0 && icmps.length > 0) ctx.fail(path, 'icmps and toPorts cannot be in one rule (as in Cilium); write them as two rules');
  let ports: PortSpec[] | null = null;
  if (toPorts.length > 0) ports = parseToPorts(ctx, toPorts, join(path, 'toPorts'));
  else if (icmps.length > 0) ports = parseICMPs(ctx, icmps, join(path, 'icmps'));

  return { peers: given.length > 0 ? peers : null, ports };
}

function parseCiliumRule(ctx: Ctx, v: unknown, path: string, index: number, namespace: string | null): PolicyRule {
  const o = ctx.obj(v, path);
  ctx.fields(o, path, ['endpointSelector', 'description', 'ingress', 'egress', 'ingressDeny', 'egressDeny', 'enableDefaultDeny', 'labels', 'log'], {
    nodeSelector: NO_NODES,
  });
  if (o.endpointSelector === undefined || o.endpointSelector === null) ctx.fail(join(path, 'endpointSelector'), 'is required');
  let subject = parseLabelSelector(ctx, o.endpointSelector, join(path, 'endpointSelector'));
  if (namespace !== null) subject = subject.and(nsRequirement(namespace));
  const description = o.description === undefined || o.description === null ? null : ctx.str(o.description, join(path, 'description'));
  if (o.labels !== undefined && o.labels !== null) ctx.list(o.labels, join(path, 'labels'));
  if (o.log !== undefined && o.log !== null) ctx.obj(o.log, join(path, 'log'));

  const sections = {} as Record<Section, RuleElement[]>;
  for (const s of ['ingress', 'egress', 'ingressDeny', 'egressDeny'] as const) {
    sections[s] = ctx.optList(o, s, path).map((x, i) => parseElement(ctx, x, `${join(path, s)}[${i}]`, s, namespace));
  }
  let ddIngress = true;
  let ddEgress = true;
  if (o.enableDefaultDeny !== undefined && o.enableDefaultDeny !== null) {
    const p = join(path, 'enableDefaultDeny');
    const d = ctx.obj(o.enableDefaultDeny, p);
    ctx.fields(d, p, ['ingress', 'egress']);
    if (d.ingress !== undefined && d.ingress !== null) ddIngress = ctx.bool(d.ingress, join(p, 'ingress'));
    if (d.egress !== undefined && d.egress !== null) ddEgress = ctx.bool(d.egress, join(p, 'egress'));
  }
  return {
    index,
    description,
    subject,
    ingress: sections.ingress,
    egress: sections.egress,
    ingressDeny: sections.ingressDeny,
    egressDeny: sections.egressDeny,
    hasIngress: sections.ingress.length + sections.ingressDeny.length > 0,
    hasEgress: sections.egress.length + sections.egressDeny.length > 0,
    defaultDenyIngress: ddIngress,
    defaultDenyEgress: ddEgress,
  };
}

// ---------------------------------------------------------------------------------------
// Kubernetes NetworkPolicy

function parseK8sPort(ctx: Ctx, v: unknown, path: string): PortSpec {
  const o = ctx.obj(v, path);
  ctx.fields(o, path, ['port', 'endPort', 'protocol']);
  const protocol = o.protocol === undefined || o.protocol === null ? 'TCP' : parseProtocol(ctx, o.protocol, join(path, 'protocol'), ['TCP', 'UDP', 'SCTP'], false);
  const given = o.port === undefined || o.port === null ? 0 : parsePortOrName(ctx, o.port, join(path, 'port'));
  if (typeof given === 'string') return namedPortSpec(ctx, o, protocol, given, path);
  const port = given;
  if (o.port !== undefined && o.port !== null && port === 0) ctx.fail(join(path, 'port'), `${JSON.stringify(o.port)} is not a port (1-65535)`);
  if (port === 0 && o.endPort !== undefined && o.endPort !== null) ctx.fail(join(path, 'endPort'), 'needs port to be set');
  return { protocol, port, endPort: parseEndPort(ctx, o.endPort, port, join(path, 'endPort')) };
}

function parseK8sPeer(ctx: Ctx, v: unknown, path: string, namespace: string | null): Peer {
  const o = ctx.obj(v, path);
  ctx.fields(o, path, ['podSelector', 'namespaceSelector', 'ipBlock']);
  const hasPod = o.podSelector !== undefined && o.podSelector !== null;
  const hasNs = o.namespaceSelector !== undefined && o.namespaceSelector !== null;
  const hasIp = o.ipBlock !== undefined && o.ipBlock !== null;
  if (hasIp && (hasPod || hasNs)) ctx.fail(path, 'ipBlock cannot be combined with podSelector or namespaceSelector');
  if (!hasIp && !hasPod && !hasNs) ctx.fail(path, 'must have podSelector, namespaceSelector or ipBlock');
  if (hasIp) {
    const p = join(path, 'ipBlock');
    const b = ctx.obj(o.ipBlock, p);
    ctx.fields(b, p, ['cidr', 'except']);
    // Kubernetes: an ipBlock also selects pods whose addresses fall in it.
    const peer = cidrSetPeer(ctx, b, p);
    return peer.kind === 'selector' && peer.selector.kind === 'cidr' ? { kind: 'selector', selector: { ...peer.selector, pods: true } } : peer;
  }
  const pod = hasPod ? parseLabelSelector(ctx, o.podSelector, join(path, 'podSelector')) : LabelSelector.ALL;
  if (!hasNs) return endpointPeer(pod, namespace);
  const nsSel = parseLabelSelector(ctx, o.namespaceSelector, join(path, 'namespaceSelector'), (_s, key) => ({ source: 'k8s', key: NAMESPACE_LABELS_PREFIX + key }));
  const combined = new LabelSelector([...pod.requirements, ...nsSel.requirements]);
  // A namespaceSelector (even {}) replaces the policy's own namespace.
  return { kind: 'selector', selector: { kind: 'labels', selector: combined, clusterOnly: true } };
}

function parseK8sRule(ctx: Ctx, v: unknown, path: string, ingress: boolean, namespace: string | null): RuleElement {
  const o = ctx.obj(v, path);
  const peerKey = ingress ? 'from' : 'to';
  ctx.fields(o, path, [peerKey, 'ports']);
  const peerItems = ctx.optList(o, peerKey, path);
  // Kubernetes: no from/to means every source/destination, outside the cluster included.
  const peers: Peer[] = peerItems.length === 0 ? [{ kind: 'entity', entity: 'all' }] : peerItems.map((x, i) => parseK8sPeer(ctx, x, `${join(path, peerKey)}[${i}]`, namespace));
  const portItems = ctx.optList(o, 'ports', path);
  const ports = portItems.length === 0 ? null : portItems.map((x, i) => parseK8sPort(ctx, x, `${join(path, 'ports')}[${i}]`));
  return { peers, ports };
}

function parseK8sSpec(ctx: Ctx, v: unknown, path: string, namespace: string | null): PolicyRule {
  const o = ctx.obj(v, path);
  ctx.fields(o, path, ['podSelector', 'policyTypes', 'ingress', 'egress']);
  if (o.podSelector === undefined || o.podSelector === null) ctx.fail(join(path, 'podSelector'), 'is required (use {} for every pod)');
  let subject = parseLabelSelector(ctx, o.podSelector, join(path, 'podSelector'));
  if (namespace !== null) subject = subject.and(nsRequirement(namespace));
  const ingressItems = ctx.optList(o, 'ingress', path);
  const egressItems = ctx.optList(o, 'egress', path);
  let types: string[];
  if (o.policyTypes === undefined || o.policyTypes === null) {
    types = egressItems.length > 0 ? ['Ingress', 'Egress'] : ['Ingress'];
  } else {
    types = ctx.list(o.policyTypes, join(path, 'policyTypes')).map((t, i) => {
      const p = `${join(path, 'policyTypes')}[${i}]`;
      const s = ctx.str(t, p);
      if (s !== 'Ingress' && s !== 'Egress') ctx.fail(p, `${JSON.stringify(s)} is not a policy type (want Ingress or Egress)`);
      return s;
    });
  }
  const hasIngress = types.includes('Ingress');
  const hasEgress = types.includes('Egress');
  const ingress = ingressItems.map((x, i) => parseK8sRule(ctx, x, `${join(path, 'ingress')}[${i}]`, true, namespace));
  const egress = egressItems.map((x, i) => parseK8sRule(ctx, x, `${join(path, 'egress')}[${i}]`, false, namespace));
  return {
    index: 0,
    description: null,
    subject,
    ingress: hasIngress ? ingress : [],
    egress: hasEgress ? egress : [],
    ingressDeny: [],
    egressDeny: [],
    hasIngress,
    hasEgress,
    defaultDenyIngress: true,
    defaultDenyEgress: true,
  };
}

// ---------------------------------------------------------------------------------------
// Documents

const NAME_RE = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

function parseMetadata(ctx: Ctx, doc: Obj, clusterwide: boolean): { name: string; namespace: string | null } {
  if (doc.metadata === undefined || doc.metadata === null) ctx.fail('metadata', 'is required');
  const m = ctx.obj(doc.metadata, 'metadata');
  // Other metadata (labels, annotations, uid, ...) is accepted as-is: `kubectl get -o yaml` output must load.
  if (m.name === undefined || m.name === null) ctx.fail('metadata.name', 'is required');
  const name = ctx.str(m.name, 'metadata.name');
  if (name.length > 253 || !NAME_RE.test(name)) ctx.fail('metadata.name', `${JSON.stringify(name)} is not a valid name (lowercase letters, digits, "-" and ".")`);
  ctx.name = name;
  let namespace: string | null = null;
  if (m.namespace !== undefined && m.namespace !== null) {
    if (clusterwide) ctx.fail('metadata.namespace', 'a clusterwide policy has no namespace');
    namespace = ctx.str(m.namespace, 'metadata.namespace');
    if (namespace.length > 63 || !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(namespace)) ctx.fail('metadata.namespace', `${JSON.stringify(namespace)} is not a valid namespace`);
  }
  return { name, namespace };
}

function parsePolicyObject(ctx: Ctx, v: unknown, path: string, out: Policy[]): void {
  const doc = ctx.obj(v, path);
  const kind = doc.kind;
  if (typeof kind !== 'string') ctx.fail(join(path, 'kind'), kind === undefined ? 'is required' : `${show(kind)} is not a string`);
  if (kind === 'List' || kind.endsWith('List')) {
    ctx.fields(doc, path, ['apiVersion', 'kind', 'metadata', 'items']);
    ctx.optList(doc, 'items', path).forEach((it, i) => {
      const sub = new Ctx(ctx.file, ctx.doc);
      parsePolicyObject(sub, it, `${join(path, 'items')}[${i}]`, out);
    });
    return;
  }
  const apiVersion = doc.apiVersion;
  const want: Record<string, string> = {
    CiliumNetworkPolicy: 'cilium.io/v2',
    CiliumClusterwideNetworkPolicy: 'cilium.io/v2',
    NetworkPolicy: 'networking.k8s.io/v1',
  };
  const wantVersion = want[kind];
  if (wantVersion === undefined) ctx.fail(join(path, 'kind'), `${JSON.stringify(kind)} is not a policy kind (want CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy, NetworkPolicy or List)`);
  if (apiVersion !== wantVersion) ctx.fail(join(path, 'apiVersion'), `${show(apiVersion)} is not the apiVersion of ${kind} (want ${wantVersion})`);
  // Inside a List the paths below are relative to the item, named by the policy.
  const pk = kind as PolicyKind;
  const clusterwide = pk === 'CiliumClusterwideNetworkPolicy';
  const { name, namespace } = parseMetadata(ctx, doc, clusterwide);
  const rules: PolicyRule[] = [];
  if (pk === 'NetworkPolicy') {
    ctx.fields(doc, '', ['apiVersion', 'kind', 'metadata', 'spec', 'status', 'description']);
    if (doc.description !== undefined && doc.description !== null) ctx.str(doc.description, 'description');
    if (doc.spec === undefined || doc.spec === null) ctx.fail('spec', 'is required');
    rules.push(parseK8sSpec(ctx, doc.spec, 'spec', namespace));
  } else {
    // A top-level description is common in Cilium's example policies; it is kept as text only.
    ctx.fields(doc, '', ['apiVersion', 'kind', 'metadata', 'spec', 'specs', 'status', 'description']);
    if (doc.description !== undefined && doc.description !== null) ctx.str(doc.description, 'description');
    const hasSpec = doc.spec !== undefined && doc.spec !== null;
    const specs = ctx.optList(doc, 'specs', '');
    if (!hasSpec && specs.length === 0) ctx.fail('spec', 'is required (or specs)');
    if (hasSpec) rules.push(parseCiliumRule(ctx, doc.spec, 'spec', 0, namespace));
    specs.forEach((s, i) => rules.push(parseCiliumRule(ctx, s, `specs[${i}]`, rules.length, namespace)));
  }
  out.push({ kind: pk, name, namespace, key: policyKey(pk, namespace, name), file: ctx.file, rules });
}

/** Aliases a document may expand (yaml's toJS limit); legitimate policies use a handful. */
export const MAX_ALIAS_COUNT = 100;
/** Deepest nesting of mappings and lists accepted; a CiliumNetworkPolicy needs about 10. */
export const MAX_NESTING = 64;

/** Depth of nested objects/arrays in v (iterative: hostile input must not blow the stack). */
function nestingDepth(v: unknown): number {
  let max = 0;
  const stack: [unknown, number][] = [[v, 0]];
  while (stack.length > 0) {
    const [x, d] = stack.pop() as [unknown, number];
    if (x === null || typeof x !== 'object') continue;
    if (d + 1 > max) max = d + 1;
    if (max > MAX_NESTING) return max;
    for (const c of Array.isArray(x) ? x : Object.values(x as object)) stack.push([c, d + 1]);
  }
  return max;
}

/**
 * Decodes policy file bytes as UTF-8, refusing invalid sequences with the byte offset of the
 * first one (instead of storing U+FFFD replacement characters). A UTF-8 BOM is dropped.
 */
export function decodePolicyBytes(bytes: Uint8Array, fileName: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    const off = firstInvalidUtf8(bytes);
    throw new TunswitchError('EPOLICY_INVALID', `${fileName}: is not UTF-8: invalid byte 0x${(bytes[off] ?? 0).toString(16).padStart(2, '0')} at byte offset ${off}`);
  }
}

/** Offset of the first byte that does not start a valid UTF-8 sequence, or -1 when all are valid. */
export function firstInvalidUtf8(b: Uint8Array): number {
  let i = 0;
  while (i < b.length) {
    const c = b[i] as number;
    let n: number;
    let lo = 0x80;
    let hi = 0xbf;
    if (c < 0x80) { i++; continue; }
    if (c >= 0xc2 && c <= 0xdf) n = 1;
    else if (c >= 0xe0 && c <= 0xef) { n = 2; if (c === 0xe0) lo = 0xa0; if (c === 0xed) hi = 0x9f; }
    else if (c >= 0xf0 && c <= 0xf4) { n = 3; if (c === 0xf0) lo = 0x90; if (c === 0xf4) hi = 0x8f; }
    else return i;
    for (let k = 1; k <= n; k++) {
      const x = b[i + k];
      if (x === undefined) return i; // truncated sequence at the end
      if (x < (k === 1 ? lo : 0x80) || x > (k === 1 ? hi : 0xbf)) return i; // where the bad sequence starts
    }
    i += n + 1;
  }
  return -1;
}

/**
 * Parses every policy in a YAML or JSON file. Throws TunswitchError EPOLICY_INVALID naming the
 * file, the policy and the field path; returns all policies or none.
 */
export function parsePolicyFile(text: string, fileName: string): Policy[] {
  let docs: ReturnType<typeof parseAllDocuments>;
  try {
    docs = parseAllDocuments(text, { prettyErrors: true });
  } catch (e) {
    // the parser itself gave up (e.g. its stack on absurd nesting): bad input, not a bug
    throw new TunswitchError('EPOLICY_INVALID', `${fileName}: is not valid YAML or JSON: ${(e as Error).message.split('\n')[0]}`);
  }
  const list = Array.isArray(docs) ? docs : [docs];
  const out: Policy[] = [];
  list.forEach((d, i) => {
    const ctx = new Ctx(fileName, i + 1);
    if (d.errors.length > 0) {
      const e = d.errors[0];
      const pos = e?.linePos?.[0];
      const where = pos ? ` (line ${pos.line}, column ${pos.col})` : '';
      const first = (e?.message.split('\n')[0] ?? 'parse error').replace(/ at line \d+, column \d+:?$/, '');
      ctx.fail('', `is not valid YAML or JSON${where}: ${first}`);
    }
    let v: unknown;
    try {
      // maxAliasCount bounds what aliases may expand to (a "billion laughs" document)
      v = d.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
    } catch (e) {
      const why = e instanceof ReferenceError && /alias/i.test(e.message)
        ? `expands aliases too often (more than ${MAX_ALIAS_COUNT}; an alias bomb?)`
        : e instanceof RangeError ? `nests too deeply (more than ${MAX_NESTING} levels)` : `cannot be read: ${(e as Error).message.split('\n')[0]}`;
      return ctx.fail('', why);
    }
    if (nestingDepth(v) > MAX_NESTING) ctx.fail('', `nests too deeply (more than ${MAX_NESTING} levels)`);
    if (v === null || v === undefined) return; // an empty document (e.g. a trailing ---)
    if (Array.isArray(v)) {
      v.forEach((it, j) => parsePolicyObject(new Ctx(fileName, i + 1), it, `[${j}]`, out));
    } else {
      parsePolicyObject(ctx, v, '', out);
    }
  });
  const seen = new Set<string>();
  for (const p of out) {
    if (seen.has(p.key)) {
      throw new TunswitchError('EPOLICY_INVALID', `${fileName}: policy "${p.name}"${p.namespace ? ` in namespace "${p.namespace}"` : ''} is defined twice`);
    }
    seen.add(p.key);
  }
  return out;
}
