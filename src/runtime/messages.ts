/** Messages between the main (I/O) thread and the control thread. */
export type ControlToMain =
  | { type: 'addPort'; port: number; fd: number }
  | { type: 'removePort'; port: number }
  | { type: 'ready'; endpoints: number; missing: string[] }
  | { type: 'log'; msg: string }
  | { type: 'stopped' }
  | { type: 'fatal'; msg: string };

export type MainToControl =
  | { type: 'portRemoved'; port: number }
  | { type: 'workerRestart'; total: number }
  | { type: 'shutdown' };
