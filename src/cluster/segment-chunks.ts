// The chunks an archived segment is read in (docs/CLUSTER.md "History from
// the archive"): a reader that wants seq X fetches the range of the object
// holding X, not the whole object. The owner writes where each chunk starts
// (its first frame's seq, byte position and ingest_ts) into the segment's
// manifest row, `points` (migration 10), in the statement that commits the
// segment: the points exist exactly when the segment does, and a reader gets
// them with the row it reads anyway (docs/decisions.md).
//
// Rows are shared state another node wrote, so the points are checked before
// use (parsePoints) and the bytes of every chunk are checked (checkChunk):
// its CRC against its point's (the owner checked each frame's CRC when it
// made the points), then each frame's length, seq and ingest_ts; a chunk
// whose CRC differs has each frame's CRC checked too, as a whole segment's
// is. Points that fail, or a chunk that disagrees with them, make the reader
// fall back to the whole object (archived-history.ts): the bytes are the
// truth, the points a shortcut.
import { crc32 } from "node:zlib";
import { u32, readU64, writeU32, writeU64 } from "../bytes.js";
import type { CorruptionInfo } from "../log/damage.js";
import { RECORD_BYTES_MIN, checkFrame, frameProblem, frameSeq, frameTs } from "../log/record.js";

/**
 * Bytes of frames after which a new chunk starts: the unit a reader fetches,
 * checks and caches. Measured (docs/decisions.md: a 64 MiB segment of
 * 128-byte frames replayed cold through ArchivedHistory, 2 busy cores):
 * from a file archive 256 KiB chunks stall the replay (0.9-2.1 M events/s,
 * a fetch that has not landed every few pages), 1 and 4 MiB replay at
 * 1.8-2.3 M (2.05 and 2.49 M once the cores were quiet), 16 MiB at
 * 1.5-2.2 M; from S3 (s3rver) 4 MiB did best (0.64 M,
 * 0.56 at 1 MiB, 0.25 at 256 KiB: a request per chunk), and a real S3's tens
 * of ms per GET favour the larger. A first page from the middle then costs
 * 11-20 ms (whole: 190-340 ms, and 64 MiB of cache).
 */
export const ARCHIVE_CHUNK_BYTES = 4 * 1024 * 1024;

/**
 * A point: u32 seq - base seq, u32 byte position, u64 ingest_ts of the frame
 * there, u32 CRC-32 of the chunk's bytes (from this point to the next, or to
 * the segment's end).
 */
export const POINT_BYTES = 20;

/** Points a row may hold: a 1 GiB segment (segment_bytes_max's bound) in 4 MiB chunks has 257; this leaves room for smaller chunks. */
const POINTS_MAX = 65_536;

/**
 * A sparse index point every this many frames of a chunk: a seek walks at
 * most 63 frame headers (lengths the check accepted, no CRC again), and a
 * point is found by division, not a search. A point is 8 bytes per 64
 * frames of at least 32 bytes each: under 0.4% of what the chunk holds.
 */
const INDEX_FRAMES = 64;

/**
 * Bytes checked before the check yields to the worker's event loop: about a
 * millisecond of CRC (measured 0.8-1.1 ms per MiB of 128-byte frames, 0.5
 * of 1 KiB ones). A 64 MiB segment checked in one go would hold the shard's
 * publishes up for 55-70 ms.
 */
const CHECK_SLICE_BYTES = 1024 * 1024;

/**
 * The points of a closed segment's bytes (this node's own file): one at the
 * first frame, then one at the first frame at least `chunkBytes` past the
 * last point, as a manifest row stores them, each with its chunk's CRC. The
 * owner checks every frame's CRC here, once, so that a reader checks a
 * chunk with one CRC over its bytes instead of one a frame (a tenth of the
 * time); a frame that fails (a segment damaged on this disk) means no
 * points at all (null), and readers then fetch the segment whole and check
 * it frame by frame, finding the damage. Yields to the event loop every
 * CHECK_SLICE_BYTES, as checkChunk does; bounded: each step accepts a frame
 * inside the bytes or stops.
 */
