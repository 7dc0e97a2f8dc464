// bench:timelines (issue 12): ordered ingest's publish throughput against a
// plain stream's (./ordered-publish.ts), and timeline pages over 3 and over
// 32 streams of 1,000,000 events each (./timeline-pages.ts, on the data set
// of ./timeline-data.ts). Prints a markdown report and writes it to
// docs/results/bench-timelines-latest.md.
//
//   npm run bench:timelines                                  # both parts
//   npm run bench:timelines -- --parts ingest --runs 1       # ordered ingest only, one run
//   npm run bench:timelines -- --quick                       # small sizes, a smoke run
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { commandLine, f2, int, mib, machineFacts, machineLine, repoRelative, RESULTS_DIR, table } from "../lib/report.js";
import { BATCH_EVENTS, report as reportResults, resultsFile, type Measurement } from "../lib/results.js";
import { cleanupNow, guardRun, runMain } from "../lib/run.js";
import { REPO_ROOT } from "../../test/harness/process.js";
import { ensureDataSet, type DataSet } from "./timeline-data.js";
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
    results: { type: "string" },
  },
  strict: true,
});
const PARTS = new Set(opts.parts.split(","));
const RUNS = Number(opts.runs);
const PRODUCERS = Number(opts.producers);
const STREAMS = Number(opts.streams);
const EVENTS_PER_STREAM = opts["events-per-stream"] !== undefined ? Number(opts["events-per-stream"]) : opts.quick ? 20_000 : 1_000_000;
const INGEST_EVENTS = opts.events !== undefined ? Number(opts.events) : opts.quick ? 80_000 : 1_000_000;
for (const [name, ok] of [
  ["--parts must list ingest and/or pages", [...PARTS].every((p) => p === "ingest" || p === "pages")],
  ["--runs must be 1 to 10", Number.isSafeInteger(RUNS) && RUNS >= 1 && RUNS <= 10],
  ["--producers must be 1 to 64", Number.isSafeInteger(PRODUCERS) && PRODUCERS >= 1 && PRODUCERS <= 64],
  [
    `--events must be a multiple of producers x ${BATCH_EVENTS}`,
    Number.isSafeInteger(INGEST_EVENTS) && INGEST_EVENTS > 0 && INGEST_EVENTS % (PRODUCERS * BATCH_EVENTS) === 0,
  ],
  ["--streams must be 3 to 64", Number.isSafeInteger(STREAMS) && STREAMS >= 3 && STREAMS <= 64],
  [
    `--events-per-stream must be a multiple of ${BATCH_EVENTS}`,
    Number.isSafeInteger(EVENTS_PER_STREAM) && EVENTS_PER_STREAM > 0 && EVENTS_PER_STREAM % BATCH_EVENTS === 0,
  ],
  [
    `--events-per-stream must be a multiple of ${BATCH_EVENTS}`,
    Number.isSafeInteger(EVENTS_PER_STREAM) && EVENTS_PER_STREAM > 0 && EVENTS_PER_STREAM % BATCH_EVENTS === 0,
  ],
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
  const head = ["stream", "format, client", "events/s", "server CPU µs/event", "client CPU s", "held in answers", "checked"];
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
      ratios.push(
        `- **${formatName(v.format)} over ${clientName(v.client)}:** ordered / plain = ${ratio.toFixed(2)}x (${int(median(o))} vs ${int(median(p))} events/s); goal >= ${INGEST_RATIO_GOAL}x: ${ratio >= INGEST_RATIO_GOAL ? "met" : "**missed**"}.`,
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

async function pagesPart(notes: string[]): Promise<string[]> {
  const d = await ensureDataSet({ root: opts["data-root"], streams: STREAMS, eventsPerStream: EVENTS_PER_STREAM, reload: opts.reload }, (l) =>
    console.error(l),
  );
  console.error(dataSetLines(d)[0]);
  notes.push(`Data set kept in ${d.dataDir}.`);
  return ["## Timeline pages", "", ...dataSetLines(d), ""];
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
        sections.push(...(await pagesPart(notes)));
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
  process.stdout.write(text);
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(REPORT_PATH, text);
  console.error(`report written to ${repoRelative(REPORT_PATH)}`);
  clearTimeout(deadline);
  return failed ? 1 : 0;
}

runMain(main);
