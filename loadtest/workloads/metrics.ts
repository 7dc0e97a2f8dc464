// The cost of a GET /metrics scrape at 10,000 streams, each with two events,
// every GROUP_EVERY-th with a group checkpoint behind its head (a group keeps
// its checkpoint file open: a group on each of 10,000 streams, plus their
// segments, passes the machine's 20,000 open files): the scrape's duration, size and
// series with metrics_streams_max at its default (1,000) and at 10,000 (no
// cap), and what scraping does to publishes meanwhile (the p99 of one
// publish at a time, without scrapes and with one scrape after another).
//
//   npm run bench:metrics                                  # 10,000 streams
//   npm run bench:metrics -- --streams 1000 --results out.jsonl
import { parseArgs } from "node:util";
import { stoppedCleanly } from "../../test/harness/process.js";
import type { TickerProcess } from "../../test/harness/ticker.js";
import { HttpRawClient, type HttpRawConnection } from "../../src/client/http.js";
import { report, resultsFile, type Measurement } from "../lib/results.js";
import { cleanupNow, onCleanup, runMain, TempDirs } from "../lib/run.js";
import { startTicker } from "../systems/ticker.js";

const tempDirs = new TempDirs("ticker-bench-metrics-");
onCleanup(() => tempDirs.removeAll());

const { values: opts } = parseArgs({
  options: {
    streams: { type: "string", default: "10000" },
    scrapes: { type: "string", default: "30" },
    results: { type: "string" },
  },
  strict: true,
});
const STREAMS = Number(opts.streams);
const SCRAPES = Number(opts.scrapes);
if (!Number.isSafeInteger(STREAMS) || STREAMS < 1 || !Number.isSafeInteger(SCRAPES) || SCRAPES < 1) {
  console.error("--streams and --scrapes must be positive integers");
  process.exit(2);
}
const IN_FLIGHT = 16;
/** Publishes timed in each phase, one at a time. */
const PUBLISHES = 2000;
const JSON_HEADERS = { "Content-Type": "application/json" };
const GROUP_EVERY = 5;

async function fill(conns: HttpRawConnection[], streams: number): Promise<void> {
  const event = Buffer.from(JSON.stringify({ events: [{ type: "t", payload: { p: "x".repeat(100) } }, { type: "t" }] }));
  const checkpoint = Buffer.from(JSON.stringify({ group: "g", seq: 1 }));
  let next = 0;
  await Promise.all(
    conns.map(async (c) => {
      for (let i = next++; i < streams; i = next++) {
        const p = await c.post(`/v1/streams/m-${i}/events`, event, JSON_HEADERS);
        if (p.status !== 200) throw new Error(`publish to m-${i}: HTTP ${p.status}`);
        if (i % GROUP_EVERY !== 0) continue;
        const k = await c.post(`/v1/streams/m-${i}/checkpoint`, checkpoint, JSON_HEADERS);
        if (k.status !== 200) throw new Error(`checkpoint of m-${i}: HTTP ${k.status}`);
      }
    }),
  );
}

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];

interface ScrapeStats {
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  bytes: number;
  series: number;
}

async function scrapes(c: HttpRawConnection, n: number): Promise<ScrapeStats> {
  const ms: number[] = [];
  let text = "";
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const r = await c.get("/metrics");
    ms.push(performance.now() - t0);
    if (r.status !== 200) throw new Error(`GET /metrics: HTTP ${r.status}`);
    text = r.body.toString("utf8");
  }
  ms.sort((a, b) => a - b);
  const series = text.split("\n").filter((l) => l !== "" && !l.startsWith("#")).length;
  return { p50Ms: quantile(ms, 0.5), p99Ms: quantile(ms, 0.99), maxMs: ms[ms.length - 1], bytes: Buffer.byteLength(text), series };
}

/** p99 and max of PUBLISHES one-at-a-time publishes of one event, in ms. */
async function publishLatency(c: HttpRawConnection): Promise<{ p99Ms: number; maxMs: number }> {
  const body = Buffer.from(JSON.stringify({ events: [{ type: "t" }] }));
  const ms: number[] = [];
  for (let i = 0; i < PUBLISHES; i++) {
    const t0 = performance.now();
    const r = await c.post("/v1/streams/m-probe/events", body, JSON_HEADERS);
    ms.push(performance.now() - t0);
    if (r.status !== 200) throw new Error(`publish: HTTP ${r.status}`);
  }
  ms.sort((a, b) => a - b);
  return { p99Ms: quantile(ms, 0.99), maxMs: ms[ms.length - 1] };
}

async function run(streamsMax: number, ms: Measurement[]): Promise<void> {
  const dir = tempDirs.make();
  let server: TickerProcess | null = null;
  const conns: HttpRawConnection[] = [];
  try {
    server = await startTicker(dir, { args: ["--metrics-streams-max", String(streamsMax)] });
    conns.push(...(await HttpRawClient.connections(server.port, IN_FLIGHT)));
    await fill(conns, STREAMS);
    const scraper = conns[0];
    const s = await scrapes(scraper, SCRAPES);
    // A new connection: uWS closes one idle for 10 s, as the others were during the scrapes.
    const [publisher] = await HttpRawClient.connections(server.port, 1);
    conns.push(publisher);
    const quiet = await publishLatency(publisher);
    let scraping = true;
    const loop = (async () => {
      while (scraping) await scraper.get("/metrics");
    })();
    const busy = await publishLatency(publisher);
    scraping = false;
    await loop;
    const note = `${STREAMS} streams, ${Math.ceil(STREAMS / GROUP_EVERY)} groups, metrics_streams_max ${streamsMax}`;
    const system = `Ticker (metrics_streams_max ${streamsMax})`;
    ms.push(
      { workload: "metrics", system, metric: "scrape p50 ms", value: s.p50Ms, better: "lower", note },
      { workload: "metrics", system, metric: "scrape p99 ms", value: s.p99Ms, better: "lower" },
      { workload: "metrics", system, metric: "scrape KiB", value: s.bytes / 1024, better: "lower" },
      { workload: "metrics", system, metric: "series", value: s.series, better: "lower" },
      { workload: "metrics", system, metric: "publish p99 ms, no scrapes", value: quiet.p99Ms, better: "lower" },
      { workload: "metrics", system, metric: "publish p99 ms, scraping", value: busy.p99Ms, better: "lower" },
    );
    console.log(
      `metrics, ${note}: scrape p50 ${s.p50Ms.toFixed(1)} ms, p99 ${s.p99Ms.toFixed(1)} ms, max ${s.maxMs.toFixed(1)} ms, ${(s.bytes / 1024).toFixed(0)} KiB, ${s.series} series; ` +
        `one publish at a time: p99 ${quiet.p99Ms.toFixed(2)} ms (max ${quiet.maxMs.toFixed(1)}) without scrapes, p99 ${busy.p99Ms.toFixed(2)} ms (max ${busy.maxMs.toFixed(1)}) while scraping back to back`,
    );
    for (const c of conns) c.close();
    const how = await server.stop();
    if (!stoppedCleanly(how)) console.error(`server stop: ${how}`);
  } finally {
    for (const c of conns) c.close();
    server?.killNow();
  }
}

async function main(): Promise<number> {
  const ms: Measurement[] = [];
  try {
    await run(1000, ms);
    await run(STREAMS, ms);
    report(ms, opts.results ?? resultsFile());
  } finally {
    cleanupNow();
  }
  return 0;
}

runMain(main);
