// A frame is accepted only when its length is a plausible record inside the
// bytes at hand, and (unless the bytes were verified since they were read)
// its CRC matches, either way round: plain, or complemented as a commit mark.
import { describe, it, expect } from "vitest";
import {
  BATCH_END,
  FRAME_BAD_CRC,
  FRAME_BAD_LENGTH,
  FRAME_SHORT,
  RECORD_BYTES_MIN,
  RECORD_HEADER_BYTES,
  checkFrame,
  checkFrameMarked,
  frameBytesFor,
  frameProblem,
  frameSeq,
  frameTs,
  markBatchEnd,
  sealFrame,
  stampFrame,
  writeFrameHeader,
} from "../../src/log/record.js";
import { readU64, u32, writeU64 } from "../../src/bytes.js";

const MAX = 4096;

/** A sealed frame of `bodyBytes` at offset `at` of a buffer filled with 0xff around it. */
function frameAt(at: number, bodyBytes: number, seq = 5, ts = 77, tail = 16): { buf: Buffer; fb: number } {
  const fb = frameBytesFor(bodyBytes);
  const buf = Buffer.alloc(at + fb + tail, 0xff);
  writeFrameHeader(buf, at, fb, bodyBytes, seq, ts);
  buf.fill(0xab, at + RECORD_HEADER_BYTES, at + RECORD_HEADER_BYTES + bodyBytes);
  sealFrame(buf, at, fb);
  return { buf, fb };
}

