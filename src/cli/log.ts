/**
 * The agent's log lines on stderr: `--log-level debug|info|warn|error` and `--log-format
 * text|json`. Text is `<ISO time> <LEVEL> <message>`; JSON is one object per line,
 * `{"time":"...","level":"info","msg":"..."}`, for jq and log shippers. Never on the packet
 * path (the runtime logs start-up, worker restarts and errors only), so a 40-line writer
 * does the job without a logging dependency.
 */
import { InvalidArgumentError } from 'commander';

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ['text', 'json'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export interface Logger {
  log(level: LogLevel, msg: string): void;
  /** For messages that carry no level (the runtime's): the level their words suggest. */
  auto(msg: string): void;
}

/** The level of an untagged runtime message: crashes and failures are errors, restarts warnings. */
export function levelOf(msg: string): LogLevel {
  if (/\b(crash(ed)?|fatal|error|failed|cannot)\b/i.test(msg)) return 'error';
  if (/\b(died|restart(ing|ed)?|lost|warning|killed|stale)\b/i.test(msg)) return 'warn';
  return 'info';
}

export function makeLogger(level: LogLevel, format: LogFormat, write: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  const min = LOG_LEVELS.indexOf(level);
  const log = (lv: LogLevel, msg: string): void => {
    if (LOG_LEVELS.indexOf(lv) < min) return;
    const time = new Date().toISOString();
    write(format === 'json' ? JSON.stringify({ time, level: lv, msg }) + '\n' : `${time} ${lv.toUpperCase().padEnd(5)} ${msg}\n`);
  };
  return { log, auto: (msg) => log(levelOf(msg), msg) };
}

export function parseLogLevel(s: string): LogLevel {
  if (!(LOG_LEVELS as readonly string[]).includes(s)) throw new InvalidArgumentError(`"${s}" is not one of ${LOG_LEVELS.join(', ')}.`);
  return s as LogLevel;
}

export function parseLogFormat(s: string): LogFormat {
  if (!(LOG_FORMATS as readonly string[]).includes(s)) throw new InvalidArgumentError(`"${s}" is not one of ${LOG_FORMATS.join(', ')}.`);
  return s as LogFormat;
}
