// A segment: one file of records in seq order, named by its base seq, with a
// sparse index of (seq, ingest_ts, file position) every index_interval_bytes.
// Because ingest_ts never decreases within a stream, the same sparse points
// serve both seek by seq and seek by time; on close they are persisted as
// <base>.idx (seq -> position) and <base>.tidx (time -> seq).
import { closeSync, existsSync, fsyncSync, fstatSync, ftruncateSync, openSync, readFileSync, writeFileSync, renameSync, unlinkSync } from "node:fs";
import { crc32 } from "node:zlib";
import { join } from "node:path";
import { writeU32, writeU64 } from "./record.js";

const IDX_MAGIC = 0x58494b54; // "TKIX"
const TIDX_MAGIC = 0x58544b54; // "TKTX"
const INDEX_VERSION = 1;
const IDX_HEADER_BYTES = 48;
const TIDX_HEADER_BYTES = 24;

export const segmentName = (baseSeq: number) => String(baseSeq).padStart(20, "0");

/**
 * The segment's state, writable. Outside the class these fields are
 * readonly: the segment moves them itself (appends, recovery, cuts), through
 * this view. A type, not getters over private fields: the append and read
 * paths read them per record, and a plain field costs nothing there.
 */
type Own = { -readonly [K in "fd" | "size" | "lastSeq" | "firstTs" | "lastTs" | "closed" | "verified"]: Segment[K] };

export class Segment {
  readonly fd: number;
  /** Bytes of valid records in the file. */
  readonly size: number = 0;
  readonly lastSeq: number;
  readonly firstTs: number = 0;
  readonly lastTs: number = 0;
  /** Rolled (or found closed at start): no more appends, the file is opened only to read. */
  readonly closed: boolean = false;
  /**
   * Every record was CRC-checked (or written) by this process: reads may skip
   * the CRC. False for closed segments recovery took on trust from their
   * index, until the background scrub has read them through.
   */
  readonly verified: boolean;
  // Sparse index points, ascending, as (seq, ingest_ts, position) triples in
  // one array (one allocation per segment: a shard holds thousands of small
  // streams); the first record always has one.
  private points: number[] = [];
  private lastIndexedPos = -Infinity;

  constructor(
    readonly dir: string,
    readonly baseSeq: number,
    private readonly indexIntervalBytes: number,
    create: boolean,
  ) {
    this.fd = openSync(this.logPath, create ? "wx+" : "r+");
    this.lastSeq = baseSeq - 1;
    this.verified = create;
  }

  // Derived, not stored: three path strings per segment were a third of an
  // idle stream's memory.
  get logPath(): string {
    return join(this.dir, `${segmentName(this.baseSeq)}.log`);
  }

  get idxPath(): string {
    return join(this.dir, `${segmentName(this.baseSeq)}.idx`);
  }

  get tidxPath(): string {
    return join(this.dir, `${segmentName(this.baseSeq)}.tidx`);
  }

  /** Number of sparse index points. */
  private get indexPoints(): number {
    return this.points.length / 3;
  }

  get empty(): boolean {
    return this.lastSeq < this.baseSeq;
  }

  get records(): number {
    return this.lastSeq - this.baseSeq + 1;
  }

  fileBytes(): number {
    return fstatSync(this.reopen()).size;
  }

  /** Accounts for a record written at `pos` (appends and recovery scans). */
  noteRecord(seq: number, ts: number, pos: number, frameBytes: number): void {
    const own: Own = this;
    if (this.empty) own.firstTs = ts;
    if (pos - this.lastIndexedPos >= this.indexIntervalBytes) {
      if (this.points.length === 0) this.points = [seq, ts, pos]; // sized to fit: most segments keep one point
      else this.points.push(seq, ts, pos);
      this.lastIndexedPos = pos;
    }
    own.lastSeq = seq;
    own.lastTs = ts;
    own.size = pos + frameBytes;
  }

  /** Recovery: forgets every record, to note them again as a scan reads them. */
  resetForScan(): void {
    const own: Own = this;
    this.truncateIndex(0);
    own.lastSeq = this.baseSeq - 1;
    own.size = 0;
    own.firstTs = 0;
    own.lastTs = 0;
  }

