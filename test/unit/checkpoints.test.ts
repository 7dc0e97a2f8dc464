import { describe, it, expect, afterEach } from "vitest";
import { appendFileSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
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

  it("a damaged record in the middle costs only itself: later checkpoints are kept, a bad CRC is never loaded, and the file is rewritten clean", () => {
    const dir = tempDir();
    const a = new CheckpointStore(dir);
    a.set("g1", 5, 1000);
    a.set("g2", 7, 1001); // the record damaged below
    a.set("g1", 9, 1002);
    a.set("g3", 4, 1003);
    a.close();
    const path = join(dir, "checkpoints.log");
    const file = readFileSync(path);
    const second = file.readUInt32LE(0); // offset of g2's record
    file[second + 12] ^= 0x01; // inside g2's seq: its CRC no longer matches
    writeFileSync(path, file);
    const b = new CheckpointStore(dir);
    expect(b.get("g2")).toBeUndefined(); // never loaded with a flipped seq
    expect(b.get("g1")).toEqual({ seq: 9, updatedAt: 1002 });
    expect(b.get("g3")).toEqual({ seq: 4, updatedAt: 1003 });
    expect(b.damage).toMatch(/damaged bytes from byte/);
    b.close();
    const c = new CheckpointStore(dir);
    expect(c.damage).toBeNull();
    expect([c.get("g1")?.seq, c.get("g3")?.seq, c.get("g2")]).toEqual([9, 4, undefined]);
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
