// The descriptions of the data dir's streams (stream.json's text, sealed with
// its CRC), two files of lines `<directory name>\t<text>\n` beside streams/:
// stream-descriptions.log and its copy stream-descriptions.copy.log. Each
// was a file in every stream directory (stream.json and stream.json.bak),
// two of the four inodes a stream was made of, and an inode is what creating
// a stream costs here (docs/decisions.md, "Many streams"): a line appended to
// an open file is not. Each shard thread appends through its own O_APPEND
// descriptors (a line is one write(2), which Linux places whole at the end);
// a shard reads the main file once, at start (keeping its own streams'
// lines until recovery is done), and the copy only when a line of the main
// one is damaged or missing. Start-up rewrites both, before the shards open,
// once most lines are stale (updates, deleted streams) or the two differ.
import { closeSync, existsSync, fdatasyncSync, fstatSync, openSync, readdirSync, readSync, renameSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { syncDir } from "../log/segment.js";
import { crc32 } from "node:zlib";

export const MAIN_FILE = "stream-descriptions.log";
export const COPY_FILE = "stream-descriptions.copy.log";

/** A JSON object's text with the CRC of that text as its last key: what sealedIntact() checks. */
export function seal(body: string): string {
  return `${body.slice(0, -1)},"crc32":${crc32(body)}}`;
}

/** The text ends with the CRC of what precedes it, and they agree (no parse: compaction checks every line). */
export function sealedIntact(text: string): boolean {
  const sealed = SEAL.exec(text);
  return sealed !== null && crc32(`${text.slice(0, sealed.index)}}`) === Number(sealed[1]);
}

export const SEAL = /,"crc32":(\d+)\}$/;

/** One of the two files: appended through a descriptor opened with the shard (a fixed fd). */
class DescriptionFile {
  private fd: number;
  /** A write failed part-way: the next line starts on a line of its own. */
  private torn = false;
  /** Directory name -> newest intact text, read from the file on the first lookup. */
  private found: Map<string, string> | null = null;

  constructor(
    readonly path: string,
    private readonly keep: (dirName: string) => boolean,
  ) {
    this.fd = openSync(path, "a+");
    // A file that ends inside a line (a write cut by a full disk, a crash
    // of the machine): the next line must not be glued to it.
    const size = fstatSync(this.fd).size;
    const last = Buffer.alloc(1);
    this.torn = size > 0 && readSync(this.fd, last, 0, 1, size - 1) === 1 && last[0] !== 10;
  }

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

  /** Drops what lookup read: it serves recovery, and at 100,000 streams it is ~30 MB a shard. */
  forget(): void {
    this.found = null;
  }

  lookup(dirName: string): string | undefined {
    this.found ??= readLines(this.path, this.keep).texts;
    return this.found.get(dirName);
  }

  /** Synced first: a clean stop leaves every description on disk, as it does every segment. */
  close(): void {
    if (this.fd < 0) return;
    try {
      fdatasyncSync(this.fd);
    } finally {
      closeSync(this.fd);
      this.fd = -1;
    }
  }
}

/** What the files hold for one stream directory; a copy's text only when the main one is damaged or missing. */
export interface DescriptionTexts {
  main: string | undefined;
  copy: () => string | undefined;
}

export class Descriptions {
  private readonly main: DescriptionFile;
  private readonly copy: DescriptionFile;

  /** `keep`: the directory names whose lines a lookup may ask for (a shard's own streams); the others' are not kept. */
  constructor(dataDir: string, keep: (dirName: string) => boolean = () => true) {
    this.main = new DescriptionFile(join(dataDir, MAIN_FILE), keep);
    this.copy = new DescriptionFile(join(dataDir, COPY_FILE), keep);
  }

  /**
   * Appends `text` to both files, fdatasynced for an fsync stream (its
   * description is durable before its events are). The copy first: a write
   * refused by a full disk after the copy took its line leaves the main file
   * as it was, so the change the caller was refused is not there after a
   * restart either (start-up finds the files' line counts apart and rewrites
   * both from the main one). Main first, a refused change would come back
   * from the main file.
   */
  write(dirName: string, text: string, durable: boolean): void {
    this.copy.append(dirName, text, durable);
    this.main.append(dirName, text, durable);
  }

  texts(dirName: string): DescriptionTexts {
    return { main: this.main.lookup(dirName), copy: () => this.copy.lookup(dirName) };
  }

  /** Either file has a line for the directory (one made by mkdir and never described has none). */
  has(dirName: string): boolean {
    return this.main.lookup(dirName) !== undefined || this.copy.lookup(dirName) !== undefined;
  }

