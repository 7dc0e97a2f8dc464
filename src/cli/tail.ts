// `ticker tail <stream>`: the stream's events as they are published, one
// line each, over the client's consume WebSocket (which reconnects by itself
// and resumes where it got to). With a group, each event is acked once its
// line has been written to stdout, never before: at least once, as a
// consumer that crashes between the write and the ack shows the event again.
// Ends after --count events, on SIGINT or SIGTERM (acking what was printed),
// or when the reader of stdout has gone (`| head`): all with status 0.
import { Command, Option } from "commander";
import type { Ticker } from "../client/index.js";
import { type Position, type ReadFlags, addReadOptions, integerAtLeast, position } from "./args.js";
import { withTicker } from "./client.js";
import type { CliContext } from "./context.js";
import { EVENT_FORMATS, type EventFormat, LineOut, eventLine, note } from "./output.js";

const EXAMPLES = `
Without --from a group resumes after its checkpoint (a new group starts at the
head), and without a group tail starts at the head, as tail -f does.

Examples:
  $ ticker tail orders                                  # new events, until Ctrl-C
  $ ticker tail orders --from earliest --count 100      # the first 100, then exit
  $ ticker tail orders --group billing --count 10       # 10 events, acked as printed
  $ ticker tail orders --format payload | jq .total
  $ ticker tail md --types trade --keys 'BTC-*'         # only trades of BTC-* instruments
  $ ticker tail md --from earliest --conflate           # while behind, the newest event of each key
  $ ticker tail orders --from earliest | head -n 3      # exits 0 once head has its lines`;

interface TailFlags extends ReadFlags {
  group?: string;
  from?: Position;
  count?: number;
  format: EventFormat;
  conflate?: boolean;
}

export function tailCommand(): Command {
  return addReadOptions(new Command("tail"))
    .description("print a stream's events as they come (one NDJSON line each); with a group, ack each once it is printed")
    .argument("<stream>", "the stream")
    .option("--group <group>", "consume as this group: printed events are acked (the group's checkpoint), one active member at a time")
    .option("--from <seq|earliest|latest>", "where to start (default: the group's checkpoint + 1, else latest)", position)
    .option("--count <n>", "exit 0 after this many events", integerAtLeast(1))
    .addOption(
      new Option("--conflate", "while behind, the server sends the newest event of each key and leaves out the older ones (conflate=key)").conflicts("group"),
    )
    .addOption(new Option("--format <format>", "ndjson: each event's API JSON form; payload: its payload alone").choices(EVENT_FORMATS).default("ndjson"))
    .addHelpText("after", EXAMPLES)
    .action((stream: string, flags: TailFlags, cmd: Command) => withTicker(cmd, (ticker, ctx) => tail(ticker, ctx, stream, flags)));
}

async function tail(ticker: Ticker, ctx: CliContext, stream: string, flags: TailFlags): Promise<void> {
  // The subscription would retry an unreachable server for ever: ask once first (an unknown stream is refused here too).
  await ticker.streams.get(stream);
  const sub = ticker.consume(stream, {
    group: flags.group,
    from: flags.from,
    types: flags.types,
    keys: flags.keys,
    maxRate: flags.maxRate,
    conflate: flags.conflate ? "key" : undefined,
  });
  const out = new LineOut();
  let stopping = false;
  let writing = false;
  // A signal during a write lets it finish and be acked; otherwise the subscription ends at once.
  const stop = () => {
    stopping = true;
    if (!writing) void sub.close();
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  let standby = false;
  sub.on("role", (role) => {
    if (role === "standby") note(ctx, `standby in group ${flags.group}: another member is active; waiting`);
    else if (standby) note(ctx, `active in group ${flags.group} now`);
    standby = role === "standby";
  });
  sub.on("reconnect", ({ attempt, delayMs, error }) => note(ctx, `connection lost (${error.message}); reconnecting in ${delayMs} ms (attempt ${attempt})`));
  try {
    try {
      await sub.ready;
    } catch (err) {
      if (stopping) return; // a signal before the server's hello
      throw err;
    }
    let printed = 0;
    for await (const e of sub) {
      const full = out.add(eventLine(e, flags.format));
      const last = e.seq;
      printed++;
      const done = printed === flags.count;
      // Lines go out in chunks while more events are buffered; each chunk written is acked.
      if (!full && !done && sub.buffered > 0) continue;
      writing = true;
      const written = await out.flush();
      writing = false;
      if (!written) break; // the reader has gone: what it did not take stays unacked
      if (flags.group !== undefined) sub.ack(last);
      if (done || stopping) break;
    }
  } finally {
    process.off("SIGINT", stop);
    process.off("SIGTERM", stop);
    await sub.close(); // sends the pending ack
  }
}
