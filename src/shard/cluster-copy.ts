// Whether a node's own copy of a stream can be kept when it gains the
// stream's shard, and the tail rows that extend it. A copy is kept only if it
// is a prefix of what the cluster holds: split where the archive ends, not
// behind it, not past the cluster's head, and its newest event the cluster's
// event at that seq. The last check catches a copy of an earlier life of the
// stream (deleted, then made again while this node did not own it), whose
// seqs line up with the new one's by chance. Then its dedup window again,
// from the archive's .keys objects and the copy.
import { RECORD_HEADER_BYTES } from "../log/record.js";
import type { ArchivedEnd } from "../cluster/removal.js";
import type { TailRow } from "../cluster/tail.js";
import type { Archive, Manifest } from "../cluster/archive.js";
import { keysObjectOf, parseKeys } from "../cluster/segment-keys.js";
import { logger } from "../logger.js";
import type { Stream } from "./stream.js";

export interface ClusterState {
  /** The last archived seq (0: none). */
  archivedThrough: number;
  /** The tail rows from archivedThrough + 1 (or from the copy's head, if lower), in seq order. */
  rows: TailRow[];
  /** The last seq the cluster holds. */
  clusterHead: number;
  /** The manifest's segment ending at archivedThrough. */
  archivedEnd: () => Promise<ArchivedEnd | null>;
}

export async function copyLinesUp(s: Stream, c: ClusterState, scratch: Buffer): Promise<boolean> {
  const log = s.log;
  const head = log.headSeq;
  if (head < c.archivedThrough || head > c.clusterHead) return false;
  if (c.archivedThrough > 0 && !log.segments.some((g) => g.baseSeq === c.archivedThrough + 1)) return false;
  if (head > c.archivedThrough) return sameFrame(s, head, frameIn(c.rows, head), scratch);
  if (head === 0) return true;
  // The copy ends where the archive does: its segment ending there (if it still keeps it) is the archived one.
  const own = log.segments.find((g) => g.lastSeq === head && !g.empty);
  if (!own) return true; // it holds no event: nothing of an earlier life to serve
  const archived = await c.archivedEnd();
  return archived !== null && archived.baseSeq === own.baseSeq && archived.bytes === own.size && archived.lastTs === own.lastTs;
}

/** The frame of `seq` in the rows, or null. */
function frameIn(rows: TailRow[], seq: number): Buffer | null {
  const row = rows.find((r) => r.firstSeq <= seq && seq <= r.lastSeq);
  if (!row) return null;
  const frames = Buffer.from(row.records.buffer, row.records.byteOffset, row.records.byteLength);
  let at = 0;
  for (let n = row.firstSeq; at + RECORD_HEADER_BYTES <= frames.length; n++) {
    const bytes = frames.readUInt32LE(at);
    if (bytes < RECORD_HEADER_BYTES || at + bytes > frames.length) return null;
    if (n === seq) return frames.subarray(at, at + bytes);
    at += bytes;
  }
  return null;
}

/** Whether the copy's frame of `seq` is `theirs`, but for the commit mark (which batch it ended). */
function sameFrame(s: Stream, seq: number, theirs: Buffer | null, scratch: Buffer): boolean {
  if (theirs === null || s.log.firstSeq > seq) return false;
  let page: ReturnType<typeof s.log.read>;
  try {
    page = s.log.read(seq, seq, 1, scratch.length, scratch);
  } catch {
    return false; // damaged here: the copy starts again after the archive
  }
  if (page.count !== 1) return false;
  const bytes = page.buf.readUInt32LE(0);
  return bytes === theirs.length && page.buf.subarray(8, bytes).equals(theirs.subarray(8));
}

/** A committed tail row into the log as it was framed (seqs, ingest_ts, commit mark and all). */
export function appendRow(s: Stream, row: TailRow): void {
  const frames = Buffer.from(row.records);
  let count = 0;
  for (let at = 0; at + RECORD_HEADER_BYTES <= frames.length; count++) {
    const frameBytes = frames.readUInt32LE(at);
    if (frameBytes < RECORD_HEADER_BYTES) throw new Error(`stream ${s.id}: tail row ${row.firstSeq}..${row.lastSeq} has a ${frameBytes}-byte frame`);
    at += frameBytes;
  }
  if (count !== row.lastSeq - row.firstSeq + 1) throw new Error(`stream ${s.id}: tail row ${row.firstSeq}..${row.lastSeq} holds ${count} frames`);
  s.log.append(frames, frames.length, count, false);
}

/**
 * The stream's dedup window again: the keys of archived segments below
 * this node's copy (their .keys objects), then those of the copy.
 */
export async function rememberKeys(s: Stream, manifest: Manifest, archive: Archive, keysMax: number): Promise<void> {
  const windowMs = s.config.dedup_window_ms;
  s.dedup.clear();
  if (windowMs > 0 && s.log.firstSeq > 1) {
    const segments = await manifest.keyedSince(s.id, s.log.firstSeq, Date.now() - windowMs, keysMax);
    for (const seg of segments.reverse()) {
      const keys = parseKeys((await archive.get(keysObjectOf(seg.key))).toString("utf8"), seg.baseSeq, seg.lastSeq, keysMax);
      if (!keys) {
        logger().error(
          { kind: "cluster", stream: s.id, segment: seg.key },
          `stream ${s.id}: the keys of archived segment ${seg.key} are damaged; its idempotency keys are not remembered`,
        );
        continue;
      }
      for (const [key, seq, ts] of keys) s.dedup.add(key, seq, ts);
    }
  }
  s.rebuildDedup();
}
