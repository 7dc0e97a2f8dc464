// `ticker publish <stream>`: NDJSON events (event-line.ts) from stdin or a
// file, through the client's Producer, which batches them, keeps several
// batches in flight and retries without duplicating. Lines are read only as
// fast as the producer takes them (its bound on buffered events), so a
// large file or an endless pipe costs bounded memory.
//
// A bad line stops the command: nothing from it on is sent, and the events
// before it, which may be in flight already, are flushed first, so on exit
// every line before the bad one is published and the error says how many.
import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";
import type { Readable } from "node:stream";
import { createInterface } from "node:readline";
import { Command, Option } from "commander";
import type { PublishEvent, PublishResult, Ticker } from "../client/index.js";
import { integerAtLeast } from "./args.js";
import { withTicker } from "./client.js";
import type { CliContext } from "./context.js";
import { BadLine, countEventLines, parseEventLine } from "./event-line.js";
import { CliError, ExitCode } from "./exit-codes.js";
import { counted, note, printJson } from "./output.js";
import { progressShown, startProgress } from "./progress.js";

/** Lines parsed before they are handed to the producer in one send. */
const SEND_EVENTS_MAX = 500;

const EXAMPLES = `
Each line is one event in the API's JSON form: {"type": ..., "key", "producer_id",
"producer_seq", "producer_ts", "idempotency_key", "payload" | "payload_base64"};
seq, stream and ingest_ts are ignored, so replay's output publishes as it is.
Blank lines are skipped. A bad line exits 2 naming it; the lines before it are
published, none after it.

Examples:
  $ echo '{"type":"trade","key":"BTC-USD","payload":{"px":91234.5}}' | ticker publish md.btc-usd
  $ ticker publish orders --file orders.ndjson --batch-events 500 --linger-ms 20
  $ ticker replay orders | ticker publish orders-copy
  $ ticker publish orders --file orders.ndjson --json     # {"published": ..., "first_seq": ...}`;

interface PublishFlags {
  file?: string;
  batchEvents: number;
  lingerMs: number;
  format: "binary" | "json";
}

export function publishCommand(): Command {
  return new Command("publish")
    .description("publish NDJSON events from stdin or a file, batched and retried by the client's producer")
    .argument("<stream>", "the stream (created with the defaults if it does not exist, unless the server says otherwise)")
    .option("--file <path>", "read the events from this file instead of stdin (a progress bar then has a total)")
    .option("--batch-events <n>", "events per request at most (at most the server's publish_events_max)", integerAtLeast(1), 1000)
    .option("--linger-ms <ms>", "how long a batch that is not full waits for more events", integerAtLeast(0), 5)
    .addOption(new Option("--format <format>", "wire format of the requests").choices(["binary", "json"]).default("binary"))
    .addHelpText("after", EXAMPLES)
    .action((stream: string, flags: PublishFlags, cmd: Command) => withTicker(cmd, (ticker, ctx) => publish(ticker, ctx, stream, flags)));
}

/** What the server has acknowledged so far. */
class Tally {
  published = 0;
  duplicates = 0;
  first: number | null = null;
  last: number | null = null;
  private readonly started = performance.now();

  add(r: PublishResult): void {
    this.published += r.count;
    this.duplicates += r.duplicates.length;
    if (r.count > 0) {
      this.first = Math.min(this.first ?? r.first_seq, r.first_seq);
      this.last = Math.max(this.last ?? r.last_seq, r.last_seq);
    }
  }

  summary(stream: string) {
    const seconds = (performance.now() - this.started) / 1000;
    const eventsPerS = seconds > 0 ? Math.round((this.published + this.duplicates) / seconds) : 0;
    return { stream, published: this.published, duplicates: this.duplicates, first_seq: this.first, last_seq: this.last, seconds, events_per_s: eventsPerS };
  }

  text(): string {
    const seqs = this.first === null ? "" : ` (seqs ${this.first}..${this.last})`;
    const dups = this.duplicates > 0 ? `, ${counted(this.duplicates, "duplicate")}` : "";
    return `${counted(this.published, "event")} published${seqs}${dups}`;
  }
}

async function publish(ticker: Ticker, ctx: CliContext, stream: string, flags: PublishFlags): Promise<void> {
  const input = flags.file === undefined ? { stream: process.stdin, lines: undefined } : await openFile(flags.file, progressShown(ctx.json));
  const progress = startProgress({ label: `publish ${stream}`, total: input.lines, json: ctx.json });
  const tally = new Tally();
  const producer = ticker.producer({
    batchEventsMax: flags.batchEvents,
    lingerMs: flags.lingerMs,
    format: flags.format,
    onPublished: (r) => {
      tally.add(r);
      progress.add(r.count + r.duplicates.length);
    },
  });
  let bad: { line: number; message: string } | null = null;
  try {
    bad = await sendLines(input.stream, (events) => producer.send(stream, events));
    await producer.close();
  } catch (err) {
    progress.stop();
    note(ctx, `${tally.text()} before the error`);
    throw err;
  } finally {
    input.stream.destroy();
  }
  progress.stop();
  const summary = tally.summary(stream);
  if (bad !== null) {
    const message = `line ${bad.line}: ${bad.message}; ${tally.text()} from the lines before it, nothing from line ${bad.line} on`;
    throw new CliError(message, ExitCode.usage, { line: bad.line, ...summary });
  }
  if (ctx.json) printJson(summary);
  else note(ctx, `${tally.text()} to ${stream} in ${summary.seconds.toFixed(2)} s, ${summary.events_per_s} events/s`);
}

/** Reads events and sends them, SEND_EVENTS_MAX at a time; stops at the first bad line and returns it (null: none). */
async function sendLines(input: Readable, send: (events: PublishEvent[]) => Promise<void>): Promise<{ line: number; message: string } | null> {
  let line = 0;
  let events: PublishEvent[] = [];
  try {
    for await (const text of createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY })) {
      line++;
      if (text.trim() === "") continue;
      try {
        events.push(parseEventLine(text));
      } catch (err) {
        if (!(err instanceof BadLine)) throw err;
        // The good lines read before it still go.
        if (events.length > 0) await send(events);
        return { line, message: err.message };
      }
      if (events.length >= SEND_EVENTS_MAX) {
        await send(events);
        events = [];
      }
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).syscall === "read") throw new CliError(`cannot read the input: ${(err as Error).message}`, ExitCode.usage);
    throw err;
  }
  if (events.length > 0) await send(events);
  return null;
}

/** The file's stream, and its event lines when a progress bar will count towards them (a regular file only). */
async function openFile(path: string, count: boolean): Promise<{ stream: Readable; lines: number | undefined }> {
  let regular: boolean;
  try {
    const handle = await open(path);
    const stat = await handle.stat();
    await handle.close();
    if (stat.isDirectory()) throw new Error("is a directory");
    regular = stat.isFile();
  } catch (err) {
    throw new CliError(`--file ${path}: cannot read it (${(err as Error).message})`, ExitCode.usage);
  }
  let lines: number | undefined;
  if (count && regular) {
    const state = { inLine: false, lines: 0 };
    for await (const chunk of createReadStream(path)) countEventLines(chunk as Buffer, state);
    lines = state.lines;
  }
  return { stream: createReadStream(path), lines };
}
