// Peer benchmarks: Redis Streams (without persistence, with an AOF fsynced
// every second, with an AOF fsynced before every reply) and NATS JetStream
// (file storage) on Ticker's workloads, through the npm clients an
// application would use (ioredis, nats), reported in the one Measurement
// shape (lib/results.ts) so the report can put them beside the Ticker rows.
//
//   npm run bench:peers                                      # everything, ~5 minutes
//   npm run bench:peers -- --systems redis,nats --workloads W1,W2
//   npm run bench:peers -- --quick                           # smoke run: 100,000 events, 3 s windows
//   npm run bench:peers -- --results r.jsonl                 # also append the measurements as JSON lines
//
// Workloads (ids as in lib/results.ts), each system on a fresh server and temp
// dir per workload set: {W1}, {W1 8 in flight, then W2 reading what it
// wrote}, {W3-20k}, {W3-100k}, {W4}:
// - W1: 1,000,000 events of 100 bytes in batches of 1,000, one batch in
//   flight, and 8 in flight over 8 connections. Redis: an ioredis
//   pipeline() of 1,000 XADDs per batch. NATS: 1,000 js.publish() started,
//   then their acks awaited; and a third row without js.publish()'s client
//   cost (AckInboxPublisher). "fsync" is W1 on a server that makes each
//   batch durable before acknowledging it: Redis with appendfsync always;
//   NATS only if the server takes `sync_interval: always` (2.9 does not).
// - W2: the 8-in-flight stream read back from the start. Redis: XRANGE in
//   pages of COUNT 10,000, each after the last id of the one before. NATS:
//   an ordered push consumer (deliver all). Counts and order are checked.
// - W3-20k, W3-100k: publish-to-deliver latency of every event at a fixed
//   rate, 2 s warm-up then a 10 s window, one consumer on its own
//   connection (Redis: ioredis XREAD BLOCK; NATS: an ordered push
//   consumer). The producer runs in a worker thread, as bench-consume's
//   does, and paces with a 1 ms timer the same way (./producer.ts); it sends
//   through each system's cheapest path (raw RESP, AckInboxPublisher) so
//   that the client library does not cap the offered rate.
// - W4: 10,000 streams of 10 events. Redis: 10,000 keys, one pipeline of 10
//   XADDs per key. NATS: one stream on subjects `w4.*`, 10 publishes to
//   each of 10,000 subjects. 16 streams in flight, as bench-streams' Ticker
//   rows. Total time, server RSS after, data dir size when persistent.
//
// Runtime is mostly fixed: eight 12.5 s latency rows, and js.publish() at
// ~30,000 events/s (client-bound) for two million events. The rows live in
// ./peers-redis.ts and ./peers-nats.ts, what they share in ./peers-rows.ts.
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { machineLine, cell, commandLine, int, table } from "../lib/report.js";
import { resultsFile, type Workload } from "../lib/results.js";
import { cleanupNow, guardRun, runMain } from "../lib/run.js";
import { runNats } from "./peers-nats.js";
import { runRedis } from "./peers-redis.js";
import { results, rows, runNotes, SYSTEMS, WORKLOAD_IDS, type Plan, type SystemSpec } from "./peers-rows.js";

/** The whole run must end, even if a server or client hangs. */
const RUN_DEADLINE_MS = 9 * 60_000;
const SYSTEM_IDS = SYSTEMS.map((s) => s.id);

// ---- report -------------------------------------------------------------------------

const WORKLOAD_ORDER: Workload[] = ["W1", "fsync", "W2", "W3-20k", "W3-100k", "W4"];

function rowsTable(): string {
  const sorted = [...rows].sort((a, b) => WORKLOAD_ORDER.indexOf(a.workload) - WORKLOAD_ORDER.indexOf(b.workload));
  return table(
    ["workload", "system", "variant", "result", "check"],
    ["l", "l", "l", "l", "l"],
    sorted.map((r) => [r.workload, r.system, cell(r.variant), r.error ? `**FAILED**: ${cell(r.error)}` : r.result, cell(r.check)]),
  );
}

