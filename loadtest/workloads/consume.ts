// Consume benchmark (W3): end-to-end latency of push consumption over
// WebSocket, from a producer's HTTP publish to a consumer's receive, against
// the real server, with Redis Streams (XADD → XREAD BLOCK) in the same run.
//
//   npm run bench:consume                          # the full run, ~2 minutes
//   npm run bench:consume -- --quick               # 3 s windows, smoke run
//   npm run bench:consume -- --no-peers            # Ticker only
//   npm run bench:consume -- --rows w3-100k --producer inline  # re-check a choice below
//   npm run bench:fanout                           # the three fan-out rows
//
// Rows (each on a fresh server and temp dir):
// - W3 latency: one stream, one consumer (format=json, from=latest, no
//   group), a producer at 20,000 and at 100,000 events/s;
// - fan-out: one stream, 100 and 1,000 consumers, a producer at 1,000
//   events/s; and 1,000 consumers again with 10-event publishes;
// - fan-out to 10,000 consumers at 100 events/s, the consumers in child
//   processes (consume-host.ts), the server's RSS and the CPU split between
//   server, consumer processes and the rest reported;
// - Redis: the W3 rates, XADD from the same producer, one XREAD BLOCK reader.
// Each row warms up for WARMUP_MS at the full rate, then measures MEASURE_MS.
//
// Latency is receive time − send time of every event, both from wallNow()
// (performance.timeOrigin + performance.now(): the system clock read once
// per thread at its start, then advanced by the monotonic clock), so a
// stamp from the producer thread or another process compares with one here.
// The offset between two threads' clocks is measured each row (the best of
// CLOCK_PROBES round trips) and reported; it was a few µs when written.
//
// Prints a markdown report and writes it to docs/results/bench-consume-latest.md.
import { fork, type ChildProcess } from "node:child_process";
import { cpus } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import type { Histogram } from "hdr-histogram-js";
import { startRedis } from "../../test/harness/redis.js";
import { stoppedCleanly, type ServerProcess } from "../../test/harness/process.js";
import type { TickerProcess } from "../../test/harness/ticker.js";
import { clockOffset, decodeHistogram, newHistogram } from "../lib/latency.js";
import { DRAIN_TIMEOUT_MS, PRODUCER_LANES, PRODUCER_TICK_MS, producerWindow } from "../lib/pacing.js";
import { cpuWindow, pidsCpuWindow, processMemory, waitQuiet } from "../lib/proc.js";
import { cell, commandLine, commit, f2, int, machineLine, mib, ms, RESULTS_DIR, table, writeReport } from "../lib/report.js";
import { payloadText, report as reportResults, resultsFile, type Measurement } from "../lib/results.js";
import { cleanupNow, guardRun, onCleanup, runMain, TempDirs } from "../lib/run.js";
import { connectAll } from "../lib/resp.js";
import { findRedis, versionText, XreadConsumer } from "../systems/redis.js";
import { type ConsumerClient, createStream, startTicker, WsConsumerSet, type ConsumerSetResult } from "../systems/ticker.js";
import type { HostReply, HostRequest } from "./consume-host.js";
import { startProducer, type ProducerResult } from "./producer.js";

const HOST_MAIN = fileURLToPath(new URL("./consume-host.js", import.meta.url));

const STREAM = "bench";
/** The payload is {"t":<stamp>,"p":"<PAD_CHARS>"}: about 100 bytes, as in bench-engine. */
const PAD_CHARS = 64;
/** Producer ticks of the row that publishes ~10 events at a time (lib/pacing.ts: 1 ms otherwise). */
const FANOUT_BATCH_TICK_MS = 10;
const TICK_MS = PRODUCER_TICK_MS;
const LANES = PRODUCER_LANES;
/** The server's default consumer_heartbeat_interval_ms. */
const HEARTBEAT_MS = 500;
/**
 * Before a row's producer starts, the machine should be idle: other work on
 * the 2 cores (a test suite, a build) shows up as latency. Waited for at
 * most this long; the notes say if not.
 */
const QUIET_TIMEOUT_MS = 8000;
/** The whole run must end, even if the server or a client hangs. */
const RUN_DEADLINE_MS = 6 * 60_000;

// ---- options -------------------------------------------------------------

interface RowSpec {
  id: string;
  label: string;
  target: "ticker" | "redis";
  rate: number;
  consumers: number;
  tickMs: number;
  /** The issue's goal for p99, ms. */
  goalMs?: number;
  /** Child processes holding the consumers; overrides --fanout-hosts (see FANOUT_HOSTS). */
  hosts?: number;
}

