import { describe, it, expect, afterEach } from "vitest";
import { appendFileSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CheckpointStore } from "../../src/consumer/checkpoints.js";

const dirs: string[] = [];
afterEach(() => {
  while (dirs.length) rmSync(dirs.pop()!, { recursive: true, force: true });
});
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), "ticker-cp-"));
  dirs.push(d);
  return d;
};

describe("checkpoint store", () => {
  it("the last checkpoint of each group is read back, and a torn tail is cut", () => {
    const dir = tempDir();
    const a = new CheckpointStore(dir);
    a.set("g1", 5, 1000);
    a.set("g2", 7, 1001);
    a.set("g1", 9, 1002);
    a.close();
    appendFileSync(join(dir, "checkpoints.log"), Buffer.from([40, 0, 0, 0, 1, 2, 3]));
    const b = new CheckpointStore(dir);
    expect(b.get("g1")).toEqual({ seq: 9, updatedAt: 1002 });
    expect(b.get("g2")).toEqual({ seq: 7, updatedAt: 1001 });
    b.set("g2", 8);
    b.close();
    expect(new CheckpointStore(dir).get("g2")?.seq).toBe(8);
  });

  it("compacts to one record per group once the file passes its bound", () => {
    const dir = tempDir();
    const s = new CheckpointStore(dir);
    for (let i = 0; i < 60_000; i++) s.set(`group-${i % 3}`, i);
    expect(statSync(join(dir, "checkpoints.log")).size).toBeLessThan(2 << 20);
    s.close();
    const again = new CheckpointStore(dir);
    expect([again.get("group-0")?.seq, again.get("group-1")?.seq, again.get("group-2")?.seq]).toEqual([59_997, 59_998, 59_999]);
  });
});