function parsePlan(): { systems: SystemSpec[]; plan: Plan } {
  const { values: opts } = parseArgs({
    options: {
      systems: { type: "string" },
      workloads: { type: "string" },
      quick: { type: "boolean", default: false },
      // The Redis W3 producer's client: "resp" (default) or "ioredis"; see RedisProducer.
      "redis-producer": { type: "string", default: "resp" },
      // Read by results.ts's resultsFile(); declared so that strict parsing accepts it.
      results: { type: "string" },
    },
    strict: true,
  });
  const pick = <T extends string>(flag: string, given: string | undefined, all: readonly T[]): T[] => {
    if (given === undefined) return [...all];
    const ids = given
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
    for (const id of ids) {
      if (!all.includes(id as T)) {
        console.error(`--${flag}: unknown "${id}"; choose from ${all.join(",")}`);
        process.exit(2);
      }
    }
    return all.filter((id) => ids.includes(id));
  };
  const systemIds = pick("systems", opts.systems, SYSTEM_IDS);
  const redisProducer = opts["redis-producer"];
  if (redisProducer !== "resp" && redisProducer !== "ioredis") {
    console.error(`--redis-producer must be "resp" or "ioredis"`);
    process.exit(2);
  }
  const workloads = new Set(pick("workloads", opts.workloads, WORKLOAD_IDS));
  return {
    systems: SYSTEMS.filter((s) => systemIds.includes(s.id)),
    plan: {
      workloads,
      events: opts.quick ? 100_000 : 1_000_000,
      warmupMs: opts.quick ? 1000 : 2000,
      measureMs: opts.quick ? 3000 : 10_000,
      quick: opts.quick,
      redisProducer,
    },
  };
}

async function main(): Promise<number> {
  const { systems, plan } = parsePlan();
  results.file = resultsFile();
  const runStart = performance.now();
  const deadline = guardRun("bench-peers", RUN_DEADLINE_MS);
  if (plan.quick)
    runNotes.push(`**--quick:** ${int(plan.events)} events per W1/W2 row and ${plan.measureMs / 1000} s latency windows: a smoke run, not figures to report.`);

  try {
    for (const system of systems) {
      try {
        if (system.kind === "redis") await runRedis(system, plan);
        else await runNats(system, plan);
      } catch (err) {
        runNotes.push(`**${system.name} stopped early:** ${(err as Error).message}`);
        console.error(`${system.name}: ${(err as Error).message}`);
      }
    }
  } finally {
    cleanupNow();
  }

  const runtimeS = (performance.now() - runStart) / 1000;
  const out = [
    "# Peer benchmarks: Redis Streams and NATS JetStream",
    "",
    `- **Date:** ${new Date().toISOString()}`,
    `- **Machine:** ${machineLine()}; Node ${process.version}`,
    `- **Command:** \`${commandLine("bench:peers")}\` (${runtimeS.toFixed(0)} s)`,
    ...(results.file ? [`- **Results:** appended to \`${results.file}\``] : []),
    "",
    rowsTable(),
    "",
    "## Notes",
    "",
    ...runNotes.map((n) => `- ${n}`),
    ...[...rows]
      .sort((a, b) => WORKLOAD_ORDER.indexOf(a.workload) - WORKLOAD_ORDER.indexOf(b.workload))
      .filter((r) => r.note || r.error)
      .map((r) => `- **${r.workload} · ${r.system}${r.variant ? ` · ${r.variant}` : ""}:** ${r.error ? `failed: ${r.error}` : r.note}`),
    "",
  ].join("\n");
  process.stdout.write(out);
  console.error(`bench-peers: ${rows.length} rows in ${runtimeS.toFixed(0)} s`);
  clearTimeout(deadline);
  return rows.some((r) => r.error) ? 1 : 0;
}

runMain(main);
