/**
 * The shared vocabulary of the switch (ARCHITECTURE.md, "src/proto/"): protocol numbers and
 * TCP flags, reserved identities, directions, the one prefix type and the flow tuple.
 * A leaf: nothing here imports anything, and every other folder may import it.
 */
export * from './ip.js';
export * from './identity.js';
export * from './direction.js';
export * from './prefix.js';
export type { FlowTuple } from './tuple.js';
