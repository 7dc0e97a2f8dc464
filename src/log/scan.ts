// Reading a segment file record by record, checking each frame's length, CRC,
// seq chain and ingest_ts order. Recovery uses it to rebuild indexes and cut
// torn tails; the background scrub (piscina) uses it to verify closed segments.
import { readSync } from "node:fs";
import { checkFrame, frameProblem, frameSeq, frameTs, FRAME_SHORT, RECORD_HEADER_BYTES } from "./record.js";

export interface ScanResult {
  /** Bytes of whole, valid records from the start of the file. */
  validBytes: number;
  lastSeq: number;
  /** The first bad record, if the scan stopped before the end of the file. */
  damage: { position: number; seq: number; reason: string } | null;
}

const CHUNK_BYTES = 1 << 20;

export function scanSegment(
  fd: number,
  fileBytes: number,
  baseSeq: number,
  frameBytesMax: number,
  onRecord?: (seq: number, ts: number, pos: number, frameBytes: number) => void,
): ScanResult {
  let scratch = Buffer.allocUnsafe(Math.min(CHUNK_BYTES, Math.max(fileBytes, RECORD_HEADER_BYTES)));
  let pos = 0;
  let expected = baseSeq;
  let prevTs = 0;
  const stop = (p: number, reason: string): ScanResult => ({ validBytes: p, lastSeq: expected - 1, damage: { position: p, seq: expected, reason } });
  while (pos < fileBytes) {
    const got = readSync(fd, scratch, 0, Math.min(scratch.length, fileBytes - pos), pos);
    let p = 0;
    while (p < got) {
      const frameBytes = checkFrame(scratch, p, got, frameBytesMax);
      if (frameBytes < 0) {
        if (frameBytes !== FRAME_SHORT) return stop(pos + p, frameProblem(frameBytes));
        const need = got - p >= 4 ? scratch.readUInt32LE(p) : RECORD_HEADER_BYTES;
        if (pos + p + need > fileBytes) return stop(pos + p, "short"); // a torn tail
        if (need > scratch.length) scratch = Buffer.allocUnsafe(need); // one frame bigger than a chunk
        break; // read on from this frame
      }
      const seq = frameSeq(scratch, p);
      const ts = frameTs(scratch, p);
      if (seq !== expected) return stop(pos + p, `seq ${seq} where ${expected} was due`);
      if (ts < prevTs) return stop(pos + p, "ingest_ts went back");
      onRecord?.(seq, ts, pos + p, frameBytes);
      prevTs = ts;
      expected++;
      p += frameBytes;
    }
    pos += p;
  }
  return { validBytes: pos, lastSeq: expected - 1, damage: null };
}
