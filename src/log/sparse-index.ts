// The sparse index of a segment: a point (seq, ingest_ts, file position)
// every index_interval_bytes of records, from which a read scans forward to
// the record it wants; and its files, <base>.idx (seq -> position) and
// <base>.tidx (time -> seq), written when the segment closes.
//
// Kafka keeps an OffsetIndex and a TimeIndex; here one module and one point
// array serve both: ingest_ts never decreases within a stream, so the points
// in seq order are in time order too and a binary search by either key runs
// over the same array. Two arrays would double every segment's index memory
// (a shard holds thousands of small streams) and could disagree.
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { crc32 } from "node:zlib";
import { writeU32, writeU64 } from "../bytes.js";
import { partialPath } from "./file-names.js";

/**
 * Index points, ascending, as (seq, ingest_ts, position) triples in one
 * array: one allocation per segment; the first record always has a point.
 */
export type IndexPoints = number[];

/** Where a scan for a seq or a time starts: an index point, or the segment's start. */
export interface IndexPoint {
  seq: number;
  pos: number;
}

/** Number of points in `p`. */
export const pointCount = (p: IndexPoints) => p.length / 3;

/** Drops every point at or after file position `pos`; returns the position of the last one kept (-Infinity if none). */
export function dropPointsFrom(p: IndexPoints, pos: number): number {
  while (p.length > 0 && p[p.length - 1] >= pos) p.length -= 3;
  return p.length > 0 ? p[p.length - 1] : -Infinity;
}

/** The point at or before `seq` (the segment's start if none): scan forward from there. O(log n). */
export function seekSeq(p: IndexPoints, baseSeq: number, seq: number): IndexPoint {
  let lo = 0;
  let hi = pointCount(p) - 1;
  if (hi < 0 || seq <= p[0]) return { seq: baseSeq, pos: 0 };
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (p[3 * mid] <= seq) lo = mid;
    else hi = mid - 1;
  }
  return { seq: p[3 * lo], pos: p[3 * lo + 2] };
}

/** The first point after file position `pos` (reading on past damage), or null. O(log n). */
export function pointAfter(p: IndexPoints, pos: number): IndexPoint | null {
  const n = pointCount(p);
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (p[3 * mid + 2] <= pos) lo = mid + 1;
    else hi = mid;
  }
  return lo < n ? { seq: p[3 * lo], pos: p[3 * lo + 2] } : null;
}

/** The point before the first record with ingest_ts >= ts (the segment's start if none). O(log n). */
export function seekTime(p: IndexPoints, baseSeq: number, ts: number): IndexPoint {
  let lo = 0;
  let hi = pointCount(p) - 1;
  if (hi < 0 || ts <= p[1]) return { seq: baseSeq, pos: 0 };
  // Last point with ts strictly below the target: the first match is after it.
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (p[3 * mid + 1] < ts) lo = mid;
    else hi = mid - 1;
  }
  return { seq: p[3 * lo], pos: p[3 * lo + 2] };
}

// ---- files ---------------------------------------------------------------
//
// .idx:  u32 magic "TKIX", u32 version, u64 base_seq, u64 last_seq,
//        u64 log_bytes, u64 first_ts, u64 last_ts, then per point
//        (u32 seq - base_seq, u32 position), then u32 crc32 of all before it.
// .tidx: u32 magic "TKTX", u32 version, u64 base_seq, u64 points, then per
//        point (u64 ingest_ts, u32 seq - base_seq, u32 pad), then u32 crc32.

const IDX_MAGIC = 0x58494b54; // "TKIX"
const TIDX_MAGIC = 0x58544b54; // "TKTX"
const INDEX_VERSION = 1;
const IDX_HEADER_BYTES = 48;
const TIDX_HEADER_BYTES = 24;

/** What the .idx header says of the segment it indexes. */
export interface IndexedSegment {
  baseSeq: number;
  lastSeq: number;
  /** Bytes of the log file the index describes. */
  size: number;
  firstTs: number;
  lastTs: number;
}

