// `ticker replay <stream>`: a range of the stream's events, one line each,
// read with the client's replay (binary pages fetched ahead), from `--from`
// or `--from-time` to `--to` or the head as the replay found it. The reader
// of stdout sets the pace (LineOut waits for each chunk to be written); one
// that has gone (`| head`) ends the replay with status 0.
import { Command, Option } from "commander";
import type { Ticker } from "../client/index.js";
import { type Position, type ReadFlags, addReadOptions, integerAtLeast, position } from "./args.js";
import { withTicker } from "./client.js";
import type { CliContext } from "./context.js";
import { CliError, ExitCode } from "./exit-codes.js";
import { EVENT_FORMATS, type EventFormat, LineOut, counted, eventLine, note } from "./output.js";
import { progressShown, startProgress } from "./progress.js";

const EXAMPLES = `
Examples:
  $ ticker replay orders > orders.ndjson                 # everything retained, to the head
  $ ticker replay orders --from 1000 --to 1999
  $ ticker replay orders --from-time 1764000000000 --format payload
  $ ticker replay orders | ticker publish orders-copy    # a copy of the stream
  $ ticker replay md --types 'trade*' --max-rate 5000    # trades only, 5,000 events/s at most`;

interface ReplayFlags extends ReadFlags {
  from?: Position;
  to?: number;
  fromTime?: number;
  format: EventFormat;
}

export function replayCommand(): Command {
  return addReadOptions(new Command("replay"))
    .description("print a range of a stream's events (one NDJSON line each), then exit")
    .argument("<stream>", "the stream")
    .option("--from <seq|earliest|latest>", "the first seq (default: earliest, the oldest retained)", position)
    .option("--to <seq>", "the last seq, inclusive (default: the head when the replay starts)", integerAtLeast(1))
    .option("--from-time <ms>", "start at the first event ingested at or after this time (ms since the epoch), instead of --from", integerAtLeast(0))
    .addOption(new Option("--format <format>", "ndjson: each event's API JSON form; payload: its payload alone").choices(EVENT_FORMATS).default("ndjson"))
    .addHelpText("after", EXAMPLES)
    .action((stream: string, flags: ReplayFlags, cmd: Command) => withTicker(cmd, (ticker, ctx) => replay(ticker, ctx, stream, flags)));
}

async function replay(ticker: Ticker, ctx: CliContext, stream: string, flags: ReplayFlags): Promise<void> {
  if (flags.from !== undefined && flags.fromTime !== undefined) throw new CliError("give --from or --from-time, not both", ExitCode.usage);
  const started = performance.now();
  const progress = startProgress({
    label: `replay ${stream}`,
    total: progressShown(ctx.json) ? await total(ticker, stream, flags) : undefined,
    json: ctx.json,
  });
  const out = new LineOut();
  let count = 0;
  let progressed = 0;
  let first: number | null = null;
  let last: number | null = null;
  try {
    const opts = { from: flags.from, to: flags.to, from_time: flags.fromTime, types: flags.types, keys: flags.keys, maxRate: flags.maxRate };
    for await (const e of ticker.replay(stream, opts)) {
      first ??= e.seq;
      last = e.seq;
      count++;
      // A page's events are views into it: each becomes its line now.
      if (out.add(eventLine(e, flags.format))) {
        if (!(await out.flush())) return;
        progress.add(count - progressed);
        progressed = count;
      }
    }
    if (!(await out.flush())) return;
    progress.add(count - progressed);
  } finally {
    progress.stop();
  }
  const seconds = (performance.now() - started) / 1000;
  note(ctx, `${counted(count, "event")} replayed${first === null ? "" : ` (seqs ${first}..${last})`} in ${seconds.toFixed(2)} s`);
}

/** The events the replay will print, for the bar: known for a range of seqs, not for a start by time or a filter. */
async function total(ticker: Ticker, stream: string, flags: ReplayFlags): Promise<number | undefined> {
  // A filter's share of the range is known only once read.
  if (flags.fromTime !== undefined || flags.types !== undefined || flags.keys !== undefined) return undefined;
  const info = await ticker.streams.get(stream);
  const from = flags.from === undefined || flags.from === "earliest" ? info.first_seq : flags.from === "latest" ? info.head_seq + 1 : flags.from;
  return Math.max(0, Math.min(flags.to ?? info.head_seq, info.head_seq) - from + 1);
}
