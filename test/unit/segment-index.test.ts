// A closed segment's persisted index (.idx/.tidx) is trusted only when it is
// whole and describes this very log file; anything else is rebuilt from the
// records, and either way every record is served from its seq and its time.
import { describe, it, expect, afterEach } from "vitest";
import { appendFileSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import { StreamLog } from "../../src/log/log.js";
import { Segment, type SegmentOwner } from "../../src/log/segment.js";
import { unboundedFiles } from "../../src/log/open-files.js";
import { LOG_OPTS, appendN, readAll, range, removeTempDirs, tempDir } from "../helpers/log-frames.js";

/** A segment outside any log: its file is never closed for want of room. */
const alone = (): SegmentOwner => ({ files: unboundedFiles(), mayClose: () => true });

afterEach(removeTempDirs);

/** A closed log of 3000 records over several segments; record seq s has ts 1_000 + s - 1. */
function closedLog(): string {
  const dir = tempDir();
  const log = new StreamLog(dir, LOG_OPTS);
  log.open();
  appendN(log, 3000);
  log.close();
  return dir;
}

const firstIndex = (dir: string, ext: "idx" | "tidx") =>
  join(
    dir,
    readdirSync(dir)
      .filter((f) => f.endsWith(`.${ext}`))
      .sort()[0],
  );

/** Rewrites an index file with `edit` applied and its trailing CRC made right again. */
function tamper(path: string, edit: (b: Buffer) => Buffer): void {
  const b = edit(Buffer.from(readFileSync(path)));
  b.writeUInt32LE(crc32(b.subarray(0, b.length - 4)), b.length - 4);
  writeFileSync(path, b);
}

function reopen(dir: string) {
  const log = new StreamLog(dir, LOG_OPTS);
  const report = log.open();
  return { log, report };
}

describe("segment index files", () => {
  it("a whole, matching index is loaded as is, and the segment it describes is served", () => {
    const dir = closedLog();
    const { log, report } = reopen(dir);
    expect(report.rebuiltIndexes).toBe(0);
    expect(report.corruptions).toEqual([]);
    expect(report.unverified.length).toBe(log.segments.length - 1);
    expect([log.headSeq, log.lastTs]).toEqual([3000, 1_000 + 2999]);
    const s0 = log.segments[0];
    expect(report.unverified[0]).toEqual({ path: s0.logPath, baseSeq: 1, lastSeq: s0.lastSeq });
    expect([s0.firstTs, s0.lastTs, s0.verified]).toEqual([1_000, 1_000 + s0.lastSeq - 1, false]);
    expect(readAll(log)).toEqual(range(1, 3000));
    for (const seq of [1, 2, 40, 41, 500, s0.lastSeq, s0.lastSeq + 1, 2999]) expect(log.seqAtTime(1_000 + seq - 1)).toBe(seq);
    log.close();
  });

  const edits: Array<[string, "idx" | "tidx", (b: Buffer) => Buffer]> = [
    ["the .idx magic", "idx", (b) => (b.writeUInt32LE(0x12345678, 0), b)],
    ["the .tidx magic", "tidx", (b) => (b.writeUInt32LE(0x12345678, 0), b)],
    ["the .idx version", "idx", (b) => (b.writeUInt32LE(2, 4), b)],
    ["the .tidx version", "tidx", (b) => (b.writeUInt32LE(2, 4), b)],
    ["the .idx base seq", "idx", (b) => (b.writeUInt32LE(b.readUInt32LE(8) + 1, 8), b)],
    ["the .tidx base seq", "tidx", (b) => (b.writeUInt32LE(b.readUInt32LE(8) + 1, 8), b)],
    ["the .idx log size", "idx", (b) => (b.writeUInt32LE(b.readUInt32LE(24) - 8, 24), b)],
    ["the .tidx point count", "tidx", (b) => (b.writeUInt32LE(b.readUInt32LE(16) + 1, 16), b)],
    ["a .idx point's seq (no longer the .tidx one)", "idx", (b) => (b.writeUInt32LE(b.readUInt32LE(48 + 8) + 1, 48 + 8), b)],
    ["the .idx length (not whole points)", "idx", (b) => Buffer.concat([b.subarray(0, b.length - 4), Buffer.alloc(3), b.subarray(b.length - 4)])],
    ["the .tidx length (an extra point)", "tidx", (b) => Buffer.concat([b.subarray(0, b.length - 4), Buffer.alloc(16), b.subarray(b.length - 4)])],
    ["the .idx, cut short of a header", "idx", (b) => b.subarray(0, 40)],
    ["the .tidx, cut short of a header", "tidx", (b) => b.subarray(0, 20)],
  ];
  for (const [what, ext, edit] of edits) {
    it(`an index with a wrong ${what} (CRC made right) is rebuilt, and every record is served`, () => {
      const dir = closedLog();
      tamper(firstIndex(dir, ext), edit);
      const { log, report } = reopen(dir);
      expect(report.rebuiltIndexes).toBe(1);
      expect(report.unverified.map((u) => u.baseSeq)).not.toContain(1);
      expect(log.segments[0].verified).toBe(true);
      expect(readAll(log)).toEqual(range(1, 3000));
      expect(log.seqAtTime(1_000 + 499)).toBe(500);
      log.close();
      // Rebuilt and written again: the next start trusts it.
      expect(reopen(dir).report.rebuiltIndexes).toBe(0);
    });
  }

  it("an index whose CRC does not match its bytes is rebuilt", () => {
    const dir = closedLog();
    for (const ext of ["idx", "tidx"] as const) {
      const path = firstIndex(dir, ext);
      const b = readFileSync(path);
      b[b.length - 1] ^= 1;
      writeFileSync(path, b);
      expect(reopen(dir).report.rebuiltIndexes).toBe(1);
    }
  });

  it("an index that describes a shorter log file than the one there is rebuilt", () => {
    const dir = closedLog();
    const seg0 = join(
      dir,
      readdirSync(dir)
        .filter((f) => f.endsWith(".log"))
        .sort()[0],
    );
    appendFileSync(seg0, Buffer.alloc(64));
    const { report } = reopen(dir);
    expect(report.rebuiltIndexes).toBe(1);
    expect(report.corruptions.length).toBe(1);
  });
});

describe("segment seeks", () => {
  /** A segment of `n` records of 100 body bytes (128-byte frames), an index point every 1 KiB. */
  function segmentOf(n: number): Segment {
    const seg = new Segment(tempDir(), 1, 1024, true, alone());
    for (let i = 0; i < n; i++) seg.noteRecord(1 + i, 5_000 + i, i * 128, 128);
    return seg;
  }

  it("seekSeq answers the last index point at or before a seq, so a scan from it reaches the seq", () => {
    const seg = segmentOf(100); // points at seqs 1, 9, 17, ... (every 8 records)
    expect(seg.seekSeq(1)).toEqual({ seq: 1, pos: 0 });
    expect(seg.seekSeq(8)).toEqual({ seq: 1, pos: 0 });
    expect(seg.seekSeq(9)).toEqual({ seq: 9, pos: 1024 });
    expect(seg.seekSeq(16)).toEqual({ seq: 9, pos: 1024 });
    expect(seg.seekSeq(17)).toEqual({ seq: 17, pos: 2048 });
    expect(seg.seekSeq(100)).toEqual({ seq: 97, pos: 96 * 128 });
    expect(seg.seekSeq(5000)).toEqual({ seq: 97, pos: 96 * 128 });
    seg.close();
  });

  it("seekTime answers the last index point before the first record at or after a time", () => {
    const seg = segmentOf(100);
    expect(seg.seekTime(0)).toEqual({ seq: 1, pos: 0 });
    expect(seg.seekTime(5_000)).toEqual({ seq: 1, pos: 0 });
    expect(seg.seekTime(5_008)).toEqual({ seq: 1, pos: 0 }); // seq 9 has ts 5_008: start before it
    expect(seg.seekTime(5_009)).toEqual({ seq: 9, pos: 1024 });
    expect(seg.seekTime(5_017)).toEqual({ seq: 17, pos: 2048 });
    expect(seg.seekTime(99_999)).toEqual({ seq: 97, pos: 96 * 128 });
    seg.close();
  });

  it("pointAfter answers the first index point strictly after a position, or null past the last", () => {
    const seg = segmentOf(100);
    expect(seg.pointAfter(0)).toEqual({ seq: 9, pos: 1024 });
    expect(seg.pointAfter(1023)).toEqual({ seq: 9, pos: 1024 });
    expect(seg.pointAfter(1024)).toEqual({ seq: 17, pos: 2048 });
    expect(seg.pointAfter(96 * 128 - 1)).toEqual({ seq: 97, pos: 96 * 128 });
    expect(seg.pointAfter(96 * 128)).toBeNull();
    seg.close();
  });

  it("truncateIndex drops the points at and after a cut, and indexing resumes from the last kept one", () => {
    const seg = segmentOf(20); // points at 0, 1024, 2048
    seg.truncateIndex(1024);
    expect(seg.pointAfter(-1)).toEqual({ seq: 1, pos: 0 });
    expect(seg.pointAfter(0)).toBeNull();
    seg.noteRecord(9, 5_008, 1024, 128);
    expect(seg.pointAfter(0)).toEqual({ seq: 9, pos: 1024 });
    seg.truncateIndex(0);
    expect(seg.seekSeq(9)).toEqual({ seq: 1, pos: 0 });
    seg.noteRecord(1, 5_000, 0, 128);
    seg.noteRecord(2, 5_001, 128, 128);
    expect(seg.pointAfter(-1)).toEqual({ seq: 1, pos: 0 });
    expect(seg.pointAfter(0)).toBeNull();
    seg.close();
  });

  it("a new segment's first and last record times, size and count follow its records", () => {
    const seg = segmentOf(3);
    expect([seg.firstTs, seg.lastTs, seg.size, seg.records, seg.lastSeq, seg.empty]).toEqual([5_000, 5_002, 384, 3, 3, false]);
    const fresh = new Segment(tempDir(), 7, 1024, true, alone());
    expect([fresh.empty, fresh.records, fresh.lastSeq, fresh.verified]).toEqual([true, 0, 6, true]);
    expect(() => new Segment(fresh.dir, 7, 1024, true, alone())).toThrow(/EEXIST/);
    fresh.close();
    seg.close();
  });

  it("closing a log releases every file it holds, and a closed segment reopens to be read", () => {
    const dir = closedLog();
    const fds = () => readdirSync("/proc/self/fd").length;
    const before = fds();
    const { log } = reopen(dir);
    expect(readAll(log)).toEqual(range(1, 3000));
    expect(fds()).toBeGreaterThan(before);
    log.close();
    expect(fds()).toBe(before);
    log.close();
    expect(fds()).toBe(before);
  });

  it("removing a segment deletes its files, also when it has no index yet, and reports other failures", () => {
    const dir = tempDir();
    const fresh = new Segment(dir, 1, 1024, true, alone());
    fresh.remove(); // no .idx / .tidx were ever written
    expect(readdirSync(dir)).toEqual([]);
    const other = new Segment(dir, 5, 1024, true, alone());
    mkdirSync(other.idxPath); // cannot be unlinked: the failure is not swallowed
    expect(() => other.remove()).toThrow();
    expect(existsSync(other.logPath)).toBe(false);
  });
});
