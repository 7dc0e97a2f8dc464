// Issue 16's cluster benchmark: publish and replay through ticker/client on
// a 3-node cluster (docs/CLUSTER.md: every batch committed to PostgreSQL
// before its answer, closed segments archived, a non-owner serving archived
// history) against one node without cluster flags, in the same run. All of
// it shares this machine's cores (three nodes, PostgreSQL and this process,
// the load generator), so the figures that matter are the ratios, and each
// row's CPU by process says where the cores went.
//
//   npm run bench:cluster
//   npm run bench:cluster -- --quick --results out.jsonl
//
// Rows, each on one node and then on the cluster (8 MiB segments on both,
// the defaults otherwise: cluster_shards 64, a 5 s lease, archiving every 1 s),
// each after waiting up to 30 s for the machine to go quiet (its note says
// when it did not):
// - paced: ticker.publish() of a batch of 1,000 events of 100 B every 50 ms
//   (20,000 events/s), round robin over 12 streams (4 owned by each node),
//   through node 1 (each stream's owner learned from its one redirect in the
//   warm-up); each batch's round trip from its send to its answer, after a
//   2 s warm-up, over 10 s (1 s and 3 s with --quick).
// - publish: --events (2,000,000; 400,000 with --quick) in batches of 1,000
//   by one Producer (FlatBuffers, exclusive: 4 batches of a stream in
//   flight, 24 over all) over 12 other streams; from the first send to flush().
// - replay: --replay-events (1,000,000; 200,000 with --quick) published to
//   one stream, then replayed from seq 1 over replay().batches() with every
//   seq checked, by a fresh client each time. The cluster waits until the
//   manifest (ticker_cluster_segments) stops moving (every stream's closed
//   segments archived), and a non-owner answers a
//   page itself, then replays through a non-owner (its shard thread reads
//   each segment from the archive and checks it; past the archive it sends
//   the client to the owner), the same again (segments cached), and through
//   the owner.
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import { type PublishEvent, Ticker } from "../../src/client/index.js";
import type { Histogram } from "hdr-histogram-js";
import { newHistogram } from "../lib/latency.js";
import { waitQuiet } from "../lib/proc.js";
import { BATCH_EVENTS, PAYLOAD_BYTES, report, resultsFile, type Measurement } from "../lib/results.js";
import { cleanupNow, onCleanup, runMain, TempDirs } from "../lib/run.js";
import { clusterVariant, PACED_EVENTS_PER_S, type Row, SEGMENT_BYTES_MAX, type Setup } from "./cluster-rows.js";
import {
  archivingDone,
  type BenchSystem,
  type CpuUse,
  cpuMark,
  cpuSince,
  ownerOf,
  sleep,
  spreadStreams,
  startCluster,
  startOneNode,
} from "./cluster-system.js";

const tempDirs = new TempDirs("ticker-bench-cluster-");
onCleanup(() => tempDirs.removeAll());

const { values: opts } = parseArgs({
  options: {
    events: { type: "string" },
    "replay-events": { type: "string" },
    quick: { type: "boolean", default: false },
    results: { type: "string" },
  },
  strict: true,
});
const count = (flag: string, given: string | undefined, full: number, quick: number) => {
  const n = Number(given ?? (opts.quick ? quick : full));
  if (!Number.isSafeInteger(n) || n < BATCH_EVENTS || n % BATCH_EVENTS !== 0) {
    console.error(`--${flag} must be a positive multiple of ${BATCH_EVENTS}`);
    process.exit(2);
  }
  return n;
};
const EVENTS = count("events", opts.events, 2_000_000, 400_000);
const REPLAY_EVENTS = count("replay-events", opts["replay-events"], 1_000_000, 200_000);
const WARMUP_MS = opts.quick ? 1000 : 2000;
const MEASURE_MS = opts.quick ? 3000 : 10_000;
const STREAMS_PER_NODE = 4;
const PER_STREAM_IN_FLIGHT = 4;
/** Past the archiving interval (1 s) and the manifest's trust (archive_manifest_ttl_ms, 1 s). */
const ARCHIVE_QUIET_MS = 3000;
const ARCHIVE_TIMEOUT_MS = 120_000;
const REPLAY_STREAM = "replay";
/** How long a row waits for the machine to go quiet (others share this VM); its note says when it did not. */
const QUIET_TIMEOUT_MS = 30_000;
/** What the last quiet() found, for the next row's note. */
let busyBefore = "";

async function quiet(): Promise<void> {
  const q = await waitQuiet(QUIET_TIMEOUT_MS);
  busyBefore = q.quiet ? "" : `; the machine was still ${q.busyCores.toFixed(2)} cores busy after ${QUIET_TIMEOUT_MS / 1000} s of waiting for quiet`;
}

const bytes = randomBytes(PAYLOAD_BYTES);
const BATCH: PublishEvent[] = Array.from({ length: BATCH_EVENTS }, () => ({ type: "tick", payload_bytes: bytes }));
const int = (n: number) => Math.round(n).toLocaleString("en-US");

