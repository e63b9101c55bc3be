/**
 * Classic Kubernetes NetworkPolicy cases (from the Kubernetes documentation and its network
 * policy e2e suite), on the three-namespace shape: namespaces x, y, z (label ns=<name>), pods
 * a, b, c in each (label pod=<name>), each serving 80 and 81 over TCP and UDP under the names
 * serve-80-tcp, serve-81-tcp, serve-80-udp, serve-81-udp. Shared by the unit test (through the
 * agent's published tables) and the end-to-end test (real traffic).
 */

export const NAMESPACES = ['x', 'y', 'z'] as const;
export const PODS = ['a', 'b', 'c'] as const;

export const NAMED_PORTS = [
  { name: 'serve-80-tcp', port: 80, protocol: 'TCP' as const },
  { name: 'serve-81-tcp', port: 81, protocol: 'TCP' as const },
  { name: 'serve-80-udp', port: 80, protocol: 'UDP' as const },
  { name: 'serve-81-udp', port: 81, protocol: 'UDP' as const },
];

/** A probe: from pod "x/a" to pod "y/b" on port/protocol, expecting a verdict. */
export interface Probe {
  from: string;
  to: string;
  port: number;
  proto: 'TCP' | 'UDP';
  allowed: boolean;
}

export interface K8sCase {
  name: string;
  /** Policy YAML; `{{ADDR:y/b}}` is replaced by that pod's IPv4 address, `{{POOL}}` by the pool. */
  policies: string;
  probes: Probe[];
}

const np = (name: string, ns: string, spec: string): string => `---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: ${name}, namespace: ${ns} }
spec:
${spec.replace(/^/gm, '  ')}
`;

const p = (from: string, to: string, port: number, proto: 'TCP' | 'UDP', allowed: boolean): Probe => ({ from, to, port, proto, allowed });

