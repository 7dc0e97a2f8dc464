// Machine limits: what this machine allows at best (memory copy, sequential
// disk write, append + fdatasync, loopback TCP in bytes and in small writes
// over many sockets), measured by a small C program (native-bench/limits.c and
// limits-sockets.c) so that a benchmark report can set Ticker's figures against
// the hardware's. See native-bench/README.md for what each figure is.
//
//   npm run bench:limits        # build, compile, measure: ~6 s of measuring
//
// The program is compiled with the system's `cc` into a fresh temp dir and
// measures disk on a directory in os.tmpdir(), the file system the other
// benchmarks' data dirs are on; the temp dir is removed afterwards.
import { execFile, type ChildProcess } from "node:child_process";
import { mkdirSync, realpathSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { z } from "zod";
import { aptInstall } from "../../test/harness/apt.js";
import { REPO_ROOT } from "../../test/harness/process.js";
import { table } from "../lib/report.js";
import type { MachineLimits } from "../lib/results.js";
import { guardRun, onCleanup, runMain, TempDirs } from "../lib/run.js";

const run = promisify(execFile);

const SOURCES = ["limits.c", "limits-sockets.c"].map((f) => join(REPO_ROOT, "native-bench", f));
const CC_ARGS = ["-O2", "-std=c11", "-pthread", "-Wall", "-Wextra"];
// The program bounds itself (a 20 s watchdog); these only catch a wedged child.
const COMPILE_TIMEOUT_MS = 60_000;
const MEASURE_TIMEOUT_MS = 30_000;
/** Compiling, an apt-get install of gcc and measuring, with room to spare. */
const RUN_DEADLINE_MS = 15 * 60_000;

const limitsSchema = z
  .object({
    memcpy_gib_s: z.number().finite().positive(),
    seq_write_mib_s: z.number().finite().positive(),
    fdatasync_per_s: z.number().finite().positive(),
    fdatasync_p50_ms: z.number().finite().positive(),
    fdatasync_p99_ms: z.number().finite().positive(),
    tcp_loopback_gbit_s: z.number().finite().positive(),
    socket_writes_per_s: z.number().finite().positive(),
    socket_write_us: z.number().finite().positive(),
  })
  .strict()
  .refine((l) => l.fdatasync_p50_ms <= l.fdatasync_p99_ms, "fdatasync p50 is above p99");

interface LimitsRun {
  limits: MachineLimits;
  /** The program's one line per phase (stderr): counts, durations, maxima. */
  detail: string[];
  wallS: number;
}

/** Programs and temp dirs of runs in progress, for the CLI's Ctrl-C. */
const liveChildren = new Set<ChildProcess>();
const tempDirs = new TempDirs("ticker-limits-");
// The program first, so it cannot write into a dir being removed.
onCleanup(() => {
  for (const c of liveChildren) c.kill("SIGKILL");
  tempDirs.removeAll();
});

function isMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === "ENOENT";
}

function failure(what: string, err: unknown): Error {
  const e = err as { stderr?: string; message?: string; killed?: boolean; signal?: string };
  const out = e.stderr?.trim() || e.message || String(err);
  return new Error(`limits: ${what}${e.killed ? ` (killed: ${e.signal ?? "timeout"})` : ""}:\n${out}`);
}

/** `cc` on PATH, or installed from Debian (gcc provides cc) when we are root. */
async function ensureCompiler(): Promise<void> {
  try {
    await run("cc", ["--version"]);
    return;
  } catch (err) {
    if (!isMissing(err)) throw failure("`cc --version` failed", err);
  }
  console.error("limits: `cc` not found; installing gcc from Debian (apt-get)");
  try {
    await aptInstall(["gcc"], "command -v cc >/dev/null");
  } catch (err) {
    throw new Error(`limits: no C compiler (\`cc\` is not on PATH) and none could be installed: ${(err as Error).message}; put a C11 \`cc\` on PATH and retry`);
  }
}