export async function chunkPointsOf(bytes: Buffer, frameBytesMax: number, chunkBytes = ARCHIVE_CHUNK_BYTES): Promise<Buffer | null> {
  const points: number[] = [];
  let last = Number.NEGATIVE_INFINITY;
  let sliceEnd = CHECK_SLICE_BYTES;
  let at = 0;
  for (let i = 0; at < bytes.length; i++) {
    if (at >= sliceEnd) {
      await new Promise((resolve) => setImmediate(resolve));
      sliceEnd = at + CHECK_SLICE_BYTES;
    }
    const frameBytes = checkFrame(bytes, at, bytes.length, frameBytesMax);
    if (frameBytes < 0) return null;
    if (at - last >= chunkBytes) {
      points.push(i, at, frameTs(bytes, at));
      last = at;
    }
    at += frameBytes;
  }
  const n = points.length / 3;
  const out = Buffer.alloc(n * POINT_BYTES);
  for (let p = 0; p < n; p++) {
    const o = p * POINT_BYTES;
    writeU32(out, o, points[3 * p]);
    writeU32(out, o + 4, points[3 * p + 1]);
    writeU64(out, o + 8, points[3 * p + 2]);
    const end = p + 1 < n ? points[3 * (p + 1) + 1] : bytes.length;
    writeU32(out, o + 16, crc32(bytes.subarray(points[3 * p + 1], end)));
  }
  return out;
}

/** Where each chunk of a segment starts, checked against its manifest row. */
export interface ChunkPoints {
  readonly seqs: Float64Array;
  readonly positions: Float64Array;
  readonly ts: Float64Array;
  readonly crcs: Float64Array;
}

/** What a manifest row says of its segment. */
export interface SegmentSpan {
  baseSeq: number;
  lastSeq: number;
  bytes: number;
}

/**
 * A row's points, or null when there are none (a segment archived before
 * them) or they cannot be what an owner wrote for this row: not whole
 * points, more than POINTS_MAX, not starting at the segment's first frame,
 * seqs or positions not rising (by at least a smallest frame a seq), past
 * the row's last seq or its bytes, or ingest_ts going back. One pass over
 * at most POINTS_MAX points.
 */
export function parsePoints(raw: Uint8Array | null | undefined, e: SegmentSpan): ChunkPoints | null {
  if (!raw || raw.length === 0 || raw.length % POINT_BYTES !== 0 || raw.length / POINT_BYTES > POINTS_MAX) return null;
  const b = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
  const n = b.length / POINT_BYTES;
  const seqs = new Float64Array(n);
  const positions = new Float64Array(n);
  const ts = new Float64Array(n);
  const crcs = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    crcs[i] = u32(b, i * POINT_BYTES + 16);
    seqs[i] = e.baseSeq + u32(b, i * POINT_BYTES);
    positions[i] = u32(b, i * POINT_BYTES + 4);
    ts[i] = readU64(b, i * POINT_BYTES + 8);
    if (!Number.isSafeInteger(ts[i])) return null;
    if (i === 0 ? seqs[0] !== e.baseSeq || positions[0] !== 0 : seqs[i] <= seqs[i - 1] || ts[i] < ts[i - 1]) return null;
    if (i > 0 && positions[i] - positions[i - 1] < (seqs[i] - seqs[i - 1]) * RECORD_BYTES_MIN) return null;
  }
  if (seqs[n - 1] > e.lastSeq || positions[n - 1] >= e.bytes) return null;
  return { seqs, positions, ts, crcs };
}

/** The part of a segment one fetch reads: a chunk, or the whole object. */
export interface ChunkSpan {
  /** The chunk's number in its segment (-1: the whole object). */
  index: number;
  firstSeq: number;
  lastSeq: number;
  /** Bytes [start, end) of the object. */
  start: number;
  end: number;
  /** ingest_ts of the first frame, as the points say (null: not known). */
  firstTs: number | null;
  /** No frame of the chunk is newer than the next chunk's first. */
  tsMax: number;
  /** CRC-32 of the chunk's bytes, as the owner wrote it having checked every frame (null: not known; each frame's CRC is checked). */
  crc: number | null;
}

/** The whole object, as the row says it is: for a segment without points, and the fallback of one whose points the bytes disagree with. */
export const wholeSpan = (e: SegmentSpan): ChunkSpan => ({
  index: -1,
  firstSeq: e.baseSeq,
  lastSeq: e.lastSeq,
  start: 0,
  end: e.bytes,
  firstTs: null,
  tsMax: Number.POSITIVE_INFINITY,
  crc: null,
});

