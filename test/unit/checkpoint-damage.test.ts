// A checkpoint is loaded only from a record whose length and CRC check out:
// damage costs the records it hits (a group falls back to an older
// checkpoint: redelivery, never loss), and never yields a seq nobody acked.
import { describe, it, expect, afterEach } from "vitest";
import { appendFileSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, mkdtempSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { CheckpointStore, CHECKPOINTS_FILE } from "../../src/consumer/checkpoints.js";
import { crc32Range } from "../../src/crc.js";

const dirs: string[] = [];
afterEach(() => {
  while (dirs.length) rmSync(dirs.pop()!, { recursive: true, force: true });
});
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), "ticker-cpd-"));
  dirs.push(d);
  return d;
};

const HEADER_BYTES = 24;
/** Byte offsets of the records a fresh store writes for these (group, seq) sets, in order. */
function writeStore(dir: string, sets: Array<[string, number]>): number[] {
  const s = new CheckpointStore(dir);
  const at: number[] = [];
  let pos = 0;
  for (const [g, seq] of sets) {
    at.push(pos);
    s.set(g, seq, 1_700_000_000_000 + seq);
    pos += HEADER_BYTES + g.length;
  }
  s.close();
  return at;
}
const file = (dir: string) => join(dir, CHECKPOINTS_FILE);

