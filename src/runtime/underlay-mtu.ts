/**
 * The MTU of the device that holds the underlay address (node-ip), read once at start-up
 * with iproute2 in the switch's namespace. The inner MTU the tunnel carries is the smaller of
 * it and the configured `mtu`, minus the VXLAN overhead (src/runtime/underlay.ts, MTU).
 */
import { execFileSync } from 'node:child_process';
import { VXLAN_OVERHEAD } from '../datapath/vxlan.js';

/** The device and MTU of the interface with IPv4 address `ip`, or null (address not found, no `ip`). */
export function underlayDeviceMtu(ip: string): { dev: string; mtu: number } | null {
  try {
    const addrs = execFileSync('ip', ['-o', '-4', 'addr', 'show'], { encoding: 'utf8', timeout: 5000 });
    for (const line of addrs.split('\n')) {
      const m = /^\d+:\s+(\S+)\s+inet\s+(\d+\.\d+\.\d+\.\d+)\//.exec(line);
      if (!m || m[2] !== ip) continue;
      const dev = (m[1] as string).split('@')[0] as string;
      const link = execFileSync('ip', ['-o', 'link', 'show', 'dev', dev], { encoding: 'utf8', timeout: 5000 });
      const mm = /\smtu\s+(\d+)/.exec(link);
      return mm ? { dev, mtu: Number(mm[1]) } : null;
    }
  } catch {
    return null;
  }
  return null;
}

/** The largest inner packet the tunnel carries: min(configured MTU, the device's) - 50. */
export function tunnelInnerMtu(configMtu: number, device: { mtu: number } | null): number {
  const outer = device !== null && device.mtu < configMtu ? device.mtu : configMtu;
  return outer - VXLAN_OVERHEAD;
}
