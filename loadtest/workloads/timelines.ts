import { join } from "node:path";
import { parseArgs } from "node:util";
import { commandLine, f2, int, mib, ms, machineFacts, machineLine, RESULTS_DIR, table, writeReport } from "../lib/report.js";
import { BATCH_EVENTS, report as reportResults, resultsFile, type Measurement } from "../lib/results.js";
import { cleanupNow, guardRun, runMain } from "../lib/run.js";
import { ensureDataSet, READY_TIMEOUT_MS, shardSplit, type DataSet } from "./timeline-data.js";
import { cannonPoint, cursorPool, PAGE_LIMIT, pacedPoint, settled, type CursorPool, type PagePoint } from "./timeline-pages.js";
import { cacheRecord, pointCacheCell, pointCacheText, prepareSetCache, setCacheLine, type CacheMode, type SetCache } from "./timeline-cache.js";
import { residency } from "../lib/page-cache.js";
import { startTicker } from "../systems/ticker.js";
import { REPO_ROOT, stoppedCleanly } from "../../test/harness/process.js";
import type { TickerProcess } from "../../test/harness/ticker.js";
import {
  buildBodies,
  clientName,
  cpuUsPerEvent,
  eventsPerS,
  formatName,
  rowName,
  runIngestRow,
  sendOrder,
  type ClientKind,
  type Format,
  type IngestRow,
  type SendOrder,
} from "./ordered-publish.js";

const REPORT_PATH = join(RESULTS_DIR, "bench-timelines-latest.md");
const RUN_DEADLINE_MS = 55 * 60_000;
/** Ordered ingest's goal: within 2x of a plain stream. */
const INGEST_RATIO_GOAL = 0.5;

const { values: opts } = parseArgs({
  options: {
    parts: { type: "string", default: "ingest,pages" },
    runs: { type: "string", default: "3" },
    producers: { type: "string", default: "8" },
    // Comma-separated subset of the ingest rows' format/client pairs: flatbuffers-raw, json-raw, json-fetch.
    variants: { type: "string", default: "flatbuffers-raw,json-raw,json-fetch" },
    events: { type: "string" },
    quick: { type: "boolean", default: false },
    // Part B's data set: where it is kept between runs, its shape, and whether to load it again.
    "data-root": { type: "string", default: process.env.TICKER_BENCH_DATA_ROOT || join(REPO_ROOT, ".bench", "timelines") },
    streams: { type: "string", default: "32" },
    "events-per-stream": { type: "string" },
    reload: { type: "boolean", default: false },
    // warm: read each set's segment and index files once before its points (./timeline-cache.ts); cold: do not.
    cache: { type: "string", default: "warm" },
    // Connections of the as-fast-as-they-go points (comma-separated); "none" for the fixed-rate points only.
    connections: { type: "string" },
    results: { type: "string" },
  },
  strict: true,
});
const PARTS = new Set(opts.parts.split(","));
const RUNS = Number(opts.runs);
const PRODUCERS = Number(opts.producers);
const STREAMS = Number(opts.streams);
const EVENTS_PER_STREAM = opts["events-per-stream"] !== undefined ? Number(opts["events-per-stream"]) : opts.quick ? 20_000 : 1_000_000;
/** Connections of part B's as-fast-as-they-go points. */
const SWEEP_CONNECTIONS = opts.connections === "none" ? [] : (opts.connections?.split(",").map(Number) ?? (opts.quick ? [16] : [8, 16, 32, 64]));
const CACHE: CacheMode = opts.cache === "cold" ? "cold" : "warm";
const INGEST_EVENTS = opts.events !== undefined ? Number(opts.events) : opts.quick ? 80_000 : 1_000_000;
for (const [name, ok] of [
  ["--parts must list ingest and/or pages", [...PARTS].every((p) => p === "ingest" || p === "pages")],
  ["--runs must be 1 to 10", Number.isSafeInteger(RUNS) && RUNS >= 1 && RUNS <= 10],
  ["--producers must be 1 to 64", Number.isSafeInteger(PRODUCERS) && PRODUCERS >= 1 && PRODUCERS <= 64],
  [
    `--events must be a multiple of producers x ${BATCH_EVENTS}`,
    Number.isSafeInteger(INGEST_EVENTS) && INGEST_EVENTS > 0 && INGEST_EVENTS % (PRODUCERS * BATCH_EVENTS) === 0,
  ],
  ["--connections must list positive integers", SWEEP_CONNECTIONS.every((c) => Number.isSafeInteger(c) && c > 0 && c <= 1024)],
  ["--streams must be 3 to 64", Number.isSafeInteger(STREAMS) && STREAMS >= 3 && STREAMS <= 64],
  [
    `--events-per-stream must be a multiple of ${BATCH_EVENTS}`,
    Number.isSafeInteger(EVENTS_PER_STREAM) && EVENTS_PER_STREAM > 0 && EVENTS_PER_STREAM % BATCH_EVENTS === 0,
  ],
  ["--cache must be cold or warm", opts.cache === "cold" || opts.cache === "warm"],
] as const) {
  if (!ok) {
    console.error(name);
    process.exit(2);
  }
}