/** The chunk holding `seq` (baseSeq <= seq <= lastSeq): the last point at or before it. O(log n). */
export function chunkHolding(e: SegmentSpan, p: ChunkPoints, seq: number): ChunkSpan {
  let lo = 0;
  let hi = p.seqs.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (p.seqs[mid] <= seq) lo = mid;
    else hi = mid - 1;
  }
  const next = lo + 1 < p.seqs.length;
  return {
    index: lo,
    firstSeq: p.seqs[lo],
    lastSeq: next ? p.seqs[lo + 1] - 1 : e.lastSeq,
    start: p.positions[lo],
    end: next ? p.positions[lo + 1] : e.bytes,
    firstTs: p.ts[lo],
    tsMax: next ? p.ts[lo + 1] : Number.POSITIVE_INFINITY,
    crc: p.crcs[lo],
  };
}

/** A chunk's bytes as the check left them. */
export interface CheckedChunk {
  /** Position in the chunk of the frame of seq firstSeq + i * INDEX_FRAMES. */
  readonly points: Float64Array;
  /** The last seq that passed the check: the span's lastSeq unless damaged. */
  readonly checkedSeq: number;
  /** The first frame that failed the check (at seq checkedSeq + 1; its position in the object), or null. */
  readonly damage: CorruptionInfo | null;
}

/**
 * Checks every frame of a chunk, from its first seq to its last (length,
 * CRC, seq chain, ingest_ts order, and the points' first ingest_ts and
 * bound), and builds its sparse index. Bounded: each pass accepts a frame of
 * at least RECORD_BYTES_MIN bytes that lies inside `bytes`, or ends the
 * check at the damage; bytes past the last seq are never read.
 */
export async function checkChunk(baseSeq: number, span: ChunkSpan, bytes: Buffer, frameBytesMax: number): Promise<CheckedChunk> {
  const points: number[] = [];
  let pos = 0;
  let seq = span.firstSeq;
  let prevTs = span.firstTs ?? 0;
  let sliceEnd = CHECK_SLICE_BYTES;
  let damage: CorruptionInfo | null = null;
  // The chunk whole as the owner checked it: its frames' CRCs need no second look (lengths, seqs and times still do).
  const verifyCrc = span.crc === null || bytes.length !== span.end - span.start || crc32(bytes) !== span.crc;
  while (seq <= span.lastSeq) {
    if (pos >= sliceEnd) {
      await new Promise((resolve) => setImmediate(resolve));
      sliceEnd = pos + CHECK_SLICE_BYTES;
    }
    const r = checkFrame(bytes, pos, bytes.length, frameBytesMax, verifyCrc);
    const reason =
      r < 0
        ? frameProblem(r)
        : frameSeq(bytes, pos) !== seq
          ? `found seq ${frameSeq(bytes, pos)}`
          : frameTs(bytes, pos) < prevTs
            ? "ingest_ts went back"
            : frameTs(bytes, pos) > span.tsMax || (pos === 0 && span.firstTs !== null && frameTs(bytes, 0) !== span.firstTs)
              ? "ingest_ts is not the index's"
              : null;
    if (reason !== null) {
      damage = { segment: baseSeq, position: span.start + pos, seq, reason };
      break;
    }
    if ((seq - span.firstSeq) % INDEX_FRAMES === 0) points.push(pos);
    prevTs = frameTs(bytes, pos);
    pos += r;
    seq++;
  }
  return { points: Float64Array.from(points), checkedSeq: seq - 1, damage };
}

/** Position in the chunk of the frame of `seq` (firstSeq <= seq <= checkedSeq + 1): a point, then under INDEX_FRAMES accepted lengths. */
export function seekChunk(c: CheckedChunk & { firstSeq: number; start: number; bytes: Buffer }, seq: number): number {
  if (seq > c.checkedSeq) return c.damage ? c.damage.position - c.start : c.bytes.length;
  const i = Math.floor((seq - c.firstSeq) / INDEX_FRAMES);
  let pos = c.points[i];
  for (let s = c.firstSeq + i * INDEX_FRAMES; s < seq; s++) pos += u32(c.bytes, pos);
  return pos;
}
