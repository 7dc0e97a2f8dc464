// Timelines: a 25-event page (GET /v1/timelines?streams=...&cursor=) over 3
// and over 32 streams that hold --events events each (1,000,000 by default),
// published interleaved so that every page mixes streams. autocannon (in
// this process) asks for pages at cursors spread over the timeline, forward
// and backward, first paced at 1,000 pages/s, then as fast as it is answered.
// Reported per set: pages/s, and p50/p99 of each answer's latency (HDR, µs).
// Goals (issue 12): p99 <= 5 ms at 1,000 pages/s; >= 12,000 pages/s with p99
// <= 50 ms.
//
//   npm run bench:timelines                              # 32 x 1,000,000 events
//   npm run bench:timelines -- --events 100000 --duration 5 --results out.jsonl
import { parseArgs } from "node:util";
import autocannon from "autocannon";
import { stoppedCleanly } from "../../test/harness/process.js";
import type { TickerProcess } from "../../test/harness/ticker.js";
import { HttpRawClient } from "../lib/http-raw.js";
import { newHistogram } from "../lib/latency.js";
import { cpuMark, cpuSince, diskBytes, waitQuiet } from "../lib/proc.js";
import { int, mib } from "../lib/report.js";
import { BATCH_EVENTS, PAYLOAD_BYTES, payloadText, report, resultsFile, type Measurement } from "../lib/results.js";
import { cleanupNow, guardRun, onCleanup, runMain, TempDirs } from "../lib/run.js";
import { startTicker } from "../systems/ticker.js";

const PAGE_EVENTS = 25;
const PACED_PAGES_PER_S = 1000;
/** Publishes in flight while the streams fill. */
const PUBLISH_IN_FLIGHT = 8;
/** Cursors the pages are asked at: half paging forward from the start, half backward from the head. */
const CURSORS = 2000;
const SETS = [3, 32];

const { values: opts } = parseArgs({
  options: {
    events: { type: "string", default: "1000000" },
    duration: { type: "string", default: "10" },
    connections: { type: "string", default: "64" },
    results: { type: "string" },
  },
  strict: true,
});
const EVENTS = Number(opts.events);
const DURATION_S = Number(opts.duration);
const CONNECTIONS = Number(opts.connections);
for (const [name, v] of [
  ["--events", EVENTS],
  ["--duration", DURATION_S],
  ["--connections", CONNECTIONS],
] as const) {
  if (!Number.isSafeInteger(v) || v < 1) {
    console.error(`${name} must be a positive integer`);
    process.exit(2);
  }
}

const tempDirs = new TempDirs("ticker-bench-timelines-");
onCleanup(() => tempDirs.removeAll());

const streamIds = Array.from({ length: Math.max(...SETS) }, (_, i) => `tl-${String(i).padStart(2, "0")}`);

/** Fills every stream with EVENTS events: batches of 1,000 to the streams in turn, so their ingest_ts interleave. */
async function fill(port: number): Promise<number> {
  const payload = payloadText(PAYLOAD_BYTES);
  const body = Buffer.from(
    JSON.stringify({ events: Array.from({ length: BATCH_EVENTS }, (_, i) => ({ type: "t", key: `k${i % 16}`, payload: { p: payload } })) }),
  );
  const headers = { "Content-Type": "application/json" };
  const conns = await HttpRawClient.connections(port, PUBLISH_IN_FLIGHT);
  const batches = Math.ceil(EVENTS / BATCH_EVENTS) * streamIds.length;
  let next = 0;
  const t0 = performance.now();
  try {
    await Promise.all(
      conns.map(async (c) => {
        for (let b = next++; b < batches; b = next++) {
          const stream = streamIds[b % streamIds.length];
          const r = await c.post(`/v1/streams/${stream}/events`, body, headers);
          if (r.status !== 200) throw new Error(`publish to ${stream}: HTTP ${r.status} ${r.body.toString("utf8", 0, 200)}`);
        }
      }),
    );
  } finally {
    for (const c of conns) c.close();
  }
  return (performance.now() - t0) / 1000;
}

/** Page paths at CURSORS places of the set's timeline: forward from the start, backward from the head, a page apart. */
async function cursorPaths(port: number, set: string[]): Promise<string[]> {
  const client = await HttpRawClient.connect(port, 1);
  const base = `/v1/timelines?streams=${set.join(",")}&limit=${PAGE_EVENTS}`;
  const paths: string[] = [];
  try {
    for (const direction of ["forward", "backward"]) {
      let path = `${base}&direction=${direction}`;
      for (let i = 0; i < CURSORS / 2; i++) {
        paths.push(path);
        const r = await client.get(path);
        if (r.status !== 200) throw new Error(`GET ${path}: HTTP ${r.status} ${r.body.toString("utf8", 0, 200)}`);
        const page = JSON.parse(r.body.toString("utf8")) as { events: unknown[]; next_cursor: string };
        if (page.events.length !== PAGE_EVENTS) throw new Error(`a page of ${page.events.length} events at cursor ${i} (${direction}): fill more events`);
        path = `${base}&cursor=${page.next_cursor}`;
      }
    }
  } finally {
    client.close();
  }
  return paths;
}

interface Run {
  pagesPerS: number;
  p50Ms: number;
  p99Ms: number;
  non2xx: number;
  errors: number;
  serverCores: number;
  /** The server's main thread (HTTP, the front's merge): what bounds a page rate first. */
  frontCores: number;
  /** This process: autocannon, on the same two cores. */
  clientCores: number;
}

