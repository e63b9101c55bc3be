/**
 * Per-port offload: which ports offer TSO/USO to their endpoint's kernel, and what the switch
 * must size for it. The switch-wide `offload` of the config is the default; a node (`nodes.X.
 * offload`) or an endpoint added through the API (`offload: false|true`) may differ.
 *
 * A port with offload may hand the switch 64 KiB GSO packets, so the slab's slots are sized
 * for them (65600 bytes, 1024 slots) whenever the config has offload on or any node asks for
 * it; on a switch started with small slots an endpoint cannot be added with offload.
 */
import { TunswitchError } from '../control/errors.js';
import { TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, TUN_F_USO4, TUN_F_USO6 } from '../io/tun.js';
import type { RunConfig } from './config.js';

/** Whether the slab must hold GSO super-packets. */
export function gsoSlots(cfg: Pick<RunConfig, 'offload' | 'nodes'>): boolean {
  return cfg.offload || cfg.nodes.some((n) => n.offload === true);
}

/** The offload a new port gets: the request's, else the config's; refused where it cannot work. */
export function offloadWanted(cfg: RunConfig, requested?: boolean): boolean {
  const want = requested ?? cfg.offload;
  if (want && !gsoSlots(cfg)) {
    throw new TunswitchError('EBAD_REQUEST', 'body.offload: true needs a switch whose packet slots hold 64 KiB GSO packets: start it with offload: true, or with a node that has offload: true');
  }
  return want;
}

const FLAG_NAMES: [number, string][] = [
  [TUN_F_CSUM, 'csum'],
  [TUN_F_TSO4, 'tso4'],
  [TUN_F_TSO6, 'tso6'],
  [TUN_F_TSO_ECN, 'tso-ecn'],
  [TUN_F_USO4, 'uso4'],
  [TUN_F_USO6, 'uso6'],
];

/** TUN_F_* flags as names, e.g. ['csum', 'tso4', 'tso6', 'uso4', 'uso6']; [] for a plain port. */
export function offloadFlagNames(flags: number): string[] {
  const out: string[] = [];
  for (const [bit, name] of FLAG_NAMES) if ((flags & bit) !== 0) out.push(name);
  return out;
}
