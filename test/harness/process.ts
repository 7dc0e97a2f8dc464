// How the harness runs and ends processes, for the tests and the benchmarks
// alike: the repository root, commands run for their output, a free loopback
// port (and a retry for losing it), stopping a pid (SIGTERM, then SIGKILL),
// and the one registry of the servers it started, so that a deadline or a
// signal can kill them all at once.
import { execFile } from "node:child_process";
import { accessSync, constants, existsSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

/**
 * The checkout: the first folder above this file with a package.json. Found,
 * not counted in "../", because this file runs from test/harness/ (vitest)
 * and from dist/test/harness/ (the compiled benchmarks).
 */
export const REPO_ROOT = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json")) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
})();

/** A free port can be taken by someone else between our probe and the server's bind. */
const START_ATTEMPTS_MAX = 3;

/** A server the harness started (Ticker, PostgreSQL, Redis, NATS): where it is and how to end it. */
export interface ServerProcess {
  url: string;
  port: number;
  pid: number;
  /** Where it keeps its data: Ticker's data dir (the caller's), or the temp dir a daemon was started in. */
  dir: string;
  /** Ends it (SIGTERM, SIGKILL as a last resort) and removes a daemon's temp dir; says how it ended ("SIGTERM: exited (…)"). */
  stop(): Promise<string>;
  /** Synchronous last resort for deadlines and signal handlers: SIGKILL, dir removed. */
  killNow(): void;
}

const live = new Set<ServerProcess>();

/** Registers a started server until `untrack`; killAllNow() ends whatever is registered. */
export function track<S extends ServerProcess>(s: S): S {
  live.add(s);
  return s;
}

export function untrack(s: ServerProcess): void {
  live.delete(s);
}

/** Kills every server the harness started and has not stopped (on a deadline, an error or a signal). */
export function killAllNow(): void {
  for (const s of [...live]) s.killNow();
}

/** Runs `cmd`, never throwing: whether it succeeded, and its stdout and stderr (or the error when there are none). */
export function run(
  cmd: string,
  args: string[],
  timeoutMs: number,
  opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<{ ok: boolean; out: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 64 << 20, ...opts }, (err, stdout, stderr) => {
      const out = `${stdout}${stderr}`.trim();
      resolve({ ok: !err, out: err && !out ? err.message : out });
    });
  });
}

export const lastLine = (s: string) =>
  s
    .split("\n")
    .filter((l) => l.trim() !== "")
    .at(-1) ?? "";

/** The path of `name` on PATH, or null. */
export function onPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    if (!dir) continue;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // Not in this directory.
    }
  }
  return null;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

/** Runs `start` on a free port, on another one when it fails (the port was taken meanwhile), START_ATTEMPTS_MAX times. */
export async function onFreePort<T>(start: (port: number) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start(await freePort());
    } catch (err) {
      if (attempt >= START_ATTEMPTS_MAX) throw err;
    }
  }
}

/** Sends a signal; false when the process is gone. */
export function signal(pid: number, sig: NodeJS.Signals | 0): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

/**
 * A daemon's parent is PID 1, which here reaps its zombies only every second
 * or two: a process that has exited but is not yet reaped counts as gone.
 */
export function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0 || !signal(pid, 0)) return false;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat[stat.lastIndexOf(")") + 2] !== "Z";
  } catch {
    return false;
  }
}

/** Resolves once `pid` is gone (polling: for a daemon, which is not our child). */
export async function whenGone(pid: number): Promise<string> {
  while (alive(pid)) await sleep(20);
  return "gone";
}

/**
 * SIGTERM, then SIGKILL if `exited` has not resolved within `graceMs`;
 * resolves with how it ended. `exited` says how the process ended ("code 0",
 * "signal SIGTERM", "gone").
 */
export async function terminate(pid: number, exited: Promise<string>, graceMs: number): Promise<string> {
  if (!signal(pid, "SIGTERM")) return `had already exited (${await exited})`;
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<null>((r) => (timer = setTimeout(() => r(null), graceMs)));
  const how = await Promise.race([exited, timedOut]).finally(() => clearTimeout(timer));
  if (how !== null) return `SIGTERM: exited (${how})`;
  signal(pid, "SIGKILL");
  await exited;
  return `SIGTERM ignored for ${graceMs} ms, SIGKILLed`;
}

/**
 * Whether terminate() ended the process the ordinary way: gone on SIGTERM,
 * with code 0 when `strict` (Ticker promises that; nats-server, for one,
 * shuts down cleanly and exits 1).
 */
export const stoppedCleanly = (how: string, strict = true): boolean =>
  strict ? /^SIGTERM: exited \((code 0|gone)\)$/.test(how) : how.startsWith("SIGTERM: exited (");
