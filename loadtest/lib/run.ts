// How a benchmark runs: a deadline and signal handlers that clean up, temp
// dirs it can remove all at once, its main's exit code, and fresh servers
// for a set of rows (a failed start becomes those rows' errors, not the
// end of the run).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { killAllNow, stoppedCleanly, type ServerProcess } from "../../test/harness/process.js";

/** Temp dirs a benchmark made, so that an abort can remove them all. */
export class TempDirs {
  private readonly dirs = new Set<string>();
  constructor(private readonly prefix: string) {}
  make(): string {
    const dir = mkdtempSync(join(tmpdir(), this.prefix));
    this.dirs.add(dir);
    return dir;
  }
  remove(dir: string): void {
    rmSync(dir, { recursive: true, force: true });
    this.dirs.delete(dir);
  }
  removeAll(): void {
    for (const d of this.dirs) this.remove(d);
  }
}

const cleanups: (() => void)[] = [];

/** Adds a step to cleanupNow (temp dirs, child processes a benchmark keeps itself). */
export function onCleanup(step: () => void): void {
  cleanups.push(step);
}

/** For signals, deadlines and errors, when there is no time to stop cleanly: every server killed, every registered step run. */
export function cleanupNow(): void {
  killAllNow();
  for (const step of cleanups) step();
}

/**
 * Cleans up and exits if the benchmark outlives `deadlineMs` or gets
 * SIGINT / SIGTERM; returns the deadline timer, to clear when done.
 */
export function guardRun(name: string, deadlineMs: number): NodeJS.Timeout {
  const deadline = setTimeout(() => {
    console.error(`${name}: run exceeded ${deadlineMs / 60_000} minutes; killing servers and giving up`);
    cleanupNow();
    process.exit(1);
  }, deadlineMs);
  deadline.unref();
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.once(sig, () => {
      cleanupNow();
      process.exit(130);
    });
  }
  return deadline;
}

/** Runs a benchmark's main and exits with its code; on a throw, cleans up first. */
export function runMain(main: () => Promise<number>): void {
  main().then(
    (code) => process.exit(code),
    (err) => {
      cleanupNow();
      console.error(err);
      process.exit(1);
    },
  );
}

/** A row a benchmark could not measure: its name, and why. */
export type FailRow = (why: Error) => void;

/**
 * Runs `body` on a fresh server from `start` and stops it afterwards
 * (`stopped` hears how, when SIGTERM did not end it). A failed
 * start goes to `failed` instead, so the other rows still run.
 */
export async function onFreshServer<S extends ServerProcess>(
  start: () => Promise<S>,
  failed: FailRow,
  body: (s: S) => Promise<unknown>,
  stopped: (how: string) => void,
): Promise<void> {
  let server: S;
  try {
    server = await start();
  } catch (err) {
    failed(new Error(`server did not start: ${(err as Error).message}`));
    return;
  }
  try {
    await body(server);
  } finally {
    const how = await server.stop();
    if (!stoppedCleanly(how, false)) stopped(how);
  }
}

/** Rejects with `what` if `p` has not settled in `ms`. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms / 1000} s`)), ms))),
  ]).finally(() => clearTimeout(timer));
}
