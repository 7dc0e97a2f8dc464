// W4: many small streams. 10,000 streams get 10 events each (one publish per
// stream, 16 requests in flight) on a fresh server; reported: the total time,
// the server's RSS and open fds once they are all there, the data dir's size
// (per stream and per event), then the restart: a clean stop, and the time
// from starting the server again to ready (recovery of every stream), with
// its RSS and fds after.
//
//   npm run bench:streams                                # 10,000 streams
//   npm run bench:streams -- --streams 100000            # issue 15's 100,000 streams
//   npm run bench:streams -- --streams 1000 --results out.jsonl
import { parseArgs } from "node:util";
import { stoppedCleanly } from "../../test/harness/process.js";
import type { TickerProcess } from "../../test/harness/ticker.js";
import { HttpRawClient } from "../../src/client/http.js";
import { diskBytes, openFds, processMemory } from "../lib/proc.js";
import { mib } from "../lib/report.js";
import {
  PAYLOAD_BYTES,
  report,
  resultsFile,
  W4_EVENTS_PER_STREAM as EVENTS_PER_STREAM,
  W4_IN_FLIGHT as IN_FLIGHT,
  W4_STREAMS,
  type Measurement,
} from "../lib/results.js";
import { cleanupNow, onCleanup, runMain, TempDirs } from "../lib/run.js";
import { startTicker } from "../systems/ticker.js";

const PAYLOAD = "x".repeat(PAYLOAD_BYTES);
const tempDirs = new TempDirs("ticker-bench-streams-");
onCleanup(() => tempDirs.removeAll());

const { values: opts } = parseArgs({
  options: { streams: { type: "string", default: String(W4_STREAMS) }, results: { type: "string" } },
  strict: true,
});
const STREAMS = Number(opts.streams);
if (!Number.isSafeInteger(STREAMS) || STREAMS < 1) {
  console.error("--streams must be a positive integer");
  process.exit(2);
}

/** One publish of 10 events to each of `streams` new streams; resolves with the wall time in s. */
async function createStreams(port: number, streams: number): Promise<number> {
  const conns = await HttpRawClient.connections(port, IN_FLIGHT);
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

async function main(): Promise<number> {
  const dir = tempDirs.make();
  let server: TickerProcess | null = null;
  try {
    server = await startTicker(dir);
    const wallS = await createStreams(server.port, STREAMS);
    const mem = processMemory(server.pid);
    const fds = openFds(server.pid);
    const disk = diskBytes(dir);
    const stopT0 = performance.now();
    const how = await server.stop();
    const stopS = (performance.now() - stopT0) / 1000;
    if (!stoppedCleanly(how)) console.error(`server stop: ${how}`);
    const restartT0 = performance.now();
    // Recovery opens every stream before ready: minutes would be a finding, not a hang.
    server = await startTicker(dir, { readyTimeoutMs: 600_000 });
    const restartS = (performance.now() - restartT0) / 1000;
    const after = processMemory(server.pid);
    const fdsAfter = openFds(server.pid);
    const note = `${STREAMS} streams x ${EVENTS_PER_STREAM} events, ${IN_FLIGHT} publishes in flight`;
    const ms: Measurement[] = [
      { workload: "W4", system: "Ticker", metric: "s", value: wallS, better: "lower", note },
      { workload: "W4", system: "Ticker", metric: "RSS MiB", value: mib(mem.rss), better: "lower" },
      { workload: "W4", system: "Ticker", metric: "fds", value: fds, better: "lower" },
      { workload: "W4", system: "Ticker", metric: "disk MiB", value: mib(disk), better: "lower" },
      { workload: "W4", system: "Ticker", metric: "restart s", value: restartS, better: "lower", note: `after a clean stop of ${stopS.toFixed(1)} s` },
      { workload: "W4", system: "Ticker", metric: "RSS MiB after restart", value: mib(after.rss), better: "lower" },
    ];
    report(ms, opts.results ?? resultsFile());
    console.log(
      `W4 Ticker: ${STREAMS} streams in ${wallS.toFixed(2)} s (${Math.round(STREAMS / wallS)} streams/s), RSS ${mib(mem.rss).toFixed(1)} MiB (peak ${mib(mem.peak).toFixed(1)}), ${fds} fds, disk ${mib(disk).toFixed(1)} MiB (${Math.round(disk / STREAMS)} bytes a stream)`,
    );
    console.log(
      `W4 Ticker restart: stop ${stopS.toFixed(1)} s, start to ready ${restartS.toFixed(1)} s, then RSS ${mib(after.rss).toFixed(1)} MiB (peak ${mib(after.peak).toFixed(1)}), ${fdsAfter} fds`,
    );
    const how2 = await server.stop();
    if (!stoppedCleanly(how2)) console.error(`server stop after restart: ${how2}`);
  } finally {
    cleanupNow();
  }
  return 0;
}

runMain(main);