describe("checkpoint damage", () => {
  it("a record with a bad CRC is never loaded: its group falls back to its previous checkpoint", () => {
    const dir = tempDir();
    const at = writeStore(dir, [
      ["g1", 5],
      ["g2", 7],
      ["g1", 9],
    ]);
    const buf = readFileSync(file(dir));
    buf[at[2] + 8] ^= 0x40; // seq 9 -> 73 in the newest g1 record, its CRC unchanged
    writeFileSync(file(dir), buf);
    const s = new CheckpointStore(dir);
    expect(s.get("g1")).toEqual({ seq: 5, updatedAt: 1_700_000_000_005 });
    expect(s.get("g2")?.seq).toBe(7);
    // A damaged last record is cut like a torn tail (the file ends where the valid ones do).
    expect(statSync(file(dir)).size).toBe(at[2]);
    s.close();
  });

  it("damage in the middle is skipped, the records after it are kept, reported and compacted", () => {
    const dir = tempDir();
    const at = writeStore(dir, [
      ["g1", 5],
      ["g2", 7],
      ["g3", 8],
      ["g1", 9],
    ]);
    const buf = readFileSync(file(dir));
    buf[at[1] + 4] ^= 0x01; // g2's CRC
    writeFileSync(file(dir), buf);
    const s = new CheckpointStore(dir);
    expect(s.get("g2")).toBeUndefined();
    expect([s.get("g1")?.seq, s.get("g3")?.seq]).toEqual([9, 8]);
    expect(s.damage).toMatch(/^26 damaged bytes from byte 26 skipped/);
    // Compacted at once: one record per group, and a reload finds no damage.
    expect(statSync(file(dir)).size).toBe(2 * (HEADER_BYTES + 2));
    expect(existsSync(`${file(dir)}.tmp`)).toBe(false);
    s.set("g2", 11, 1);
    s.close();
    const again = new CheckpointStore(dir);
    expect(again.damage).toBeNull();
    expect([again.get("g1")?.seq, again.get("g2")?.seq, again.get("g3")?.seq]).toEqual([9, 11, 8]);
    again.close();
  });

  it("a flipped bit anywhere never loads a checkpoint that was not set", () => {
    const dir = tempDir();
    const sets: Array<[string, number]> = [
      ["alpha", 3],
      ["beta", 4],
      ["alpha", 10],
      ["gamma", 12],
      ["beta", 20],
    ];
    writeStore(dir, sets);
    const clean = readFileSync(file(dir));
    const setSeqs = new Map<string, Set<number>>();
    for (const [g, seq] of sets) (setSeqs.get(g) ?? setSeqs.set(g, new Set()).get(g)!).add(seq);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: clean.length * 8 - 1 }), (bit) => {
        const buf = Buffer.from(clean);
        buf[bit >> 3] ^= 1 << (bit & 7);
        writeFileSync(file(dir), buf);
        const s = new CheckpointStore(dir);
        for (const [g, c] of s.groups) {
          expect(setSeqs.get(g), `group "${g}" loaded from damage`).toBeDefined();
          expect(setSeqs.get(g)!.has(c.seq), `seq ${c.seq} of ${g}`).toBe(true);
        }
        s.close();
      }),
      { numRuns: 100 },
    );
  });

  it("garbage after the records is cut and named when it is more than a torn record", () => {
    const dir = tempDir();
    const at = writeStore(dir, [["g1", 5]]);
    const end = at[0] + HEADER_BYTES + 2;
    const torn = Buffer.concat([readFileSync(file(dir)), Buffer.alloc(10, 0xff)]);
    writeFileSync(file(dir), torn);
    const a = new CheckpointStore(dir);
    expect(a.damage).toBeNull(); // a torn tail: a crash mid-write, not damage
    expect(statSync(file(dir)).size).toBe(end);
    a.close();
    writeFileSync(file(dir), Buffer.concat([readFileSync(file(dir)), Buffer.alloc(500, 0xff)]));
    const b = new CheckpointStore(dir);
    expect(b.damage).toBe(`500 bytes after byte ${end} are not records; cut`);
    expect(b.get("g1")?.seq).toBe(5);
    expect(statSync(file(dir)).size).toBe(end);
    b.close();
  });

  it("no file is created by reading, and the first set creates it", () => {
    const dir = tempDir();
    const s = new CheckpointStore(dir);
    expect(s.get("g")).toBeUndefined();
    expect(existsSync(file(dir))).toBe(false);
    expect(s.set("g", 4, 99)).toEqual({ seq: 4, updatedAt: 99 });
    expect(statSync(file(dir)).size).toBe(HEADER_BYTES + 1);
    s.close();
    expect(new CheckpointStore(dir).get("g")).toEqual({ seq: 4, updatedAt: 99 });
  });

  it("a group name of 128 characters is stored, one longer is refused", () => {
    const dir = tempDir();
    const s = new CheckpointStore(dir);
    const longest = "g".repeat(128);
    s.set(longest, 3, 1);
    expect(() => s.set(`${longest}g`, 4, 2)).toThrow(/129 characters/);
    s.close();
    expect(new CheckpointStore(dir).get(longest)?.seq).toBe(3);
  });

  it("damage at the very first byte is skipped like any other, and the records after it are kept", () => {
    const dir = tempDir();
    writeStore(dir, [
      ["g1", 5],
      ["g2", 7],
    ]);
    const buf = readFileSync(file(dir));
    buf[0] ^= 0x02; // g1's length
    writeFileSync(file(dir), buf);
    const s = new CheckpointStore(dir);
    expect([s.get("g1"), s.get("g2")?.seq]).toEqual([undefined, 7]);
    expect(s.damage).toBe("26 damaged bytes from byte 0 skipped; the valid records after them kept");
    s.close();
  });

  it("a record with no group name, though its CRC checks out, is not a checkpoint", () => {
    const dir = tempDir();
    writeStore(dir, [["g1", 5]]);
    const empty = Buffer.alloc(HEADER_BYTES);
    empty.writeUInt32LE(HEADER_BYTES, 0);
    empty.writeUInt32LE(9, 8);
    empty.writeUInt32LE(crc32Range(empty, 8, HEADER_BYTES), 4);
    appendFileSync(file(dir), empty);
    writeStore(dir, []); // nothing: just a reopen and close
    const s = new CheckpointStore(dir);
    expect([...s.groups.keys()]).toEqual(["g1"]);
    s.close();
  });

  it("the file stays within its bound by compacting, and holds the newest checkpoint of each group", () => {
    const dir = tempDir();
    const s = new CheckpointStore(dir);
    // 40,000 records of 31 bytes: past the 1 MiB bound once.
    for (let i = 0; i < 40_000; i++) s.set(`group-${i % 3}`, i, 1);
    expect(statSync(file(dir)).size).toBeLessThan(1 << 20);
    expect(statSync(file(dir)).size % 31).toBe(0);
    s.close();
    const again = new CheckpointStore(dir);
    expect([0, 1, 2].map((g) => again.get(`group-${g}`)?.seq)).toEqual([39_999, 39_997, 39_998]);
    expect(again.damage).toBeNull();
    again.close();
  });

  it("closing a store releases its file", () => {
    const dir = tempDir();
    writeStore(dir, [["g1", 5]]);
    const fds = () => readdirSync("/proc/self/fd").length;
    const before = fds();
    const s = new CheckpointStore(dir);
    expect(fds()).toBe(before + 1);
    s.close();
    expect(fds()).toBe(before);
    s.close(); // twice: nothing more to close
    expect(fds()).toBe(before);
  });

  it("compaction replaces the file by rename (a crash leaves the old one whole), never rewrites it in place", () => {
    const dir = tempDir();
    const at = writeStore(dir, [
      ["g1", 5],
      ["g2", 7],
      ["g3", 8],
    ]);
    const buf = readFileSync(file(dir));
    buf[at[1] + 4] ^= 0x01;
    writeFileSync(file(dir), buf);
    const inode = statSync(file(dir)).ino;
    const s = new CheckpointStore(dir); // damage in the middle: compacted at once
    expect(statSync(file(dir)).ino).not.toBe(inode);
    s.close();
  });

  it("garbage after the records longer than one record is reported, up to one record is a torn write", () => {
    const dir = tempDir();
    const at = writeStore(dir, [["g1", 5]]);
    const end = at[0] + HEADER_BYTES + 2;
    const clean = readFileSync(file(dir));
    const RECORD_BYTES_MAX = HEADER_BYTES + 128;
    for (const [tail, reported] of [
      [100, false],
      [RECORD_BYTES_MAX, false],
      [RECORD_BYTES_MAX + 1, true],
    ] as const) {
      writeFileSync(file(dir), Buffer.concat([clean, Buffer.alloc(tail, 0xff)]));
      const s = new CheckpointStore(dir);
      expect(s.damage, `${tail} bytes`).toBe(reported ? `${tail} bytes after byte ${end} are not records; cut` : null);
      expect(statSync(file(dir)).size).toBe(end);
      s.close();
    }
    // A file of nothing but garbage: reported, emptied.
    writeFileSync(file(dir), Buffer.alloc(500, 0xff));
    const g = new CheckpointStore(dir);
    expect(g.damage).toBe("500 bytes after byte 0 are not records; cut");
    expect(g.groups.size).toBe(0);
    g.close();
  });

  it("a record longer than any the store writes is not loaded, though its CRC checks out", () => {
    const dir = tempDir();
    writeStore(dir, [["g1", 5]]);
    const name = Buffer.from("g".repeat(129));
    const rec = Buffer.alloc(HEADER_BYTES + name.length);
    rec.writeUInt32LE(rec.length, 0);
    rec.writeUInt32LE(9, 8);
    name.copy(rec, HEADER_BYTES);
    rec.writeUInt32LE(crc32Range(rec, 8, rec.length), 4);
    appendFileSync(file(dir), rec);
    const s = new CheckpointStore(dir);
    expect([...s.groups.keys()]).toEqual(["g1"]);
    s.close();
  });
});