function parseLimits(stdout: string): MachineLimits {
  let json: unknown;
  try {
    json = JSON.parse(stdout);
  } catch {
    throw new Error(`limits: the program did not print one JSON object; it printed:\n${stdout}`);
  }
  const parsed = limitsSchema.safeParse(json);
  if (!parsed.success) {
    throw new Error(
      `limits: the program's JSON is not a valid MachineLimits: ${parsed.error.issues.map((i) => `${i.path.join(".") || "(object)"}: ${i.message}`).join("; ")}\n${stdout}`,
    );
  }
  return parsed.data;
}

async function measureWithDetail(): Promise<LimitsRun> {
  await ensureCompiler();
  const dir = tempDirs.make();
  try {
    const bin = join(dir, "limits");
    const data = join(dir, "data");
    mkdirSync(data);
    try {
      await run("cc", [...CC_ARGS, "-o", bin, ...SOURCES], { timeout: COMPILE_TIMEOUT_MS });
    } catch (err) {
      throw failure("compiling native-bench/limits.c and limits-sockets.c failed", err);
    }
    const t0 = performance.now();
    let out: { stdout: string; stderr: string };
    const measuring = run(bin, [data], { timeout: MEASURE_TIMEOUT_MS, killSignal: "SIGKILL" });
    liveChildren.add(measuring.child);
    try {
      out = await measuring;
    } catch (err) {
      throw failure("the measurement failed", err);
    } finally {
      liveChildren.delete(measuring.child);
    }
    const wallS = (performance.now() - t0) / 1000;
    const detail = out.stderr.split("\n").filter((l) => l.trim() !== "");
    return { limits: parseLimits(out.stdout), detail, wallS };
  } finally {
    tempDirs.remove(dir);
  }
}

/** Measures this machine's limits (~6 s; compiles native-bench/limits.c with `cc`, installing gcc if root and missing). */
export async function measureLimits(): Promise<MachineLimits> {
  return (await measureWithDetail()).limits;
}

/** The limits as a markdown table: what was measured, and how. */
export function limitsTable(l: MachineLimits): string {
  return table(
    ["limit", "value", "how"],
    ["l", "r", "l"],
    [
      ["memcpy", `${l.memcpy_gib_s.toFixed(2)} GiB/s`, "64 MiB buffers, best of 5 passes of 0.1 s"],
      ["sequential write", `${l.seq_write_mib_s.toFixed(0)} MiB/s`, "256 MiB in 1 MiB writes, then fdatasync (timed)"],
      ["append + fdatasync", `${l.fdatasync_per_s.toFixed(0)} /s`, "4 KiB appends, each followed by fdatasync, ~2 s"],
      ["append + fdatasync p50", `${l.fdatasync_p50_ms.toFixed(3)} ms`, ""],
      ["append + fdatasync p99", `${l.fdatasync_p99_ms.toFixed(3)} ms`, ""],
      ["loopback TCP", `${l.tcp_loopback_gbit_s.toFixed(2)} Gbit/s`, "1 GiB over 127.0.0.1 in 256 KiB writes"],
      [
        "small socket writes",
        `${l.socket_writes_per_s.toFixed(0)} /s`,
        "one thread, 200 B to each of 1,000 loopback sockets in turn (TCP_NODELAY, non-blocking), best of 3 passes of 0.5 s",
      ],
      ["small socket write", `${l.socket_write_us.toFixed(3)} µs`, ""],
    ],
  );
}

async function main(): Promise<number> {
  const deadline = guardRun("limits", RUN_DEADLINE_MS);
  const { limits, detail, wallS } = await measureWithDetail();
  process.stdout.write(`${JSON.stringify(limits)}\n\n${limitsTable(limits)}\n`);
  for (const line of detail) console.error(line);
  console.error(`limits: measured in ${wallS.toFixed(1)} s (disk: ${tmpdir()})`);
  clearTimeout(deadline);
  return 0;
}

function runDirectly(): boolean {
  try {
    return !!process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
  } catch {
    return false; // argv[1] is not a file (node -e, a REPL): imported, not run
  }
}

if (runDirectly()) runMain(main);
