// stream-copies.log: the second copy of every stream's description, one
// line a write (`<directory name>\t<sealed stream.json text>\n`) in the data
// dir beside streams/. It was a stream.json.bak in each stream directory: a
// fourth inode for every stream, a quarter of what creating one costs
// (docs/decisions.md, "Many streams"). Appended by every shard thread, each
// through its own O_APPEND descriptor: a line is one write(2), which Linux
// places whole at the end. Read only when a stream.json is damaged, and
// rewritten at start-up, before the shards open, once most of its lines are
// stale (updates, deleted streams).
import { closeSync, existsSync, fdatasyncSync, openSync, readdirSync, readFileSync, renameSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { syncDir } from "../log/segment.js";
import { sealedIntact } from "./stream-meta.js";

export const COPIES_FILE = "stream-copies.log";

export class StreamCopies {
  // Opened with the shard: a fixed fd, not one that appears with the first stream.
  private fd: number;
  /** A write failed part-way: the next line starts on a line of its own. */
  private torn = false;
  /** Directory name -> newest intact copy, read from the file on the first lookup. */
  private found: Map<string, string> | null = null;

  constructor(private readonly path: string) {
    this.fd = openSync(path, "a");
  }

  /** Appends `text` as `dirName`'s copy; fdatasynced for an fsync stream (its description is durable before its events are). */
  append(dirName: string, text: string, durable: boolean): void {
    const line = `${this.torn ? "\n" : ""}${dirName}\t${text}\n`;
    const bytes = Buffer.byteLength(line);
    let written = 0;
    try {
      written = writeSync(this.fd, line);
    } finally {
      this.torn = written !== bytes;
    }
    if (this.torn) throw new Error(`${this.path}: short write (${written} of ${bytes} bytes)`);
    if (durable) fdatasyncSync(this.fd);
    this.found?.set(dirName, text);
  }

  /** The newest intact copy written for `dirName`, or null. */
  lookup(dirName: string): string | null {
    this.found ??= readCopies(this.path).copies;
    return this.found.get(dirName) ?? null;
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}

/** The file's newest intact line per directory name, and how many lines were damaged. */
function readCopies(path: string): { copies: Map<string, string>; lines: number; damaged: number } {
  const copies = new Map<string, string>();
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { copies, lines: 0, damaged: 0 };
    throw err;
  }
  let lines = 0;
  let damaged = 0;
  for (const line of text.split("\n")) {
    if (line === "") continue;
    lines++;
    const tab = line.indexOf("\t");
    if (tab > 0 && sealedIntact(line.slice(tab + 1))) copies.set(line.slice(0, tab), line.slice(tab + 1));
    else damaged++;
  }
  return { copies, lines, damaged };
}

/**
 * Start-up, before any shard writes: rewrites the file with one line per
 * stream directory when fewer than half its lines are live (or some are
 * damaged). A stream whose newest line is damaged gets its stream.json as
 * the copy again, when that is intact. Returns what was found damaged.
 */
export function compactCopies(dataDir: string, metaFile: string): string[] {
  const path = join(dataDir, COPIES_FILE);
  const { copies, lines, damaged } = readCopies(path);
  if (lines === 0) return [];
  const root = join(dataDir, "streams");
  const dirs = existsSync(root) ? readdirSync(root) : [];
  const live = new Map<string, string>();
  for (const name of dirs) {
    const copy = copies.get(name);
    if (copy !== undefined) live.set(name, copy);
    else if (damaged > 0) {
      const own = readIntact(join(root, name, metaFile));
      if (own !== null) live.set(name, own);
    }
  }
  if (damaged === 0 && live.size * 2 >= lines) return [];
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, [...live].map(([name, t]) => `${name}\t${t}\n`).join(""));
  const fd = openSync(tmp, "r");
  try {
    fdatasyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  syncDir(dataDir);
  return damaged > 0 ? [`${COPIES_FILE}: ${damaged} damaged lines dropped, their streams' stream.json copied again`] : [];
}

function readIntact(path: string): string | null {
  try {
    const t = readFileSync(path, "utf8");
    return sealedIntact(t) ? t : null;
  } catch {
    return null;
  }
}
