/**
 * The part of cli-progress (which ships no types) that the benchmark uses.
 */
declare module 'cli-progress' {
  export interface Options {
    format?: string;
    stream?: NodeJS.WritableStream;
    hideCursor?: boolean;
    clearOnComplete?: boolean;
    noTTYOutput?: boolean;
    notTTYSchedule?: number;
    etaBuffer?: number;
    barsize?: number;
  }
  export class SingleBar {
    constructor(opt: Options, preset?: object);
    start(total: number, startValue: number, payload?: Record<string, unknown>): void;
    increment(step?: number, payload?: Record<string, unknown>): void;
    update(current: number, payload?: Record<string, unknown>): void;
    stop(): void;
  }
  export const Presets: { shades_classic: object; shades_grey: object; rect: object; legacy: object };
  const cliProgress: { SingleBar: typeof SingleBar; Presets: typeof Presets };
  export default cliProgress;
}
