import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { readThrough, residency, residencyText } from "../../loadtest/lib/page-cache.js";

const dir = mkdtempSync(join(tmpdir(), "page-cache-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A file of `bytes` bytes: past one read buffer when large, under one page when small. */
function file(name: string, bytes: number): string {
  const path = join(dir, name);
  writeFileSync(path, Buffer.alloc(bytes, 7));
  return path;
}

describe("page cache residency (bench:timelines)", () => {
  it("the warm read reads every byte of every file, files larger than one read included", () => {
    const files = [file("a.log", 9 * 1024 * 1024 + 3), file("a.idx", 100)];
    expect(readThrough(files).bytes).toBe(9 * 1024 * 1024 + 103);
  });

  it("files just read are resident, and never more than their size (fincore counts the last page whole)", () => {
    const files = [file("b.log", 10), file("b.idx", 5000)];
    readThrough(files);
    const r = residency(files);
    // A machine without fincore answers "not measured" instead; this one has util-linux.
    expect(r).toEqual({ measured: true, residentBytes: 5010, totalBytes: 5010 });
    expect(residencyText(r)).toBe("resident 0.000 of 0.000 GiB (100%)");
  });

  it("without fincore it says not measured rather than failing", () => {
    const path = process.env.PATH;
    process.env.PATH = dir;
    try {
      const r = residency([file("c.log", 10)]);
      expect(r).toEqual({ measured: false, why: "fincore (util-linux) not found" });
      expect(residencyText(r)).toBe("resident: not measured (fincore (util-linux) not found)");
    } finally {
      process.env.PATH = path;
    }
  });

  it("a file fincore cannot open is not measured, with fincore's reason", () => {
    const r = residency([join(dir, "missing.log")]);
    expect(r.measured).toBe(false);
    expect(residencyText(r)).toContain("missing.log");
  });
});
