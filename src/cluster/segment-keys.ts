// The idempotency keys of an archived segment, in an object beside it
// (`<segment key>.keys`): a new owner whose copy of a stream starts after
// the archive reads these, not the segments, to remember the keys of the
// stream's dedup window, so a producer's retry of a batch that was
// acknowledged and archived just before a failover is still recognised.
// JSON: [[key, seq, ingest_ts], ...] in seq order.
import { RECORD_HEADER_BYTES, frameSeq, frameTs } from "../log/record.js";
import { EventFields } from "../wire/event-layout.js";
import { recordIdempotencyKey } from "../wire/event-codec.js";

export type SegmentKey = [key: string, seq: number, ts: number];

export const keysObjectOf = (segmentObject: string) => `${segmentObject}.keys`;

/** The keyed records of a closed segment's bytes (this node's own file), in order. */
export function keysOfSegment(bytes: Buffer): SegmentKey[] {
  const out: SegmentKey[] = [];
  const fields = new EventFields();
  for (let at = 0; at + RECORD_HEADER_BYTES <= bytes.length; ) {
    const frameBytes = bytes.readUInt32LE(at);
    // A frame shorter than its header would not move on: the file ends there for this walk.
    if (frameBytes < RECORD_HEADER_BYTES || at + frameBytes > bytes.length) break;
    const key = recordIdempotencyKey(bytes, at, fields);
    if (key !== null) out.push([key, frameSeq(bytes, at), frameTs(bytes, at)]);
    at += frameBytes;
  }
  return out;
}

/**
 * A keys object as read back from shared storage: null unless it is what
 * keysOfSegment wrote for seqs base..last (at most `max` entries, seqs rising).
 */
export function parseKeys(text: string, base: number, last: number, max: number): SegmentKey[] | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  if (!Array.isArray(v) || v.length > max) return null;
  let prev = base - 1;
  for (const e of v) {
    if (!Array.isArray(e) || e.length !== 3 || typeof e[0] !== "string" || !Number.isSafeInteger(e[1]) || !Number.isSafeInteger(e[2])) return null;
    if (e[1] <= prev || e[1] > last) return null;
    prev = e[1];
  }
  return v as SegmentKey[];
}
