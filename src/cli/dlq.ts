// `ticker dlq <stream>`: the dead letters of a stream (the events of
// `{stream}.dlq`, which the server writes when a group nacks an event
// max_attempts times: docs/consume.md), and with --redrive their
// republishing to the stream. One redrive call reads at most the server's
// redrive_letters_max letters and says where to go on (`next`); this command
// calls again from there until the range is done.
import { Command, Option } from "commander";
import { type RedriveResult, type Ticker, TickerError } from "../client/index.js";
import { integerAtLeast } from "./args.js";
import { withTicker } from "./client.js";
import type { CliContext } from "./context.js";
import { EVENT_FORMATS, type EventFormat, LineOut, counted, eventLine, note, printJson } from "./output.js";

const EXAMPLES = `
A dead letter is an event of type "dead_letter" whose payload holds the original
stream, seq, group, reason, attempts and the whole original event. Redriven events
carry the idempotency key redrive:<dlq seq>, so a repeated redrive (within the
stream's dedup window) finds duplicates instead of publishing copies.

Examples:
  $ ticker dlq jobs                                  # every dead letter, NDJSON
  $ ticker dlq jobs --group workers --format payload | jq -r .reason
  $ ticker dlq jobs --redrive                        # all of them back to jobs
  $ ticker dlq jobs --redrive --group workers --max 100`;

interface DlqFlags {
  redrive?: boolean;
  from?: number;
  to?: number;
  group?: string;
  max?: number;
  format: EventFormat;
}

export function dlqCommand(): Command {
  return new Command("dlq")
    .description("list a stream's dead letters (NDJSON), or --redrive them back to the stream")
    .argument("<stream>", "the stream whose dead letters ({stream}.dlq) to read")
    .option("--redrive", "republish the dead letters to the stream, each once; prints what was moved")
    .option("--from <dlq seq>", "the first dead letter (a seq of {stream}.dlq; default: the oldest)", integerAtLeast(1))
    .option("--to <dlq seq>", "the last dead letter, inclusive (default: the newest)", integerAtLeast(1))
    .option("--group <group>", "only the letters this group dead-lettered")
    .option("--max <letters>", "with --redrive: read at most this many dead letters, from --from or the oldest", integerAtLeast(1))
    .addOption(new Option("--format <format>", "the list: ndjson (each letter's API JSON form) or payload").choices(EVENT_FORMATS).default("ndjson"))
    .addHelpText("after", EXAMPLES)
    .action((stream: string, flags: DlqFlags, cmd: Command) =>
      withTicker(cmd, (ticker, ctx) => (flags.redrive ? redrive(ticker, ctx, stream, flags) : list(ticker, ctx, stream, flags))),
    );
}

async function list(ticker: Ticker, ctx: CliContext, stream: string, flags: DlqFlags): Promise<void> {
  const out = new LineOut();
  let count = 0;
  try {
    for await (const e of ticker.dlq.list(stream, { from: flags.from, to: flags.to })) {
      if (flags.group !== undefined && (e.payload as { group?: unknown } | undefined)?.group !== flags.group) continue;
      count++;
      if (out.add(eventLine(e, flags.format)) && !(await out.flush())) return;
    }
  } catch (err) {
    if (!(err instanceof TickerError && err.status === 404 && count === 0)) throw err;
    // No dlq stream: nothing was ever dead-lettered, if the stream itself is there (else its own 404).
    await ticker.streams.get(stream);
  }
  if (!(await out.flush())) return;
  note(ctx, count === 0 ? `no dead letters for ${stream}` : counted(count, "dead letter"));
}

async function redrive(ticker: Ticker, ctx: CliContext, stream: string, flags: DlqFlags): Promise<void> {
  let from = flags.from;
  let to = flags.to;
  if (flags.max !== undefined) {
    const start = from ?? (await oldestLetter(ticker, stream));
    to = Math.min(to ?? Number.MAX_SAFE_INTEGER, start + flags.max - 1);
  }
  const total = { moved: 0, duplicates: 0, skipped: 0, from: null as number | null, to: null as number | null, calls: 0 };
  for (;;) {
    let r: RedriveResult;
    try {
      r = await ticker.dlq.redrive(stream, { from, to, group: flags.group });
    } catch (err) {
      // A refusal part way says what its call did and where to go on.
      if (err instanceof TickerError && typeof err.details.next === "number") {
        note(ctx, `redrive stopped: ${total.moved + Number(err.details.moved ?? 0)} moved in all; go on with --from ${err.details.next}`);
      }
      throw err;
    }
    total.calls++;
    total.moved += r.moved;
    total.duplicates += r.duplicates;
    total.skipped += r.skipped;
    total.from ??= r.from;
    total.to = r.to;
    if (r.next === null) break;
    from = r.next;
  }
  if (ctx.json) return printJson(total);
  const range = total.to !== null && total.from !== null && total.to >= total.from ? ` (dlq seqs ${total.from}..${total.to})` : "";
  process.stdout.write(`moved ${total.moved}, duplicates ${total.duplicates}, skipped ${total.skipped}${range} in ${counted(total.calls, "call")}\n`);
}

/** The oldest dead letter's seq: where a redrive without --from starts (1 when there is no dlq stream yet). */
async function oldestLetter(ticker: Ticker, stream: string): Promise<number> {
  try {
    return (await ticker.streams.get(`${stream}.dlq`)).first_seq;
  } catch (err) {
    if (err instanceof TickerError && err.status === 404) return 1;
    throw err;
  }
}