/**
 * The 1,000 and 10,000 consumers' child processes (one per core): one event
 * loop reading 10,000 sockets does not keep up, and two each hold 5,000,
 * far under `ulimit -n` (20,000 here; the server's 10,000 sockets are in its
 * own process) and its `consumers_max` (20,000 by default).
 */
const FANOUT_HOSTS_MANY = 2;

const ROWS: RowSpec[] = [
  { id: "w3-20k", label: "W3 latency, Ticker", target: "ticker", rate: 20_000, consumers: 1, tickMs: TICK_MS, goalMs: 2 },
  { id: "w3-100k", label: "W3 latency, Ticker", target: "ticker", rate: 100_000, consumers: 1, tickMs: TICK_MS, goalMs: 10 },
  { id: "fanout-100", label: "fan-out, Ticker", target: "ticker", rate: 1000, consumers: 100, tickMs: TICK_MS },
  { id: "fanout-1000", label: "fan-out, Ticker", target: "ticker", rate: 1000, consumers: 1000, tickMs: TICK_MS, goalMs: 50, hosts: FANOUT_HOSTS_MANY },
  // Not in the issue: the same fan-out with ~10-event publishes, to tell a
  // limit on messages per second from one on events per second.
  {
    id: "fanout-1000-t10",
    label: `fan-out, Ticker, ${FANOUT_BATCH_TICK_MS} ms producer ticks (~10-event publishes)`,
    target: "ticker",
    rate: 1000,
    consumers: 1000,
    tickMs: FANOUT_BATCH_TICK_MS,
    hosts: FANOUT_HOSTS_MANY,
  },
  { id: "fanout-10000", label: "fan-out, Ticker", target: "ticker", rate: 100, consumers: 10_000, tickMs: TICK_MS, goalMs: 250, hosts: FANOUT_HOSTS_MANY },
  { id: "redis-20k", label: "W3 latency, Redis Streams", target: "redis", rate: 20_000, consumers: 1, tickMs: TICK_MS },
  { id: "redis-100k", label: "W3 latency, Redis Streams", target: "redis", rate: 100_000, consumers: 1, tickMs: TICK_MS },
];

const { values: opts } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    // Where the producer runs: its own worker thread (the default, see PRODUCER below) or this event loop.
    producer: { type: "string", default: "thread" },
    // Child processes holding the fan-out consumers; 0 = in this process. See FANOUT_HOSTS below.
    "fanout-hosts": { type: "string" },
    // The fan-out consumers' WebSocket client: "light" (loadtest/lib/light-ws.ts, the default) or "ws".
    "fanout-client": { type: "string", default: "light" },
    rows: { type: "string" },
    "no-peers": { type: "boolean", default: false },
    // A JSON-lines file that gets this run's measurements (lib/results.ts), for `npm run bench`.
    results: { type: "string" },
  },
  strict: true,
});
const WARMUP_MS = opts.quick ? 1000 : 2000;
const MEASURE_MS = opts.quick ? 3000 : 10_000;
if (opts.producer !== "thread" && opts.producer !== "inline") {
  console.error(`--producer must be "thread" or "inline"`);
  process.exit(2);
}
/**
 * The producer runs in its own worker thread by default. Inline, every send
 * waits behind the consumer's message handling and every receive behind the
 * producer's tick (building a body, writing a request, reading answers), so
 * each side's clock is read late by the other's work. Measured on the 2-core
 * VM with --quick, alternating, other processes idle: at 20,000 events/s the
 * thread gave p99 3.3 / 3.4 ms (p99.9 6.3 / 6.7), inline 3.9 / 5.4 ms (p99.9
 * 9.5 / 14.2); at 100,000 events/s p99 12.7 / 14.7 ms against 12.7 ms inline
 * (the second inline run was disturbed). Never worse, better in the tail, and
 * the same CPU (0.3 cores for the whole benchmark process either way).
 */
const PRODUCER = opts.producer as "thread" | "inline";
/**
 * Where the fan-out rows' consumers live when their row does not say
 * (`hosts`): this process by default (0 child processes), which is where
 * the 100-consumer row runs. The 1,000- and 10,000-consumer rows say 2:
 * with the light client their per-event work (a scan and a histogram record
 * per event per consumer, ~1 M a second) is about a core, and in this
 * process it shares one event loop; measured on 2026-12-06 (AMD EPYC VM,
 * 10 s windows), 1,000 consumers p99 338 / 371 ms here against 73 ms in two
 * children. `--fanout-hosts N` puts every fan-out row in N children.
 */
