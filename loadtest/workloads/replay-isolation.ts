// Replay isolation benchmark (issue 15): does a batch replay raise live
// consumers' latency? W3-style publish-to-deliver latency (one stream, one
// consumer, a producer at --rate events/s) measured three times on fresh
// servers: alone; with a full-speed replay (JSON pages of 10,000 back to
// back, from a child process) of another stream on the same shard; and on
// the other shard. Goal: live p99 with the replay within 2x of without.
//
//   npm run bench:replay-isolation                 # ~1.5 minutes
//   npm run bench:replay-isolation -- --quick      # 3 s windows
//
// Prints a markdown report and writes it to docs/results/bench-replay-isolation-latest.md.
import { fork } from "node:child_process";
import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { shardOf } from "../../src/shard/protocol.js";
import type { TickerProcess } from "../../test/harness/ticker.js";
import { DRAIN_TIMEOUT_MS, PRODUCER_LANES, PRODUCER_TICK_MS, producerWindow } from "../lib/pacing.js";
import { cpuWindow, waitQuiet } from "../lib/proc.js";
import { commandLine, commit, f2, int, machineLine, ms, RESULTS_DIR, table, writeReport } from "../lib/report.js";
import { payloadText } from "../lib/results.js";
import { cleanupNow, guardRun, onCleanup, runMain, TempDirs } from "../lib/run.js";
import { createStream, startTicker, WsConsumerSet } from "../systems/ticker.js";
import { startProducer } from "./producer.js";

const REPORT_PATH = join(RESULTS_DIR, "bench-replay-isolation-latest.md");
const LIVE = "bench";
/** Events the replayed stream holds; the replayer starts over at its end. */
const REPLAY_EVENTS = 200_000;
const REPLAY_PAGE = 10_000;
const PAD = payloadText(64);
const RUN_DEADLINE_MS = 5 * 60_000;

const { values: opts } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    rate: { type: "string", default: "20000" },
    "replayer-child": { type: "string" },
  },
  strict: true,
});

// ---- the replayer (a child process, so its JSON parsing is not on the consumer's loop) ----

/** Replays `stream` page after page as fast as the server answers, until told to stop; reports events and pages. */
async function replayer(url: string, stream: string): Promise<void> {
  let stop = false;
  process.on("message", (m: { type: string }) => {
    if (m.type === "stop") stop = true;
  });
  let events = 0;
  let pages = 0;
  let from = 1;
  const t0 = performance.now();
  while (!stop) {
    const r = await fetch(`${url}/v1/streams/${stream}/events?from=${from}&limit=${REPLAY_PAGE}`);
    const page = (await r.json()) as { events: unknown[]; next: number; head_seq: number };
    if (r.status !== 200) throw new Error(`replay: HTTP ${r.status}`);
    events += page.events.length;
    pages++;
    from = page.next > page.head_seq ? 1 : page.next;
  }
  process.send?.({ type: "done", events, pages, seconds: (performance.now() - t0) / 1000 });
  process.disconnect();
}

// ---- rows -----------------------------------------------------------------

type Beside = "none" | "same shard" | "other shard";

interface Row {
  beside: Beside;
  p50Us: number;
  p99Us: number;
  p999Us: number;
  maxUs: number;
  delivered: string;
  serverCores: number;
  replayEventsPerS: number;
  replayPages: number;
  load: string;
}

const notes: string[] = [];
const tempDirs = new TempDirs("ticker-bench-replay-iso-");
onCleanup(() => tempDirs.removeAll());

/** A stream id on the wanted side of the live stream's shard. */
function replayStream(beside: Beside, shards: number): string {
  const liveShard = shardOf(LIVE, shards);
  for (let i = 0; ; i++) {
    const id = `history-${i}`;
    if ((shardOf(id, shards) === liveShard) === (beside === "same shard")) return id;
  }
}

async function fill(url: string, stream: string): Promise<void> {
  const body = JSON.stringify({ events: Array.from({ length: 1000 }, (_, i) => ({ type: "tick", key: `k${i % 100}`, payload: { t: 0, p: PAD } })) });
  for (let n = 0; n < REPLAY_EVENTS; n += 1000) {
    const r = await fetch(`${url}/v1/streams/${stream}/events`, { method: "POST", headers: { "content-type": "application/json" }, body });
    if (r.status !== 200) throw new Error(`fill: HTTP ${r.status}`);
  }
}