/** Writes the .idx and .tidx files of a closed segment. Both end with a CRC32. */
export function writeIndexFiles(idxPath: string, tidxPath: string, seg: IndexedSegment, p: IndexPoints): void {
  const n = pointCount(p);
  const idx = Buffer.alloc(IDX_HEADER_BYTES + n * 8 + 4);
  idx.writeUInt32LE(IDX_MAGIC, 0);
  idx.writeUInt32LE(INDEX_VERSION, 4);
  // writeU64 takes numbers: a BigInt per entry made a roll of a full
  // segment stall its shard for ~10 ms.
  writeU64(idx, 8, seg.baseSeq);
  writeU64(idx, 16, seg.lastSeq);
  writeU64(idx, 24, seg.size);
  writeU64(idx, 32, seg.firstTs);
  writeU64(idx, 40, seg.lastTs);
  const tidx = Buffer.alloc(TIDX_HEADER_BYTES + n * 16 + 4);
  tidx.writeUInt32LE(TIDX_MAGIC, 0);
  tidx.writeUInt32LE(INDEX_VERSION, 4);
  writeU64(tidx, 8, seg.baseSeq);
  writeU64(tidx, 16, n);
  for (let i = 0; i < n; i++) {
    const rel = p[3 * i] - seg.baseSeq;
    writeU32(idx, IDX_HEADER_BYTES + i * 8, rel);
    writeU32(idx, IDX_HEADER_BYTES + i * 8 + 4, p[3 * i + 2]);
    writeU64(tidx, TIDX_HEADER_BYTES + i * 16, p[3 * i + 1]);
    writeU32(tidx, TIDX_HEADER_BYTES + i * 16 + 8, rel);
  }
  idx.writeUInt32LE(crc32(idx.subarray(0, idx.length - 4)), idx.length - 4);
  tidx.writeUInt32LE(crc32(tidx.subarray(0, tidx.length - 4)), tidx.length - 4);
  // Write-then-rename: a crash leaves either no index (rebuilt) or a whole one.
  writeFileSync(partialPath(idxPath), idx);
  renameSync(partialPath(idxPath), idxPath);
  writeFileSync(partialPath(tidxPath), tidx);
  renameSync(partialPath(tidxPath), tidxPath);
}

/**
 * Reads the index files of the segment based at `baseSeq`. Null when either
 * file is missing, damaged, of another version or segment, or disagrees
 * with the other; whether it describes the log file there is the caller's
 * to check (`size`).
 */
export function readIndexFiles(idxPath: string, tidxPath: string, baseSeq: number): { header: IndexedSegment; points: IndexPoints } | null {
  if (!existsSync(idxPath) || !existsSync(tidxPath)) return null;
  const idx = readFileSync(idxPath);
  const tidx = readFileSync(tidxPath);
  if (idx.length < IDX_HEADER_BYTES + 4 || tidx.length < TIDX_HEADER_BYTES + 4) return null;
  if (crc32(idx.subarray(0, idx.length - 4)) !== idx.readUInt32LE(idx.length - 4)) return null;
  if (crc32(tidx.subarray(0, tidx.length - 4)) !== tidx.readUInt32LE(tidx.length - 4)) return null;
  if (idx.readUInt32LE(0) !== IDX_MAGIC || tidx.readUInt32LE(0) !== TIDX_MAGIC) return null;
  if (idx.readUInt32LE(4) !== INDEX_VERSION || tidx.readUInt32LE(4) !== INDEX_VERSION) return null;
  if (Number(idx.readBigUInt64LE(8)) !== baseSeq || Number(tidx.readBigUInt64LE(8)) !== baseSeq) return null;
  const n = (idx.length - IDX_HEADER_BYTES - 4) / 8;
  if (!Number.isInteger(n) || Number(tidx.readBigUInt64LE(16)) !== n || tidx.length !== TIDX_HEADER_BYTES + n * 16 + 4) return null;
  const points: IndexPoints = [];
  for (let i = 0; i < n; i++) {
    const relSeq = idx.readUInt32LE(IDX_HEADER_BYTES + i * 8);
    if (relSeq !== tidx.readUInt32LE(TIDX_HEADER_BYTES + i * 16 + 8)) return null;
    points.push(baseSeq + relSeq, Number(tidx.readBigUInt64LE(TIDX_HEADER_BYTES + i * 16)), idx.readUInt32LE(IDX_HEADER_BYTES + i * 8 + 4));
  }
  const header = {
    baseSeq,
    lastSeq: Number(idx.readBigUInt64LE(16)),
    size: Number(idx.readBigUInt64LE(24)),
    firstTs: Number(idx.readBigUInt64LE(32)),
    lastTs: Number(idx.readBigUInt64LE(40)),
  };
  return { header, points };
}
