// A log's directory is read back by its file names alone: every segment is
// found, in seq order, and nothing else there (indexes, a half-written
// index, stream.json, checkpoints) is taken for one.
import { describe, it, expect } from "vitest";
import { idxPath, logPath, partialPath, segmentBases, tidxPath } from "../../src/log/file-names.js";

describe("segment file names", () => {
  it("a segment's files are named by its base seq, zero-padded to 20 digits", () => {
    expect(logPath("/d", 1)).toBe("/d/00000000000000000001.log");
    expect(idxPath("/d", 4_096)).toBe("/d/00000000000000004096.idx");
    expect(tidxPath("/d", Number.MAX_SAFE_INTEGER)).toBe("/d/00009007199254740991.tidx");
  });

  it("the segments in a directory come back in seq order, whatever order the names are listed in", () => {
    const bases = [1, 9_999, 10_000, 123_456_789, 2, Number.MAX_SAFE_INTEGER];
    const names = bases.map((b) => logPath("", b));
    expect(segmentBases([...names].reverse())).toEqual([...bases].sort((a, b) => a - b));
  });

  it("index files, half-written files and other names are not taken for segments", () => {
    const seg = logPath("", 7);
    const names = [
      seg,
      idxPath("", 7),
      tidxPath("", 7),
      partialPath(idxPath("", 7)),
      partialPath(seg),
      "stream.json",
      "checkpoints.log",
      "7.log",
      "0000000000000000007.log",
      "000000000000000000007.log",
      "0000000000000000000a.log",
    ];
    expect(segmentBases(names)).toEqual([7]);
  });
});
