import { describe, it, expect, afterEach } from "vitest";
import { appendFileSync, ftruncateSync, readdirSync, statSync, writeFileSync, openSync, writeSync, closeSync, readFileSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { StreamLog, CorruptRecordError } from "../../src/log/log.js";
import {
  checkFrame,
  frameBytesFor,
  frameSeq,
  frameTs,
  sealFrame,
  writeFrameHeader,
  FRAME_BAD_CRC,
  FRAME_BAD_LENGTH,
  FRAME_SHORT,
  RECORD_HEADER_BYTES,
} from "../../src/log/record.js";
import { crc32Range } from "../../src/crc.js";
import { crc32 } from "node:zlib";
import { LOG_OPTS, appendN, frames, readAll, range, removeTempDirs, tempDir } from "../helpers/log-frames.js";

afterEach(removeTempDirs);

const OPTS = LOG_OPTS;

describe("record framing", () => {
  it("a sealed frame checks out, and any flipped bit is caught by its CRC", () => {
    const { buf } = frames(7, 1, 40, 123);
    const fb = frameBytesFor(40);
    expect(checkFrame(buf, 0, fb, 1 << 20)).toBe(fb);
    expect(frameSeq(buf, 0)).toBe(7);
    expect(frameTs(buf, 0)).toBe(123);
    for (const bit of [8 * 8, 8 * 20, 8 * (RECORD_HEADER_BYTES + 5) + 3, 8 * 4]) {
      const copy = Buffer.from(buf);
      copy[bit >> 3] ^= 1 << (bit & 7);
      expect(checkFrame(copy, 0, fb, 1 << 20)).toBe(FRAME_BAD_CRC);
    }
  });

  it("frames are 8-byte aligned, a cut frame is short and a silly length is rejected", () => {
    expect(frameBytesFor(1) % 8).toBe(0);
    expect(frameBytesFor(40)).toBe(64);
    const { buf } = frames(1, 1, 40, 1);
    expect(checkFrame(buf, 0, 50, 1 << 20)).toBe(FRAME_SHORT);
    expect(checkFrame(buf, 0, 10, 1 << 20)).toBe(FRAME_SHORT);
    const bad = Buffer.from(buf);
    bad.writeUInt32LE(12, 0);
    expect(checkFrame(bad, 0, 64, 1 << 20)).toBe(FRAME_BAD_LENGTH);
    bad.writeUInt32LE(1 << 24, 0);
    expect(checkFrame(bad, 0, 64, 1 << 20)).toBe(FRAME_BAD_LENGTH);
  });
});

describe("crc32 of a range", () => {
  it("equals zlib.crc32 for every length from 0 to 2 KiB and any offset", () => {
    const buf = Buffer.alloc(4096);
    for (let i = 0; i < buf.length; i++) buf[i] = (i * 7919 + 13) & 0xff;
    for (let len = 0; len <= 2048; len += len < 64 ? 1 : 37) {
      for (const start of [0, 1, 3, 8]) expect(crc32Range(buf, start, start + len)).toBe(crc32(buf.subarray(start, start + len)));
    }
  });
});

describe("log append, index seek and read", () => {
  it("reads every seq back in order across many segments, from any starting seq", () => {
    const log = new StreamLog(tempDir(), OPTS);
    log.open();
    appendN(log, 5000);
    expect(log.headSeq).toBe(5000);
    expect(log.segments.length).toBeGreaterThan(5);
    expect(readAll(log)).toEqual(range(1, 5000));
    for (const from of [1, 2, 57, 58, 499, 1234, 4999, 5000]) {
      const page = log.read(from, Number.MAX_SAFE_INTEGER, 3, 1 << 20, Buffer.alloc(1 << 20));
      expect(page.count).toBe(Math.min(3, 5001 - from));
      expect(frameSeq(page.buf, 0)).toBe(from);
    }
    expect(log.read(5001, Number.MAX_SAFE_INTEGER, 10, 1 << 20, Buffer.alloc(1 << 16)).count).toBe(0);
  });

  it("an append of a frame over frameBytesMax, which a read or recovery would take for damage, throws; one at the bound is appended", () => {
    const log = new StreamLog(tempDir(), { ...OPTS, frameBytesMax: frameBytesFor(1000) });
    log.open();
    const ok = frames(1, 1, 1000, 1);
    log.append(ok.buf, ok.bytes, 1, false);
    const over = frames(2, 1, 1008, 2);
    expect(() => log.append(over.buf, over.bytes, 1, false)).toThrow(/log invariant: a 1032-byte frame, over frameBytesMax \(1024\)/);
    expect(log.headSeq).toBe(1);
    expect(readAll(log)).toEqual([1]);
  });

  it("honours to, the event limit and the byte limit, always sending at least one record", () => {
    const log = new StreamLog(tempDir(), OPTS);
    log.open();
    appendN(log, 300, { bodyBytes: 1000 });
    const out = Buffer.alloc(1 << 20);
    expect(log.read(10, 19, 100, 1 << 20, out).count).toBe(10);
    expect(log.read(10, 1000, 7, 1 << 20, out).count).toBe(7);
    const fb = frameBytesFor(1000);
    const page = log.read(10, 1000, 100, fb * 5 + 10, out);
    expect(page.count).toBe(5);
    expect(page.bytes).toBe(fb * 5);
    expect(page.next).toBe(15);
    expect(log.read(10, 1000, 100, 10, out).count).toBe(1);
  });

  it("reads a record far larger than the segment's average, alone or after small ones", () => {
    const log = new StreamLog(tempDir(), { ...OPTS, segmentBytesMax: 1 << 20 });
    log.open();
    appendN(log, 50, { bodyBytes: 100 });
    const big = frames(51, 1, 100_000, 5_000);
    log.append(big.buf, big.bytes, 1, false);
    appendN(log, 5, { bodyBytes: 100 });
    const out = Buffer.alloc(1 << 20);
    const alone = log.read(51, 51, 10, 4096, out);
    expect([alone.count, frameSeq(alone.buf, 0), alone.bytes]).toEqual([1, 51, big.bytes]);
    expect(log.read(45, 100, 100, 1 << 19, out).count).toBe(12);
    expect(readAll(log)).toEqual(range(1, 56));
  });

  it("seeks by time to the first record at or after it", () => {
    const log = new StreamLog(tempDir(), OPTS);
    log.open();
    appendN(log, 3000, { bodyBytes: 100, batch: 50, ts: 10_000 }); // record n has ts 10_000 + n - 1
    expect(log.seqAtTime(0)).toBe(1);
    expect(log.seqAtTime(10_000)).toBe(1);
    expect(log.seqAtTime(10_500)).toBe(501);
    expect(log.seqAtTime(12_999)).toBe(3000);
    expect(log.seqAtTime(13_000)).toBe(3001);
  });
});

describe("log recovery", () => {
  it("restores head_seq and the index of every segment after a clean reopen", () => {
    const dir = tempDir();
    const a = new StreamLog(dir, OPTS);
    a.open();
    appendN(a, 4000);
    a.close();
    const b = new StreamLog(dir, OPTS);
    const report = b.open();
    expect(report.truncatedBytes).toBe(0);
    expect(report.rebuiltIndexes).toBe(0);
    expect(b.headSeq).toBe(4000);
    expect(readAll(b)).toEqual(range(1, 4000));
    expect(b.seqAtTime(1_000 + 1999)).toBe(2000);
  });

  it("cuts a torn tail (a half-written frame, then garbage) and keeps every whole record", () => {
    const dir = tempDir();
    const a = new StreamLog(dir, OPTS);
    a.open();
    appendN(a, 1000);
    const lastPath = a.active.logPath;
    const sizeBefore = statSync(lastPath).size;
    a.close();
    const torn = frames(1001, 1, 100, 5000).buf.subarray(0, 70);
    appendFileSync(lastPath, torn);
    appendFileSync(lastPath, Buffer.from("garbage after the tear"));
    const b = new StreamLog(dir, OPTS);
    const report = b.open();
    expect(report.truncatedBytes).toBe(70 + 22);
    expect(statSync(lastPath).size).toBe(sizeBefore);
    expect(b.headSeq).toBe(1000);
    expect(readAll(b)).toEqual(range(1, 1000));
    const f = frames(1001, 5, 100, 9000);
    b.append(f.buf, f.bytes, 5, false);
    expect(readAll(b)).toEqual(range(1, 1005));
  });

  it("a flipped bit in the tail record cuts the log back to the record before it", () => {
    const dir = tempDir();
    const a = new StreamLog(dir, OPTS);
    a.open();
    appendN(a, 100);
    const path = a.active.logPath;
    a.close();
    const fd = openSync(path, "r+");
    const size = statSync(path).size;
    const b1 = Buffer.alloc(1);
    const at = size - 10;
    b1[0] = readFileSync(path)[at] ^ 0x10;
    writeSync(fd, b1, 0, 1, at);
    closeSync(fd);
    const b = new StreamLog(dir, OPTS);
    b.open();
    expect(b.headSeq).toBe(99);
  });

  it("a torn tail shorter than a header, whose first bytes claim a tiny length, ends recovery instead of spinning", () => {
    // A 10-byte tail whose length field says 5: once a shape that looped forever.
    for (const tail of [
      Buffer.from([5, 0, 0, 0, 1, 2, 3, 4, 5, 6]),
      Buffer.from([0, 0, 0, 0]),
      Buffer.from([24, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]),
    ]) {
      const dir = tempDir();
      const a = new StreamLog(dir, OPTS);
      a.open();
      appendN(a, 20);
      const path = a.active.logPath;
      a.close();
      appendFileSync(path, tail);
      const b = new StreamLog(dir, OPTS);
      const report = b.open();
      expect(b.headSeq).toBe(20);
      expect(report.truncatedBytes).toBe(tail.length);
      b.close();
    }
  });

  it("a batch torn part-way (971 of its 1,000 records on disk) is cut whole, and the batches before it are kept", () => {
    const dir = tempDir();
    const opts = { ...OPTS, segmentBytesMax: 1 << 30 }; // one segment throughout
    const a = new StreamLog(dir, opts);
    a.open();
    appendN(a, 200, { bodyBytes: 100, batch: 100 }); // two whole batches
    const f = frames(201, 1000, 100, 5_000);
    a.append(f.buf, f.bytes, 1000, false);
    const path = a.active.logPath;
    const whole = statSync(path).size;
    a.close();
    const fb = frameBytesFor(100);
    // A crash mid-write: whole frames of the batch, then part of the next one.
    for (const keep of [971 * fb, 971 * fb + 13, fb, 999 * fb]) {
      const fd = openSync(path, "r+");
      ftruncateSync(fd, whole - 1000 * fb + keep);
      closeSync(fd);
      const b = new StreamLog(dir, opts);
      const report = b.open();
      expect(b.headSeq).toBe(200);
      expect(report.uncommittedRecords).toBe(Math.floor(keep / fb));
      expect(readAll(b)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
      b.close();
      // Publishing goes on at the seq the torn batch would have had.
      const c = new StreamLog(dir, opts);
      c.open();
      const g = frames(201, 3, 100, 6_000);
      c.append(g.buf, g.bytes, 3, false);
      expect(readAll(c).slice(-4)).toEqual([200, 201, 202, 203]);
      c.close();
      const again = new StreamLog(dir, opts);
      again.open();
      expect(again.headSeq).toBe(203);
      again.close();
      // Back to the long batch for the next shape.
      const fd2 = openSync(path, "r+");
      ftruncateSync(fd2, whole - 1000 * fb);
      closeSync(fd2);
      const d = new StreamLog(dir, opts);
      d.open();
      d.append(f.buf, f.bytes, 1000, false);
      d.close();
    }
  });

  it("a log written before commit marks keeps every whole record, and is marked so the next crash is cut by batch", () => {
    const dir = tempDir();
    const a = new StreamLog(dir, OPTS);
    a.open();
    const fb = frameBytesFor(100);
    const buf = Buffer.alloc(fb * 30);
    for (let i = 0; i < 30; i++) {
      writeFrameHeader(buf, i * fb, fb, 100, i + 1, 1_000 + i);
      sealFrame(buf, i * fb, fb); // no mark anywhere: the old format
    }
    a.append(buf, buf.length, 30, false);
    a.close();
    const b = new StreamLog(dir, OPTS);
    b.open(false, true);
    expect(b.headSeq).toBe(30);
    b.close();
    // Marked now: the format-2 rule keeps all of it too.
    const c = new StreamLog(dir, OPTS);
    expect(c.open().uncommittedRecords).toBe(0);
    expect(c.headSeq).toBe(30);
    c.close();
  });

  it("rebuilds a missing or damaged index of a closed segment", () => {
    const dir = tempDir();
    const a = new StreamLog(dir, OPTS);
    a.open();
    appendN(a, 3000);
    a.close();
    const idx = readdirSync(dir)
      .filter((f) => f.endsWith(".idx"))
      .sort();
    unlinkSync(join(dir, idx[0]));
    writeFileSync(join(dir, idx[1]), Buffer.from("not an index"));
    const b = new StreamLog(dir, OPTS);
    const report = b.open();
    expect(report.rebuiltIndexes).toBe(2);
    expect(readAll(b)).toEqual(range(1, 3000));
    expect(readdirSync(dir).filter((f) => f.endsWith(".idx")).length).toBe(idx.length);
  });

  it("a damaged record in a closed segment is reported and never served", () => {
    const dir = tempDir();
    const a = new StreamLog(dir, OPTS);
    a.open();
    appendN(a, 3000);
    const first = a.segments[0];
    const path = first.logPath;
    const damagedSeq = 100;
    const fb = frameBytesFor(100);
    a.close();
    const fd = openSync(path, "r+");
    writeSync(fd, Buffer.from([0xff]), 0, 1, (damagedSeq - 1) * fb + RECORD_HEADER_BYTES + 3);
    closeSync(fd);
    const b = new StreamLog(dir, OPTS);
    b.open();
    const out = Buffer.alloc(1 << 20);
    const page = b.read(90, 200, 1000, 1 << 20, out);
    expect(page.count).toBe(10);
    expect(page.corrupt?.seq).toBe(damagedSeq);
    expect(() => b.read(damagedSeq, 200, 1000, 1 << 20, out)).toThrow(CorruptRecordError);
    // Reading past it through the index still works.
    expect(b.read(damagedSeq + 100, damagedSeq + 100, 1, 1 << 20, out).count).toBe(1);
  });

  it("a closed segment's last record whose length now runs past the segment's end is damage, never an empty page that reads as caught up", () => {
    const dir = tempDir();
    const a = new StreamLog(dir, OPTS);
    a.open();
    appendN(a, 3000);
    const first = a.segments[0];
    const path = first.logPath;
    const lastSeq = first.lastSeq;
    const fb = frameBytesFor(100);
    a.close();
    // Bit 5 of the length field: 32 bytes more, still 8-aligned and under the limit.
    const fd = openSync(path, "r+");
    const at = (lastSeq - 1) * fb;
    writeSync(fd, Buffer.from([fb ^ 0x20]), 0, 1, at);
    closeSync(fd);
    const b = new StreamLog(dir, OPTS);
    b.open(); // the index matches the file's size: the segment is read on trust
    const out = Buffer.alloc(1 << 20);
    let err: unknown = null;
    try {
      b.read(lastSeq, lastSeq, 1, 1 << 20, out);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CorruptRecordError);
    expect((err as CorruptRecordError).info.seq).toBe(lastSeq);
    expect(b.read(lastSeq - 1, lastSeq + 5, 100, 1 << 20, out).corrupt?.seq).toBe(lastSeq);
  });
});

describe("log retention", () => {
  it("deletes expired closed segments, moves first_seq and frees their disk", () => {
    const dir = tempDir();
    const log = new StreamLog(dir, OPTS);
    log.open();
    appendN(log, 3000, { bodyBytes: 100, batch: 50, ts: 1_000 });
    const segs = log.segments.length;
    const bytesBefore = log.bytes;
    // Everything older than ts 2_500 goes, segment by segment.
    const removed = log.applyRetention(2_500 + 1_000, 1_000, null, false);
    expect(removed).toBeGreaterThan(0);
    expect(log.segments.length).toBe(segs - removed);
    expect(log.firstSeq).toBeGreaterThan(1);
    expect(log.bytes).toBeLessThan(bytesBefore);
    expect(readAll(log)).toEqual(range(log.firstSeq, 3000));
    // All expired: even the active segment is rolled and removed, head is kept.
    log.applyRetention(1e12, 1_000, null, false);
    expect(log.firstSeq).toBe(3001);
    expect(log.headSeq).toBe(3000);
    log.close();
    const again = new StreamLog(dir, OPTS);
    again.open();
    expect(again.headSeq).toBe(3000);
    expect(again.firstSeq).toBe(3001);
  });

  it("keeps the log under retention_bytes by dropping the oldest segments", () => {
    const log = new StreamLog(tempDir(), OPTS);
    log.open();
    appendN(log, 5000);
    log.applyRetention(0, 1e15, 200_000, false);
    expect(log.bytes).toBeLessThanOrEqual(200_000 + OPTS.segmentBytesMax);
    expect(readAll(log)).toEqual(range(log.firstSeq, 5000));
  });
});
