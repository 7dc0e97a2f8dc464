// The exit statuses of every `ticker` command, the one list scripts branch on
// (docs/cli.md has the table). A command fails by throwing: a CliError carries
// its status, a TickerError from the client gets one from its HTTP status, and
// anything else is an unexpected failure (1). main.ts turns the error into
// the message and the status.
import { TickerError } from "../client/errors.js";

export const ExitCode = {
  ok: 0,
  /** A bug or an error no other status names; the message says what. */
  failure: 1,
  /** Bad command line, bad flag value or bad configuration (file, environment, keys or TLS files). */
  usage: 2,
  /** `serve`: another process holds the data dir's lock. */
  dataDirLocked: 3,
  /** `serve`: the listen address or port cannot be taken (in use, not permitted). */
  listenFailed: 4,
  /** The server answered 4xx: the request was refused (unknown stream, bad input, auth, backpressure). */
  refused: 5,
  /** The server answered 5xx, or no answer came (unreachable, timeout, not a Ticker answer). */
  serverFailed: 6,
} as const;

export type ExitStatus = (typeof ExitCode)[keyof typeof ExitCode];

/** A failure whose message is for the user as it is (no stack), and its exit status. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitStatus,
    /** Fields for a script, added to the --json error (e.g. publish's bad line and what was published before it). */
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

/** The exit status a command that threw `err` ends with. */
export function exitCodeOf(err: unknown): ExitStatus {
  if (err instanceof CliError) return err.exitCode;
  if (err instanceof TickerError) return err.status >= 400 && err.status < 500 ? ExitCode.refused : ExitCode.serverFailed;
  return ExitCode.failure;
}