const FANOUT_HOSTS = opts["fanout-hosts"] !== undefined ? Number(opts["fanout-hosts"]) : 0;
if (!Number.isSafeInteger(FANOUT_HOSTS) || FANOUT_HOSTS < 0 || FANOUT_HOSTS > 4) {
  console.error("--fanout-hosts must be 0 to 4");
  process.exit(2);
}
if (opts["fanout-client"] !== "light" && opts["fanout-client"] !== "ws") {
  console.error(`--fanout-client must be "light" or "ws"`);
  process.exit(2);
}
/**
 * The fan-out rows' consumers (W3's one consumer is always `ws`, as a user's
 * would be). With `ws`, 10,000 consumers cost their two processes 1.1–1.4
 * of the 2 cores (~15 µs a message) and the server gets what is left; the
 * light client reads each socket into one shared buffer and cuts frames in
 * place. `--fanout-client ws` re-runs the rows as before.
 */
const FANOUT_CLIENT = opts["fanout-client"] as ConsumerClient;
const clientFor = (consumers: number): ConsumerClient => (consumers > 1 ? FANOUT_CLIENT : "ws");
const selected = new Set<string>(
  opts.rows !== undefined ? opts.rows.split(",") : ROWS.filter((r) => !(opts["no-peers"] && r.target === "redis")).map((r) => r.id),
);
for (const id of selected) {
  if (!ROWS.some((r) => r.id === id)) {
    console.error(`--rows: unknown row "${id}"; rows are ${ROWS.map((r) => r.id).join(", ")}`);
    process.exit(2);
  }
}
/** `npm run bench` runs the W3 rows and the fan-out rows as two steps; each keeps its own report. */
const FANOUT_ONLY = [...selected].every((id) => id.startsWith("fanout-"));
const REPORT_PATH = join(RESULTS_DIR, FANOUT_ONLY ? "bench-fanout-latest.md" : "bench-consume-latest.md");

// ---- the consumer hosts ---------------------------------------------------------

const liveHosts = new Set<ChildProcess>();
const tempDirs = new TempDirs("ticker-bench-consume-");
onCleanup(() => {
  for (const h of liveHosts) h.kill("SIGKILL");
  tempDirs.removeAll();
});

/** A child process holding some of the fan-out consumers (consume-host.ts). */
class Host {
  private readonly waiters = new Map<string, { resolve: (m: HostReply) => void; reject: (e: Error) => void }>();
  private failure: Error | null = null;

  constructor(readonly proc: ChildProcess) {
    liveHosts.add(proc);
    proc.on("message", (m: HostReply) => {
      if (m.type === "failed") return this.fail(new Error(`consumer host: ${m.message}`));
      const w = this.waiters.get(m.type);
      this.waiters.delete(m.type);
      w?.resolve(m);
    });
    proc.once("exit", (code, signal) => {
      liveHosts.delete(proc);
      this.fail(new Error(`consumer host exited (${signal ?? `code ${code}`})`));
    });
  }

  static start(): Host {
    return new Host(fork(HOST_MAIN, [], { stdio: ["ignore", "inherit", "inherit", "ipc"] }));
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const w of this.waiters.values()) w.reject(this.failure);
    this.waiters.clear();
  }

  ask<T extends HostReply["type"]>(req: HostRequest, reply: T): Promise<Extract<HostReply, { type: T }>> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiters.set(reply, { resolve: resolve as (m: HostReply) => void, reject });
      this.proc.send(req);
    });
  }

  tell(req: HostRequest): void {
    this.proc.send(req);
  }

  stop(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.disconnect();
  }
}

// ---- rows -----------------------------------------------------------------

interface Row {
  spec: RowSpec;
  delivered?: string;
  hist?: Histogram;
  serverCpu?: number;
  /** The consumers' CPU, cores: the child processes', or the bench process's (with the producer thread) when they run in it. */
  clientCpu?: number;
  /** Everything else on the machine over the window, cores. */
  otherCpu?: number;
  rssMiB?: number;
  peakMiB?: number;
  error?: string;
}

const notes: string[] = [];

function producerNote(label: string, p: ProducerResult, rateGoal: number): string {
  const achieved = p.measured / (MEASURE_MS / 1000);
  const rtt = decodeHistogram(p.rtt);
  return (
    `${label}: producer sent ${int(p.sent)} events (${int(p.measured)} in the window: ${int(Math.round(achieved))} events/s of ${int(rateGoal)}) ` +
    `in ${int(p.requests)} requests (largest ${int(p.batchMax)} events), ${p.stalls} ticks with every lane busy (backlog max ${int(p.backlogMax)} events), ` +
    `${p.retries} 429 retries; request round trip (stamp to answer) p50 ${usMs(rtt.getValueAtPercentile(50))} / p99 ${usMs(rtt.getValueAtPercentile(99))} / max ${usMs(rtt.maxValue)} ms; ` +
    `timer late p99 ${f2(p.tickLateP99Ms)} ms, max ${f2(p.tickLateMaxMs)} ms.`
  );
}