/** autocannon over `paths` in turn on `connections` connections for `durationS`, at `rate` pages/s overall (0: as fast as answered). */
function cannon(server: TickerProcess, paths: string[], connections: number, durationS: number, rate: number): Promise<Run> {
  const hist = newHistogram();
  let at = 0;
  const cpu = cpuMark(server.pid);
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url: `http://127.0.0.1:${server.port}`,
        connections,
        duration: durationS,
        timeout: 30,
        ...(rate > 0 ? { overallRate: rate } : {}),
        requests: [
          {
            method: "GET",
            setupRequest: (req: autocannon.Request) => ({ ...req, path: paths[at++ % paths.length] }),
          },
        ],
      },
      (err: unknown, result: autocannon.Result) => {
        if (err) return reject(err as Error);
        const ok = result.requests.total - result.non2xx;
        const use = cpuSince(cpu, server.pid);
        resolve({
          pagesPerS: ok / durationS,
          p50Ms: hist.getValueAtPercentile(50) / 1000,
          p99Ms: hist.getValueAtPercentile(99) / 1000,
          non2xx: result.non2xx,
          errors: result.errors,
          serverCores: use.serverCores,
          frontCores: use.serverMainCores,
          clientCores: use.clientCores,
        });
      },
    );
    instance.on("response", (_client, status, _bytes, responseTimeMs) => {
      if (status >= 200 && status < 300) hist.recordValue(Math.max(1, Math.round(responseTimeMs * 1000)));
    });
  });
}

/** Filling 32 million events and four runs take about 5 min here; a hang ends the run, cleaned up, within npm run bench's step timeout (12 min). */
const RUN_DEADLINE_MS = 11 * 60_000;

async function main(): Promise<number> {
  const deadline = guardRun("bench:timelines", RUN_DEADLINE_MS);
  const dir = tempDirs.make();
  const server = await startTicker(dir);
  const ms: Measurement[] = [];
  let failed = false;
  try {
    const fillS = await fill(server.port);
    console.log(
      `timelines: ${streamIds.length} streams x ${int(EVENTS)} events filled in ${fillS.toFixed(1)} s (${int((EVENTS * streamIds.length) / fillS)} events/s), ${mib(diskBytes(dir)).toFixed(0)} MiB on disk`,
    );
    for (const n of SETS) {
      const set = streamIds.slice(0, n);
      const paths = await cursorPaths(server.port, set);
      const quiet = await waitQuiet(3000);
      const note = `${n} streams x ${int(EVENTS)} events, ${PAGE_EVENTS}-event pages at ${paths.length} cursors${quiet.quiet ? "" : `; machine not idle before (${quiet.busyCores.toFixed(2)} cores)`}`;
      // A short warm-up, not measured: JIT and page cache.
      await cannon(server, paths, 16, 2, 0);
      const paced = await cannon(server, paths, 16, DURATION_S, PACED_PAGES_PER_S);
      const max = await cannon(server, paths, CONNECTIONS, DURATION_S, 0);
      for (const [variant, r] of [
        [`${n} streams, ${int(PACED_PAGES_PER_S)} pages/s`, paced],
        [`${n} streams, ${CONNECTIONS} connections, unpaced`, max],
      ] as const) {
        if (r.non2xx > 0 || r.errors > 0) {
          failed = true;
          console.error(`timelines ${variant}: ${r.non2xx} non-2xx answers, ${r.errors} errors`);
        }
        ms.push({ workload: "timelines", system: "Ticker", variant, metric: "pages/s", value: r.pagesPerS, better: "higher", note });
        ms.push({ workload: "timelines", system: "Ticker", variant, metric: "p50 ms", value: r.p50Ms, better: "lower" });
        ms.push({ workload: "timelines", system: "Ticker", variant, metric: "p99 ms", value: r.p99Ms, better: "lower" });
        ms.push({ workload: "timelines", system: "Ticker", variant, metric: "server CPU cores", value: r.serverCores, better: "lower" });
        ms.push({ workload: "timelines", system: "Ticker", variant, metric: "front CPU cores", value: r.frontCores, better: "lower" });
        ms.push({ workload: "timelines", system: "Ticker", variant, metric: "client CPU cores", value: r.clientCores, better: "lower" });
        console.log(
          `timelines ${variant}: ${int(r.pagesPerS)} pages/s, p50 ${r.p50Ms.toFixed(2)} ms, p99 ${r.p99Ms.toFixed(2)} ms, server ${r.serverCores.toFixed(2)} cores (front ${r.frontCores.toFixed(2)}), client ${r.clientCores.toFixed(2)} cores`,
        );
      }
      console.log(
        `  goals: p99 <= 5 ms at 1,000 pages/s: ${paced.p99Ms <= 5 ? "met" : "NOT met"}; >= 12,000 pages/s with p99 <= 50 ms: ${max.pagesPerS >= 12_000 && max.p99Ms <= 50 ? "met" : "NOT met"}`,
      );
    }
    report(ms, opts.results ?? resultsFile());
  } finally {
    const how = await server.stop();
    if (!stoppedCleanly(how)) console.error(`server stop: ${how}`);
    cleanupNow(); // the data dir: 7 GB at the default size
    clearTimeout(deadline);
  }
  return failed ? 1 : 0;
}

runMain(main);
