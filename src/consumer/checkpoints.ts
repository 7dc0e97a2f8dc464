// Consumer-group checkpoints of one stream, embedded in its directory:
// `checkpoints.log`, an append-only file of CRC-framed (group, seq) records,
// the last one of a group winning. An update is one pwrite, so it survives a
// crash of the process as soon as it is acknowledged; the file is compacted
// to one record per group when it grows past CHECKPOINT_LOG_BYTES_MAX.
//
// Damage in the middle of the file (a bit flip) costs only the records it
// hits: loading resynchronises on the next record whose length and CRC check
// out, and the file is compacted at once. A group whose newest record was
// hit falls back to its previous one (redelivery, never loss); a torn tail
// (a crash mid-write) is cut.
//
// The file is one of the shard's open files (log/open-files.ts): the cache
// may close it between writes, and the next write opens it again.
import { closeSync, constants, existsSync, fstatSync, ftruncateSync, openSync, readSync, renameSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { crc32Range } from "../crc.js";
import { readU64, writeU32, writeU64 } from "../bytes.js";
import { STREAM_ID_CHARS_MAX } from "../stream-id.js";
import { unboundedFiles, type CachedFile, type OpenFiles } from "../log/open-files.js";

export const CHECKPOINTS_FILE = "checkpoints.log";
/** Group names follow the stream id rule: ASCII, so one byte per character. */
const GROUP_BYTES_MAX = STREAM_ID_CHARS_MAX;
/** Compaction threshold of the checkpoint file: one append per checkpoint write, rewritten whole past this. */
const CHECKPOINT_LOG_BYTES_MAX = 1024 * 1024;
const HEADER_BYTES = 24; // u32 bytes, u32 crc of [8, bytes), u64 seq, u64 updated_at ms
const RECORD_BYTES_MAX = HEADER_BYTES + GROUP_BYTES_MAX;

export interface Checkpoint {
  seq: number;
  updatedAt: number;
}

/** Open for read and write, created if missing, never truncated: an fd the cache closed is opened again so. */
const OPEN_FLAGS = constants.O_RDWR | constants.O_CREAT;

export class CheckpointStore implements CachedFile {
  private readonly path: string;
  private fd = -1;
  private size = 0;
  readonly groups = new Map<string, Checkpoint>();
  /** What loading found wrong with the file (null: nothing). */
  damage: string | null = null;

  constructor(
    dir: string,
    private readonly files: OpenFiles = unboundedFiles(),
  ) {
    this.path = join(dir, CHECKPOINTS_FILE);
    // The file is created by the first checkpoint, not by a read of lag.
    if (existsSync(this.path)) this.load();
  }

  /** The fd, the file opened (or created) if it is not open. Valid until the shard opens another file. */
  private file(): number {
    if (this.fd >= 0) {
      this.files.used(this);
      return this.fd;
    }
    this.files.makeRoom();
    this.fd = openSync(this.path, OPEN_FLAGS);
    this.files.opened(this);
    return this.fd;
  }

  mayClose(): boolean {
    return true; // every write is a synchronous pwrite: nothing runs on the fd between turns
  }

  evict(): void {
    closeSync(this.fd);
    this.fd = -1;
  }

  /** Reads every valid record; skips damaged bytes, cuts a torn tail. O(file bytes). */
  private load(): void {
    const fd = this.file();
    const fileBytes = fstatSync(fd).size;
    const buf = Buffer.alloc(fileBytes);
    readSync(fd, buf, 0, fileBytes, 0);
    let at = 0;
    let end = 0; // after the last valid record
    let skipped = 0;
    let firstBad = -1;
    while (at + HEADER_BYTES <= fileBytes) {
      const bytes = recordBytesAt(buf, at, fileBytes);
      if (bytes > 0) {
        this.groups.set(buf.toString("latin1", at + HEADER_BYTES, at + bytes), { seq: readU64(buf, at + 8), updatedAt: readU64(buf, at + 16) });
        at += bytes;
        end = at;
        continue;
      }
      if (firstBad < 0) firstBad = at;
      at++; // resynchronise one byte on: every pass moves forward
      skipped++;
    }
    this.size = end;
    if (firstBad >= 0 && end > firstBad) {
      this.damage = `${skipped} damaged bytes from byte ${firstBad} skipped; the valid records after them kept`;
      this.compact();
    } else if (end < fileBytes) {
      if (firstBad >= 0 && fileBytes - end > RECORD_BYTES_MAX) this.damage = `${fileBytes - end} bytes after byte ${end} are not records; cut`;
      ftruncateSync(fd, end);
    }
  }

  private record(group: string, c: Checkpoint): Buffer {
    if (group.length > GROUP_BYTES_MAX) throw new Error(`checkpoint invariant: group of ${group.length} characters`);
    const name = Buffer.from(group);
    const buf = Buffer.alloc(HEADER_BYTES + name.length);
    writeU32(buf, 0, buf.length);
    writeU64(buf, 8, c.seq);
    writeU64(buf, 16, c.updatedAt);
    name.copy(buf, HEADER_BYTES);
    writeU32(buf, 4, crc32Range(buf, 8, buf.length));
    return buf;
  }

  get(group: string): Checkpoint | undefined {
    return this.groups.get(group);
  }

  set(group: string, seq: number, now = Date.now()): Checkpoint {
    const c = { seq, updatedAt: now };
    if (this.size > CHECKPOINT_LOG_BYTES_MAX) this.compact();
    const rec = this.record(group, c);
    const fd = this.file();
    // A full disk takes part of a record (a short write), then refuses the
    // rest: the torn bytes are cut and nothing changes, so the next record
    // goes where this one began instead of behind a record recovery would
    // stop at (losing every later checkpoint).
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
    }
    this.size += rec.length;
    this.groups.set(group, c);
    return c;
  }

  /** Rewrites the file with one record per group (write, then rename over). */
  private compact(): void {
    const parts = [...this.groups].map(([g, c]) => this.record(g, c));
    const all = Buffer.concat(parts);
    const tmp = `${this.path}.tmp`;
    // writeFileSync writes until done or throws: a short write must not be renamed over the file.
    writeFileSync(tmp, all);
    renameSync(tmp, this.path);
    this.close(); // the fd still names the file renamed over; the next write opens the new one
    this.size = all.length;
  }

  close(): void {
    if (this.fd < 0) return;
    this.files.closed(this);
    this.evict();
  }
}

/** Length of a valid record at `at`, or 0. */
function recordBytesAt(buf: Buffer, at: number, fileBytes: number): number {
  const bytes = buf.readUInt32LE(at);
  if (bytes <= HEADER_BYTES || bytes > RECORD_BYTES_MAX || at + bytes > fileBytes) return 0;
  return crc32Range(buf, at + 8, at + bytes) === buf.readUInt32LE(at + 4) ? bytes : 0;
}
