// Scanning a segment file: every whole, valid record in seq order is visited
// wherever the 1 MiB reads cut it, the first bad one stops the scan and is
// named, and the last commit mark tells recovery where the log may end.
import { describe, it, expect, afterEach } from "vitest";
import { closeSync, openSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { scanFrames, scanSegment } from "../../src/log/scan.js";
import { frameBytesFor, markBatchEnd, sealFrame, writeFrameHeader, RECORD_HEADER_BYTES } from "../../src/log/record.js";
import { removeTempDirs, tempDir } from "../helpers/log-frames.js";

afterEach(removeTempDirs);

const CHUNK_BYTES = 1 << 20;
const FRAME_BYTES_MAX = 4 << 20;

/** One frame of `bodyBytes` (bytes = seq & 0xff), `marked`: the last of its batch. */
function frame(seq: number, bodyBytes: number, ts: number, marked = true): Buffer {
  const fb = frameBytesFor(bodyBytes);
  const b = Buffer.alloc(fb);
  writeFrameHeader(b, 0, fb, bodyBytes, seq, ts);
  b.fill(seq & 0xff, RECORD_HEADER_BYTES, RECORD_HEADER_BYTES + bodyBytes);
  sealFrame(b, 0, fb);
  if (marked) markBatchEnd(b, 0);
  return b;
}

interface Visit {
  seq: number;
  ts: number;
  pos: number;
  frameBytes: number;
  firstBodyByte: number;
  endsBatch: boolean;
}

/** Writes `bytes` to a file and scans it whole (or up to `endPos`). */
function scan(bytes: Buffer, opts: { endPos?: number; firstSeq?: number; stopAt?: number } = {}) {
  const path = join(tempDir("ticker-scan-"), "00000000000000000001.log");
  writeFileSync(path, bytes);
  const fd = openSync(path, "r");
  const visits: Visit[] = [];
  try {
    const r = scanFrames(fd, 0, opts.endPos ?? bytes.length, opts.firstSeq ?? 1, FRAME_BYTES_MAX, (seq, ts, pos, frameBytes, buf, at, endsBatch) => {
      visits.push({ seq, ts, pos, frameBytes, firstBodyByte: buf[at + RECORD_HEADER_BYTES], endsBatch });
      return seq === opts.stopAt;
    });
    return { r, visits };
  } finally {
    closeSync(fd);
  }
}

describe("segment scan", () => {
  it("visits every record whole when the 1 MiB reads cut a frame and a frame header in two", () => {
    // A first frame sized so that a later header straddles the first read's end by 8 bytes.
    const big = 1100; // 1128-byte frames
    const fb = frameBytesFor(big);
    const firstBody = ((CHUNK_BYTES - 16) % fb) - RECORD_HEADER_BYTES; // a header straddles the 1 MiB read
    const parts = [frame(1, firstBody, 10)];
    let n = 1;
    while (parts.reduce((a, b) => a + b.length, 0) < CHUNK_BYTES + 10 * fb) parts.push(frame(++n, big, 10 + n));
    const file = Buffer.concat(parts);
    const { r, visits } = scan(file);
    expect(r.damage).toBeNull();
    expect([r.lastSeq, r.validBytes, r.committedSeq, r.committedBytes]).toEqual([n, file.length, n, file.length]);
    expect(visits.map((v) => v.seq)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    let pos = 0;
    for (const v of visits) {
      expect(v.pos).toBe(pos);
      expect(v.firstBodyByte).toBe(v.seq & 0xff);
      expect(v.ts).toBe(v.seq === 1 ? 10 : 10 + v.seq);
      pos += v.frameBytes;
    }
    // The straddle really is there: some frame starts within a header of the read's end.
    expect(visits.some((v) => v.pos < CHUNK_BYTES && v.pos + RECORD_HEADER_BYTES > CHUNK_BYTES)).toBe(true);
  });

  it("reads a frame larger than a read chunk whole, between small ones", () => {
    const file = Buffer.concat([frame(1, 100, 1), frame(2, CHUNK_BYTES + 5000, 2), frame(3, 100, 3)]);
    const { r, visits } = scan(file);
    expect(r.damage).toBeNull();
    expect(visits.map((v) => [v.seq, v.firstBodyByte])).toEqual([
      [1, 1],
      [2, 2],
      [3, 3],
    ]);
    expect(visits[1].frameBytes).toBe(frameBytesFor(CHUNK_BYTES + 5000));
  });

  it("the commit point is the last marked record; records after it are valid but uncommitted", () => {
    const file = Buffer.concat([frame(1, 40, 1, false), frame(2, 40, 1, true), frame(3, 40, 2, false), frame(4, 40, 2, false)]);
    const { r, visits } = scan(file);
    expect(r.damage).toBeNull();
    expect(visits.map((v) => v.endsBatch)).toEqual([false, true, false, false]);
    expect([r.lastSeq, r.validBytes, r.committedSeq, r.committedBytes]).toEqual([4, file.length, 2, 2 * 64]);
    const none = scan(Buffer.concat([frame(5, 40, 1, false)]), { firstSeq: 5 });
    expect([none.r.committedSeq, none.r.committedBytes, none.r.lastSeq]).toEqual([4, 0, 5]);
  });

  it("stops at the first record that breaks the seq chain, and names it", () => {
    const file = Buffer.concat([frame(1, 40, 1), frame(2, 40, 2), frame(4, 40, 3), frame(5, 40, 4)]);
    const { r, visits } = scan(file);
    expect(visits.map((v) => v.seq)).toEqual([1, 2]);
    expect(r.damage).toEqual({ position: 128, seq: 3, reason: "seq 4 where 3 was due" });
    expect([r.lastSeq, r.validBytes, r.committedSeq, r.committedBytes]).toEqual([2, 128, 2, 128]);
  });

  it("stops where ingest_ts goes back, and keeps a record with the same ts", () => {
    const { r, visits } = scan(Buffer.concat([frame(1, 40, 50), frame(2, 40, 50), frame(3, 40, 49)]));
    expect(visits.map((v) => v.seq)).toEqual([1, 2]);
    expect(r.damage).toEqual({ position: 128, seq: 3, reason: "ingest_ts went back" });
  });

  it("a bad CRC or length in the middle is damage; zeros to the end of the file are a torn tail", () => {
    const good = Buffer.concat([frame(1, 40, 1), frame(2, 40, 2), frame(3, 40, 3)]);
    const flipped = Buffer.from(good);
    flipped[64 + 30] ^= 4;
    expect(scan(flipped).r.damage).toEqual({ position: 64, seq: 2, reason: "crc" });
    const badLength = Buffer.from(good);
    badLength.writeUInt32LE(12, 64);
    expect(scan(badLength).r.damage).toEqual({ position: 64, seq: 2, reason: "length" });
    // Zeros where a record should be, then a record again: damage, not a tear.
    const zerosInside = Buffer.concat([good.subarray(0, 64), Buffer.alloc(64), good.subarray(128)]);
    expect(scan(zerosInside).r.damage).toEqual({ position: 64, seq: 2, reason: "length" });
    const zerosAtEnd = Buffer.concat([good, Buffer.alloc(200)]);
    const z = scan(zerosAtEnd);
    expect(z.r.damage).toEqual({ position: 192, seq: 4, reason: "short" });
    expect(z.visits).toHaveLength(3);
    // Zeros then a stray byte at the very end: not all zeros, so damage.
    const notAllZero = Buffer.concat([good, Buffer.alloc(200), Buffer.from([1])]);
    expect(scan(notAllZero).r.damage?.reason).toBe("length");
  });

  it("a torn tail is short: a header cut, a frame cut, or a file shorter than it was said to be", () => {
    const good = Buffer.concat([frame(1, 40, 1), frame(2, 40, 2)]);
    expect(scan(good.subarray(0, 64 + 10)).r.damage).toEqual({ position: 64, seq: 2, reason: "short" });
    expect(scan(good.subarray(0, 64 + 40)).r.damage).toEqual({ position: 64, seq: 2, reason: "short" });
    const claimed = scan(good, { endPos: good.length + 64 });
    expect(claimed.r.damage).toEqual({ position: 128, seq: 3, reason: "short" });
    expect(claimed.visits).toHaveLength(2);
    // A frame whose length reaches past the end of the file.
    const long = Buffer.from(good);
    long.writeUInt32LE(4096, 64);
    expect(scan(long).r.damage).toEqual({ position: 64, seq: 2, reason: "short" });
  });

  it("an onRecord that answers true ends the scan after that record", () => {
    const file = Buffer.concat([frame(1, 40, 1), frame(2, 40, 2), frame(3, 40, 3)]);
    const { r, visits } = scan(file, { stopAt: 2 });
    expect(visits.map((v) => v.seq)).toEqual([1, 2]);
    expect(r).toEqual({ validBytes: 128, lastSeq: 2, committedBytes: 128, committedSeq: 2, damage: null });
  });

  it("scanSegment scans from the file's first byte with the segment's base seq", () => {
    const path = join(tempDir("ticker-scan-"), "x.log");
    writeFileSync(path, Buffer.concat([frame(7, 40, 1), frame(8, 40, 2)]));
    const fd = openSync(path, "r");
    const seqs: number[] = [];
    const r = scanSegment(fd, 128, 7, FRAME_BYTES_MAX, (seq) => void seqs.push(seq));
    closeSync(fd);
    expect(seqs).toEqual([7, 8]);
    expect(r.lastSeq).toBe(8);
  });

  it("a frame larger than a read chunk is read whole also as the first record of the scan", () => {
    const { r, visits } = scan(Buffer.concat([frame(1, CHUNK_BYTES + 100, 1), frame(2, 40, 2)]));
    expect(r.damage).toBeNull();
    expect(visits.map((v) => v.seq)).toEqual([1, 2]);
  });

  it("the last record of the file is kept when a read chunk ends inside it", () => {
    const fb = frameBytesFor(1100);
    const parts: Buffer[] = [];
    let n = 0;
    while ((n + 1) * fb < CHUNK_BYTES) parts.push(frame(++n, 1100, n));
    parts.push(frame(++n, 1100, n)); // starts before the chunk's end, ends after it: the file's end
    const file = Buffer.concat(parts);
    expect(file.length).toBeGreaterThan(CHUNK_BYTES);
    const { r, visits } = scan(file);
    expect(r.damage).toBeNull();
    expect([visits.length, r.validBytes]).toEqual([n, file.length]);
  });

  it("zeros up to the end of a read chunk with records after them are damage, not a torn tail", () => {
    const fb = frameBytesFor(1100);
    const parts: Buffer[] = [];
    let n = 0;
    while ((n + 2) * fb < CHUNK_BYTES) parts.push(frame(++n, 1100, n));
    const before = parts.reduce((a, b) => a + b.length, 0);
    parts.push(Buffer.alloc(CHUNK_BYTES - before)); // a hole to the chunk's end
    parts.push(frame(n + 1, 1100, n + 1));
    const { r } = scan(Buffer.concat(parts));
    expect(r.damage).toEqual({ position: before, seq: n + 1, reason: "length" });
  });

  it("scans only the range asked for, from a record inside the file", () => {
    const path = join(tempDir("ticker-scan-"), "y.log");
    writeFileSync(path, Buffer.concat([frame(1, 40, 1), frame(2, 40, 2), frame(3, 40, 3)]));
    const fd = openSync(path, "r");
    const seqs: number[] = [];
    const r = scanFrames(fd, 64, 128, 2, FRAME_BYTES_MAX, (seq) => void seqs.push(seq));
    // Without a callback too (the scrub only wants the verdict).
    const bare = scanFrames(fd, 0, 192, 1, FRAME_BYTES_MAX);
    closeSync(fd);
    expect(seqs).toEqual([2]);
    expect([r.lastSeq, r.validBytes, r.damage]).toEqual([2, 128, null]);
    expect([bare.lastSeq, bare.damage]).toEqual([3, null]);
  });

  it("a file that ends a few bytes into what it was said to hold is a torn tail, and the scan ends", () => {
    const good = Buffer.concat([frame(1, 40, 1), frame(2, 40, 2), Buffer.alloc(10, 0x55)]);
    const r = scan(good, { endPos: 128 + 64 }).r;
    expect(r.damage).toEqual({ position: 128, seq: 3, reason: "short" });
  });

  it("zeros to the end are a torn tail whatever a previous scan left in the read buffer", () => {
    scan(Buffer.concat(Array.from({ length: 20 }, (_, i) => frame(i + 1, 40, i + 1)))); // fills the buffer with frames
    const z = scan(Buffer.concat([frame(1, 40, 1), frame(2, 40, 2), Buffer.alloc(72)]));
    expect(z.r.damage).toEqual({ position: 128, seq: 3, reason: "short" });
  });
});
