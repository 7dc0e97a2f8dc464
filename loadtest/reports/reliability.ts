// `npm run test:faults`: runs the fault and property tests at their long
// scale (TICKER_FAULTS=long) and rewrites docs/RELIABILITY.md from
// the rows they record (test/faults/scale.ts), with the prose of
// docs/reliability-notes.md after them. Bounded: the run is stopped after
// FAULTS_RUN_MS_MAX.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ReliabilityRow } from "../../test/faults/scale.js";
import { REPO_ROOT } from "../../test/harness/process.js";
import { DOCS_DIR, includeProse, repoRelative, RESULTS_DIR } from "../lib/report.js";

const REPORT = join(DOCS_DIR, "RELIABILITY.md");
const NOTES = join(DOCS_DIR, "reliability-notes.md");

const FAULTS_RUN_MS_MAX = 20 * 60_000;

type Row = ReliabilityRow;

function main(): void {
  const results = join(mkdtempSync(join(tmpdir(), "ticker-faults-")), "results.jsonl");
  const t0 = Date.now();
  const run = spawnSync("npx", ["vitest", "run", "--config", "vitest.faults.config.ts", ...process.argv.slice(2)], {
    cwd: REPO_ROOT,
    stdio: "inherit",
    env: { ...process.env, TICKER_FAULTS: "long", TICKER_RELIABILITY_RESULTS: results },
    timeout: FAULTS_RUN_MS_MAX,
  });
  const minutes = ((Date.now() - t0) / 60_000).toFixed(1);
  const rows: Row[] = existsSync(results) ? readFileSync(results, "utf8").trim().split("\n").filter(Boolean).map((l) => JSON.parse(l)) : [];
  rmSync(dirname(results), { recursive: true, force: true });
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(REPORT, render(rows, run.status === 0, minutes));
  console.log(`${repoRelative(REPORT)}: ${rows.length} rows (${minutes} min, vitest ${run.status === 0 ? "passed" : `failed: ${run.status ?? run.signal}`})`);
  process.exit(run.status ?? 1);
}

export function render(rows: Row[], passed: boolean, minutes: string): string {
  const fmt = (n: number) => n.toLocaleString("en-US");
  const extra = (r: Row) =>
    [...Object.entries(r.other ?? {}).map(([k, v]) => `${k}: ${fmt(v)}`), ...Object.entries(r.bounds ?? {}).map(([k, v]) => `${k}: ${typeof v === "number" ? fmt(v) : v}`)].join("; ");
  const lines = [
    "# Reliability",
    "",
    "What the fault suite did to Ticker and what it found. Written by `npm run test:faults`",
    "(the fault and property tests of `test/faults/` at their long scale); `npm test` runs the same",
    "tests at a short scale. Every row is a class of fault or input; a case is one cycle, one damaged",
    "data dir or one request. *Lost* counts acknowledged events missing after the fault, *duplicates*",
    "events read twice, *gaps* missing seqs: every one must be 0.",
    "",
    `Run: ${new Date().toISOString().slice(0, 10)}, ${minutes} min, vitest ${passed ? "passed" : "**failed**"}; ` +
      `${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}.`,
    "",
    "| Fault or input | Setup | Cases | Survived | Acked events | Lost | Duplicates | Gaps | Other counts and bounds |",
    "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ...rows.map((r) => `| ${r.fault} | ${r.setup} | ${fmt(r.cases)} | ${fmt(r.survived)} | ${fmt(r.acked)} | ${fmt(r.lost)} | ${fmt(r.duplicates)} | ${fmt(r.gaps)} | ${extra(r)} |`),
    "",
  ];
  if (existsSync(NOTES)) lines.push(includeProse(NOTES, REPORT));
  return lines.join("\n");
}

// Run only as the command: imported, it only renders.
if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) main();
