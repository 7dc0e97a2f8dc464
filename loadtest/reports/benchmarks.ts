// `npm run bench`: every workload, Ticker and its peers, several runs in a
// row, then docs/BENCHMARKS.md written from the measurements: medians
// with min–max, ratios to the best peer, the goals, the machine's limits.
//
//   npm run bench                       # 3 runs, ~15 min
//   npm run bench -- --runs 1 --quick   # a smoke run, ~3 min
//   npm run bench -- --report-only      # rewrite the report from the kept results
//   npm run bench -- --steps client,peers,peers-w3 --merge
//                                       # re-run some steps; their series replace theirs in the kept results
//
// Each benchmark script runs as its own process (a crash or a hung server
// stays inside it) and appends its measurements to one JSON-lines file
// (lib/results.ts). The analysis of what limits each figure is prose kept by
// hand in docs/bench-analysis.md and appended to the report.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { commandLine, commit, DOCS_DIR, includeProse, machineLine, repoRelative, RESULTS_DIR } from "../lib/report.js";
import { readResults, type MachineLimits, type Measurement, type Workload } from "../lib/results.js";
import { clusterSection } from "./cluster-section.js";
import { GOALS } from "./goals.js";
import { aggregate, bestPeer, factor, fx, isTicker, type RunFacts, type Series, seriesCell } from "./series.js";
import { limitsTable, measureLimits } from "../workloads/limits.js";

const WORKLOADS_DIST = fileURLToPath(new URL("../workloads/", import.meta.url));
const REPORT = join(DOCS_DIR, "BENCHMARKS.md");
const ANALYSIS = join(DOCS_DIR, "bench-analysis.md");
/** The last run's raw measurements and facts, kept so the report can be rewritten without re-running. */
const RESULTS = join(RESULTS_DIR, "bench-results.jsonl");
const RUN_FACTS = join(RESULTS_DIR, "bench-run.json");
/** One step may not hang the whole run (a step may say it needs longer). */
const STEP_TIMEOUT_MS = 12 * 60_000;

const { values: opts } = parseArgs({
  options: {
    runs: { type: "string", default: "3" },
    quick: { type: "boolean", default: false },
    // Comma-separated subset of the steps below, to re-run part of the report's sources.
    steps: { type: "string" },
    // Rewrite docs/BENCHMARKS.md from the kept results of the last run (after editing the analysis).
    "report-only": { type: "boolean", default: false },
    // With --steps: the steps' series replace theirs in the kept results, the others stay (the report says which ran when).
    merge: { type: "boolean", default: false },
  },
  strict: true,
});
if (opts.merge && !opts.steps) {
  console.error("--merge needs --steps: it replaces the series of the steps run and keeps the others");
  process.exit(2);
}
const RUNS = Number(opts.runs);
if (!Number.isSafeInteger(RUNS) || RUNS < 1 || RUNS > 10) {
  console.error("--runs must be 1 to 10");
  process.exit(2);
}

interface Step {
  id: string;
  /** The npm script that runs it alone, and its file under dist/loadtest/workloads/. */
  npm: string;
  script: string;
  args: string[];
  timeoutMs?: number;
}

const STEPS: Step[] = [
  { id: "engine", npm: "bench:engine", script: "engine.js", args: ["--no-peers", ...(opts.quick ? ["--quick"] : [])] },
  { id: "consume", npm: "bench:consume", script: "consume.js", args: ["--rows", "w3-20k,w3-100k", ...(opts.quick ? ["--quick"] : [])] },
  { id: "fanout", npm: "bench:fanout", script: "consume.js", args: ["--rows", "fanout-100,fanout-1000,fanout-10000", ...(opts.quick ? ["--quick"] : [])] },
  { id: "streams", npm: "bench:streams", script: "streams.js", args: opts.quick ? ["--streams", "2000"] : [] },
  // W1-W3 through ticker/client, in this process: what an application gets.
  { id: "client", npm: "bench:client", script: "client.js", args: opts.quick ? ["--events", "200000", "--quick"] : [] },
  // Latency for the plain Redis and NATS only: the AOF modes' W3 rows would add a minute per run.
  { id: "peers", npm: "bench:peers", script: "peers.js", args: ["--workloads", "W1,W2,W4,fsync", ...(opts.quick ? ["--quick"] : [])] },
  { id: "peers-w3", npm: "bench:peers", script: "peers.js", args: ["--workloads", "W3-20k,W3-100k", "--systems", "redis,nats", ...(opts.quick ? ["--quick"] : [])] },
  // One run of its own per run here. The first ever also loads its kept data set (~1.5 min) and walks
  // the timelines for their cursors (~5 min); later ones reuse both.
  // Issue 16: one node, then a 3-node cluster with PostgreSQL, on the same cores (~4 min; its own section).
  { id: "cluster", npm: "bench:cluster", script: "cluster.js", args: opts.quick ? ["--quick"] : [] },
  { id: "timelines", npm: "bench:timelines", script: "timelines.js", args: ["--runs", "1", ...(opts.quick ? ["--quick"] : [])], timeoutMs: 30 * 60_000 },
];
const steps = opts.steps ? STEPS.filter((s) => opts.steps!.split(",").includes(s.id)) : STEPS;

