/**
 * Traffic direction from an endpoint's point of view: the number the tables, counters and
 * events store, and the word the policy language and the API use. Leaf module.
 */

export const DIR_INGRESS = 0;
export const DIR_EGRESS = 1;

export type Direction = 'ingress' | 'egress';

/** `ingress` / `egress` for DIR_INGRESS / DIR_EGRESS. */
export function directionName(dir: number): Direction {
  return dir === DIR_INGRESS ? 'ingress' : 'egress';
}

/** DIR_INGRESS / DIR_EGRESS for `ingress` / `egress`. */
export function directionNumber(dir: Direction): number {
  return dir === 'ingress' ? DIR_INGRESS : DIR_EGRESS;
}
