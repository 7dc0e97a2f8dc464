// A segment: one file of records in seq order, named by its base seq, with a
// sparse index of (seq, ingest_ts, file position) every index_interval_bytes.
// Because ingest_ts never decreases within a stream, the same sparse points
// serve both seek by seq and seek by time; on close they are persisted as
// <base>.idx (seq -> position) and <base>.tidx (time -> seq).
import { closeSync, existsSync, fstatSync, openSync, readFileSync, writeFileSync, renameSync, unlinkSync } from "node:fs";
import { crc32 } from "node:zlib";
import { join } from "node:path";
import { writeU32, writeU64 } from "./record.js";

const IDX_MAGIC = 0x58494b54; // "TKIX"
const TIDX_MAGIC = 0x58544b54; // "TKTX"
const INDEX_VERSION = 1;
const IDX_HEADER_BYTES = 48;
const TIDX_HEADER_BYTES = 24;

export const segmentName = (baseSeq: number) => String(baseSeq).padStart(20, "0");

export class Segment {
  readonly logPath: string;
  readonly idxPath: string;
  readonly tidxPath: string;
  fd: number;
  /** Bytes of valid records in the file. */
  size = 0;
  lastSeq: number;
  firstTs = 0;
  lastTs = 0;
  closed = false;
  /**
   * Every record was CRC-checked (or written) by this process: reads may skip
   * the CRC. False for closed segments recovery took on trust from their
   * index, until the background scrub has read them through.
   */
  verified: boolean;
  // Sparse index points, ascending; the first record always has one.
  private readonly idxSeq: number[] = [];
  private readonly idxTs: number[] = [];
  private readonly idxPos: number[] = [];
  private lastIndexedPos = -Infinity;

  constructor(
    readonly dir: string,
    readonly baseSeq: number,
    private readonly indexIntervalBytes: number,
    create: boolean,
  ) {
    const name = segmentName(baseSeq);
    this.logPath = join(dir, `${name}.log`);
    this.idxPath = join(dir, `${name}.idx`);
    this.tidxPath = join(dir, `${name}.tidx`);
    this.fd = openSync(this.logPath, create ? "wx+" : "r+");
    this.lastSeq = baseSeq - 1;
    this.verified = create;
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
    if (this.empty) this.firstTs = ts;
    if (pos - this.lastIndexedPos >= this.indexIntervalBytes) {
      this.idxSeq.push(seq);
      this.idxTs.push(ts);
      this.idxPos.push(pos);
      this.lastIndexedPos = pos;
    }
    this.lastSeq = seq;
    this.lastTs = ts;
    this.size = pos + frameBytes;
  }

  /** Drops every index point at or after `pos` (after a failed append is cut). */
  truncateIndex(pos: number): void {
    while (this.idxPos.length > 0 && this.idxPos[this.idxPos.length - 1] >= pos) {
      this.idxPos.pop();
      this.idxSeq.pop();
      this.idxTs.pop();
    }
    this.lastIndexedPos = this.idxPos.length > 0 ? this.idxPos[this.idxPos.length - 1] : -Infinity;
  }

  /** Index point (seq, pos) at or before `seq`: scan forward from there. O(log n). */
  seekSeq(seq: number): { seq: number; pos: number } {
    let lo = 0;
    let hi = this.idxSeq.length - 1;
    if (hi < 0 || seq <= this.idxSeq[0]) return { seq: this.baseSeq, pos: 0 };
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.idxSeq[mid] <= seq) lo = mid;
      else hi = mid - 1;
    }
    return { seq: this.idxSeq[lo], pos: this.idxPos[lo] };
  }

  /** Index point before the first record with ingest_ts >= ts. O(log n). */
  seekTime(ts: number): { seq: number; pos: number } {
    let lo = 0;
    let hi = this.idxTs.length - 1;
    if (hi < 0 || ts <= this.idxTs[0]) return { seq: this.baseSeq, pos: 0 };
    // Last point with ts strictly below the target: the first match is after it.
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.idxTs[mid] < ts) lo = mid;
      else hi = mid - 1;
    }
    return { seq: this.idxSeq[lo], pos: this.idxPos[lo] };
  }

  /** Writes the .idx and .tidx files (on close). Both end with a CRC32. */
  writeIndexFiles(): void {
    const n = this.idxSeq.length;
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
      const rel = this.idxSeq[i] - this.baseSeq;
      writeU32(idx, IDX_HEADER_BYTES + i * 8, rel);
      writeU32(idx, IDX_HEADER_BYTES + i * 8 + 4, this.idxPos[i]);
      writeU64(tidx, TIDX_HEADER_BYTES + i * 16, this.idxTs[i]);
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
    this.idxSeq.length = this.idxTs.length = this.idxPos.length = 0;
    for (let i = 0; i < n; i++) {
      const relSeq = idx.readUInt32LE(IDX_HEADER_BYTES + i * 8);
      if (relSeq !== tidx.readUInt32LE(TIDX_HEADER_BYTES + i * 16 + 8)) return false;
      this.idxSeq.push(this.baseSeq + relSeq);
      this.idxPos.push(idx.readUInt32LE(IDX_HEADER_BYTES + i * 8 + 4));
      this.idxTs.push(Number(tidx.readBigUInt64LE(TIDX_HEADER_BYTES + i * 16)));
    }
    this.lastIndexedPos = n > 0 ? this.idxPos[n - 1] : -Infinity;
    this.lastSeq = Number(idx.readBigUInt64LE(16));
    this.size = size;
    this.firstTs = Number(idx.readBigUInt64LE(32));
    this.lastTs = Number(idx.readBigUInt64LE(40));
    return true;
  }

  /** Opens the file again after close() (closed segments are read lazily). */
  reopen(): number {
    if (this.fd < 0) this.fd = openSync(this.logPath, "r");
    return this.fd;
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
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
