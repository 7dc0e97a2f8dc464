// The EventBatch envelope (schemas/ticker.fbs) written by hand around record
// frames that are already in memory: a replay page (and a live WebSocket
// batch) is this header followed by the frames, copied once, never re-encoded.
import { writeU32, writeU64 } from "../bytes.js";

// Slots of table EventBatch, in schema order.
const SLOT_STREAM = 0;
const SLOT_FIRST_SEQ = 1;
const SLOT_HEAD_SEQ = 2;
const SLOT_NEXT = 3;
const SLOT_COUNT = 4;
const SLOT_RECORDS = 5;
const VTABLE = 4;
const VTABLE_BYTES = 4 + 2 * 6;
const TABLE = 24; // 8-aligned, after the vtable
const T_COUNT = 4;
const T_FIRST_SEQ = 8;
const T_HEAD_SEQ = 16;
const T_NEXT = 24;
const T_STREAM = 32;
const T_RECORDS = 36;
const TABLE_BYTES = 40;

export interface BatchInfo {
  stream: string;
  firstSeq: number;
  headSeq: number;
  next: number;
  count: number;
}

/** Bytes of the envelope before the records, so that records start 8-aligned. */
export function eventBatchHeaderBytes(streamBytes: number): number {
  const afterString = TABLE + TABLE_BYTES + 4 + streamBytes + 1;
  // The records vector's u32 length sits just before 8-aligned data.
  return (afterString + 4 + 7) & ~7;
}

/**
 * Writes the envelope at `at` (8-aligned) for `recordsBytes` of frames that
 * the caller places right after it; returns the envelope's length.
 */
export function writeEventBatchHeader(buf: Uint8Array, at: number, info: BatchInfo, recordsBytes: number): number {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const streamBytes = Buffer.byteLength(info.stream);
  const headerBytes = eventBatchHeaderBytes(streamBytes);
  const table = at + TABLE;
  writeU32(b, at, TABLE); // root offset
  const slot = (i: number, off: number) => {
    b[at + VTABLE + 4 + 2 * i] = off;
    b[at + VTABLE + 5 + 2 * i] = off >>> 8;
  };
  b[at + VTABLE] = VTABLE_BYTES;
  b[at + VTABLE + 1] = 0;
  b[at + VTABLE + 2] = TABLE_BYTES;
  b[at + VTABLE + 3] = 0;
  slot(SLOT_STREAM, T_STREAM);
  slot(SLOT_FIRST_SEQ, T_FIRST_SEQ);
  slot(SLOT_HEAD_SEQ, T_HEAD_SEQ);
  slot(SLOT_NEXT, T_NEXT);
  slot(SLOT_COUNT, T_COUNT);
  slot(SLOT_RECORDS, T_RECORDS);
  writeU32(b, table, TABLE - VTABLE); // soffset to the vtable
  writeU32(b, table + T_COUNT, info.count);
  writeU64(b, table + T_FIRST_SEQ, info.firstSeq);
  writeU64(b, table + T_HEAD_SEQ, info.headSeq);
  writeU64(b, table + T_NEXT, info.next);
  const str = table + TABLE_BYTES;
  writeU32(b, table + T_STREAM, str - (table + T_STREAM));
  writeU32(b, str, streamBytes);
  b.write(info.stream, str + 4, "utf8");
  const vec = at + headerBytes - 4;
  b.fill(0, str + 4 + streamBytes, vec);
  writeU32(b, table + T_RECORDS, vec - (table + T_RECORDS));
  writeU32(b, vec, recordsBytes);
  return headerBytes;
}