/** Waits for the machine to go idle; notes it when it did not. */
async function quietBefore(label: string): Promise<void> {
  const q = await waitQuiet(QUIET_TIMEOUT_MS);
  if (!q.quiet)
    notes.push(
      `**${label}: the machine was not idle before the row:** still ${f2(q.busyCores)} cores busy after ${QUIET_TIMEOUT_MS / 1000} s of waiting (other processes); its figures include that interference.`,
    );
}

function mergedCheck(label: string, expected: number, consumers: number, r: { measured: number; minPerConsumer: number; maxPerConsumer: number }): string {
  const ok = r.minPerConsumer === expected && r.maxPerConsumer === expected && r.measured === expected * consumers;
  if (!ok) {
    notes.push(
      `**${label}: deliveries do not match:** ${int(r.measured)} delivered in the window, expected ${int(expected * consumers)} (${int(expected)} per consumer); per consumer min ${int(r.minPerConsumer)}, max ${int(r.maxPerConsumer)}.`,
    );
  }
  return `${int(r.measured)}${ok ? "" : ` of ${int(expected * consumers)} ✗`}`;
}

async function tickerRow(spec: RowSpec): Promise<Row> {
  const { label, rate, consumers } = spec;
  const row: Row = { spec };
  const dir = tempDirs.make();
  let server: TickerProcess | null = null;
  let set: WsConsumerSet | null = null;
  const hosts: Host[] = [];
  const useHosts = consumers > 1 ? (opts["fanout-hosts"] !== undefined ? FANOUT_HOSTS : (spec.hosts ?? FANOUT_HOSTS)) : 0;
  try {
    server = await startTicker(dir);
    const port = server.port;
    await createStream(server, STREAM);

    const tc = performance.now();
    if (useHosts === 0) {
      set = new WsConsumerSet({ port, stream: STREAM, consumers, client: clientFor(consumers) });
      await set.connect();
    } else {
      for (let h = 0; h < useHosts; h++) hosts.push(Host.start());
      await Promise.all(
        hosts.map((h, i) => {
          const n = Math.floor(consumers / useHosts) + (i < consumers % useHosts ? 1 : 0);
          return h.ask({ type: "connect", spec: { port, stream: STREAM, consumers: n, client: clientFor(consumers) } }, "connected");
        }),
      );
    }
    const connectS = (performance.now() - tc) / 1000;
    const hostOffsets = await Promise.all(hosts.map((h) => clockOffset(async () => (await h.ask({ type: "clock" }, "clock")).t)));

    await quietBefore(label);
    const w = producerWindow(WARMUP_MS, MEASURE_MS);
    if (set) set.window = { tStart: w.tStart, tEnd: w.tEnd };
    for (const h of hosts) h.tell({ type: "window", window: { tStart: w.tStart, tEnd: w.tEnd } });
    const cpu = cpuWindow(server.pid, w.tStart, w.tEnd);
    const hostCpuWin = pidsCpuWindow(
      hosts.map((h) => h.proc.pid!),
      w.tStart,
      w.tEnd,
    );
    const producer = startProducer(
      { target: "ticker", port, stream: STREAM, rate, ...w, tickMs: spec.tickMs, lanes: LANES, pad: PAD, stopAtEnd: false },
      PRODUCER === "inline",
    );
    const [p, prodOffset, winCpu, hostCpuS] = await Promise.all([producer.result, producer.offset, cpu, hostCpuWin]);
    const mem = processMemory(server.pid);
    if (p.errors.length > 0) throw new Error(`producer: ${p.errors.join("; ")}`);
    if (p.accepted !== p.sent || p.lastSeq !== p.sent) throw new Error(`producer sent ${p.sent}, the server accepted ${p.accepted}, last_seq ${p.lastSeq}`);

    const td = performance.now();
    let r: ConsumerSetResult & { caughtUp: boolean; hostCpu: number[] };
    if (set) {
      const caughtUp = await set.waitFor(p.lastSeq, DRAIN_TIMEOUT_MS);
      r = { ...set.result(), caughtUp, hostCpu: [] };
    } else {
      const parts = await Promise.all(hosts.map((h) => h.ask({ type: "finish", last: p.lastSeq, timeoutMs: DRAIN_TIMEOUT_MS }, "result")));
      const hist = newHistogram();
      for (const part of parts) hist.add(decodeHistogram(part.hist));
      r = {
        hist,
        measured: parts.reduce((a, x) => a + x.measured, 0),
        total: parts.reduce((a, x) => a + x.total, 0),
        negative: parts.reduce((a, x) => a + x.negative, 0),
        clipped: parts.reduce((a, x) => a + x.clipped, 0),
        minPerConsumer: Math.min(...parts.map((x) => x.minPerConsumer)),
        maxPerConsumer: Math.max(...parts.map((x) => x.maxPerConsumer)),
        errors: parts.flatMap((x) => x.errors),
        heartbeats: parts.reduce((a, x) => a + x.heartbeats, 0),
        messages: parts.reduce((a, x) => a + x.messages, 0),
        caughtUp: parts.every((x) => x.caughtUp),
        hostCpu: hostCpuS.map((c) => c / winCpu.wallS),
      };
    }
    const drainS = (performance.now() - td) / 1000;

    row.hist = r.hist;
    const hostCores = r.hostCpu.reduce((x, y) => x + y, 0);
    row.serverCpu = winCpu.serverCores;
    row.clientCpu = useHosts === 0 ? winCpu.clientCores : hostCores;
    row.otherCpu = Math.max(0, winCpu.machineCores - winCpu.serverCores - winCpu.clientCores - hostCores);
    row.rssMiB = mib(mem.rss);
    row.peakMiB = mib(mem.peak);
    row.delivered = mergedCheck(label, p.measured, consumers, r);
    if (!r.caughtUp)
      notes.push(`**${label}: the consumers had not received up to seq ${int(p.lastSeq)} ${DRAIN_TIMEOUT_MS / 1000} s after the producer's last answer.**`);
    if (r.total !== p.sent * consumers && r.caughtUp) notes.push(`**${label}:** ${int(r.total)} events received in all, expected ${int(p.sent * consumers)}.`);
    if (r.errors.length > 0) notes.push(`**${label}: consumer errors (${r.errors.length}, first 10):** ${r.errors.slice(0, 10).join("; ")}`);
    if (r.negative > 0 || r.clipped > 0)
      notes.push(`${label}: ${int(r.negative)} latencies below 0 (recorded as 0), ${int(r.clipped)} above 60 s (recorded as 60 s).`);
    notes.push(producerNote(label, p, rate));
    const hostCpu = r.hostCpu.length > 0 ? `, consumer host processes ${r.hostCpu.map(f2).join(" / ")} cores` : "";
    notes.push(
      `${label}: CPU over the window: server ${f2(winCpu.serverCores)} cores (main thread ${f2(winCpu.serverMainCores)}), bench process ${f2(winCpu.clientCores)} cores (${useHosts === 0 ? "consumers" : "coordination"}${PRODUCER === "thread" ? " + producer thread" : " + producer, inline"})${hostCpu}, whole machine ${f2(winCpu.machineCores)} of ${cpus().length} (other processes ${f2(row.otherCpu)}); ` +
        `clock offset producer ${(prodOffset.offsetMs * 1000).toFixed(0)} µs${hostOffsets.length ? `, hosts ${hostOffsets.map((o) => (o.offsetMs * 1000).toFixed(0)).join(" / ")} µs` : ""}; ` +
        `${consumers} consumer(s) connected in ${connectS.toFixed(1)} s; drained ${drainS.toFixed(2)} s after the producer's last answer; ` +
        `in the window: ${int(r.messages)} events messages (${(r.measured / Math.max(1, r.messages)).toFixed(1)} events each), ${int(r.heartbeats)} heartbeats (each a consumer left ${HEARTBEAT_MS} ms without events).`,
    );
    if (server.exit) throw new Error(`server exited (${server.exit}) during the row`);
  } catch (err) {
    row.error = (err as Error).message.split("\n")[0];
    notes.push(`**${label} failed:** ${(err as Error).message}${server ? `\n\n\`\`\`\n${server.outputTail()}\n\`\`\`` : ""}`);
  } finally {
    set?.close();
    for (const h of hosts) h.stop();
    if (server) {
      const how = await server.stop();
      if (!stoppedCleanly(how)) notes.push(`${label}: server stop: ${how}.`);
      if (server.errors.length > 0) notes.push(`**${label}: server stderr:**\n\n\`\`\`\n${server.errors.slice(0, 20).join("\n")}\n\`\`\``);
    }
    tempDirs.remove(dir);
  }
  console.error(row.error ? `${label}: FAILED: ${row.error}` : `${label}: p99 ${usMs(row.hist!.getValueAtPercentile(99))} ms, delivered ${row.delivered}`);
  return row;
}