  /** No more appends: rolled, or found closed by recovery. */
  markClosed(): void {
    (this as Own).closed = true;
  }

  /** Every record was checked: by a recovery scan, or by the background scrub. */
  markVerified(): void {
    (this as Own).verified = true;
  }

  /**
   * Cuts the segment back to its first `bytes` (file and index): the records
   * after it were refused (a failed sync). `lastSeq`/`lastTs` are the last
   * kept record's, which the caller knows from when it was committed.
   */
  cutTo(bytes: number, lastSeq: number, lastTs: number): void {
    const own: Own = this;
    ftruncateSync(this.fd, bytes);
    this.truncateIndex(bytes);
    own.size = bytes;
    own.lastSeq = lastSeq;
    own.lastTs = lastSeq < this.baseSeq ? 0 : lastTs;
    if (this.empty) own.firstTs = 0;
  }

  /** Drops every index point at or after `pos` (after a failed append is cut). */
  truncateIndex(pos: number): void {
    const p = this.points;
    while (p.length > 0 && p[p.length - 1] >= pos) p.length -= 3;
    this.lastIndexedPos = p.length > 0 ? p[p.length - 1] : -Infinity;
  }

  /** Index point (seq, pos) at or before `seq`: scan forward from there. O(log n). */
  seekSeq(seq: number): { seq: number; pos: number } {
    const p = this.points;
    let lo = 0;
    let hi = this.indexPoints - 1;
    if (hi < 0 || seq <= p[0]) return { seq: this.baseSeq, pos: 0 };
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (p[3 * mid] <= seq) lo = mid;
      else hi = mid - 1;
    }
    return { seq: p[3 * lo], pos: p[3 * lo + 2] };
  }

  /** The first index point after file position `pos` (reading on past damage), or null. O(log n). */
  pointAfter(pos: number): { seq: number; pos: number } | null {
    const p = this.points;
    let lo = 0;
    let hi = this.indexPoints;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (p[3 * mid + 2] <= pos) lo = mid + 1;
      else hi = mid;
    }
    return lo < this.indexPoints ? { seq: p[3 * lo], pos: p[3 * lo + 2] } : null;
  }

  /** Index point before the first record with ingest_ts >= ts. O(log n). */
  seekTime(ts: number): { seq: number; pos: number } {
    const p = this.points;
    let lo = 0;
    let hi = this.indexPoints - 1;
    if (hi < 0 || ts <= p[1]) return { seq: this.baseSeq, pos: 0 };
    // Last point with ts strictly below the target: the first match is after it.
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (p[3 * mid + 1] < ts) lo = mid;
      else hi = mid - 1;
    }
    return { seq: p[3 * lo], pos: p[3 * lo + 2] };
  }

  /** Writes the .idx and .tidx files (on close). Both end with a CRC32. */
  writeIndexFiles(): void {
    const n = this.indexPoints;
    const p = this.points;
    const idx = Buffer.alloc(IDX_HEADER_BYTES + n * 8 + 4);
    idx.writeUInt32LE(IDX_MAGIC, 0);
    idx.writeUInt32LE(INDEX_VERSION, 4);
    // writeU64 takes numbers: a BigInt per entry made a roll of a full
    // segment stall its shard for ~10 ms.
    writeU64(idx, 8, this.baseSeq);
    writeU64(idx, 16, this.lastSeq);
    writeU64(idx, 24, this.size);
    writeU64(idx, 32, this.firstTs);
    writeU64(idx, 40, this.lastTs);
    const tidx = Buffer.alloc(TIDX_HEADER_BYTES + n * 16 + 4);
    tidx.writeUInt32LE(TIDX_MAGIC, 0);
    tidx.writeUInt32LE(INDEX_VERSION, 4);
    writeU64(tidx, 8, this.baseSeq);
    writeU64(tidx, 16, n);
    for (let i = 0; i < n; i++) {
      const rel = p[3 * i] - this.baseSeq;
      writeU32(idx, IDX_HEADER_BYTES + i * 8, rel);
      writeU32(idx, IDX_HEADER_BYTES + i * 8 + 4, p[3 * i + 2]);
      writeU64(tidx, TIDX_HEADER_BYTES + i * 16, p[3 * i + 1]);
      writeU32(tidx, TIDX_HEADER_BYTES + i * 16 + 8, rel);
    }
    idx.writeUInt32LE(crc32(idx.subarray(0, idx.length - 4)), idx.length - 4);
    tidx.writeUInt32LE(crc32(tidx.subarray(0, tidx.length - 4)), tidx.length - 4);
    // Write-then-rename: a crash leaves either no index (rebuilt) or a whole one.
    writeFileSync(this.idxPath + ".tmp", idx);
    renameSync(this.idxPath + ".tmp", this.idxPath);
    writeFileSync(this.tidxPath + ".tmp", tidx);
    renameSync(this.tidxPath + ".tmp", this.tidxPath);
  }

  /**
   * Loads the persisted index of a closed segment. False when either file is
   * missing, damaged or does not describe this log file: rebuild by scanning.
   */
  loadIndexFiles(): boolean {
    if (!existsSync(this.idxPath) || !existsSync(this.tidxPath)) return false;
    const idx = readFileSync(this.idxPath);
    const tidx = readFileSync(this.tidxPath);
    if (idx.length < IDX_HEADER_BYTES + 4 || tidx.length < TIDX_HEADER_BYTES + 4) return false;
    if (crc32(idx.subarray(0, idx.length - 4)) !== idx.readUInt32LE(idx.length - 4)) return false;
    if (crc32(tidx.subarray(0, tidx.length - 4)) !== tidx.readUInt32LE(tidx.length - 4)) return false;
    if (idx.readUInt32LE(0) !== IDX_MAGIC || tidx.readUInt32LE(0) !== TIDX_MAGIC) return false;
    if (idx.readUInt32LE(4) !== INDEX_VERSION || tidx.readUInt32LE(4) !== INDEX_VERSION) return false;
    if (Number(idx.readBigUInt64LE(8)) !== this.baseSeq || Number(tidx.readBigUInt64LE(8)) !== this.baseSeq) return false;
    const size = Number(idx.readBigUInt64LE(24));
    if (size !== this.fileBytes()) return false;
    const n = (idx.length - IDX_HEADER_BYTES - 4) / 8;
    if (!Number.isInteger(n) || Number(tidx.readBigUInt64LE(16)) !== n || tidx.length !== TIDX_HEADER_BYTES + n * 16 + 4) return false;
    const points: number[] = [];
    for (let i = 0; i < n; i++) {
      const relSeq = idx.readUInt32LE(IDX_HEADER_BYTES + i * 8);
      if (relSeq !== tidx.readUInt32LE(TIDX_HEADER_BYTES + i * 16 + 8)) return false;
      points.push(this.baseSeq + relSeq, Number(tidx.readBigUInt64LE(TIDX_HEADER_BYTES + i * 16)), idx.readUInt32LE(IDX_HEADER_BYTES + i * 8 + 4));
    }
    const own: Own = this;
    this.points = points;
    this.lastIndexedPos = n > 0 ? points[points.length - 1] : -Infinity;
    own.lastSeq = Number(idx.readBigUInt64LE(16));
    own.size = size;
    own.firstTs = Number(idx.readBigUInt64LE(32));
    own.lastTs = Number(idx.readBigUInt64LE(40));
    return true;
  }

  /** Opens the file again after close() (closed segments are read lazily). */
  reopen(): number {
    if (this.fd < 0) (this as Own).fd = openSync(this.logPath, "r");
    return this.fd;
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    (this as Own).fd = -1;
  }

  /** Closes and removes the segment's files (retention, stream deletion). */
  remove(): void {
    this.close();
    for (const p of [this.logPath, this.idxPath, this.tidxPath]) {
      try {
        unlinkSync(p);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      }
    }
  }
}

/** Fsyncs a log's directory, so the entry of a segment just created survives a power loss. */
export function syncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
