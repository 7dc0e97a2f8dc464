// The data-dir lock: one process per data dir, by an exclusive flock(2) on <data dir>/LOCK.
// Two servers appending to the same
// segments lose acknowledged events, so `serve` takes an exclusive flock(2)
// on <data dir>/LOCK before it opens anything. The kernel drops the lock
// when the process dies however it dies, so a `kill -9` never leaves a stale
// lock that blocks the restart, and two processes can never both hold it
// (unlike a pid file, which has to guess whether its pid is still alive).
import { closeSync, ftruncateSync, mkdirSync, openSync, readFileSync, writeSync } from "node:fs";
import { join, resolve } from "node:path";
import fsExt from "fs-ext";

export const LOCK_FILE = "LOCK";

export class DataDirLockedError extends Error {
  constructor(
    readonly dir: string,
    readonly holderPid: number | null,
  ) {
    super(`data dir ${dir} is in use by another ticker process${holderPid ? ` (pid ${holderPid})` : ""}; stop it first or choose another --data-dir`);
  }
}

export interface DataDirLock {
  readonly path: string;
  release(): void;
}

/** Takes the data dir's lock or throws DataDirLockedError naming the holder. */
export function lockDataDir(dataDir: string): DataDirLock {
  const dir = resolve(dataDir);
  mkdirSync(dir, { recursive: true });
  const path = join(dir, LOCK_FILE);
  // Opened without truncating: the holder's pid must stay readable to a loser.
  const fd = openSync(path, "a+");
  try {
    fsExt.flockSync(fd, "exnb");
  } catch (err) {
    closeSync(fd);
    if ((err as NodeJS.ErrnoException).code === "EAGAIN" || (err as NodeJS.ErrnoException).code === "EWOULDBLOCK") {
      throw new DataDirLockedError(dir, holderPid(path));
    }
    throw err;
  }
  // The pid is for the message a second server prints; the flock is the truth.
  ftruncateSync(fd, 0);
  writeSync(fd, `${process.pid}\n`, 0);
  return {
    path,
    release: () => closeSync(fd), // closing the last fd of the file drops the flock
  };
}

function holderPid(path: string): number | null {
  try {
    const pid = Number.parseInt(readFileSync(path, "utf8"), 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}
