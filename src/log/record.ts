// Record framing. A record is framed once, when it is appended, and those
// bytes are what the log stores and what replay and live fan-out send:
//
//   0  u32  frame_bytes   whole frame, header included, a multiple of 8
//   4  u32  crc32         zlib.crc32 of bytes [8, frame_bytes)
//   8  u64  seq
//  16  u64  ingest_ts     ms since epoch
//  24  ...  body          a FlatBuffers Event, zero-padded to the frame end
//
// Frames start 8-aligned so the FlatBuffers body is aligned for any reader.
import { crc32 } from "node:zlib";

export const RECORD_HEADER_BYTES = 24;
/** A frame can never be smaller than a header plus the smallest Event. */
export const RECORD_BYTES_MIN = RECORD_HEADER_BYTES + 8;

export const frameBytesFor = (bodyBytes: number) => (RECORD_HEADER_BYTES + bodyBytes + 7) & ~7;

/** Writes header fields (not the CRC) and zeroes the padding after `bodyBytes`. */
export function writeFrameHeader(buf: Buffer, at: number, frameBytes: number, bodyBytes: number, seq: number, ingestTs: number): void {
  buf.writeUInt32LE(frameBytes, at);
  buf.writeBigUInt64LE(BigInt(seq), at + 8);
  buf.writeBigUInt64LE(BigInt(ingestTs), at + 16);
  buf.fill(0, at + RECORD_HEADER_BYTES + bodyBytes, at + frameBytes);
}

/** Computes and stores the CRC of a frame whose other bytes are final. */
export function sealFrame(buf: Buffer, at: number, frameBytes: number): void {
  buf.writeUInt32LE(crc32(buf.subarray(at + 8, at + frameBytes)), at + 4);
}

export const frameSeq = (buf: Buffer, at: number) => Number(buf.readBigUInt64LE(at + 8));
export const frameTs = (buf: Buffer, at: number) => Number(buf.readBigUInt64LE(at + 16));

export type FrameCheck =
  | { ok: true; frameBytes: number }
  | { ok: false; reason: "short" | "length" | "crc" };

/**
 * Checks the frame at `at` among `end` bytes. "short" means the buffer ends
 * inside the frame (read more, or a torn tail); "length" and "crc" mean the
 * bytes are not a valid record.
 */
export function checkFrame(buf: Buffer, at: number, end: number, frameBytesMax: number): FrameCheck {
  if (end - at < RECORD_HEADER_BYTES) return { ok: false, reason: "short" };
  const frameBytes = buf.readUInt32LE(at);
  if (frameBytes < RECORD_BYTES_MIN || frameBytes > frameBytesMax || (frameBytes & 7) !== 0) {
    return { ok: false, reason: "length" };
  }
  if (end - at < frameBytes) return { ok: false, reason: "short" };
  if (crc32(buf.subarray(at + 8, at + frameBytes)) !== buf.readUInt32LE(at + 4)) return { ok: false, reason: "crc" };
  return { ok: true, frameBytes };
}