async function row(beside: Beside, rate: number, warmupMs: number, measureMs: number): Promise<Row> {
  const dir = tempDirs.make();
  let server: TickerProcess | null = null;
  let set: WsConsumerSet | null = null;
  try {
    server = await startTicker(dir);
    await createStream(server, LIVE);
    const history = beside === "none" ? null : replayStream(beside, server.shardCount);
    if (history) await fill(server.url, history);
    set = new WsConsumerSet({ port: server.port, stream: LIVE, consumers: 1 });
    await set.connect();
    const q = await waitQuiet(8000);
    if (!q.quiet) notes.push(`**${beside}: the machine was not idle before the row** (${f2(q.busyCores)} cores busy).`);
    const child = history
      ? fork(fileURLToPath(import.meta.url), ["--replayer-child", `${server.url} ${history}`], { stdio: ["ignore", "inherit", "inherit", "ipc"] })
      : null;
    const replayDone = child ? new Promise<{ events: number; pages: number; seconds: number }>((resolve) => child.once("message", resolve)) : null;
    const w = producerWindow(warmupMs, measureMs);
    set.window = { tStart: w.tStart, tEnd: w.tEnd };
    const cpu = cpuWindow(server.pid, w.tStart, w.tEnd);
    const producer = startProducer(
      { target: "ticker", port: server.port, stream: LIVE, rate, ...w, tickMs: PRODUCER_TICK_MS, lanes: PRODUCER_LANES, pad: PAD, stopAtEnd: false },
      false,
    );
    const [p, winCpu] = await Promise.all([producer.result, cpu]);
    const load = loadavg()
      .map((x) => x.toFixed(2))
      .join(" / ");
    child?.send({ type: "stop" });
    const replay = replayDone ? await replayDone : { events: 0, pages: 0, seconds: 1 };
    if (p.errors.length > 0) throw new Error(`producer: ${p.errors.join("; ")}`);
    const caughtUp = await set.waitFor(p.lastSeq, DRAIN_TIMEOUT_MS);
    const r = set.result();
    if (!caughtUp) notes.push(`**${beside}: the consumer had not caught up ${DRAIN_TIMEOUT_MS / 1000} s after the producer stopped.**`);
    if (r.errors.length > 0) notes.push(`**${beside}: consumer errors:** ${r.errors.slice(0, 5).join("; ")}`);
    const h = r.hist;
    return {
      beside,
      p50Us: h.getValueAtPercentile(50),
      p99Us: h.getValueAtPercentile(99),
      p999Us: h.getValueAtPercentile(99.9),
      maxUs: h.maxValue,
      delivered: `${int(r.measured)} of ${int(p.measured)}`,
      serverCores: winCpu.serverCores,
      replayEventsPerS: replay.events / replay.seconds,
      replayPages: replay.pages,
      load,
    };
  } finally {
    set?.close();
    if (server) await server.stop();
    tempDirs.remove(dir);
  }
}

async function main(): Promise<number> {
  const deadline = guardRun("bench-replay-isolation", RUN_DEADLINE_MS);
  const rate = Number(opts.rate);
  const warmupMs = opts.quick ? 1000 : 2000;
  const measureMs = opts.quick ? 3000 : 10_000;
  const rows: Row[] = [];
  const t0 = performance.now();
  try {
    for (const beside of ["none", "same shard", "other shard"] as const) {
      rows.push(await row(beside, rate, warmupMs, measureMs));
      console.error(`${beside}: p99 ${ms(rows.at(-1)!.p99Us / 1000)} ms`);
    }
  } finally {
    cleanupNow();
  }
  const base = rows[0].p99Us;
  const report = [
    "# Replay isolation benchmark: latest run",
    "",
    "Written by `loadtest/workloads/replay-isolation.ts`; overwritten on every run.",
    "",
    `- **Date:** ${new Date().toISOString()}`,
    `- **Machine:** ${machineLine()} (${cpus().length} cores)`,
    `- **Commit:** ${commit()}`,
    `- **Command:** \`${commandLine("bench:replay-isolation")}\` (${((performance.now() - t0) / 1000).toFixed(0)} s)`,
    "",
    table(
      [
        "replay beside the live stream",
        "live p50 ms",
        "live p99 ms",
        "p99.9 ms",
        "max ms",
        "p99 vs alone",
        "delivered",
        "replay events/s",
        "replay pages",
        "server CPU",
        "load avg 1/5/15",
      ],
      ["l", "r", "r", "r", "r", "r", "r", "r", "r", "r", "l"],
      rows.map((r) => [
        r.beside,
        ms(r.p50Us / 1000),
        ms(r.p99Us / 1000),
        ms(r.p999Us / 1000),
        ms(r.maxUs / 1000),
        r.beside === "none" ? "–" : `${f2(r.p99Us / base)}x${r.p99Us <= 2 * base ? "" : " **(goal 2x missed)**"}`,
        r.delivered,
        int(r.replayEventsPerS),
        int(r.replayPages),
        f2(r.serverCores),
        r.load,
      ]),
    ),
    "",
    `Live: one \`ws\` consumer (\`from=latest&format=json\`) of \`${LIVE}\`, a producer thread at ${int(rate)} events/s (1 ms ticks, ~100-byte payloads), latency from the producer's stamp to the consumer's receive (as in \`npm run bench:consume\`); ${warmupMs / 1000} s warm-up, ${measureMs / 1000} s window, a fresh server per row. Replay: a child process fetching \`GET /v1/streams/<history>/events?limit=${REPLAY_PAGE}\` (JSON) back to back over ${int(REPLAY_EVENTS)} events of the same size, starting over at the end, for the whole window.`,
    ...(notes.length > 0 ? ["", "## Notes", "", ...notes.map((n) => `- ${n}`)] : []),
    "",
  ].join("\n");
  writeReport(REPORT_PATH, report);
  clearTimeout(deadline);
  return 0;
}

if (opts["replayer-child"] !== undefined) {
  const [url, stream] = opts["replayer-child"].split(" ");
  replayer(url, stream).catch((err) => {
    console.error(err);
    process.exit(1);
  });
} else runMain(main);