let redisVersion = "";

async function redisRow(spec: RowSpec): Promise<Row> {
  const { label, rate } = spec;
  const row: Row = { spec };
  let server: ServerProcess | null = null;
  let consumer: XreadConsumer | null = null;
  try {
    const found = await findRedis(notes);
    if ("reason" in found) throw new Error(`redis unavailable: ${found.reason}`);
    redisVersion ||= versionText(found.version);
    server = await startRedis();
    const [reader] = await connectAll(server.port, 1);
    await quietBefore(label);
    const w = producerWindow(WARMUP_MS, MEASURE_MS);
    consumer = new XreadConsumer(reader, STREAM, w);
    await consumer.start();
    const cpu = cpuWindow(server.pid, w.tStart, w.tEnd);
    const producer = startProducer(
      { target: "redis", port: server.port, stream: STREAM, rate, ...w, tickMs: spec.tickMs, lanes: LANES, pad: PAD, stopAtEnd: false },
      PRODUCER === "inline",
    );
    const [p, prodOffset, winCpu] = await Promise.all([producer.result, producer.offset, cpu]);
    const mem = processMemory(server.pid);
    if (p.errors.length > 0) throw new Error(`producer: ${p.errors.join("; ")}`);
    const [check] = await connectAll(server.port, 1);
    const len = await check.command("XLEN", STREAM);
    check.close();
    if (p.accepted !== p.sent || len !== p.sent) throw new Error(`producer sent ${p.sent}, Redis answered ${p.accepted}, XLEN ${len}`);
    const td = performance.now();
    while (consumer.total < p.sent && performance.now() - td < DRAIN_TIMEOUT_MS && consumer.errors.length === 0) await new Promise((r) => setTimeout(r, 20));
    const drainS = (performance.now() - td) / 1000;
    await consumer.stop();
    const rec = consumer.rec;
    row.hist = rec.hist;
    row.serverCpu = winCpu.serverCores;
    row.rssMiB = mib(mem.rss);
    row.peakMiB = mib(mem.peak);
    row.delivered = mergedCheck(label, p.measured, 1, { measured: rec.measured, minPerConsumer: rec.measured, maxPerConsumer: rec.measured });
    if (consumer.total !== p.sent) notes.push(`**${label}:** the reader got ${int(consumer.total)} entries in all, XLEN is ${int(p.sent)}.`);
    if (consumer.errors.length > 0) notes.push(`**${label}: reader errors:** ${consumer.errors.slice(0, 10).join("; ")}`);
    if (rec.negative > 0 || rec.clipped > 0) notes.push(`${label}: ${int(rec.negative)} latencies below 0 (recorded as 0), ${int(rec.clipped)} above 60 s.`);
    notes.push(producerNote(label, p, rate));
    notes.push(
      `${label}: CPU over the window: redis-server ${f2(winCpu.serverCores)} cores, bench process ${f2(winCpu.clientCores)} cores, whole machine ${f2(winCpu.machineCores)} of ${cpus().length} (other processes ${f2(Math.max(0, winCpu.machineCores - winCpu.serverCores - winCpu.clientCores))}); ` +
        `clock offset producer ${(prodOffset.offsetMs * 1000).toFixed(0)} µs; ${int(consumer.deliveries)} XREAD replies (${(rec.total / Math.max(1, consumer.deliveries)).toFixed(1)} entries each); drained ${drainS.toFixed(2)} s after the producer's last answer.`,
    );
  } catch (err) {
    row.error = (err as Error).message.split("\n")[0];
    notes.push(`**${label} failed:** ${(err as Error).message}`);
    await consumer?.stop().catch(() => {});
  } finally {
    if (server) {
      const how = await server.stop();
      if (!stoppedCleanly(how)) notes.push(`${label}: redis-server stop: ${how}.`);
    }
  }
  console.error(row.error ? `${label}: FAILED: ${row.error}` : `${label}: p99 ${usMs(row.hist!.getValueAtPercentile(99))} ms, delivered ${row.delivered}`);
  return row;
}

