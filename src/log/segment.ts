// A segment: one file of records in seq order, named by its base seq, and
// what is known of them (size, last seq, first and last ingest_ts, whether
// they were all checked), kept by the segment itself as records are
// appended, scanned at recovery or cut. Its sparse index (sparse-index.ts)
// is filled here as records are noted, and persisted when it closes.
import { closeSync, fsyncSync, fstatSync, ftruncateSync, openSync, unlinkSync } from "node:fs";
import { idxPath, logPath, tidxPath } from "./file-names.js";
import type { CachedFile, OpenFiles } from "./open-files.js";
import { dropPointsFrom, pointAfter, readIndexFiles, seekSeq, seekTime, writeIndexFiles, type IndexPoint, type IndexPoints } from "./sparse-index.js";

/**
 * The segment's state, writable. Outside the class these fields are
 * readonly: the segment moves them itself (appends, recovery, cuts), through
 * this view. A type, not getters over private fields: the append and read
 * paths read them per record, and a plain field costs nothing there.
 */
type Own = { -readonly [K in "fd" | "size" | "lastSeq" | "firstTs" | "lastTs" | "closed" | "verified"]: Segment[K] };

/** What a segment asks of its log: the shard's open files, and whether its fd may be closed now. */
export interface SegmentOwner {
  readonly files: OpenFiles;
  mayClose(seg: Segment): boolean;
}

export class Segment implements CachedFile {
  /** The open file, or -1: closed by a roll, by recovery, or by the shard's open-file cache. Use openFd(). */
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
  private points: IndexPoints = [];
  private lastIndexedPos = -Infinity;

  constructor(
    readonly dir: string,
    readonly baseSeq: number,
    private readonly indexIntervalBytes: number,
    create: boolean,
    private readonly owner: SegmentOwner,
  ) {
    owner.files.makeRoom();
    this.fd = openSync(this.logPath, create ? "wx+" : "r+");
    owner.files.opened(this);
    this.lastSeq = baseSeq - 1;
    this.verified = create;
  }

  // Derived, not stored: three path strings per segment were a third of an
  // idle stream's memory.
  get logPath(): string {
    return logPath(this.dir, this.baseSeq);
  }

  get idxPath(): string {
    return idxPath(this.dir, this.baseSeq);
  }

  get tidxPath(): string {
    return tidxPath(this.dir, this.baseSeq);
  }

  get empty(): boolean {
    return this.lastSeq < this.baseSeq;
  }

  get records(): number {
    return this.lastSeq - this.baseSeq + 1;
  }

  fileBytes(): number {
    return fstatSync(this.openFd()).size;
  }

  /** Accounts for a record written at `pos` (appends and recovery scans). */
  noteRecord(seq: number, ts: number, pos: number, frameBytes: number): void {
    // biome-ignore lint/complexity/noUselessThisAlias: the writable view of fields readonly outside the class
    const own: Own = this;
    if (this.empty) own.firstTs = ts;
    // The point is added here, not by a call into sparse-index.ts: this runs per record.
    if (pos - this.lastIndexedPos >= this.indexIntervalBytes) {
      if (this.points.length === 0)
        this.points = [seq, ts, pos]; // sized to fit: most segments keep one point
      else this.points.push(seq, ts, pos);
      this.lastIndexedPos = pos;
    }
    own.lastSeq = seq;
    own.lastTs = ts;
    own.size = pos + frameBytes;
  }

  /** Recovery: forgets every record, to note them again as a scan reads them. */
  resetForScan(): void {
    // biome-ignore lint/complexity/noUselessThisAlias: the writable view of fields readonly outside the class
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
   * after it were refused (a failed sync) or found torn (recovery).
   * `lastSeq`/`lastTs` are the last kept record's, which the caller knows
   * from when it was committed or scanned.
   */
  cutTo(bytes: number, lastSeq: number, lastTs: number): void {
    // biome-ignore lint/complexity/noUselessThisAlias: the writable view of fields readonly outside the class
    const own: Own = this;
    ftruncateSync(this.openFd(), bytes);
    this.truncateIndex(bytes);
    own.size = bytes;
    own.lastSeq = lastSeq;
    own.lastTs = lastSeq < this.baseSeq ? 0 : lastTs;
    if (this.empty) own.firstTs = 0;
  }

  /** Drops every index point at or after `pos` (after a failed append is cut). */
  truncateIndex(pos: number): void {
    this.lastIndexedPos = dropPointsFrom(this.points, pos);
  }

  /** Index point (seq, pos) at or before `seq`: scan forward from there. O(log n). */
  seekSeq(seq: number): IndexPoint {
    return seekSeq(this.points, this.baseSeq, seq);
  }

  /** The first index point after file position `pos` (reading on past damage), or null. O(log n). */
  pointAfter(pos: number): IndexPoint | null {
    return pointAfter(this.points, pos);
  }

  /** Index point before the first record with ingest_ts >= ts. O(log n). */
  seekTime(ts: number): IndexPoint {
    return seekTime(this.points, this.baseSeq, ts);
  }

  /** Writes the .idx and .tidx files (on close). */
  writeIndexFiles(): void {
    writeIndexFiles(this.idxPath, this.tidxPath, this, this.points);
  }

  /**
   * Loads the persisted index of a closed segment. False when either file is
   * missing, damaged or does not describe this log file: rebuild by scanning.
   */
  loadIndexFiles(): boolean {
    const found = readIndexFiles(this.idxPath, this.tidxPath, this.baseSeq);
    if (!found || found.header.size !== this.fileBytes()) return false;
    // biome-ignore lint/complexity/noUselessThisAlias: the writable view of fields readonly outside the class
    const own: Own = this;
    const p = (this.points = found.points);
    this.lastIndexedPos = p.length > 0 ? p[p.length - 1] : -Infinity;
    own.lastSeq = found.header.lastSeq;
    own.size = found.header.size;
    own.firstTs = found.header.firstTs;
    own.lastTs = found.header.lastTs;
    return true;
  }

  /**
   * The fd, the file opened again if it was closed (closed segments are read
   * lazily; the open-file cache closes idle ones). Valid until the next file
   * of the shard is opened: take it for each use, do not keep it.
   */
  openFd(): number {
    const files = this.owner.files;
    if (this.fd >= 0) {
      files.used(this);
      return this.fd;
    }
    files.makeRoom();
    (this as Own).fd = openSync(this.logPath, this.closed ? "r" : "r+");
    files.opened(this);
    return this.fd;
  }

  mayClose(): boolean {
    return this.owner.mayClose(this);
  }

  evict(): void {
    closeSync(this.fd);
    (this as Own).fd = -1;
  }

  close(): void {
    if (this.fd < 0) return;
    this.owner.files.closed(this);
    this.evict();
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
