// Small files replaced whole, so that a crash at any instant (kill -9, power
// loss) leaves either the old text or the new one, never a mix: the new
// text goes to `<file>.tmp`, is fsynced, renamed over the file, and the
// directory is fsynced so the rename itself is on disk before the caller
// answers. Used for the cursor secrets and for named timelines, both rare
// control-plane writes.
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { open, rename, rm } from "node:fs/promises";
import { dirname } from "node:path";

/** A file name ends in this while it is being written; loaders skip (and may remove) such leftovers. */
export const TMP_SUFFIX = ".tmp";
const tmpOf = (path: string) => `${path}${TMP_SUFFIX}`;

/** Replaces `path` with `text` (mode applies to the new file). Blocks on two fsyncs: start-up and rare admin calls only. */
export function writeFileAtomicSync(path: string, text: string, mode = 0o644): void {
  const tmp = tmpOf(path);
  // A tmp left by a crash is stale; "wx" below then creates it with `mode`.
  rmSync(tmp, { force: true });
  try {
    const fd = openSync(tmp, "wx", mode);
    try {
      writeFileSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  fsyncDirSync(dirname(path));
}

/** The same, without blocking the event loop on the fsyncs. Callers serialise writes to one path. */
export async function writeFileAtomic(path: string, text: string, mode = 0o644): Promise<void> {
  const tmp = tmpOf(path);
  await rm(tmp, { force: true });
  try {
    const fh = await open(tmp, "wx", mode);
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(dirname(path));
}

/** Makes a rename or unlink in `dir` durable. */
export function fsyncDirSync(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
