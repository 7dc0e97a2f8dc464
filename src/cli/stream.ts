// `ticker stream <id>`: one stream, shown, created, updated or deleted, as
// kafka-topics does it with --describe / --create / --alter / --delete: the
// action is a flag, the settings are flags named after the config keys.
// --create refuses a stream that exists and --update one that does not
// (each checks with a GET first), so a typo never makes a stream nor a second
// run changes one unasked. --delete asks nothing: the flag is the
// confirmation, and a script can run it.
import { Command, InvalidArgumentError, Option } from "commander";
import { type StreamConfig, type StreamInfo, type Ticker, TickerError } from "../client/index.js";
import type { StreamConfig as ServerStreamConfig } from "../shard/stream-config.js";
import { integerAtLeast } from "./args.js";
import { withTicker } from "./client.js";
import type { CliContext } from "./context.js";
import { CliError, ExitCode } from "./exit-codes.js";
import { printFields, printJson } from "./output.js";

type Key = keyof ServerStreamConfig;

/** One flag per key of the server's stream config; the type makes a new key fail the build until it has one. */
const CONFIG_FLAGS: { [K in Key]: { value: string; help: string; parse: (v: string) => ServerStreamConfig[K] } } = {
  retention_ms: { value: "ms", help: "keep events this long", parse: integerAtLeast(1) },
  retention_bytes: {
    value: "n|none",
    help: "keep at most this many bytes of the log (none: no bound)",
    parse: (v) => (v === "none" ? null : integerAtLeast(1)(v)),
  },
  max_event_bytes: { value: "n", help: "the largest event payload the stream takes", parse: integerAtLeast(1) },
  dedup_window_ms: { value: "ms", help: "how long an idempotency key is remembered (0: never)", parse: integerAtLeast(0) },
  durability: { value: "process|fsync", help: "process: survives a crash of the server; fsync: survives power loss", parse: choice("process", "fsync") },
  producer_ordering: { value: "true|false", help: "append each producer's events in producer_seq order", parse: (v) => choice("true", "false")(v) === "true" },
  gap_timeout_ms: { value: "ms", help: "with producer_ordering: how long a missing producer_seq is waited for", parse: integerAtLeast(1) },
};

function choice<T extends string>(...values: T[]): (v: string) => T {
  return (v) => {
    if (!(values as string[]).includes(v)) throw new InvalidArgumentError(`must be one of ${values.join(", ")}`);
    return v as T;
  };
}

const flagOf = (key: string) => `--${key.replaceAll("_", "-")}`;

const EXAMPLES = `
Examples:
  $ ticker stream orders                                  # show it
  $ ticker stream orders --create --retention-ms 86400000 --durability fsync
  $ ticker stream orders --update --retention-bytes none
  $ ticker stream orders --delete                         # no question asked
  $ ticker stream orders --create --if-not-exists         # for scripts run twice`;

interface StreamFlags {
  create?: boolean;
  update?: boolean;
  delete?: boolean;
  ifNotExists?: boolean;
  [attribute: string]: unknown;
}

export function streamCommand(): Command {
  const cmd = new Command("stream")
    .description("show a stream, or --create, --update or --delete it")
    .argument("<id>", "the stream id")
    .addOption(new Option("--create", "create the stream with the settings given (refused if it exists)").conflicts(["update", "delete"]))
    .addOption(new Option("--update", "change the settings given, keep the others (refused if the stream does not exist)").conflicts("delete"))
    .addOption(new Option("--delete", "delete the stream and all its events, without asking"))
    .option("--if-not-exists", "with --create: an existing stream is left as it is, not an error");
  const attributes = new Map<string, Key>();
  for (const key of Object.keys(CONFIG_FLAGS) as Key[]) {
    const f: { value: string; help: string; parse: (v: string) => unknown } = CONFIG_FLAGS[key];
    // Boxed: commander turns a parsed null (--retention-bytes none) into "".
    const option = new Option(`${flagOf(key)} <${f.value}>`, `${f.help} (${key})`).argParser((v) => ({ value: f.parse(v) }));
    attributes.set(option.attributeName(), key);
    cmd.addOption(option);
  }
  return cmd.addHelpText("after", EXAMPLES).action((id: string, flags: StreamFlags, command: Command) => {
    const config: Record<string, unknown> = {};
    for (const [attribute, key] of attributes) if (flags[attribute] !== undefined) config[key] = (flags[attribute] as { value: unknown }).value;
    return withTicker(command, (ticker, ctx) => stream(ticker, ctx, id, flags, config as StreamConfig));
  });
}

async function stream(ticker: Ticker, ctx: CliContext, id: string, flags: StreamFlags, config: StreamConfig): Promise<void> {
  const settings = Object.keys(config).length;
  if (settings > 0 && !flags.create && !flags.update) throw new CliError("settings are changed with --create or --update", ExitCode.usage);
  if (flags.ifNotExists && !flags.create) throw new CliError("--if-not-exists goes with --create", ExitCode.usage);
  if (flags.delete) {
    await ticker.streams.delete(id);
    return ctx.json ? printJson({ id, deleted: true }) : void process.stdout.write(`deleted stream ${id}\n`);
  }
  if (flags.update && settings === 0)
    throw new CliError(`--update needs a setting to change (${Object.keys(CONFIG_FLAGS).map(flagOf).join(", ")})`, ExitCode.usage);
  let info: StreamInfo;
  if (flags.create) {
    const existing = await ticker.streams.get(id).catch((err: unknown) => {
      if (err instanceof TickerError && err.status === 404) return null;
      throw err;
    });
    if (existing !== null && !flags.ifNotExists)
      throw new CliError(`stream ${id} exists already; --update changes it`, ExitCode.refused, { code: "stream_exists" });
    info = existing ?? (await ticker.streams.put(id, config));
  } else if (flags.update) {
    await ticker.streams.get(id); // 404 for a stream that is not there: a PUT would create it
    info = await ticker.streams.put(id, config);
  } else info = await ticker.streams.get(id);
  if (ctx.json) return printJson(info);
  printFields({ ...info, created_at: `${info.created_at} (${new Date(info.created_at).toISOString()})` });
}