/** The row's CPU as measurements, and a line saying it per node. */
function cpuRows(setup: Setup, row: Row, c: CpuUse): { ms: Measurement[]; line: string } {
  const variant = clusterVariant(setup, row);
  const m = (metric: string, value: number): Measurement => ({ workload: "cluster", system: "Ticker", variant, metric, value, better: "lower" });
  const nodes = c.nodesS.reduce((a, b) => a + b, 0);
  const perNode = c.nodesS.length > 1 ? ` (${c.nodesS.map((s) => s.toFixed(2)).join(" + ")})` : "";
  const line = `wall ${c.wallS.toFixed(2)} s; CPU s: nodes ${nodes.toFixed(2)}${perNode}, PostgreSQL ${c.pgS.toFixed(2)}, client ${c.clientS.toFixed(2)}, other ${c.otherS.toFixed(2)}${busyBefore}`;
  return {
    ms: [m("wall s", c.wallS), m("nodes CPU s", nodes), m("PostgreSQL CPU s", c.pgS), m("client CPU s", c.clientS), m("other CPU s", c.otherS)],
    line,
  };
}

async function pacedRow(sys: BenchSystem): Promise<Measurement[]> {
  const streams = spreadStreams(sys, "paced", STREAMS_PER_NODE);
  const t = new Ticker({ url: sys.nodes[0].server.url });
  try {
    for (const s of streams) await t.publish(s, BATCH);
    await quiet();
    const hist: Histogram = newHistogram();
    const intervalMs = (BATCH_EVENTS / PACED_EVENTS_PER_S) * 1000;
    const batches = Math.round((WARMUP_MS + MEASURE_MS) / intervalMs);
    const t0 = performance.now();
    const measureFrom = t0 + WARMUP_MS;
    let mark = cpuMark(sys);
    let late = 0;
    const answers: Promise<void>[] = [];
    for (let i = 0; i < batches; i++) {
      const due = t0 + i * intervalMs;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      else if (-wait > intervalMs) late++;
      if (due >= measureFrom && due - intervalMs < measureFrom) mark = cpuMark(sys);
      const sent = performance.now();
      answers.push(
        t.publish(streams[i % streams.length], BATCH).then(() => {
          if (due >= measureFrom) hist.recordValue(Math.max(1, Math.round((performance.now() - sent) * 1000)));
        }),
      );
    }
    await Promise.all(answers);
    const cpu = cpuRows(sys.setup, "paced", cpuSince(sys, mark));
    const q = (p: number) => hist.getValueAtPercentile(p) / 1000;
    const variant = clusterVariant(sys.setup, "paced");
    console.log(`${variant}: p50 ${q(50).toFixed(2)} ms, p99 ${q(99).toFixed(2)} ms, p99.9 ${q(99.9).toFixed(2)} ms; ${cpu.line}`);
    const note = `ticker.publish() of ${BATCH_EVENTS} events of ${PAYLOAD_BYTES} B (FlatBuffers, encoded per call) every ${intervalMs} ms over ${streams.length} streams${sys.setup === "cluster" ? ` (${STREAMS_PER_NODE} owned by each node)` : ""} through node 1; each batch's round trip, ${hist.totalCount} batches in the ${MEASURE_MS / 1000} s window after ${WARMUP_MS / 1000} s of warm-up (${late} sent over one interval late); ${cpu.line}`;
    const lat = (metric: string, value: number, withNote = false): Measurement => ({
      workload: "cluster",
      system: "Ticker",
      variant,
      metric,
      value,
      better: "lower",
      ...(withNote ? { note } : {}),
    });
    return [lat("p99 ms", q(99), true), lat("p50 ms", q(50)), lat("p99.9 ms", q(99.9)), ...cpu.ms];
  } finally {
    t.close();
  }
}

async function publishRow(sys: BenchSystem): Promise<Measurement[]> {
  const streams = spreadStreams(sys, "publish", STREAMS_PER_NODE);
  const t = new Ticker({ url: sys.nodes[0].server.url });
  try {
    const producer = t.producer({ exclusive: true, inFlightPerStream: PER_STREAM_IN_FLIGHT, inFlightMax: PER_STREAM_IN_FLIGHT * streams.length });
    await quiet();
    const mark = cpuMark(sys);
    for (let sent = 0, i = 0; sent < EVENTS; sent += BATCH_EVENTS, i++) await producer.send(streams[i % streams.length], BATCH);
    await producer.flush();
    const c = cpuSince(sys, mark);
    if (producer.published !== EVENTS) throw new Error(`publish: ${producer.published} of ${EVENTS} published`);
    const cpu = cpuRows(sys.setup, "publish", c);
    const rate = EVENTS / c.wallS;
    const variant = clusterVariant(sys.setup, "publish");
    console.log(`${variant}: ${int(rate)} events/s; ${cpu.line}; ${t.redirects} redirects`);
    const note = `${int(EVENTS)} events of ${PAYLOAD_BYTES} B, one Producer (FlatBuffers, batches of ${BATCH_EVENTS}, exclusive: ${PER_STREAM_IN_FLIGHT} batches of a stream in flight, ${PER_STREAM_IN_FLIGHT * streams.length} over all) round robin over ${streams.length} streams through node 1, from the first send to flush(); ${t.redirects} redirects followed; ${cpu.line}`;
    return [{ workload: "cluster", system: "Ticker", variant, metric: "events/s", value: rate, better: "higher", note }, ...cpu.ms];
  } finally {
    t.close();
  }
}