/** Runs one benchmark script to completion; its stdout goes to `log`, its stderr to ours. */
function runStep(step: Step, results: string, log: string): Promise<string | null> {
  return new Promise((resolve) => {
    const out: Buffer[] = [];
    const child = spawn(process.execPath, [join(WORKLOADS_DIST, step.script), ...step.args, "--results", results], { stdio: ["ignore", "pipe", "inherit"] });
    child.stdout.on("data", (c: Buffer) => out.push(c));
    const timer = setTimeout(() => child.kill("SIGTERM"), step.timeoutMs ?? STEP_TIMEOUT_MS);
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      writeFileSync(log, Buffer.concat(out));
      resolve(code === 0 ? null : `${step.id} ended with ${signal ?? `code ${code}`} (its output: ${basename(log)} in the step logs)`);
    });
  });
}

// ---- the report ------------------------------------------------------------------

interface Section {
  workload: Workload;
  title: string;
  what: string;
  /** Metrics shown as columns, in order; the first one is the headline. */
  metrics: string[];
}

const SECTIONS: Section[] = [
  { workload: "W1", title: "W1: publish 1,000,000 events of 100 bytes, batches of 1,000", what: "events/s, client-side wall time from first request to last answer", metrics: ["events/s", "server CPU s"] },
  { workload: "W2", title: "W2: replay them from the start", what: "events/s, every seq checked", metrics: ["events/s", "server CPU s"] },
  { workload: "W3-20k", title: "W3: publish-to-deliver latency at 20,000 events/s for 10 s", what: "ms, one consumer, every event's receive time minus its send stamp", metrics: ["p99 ms", "p50 ms", "p99.9 ms", "max ms", "server CPU cores"] },
  { workload: "W3-100k", title: "W3: the same at 100,000 events/s", what: "ms", metrics: ["p99 ms", "p50 ms", "p99.9 ms", "max ms", "server CPU cores"] },
  { workload: "W4", title: "W4: 10,000 streams x 10 events", what: "total time, server RSS after, data on disk", metrics: ["RSS MiB", "s", "disk MiB"] },
  { workload: "fanout-100", title: "Fan-out: 1 stream to 100 consumers at 1,000 events/s", what: "ms over all deliveries, server CPU", metrics: ["p99 ms", "p50 ms", "max ms", "server CPU cores"] },
  { workload: "fanout-1000", title: "Fan-out: 1 stream to 1,000 consumers at 1,000 events/s", what: "ms over all deliveries, server CPU", metrics: ["p99 ms", "p50 ms", "max ms", "server CPU cores"] },
  {
    workload: "fanout-10000",
    title: "Fan-out: 1 stream to 10,000 consumers at 100 events/s",
    what: "ms over all deliveries (consumers in 2 child processes), server and consumer-process CPU, server RSS at the end of the window",
    metrics: ["p99 ms", "p50 ms", "max ms", "server CPU cores", "client CPU cores", "server RSS MiB"],
  },
  {
    workload: "timelines",
    title: "Timelines: 25-event pages over 3 and 32 streams of 1,000,000 events each",
    what: "pages/s and each answer's latency (autocannon in the benchmark's process, cursors spread over the timeline both ways), server, front (main thread) and client CPU",
    metrics: ["pages/s", "p99 ms", "p50 ms", "server CPU cores", "front CPU cores", "client CPU cores"],
  },
  {
    workload: "ordered-ingest",
    title: "Ordered ingest: 1,000,000 events of 8 producers, 1% out of order, batches of 1,000",
    what: "events/s (8 requests in flight, one per producer) to a stream with `producer_ordering` and to a plain one, every event read back and checked; server CPU per event",
    metrics: ["events/s", "server CPU µs/event"],
  },
  { workload: "fsync", title: "Publish with every batch on disk before the answer", what: "events/s; Ticker `durability: fsync` (group commit) against Redis `appendfsync always`", metrics: ["events/s", "server CPU s"] },
];

