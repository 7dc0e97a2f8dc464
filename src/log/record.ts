// Record framing. A record is framed once, when it is appended, and those
// bytes are what the log stores and what replay and live fan-out send:
//
//   0  u32  frame_bytes   whole frame, header included, a multiple of 8
//   4  u32  crc32         zlib.crc32 of bytes [8, frame_bytes); complemented
//                         (~crc) on the last record of each appended batch
//   8  u64  seq
//  16  u64  ingest_ts     ms since epoch
//  24  ...  body          a FlatBuffers Event, zero-padded to the frame end
//
// Frames start 8-aligned so the FlatBuffers body is aligned for any reader.
//
// The complemented CRC is the batch's commit mark. A crash can tear a batch
// anywhere (a pwrite interrupted by SIGKILL is short), leaving whole, valid
// frames of a batch nobody was told about; recovery cuts the log back to the
// last marked frame, so a batch is on disk whole or not at all. The mark
// costs no byte and no syscall, and a reader that ignores it (or checks the
// CRC either way) reads the same frames.
import { crc32Range } from "../crc.js";
import { readU64, u32, writeU32, writeU64 } from "../bytes.js";

export const RECORD_HEADER_BYTES = 24;
/** A frame can never be smaller than a header plus the smallest Event. */
export const RECORD_BYTES_MIN = RECORD_HEADER_BYTES + 8;

export const frameBytesFor = (bodyBytes: number) => (RECORD_HEADER_BYTES + bodyBytes + 7) & ~7;

/** Writes header fields (not the CRC) and zeroes the padding after `bodyBytes`. */
export function writeFrameHeader(buf: Buffer, at: number, frameBytes: number, bodyBytes: number, seq: number, ingestTs: number): void {
  writeU32(buf, at, frameBytes);
  stampFrame(buf, at, seq, ingestTs);
  for (let i = at + RECORD_HEADER_BYTES + bodyBytes; i < at + frameBytes; i++) buf[i] = 0;
}

/** Stamps seq and ingest_ts into a frame whose length and body are final. */
export function stampFrame(buf: Buffer, at: number, seq: number, ingestTs: number): void {
  writeU64(buf, at + 8, seq);
  writeU64(buf, at + 16, ingestTs);
}

/** Computes and stores the CRC of a frame whose other bytes are final. */
export function sealFrame(buf: Buffer, at: number, frameBytes: number): void {
  writeU32(buf, at + 4, crc32Range(buf, at + 8, at + frameBytes));
}

/** Marks a sealed frame as the last of its batch (the commit mark). */
export function markBatchEnd(buf: Buffer, at: number): void {
  writeU32(buf, at + 4, ~u32(buf, at + 4) >>> 0);
}

export const frameSeq = (buf: Buffer, at: number) => readU64(buf, at + 8);
export const frameTs = (buf: Buffer, at: number) => readU64(buf, at + 16);

/** checkFrame results below zero: why the bytes at `at` are not a usable record. */
export const FRAME_SHORT = -1;
export const FRAME_BAD_LENGTH = -2;
export const FRAME_BAD_CRC = -3;

export const frameProblem = (code: number) => (code === FRAME_SHORT ? "short" : code === FRAME_BAD_LENGTH ? "length" : "crc");

/**
 * Checks the frame at `at` among `end` bytes and returns its length, or a
 * negative code: FRAME_SHORT means the buffer ends inside the frame (read
 * more, or a torn tail); FRAME_BAD_LENGTH and FRAME_BAD_CRC mean the bytes
 * are not a valid record. `verifyCrc` false skips the CRC for bytes already
 * verified since they were last read from disk (see Segment.verified).
 */
export function checkFrame(buf: Buffer, at: number, end: number, frameBytesMax: number, verifyCrc = true): number {
  if (!verifyCrc) {
    if (end - at < RECORD_HEADER_BYTES) return FRAME_SHORT;
    const frameBytes = u32(buf, at);
    if (frameBytes < RECORD_BYTES_MIN || frameBytes > frameBytesMax || (frameBytes & 7) !== 0) return FRAME_BAD_LENGTH;
    return end - at < frameBytes ? FRAME_SHORT : frameBytes;
  }
  const r = checkFrameMarked(buf, at, end, frameBytesMax);
  return r < 0 ? r : r & ~BATCH_END;
}

/** In checkFrameMarked's result: the frame carries its batch's commit mark. */
export const BATCH_END = 1;

/**
 * checkFrame with the CRC always checked, telling also whether the frame is
 * the last of its batch: frame_bytes | BATCH_END for a marked frame (frame
 * sizes are multiples of 8, so the bit is free), or a negative code.
 */
export function checkFrameMarked(buf: Buffer, at: number, end: number, frameBytesMax: number): number {
  if (end - at < RECORD_HEADER_BYTES) return FRAME_SHORT;
  const frameBytes = u32(buf, at);
  if (frameBytes < RECORD_BYTES_MIN || frameBytes > frameBytesMax || (frameBytes & 7) !== 0) return FRAME_BAD_LENGTH;
  if (end - at < frameBytes) return FRAME_SHORT;
  const crc = crc32Range(buf, at + 8, at + frameBytes);
  const stored = u32(buf, at + 4);
  if (crc === stored) return frameBytes;
  if (~crc >>> 0 === stored) return frameBytes | BATCH_END;
  return FRAME_BAD_CRC;
}
