// The server's structured log (pino): one line per thing an operator acts on
// (start, recovery findings, retention deletions, a group's takeover, dead
// letters, disk full, shutdown), never one per event on the data path. Every
// line has `kind`, a stable name to filter on, beside pino's `level`, `time`
// and `msg`; the front's lines have no `shard`, a shard thread's have its
// number. Each thread makes its own logger from the same config and writes
// synchronously to stdout, so a line is one write(2) and lines of different
// threads never interleave, and a line written just before a crash is not lost.
import pino, { type Logger } from "pino";
import pretty from "pino-pretty";

import type { Config } from "./config.js";

export type LogConfig = Pick<Config, "log_level" | "log_format">;

/** What a line is about; `kind` in every line. */
export type LogKind =
  | "start"
  | "listening"
  | "ready"
  | "security"
  | "recovery"
  | "scrub"
  | "retention"
  | "takeover"
  | "dead_letter"
  | "disk_full"
  | "storage"
  | "checkpoint"
  | "external"
  | "timeline"
  | "shard"
  | "internal"
  | "shutdown"
  | "access";

export type { Logger };

const STDOUT_FD = 1;

/** The logger of this thread; `bindings` (e.g. `{ shard: 2 }`) go into every line. */
export function createLogger(config: LogConfig, bindings: Record<string, unknown> = {}): Logger {
  const stream =
    config.log_format === "pretty"
      ? // A line per message: the messages say it all, the fields are for the JSON form.
        pretty({ destination: STDOUT_FD, sync: true, colorize: false, translateTime: "SYS:HH:MM:ss.l", hideObject: true })
      : pino.destination({ dest: STDOUT_FD, sync: true });
  // No pid/hostname: one process per server, and its supervisor knows both.
  // Levels by name ("level":"warn"), as log collectors expect.
  const formatters = { level: (label: string) => ({ level: label }) };
  return pino({ level: config.log_level, base: null, timestamp: pino.stdTimeFunctions.isoTime, formatters }, stream).child(bindings);
}

let current: Logger | null = null;

/** Sets this thread's logger (the front at start, a shard thread when it starts). */
export function setLogger(logger: Logger): void {
  current = logger;
}

/**
 * This thread's logger. Before setLogger (a unit test that builds a shard's
 * parts without a server), a JSON logger at `warn`: problems still show.
 */
export function logger(): Logger {
  current ??= createLogger({ log_level: "warn", log_format: "json" });
  return current;
}
