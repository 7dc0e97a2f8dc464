// What bench-peers' Redis and NATS rows share: the plan, the systems, the
// rows as they are recorded (table, console, results file), what a timed
// body cost, and the W3 latency row (a paced producer thread and one
// consumer), which is the same for both systems but for their clients.
import { cpus } from "node:os";
import { performance } from "node:perf_hooks";
import type { Histogram } from "hdr-histogram-js";
import type { Persistence } from "../../test/harness/redis.js";
import type { ServerProcess } from "../../test/harness/process.js";
import { decodeHistogram, type LatencyConsumer } from "../lib/latency.js";
import { DRAIN_TIMEOUT_MS, PRODUCER_LANES, PRODUCER_TICK_MS, producerWindow } from "../lib/pacing.js";
import { cpuWindow, ticksOf, timed, waitQuiet } from "../lib/proc.js";
import { f2, int } from "../lib/report.js";
import { PAYLOAD_BYTES, payloadText, report, type Measurement, type Workload } from "../lib/results.js";
import { onFreshServer as onFresh } from "../lib/run.js";
import { startProducer, type ProducerTarget } from "./producer.js";

/** Distinct payloads, used round-robin: nothing on these paths deduplicates or compresses. */
const PAYLOAD_POOL = 10_000;
/** Before a latency row the machine should be idle (other work on 2 cores is latency); waited for at most this long. */
const QUIET_TIMEOUT_MS = 3000;
/** A publish or read that gets no answer this long is a failed row, not a slow one. */
export const REQUEST_TIMEOUT_MS = 60_000;
export const STREAM_KEY = "bench"; // Redis key, NATS stream name and subject
export const W4_PREFIX = "w4";
export const W3_RATES: Record<"W3-20k" | "W3-100k", number> = { "W3-20k": 20_000, "W3-100k": 100_000 };

export const WORKLOAD_IDS = ["W1", "W2", "W3-20k", "W3-100k", "W4", "fsync"] as const;
export type PeerWorkload = (typeof WORKLOAD_IDS)[number];

export interface SystemSpec {
  id: "redis" | "redis-aof-everysec" | "redis-aof-always" | "nats";
  /** As results.ts names it. */
  name: string;
  kind: "redis" | "nats";
  persistence: Persistence;
}

export const SYSTEMS: SystemSpec[] = [
  { id: "redis", name: "Redis Streams", kind: "redis", persistence: "none" },
  { id: "redis-aof-everysec", name: "Redis Streams (AOF everysec)", kind: "redis", persistence: "aof-everysec" },
  { id: "redis-aof-always", name: "Redis Streams (AOF always)", kind: "redis", persistence: "aof-always" },
  { id: "nats", name: "NATS JetStream", kind: "nats", persistence: "none" },
];

/**
 * How the Redis W3 producer sends: raw RESP (as bench-consume's Redis
 * lanes) by default, or ioredis pipelines. With ioredis the producer thread
 * could not offer 100,000 events/s on the 2-core VM: in a full run it reached
 * 61,000-70,000 with its timer late by 300-430 ms at p99, while redis-server
 * used 0.2-0.4 cores; the row then measured the client, not Redis. The
 * reader is ioredis either way.
 */
export type RedisProducer = "resp" | "ioredis";

export interface Plan {
  workloads: Set<PeerWorkload>;
  events: number;
  warmupMs: number;
  measureMs: number;
  quick: boolean;
  redisProducer: RedisProducer;
}

export const IN_FLIGHT_VARIANT = (n: number) => `${n} in flight`;

// ---- payloads and lanes ----------------------------------------------------------

let textPool: string[] | null = null;
let bytePool: Uint8Array[] | null = null;
export const payloadTexts = () => (textPool ??= Array.from({ length: PAYLOAD_POOL }, () => payloadText(PAYLOAD_BYTES)));
export const payloadBytes = () => (bytePool ??= payloadTexts().map((s) => Buffer.from(s, "latin1")));

