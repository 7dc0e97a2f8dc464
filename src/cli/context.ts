// The global options of the client commands (publish, tail, streams, ...):
// which server, which key, and whether output is for a machine. Defined once
// on the program; each command resolves them here, so every command reads the
// same flags, the same environment and the same defaults.
import type { Command } from "commander";
import { CliError, ExitCode } from "./exit-codes.js";

export const URL_DEFAULT = "http://127.0.0.1:8080";

export interface CliContext {
  /** The server's base URL, without a trailing slash. */
  url: string;
  /** The API key sent as `Authorization: Bearer`; undefined: none. */
  token: string | undefined;
  /** Machine output: JSON on stdout, no progress bar, errors as JSON on stderr. */
  json: boolean;
}

interface GlobalFlags {
  url?: string;
  token?: string;
  json?: boolean;
}

/** Adds --url, --token and --json to the program (they are read with clientContext). */
export function addGlobalOptions(program: Command): Command {
  return program
    .option("--url <url>", `the server (default: $TICKER_URL, else ${URL_DEFAULT})`)
    .option("--token <key>", "API key, sent as a bearer token (default: $TICKER_TOKEN; the variable keeps it out of ps)")
    .option("--json", "machine output: JSON on stdout, errors as JSON on stderr, no progress bar");
}

/**
 * The context a client command runs in: flags first, then TICKER_URL and
 * TICKER_TOKEN, then the defaults. `command` is the running (sub)command; a
 * URL that is not http(s) is a usage error.
 */
export function clientContext(command: Command, env: NodeJS.ProcessEnv = process.env): CliContext {
  const flags = command.optsWithGlobals<GlobalFlags>();
  const raw = flags.url ?? (env.TICKER_URL || URL_DEFAULT);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new CliError(`--url ${raw}: not a URL (e.g. ${URL_DEFAULT})`, ExitCode.usage);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new CliError(`--url ${raw}: must be http:// or https://`, ExitCode.usage);
  if (url.search || url.hash) throw new CliError(`--url ${raw}: a base URL has no query or fragment`, ExitCode.usage);
  const token = flags.token ?? env.TICKER_TOKEN;
  return { url: url.href.replace(/\/+$/, ""), token: token || undefined, json: flags.json === true };
}
