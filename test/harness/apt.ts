// Installing what a bare machine lacks (../shared/ENVIRONMENT.md: PostgreSQL
// is there, Redis, NATS and a C compiler may not be), one apt-get at a time
// on the whole machine whoever asks (a test file, a benchmark); and which
// version of a daemon is installed, for the reports.
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { lastLine, onPath, run } from "./process.js";

const APT_LOCK_PATH = join(tmpdir(), "ticker-test-apt.lock");
const APT_LOCK_WAIT_MS_MAX = 10 * 60_000;
/** apt-get update and install together; a dead mirror must not hold a run for longer. */
const APT_TIMEOUT_MS = 10 * 60_000;

const isRoot = process.getuid?.() === 0;
let aptUpdated = false;

/**
 * Installs Debian packages unless `check` (a shell test) already passes. The
 * check runs again under flock(1) on a machine-wide lock file: vitest runs test
 * files in parallel processes, two apt-gets must never overlap, and one process
 * may install what the other was waiting for. The kernel drops the lock when its
 * holder dies, so a killed run leaves nothing stale behind. `recommends: false`
 * installs the packages' dependencies only.
 */
export async function aptInstall(packages: string[], check: string, opts: { recommends?: boolean } = {}): Promise<void> {
  if (!isRoot) throw new Error(`missing ${packages.join(", ")}, and not root: apt-get install -y ${packages.join(" ")}`);
  const update = aptUpdated ? "" : "apt-get -o DPkg::Lock::Timeout=300 update && ";
  // Recommends can be daemons of their own (prometheus recommends node-exporter, which listens).
  const recommends = opts.recommends === false ? "--no-install-recommends " : "";
  const install = `apt-get -o DPkg::Lock::Timeout=300 install -y ${recommends}${packages.join(" ")}`;
  const script = `${check} || { ${update}${install}; }`;
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const r = await run("flock", ["-w", String(APT_LOCK_WAIT_MS_MAX / 1000), APT_LOCK_PATH, "sh", "-c", script], APT_TIMEOUT_MS, { env });
  aptUpdated = true;
  if (!(await run("sh", ["-c", check], 10_000)).ok) throw new Error(`apt-get install -y ${packages.join(" ")} failed: ${lastLine(r.out) || "no output"}`);
}

/**
 * `binary`'s path, installing Debian package `pkg` first when it is not on
 * PATH. When it had to install, it flushes what dpkg wrote (so its writeback
 * does not land inside a timed benchmark row) and says so in `notes`.
 */
export async function ensureBinary(binary: string, pkg: string, notes?: string[]): Promise<string> {
  const found = onPath(binary);
  if (found) return found;
  console.error(`${binary} not on PATH: apt-get install -y ${pkg}`);
  const t0 = performance.now();
  await aptInstall([pkg], `command -v ${binary} >/dev/null`);
  await run("sync", [], 60_000);
  notes?.push(`${binary} was not installed: installed with apt-get in ${((performance.now() - t0) / 1000).toFixed(0)} s, before any row was timed.`);
  return onPath(binary)!;
}

export interface DaemonVersion {
  /** "7.0.15" */
  number: string;
  /** All of `<binary> --version`: build, allocator and sha are part of what was measured. */
  line: string;
  binary: string;
  /** The Debian package's version, when dpkg knows it. */
  debian: string | null;
}

/** `binary --version`, its version number (the first group of `pattern`), and the Debian package `pkg`'s version. */
export async function daemonVersion(binary: string, pkg: string, pattern: RegExp): Promise<DaemonVersion> {
  const r = await run(binary, ["--version"], 10_000);
  const v = pattern.exec(r.out)?.[1];
  if (!r.ok || !v) throw new Error(`${pkg} --version: ${lastLine(r.out)}`);
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own format string
  const dpkg = await run("dpkg-query", ["-W", "-f", "${Version}", pkg], 10_000);
  return { number: v, line: lastLine(r.out), binary, debian: dpkg.ok && dpkg.out ? dpkg.out : null };
}
