// The reader positions of one named timeline in its directory:
// `readers.log`, an append-only file of CRC-framed (reader, cursor,
// updated_at) records, the last one of a reader winning. A position is one
// pwrite, so it survives a crash of the process as soon as it is answered;
// the file is rewritten with one record per reader once it holds more than
// twice what is live (and at least COMPACT_BYTES_MIN).
//
// Record: u32 bytes | u32 CRC-32 of [8, bytes) | u64 updated_at ms
//         | u8 reader length | reader | cursor (base64url, the rest)
// Loading takes only records whose length, CRC and text check out, and
// resynchronises one byte on past damage (a bit flip costs the records it
// hits: that reader falls back to its previous position); a torn tail is cut.
// Positions written before the timeline's stream set last changed are of
// another set: loading drops them and rewrites the file without them.
import { closeSync, existsSync, ftruncateSync, openSync, readFileSync, renameSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { readU64, writeU32, writeU64 } from "../bytes.js";
import { crc32Range } from "../crc.js";
import { TIMELINE_STREAMS_LIMIT } from "../limits.js";
import { STREAM_ID, STREAM_ID_CHARS_MAX } from "../stream-id.js";
import { cursorCharsMax } from "./cursor.js";
import { TMP_SUFFIX } from "./atomic-file.js";

export const READERS_FILE = "readers.log";
const HEADER_BYTES = 17;
/** Reader ids follow the stream id rule: ASCII, one byte per character. */
export const RECORD_BYTES_MAX = HEADER_BYTES + STREAM_ID_CHARS_MAX + cursorCharsMax(TIMELINE_STREAMS_LIMIT);
/** Below this the file is never compacted: a few hundred positions cost less to keep than to rewrite. */
const COMPACT_BYTES_MIN = 1024 * 1024;
const CURSOR_TEXT = /^[A-Za-z0-9_-]+$/;

export interface LoggedPosition {
  cursor: string;
  updatedAt: number;
}

export class ReadersLog {
  private readonly path: string;
  /** Bytes of valid records at the start of the file: where the next record goes. */
  private size = 0;
  /** Bytes the newest record of each reader takes: what a compaction keeps. */
  private liveBytes = 0;
  readonly positions = new Map<string, LoggedPosition>();
  /** What loading found wrong with the file (null: nothing). */
  damage: string | null = null;

  /** `since`: the timeline's updated_at; older positions are not loaded. */
  constructor(dir: string, since: number) {
    this.path = join(dir, READERS_FILE);
    if (existsSync(this.path)) this.load(since);
  }

  /** Reads every valid record; skips damaged bytes, cuts a torn tail. One pass, O(file bytes). */
  private load(since: number): void {
    const buf = readFileSync(this.path);
    let at = 0;
    let end = 0; // after the last valid record
    let skipped = 0;
    let firstBad = -1;
    while (at + HEADER_BYTES <= buf.length) {
      const rec = recordAt(buf, at);
      if (rec) {
        this.set(rec.reader, { cursor: rec.cursor, updatedAt: rec.updatedAt }, rec.bytes);
        at += rec.bytes;
        end = at;
        continue;
      }
      if (firstBad < 0) firstBad = at;
      at++; // every pass moves forward: at most buf.length passes
      skipped++;
    }
    this.size = end;
    let stale = 0;
    for (const [reader, p] of this.positions) {
      if (p.updatedAt >= since) continue;
      this.positions.delete(reader);
      stale++;
    }
    if (firstBad >= 0 && end > firstBad) {
      this.damage = `${skipped} damaged bytes from byte ${firstBad} skipped; the valid records after them kept`;
      this.compact();
    } else if (stale > 0) {
      this.compact();
    } else if (end < buf.length) {
      if (firstBad >= 0 && buf.length - end > RECORD_BYTES_MAX) this.damage = `${buf.length - end} bytes after byte ${end} are not records; cut`;
      this.truncate(end);
    }
  }

  get(reader: string): LoggedPosition | undefined {
    return this.positions.get(reader);
  }

  /** Appends a position. A write refused part-way (a full disk) is cut off and changes nothing. */
  put(reader: string, p: LoggedPosition): void {
    if (this.size > COMPACT_BYTES_MIN && this.size > 2 * this.liveBytes) this.compact();
    const rec = record(reader, p);
    const fd = openSync(this.path, existsSync(this.path) ? "r+" : "w+");
    try {
      let off = 0;
      while (off < rec.length) off += writeSync(fd, rec, off, rec.length - off, this.size + off);
    } catch (err) {
      try {
        ftruncateSync(fd, this.size);
      } catch {
        // load() cuts a torn tail if this fails too.
      }
      throw err;
    } finally {
      closeSync(fd);
    }
    this.size += rec.length;
    this.set(reader, p, rec.length);
  }

  private set(reader: string, p: LoggedPosition, bytes: number): void {
    const before = this.positions.get(reader);
    if (before) this.liveBytes -= HEADER_BYTES + reader.length + before.cursor.length;
    this.positions.set(reader, p);
    this.liveBytes += bytes;
  }

  /** Rewrites the file with one record per reader (written whole, then renamed over). */
  private compact(): void {
    const all = Buffer.concat([...this.positions].map(([r, p]) => record(r, p)));
    const tmp = `${this.path}${TMP_SUFFIX}`;
    writeFileSync(tmp, all);
    renameSync(tmp, this.path);
    this.size = all.length;
    this.liveBytes = all.length;
  }

  private truncate(bytes: number): void {
    const fd = openSync(this.path, "r+");
    try {
      ftruncateSync(fd, bytes);
    } finally {
      closeSync(fd);
    }
  }
}

function record(reader: string, p: LoggedPosition): Buffer {
  if (!STREAM_ID.test(reader) || !CURSOR_TEXT.test(p.cursor)) throw new Error("readers log invariant: a reader or cursor outside its rule");
  const buf = Buffer.alloc(HEADER_BYTES + reader.length + p.cursor.length);
  if (buf.length > RECORD_BYTES_MAX) throw new Error(`readers log invariant: a record of ${buf.length} bytes`);
  writeU32(buf, 0, buf.length);
  writeU64(buf, 8, p.updatedAt);
  buf[16] = reader.length;
  buf.write(reader, HEADER_BYTES, "latin1");
  buf.write(p.cursor, HEADER_BYTES + reader.length, "latin1");
  writeU32(buf, 4, crc32Range(buf, 8, buf.length));
  return buf;
}

/** The valid record at `at`, or null: its length in bounds, its CRC, a reader id and a cursor of their rules. */
function recordAt(buf: Buffer, at: number): { reader: string; cursor: string; updatedAt: number; bytes: number } | null {
  const bytes = buf.readUInt32LE(at);
  const readerChars = buf[at + 16];
  if (bytes > RECORD_BYTES_MAX || at + bytes > buf.length || bytes <= HEADER_BYTES + readerChars) return null;
  if (crc32Range(buf, at + 8, at + bytes) !== buf.readUInt32LE(at + 4)) return null;
  const reader = buf.toString("latin1", at + HEADER_BYTES, at + HEADER_BYTES + readerChars);
  const cursor = buf.toString("latin1", at + HEADER_BYTES + readerChars, at + bytes);
  const updatedAt = readU64(buf, at + 8);
  if (!STREAM_ID.test(reader) || !CURSOR_TEXT.test(cursor) || !Number.isSafeInteger(updatedAt)) return null;
  return { reader, cursor, updatedAt, bytes };
}
