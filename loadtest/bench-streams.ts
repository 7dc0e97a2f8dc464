// W4: many small streams. 10,000 streams get 10 events each (one publish per
// stream, 16 requests in flight) on a fresh server; reported: the total time,
// the server's RSS once they are all there, and the data dir's size.
//
//   npm run bench:streams                      # 10,000 streams
//   node dist/loadtest/bench-streams.js --streams 1000 --results out.jsonl
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { HttpRawConnection } from "./http-raw.js";
import { diskBytes } from "./proc.js";
import { report, resultsFile, type Measurement } from "./results.js";
import { BenchServer, killAllServers } from "./server.js";

const EVENTS_PER_STREAM = 10;
const IN_FLIGHT = 16;
const PAYLOAD = "x".repeat(100);

const { values: opts } = parseArgs({
  options: { streams: { type: "string", default: "10000" }, results: { type: "string" } },
  strict: true,
});
const STREAMS = Number(opts.streams);
if (!Number.isSafeInteger(STREAMS) || STREAMS < 1) {
  console.error("--streams must be a positive integer");
  process.exit(2);
}

/** One publish of 10 events to each of `streams` new streams; resolves with the wall time in s. */
async function createStreams(port: number, streams: number): Promise<number> {
  const conns = await Promise.all(Array.from({ length: IN_FLIGHT }, () => HttpRawConnection.connect(port)));
  const body = Buffer.from(JSON.stringify({ events: Array.from({ length: EVENTS_PER_STREAM }, (_, i) => ({ type: "t", payload: { i, p: PAYLOAD } })) }));
  const headers = { "Content-Type": "application/json" };
  let next = 0;
  const t0 = performance.now();
  try {
    await Promise.all(
      conns.map(async (c) => {
        for (let i = next++; i < streams; i = next++) {
          const r = await c.post(`/v1/streams/w4-${i}/events`, body, headers);
          if (r.status !== 200) throw new Error(`publish to w4-${i}: HTTP ${r.status} ${r.body.toString("utf8", 0, 200)}`);
        }
      }),
    );
  } finally {
    for (const c of conns) c.close();
  }
  return (performance.now() - t0) / 1000;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "ticker-bench-streams-"));
  let server: BenchServer | null = null;
  try {
    server = await BenchServer.start(dir);
    const wallS = await createStreams(server.port, STREAMS);
    const mem = server.memory();
    const disk = diskBytes(dir);
    const mib = (n: number) => n / 2 ** 20;
    const note = `${STREAMS} streams x ${EVENTS_PER_STREAM} events, ${IN_FLIGHT} publishes in flight`;
    const ms: Measurement[] = [
      { workload: "W4", system: "Ticker", metric: "s", value: wallS, better: "lower", note },
      { workload: "W4", system: "Ticker", metric: "RSS MiB", value: mib(mem.rss), better: "lower" },
      { workload: "W4", system: "Ticker", metric: "disk MiB", value: mib(disk), better: "lower" },
    ];
    report(ms, opts.results ?? resultsFile());
    console.log(`W4 Ticker: ${STREAMS} streams in ${wallS.toFixed(2)} s (${Math.round(STREAMS / wallS)} streams/s), RSS ${mib(mem.rss).toFixed(1)} MiB (peak ${mib(mem.peak).toFixed(1)}), disk ${mib(disk).toFixed(1)} MiB`);
    const how = await server.stop();
    if (!how.startsWith("SIGTERM: exited (code 0)")) console.error(`server stop: ${how}`);
  } finally {
    killAllServers();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  killAllServers();
  process.exit(1);
});