const PAD = payloadText(PAD_CHARS);

// ---- report ---------------------------------------------------------------

/** A row as measurements for `npm run bench`: W3 rows and the plain fan-out rows. */
function measurementsOf(r: Row): Measurement[] {
  const workload = (
    { "w3-20k": "W3-20k", "w3-100k": "W3-100k", "fanout-100": "fanout-100", "fanout-1000": "fanout-1000", "fanout-10000": "fanout-10000" } as const
  )[r.spec.id as "w3-20k"];
  if (!workload || !r.hist || r.spec.target !== "ticker") return [];
  const h = r.hist;
  const at = (metric: string, us: number): Measurement => ({ workload, system: "Ticker", metric, value: us / 1000, better: "lower" });
  return [
    at("p50 ms", h.getValueAtPercentile(50)),
    at("p99 ms", h.getValueAtPercentile(99)),
    at("p99.9 ms", h.getValueAtPercentile(99.9)),
    at("max ms", h.maxValue),
    { workload, system: "Ticker", metric: "server CPU cores", value: r.serverCpu!, better: "lower" },
    { workload, system: "Ticker", metric: "client CPU cores", value: r.clientCpu!, better: "lower" },
    { workload, system: "Ticker", metric: "server RSS MiB", value: r.rssMiB!, better: "lower" },
    { workload, system: "Ticker", metric: "server peak RSS MiB", value: r.peakMiB!, better: "lower" },
  ];
}