export const CASES: K8sCase[] = [
  {
    name: 'default deny ingress in x',
    policies: np('deny-all', 'x', 'podSelector: {}\npolicyTypes: [Ingress]'),
    probes: [p('y/a', 'x/a', 80, 'TCP', false), p('x/b', 'x/a', 80, 'UDP', false), p('x/a', 'y/a', 80, 'TCP', true)],
  },
  {
    name: 'allow all ingress stacked on default deny',
    policies: np('deny-all', 'x', 'podSelector: {}\npolicyTypes: [Ingress]') + np('allow-all', 'x', 'podSelector: {}\ningress: [{}]'),
    probes: [p('y/a', 'x/a', 80, 'TCP', true), p('z/c', 'x/b', 81, 'UDP', true)],
  },
  {
    name: 'podSelector: only pod=b of the same namespace',
    policies: np('from-b', 'x', 'podSelector: {matchLabels: {pod: a}}\ningress:\n- from: [{podSelector: {matchLabels: {pod: b}}}]'),
    probes: [p('x/b', 'x/a', 80, 'TCP', true), p('y/b', 'x/a', 80, 'TCP', false), p('x/c', 'x/a', 80, 'TCP', false), p('x/c', 'x/b', 80, 'TCP', true)],
  },
  {
    name: 'namespaceSelector with matchExpressions',
    policies: np('from-y', 'x', 'podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector:\n      matchExpressions: [{key: ns, operator: In, values: [y]}]'),
    probes: [p('y/a', 'x/a', 80, 'TCP', true), p('y/c', 'x/a', 81, 'UDP', true), p('z/a', 'x/a', 80, 'TCP', false), p('x/b', 'x/a', 80, 'TCP', false)],
  },
  {
    name: 'podSelector AND namespaceSelector in one peer',
    policies: np('y-and-b', 'x', 'podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: y}}\n    podSelector: {matchLabels: {pod: b}}'),
    probes: [p('y/b', 'x/a', 80, 'TCP', true), p('y/a', 'x/a', 80, 'TCP', false), p('x/b', 'x/a', 80, 'TCP', false), p('z/b', 'x/a', 80, 'TCP', false)],
  },
  {
    name: 'podSelector OR namespaceSelector (two peers)',
    policies: np('y-or-b', 'x', 'podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [x, z]}]}\n  - podSelector: {matchLabels: {pod: b}}'),
    probes: [p('y/a', 'x/a', 80, 'TCP', true), p('x/b', 'x/a', 80, 'TCP', true), p('z/b', 'x/a', 80, 'TCP', false), p('x/c', 'x/a', 80, 'TCP', false)],
  },
  {
    name: 'ipBlock with except selects pods by address',
    policies: np('ipblock', 'x', 'podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - ipBlock: {cidr: "{{POOL}}", except: ["{{ADDR:y/b}}/32"]}'),
    probes: [p('y/a', 'x/a', 80, 'TCP', true), p('y/b', 'x/a', 80, 'TCP', false), p('z/c', 'x/a', 81, 'UDP', true)],
  },
  {
    name: 'named port on ingress (resolved on the destination)',
    policies: np('named', 'x', 'podSelector: {matchLabels: {pod: a}}\ningress:\n- ports: [{port: serve-81-tcp, protocol: TCP}]'),
    probes: [p('y/a', 'x/a', 81, 'TCP', true), p('y/a', 'x/a', 80, 'TCP', false), p('y/a', 'x/a', 81, 'UDP', false)],
  },
  {
    name: 'port range with endPort',
    policies: np('range', 'x', 'podSelector: {matchLabels: {pod: a}}\ningress:\n- ports: [{port: 80, endPort: 81, protocol: TCP}]'),
    probes: [p('z/a', 'x/a', 80, 'TCP', true), p('z/a', 'x/a', 81, 'TCP', true), p('z/a', 'x/a', 80, 'UDP', false)],
  },
  {
    name: 'policy stacking: the union of two policies',
    policies:
      np('y-80', 'x', 'podSelector: {matchLabels: {pod: a}}\ningress:\n- from: [{namespaceSelector: {matchLabels: {ns: y}}}]\n  ports: [{port: 80}]') +
      np('z-81', 'x', 'podSelector: {matchLabels: {pod: a}}\ningress:\n- from: [{namespaceSelector: {matchLabels: {ns: z}}}]\n  ports: [{port: 81}]'),
    probes: [p('y/b', 'x/a', 80, 'TCP', true), p('y/b', 'x/a', 81, 'TCP', false), p('z/b', 'x/a', 81, 'TCP', true), p('z/b', 'x/a', 80, 'TCP', false)],
  },
  {
    name: 'egress default deny with one UDP port to a namespace',
    policies: np('egress-y-udp', 'x', 'podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress:\n- to: [{namespaceSelector: {matchLabels: {ns: y}}}]\n  ports: [{port: 80, protocol: UDP}]'),
    probes: [p('x/a', 'y/b', 80, 'UDP', true), p('x/a', 'y/b', 80, 'TCP', false), p('x/a', 'z/b', 80, 'UDP', false), p('x/b', 'z/b', 80, 'TCP', true)],
  },
  {
    name: 'egress named port (resolved on each selected peer) and egress ipBlock to one pod',
    policies:
      np('egress-named', 'x', 'podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress:\n- to: [{namespaceSelector: {matchLabels: {ns: z}}}]\n  ports: [{port: serve-80-udp, protocol: UDP}]') +
      np('egress-ip', 'x', 'podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress:\n- to: [{ipBlock: {cidr: "{{ADDR:y/c}}/32"}}]'),
    probes: [p('x/a', 'z/a', 80, 'UDP', true), p('x/a', 'z/a', 81, 'UDP', false), p('x/a', 'y/c', 81, 'TCP', true), p('x/a', 'y/b', 81, 'TCP', false)],
  },
];

/** Fills `{{ADDR:ns/pod}}` and `{{POOL}}`. */
export function fillPolicy(text: string, addr: (pod: string) => string, pool: string): string {
  return text.replace(/\{\{ADDR:([a-z]\/[a-z])\}\}/g, (_m, pod: string) => addr(pod)).replace(/\{\{POOL\}\}/g, pool);
}