  /** Recovery is done: nothing is looked up again until the next start. */
  forget(): void {
    this.main.forget();
    this.copy.forget();
  }

  close(): void {
    this.main.close();
    this.copy.close();
  }
}

/** Bytes read at a time: a file of 100,000 streams is ~27 MB, and no buffer or string of all of it is made. */
const CHUNK_BYTES = 1 << 20;

/** Calls `fn` with each line's bounds (newline excluded) in `buf`, valid during the call; a last line without its newline too. */
function eachLine(path: string, fn: (buf: Buffer, start: number, end: number) => void): void {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  try {
    let buf = Buffer.allocUnsafe(CHUNK_BYTES);
    let kept = 0; // bytes of a line begun in the last chunk, at the start of buf
    for (;;) {
      if (kept === buf.length) buf = Buffer.concat([buf, Buffer.allocUnsafe(buf.length)]); // a line longer than buf
      const n = readSync(fd, buf, kept, buf.length - kept, null);
      const end = kept + n;
      let start = 0;
      for (let nl = buf.indexOf(10, kept); nl >= 0 && nl < end; nl = buf.indexOf(10, start)) {
        fn(buf, start, nl);
        start = nl + 1;
      }
      if (n === 0) {
        if (start < end) fn(buf, start, end);
        return;
      }
      buf.copy(buf, 0, start, end);
      kept = end - start;
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * A file's newest intact text per directory name (of the names `keep`
 * takes), how many lines it has and how many were damaged.
 */
function readLines(path: string, keep: (dirName: string) => boolean = () => true): { texts: Map<string, string>; lines: number; damaged: number } {
  const texts = new Map<string, string>();
  let lines = 0;
  let damaged = 0;
  eachLine(path, (buf, start, end) => {
    if (start === end) return;
    lines++;
    const tab = buf.indexOf(9, start);
    if (tab <= start || tab >= end) {
      damaged++;
      return;
    }
    const name = buf.toString("latin1", start, tab);
    if (!keep(name)) return;
    const text = buf.toString("utf8", tab + 1, end);
    if (sealedIntact(text)) texts.set(name, text);
    else damaged++;
  });
  return { texts, lines, damaged };
}

/**
 * Start-up, before any shard writes: rewrites both files with one line per
 * stream directory when more than half their lines are stale, or when they
 * hold different numbers of lines (they are appended in pairs: one was cut
 * or damaged). Each stream's text comes from a file without damage when
 * there is one (a damaged file's newest intact line for a stream may be an
 * older one). Returns what was found damaged, for the recovery log. A line
 * damaged in place is otherwise found by the shard that reads it: the
 * stream's open reports it and writes the description again.
 */
export function compactDescriptions(dataDir: string): string[] {
  const root = join(dataDir, "streams");
  const dirs = existsSync(root) ? readdirSync(root) : [];
  // Counted on the bytes: the main thread keeps no strings of a file it leaves alone.
  const mainLines = countLines(join(dataDir, MAIN_FILE));
  const copyLines = countLines(join(dataDir, COPY_FILE));
  if (mainLines === copyLines && mainLines <= dirs.length * 2) return [];
  const main = readLines(join(dataDir, MAIN_FILE));
  const copy = readLines(join(dataDir, COPY_FILE));
  const [first, second] = main.damaged === 0 || copy.damaged > 0 ? [main, copy] : [copy, main];
  const live = new Map<string, string>();
  for (const name of dirs) {
    const text = first.texts.get(name) ?? second.texts.get(name);
    if (text !== undefined) live.set(name, text);
  }
  const damage: string[] = [];
  if (mainLines !== copyLines) damage.push(`${MAIN_FILE} holds ${mainLines} lines and ${COPY_FILE} ${copyLines}: one was cut or torn`);
  if (main.damaged > 0) damage.push(`${MAIN_FILE}: ${main.damaged} damaged lines, rewritten from ${COPY_FILE}`);
  if (copy.damaged > 0) damage.push(`${COPY_FILE}: ${copy.damaged} damaged lines, rewritten from ${MAIN_FILE}`);
  const body = [...live].map(([name, t]) => `${name}\t${t}\n`).join("");
  for (const name of [MAIN_FILE, COPY_FILE]) rewrite(join(dataDir, name), body);
  syncDir(dataDir);
  return damage;
}

function countLines(path: string): number {
  let n = 0;
  eachLine(path, () => n++);
  return n;
}

function rewrite(path: string, body: string): void {
  writeFileSync(`${path}.tmp`, body);
  const fd = openSync(`${path}.tmp`, "r");
  try {
    fdatasyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(`${path}.tmp`, path);
}