/** µs (the histograms' unit) as ms text. */
const usMs = (us: number) => ms(us / 1000);

function rowsTable(rows: Row[]): string {
  return table(
    [
      "workload",
      "rate (events/s)",
      "consumers",
      "delivered",
      "p50 ms",
      "p99 ms",
      "p99.9 ms",
      "max ms",
      "server CPU (cores)",
      "client CPU (cores)",
      "other CPU (cores)",
      "server RSS MiB (peak)",
      "goal: p99",
    ],
    ["l", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "l"],
    rows.map((r) => {
      const { label, rate, consumers, goalMs: goal } = r.spec;
      const h = r.hist;
      const p99 = h ? h.getValueAtPercentile(99) : NaN;
      const goalText = goal === undefined ? "–" : !h ? `≤ ${goal} ms` : p99 <= goal * 1000 ? `≤ ${goal} ms: met` : `≤ ${goal} ms: **missed**`;
      if (!h) return [label, int(rate), int(consumers), `FAILED: ${cell(r.error ?? "")}`, "", "", "", "", "", "", "", "", goalText];
      return [
        label,
        int(rate),
        int(consumers),
        r.delivered!,
        usMs(h.getValueAtPercentile(50)),
        usMs(p99),
        usMs(h.getValueAtPercentile(99.9)),
        usMs(h.maxValue),
        f2(r.serverCpu!),
        f2(r.clientCpu!),
        f2(r.otherCpu!),
        `${r.rssMiB!.toFixed(0)} (${r.peakMiB!.toFixed(0)})`,
        goalText,
      ];
    }),
  );
}

