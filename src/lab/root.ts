/** Parent of every lab's run directory (and of the default switch's socket). A leaf: the CLI reads it at start-up. */
export const LAB_RUN_ROOT = '/run/tunswitch';
