// `ticker bench`: quick figures of a running server through the client:
// events/s and MB/s publishing through a Producer, then replaying the same
// events. Into a fresh stream (`bench-<ms>`) by default, deleted afterwards
// unless --keep; a stream named with --stream that exists already is written
// to and never deleted. Figures for a first look: docs/BENCHMARKS.md has the
// measured ones and how they were made.
import { randomBytes } from "node:crypto";
import { Command } from "commander";
import { type PublishEvent, type StreamInfo, type Ticker, TickerError } from "../client/index.js";
import { integerAtLeast } from "./args.js";
import { withTicker } from "./client.js";
import type { CliContext } from "./context.js";
import { note, printJson } from "./output.js";
import { startProgress } from "./progress.js";

/** Events handed to the producer in one send. */
const SEND_EVENTS = 1000;

const EXAMPLES = `
MB/s counts the bytes the events take in the stream's log (its "bytes"): payload,
fields and record framing.

Examples:
  $ ticker bench                                    # 100,000 events of 100 bytes, then replayed
  $ ticker bench --events 1000000 --payload-bytes 1000
  $ ticker bench --stream bench.fsync --keep --json`;

interface BenchFlags {
  events: number;
  payloadBytes: number;
  stream?: string;
  keep?: boolean;
  batchEvents: number;
}

export function benchCommand(): Command {
  return new Command("bench")
    .description("publish events through a producer, replay them, and print events/s and MB/s of each")
    .option("--events <n>", "events to publish", integerAtLeast(1), 100_000)
    .option("--payload-bytes <n>", "bytes of each event's (binary) payload", integerAtLeast(0), 100)
    .option("--stream <id>", "the stream (default: a new bench-<ms>, deleted afterwards)")
    .option("--keep", "keep the stream bench created")
    .option("--batch-events <n>", "events per publish request at most", integerAtLeast(1), 1000)
    .addHelpText("after", EXAMPLES)
    .action((flags: BenchFlags, cmd: Command) => withTicker(cmd, (ticker, ctx) => bench(ticker, ctx, flags)));
}

interface Figures {
  seconds: number;
  events_per_s: number;
  mb_per_s: number;
}

const figures = (events: number, bytes: number, ms: number): Figures => ({
  seconds: ms / 1000,
  events_per_s: Math.round((events * 1000) / ms),
  mb_per_s: Math.round((bytes / 1000 / ms) * 10) / 10,
});

async function bench(ticker: Ticker, ctx: CliContext, flags: BenchFlags): Promise<void> {
  const stream = flags.stream ?? `bench-${Date.now()}`;
  const existing = await ticker.streams.get(stream).catch((err: unknown) => {
    if (err instanceof TickerError && err.status === 404) return null;
    throw err;
  });
  const before: StreamInfo = existing ?? (await ticker.streams.put(stream));
  const created = existing === null;
  try {
    const publishMs = await publish(ticker, ctx, stream, flags);
    const after = await ticker.streams.get(stream);
    const logBytes = after.bytes - before.bytes;
    const replayMs = await replay(ticker, ctx, stream, before.head_seq + 1, after.head_seq);
    const result = {
      stream,
      events: flags.events,
      payload_bytes: flags.payloadBytes,
      log_bytes: logBytes,
      publish: figures(flags.events, logBytes, publishMs),
      replay: figures(after.head_seq - before.head_seq, logBytes, replayMs),
      kept: !created || flags.keep === true,
    };
    if (ctx.json) return printJson(result);
    const line = (what: string, f: Figures) =>
      `${what.padEnd(8)} ${flags.events} events in ${f.seconds.toFixed(2)} s: ${f.events_per_s} events/s, ${f.mb_per_s} MB/s\n`;
    process.stdout.write(`${stream}: ${flags.events} events of ${flags.payloadBytes} payload bytes, ${logBytes} bytes in the log\n`);
    process.stdout.write(line("publish", result.publish));
    process.stdout.write(line("replay", result.replay));
  } finally {
    if (created && !flags.keep) {
      await ticker.streams.delete(stream);
      note(ctx, `deleted ${stream} (--keep keeps it)`);
    }
  }
}

/** Publishes the events; the ms from the first send to the last acknowledgement. */
async function publish(ticker: Ticker, ctx: CliContext, stream: string, flags: BenchFlags): Promise<number> {
  const progress = startProgress({ label: "bench publish", total: flags.events, json: ctx.json });
  const producer = ticker.producer({ batchEventsMax: flags.batchEvents, onPublished: (r) => progress.add(r.count) });
  const payload = randomBytes(flags.payloadBytes);
  const batch: PublishEvent[] = Array.from({ length: SEND_EVENTS }, () => ({ type: "bench", payload_bytes: payload }));
  const started = performance.now();
  try {
    for (let sent = 0; sent < flags.events; sent += SEND_EVENTS) await producer.send(stream, batch.slice(0, Math.min(SEND_EVENTS, flags.events - sent)));
    await producer.close();
  } finally {
    progress.stop();
  }
  return performance.now() - started;
}

/** Replays `from`..`to`; the ms it took. */
async function replay(ticker: Ticker, ctx: CliContext, stream: string, from: number, to: number): Promise<number> {
  const progress = startProgress({ label: "bench replay", total: to - from + 1, json: ctx.json });
  const started = performance.now();
  let pending = 0;
  try {
    for await (const _ of ticker.replay(stream, { from, to })) {
      if (++pending === SEND_EVENTS) {
        progress.add(pending);
        pending = 0;
      }
    }
    progress.add(pending);
  } finally {
    progress.stop();
  }
  return performance.now() - started;
}
