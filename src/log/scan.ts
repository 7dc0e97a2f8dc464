// Reading a segment file record by record, checking each frame's length, CRC,
// seq chain and ingest_ts order. Recovery uses it to rebuild indexes and cut
// torn tails, the background scrub (piscina) to verify closed segments, and
// the log to seek by time and to rebuild the idempotency window.
//
// Bounded: every pass of the outer loop consumes at least one frame or ends
// the scan, whatever the bytes say. A length field is trusted only once
// checkFrame has accepted it (at least a header plus an Event, at most
// frameBytesMax, 8-aligned, inside the file), and the read buffer grows to
// one frame at most.
import { readSync } from "node:fs";
import { BATCH_END, checkFrame, checkFrameMarked, frameProblem, frameSeq, frameTs, FRAME_SHORT, RECORD_HEADER_BYTES } from "./record.js";
import { u32 } from "../bytes.js";

export interface ScanResult {
  /** File position after the last whole, valid record. */
  validBytes: number;
  lastSeq: number;
  /** File position after the last record that carries its batch's commit mark. */
  committedBytes: number;
  /** Seq of that record (firstSeq - 1 if none). */
  committedSeq: number;
  /** The first bad record, if the scan stopped before the end. */
  damage: { position: number; seq: number; reason: string } | null;
}

/**
 * Called per valid record; `buf[at..at+frameBytes)` holds it until the
 * callback returns. Returning true stops the scan after this record.
 */
export type OnRecord = (seq: number, ts: number, pos: number, frameBytes: number, buf: Buffer, at: number, endsBatch: boolean) => boolean | undefined;

/** Bytes a scan reads at a time: a few syscalls per MiB of segment, and a frame larger than it grows the buffer to that frame. */
const CHUNK_BYTES = 1024 * 1024;

/** Per thread: scans are synchronous, and a buffer per stream would cost 1 MiB each. */
let shared: Buffer | null = null;

/**
 * Reads the records in [fromPos, endPos) of a segment file, the first of
 * which must carry `firstSeq`, and stops at the first one that is not a
 * valid continuation (reported as damage). `verifyCrc` false: the bytes
 * were verified since they were last read from disk (Segment.verified).
 */
export function scanFrames(
  fd: number,
  fromPos: number,
  endPos: number,
  firstSeq: number,
  frameBytesMax: number,
  onRecord?: OnRecord,
  verifyCrc = true,
): ScanResult {
  let buf = (shared ??= Buffer.allocUnsafe(CHUNK_BYTES));
  let pos = fromPos;
  let expected = firstSeq;
  let prevTs = 0;
  let committedBytes = fromPos;
  let committedSeq = firstSeq - 1;
  const stop = (p: number, reason: string): ScanResult => ({
    validBytes: p,
    lastSeq: expected - 1,
    committedBytes,
    committedSeq,
    damage: { position: p, seq: expected, reason },
  });
  while (pos < endPos) {
    const got = readSync(fd, buf, 0, Math.min(buf.length, endPos - pos), pos);
    if (got === 0) return stop(pos, "short"); // the file is shorter than it was said to be
    let p = 0;
    let grown = false;
    while (p < got) {
      // Without the CRC (bytes this process verified already) the mark is unknown: never a batch end.
      const r = verifyCrc ? checkFrameMarked(buf, p, got, frameBytesMax) : checkFrame(buf, p, got, frameBytesMax, false);
      if (r === FRAME_SHORT) {
        const left = endPos - (pos + p);
        if (left < RECORD_HEADER_BYTES) return stop(pos + p, "short"); // a torn tail
        if (got - p < RECORD_HEADER_BYTES) break; // the header straddles this read: read on from it
        // The header is whole, so checkFrame has vetted the length already.
        const need = u32(buf, p);
        if (need > left) return stop(pos + p, "short");
        if (need > buf.length) {
          buf = Buffer.allocUnsafe(need); // one frame larger than a chunk, for this scan only
          grown = true;
        }
        break;
      }
      if (r < 0) {
        // Zeros to the end of the file are where a power loss left the size
        // ahead of the data: a torn tail too, not a damaged record.
        if (pos + got === endPos && isZero(buf, p, got)) return stop(pos + p, "short");
        return stop(pos + p, frameProblem(r));
      }
      const frameBytes = r & ~BATCH_END;
      const seq = frameSeq(buf, p);
      const ts = frameTs(buf, p);
      if (seq !== expected) return stop(pos + p, `seq ${seq} where ${expected} was due`);
      if (ts < prevTs) return stop(pos + p, "ingest_ts went back");
      const endsBatch = (r & BATCH_END) !== 0;
      if (endsBatch) {
        committedBytes = pos + p + frameBytes;
        committedSeq = seq;
      }
      prevTs = ts;
      expected++;
      const done = onRecord?.(seq, ts, pos + p, frameBytes, buf, p, endsBatch) === true;
      p += frameBytes;
      if (done) return { validBytes: pos + p, lastSeq: expected - 1, committedBytes, committedSeq, damage: null };
    }
    // No frame taken and no room made for one: the read came back shorter
    // than the file was said to be. Reading again would spin forever.
    if (p === 0 && !grown) return stop(pos, "short");
    pos += p;
  }
  return { validBytes: pos, lastSeq: expected - 1, committedBytes, committedSeq, damage: null };
}

function isZero(buf: Buffer, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (buf[i] !== 0) return false;
  return true;
}

/** Scans a whole segment file from its first record. */
export function scanSegment(fd: number, fileBytes: number, baseSeq: number, frameBytesMax: number, onRecord?: OnRecord): ScanResult {
  return scanFrames(fd, 0, fileBytes, baseSeq, frameBytesMax, onRecord);
}