function sectionTable(all: Series[], sec: Section): string[] {
  const rows = new Map<string, Map<string, Series>>();
  for (const s of all.filter((x) => x.workload === sec.workload)) {
    const key = `${s.system}\u0000${s.variant}`;
    if (!rows.has(key)) rows.set(key, new Map());
    rows.get(key)!.set(s.metric, s);
  }
  if (rows.size === 0) return [`_No measurements (the step failed or was not run)._`, ""];
  const headline = sec.metrics[0];
  const peer = bestPeer(all, sec.workload, headline);
  const order = [...rows.keys()].sort((a, b) => Number(!a.startsWith("Ticker\u0000")) - Number(!b.startsWith("Ticker\u0000")) || a.localeCompare(b));
  const lines = [`| System | Variant | ${sec.metrics.join(" | ")} | ${headline} vs best peer |`, `| --- | --- | ${sec.metrics.map(() => "---:").join(" | ")} | ---: |`];
  for (const key of order) {
    const [system, variant] = key.split("\u0000");
    const m = rows.get(key)!;
    const h = m.get(headline);
    const vs = h && peer && isTicker(h) ? fx(factor(h, peer)) : "";
    lines.push(`| ${system} | ${variant || "–"} | ${sec.metrics.map((k) => (m.get(k) ? seriesCell(m.get(k)!) : "")).join(" | ")} | ${vs} |`);
  }
  if (peer) lines.push("", `Best peer for ${headline}: ${peer.system}${peer.variant ? ` (${peer.variant})` : ""}. "vs best peer" above 1 means Ticker is better.`);
  return [...lines, ""];
}

const stepCommands = () => STEPS.map((st) => commandLine(st.npm, st.args));

function machine(): string[] {
  const version = (cmd: string) => {
    try {
      return execFileSync(cmd, ["--version"], { encoding: "utf8" }).trim().split("\n")[0];
    } catch {
      return "not installed";
    }
  };
  return [`- **Machine:** ${machineLine()}`, `- **Software:** Node ${process.version}; ${version("redis-server")}; ${version("nats-server")}`];
}


const seriesKey = (m: Measurement) => `${m.workload}|${m.system}|${m.variant ?? ""}|${m.metric}`;

function writeReport(all: Series[], facts: RunFacts): void {
  const { limits, limitsErr, failures, runtimeS, commit, command } = facts;
  const goals = GOALS.map((g) => ({ g, r: g.check(all) }));
  const lines = [
    "# Benchmarks",
    "",
    `Written by \`${command}\` (\`loadtest/reports/benchmarks.ts\`) on ${facts.date} at commit ${commit}: ${facts.runs} run${facts.runs > 1 ? "s" : ""} of every workload, Ticker and its peers in the same runs, ${Math.round(runtimeS / 60)} min in all. Figures are medians with min–max over the runs. Do not edit by hand: the prose on what limits each figure lives in \`docs/bench-analysis.md\` and is appended below. Speeds are never asserted in tests; they live here.`,
    ...(facts.reruns ?? []).map(
      (r) =>
        `- **Re-run on ${r.date} at commit ${r.commit}** (\`${r.command}\`, ${r.runs} run${r.runs > 1 ? "s" : ""}): the steps ${r.steps.map((x) => `\`${x}\``).join(", ")}; their series replace the earlier ones, all other figures are from the run above. Ratios between series of these steps are from the same runs.`,
    ),
    "",
    ...(facts.machine ?? machine()),
    `- **Steps of each run** (each also runs alone): ${(facts.steps ?? stepCommands()).map((c) => `\`${c}\``).join(", ")}; machine limits: \`npm run bench:limits\`.`,
    `- **Each run's full reports:** [results/bench-engine-latest.md](results/bench-engine-latest.md), [results/bench-consume-latest.md](results/bench-consume-latest.md), [results/bench-fanout-latest.md](results/bench-fanout-latest.md) (last run); raw measurements of all runs: [results/bench-results.jsonl](results/bench-results.jsonl).`,
    "",
    "## Goals",
    "",
    "| Goal | Measured | Met |",
    "| --- | --- | --- |",
    ...goals.map(({ g, r }) => `| ${g.text} | ${r.measured} | ${r.met === null ? "not measured" : r.met ? "yes" : "**no**"} |`),
    "",
    "## Machine limits (native-bench, measured in the same run)",
    "",
    ...(limits ? [limitsTable(limits), ""] : [`_Not measured: ${limitsErr}_`, ""]),
  ];
  for (const sec of SECTIONS) lines.push(`## ${sec.title}`, "", `${sec.what}.`, "", ...sectionTable(all, sec));
  lines.push(...clusterSection(all, facts));
  // Every metric of a row carries the row's note: list each once.
  const notes = [...new Set(all.filter((s) => s.notes.length > 0).map((s) => `- ${s.workload}, ${s.system}${s.variant ? ` (${s.variant})` : ""}: ${s.notes.join("; ")}`))];
  if (notes.length > 0) lines.push("## Notes from the runs", "", ...notes, "");
  if (failures.length > 0) lines.push("## Steps that failed", "", ...failures.map((f) => `- ${f}`), "");
  if (existsSync(ANALYSIS)) lines.push(includeProse(ANALYSIS, REPORT).trim(), "");
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(REPORT, lines.join("\n"));
}

