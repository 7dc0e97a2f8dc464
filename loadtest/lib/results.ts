// The workloads every system runs (their ids, their shape, their payloads)
// and the one shape every benchmark script reports in, so that `npm run
// bench` can run each of them several times and put Ticker and its peers
// side by side: one measurement per (workload, system, metric) per run,
// appended as a JSON line to the file named by --results (or
// TICKER_BENCH_RESULTS).
import { randomBytes } from "node:crypto";
import { appendFileSync, readFileSync } from "node:fs";

export type Workload =
  | "W1" // publish 1,000,000 x 100 B events in batches of 1,000
  | "W2" // replay them from the start
  | "W3-20k" // publish-to-deliver latency at 20,000 events/s for 10 s
  | "W3-100k" // the same at 100,000 events/s
  | "W4" // 10,000 streams x 10 events
  | "fanout-100" // 1 stream -> 100 consumers at 1,000 events/s
  | "fanout-1000" // 1 stream -> 1,000 consumers at 1,000 events/s
  | "fanout-10000" // 1 stream -> 10,000 consumers at 100 events/s, in child processes
  | "fsync" // W1 with every batch on disk before it is acknowledged
  | "ordered-ingest" // W1's shape from several producers, 1% out of order, producer_ordering against plain
  | "timelines" // 25-event timeline pages over 3 and 32 streams of 1,000,000 events each
  | "metrics" // GET /metrics at 10,000 streams, and publishes meanwhile
  | "snapshot" // the newest event of 100,000 keys, over HTTP pages and from=snapshot
  | "cluster"; // publish and replay on a 3-node cluster against one node (bench:cluster)

/** Events per publish: Ticker's publish_events_max (and a Redis pipeline, a NATS batch). */
export const BATCH_EVENTS = 1000;
export const PAYLOAD_BYTES = 100;
/** Events per replay page: Ticker's replay_page_events_max (and an XRANGE COUNT). */
export const PAGE_EVENTS = 10_000;
/** The concurrent rows' requests in flight: enough to keep both shard threads' rings busy. */
export const IN_FLIGHT = 8;
/** W4: streams, events each, publishes in flight. */
export const W4_STREAMS = 10_000;
export const W4_EVENTS_PER_STREAM = 10;
export const W4_IN_FLIGHT = 16;

/** Random base64 text, `chars` long: a JSON-ish payload that needs no escape and does not compress to nothing. */
export function payloadText(chars: number): string {
  return randomBytes(Math.ceil((chars * 3) / 4) + 3)
    .toString("base64")
    .slice(0, chars);
}

export interface Measurement {
  workload: Workload;
  /** "Ticker", "Redis Streams", "Redis Streams (AOF everysec)", "Redis Streams (AOF always)", "NATS JetStream". */
  system: string;
  /** e.g. "JSON, 8 in flight", "binary, 4 pages in flight"; empty for the workload's plain form. */
  variant?: string;
  /** e.g. "events/s", "p99 ms", "p50 ms", "RSS MiB", "s", "disk MiB", "server CPU cores". */
  metric: string;
  value: number;
  /** Which way is better, for ratios and "best peer". */
  better: "higher" | "lower";
  /** One line on how it was measured or what was odd, for the report's notes. */
  note?: string;
  /** What of the data read the page cache held around the measured point (bench:timelines). */
  pageCache?: PageCacheRecord;
}

/** Bytes are null where fincore could not measure them. */
export interface PageCacheRecord {
  /** "warm": the files were read once before the set's points; "cold": they were not. */
  mode: "cold" | "warm";
  /** Size of the files the point reads (the set's segments and indexes). */
  setBytes: number | null;
  /** Resident before the set's warm read (cold: before its first point). */
  residentBeforeWarmReadBytes: number | null;
  /** Resident before the point's discarded warm-up, and after its measured window. */
  residentStartBytes: number | null;
  residentEndBytes: number | null;
}

/** Where this process reports: --results <file> or TICKER_BENCH_RESULTS; null = nowhere. */
export function resultsFile(argv = process.argv): string | null {
  const i = argv.indexOf("--results");
  if (i >= 0 && argv[i + 1]) return argv[i + 1];
  return process.env.TICKER_BENCH_RESULTS || null;
}

/** Appends measurements as JSON lines (no-op when no results file is set). */
export function report(ms: Measurement[], file = resultsFile()): void {
  if (!file || ms.length === 0) return;
  appendFileSync(file, `${ms.map((m) => JSON.stringify(m)).join("\n")}\n`);
}

export function readResults(file: string): Measurement[] {
  return readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as Measurement);
}

/** What this machine can do at best, measured by native-bench (loadtest/workloads/limits.ts). */
export interface MachineLimits {
  memcpy_gib_s: number;
  seq_write_mib_s: number;
  fdatasync_per_s: number;
  fdatasync_p50_ms: number;
  fdatasync_p99_ms: number;
  tcp_loopback_gbit_s: number;
  /** One thread writing a small message to each of many sockets in turn, as a server fans an event out. */
  socket_writes_per_s: number;
  socket_write_us: number;
}