describe("frame checks", () => {
  it("a header plus the smallest Event (32 bytes) is the smallest frame, the largest allowed the largest", () => {
    expect(RECORD_BYTES_MIN).toBe(32);
    const min = frameAt(40, 8);
    expect(min.fb).toBe(32);
    expect(checkFrame(min.buf, 40, 40 + 32, MAX)).toBe(32);
    expect(checkFrame(min.buf, 40, 40 + 32, MAX, false)).toBe(32);
    const max = frameAt(8, MAX - RECORD_HEADER_BYTES);
    expect(checkFrame(max.buf, 8, max.buf.length, MAX)).toBe(MAX);
    expect(checkFrame(max.buf, 8, max.buf.length, MAX, false)).toBe(MAX);
    expect(checkFrame(max.buf, 8, max.buf.length, MAX - 8)).toBe(FRAME_BAD_LENGTH);
    expect(checkFrame(max.buf, 8, max.buf.length, MAX - 8, false)).toBe(FRAME_BAD_LENGTH);
  });

  for (const verify of [true, false]) {
    it(`lengths below 32, above the maximum or not a multiple of 8 are bad (CRC ${verify ? "checked" : "skipped"})`, () => {
      const { buf } = frameAt(16, 100);
      for (const bad of [0, 8, 24, 28, 33, 36, 132, MAX + 8]) {
        const b = Buffer.from(buf);
        b.writeUInt32LE(bad, 16);
        expect(checkFrame(b, 16, b.length, MAX, verify), `length ${bad}`).toBe(FRAME_BAD_LENGTH);
      }
    });

    it(`a frame is short until every byte of it is there, wherever it starts (CRC ${verify ? "checked" : "skipped"})`, () => {
      const { buf, fb } = frameAt(24, 100);
      expect(checkFrame(buf, 24, 24 + fb, MAX, verify)).toBe(fb);
      expect(checkFrame(buf, 24, 24 + fb - 1, MAX, verify)).toBe(FRAME_SHORT);
      expect(checkFrame(buf, 24, 24 + RECORD_HEADER_BYTES, MAX, verify)).toBe(FRAME_SHORT);
      expect(checkFrame(buf, 24, 24 + RECORD_HEADER_BYTES - 1, MAX, verify)).toBe(FRAME_SHORT);
      expect(checkFrame(buf, 24, 24, MAX, verify)).toBe(FRAME_SHORT);
    });
  }

  it("fewer bytes than a header are short whatever follows them in the buffer, a whole header's length is checked", () => {
    const junk = Buffer.alloc(64, 0xff);
    for (const verify of [true, false]) {
      expect(checkFrame(junk, 8, 8 + RECORD_HEADER_BYTES - 1, MAX, verify)).toBe(FRAME_SHORT);
      expect(checkFrame(junk, 8, 8 + RECORD_HEADER_BYTES, MAX, verify)).toBe(FRAME_BAD_LENGTH);
    }
    expect(checkFrameMarked(junk, 8, 8 + RECORD_HEADER_BYTES - 1, MAX)).toBe(FRAME_SHORT);
  });

  it("a bad CRC is caught when checked, and skipped only when asked (bytes verified since read)", () => {
    const { buf, fb } = frameAt(8, 100);
    buf[8 + 40] ^= 1;
    expect(checkFrame(buf, 8, buf.length, MAX)).toBe(FRAME_BAD_CRC);
    expect(checkFrameMarked(buf, 8, buf.length, MAX)).toBe(FRAME_BAD_CRC);
    expect(checkFrame(buf, 8, buf.length, MAX, false)).toBe(fb);
  });

  it("the commit mark (a complemented CRC) is a valid frame, told apart only by checkFrameMarked", () => {
    const { buf, fb } = frameAt(8, 100);
    expect(checkFrameMarked(buf, 8, buf.length, MAX)).toBe(fb);
    markBatchEnd(buf, 8);
    expect(checkFrameMarked(buf, 8, buf.length, MAX)).toBe(fb | BATCH_END);
    expect(checkFrame(buf, 8, buf.length, MAX)).toBe(fb);
    expect(checkFrame(buf, 8, buf.length, MAX, false)).toBe(fb);
    markBatchEnd(buf, 8); // twice: unmarked again
    expect(checkFrameMarked(buf, 8, buf.length, MAX)).toBe(fb);
  });

  it("names each problem", () => {
    expect([FRAME_SHORT, FRAME_BAD_LENGTH, FRAME_BAD_CRC].map(frameProblem)).toEqual(["short", "length", "crc"]);
    expect(new Set([FRAME_SHORT, FRAME_BAD_LENGTH, FRAME_BAD_CRC]).size).toBe(3);
    expect(Math.max(FRAME_SHORT, FRAME_BAD_LENGTH, FRAME_BAD_CRC)).toBeLessThan(0);
  });
});

describe("frame fields", () => {
  it("the header carries length, seq and ingest_ts, and the padding after the body is zeroed", () => {
    const { buf, fb } = frameAt(8, 33, 2 ** 40 + 3, 1_764_000_000_123);
    expect(fb).toBe(64);
    expect(u32(buf, 8)).toBe(64);
    expect(frameSeq(buf, 8)).toBe(2 ** 40 + 3);
    expect(frameTs(buf, 8)).toBe(1_764_000_000_123);
    expect([...buf.subarray(8 + RECORD_HEADER_BYTES + 33, 8 + fb)]).toEqual([0, 0, 0, 0, 0, 0, 0]);
    expect(buf[8 + fb]).toBe(0xff); // nothing past the frame is touched
    stampFrame(buf, 8, 9, 10);
    expect([frameSeq(buf, 8), frameTs(buf, 8)]).toEqual([9, 10]);
  });

  it("u32 and u64 fields round-trip their whole range", () => {
    const b = Buffer.alloc(16);
    for (const v of [0, 1, 0xff, 0x100, 0x7fffffff, 0x80000000, 0xffffffff, 2 ** 32, 2 ** 53 - 1]) {
      writeU64(b, 4, v);
      expect(readU64(b, 4)).toBe(v);
      expect(b.readBigUInt64LE(4)).toBe(BigInt(v));
      if (v <= 0xffffffff) expect(u32(b, 4)).toBe(v);
    }
  });
});