async function main(): Promise<void> {
  if (opts["report-only"]) {
    writeReport(aggregate(readResults(RESULTS)), JSON.parse(readFileSync(RUN_FACTS, "utf8")) as RunFacts);
    console.error(`bench: ${repoRelative(REPORT)} rewritten from ${repoRelative(RESULTS)}`);
    return;
  }
  const t0 = performance.now();
  const dir = mkdtempSync(join(tmpdir(), "ticker-bench-all-"));
  const results = join(dir, "results.jsonl");
  writeFileSync(results, "");
  const failures: string[] = [];
  let limits: MachineLimits | null = null;
  let limitsErr: string | null = null;
  try {
    console.error("bench: machine limits");
    try {
      limits = await measureLimits();
    } catch (err) {
      limitsErr = (err as Error).message.split("\n")[0];
    }
    for (let run = 1; run <= RUNS; run++) {
      for (const step of steps) {
        console.error(`bench: run ${run}/${RUNS}: ${step.id}`);
        const failed = await runStep(step, results, join(dir, `${step.id}-${run}.log`));
        if (failed) failures.push(`run ${run}: ${failed}`);
      }
    }
    const facts: RunFacts = {
      machine: machine(),
      steps: stepCommands(),
      limits,
      limitsErr,
      failures,
      runtimeS: (performance.now() - t0) / 1000,
      runs: RUNS,
      commit: commit(),
      command: commandLine("bench"),
      date: new Date().toISOString().slice(0, 10),
    };
    mkdirSync(RESULTS_DIR, { recursive: true });
    if (opts.merge) {
      const fresh = readResults(results);
      const replaced = new Set(fresh.map(seriesKey));
      const kept = readResults(RESULTS).filter((m) => !replaced.has(seriesKey(m)));
      writeFileSync(RESULTS, [...kept, ...fresh].map((m) => `${JSON.stringify(m)}\n`).join(""));
      const earlier = JSON.parse(readFileSync(RUN_FACTS, "utf8")) as RunFacts;
      earlier.reruns = [
        ...(earlier.reruns ?? []),
        { date: facts.date, commit: facts.commit, command: facts.command, runs: RUNS, steps: steps.map((st) => st.id), machine: facts.machine },
      ];
      earlier.failures = [...earlier.failures, ...failures];
      Object.assign(facts, earlier);
      // The machine as it is now: limits measured in this run replace the earlier run's (which may lack newer figures).
      if (limits) Object.assign(facts, { limits, limitsErr: null });
    } else writeFileSync(RESULTS, readFileSync(results));
    writeFileSync(RUN_FACTS, JSON.stringify(facts, null, 2) + "\n");
    const all = aggregate(readResults(RESULTS));
    writeReport(all, facts);
    console.error(`bench: ${repoRelative(REPORT)} written (${all.length} series, ${failures.length} failed steps) in ${((performance.now() - t0) / 60_000).toFixed(1)} min`);
  } finally {
    // Keep the logs of failed steps for a look; otherwise clean up.
    if (failures.length === 0) rmSync(dir, { recursive: true, force: true });
    else console.error(`bench: step logs kept in ${dir}`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