/** A fresh client's replay of the replay stream through `url`, from seq 1, every seq checked. */
async function replayRow(sys: BenchSystem, row: Row, url: string, archived: number): Promise<Measurement[]> {
  const t = new Ticker({ url });
  try {
    await quiet();
    const mark = cpuMark(sys);
    let last = 0;
    for await (const page of t.replay(REPLAY_STREAM, { from: 1 }).batches())
      for (const e of page) {
        if (e.seq !== last + 1) throw new Error(`${row}: seq ${e.seq} after ${last}`);
        last = e.seq;
      }
    const c = cpuSince(sys, mark);
    if (last !== REPLAY_EVENTS) throw new Error(`${clusterVariant(sys.setup, row)}: the replay ended at seq ${last} of ${REPLAY_EVENTS}`);
    const cpu = cpuRows(sys.setup, row, c);
    const rate = REPLAY_EVENTS / c.wallS;
    const variant = clusterVariant(sys.setup, row);
    console.log(`${variant}: ${int(rate)} events/s; ${cpu.line}; ${t.redirects} redirects`);
    const from =
      row === "replayOwner"
        ? ""
        : `; seqs 1..${int(archived)} (${((archived / REPLAY_EVENTS) * 100).toFixed(1)}%) archived, served by the non-owner, the rest by the owner after ${t.redirects} redirect${t.redirects === 1 ? "" : "s"}`;
    const note = `${int(REPLAY_EVENTS)} events of ${PAYLOAD_BYTES} B on one stream, replay({ from: 1 }).batches() by a fresh client (pages of 10,000, 4 prefetched, FlatBuffers), every seq checked${from}; ${cpu.line}`;
    return [{ workload: "cluster", system: "Ticker", variant, metric: "events/s", value: rate, better: "higher", note }, ...cpu.ms];
  } finally {
    t.close();
  }
}

/** Until `url` answers the stream's first page itself (200) rather than sending the reader to its owner. */
async function servedFromArchive(url: string): Promise<void> {
  for (let i = 0; ; i++) {
    const r = await fetch(`${url}/v1/streams/${REPLAY_STREAM}/events?from=1&limit=1`, { headers: { accept: "application/x-flatbuffers" }, redirect: "manual" });
    await r.arrayBuffer();
    if (r.status === 200) return;
    if (i * 250 > ARCHIVE_TIMEOUT_MS) throw new Error(`a non-owner still answers ${r.status} for seq 1 of ${REPLAY_STREAM}`);
    await sleep(250);
  }
}

async function replayRows(sys: BenchSystem): Promise<Measurement[]> {
  const t = new Ticker({ url: sys.nodes[0].server.url });
  try {
    const producer = t.producer({ exclusive: true });
    for (let sent = 0; sent < REPLAY_EVENTS; sent += BATCH_EVENTS) await producer.send(REPLAY_STREAM, BATCH);
    await producer.flush();
  } finally {
    t.close();
  }
  const owner = ownerOf(sys, REPLAY_STREAM);
  if (sys.setup === "one") return replayRow(sys, "replayOwner", owner.server.url, 0);
  const archived = await archivingDone(sys, REPLAY_STREAM, ARCHIVE_QUIET_MS, ARCHIVE_TIMEOUT_MS);
  const other = sys.nodes.find((n) => n !== owner)!;
  await servedFromArchive(other.server.url);
  console.log(
    `${REPLAY_STREAM}: seqs 1..${archived} of ${REPLAY_EVENTS} archived (${SEGMENT_BYTES_MAX / 2 ** 20} MiB segments); owner ${owner.id}, replaying through ${other.id}`,
  );
  return [
    ...(await replayRow(sys, "replayArchive", other.server.url, archived)),
    ...(await replayRow(sys, "replayArchiveCached", other.server.url, archived)),
    ...(await replayRow(sys, "replayOwner", owner.server.url, archived)),
  ];
}

async function main(): Promise<number> {
  const ms: Measurement[] = [];
  try {
    for (const start of [startOneNode, startCluster]) {
      const sys = await start(tempDirs);
      try {
        ms.push(...(await pacedRow(sys)), ...(await publishRow(sys)), ...(await replayRows(sys)));
      } finally {
        await sys.stop();
      }
    }
    report(ms, opts.results ?? resultsFile());
  } finally {
    cleanupNow();
  }
  return 0;
}

runMain(main);