async function main(): Promise<number> {
  const runStart = performance.now();
  const deadline = guardRun("bench-consume", RUN_DEADLINE_MS);

  const rows: Row[] = [];
  try {
    for (const spec of ROWS) {
      if (!selected.has(spec.id)) continue;
      rows.push(spec.target === "ticker" ? await tickerRow(spec) : await redisRow(spec));
    }
  } finally {
    cleanupNow();
  }
  reportResults(rows.flatMap(measurementsOf), opts.results ?? resultsFile());

  const runtimeS = (performance.now() - runStart) / 1000;
  const report = [
    `# ${FANOUT_ONLY ? "Fan-out" : "Consume"} benchmark: latest run`,
    "",
    "Written by `loadtest/workloads/consume.ts`; overwritten on every run.",
    "",
    `- **Date:** ${new Date().toISOString()}`,
    `- **Machine:** ${machineLine()}`,
    `- **Node:** ${process.version}`,
    `- **Commit:** ${commit()}`,
    `- **Command:** \`${commandLine("bench:consume")}\` (${runtimeS.toFixed(0)} s)`,
    ...(redisVersion ? [`- **redis-server:** ${redisVersion}`] : []),
    "",
    rowsTable(rows),
    "",
    "How to read it:",
    "",
    `- Latency is end to end, per event: the consumer's receive time minus the send time the producer stamped into the event (\`payload.t\`, taken right before the request carrying it is built and written). Both are \`performance.timeOrigin + performance.now()\`, read in different threads (and processes with --fanout-hosts); the offset between them is measured each row and is in the notes (µs). Every event of the window goes into an HDR histogram (µs, 3 significant digits); p50 / p99 / p99.9 / max are over all deliveries of the window (at 1,000 consumers, every event × every consumer). Warm-up ${WARMUP_MS / 1000} s at the full rate, then a ${MEASURE_MS / 1000} s window; a fresh server (\`serve --port 0\`, default config, durability "process") on a fresh temp dir per row, and the machine idle before each row (waited for; the notes say when it was not).`,
    `- Producer: its own worker thread (${PRODUCER === "thread" ? "as in this run" : "**this run: inline**, on the consumers' event loop"}); a timer every ${TICK_MS} ms (${FANOUT_BATCH_TICK_MS} ms in the row that says so) sends the events due so far (rate × elapsed − sent) as one \`POST /v1/streams/${STREAM}/events\` JSON batch (at most 1,000 events) on one of ${LANES} keep-alive raw-socket connections (\`src/client/http.ts\`) with no request outstanding; events are \`{"type":"tick","payload":{"t":<ms>,"p":"<${PAD_CHARS} chars>"}}\`. At 1,000 events/s a 1 ms tick means publishes of one or two events. The notes give each row's achieved rate, request count, stalls (ticks with every connection busy) and the publish round trip (stamp to answer): Ticker pushes a batch to its consumers before it answers its publish, so when the end-to-end figure is close to the round trip, the time went in the publish path (or in waiting for a core), not in delivery.`,
    `- "delivered" is the window's events received, summed over consumers, checked against what the producer sent in the window for every consumer (a mismatch is marked ✗ and described in the notes); every consumer also checks that seqs run on from hello's \`from\` with no gap or duplicate, warm-up included.`,
    `- Consumers: ${FANOUT_CLIENT === "light" ? "W3's one consumer a `ws` client, the fan-out rows' the light client of `loadtest/lib/light-ws.ts` (every socket read into one shared buffer, frames cut in place; `--fanout-client ws` runs them on `ws`)" : "`ws` clients (this run: `--fanout-client ws`)"}, \`?from=latest&format=json\`, no group; each message is scanned for \`{"seq":\` and \`"payload":{"t":\` rather than JSON.parse. ${opts["fanout-hosts"] === undefined ? `The 100 consumers run in the benchmark process, the 1,000 and 10,000 in ${FANOUT_HOSTS_MANY} child processes (\`loadtest/workloads/consume-host.ts\`)` : `Every fan-out row's consumers run in ${FANOUT_HOSTS === 0 ? "the benchmark process" : `${FANOUT_HOSTS} child process(es) (\`loadtest/workloads/consume-host.ts\`)`} (this run: \`--fanout-hosts ${FANOUT_HOSTS}\`)`}, all on the same ${cpus().length} cores as the server: **the fan-out rows load the machine fully** (see "whole machine" in the notes), so they show what one 2-core box does with server and consumers together, not the server alone. The notes give events per message (how far the server coalesced: over 1, consumers were behind and served from the log) and heartbeats inside the window (each a consumer left ${HEARTBEAT_MS} ms without events).`,
    "- Server CPU is utime+stime of the server's pid (/proc/<pid>/stat, all threads) over the window, divided by the window's wall time: 1.00 is one core; the notes add its main thread (the uWS front, which sends every WebSocket message). Client CPU is the consumers' child processes over the window, or the benchmark process (consumers and producer thread) when the consumers run in it; other CPU is the machine minus the server, the benchmark process and the consumer processes: other sessions' work (with child processes the benchmark process, producer thread and coordination, is in the notes, not in either column). Server RSS is VmRSS at the end of the window, VmHWM (peak over the process's life) in brackets.",
    `- Redis rows: a private redis-server without persistence (\`--save "" --appendonly no\`; Ticker's default durability survives a crash of its process, so Redis does less per event here). The same producer thread sends pipelines of \`XADD ${STREAM} * t <ms> p <${PAD_CHARS} chars>\` on ${LANES} raw connections; one reader on its own connection loops \`XREAD BLOCK 0 STREAMS ${STREAM} <last id>\` (\`$\` the first time: re-reading from \`$\` each time would miss entries added between two reads), and its receive time is the arrival of each reply's last byte. Ids must rise and the reader must get XLEN entries.`,
    "- Goals (from the issue): p99 ≤ 2 ms at 20,000 events/s, ≤ 10 ms at 100,000 events/s, ≤ 50 ms with 1,000 consumers at 1,000 events/s, ≤ 250 ms with 10,000 consumers at 100 events/s. They are shown, not enforced.",
    ...(notes.length > 0 ? ["", "## Notes from this run", "", ...notes.map((n) => `- ${n}`)] : []),
    "",
  ].join("\n");
  writeReport(REPORT_PATH, report, ` (${runtimeS.toFixed(0)} s)`);
  clearTimeout(deadline);
  return rows.some((r) => r.error) ? 1 : 0;
}

runMain(main);
