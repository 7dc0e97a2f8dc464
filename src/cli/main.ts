#!/usr/bin/env node
// The `ticker` command: builds the program (global options, one module per
// command) and turns whatever a command throws into a message and an exit
// status (exit-codes.ts). To add a command: a module exporting a function
// that returns its Command (its own options, help examples and action), and
// one line in COMMANDS.
import { readFileSync } from "node:fs";
import { Command, CommanderError } from "commander";
import { TickerError } from "../client/errors.js";
import { addGlobalOptions } from "./context.js";
import { CliError, ExitCode, exitCodeOf } from "./exit-codes.js";
import { benchCommand } from "./bench.js";
import { dlqCommand } from "./dlq.js";
import { checkpointCommand, groupsCommand, lagCommand } from "./groups.js";
import { publishCommand } from "./publish.js";
import { replayCommand } from "./replay.js";
import { serveCommand } from "./serve.js";
import { streamCommand } from "./stream.js";
import { streamsCommand } from "./streams.js";
import { tailCommand } from "./tail.js";

const COMMANDS: Array<() => Command> = [
  serveCommand,
  publishCommand,
  tailCommand,
  replayCommand,
  streamsCommand,
  streamCommand,
  groupsCommand,
  lagCommand,
  checkpointCommand,
  dlqCommand,
  benchCommand,
];

const EXAMPLES = `
Examples:
  $ ticker serve --port 8080 --data-dir ./data
  $ ticker serve --help                     # every config key, its default and meaning
  $ echo '{"type":"trade","payload":{"px":1}}' | ticker publish md.btc-usd
  $ ticker tail md.btc-usd --group audit    # new events, acked as they are printed
  $ ticker replay md.btc-usd --from 1 --to 100
  $ ticker --url https://ticker.example:8443 streams

Exit statuses, environment and every command: docs/cli.md.`;

const { version } = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version: string };

const program = addGlobalOptions(new Command("ticker"))
  .description("Ticker, a durable event-stream server, and the commands that talk to it")
  .version(version)
  .addHelpText("after", EXAMPLES)
  // Commander's errors become thrown CommanderErrors, so every failure leaves by report() below.
  .exitOverride()
  .showHelpAfterError("(add --help for usage)");
for (const make of COMMANDS) program.addCommand(make().copyInheritedSettings(program));

/** Prints what went wrong the way the output was asked for, and exits with its status. */
function report(err: unknown): never {
  if (err instanceof CommanderError) {
    // Commander printed the message (or the help) already. `ticker` with no command shows the help, as a request for it.
    process.exit(err.code === "commander.help" || err.exitCode === 0 ? ExitCode.ok : ExitCode.usage);
  }
  const code = exitCodeOf(err);
  const json = program.opts<{ json?: boolean }>().json === true;
  if (json && err instanceof TickerError) {
    const body = { error: { status: err.status, code: err.code, message: err.message, ...err.details } };
    process.stderr.write(`${JSON.stringify(body)}\n`);
  } else if (json && err instanceof CliError) process.stderr.write(`${JSON.stringify({ error: { message: err.message, ...err.details } })}\n`);
  else if (err instanceof TickerError) console.error(`ticker: ${err.message} (${err.status || "no answer"} ${err.code})`);
  else if (err instanceof CliError) console.error(err.message);
  else console.error(err);
  process.exit(code);
}

program.parseAsync(process.argv).catch(report);