/** Runs `lane` on every connection until `batches` batches are taken; the first failure stops the others. */
export async function runLanes<C>(conns: C[], batches: number, lane: (conn: C, batch: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  await Promise.all(
    conns.map(async (conn) => {
      while (!failed && next < batches) {
        const b = next++;
        try {
          await lane(conn, b);
        } catch (err) {
          failed = true;
          throw new Error(`batch ${b + 1}/${batches}: ${(err as Error).message}`);
        }
      }
    }),
  );
}

// ---- cost -------------------------------------------------------------------------

/** What one timed body cost: wall time, and CPU of the server, this process and everything else. */
export interface Cost {
  wallS: number;
  serverCpuS: number;
  serverCores: number;
  clientCores: number;
  restCores: number;
}

export async function measure(pid: number, body: () => Promise<void>): Promise<Cost> {
  const t = await timed(
    () => ticksOf(`/proc/${pid}/stat`),
    (x: number) => x,
    body,
  );
  return {
    wallS: t.wallS,
    serverCpuS: t.serverCpuS,
    serverCores: t.serverCpuS / t.wallS,
    clientCores: t.clientCpuS / t.wallS,
    restCores: t.restCpuS / t.wallS,
  };
}

export const costNote = (c: Cost) =>
  `CPU: server ${f2(c.serverCores)} cores, bench process ${f2(c.clientCores)}, other processes ${f2(c.restCores)} (of ${cpus().length})`;

export interface RunOutcome {
  cost: Cost;
  check: string;
}

// ---- rows -------------------------------------------------------------------------

export interface TableRow {
  workload: Workload;
  system: string;
  variant: string;
  result: string;
  check: string;
  note: string;
  error?: string;
}

export interface Metric {
  metric: string;
  value: number;
  better: "higher" | "lower";
  /** How the table shows it. */
  text: string;
}

export const rows: TableRow[] = [];
export const runNotes: string[] = [];
export const results: { file: string | null } = { file: null };
/** When the current row set started, for the console's per-row times. */
let rowStart = performance.now();

/** The one place a row is recorded: table, console, and the results file. */
export function emit(system: SystemSpec, workload: Workload, variant: string, metrics: Metric[], check: string, note: string): void {
  rows.push({ workload, system: system.name, variant, result: metrics.map((m) => m.text).join(" · "), check, note });
  const ms: Measurement[] = metrics.map((m) => ({
    workload,
    system: system.name,
    ...(variant ? { variant } : {}),
    metric: m.metric,
    value: m.value,
    better: m.better,
    note,
  }));
  report(ms, results.file);
  console.error(
    `${workload} ${system.name}${variant ? ` (${variant})` : ""}: ${metrics.map((m) => m.text).join(", ")} [${((performance.now() - rowStart) / 1000).toFixed(1)} s]`,
  );
}

export function emitError(system: SystemSpec, workload: Workload, variant: string, err: unknown): void {
  const msg = (err as Error).message.split("\n")[0];
  rows.push({ workload, system: system.name, variant, result: "FAILED", check: "", note: "", error: msg });
  console.error(`${workload} ${system.name}${variant ? ` (${variant})` : ""}: FAILED: ${msg}`);
}

/** W1, W2, fsync: the rate, and the server's CPU time for it (as bench-engine reports Ticker's). */
export const rateMetrics = (events: number, c: Cost): Metric[] => [
  { metric: "events/s", value: Math.round(events / c.wallS), better: "higher", text: `${int(events / c.wallS)} events/s` },
  { metric: "server CPU s", value: Number(c.serverCpuS.toFixed(2)), better: "lower", text: `server CPU ${c.serverCpuS.toFixed(1)} s` },
];

/** W4: total time, RSS after, and the data dir when the system keeps one. */
export function streamsMetrics(cost: Cost, rssMiB: number, diskMiB: number | null): Metric[] {
  return [
    { metric: "s", value: Number(cost.wallS.toFixed(3)), better: "lower", text: `${cost.wallS.toFixed(2)} s` },
    { metric: "RSS MiB", value: Number(rssMiB.toFixed(1)), better: "lower", text: `RSS ${rssMiB.toFixed(1)} MiB` },
    ...(diskMiB === null ? [] : [{ metric: "disk MiB", value: Number(diskMiB.toFixed(1)), better: "lower" as const, text: `disk ${diskMiB.toFixed(1)} MiB` }]),
  ];
}

/** Runs `body` on a fresh server; a failed start becomes error rows for `failRows`, so the other rows still run. */
export function onFreshServer<S extends ServerProcess>(
  start: () => Promise<S>,
  system: SystemSpec,
  failRows: [Workload, string][],
  body: (s: S) => Promise<unknown>,
): Promise<void> {
  rowStart = performance.now();
  return onFresh(
    start,
    (why) => failRows.forEach(([w, v]) => emitError(system, w, v, why)),
    body,
    (how) => runNotes.push(`${system.name}: server stop: ${how}.`),
  );
}

/** Runs one measured row, turning an exception into an error row. */
export async function attempt(system: SystemSpec, workload: Workload, variant: string, row: () => Promise<void>): Promise<boolean> {
  try {
    await row();
    return true;
  } catch (err) {
    emitError(system, workload, variant, err);
    return false;
  }
}

/** The version line of a system's first row (later rows of the system leave it out). */
export function oncePerSystem(text: string): () => string {
  let pending = text;
  return () => {
    const n = pending;
    pending = "";
    return n;
  };
}

// ---- W3: one latency row --------------------------------------------------------------

export interface LatencyOutcome {
  hist: Histogram;
  serverCores: number;
  check: string;
  note: string;
}

/** µs → ms, 3 decimals (the histogram's resolution is 1 µs). */
const usToMs = (us: number) => Math.round(us) / 1000;

/** W3: the latency percentiles, and the server's CPU over the window (as bench-consume reports Ticker's). */
export function latencyMetrics(o: LatencyOutcome): Metric[] {
  const h = o.hist;
  const at = (p: number) => usToMs(h.getValueAtPercentile(p));
  const m = (metric: string, v: number): Metric => ({ metric, value: v, better: "lower", text: `${metric.replace(" ms", "")} ${v} ms` });
  return [
    m("p50 ms", at(50)),
    m("p99 ms", at(99)),
    m("p99.9 ms", at(99.9)),
    m("max ms", usToMs(h.maxValue)),
    { metric: "server CPU cores", value: Number(o.serverCores.toFixed(2)), better: "lower", text: `server CPU ${f2(o.serverCores)} cores` },
  ];
}

/**
 * Publish-to-deliver latency at `rate`: the producer thread sends through
 * `target` (the system's cheapest path, so that its client library does not
 * cap the offered rate), `consumer` reads on its own connection, and every
 * event of the window counts.
 */
export async function latencyRow(
  target: ProducerTarget,
  consumerFor: (window: { tStart: number; tEnd: number }) => LatencyConsumer,
  server: ServerProcess,
  rate: number,
  plan: Plan,
  padChars: number,
): Promise<LatencyOutcome> {
  const { warmupMs, measureMs } = plan;
  const q = await waitQuiet(QUIET_TIMEOUT_MS);
  const quiet = q.quiet ? "" : `; the machine was not idle before the row (${f2(q.busyCores)} cores busy after ${QUIET_TIMEOUT_MS / 1000} s of waiting)`;
  const w = producerWindow(warmupMs, measureMs);
  const consumer = consumerFor(w);
  const rec = consumer.rec;
  await consumer.start();
  try {
    const cpu = cpuWindow(server.pid, w.tStart, w.tEnd);
    const producer = startProducer({
      target,
      port: server.port,
      stream: STREAM_KEY,
      rate,
      ...w,
      tickMs: PRODUCER_TICK_MS,
      lanes: PRODUCER_LANES,
      pad: payloadText(padChars),
      stopAtEnd: true,
    });
    const [p, offset, winCpu] = await Promise.all([producer.result, producer.offset, cpu]);
    if (p.errors.length > 0) throw new Error(`producer: ${p.errors.join("; ")}`);
    if (p.accepted !== p.sent) throw new Error(`producer sent ${int(p.sent)}, ${int(p.accepted)} acknowledged`);
    const td = performance.now();
    while (rec.total < p.sent && performance.now() - td < DRAIN_TIMEOUT_MS && consumer.errors.length === 0) await new Promise((r) => setTimeout(r, 20));
    const drainS = (performance.now() - td) / 1000;
    await consumer.stop();
    if (consumer.errors.length > 0) throw new Error(`consumer: ${consumer.errors.slice(0, 5).join("; ")}`);
    if (rec.total !== p.sent || rec.measured !== p.measured)
      throw new Error(`consumer got ${int(rec.total)} events (${int(rec.measured)} in the window), producer sent ${int(p.sent)} (${int(p.measured)})`);
    const rtt = decodeHistogram(p.rtt);
    const achieved = p.measured / (measureMs / 1000);
    const note =
      `producer: ${int(achieved)} events/s in the window of ${int(rate)} asked, ${int(p.requests)} batches (largest ${int(p.batchMax)}), ${p.stalls} ticks with all ${PRODUCER_LANES} lanes busy (backlog max ${int(p.backlogMax)}), ` +
      `batch round trip p50 ${usToMs(rtt.getValueAtPercentile(50))} / p99 ${usToMs(rtt.getValueAtPercentile(99))} ms, timer late p99 ${f2(p.tickLateP99Ms)} ms; ` +
      `consumer: ${int(consumer.deliveries)} ${target === "nats" ? "messages" : "XREAD replies"}, drained ${f2(drainS)} s after the last ack; ` +
      `CPU in the window: server ${f2(winCpu.serverCores)} cores, machine ${f2(winCpu.machineCores)} of ${cpus().length}; producer clock offset ${(offset.offsetMs * 1000).toFixed(0)} µs` +
      (rec.negative > 0 || rec.clipped > 0 ? `; ${rec.negative} latencies < 0 recorded as 0, ${rec.clipped} > 60 s clipped` : "") +
      quiet;
    // A producer that fell behind offered less than the row's rate: the figures are for the lower rate, and say so.
    const short = achieved < 0.95 * rate ? `; **only ${int(achieved)} of ${int(rate)} events/s offered**` : "";
    return { hist: rec.hist, serverCores: winCpu.serverCores, check: `${int(rec.measured)} events in the window, all received${short}`, note };
  } catch (err) {
    await consumer.stop().catch(() => {});
    throw err;
  }
}