// ---- part A: ordered ingest ------------------------------------------------------

const VARIANTS: Array<{ format: Format; client: ClientKind }> = [
  { format: "flatbuffers" as const, client: "raw" as const },
  { format: "json" as const, client: "raw" as const },
  { format: "json" as const, client: "fetch" as const },
].filter((v) => opts.variants.split(",").includes(`${v.format}-${v.client}`));

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const spread = (xs: number[], fmt: (n: number) => string) => `${fmt(median(xs))} (${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))})`;

async function ingestPart(notes: string[]): Promise<{ rows: IngestRow[]; orders: SendOrder[] }> {
  const orders = Array.from({ length: PRODUCERS }, (_, p) => sendOrder(INGEST_EVENTS / PRODUCERS, 1 + p));
  const rows: IngestRow[] = [];
  for (const format of ["flatbuffers", "json"] as const) {
    if (!VARIANTS.some((v) => v.format === format)) continue;
    const t0 = performance.now();
    const bodies = buildBodies(format, orders);
    console.error(`ordered ingest: ${formatName(format)} bodies encoded in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    for (const v of VARIANTS.filter((x) => x.format === format)) {
      for (let run = 1; run <= RUNS; run++) {
        // Alternate which stream goes first, so a drift of the machine does not favour one.
        for (const ordered of run % 2 === 1 ? [false, true] : [true, false]) {
          const spec = { ...v, ordered, orders, bodies };
          const row = await runIngestRow(spec, notes);
          rows.push(row);
          console.error(`run ${run}: ${rowName(spec)}: ${int(eventsPerS(row))} events/s`);
        }
      }
    }
  }
  return { rows, orders };
}

function ingestSection(rows: IngestRow[], orders: SendOrder[]): string[] {
  const displaced = orders.reduce((n, o) => n + o.displaced, 0);
  const across = orders.reduce((n, o) => n + o.acrossBatches, 0);
  const lines = [
    "## Ordered ingest: publish throughput with 1% of events out of order",
    "",
    `${int(INGEST_EVENTS)} events of ${PRODUCERS} producers (${int(INGEST_EVENTS / PRODUCERS)} each, \`producer_id\` + \`producer_seq\` from 1), batches of ${BATCH_EVENTS}, each producer one request at a time on its own connection, all ${PRODUCERS} at once (${PRODUCERS} requests in flight). ${int(displaced)} events (${((100 * displaced) / INGEST_EVENTS).toFixed(2)}%) are sent out of place: ${int(displaced / 2)} pairs swapped a few positions apart, ${int(across)} of those events across the end of a batch (the rest inside one). Median over ${RUNS} run${RUNS > 1 ? "s" : ""} (min–max); every row on a fresh server and data dir.`,
    "",
  ];
  const head = ["stream", "format, client", "events/s", "server CPU µs/event", "client CPU s", "held at their answer", "checked"];
  const body: string[][] = [];
  const ratios: string[] = [];
  for (const v of VARIANTS) {
    const of = (ordered: boolean) => rows.filter((r) => r.format === v.format && r.client === v.client && r.ordered === ordered);
    for (const ordered of [false, true]) {
      const rs = of(ordered);
      if (rs.length === 0) continue;
      body.push([
        ordered ? "producer_ordering" : "plain",
        `${formatName(v.format)}, ${clientName(v.client)}`,
        spread(rs.map(eventsPerS), int),
        spread(rs.map(cpuUsPerEvent), f2),
        spread(
          rs.map((r) => r.clientCpuS),
          f2,
        ),
        int(median(rs.map((r) => r.heldInAnswers))),
        rs[0].check,
      ]);
    }
    const p = of(false).map(eventsPerS);
    const o = of(true).map(eventsPerS);
    if (p.length > 0 && o.length > 0) {
      const ratio = median(o) / median(p);
      const cpu = median(of(true).map(cpuUsPerEvent)) / median(of(false).map(cpuUsPerEvent));
      ratios.push(
        `- **${formatName(v.format)} over ${clientName(v.client)}:** ordered / plain = ${ratio.toFixed(2)}x (${int(median(o))} vs ${int(median(p))} events/s); goal >= ${INGEST_RATIO_GOAL}x: ${ratio >= INGEST_RATIO_GOAL ? "met" : "**missed**"}. Server CPU per event: ${cpu.toFixed(2)}x the plain stream's.`,
      );
    }
  }
  lines.push(
    table(
      head,
      head.map((_, i) => (i >= 2 && i <= 5 ? "r" : "l")),
      body,
    ),
    "",
    ...ratios,
    "",
    "How to read it:",
    "",
    "- events/s: client-side wall time from the first request to the last answer; bodies encoded before timing (W1's way). Server CPU is utime+stime of the server process over the same interval (/proc), over the events; client CPU is this process's.",
    `- "held at their answer": events listed under \`held\` in the answers, i.e. still waiting for an earlier producer_seq when their request was answered, all released by a later batch of the same producer (the swaps across a batch end). Events held and released inside their own request are not listed. The stream ends with \`held_events\` 0 (GET /v1/streams/{id}), and the read-back (binary replay pages, untimed) finds every event once, in producer_seq order per producer, no gap tombstone; the plain stream holds them in the order sent.`,
    '- FlatBuffers bodies carry each event\'s 100 random payload bytes; JSON bodies `{"type":"tick","producer_id","producer_seq","payload":"<100 chars>"}`. Clients: raw keep-alive sockets (src/client/http.ts, W1\'s) and Node\'s fetch (undici).',
    "",
  );
  return lines;
}

function ingestMeasurements(rows: IngestRow[]): Measurement[] {
  return rows.flatMap((r): Measurement[] => {
    const variant = `${r.ordered ? "producer_ordering" : "plain"}, ${formatName(r.format)}, ${clientName(r.client)}`;
    return [
      { workload: "ordered-ingest", system: "Ticker", variant, metric: "events/s", value: eventsPerS(r), better: "higher" },
      { workload: "ordered-ingest", system: "Ticker", variant, metric: "server CPU µs/event", value: cpuUsPerEvent(r), better: "lower" },
    ];
  });
}

// ---- part B: timeline pages ------------------------------------------------------

function dataSetLines(d: DataSet): string[] {
  return [
    `- **Data set:** ${d.streams.length} streams (\`${d.streams[0]}\` .. \`${d.streams[d.streams.length - 1]}\`) x ${int(d.eventsPerStream)} events, JSON payloads of ~100 bytes, ${(mib(d.diskBytes) / 1024).toFixed(2)} GiB on disk (\`du\` of the data dir); ${d.how}.`,
  ];
}

/** Goals of issue 12 on this machine. */
const FIXED_RATE = 1000;
const FIXED_P99_MS_GOAL = 5;
const THROUGHPUT_GOAL = 12_000;
const THROUGHPUT_P99_MS_GOAL = 50;
/** autocannon connections of the fixed-rate point, and lanes of the evenly paced one. */
const FIXED_CONNECTIONS = 10;
const PACED_LANES = 16;
const WARMUP_S = opts.quick ? 1 : 2;
const MEASURE_S = opts.quick ? 3 : 10;
interface SetResult {
  streams: string[];
  pool: CursorPool;
  cache: SetCache;
  points: PagePoint[];
}

async function measureSet(server: TickerProcess, d: DataSet, streams: string[], notes: string[]): Promise<SetResult> {
  const pool = await cursorPool(server, d.dir, streams, streams.length * d.eventsPerStream, (l) => console.error(l));
  const tag = `${streams.length} streams`;
  console.error(`${tag}: ${pool.forward.length} + ${pool.backward.length} cursors from a walk of ${int(pool.walkPages)} pages`);
  const cache = prepareSetCache(d, streams, CACHE);
  console.error(setCacheLine(streams.length, cache));
  const points: PagePoint[] = [];
  const say = (p: PagePoint) => {
    points.push(p);
    console.error(
      `${tag}, ${p.how}, ${p.connections} conn: ${int(p.pagesPerS)} pages/s, p50 ${ms(p.p50Ms)} p99 ${ms(p.p99Ms)} max ${ms(p.maxMs)} ms, non-2xx ${p.non2xx}, partial ${p.partial}, errors ${p.errors}; ${pointCacheText(p)}`,
    );
  };
  const timing = { warmupS: WARMUP_S, measureS: MEASURE_S, resident: () => residency(cache.files) };
  say(await cannonPoint(server, pool, { connections: FIXED_CONNECTIONS, rate: FIXED_RATE, ...timing }, notes));
  say(await pacedPoint(server, pool, FIXED_RATE, PACED_LANES, timing));
  for (const connections of SWEEP_CONNECTIONS) say(await cannonPoint(server, pool, { connections, rate: null, ...timing }, notes));
  return { streams, pool, cache, points };
}

async function pagesPart(notes: string[]): Promise<{ lines: string[]; sets: SetResult[] }> {
  const d = await ensureDataSet({ root: opts["data-root"], streams: STREAMS, eventsPerStream: EVENTS_PER_STREAM, reload: opts.reload }, (l) =>
    console.error(l),
  );
  console.error(dataSetLines(d)[0]);
  const lines = ["## Timeline pages", "", ...dataSetLines(d)];
  const t0 = performance.now();
  const server = await startTicker(d.dataDir, { readyTimeoutMs: READY_TIMEOUT_MS });
  const readyS = (performance.now() - t0) / 1000;
  const sets: SetResult[] = [];
  try {
    const probe = await fetch(`${server.url}/v1/timelines?streams=${d.streams[0]}&limit=1`);
    if (probe.status !== 200) throw new Error(`GET /v1/timelines answered HTTP ${probe.status} (${(await probe.text()).slice(0, 200)}): not in this build?`);
    const settle = await settled(server);
    lines.push(
      `- **Server:** \`ticker serve\` with the default config (${server.shardCount} shards) on the kept data dir, restarted for the run (ready after ${readyS.toFixed(0)} s), ${settle}.`,
    );
    for (const set of [d.streams.slice(0, 3), d.streams]) sets.push(await measureSet(server, d, set, notes));
  } finally {
    const how = await server.stop();
    if (!stoppedCleanly(how)) notes.push(`pages: server stop: ${how}`);
    if (server.errors.length > 0) notes.push(`pages: server stderr: ${server.errors.slice(0, 5).join(" / ")}`);
  }
  lines.push(...sets.map((s) => setCacheLine(s.streams.length, s.cache)), "", ...pagesTables(sets, server.shardCount), "");
  return { lines, sets };
}

function pagesTables(sets: SetResult[], shards: number): string[] {
  const head = [
    "streams",
    "driver",
    "connections",
    "asked pages/s",
    "pages/s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "non-2xx / partial / errors / timeouts",
    "server cores",
    "front / busiest shard cores",
    "client cores",
    "other cores",
    "resident GiB, start / end of point",
  ];
  const rows = sets.flatMap((s) =>
    s.points.map((p) => [
      String(s.streams.length),
      p.how,
      String(p.connections),
      p.rate === null ? "max" : int(p.rate),
      int(p.pagesPerS),
      ms(p.p50Ms),
      ms(p.p99Ms),
      ms(p.maxMs),
      `${p.non2xx} / ${p.partial} / ${p.errors} / ${p.timeouts}`,
      f2(p.cpu.serverCores),
      `${f2(p.cpu.serverMainCores)} / ${f2(p.cpu.busiestWorkerCores)}`,
      f2(p.cpu.clientCores),
      f2(p.cpu.otherCores),
      pointCacheCell(p),
    ]),
  );
  const goals = sets.flatMap((s) => {
    const fixed = s.points.find((p) => p.kind === "rate");
    const paced = s.points.find((p) => p.kind === "even");
    const max = s.points.filter((p) => p.rate === null && p.non2xx + p.partial + p.errors + p.timeouts === 0);
    const withinP99 = max.filter((p) => p.p99Ms <= THROUGHPUT_P99_MS_GOAL).sort((a, b) => b.pagesPerS - a.pagesPerS)[0];
    const best = max.sort((a, b) => b.pagesPerS - a.pagesPerS)[0];
    const met = (ok: boolean) => (ok ? "met" : "**missed**");
    const n = s.streams.length;
    return [
      fixed && paced
        ? `- **${n} streams, p99 <= ${FIXED_P99_MS_GOAL} ms at ${int(FIXED_RATE)} pages/s:** autocannon ${ms(fixed.p99Ms)} ms (${met(fixed.p99Ms <= FIXED_P99_MS_GOAL)}), evenly paced ${ms(paced.p99Ms)} ms (${met(paced.p99Ms <= FIXED_P99_MS_GOAL)}).`
        : `- **${n} streams, fixed rate:** not measured.`,
      withinP99
        ? `- **${n} streams, >= ${int(THROUGHPUT_GOAL)} pages/s with p99 <= ${THROUGHPUT_P99_MS_GOAL} ms:** ${int(withinP99.pagesPerS)} pages/s at p99 ${ms(withinP99.p99Ms)} ms (${withinP99.connections} connections): ${met(withinP99.pagesPerS >= THROUGHPUT_GOAL)}.`
        : `- **${n} streams, >= ${int(THROUGHPUT_GOAL)} pages/s with p99 <= ${THROUGHPUT_P99_MS_GOAL} ms:** **missed**: no point had p99 <= ${THROUGHPUT_P99_MS_GOAL} ms${best ? ` (best ${int(best.pagesPerS)} pages/s at p99 ${ms(best.p99Ms)} ms)` : ""}.`,
    ];
  });
  const walks = sets.map(
    (s) =>
      `${s.streams.length} streams: ${int(s.pool.walkEvents)} events in ${int(s.pool.walkPages)} pages of ${int(s.pool.walkEvents / s.pool.walkPages)}, ${s.pool.walkS.toFixed(1)} s, every event once, no has_gap, ${s.pool.walkPartial} partial pages`,
  );
  const split = shardSplit(sets[0]?.streams ?? [], shards).join(", ");
  return [
    table(
      head,
      head.map((_, i) => (i <= 2 ? "l" : "r")),
      rows,
    ),
    "",
    ...goals,
    "",
    "How to read it:",
    "",
    `- Each request is \`GET /v1/timelines?streams=<the set>&limit=${PAGE_LIMIT}&cursor=<c>\`, c taken in turn from a pool of cursors spread over the whole merged range: every k-th page's \`next_cursor\` (forward) and \`prev_cursor\` (backward) of one walk from the start with \`limit=1000\` (${walks.join("; ")}), forward and backward alternating. The 3-stream set is \`${sets[0]?.streams.join(",")}\` (shards ${split}); the 32-stream set is all of them.`,
    `- autocannon (in this process) for ${WARMUP_S} s (discarded) and then ${MEASURE_S} s per point; latency is each 2xx answer's response time from autocannon's \`response\` event in an HDR histogram (µs), without autocannon's coordinated-omission correction. Its \`overallRate\` gives each connection its share of a second's requests and sends them back to back from the top of each second, so the fixed-rate row meets bursts of ${FIXED_CONNECTIONS} concurrent requests; the evenly paced row sends one request each millisecond (lib/pacing.ts, ${PACED_LANES} keep-alive connections, the time from the send to the answer).`,
    `- Page cache: this VM's does not keep the full-size data set of 5.5 GiB (the host reclaims it: buff/cache stays at 1-2 GB and shrinks by MB/s with most of the memory free), so pages meet the disk at random and a point's figures depend on what the cache happened to hold. With \`--cache warm\` (the default) each set's segment and index files (its streams' only) are read once, sequentially, right before its points; \`--cache cold\` skips that read. Either way fincore (util-linux) measures how much of the set is resident before that read and before each point's warm-up and after its measured window (the last column: start / end, of the set's size). A point that starts below the set's size, or loses some of it during its window, read part of its pages from disk, and its figures are not comparable with a fully resident one. The cache is never dropped (no root tricks), so "cold" is whatever the machine left, not an empty cache.`,
    "- CPU: cores busy over the measured window (/proc: the server process, its main thread (front) and its busiest other thread (a shard); client = this process, autocannon included; other = the rest of the machine).",
  ];
}

/**
 * Part B's figures for `npm run bench` (its "timelines" section and goals
 * read these variant names): "<n> streams, 1,000 pages/s" (autocannon at the
 * rate), "..., evenly paced", "<n> streams, <c> connections, unpaced".
 */
function pageMeasurements(sets: SetResult[]): Measurement[] {
  return sets.flatMap((s) => {
    const n = s.streams.length;
    return s.points.flatMap((p): Measurement[] => {
      const rate = `${n} streams, ${int(p.rate ?? 0)} pages/s`;
      const variant = p.kind === "max" ? `${n} streams, ${p.connections} connections, unpaced` : p.kind === "even" ? `${rate}, evenly paced` : rate;
      const failures = p.non2xx + p.partial + p.errors + p.timeouts;
      const note = `${n} streams x ${int(s.pool.walkEvents / n)} events, ${PAGE_LIMIT}-event pages at ${s.pool.forward.length + s.pool.backward.length} cursors spread over the whole range${failures > 0 ? `; ${failures} answers not 2xx, partial or failed` : ""}`;
      const m = (metric: string, value: number, better: "higher" | "lower"): Measurement => ({
        workload: "timelines",
        system: "Ticker",
        variant,
        metric,
        value,
        better,
        pageCache: cacheRecord(s.cache, p),
      });
      return [
        { ...m("pages/s", p.pagesPerS, "higher"), note },
        m("p50 ms", p.p50Ms, "lower"),
        m("p99 ms", p.p99Ms, "lower"),
        m("server CPU cores", p.cpu.serverCores, "lower"),
        m("front CPU cores", p.cpu.serverMainCores, "lower"),
        m("client CPU cores", p.cpu.clientCores, "lower"),
      ];
    });
  });
}

// ---- run ------------------------------------------------------------------------

async function main(): Promise<number> {
  const deadline = guardRun("bench-timelines", RUN_DEADLINE_MS);
  const notes: string[] = [];
  const sections: string[] = [];
  const measurements: Measurement[] = [];
  let failed = false;
  try {
    if (PARTS.has("ingest")) {
      try {
        const { rows, orders } = await ingestPart(notes);
        sections.push(...ingestSection(rows, orders));
        measurements.push(...ingestMeasurements(rows));
      } catch (err) {
        failed = true;
        sections.push("## Ordered ingest", "", `**Failed:** ${(err as Error).message}`, "");
        console.error(err);
      }
    }
    if (PARTS.has("pages")) {
      try {
        const { lines, sets } = await pagesPart(notes);
        sections.push(...lines);
        measurements.push(...pageMeasurements(sets));
      } catch (err) {
        failed = true;
        sections.push("## Timeline pages", "", `**Failed:** ${(err as Error).message}`, "");
        console.error(err);
      }
    }
  } finally {
    cleanupNow();
  }
  reportResults(measurements, opts.results ?? resultsFile());
  const facts = machineFacts();
  const text = [
    "# Timelines benchmark: latest run",
    "",
    "Written by `loadtest/workloads/timelines.ts`; overwritten on every run.",
    "",
    `- **Date:** ${facts.date}`,
    `- **Machine:** ${machineLine(facts)}`,
    `- **Node:** ${facts.node}`,
    `- **Commit:** ${facts.commit}`,
    `- **Command:** \`${commandLine("bench:timelines")}\``,
    "",
    ...sections,
    ...(notes.length > 0 ? ["## Notes from this run", "", ...notes.map((n) => `- ${n}`), ""] : []),
  ].join("\n");
  writeReport(REPORT_PATH, text);
  clearTimeout(deadline);
  return failed ? 1 : 0;
}

runMain(main);
