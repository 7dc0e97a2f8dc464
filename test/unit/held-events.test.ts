// The held-events file of an ordered-ingest stream: what was added comes
// back after a reopen, a torn or damaged file gives back a prefix of it and
// never a damaged entry, settling empties or compacts it, and a file the
// shard's open-file cache closed is opened again on next use.
import fc from "fast-check";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { HELD_FILE, type HeldEntry, HeldStore, decodeHeld, heldEntryBytes } from "../../src/shard/held-events.js";
import { removeTempDirs, tempDir } from "../helpers/log-frames.js";
import { OpenFiles } from "../../src/log/open-files.js";

const ENTRY_BYTES_MAX = 64 * 1024;

afterEach(removeTempDirs);

const entry = (producerId: string, producerSeq: number, frameBytes = 40): HeldEntry => ({
  producerId,
  producerSeq,
  receivedMs: 1_700_000_000_000 + producerSeq,
  frame: Buffer.alloc(frameBytes, producerSeq & 0xff),
});

const reopened = (dir: string) => {
  const store = new HeldStore(dir, ENTRY_BYTES_MAX);
  const load = store.open();
  store.close();
  return load;
};

describe("held events on disk", () => {
  it("what was added, in batches, comes back after a reopen exactly as it was", () => {
    const dir = tempDir();
    const store = new HeldStore(dir, ENTRY_BYTES_MAX);
    expect(store.open().entries).toEqual([]);
    const batches = [[entry("a", 3), entry("a", 4, 0)], [entry("é-producer", 9, 1001)], [entry("b", 2 ** 40, 7)]];
    for (const b of batches) store.add(b, true);
    store.close();
    const load = reopened(dir);
    expect(load.damage).toBeNull();
    expect(load.entries).toEqual(batches.flat());
  });

  it("settling with nothing held empties the file; with most released it keeps only what is still held", () => {
    const dir = tempDir();
    const store = new HeldStore(dir, ENTRY_BYTES_MAX);
    store.open();
    const many = Array.from({ length: 20 }, (_, i) => entry("a", i + 2));
    store.add(many, false);
    const settle = (live: HeldEntry[]) =>
      store.settle(
        live.reduce((n, e) => n + heldEntryBytes(e), 0),
        () => live,
      );
    settle(many.slice(5)); // 15 of 20 live: under 4x their bytes, left as it is
    expect(reopened(dir).entries).toEqual(many);
    settle(many.slice(16)); // 4 of 20 live: the file is past 4x their bytes, so rewritten
    expect(reopened(dir).entries).toEqual(many.slice(16));
    const before = store.bytes;
    store.add([entry("a", 30)], false);
    store.cutTo(before); // the batch of a request that failed after it was written
    expect(reopened(dir).entries).toEqual(many.slice(16));
    store.add([entry("a", 31)], false);
    settle([]);
    expect(store.bytes).toBe(0);
    store.close();
    expect(readFileSync(join(dir, HELD_FILE)).length).toBe(0);
  });

  it("two stores sharing one open file close each other's held.log at every use, and adds, cuts and a rewrite still land in the right file", () => {
    const files = new OpenFiles(1);
    const dirs = [tempDir(), tempDir()];
    const stores = dirs.map((d) => new HeldStore(d, ENTRY_BYTES_MAX, files));
    for (const st of stores) st.open();
    const added: HeldEntry[][] = [[], []];
    for (let i = 0; i < 20; i++) {
      const k = i % 2;
      const e = entry(`p${k}`, i + 2);
      stores[k].add([e], false);
      added[k].push(e);
      expect(files.size).toBe(1);
    }
    const before = stores[0].bytes;
    stores[0].add([entry("p0", 99)], false);
    stores[1].add([entry("p1", 99)], false); // closes store 0's file
    stores[0].cutTo(before);
    added[1].push(entry("p1", 99));
    const live = added[0].slice(-2);
    stores[0].settle(
      live.reduce((n, e) => n + heldEntryBytes(e), 0),
      () => live,
    ); // rewritten: renamed over the old file, opened again on next use
    stores[0].add([entry("p0", 100)], false);
    stores[1].add([entry("p1", 100)], false);
    expect(files.evictions).toBeGreaterThan(20);
    for (const st of stores) st.close();
    expect(files.size).toBe(0);
    expect(reopened(dirs[0]).entries).toEqual([...live, entry("p0", 100)]);
    expect(reopened(dirs[1]).entries).toEqual([...added[1], entry("p1", 100)]);
  });

  it("a file cut at any byte or with any bit flipped gives back a prefix of what was added, never a damaged entry, and is cut there", () => {
    const dir = tempDir();
    const store = new HeldStore(dir, ENTRY_BYTES_MAX);
    store.open();
    const added = [entry("p1", 2), entry("p2", 5, 100), entry("p1", 3, 3), entry("p3", 7, 250)];
    store.add(added.slice(0, 2), false);
    store.add(added.slice(2), false);
    store.close();
    const whole = readFileSync(join(dir, HELD_FILE));
    fc.assert(
      fc.property(
        fc.oneof(
          fc.record({ cut: fc.integer({ min: 0, max: whole.length }) }),
          fc.record({ flipAt: fc.integer({ min: 0, max: whole.length - 1 }), bit: fc.integer({ min: 0, max: 7 }) }),
        ),
        (damage) => {
          let bytes = Buffer.from(whole);
          if ("cut" in damage) bytes = bytes.subarray(0, damage.cut);
          else bytes[damage.flipAt] ^= 1 << damage.bit;
          writeFileSync(join(dir, HELD_FILE), bytes);
          const load = reopened(dir);
          expect(added.slice(0, load.entries.length)).toEqual(load.entries);
          expect([0, 2, 4], "whole batches only").toContain(load.entries.length); // batches of 2 and 2
          if ("flipAt" in damage) expect(load.entries.length).toBeLessThan(added.length); // a flip is always seen
          if (load.cutBytes > 0) expect(load.damage).not.toBeNull(); // what is cut is said
          // Cut where it stopped: a second open finds nothing wrong.
          const again = reopened(dir);
          expect(again.damage).toBeNull();
          expect(again.entries).toEqual(load.entries);
        },
      ),
      { numRuns: 500 },
    );
  });

  it("a producer id longer than 65,535 bytes (event_field_bytes_max allows it) comes back whole", () => {
    const dir = tempDir();
    const store = new HeldStore(dir, 1 << 20);
    store.open();
    const long = entry("p".repeat(70_000), 2);
    store.add([long], true);
    store.close();
    const again = new HeldStore(dir, 1 << 20);
    expect(again.open().entries).toEqual([long]);
    again.close();
  });

  it("decoding arbitrary bytes always ends, moving forward, and never returns more than the bytes could hold", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 4096 }), (raw) => {
        const load = decodeHeld(Buffer.from(raw), ENTRY_BYTES_MAX);
        expect(load.entries.length).toBeLessThanOrEqual(Math.floor(raw.length / 40));
        expect(load.cutBytes).toBeGreaterThanOrEqual(0);
        expect(load.cutBytes).toBeLessThanOrEqual(raw.length);
      }),
      { numRuns: 2000 },
    );
  });

  it("release markers: a released entry does not come back after a reopen; the same producer_seq held again later (another receipt) does", () => {
    const dir = tempDir();
    const store = new HeldStore(dir, ENTRY_BYTES_MAX);
    store.open();
    const a3 = entry("a", 3);
    const a4 = entry("a", 4);
    store.add([a3, a4], false);
    store.release([a3]);
    expect(reopened(dir).entries).toEqual([a4]);
    const again = { ...a3, receivedMs: a3.receivedMs + 86_400_000 }; // forgotten, then held anew
    store.add([again], false);
    expect(reopened(dir).entries).toEqual([a4, again]);
    store.close();
  });
});
