// What every report prints: figures formatted one way, markdown tables, the
// facts of the run (date, machine, commit, and the command as a reader types
// it at the repository root), and where generated files go: docs/results/,
// apart from the prose in docs/, with no path of the machine that made them.
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, release, tmpdir, totalmem } from "node:os";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import { REPO_ROOT } from "../../test/harness/process.js";

export const DOCS_DIR = join(REPO_ROOT, "docs");
/** Every generated report, chart and result log. */
export const RESULTS_DIR = join(DOCS_DIR, "results");

// ---- figures -------------------------------------------------------------------

export const int = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "?");
export const f1 = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : "?");
export const f2 = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : "?");
export const mib = (bytes: number) => bytes / 2 ** 20;

/** Milliseconds: 3 decimals under 1, 2 under 100, none above. */
export function ms(v: number): string {
  if (!Number.isFinite(v)) return "?";
  return v < 1 ? v.toFixed(3) : v < 100 ? v.toFixed(2) : Math.round(v).toLocaleString("en-US");
}

/** Text for a table cell: a `|` would end the cell. */
export const cell = (s: string) => s.replaceAll("|", "\\|");

/** A markdown table; `align` "r" right-aligns a column (figures). */
export function table(head: string[], align: ("l" | "r")[], rows: string[][]): string {
  return [`| ${head.join(" | ")} |`, `|${align.map((a) => (a === "r" ? "---:" : "---")).join("|")}|`, ...rows.map((r) => `| ${r.join(" | ")} |`)].join("\n");
}

// ---- the run -------------------------------------------------------------------

export function git(args: string[]): string {
  try {
    return execFileSync("git", args, { cwd: REPO_ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return "";
  }
}

/** The commit measured, and whether src/ had changes on top of it. */
export function commit(): string {
  const dirty = git(["status", "--porcelain", "--untracked-files=no", "src"]);
  return (git(["rev-parse", "--short", "HEAD"]) || "unknown") + (dirty ? " (plus uncommitted changes under src/)" : "");
}

export interface MachineFacts {
  date: string;
  cpuModel: string;
  cores: number;
  memoryBytes: number;
  kernel: string;
  node: string;
  commit: string;
  /** The file system the benchmarks' data dirs are on (the temp dir's), e.g. "ext4" or "tmpfs". */
  dataFs: string;
}

export function machineFacts(): MachineFacts {
  let dataFs = "unknown";
  try {
    dataFs = execFileSync("findmnt", ["-n", "-o", "FSTYPE", "-T", tmpdir()], { encoding: "utf8" }).trim() || dataFs;
  } catch {
    // Not fatal: a fact we can do without.
  }
  return {
    date: new Date().toISOString(),
    cpuModel: cpus()[0]?.model.trim() ?? "unknown",
    cores: cpus().length,
    memoryBytes: totalmem(),
    kernel: `Linux ${release()}`,
    node: process.version,
    commit: commit(),
    dataFs,
  };
}

/** One line on the machine, as the reports open with it. */
export function machineLine(m = machineFacts()): string {
  return `${m.cores} cores (${m.cpuModel}), ${(m.memoryBytes / 2 ** 30).toFixed(0)} GiB RAM, ${m.kernel}, data dirs on ${m.dataFs}`;
}

/**
 * How this run was started, as a reader would type it at the repository
 * root: `npm run <script> -- <args>`. `--results <file>` is left out (how
 * `npm run bench` collects its steps' figures, not what a reader runs), and
 * a path inside the checkout is given relative to it.
 */
export function commandLine(npmScript: string, argv = process.argv.slice(2)): string {
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--results") {
      i++;
      continue;
    }
    args.push(isAbsolute(argv[i]) && !relative(REPO_ROOT, argv[i]).startsWith("..") ? relative(REPO_ROOT, argv[i]) || "." : argv[i]);
  }
  return `npm run ${npmScript}${args.length > 0 ? ` -- ${args.join(" ")}` : ""}`;
}

/** A path as the reports name it: relative to the repository root. */
export const repoRelative = (path: string) => relative(REPO_ROOT, path);

/**
 * Prose kept by hand in docs/ (`docs/bench-analysis.md`), as included in a
 * generated file under docs/results/: its relative links re-pointed, so that
 * they work from both places.
 */
export function includeProse(file: string, into: string): string {
  const from = dirname(file);
  return readFileSync(file, "utf8").replace(/\]\(([^)\s]+)\)/g, (whole, target: string) => {
    if (/^([a-z]+:|#|\/)/.test(target)) return whole;
    return `](${relative(dirname(into), resolve(from, target))})`;
  });
}

/** Prints a workload's markdown report and keeps it as `path` (docs/results/...); says where, with `extra` after. */
export function writeReport(path: string, report: string, extra = ""): void {
  process.stdout.write(report);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, report);
  console.error(`report written to ${relative(REPO_ROOT, path)}${extra}`);
}
