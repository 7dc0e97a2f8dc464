// Capacity report: how far one Ticker node goes on this machine, as charts.
//
//   npm run capacity                                  # the full run, ~3 minutes → docs/CAPACITY.md, docs/results/capacity/*.svg
//   npm run capacity -- --quick --out .bench/cap      # short windows, fewer points, a smoke run
//   npm run capacity -- --only publish,streams --json .bench/cap.json   # also keep the raw results
//   npm run capacity -- --from-json .bench/cap.json --out .bench/cap    # re-render a kept run, no sweeps
// A run where a sweep failed writes no report unless --partial: the last complete one stays.
//
// Three sweeps, each on a fresh server (`serve --port 0`, default config,
// fresh temp data dir), always stopped and its dir removed:
// - publish: autocannon, JSON batches of 100 (and 1,000) events to one stream,
//   at 1–64 connections: events/s against request latency;
// - consumers: one stream at 1,000 events/s, 1–1,000 WebSocket consumers:
//   publish-to-deliver p50/p99 and server CPU;
// - streams: 1,000 to 10,000 streams of 10 events: RSS, disk, time.
// Then a sizing table from the per-event, per-message, per-stream and
// per-consumer costs of the same run. ./capacity/ holds the sweeps and the
// document.
import { readFileSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { commandLine, machineFacts, repoRelative } from "../lib/report.js";
import { guardRun, runMain } from "../lib/run.js";
import { writeCapacityReport, type CapacityResults } from "./capacity/report.js";
import { sweepConsumers, sweepPublish, sweepStreams, type ConsumersOptions, type PublishOptions, type StreamsOptions } from "./capacity/sweeps.js";

/** Whatever hangs, the run ends: servers killed, temp dirs removed. */
const RUN_DEADLINE_MS = 9 * 60_000;
const SWEEPS = ["publish", "consumers", "streams"] as const;
type SweepName = (typeof SWEEPS)[number];

const QUICK: { publish: Partial<PublishOptions>; consumers: Partial<ConsumersOptions>; streams: Partial<StreamsOptions> } = {
  publish: { connections: [1, 4, 16], largeBatchConnections: [4], warmupS: 0.5, measureS: 1 },
  consumers: { consumers: [1, 10, 100], warmupS: 0.5, measureS: 1 },
  streams: { steps: [200, 500, 1000] },
};

interface RunOptions {
  quick?: boolean;
  only?: SweepName[];
  log?: (line: string) => void;
}

/** Runs the selected sweeps in order; a failed sweep is noted and the others still run. */
async function runCapacity(opts: RunOptions = {}): Promise<CapacityResults> {
  const t0 = performance.now();
  const log = opts.log ?? (() => {});
  const only = new Set(opts.only ?? SWEEPS);
  const r: CapacityResults = { machine: machineFacts(), command: "", runtimeS: 0, publish: null, consumers: null, streams: null, notes: [] };
  const attempt = async <T>(name: SweepName, run: () => Promise<T>): Promise<T | null> => {
    if (!only.has(name)) return null;
    const ts = performance.now();
    try {
      const out = await run();
      log(`${name} sweep: ${((performance.now() - ts) / 1000).toFixed(0)} s`);
      return out;
    } catch (err) {
      r.notes.push(`**The ${name} sweep failed:** ${(err as Error).message.split("\n").slice(0, 6).join(" / ")}`);
      log(`${name} sweep FAILED: ${(err as Error).stack ?? err}`);
      return null;
    }
  };
  r.publish = await attempt("publish", () => sweepPublish(opts.quick ? QUICK.publish : {}, log));
  r.consumers = await attempt("consumers", () => sweepConsumers(opts.quick ? QUICK.consumers : {}, log));
  r.streams = await attempt("streams", () => sweepStreams(opts.quick ? QUICK.streams : {}, log));
  r.runtimeS = (performance.now() - t0) / 1000;
  if (opts.quick) r.notes.push("**Quick run** (`--quick`): short windows and fewer points; not the figures to publish.");
  return r;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      quick: { type: "boolean", default: false },
      only: { type: "string" },
      out: { type: "string" },
      json: { type: "string" },
      "from-json": { type: "string" },
      partial: { type: "boolean", default: false },
    },
    strict: true,
  });
  const only = values.only?.split(",").map((s) => s.trim()) ?? [...SWEEPS];
  const unknown = only.filter((s) => !(SWEEPS as readonly string[]).includes(s));
  if (unknown.length > 0) {
    console.error(`--only: unknown sweep(s) ${unknown.join(", ")}; sweeps are ${SWEEPS.join(", ")}`);
    return 2;
  }
  const deadline = guardRun("capacity", RUN_DEADLINE_MS);

  let results: CapacityResults;
  if (values["from-json"]) {
    results = JSON.parse(readFileSync(values["from-json"], "utf8")) as CapacityResults;
  } else {
    results = await runCapacity({ quick: values.quick, only: only as SweepName[], log: (l) => console.error(l) });
    results.command = commandLine("capacity");
  }
  if (values.json) writeFileSync(values.json, JSON.stringify(results, null, 2) + "\n");
  const failed = results.notes.some((n) => n.includes("sweep failed"));
  if (failed && !values.partial) {
    // A report with a section missing would replace the last complete one, and leave that sweep's old chart beside it.
    console.error("capacity: a sweep failed; the report was not written (--partial writes it anyway)");
    clearTimeout(deadline);
    return 1;
  }
  const written = await writeCapacityReport(results, values.out);
  console.error(`wrote ${repoRelative(written.markdown)} and ${written.charts.length} chart(s) (${results.runtimeS.toFixed(0)} s)`);
  clearTimeout(deadline);
  return failed ? 1 : 0;
}

runMain(main);
