// Reader positions in the data dir (src/timeline/readers-log.ts,
// src/timeline/readers.ts): a position is there after a reopen as last
// answered; damage costs only the records it hits and never yields a
// position nobody stored; positions of an older stream set are not loaded;
// timeline_readers_max holds at its limit. (With PostgreSQL and Redis:
// test/integration/timeline-readers-external.test.ts.)
import { afterEach, describe, expect, it } from "vitest";
import { appendFileSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { removeTempDirs, tempDir as tempDirOf } from "../helpers/log-frames.js";
import { refusal } from "../helpers/refusal.js";
import { CursorSigner } from "../../src/timeline/cursor.js";
import { NamedTimelines } from "../../src/timeline/names.js";
import { READERS_FILE, RECORD_BYTES_MAX, ReadersLog } from "../../src/timeline/readers-log.js";
import { ReaderPositions, checkReaderId } from "../../src/timeline/readers.js";

afterEach(removeTempDirs);
const tempDir = () => tempDirOf("ticker-readers-");

const readerId = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,12}$/);
const cursorText = fc.stringMatching(/^[A-Za-z0-9_-]{1,80}$/);
const HEADER_BYTES = 17;

describe("the readers log", () => {
  it("keeps the last position of each reader across a reopen", () => {
    const dir = tempDir();
    const log = new ReadersLog(dir, 0);
    log.put("r1", { cursor: "AAAA", updatedAt: 10 });
    log.put("r2", { cursor: "BBBB", updatedAt: 11 });
    log.put("r1", { cursor: "CCCC", updatedAt: 12 });
    const again = new ReadersLog(dir, 0);
    expect(Object.fromEntries(again.positions)).toEqual({ r1: { cursor: "CCCC", updatedAt: 12 }, r2: { cursor: "BBBB", updatedAt: 11 } });
    expect(again.damage).toBeNull();
  });

  it("a torn tail (a crash mid-write) is cut and the next position goes where it began", () => {
    const dir = tempDir();
    const log = new ReadersLog(dir, 0);
    log.put("r1", { cursor: "AAAA", updatedAt: 10 });
    const whole = statSync(join(dir, READERS_FILE)).size;
    appendFileSync(join(dir, READERS_FILE), Buffer.from([40, 0, 0, 0, 1, 2, 3]));
    const again = new ReadersLog(dir, 0);
    expect(statSync(join(dir, READERS_FILE)).size).toBe(whole);
    again.put("r2", { cursor: "BBBB", updatedAt: 11 });
    expect(new ReadersLog(dir, 0).positions.size).toBe(2);
  });

  it("positions older than the timeline's stream set are not loaded, and the file is rewritten without them", () => {
    const dir = tempDir();
    const log = new ReadersLog(dir, 0);
    log.put("old", { cursor: "AAAA", updatedAt: 99 });
    log.put("new", { cursor: "BBBB", updatedAt: 100 });
    const since100 = new ReadersLog(dir, 100);
    expect([...since100.positions.keys()]).toEqual(["new"]);
    expect([...new ReadersLog(dir, 0).positions.keys()]).toEqual(["new"]);
  });

  it("damage anywhere never yields a position nobody stored, and loading ends (a bounded pass over the bytes)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(readerId, cursorText), { minLength: 1, maxLength: 30 }),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 8 }),
        fc.uint8Array({ maxLength: 64 }),
        (writes, flips, garbage) => {
          const dir = tempDir();
          const log = new ReadersLog(dir, 0);
          const written = new Map<string, Set<string>>();
          writes.forEach(([r, c], i) => {
            log.put(r, { cursor: c, updatedAt: 1000 + i });
            if (!written.has(r)) written.set(r, new Set());
            written.get(r)!.add(`${c}@${1000 + i}`);
          });
          const file = join(dir, READERS_FILE);
          const bytes = readFileSync(file);
          for (const [at, xor] of flips) bytes[at % bytes.length] ^= xor;
          writeFileSync(file, Buffer.concat([bytes, garbage]));
          const loaded = new ReadersLog(dir, 0);
          for (const [r, p] of loaded.positions) expect(written.get(r)?.has(`${p.cursor}@${p.updatedAt}`), r).toBe(true);
          // Whatever was loaded is what a further reopen finds: the damage was cut or compacted away.
          expect(new ReadersLog(dir, 0).positions).toEqual(loaded.positions);
        },
      ),
      { numRuns: 150 },
    );
  });

  it("a bit flip costs only the record it hits: that reader falls back to its previous position", () => {
    const dir = tempDir();
    const log = new ReadersLog(dir, 0);
    log.put("a", { cursor: "A1", updatedAt: 1 });
    log.put("b", { cursor: "B1", updatedAt: 2 });
    log.put("a", { cursor: "A2", updatedAt: 3 });
    log.put("b", { cursor: "B2", updatedAt: 4 });
    const file = join(dir, READERS_FILE);
    const bytes = readFileSync(file);
    const recordBytes = HEADER_BYTES + 1 + 2;
    bytes[2 * recordBytes + HEADER_BYTES + 1] ^= 0x01; // a's second cursor
    writeFileSync(file, bytes);
    const loaded = new ReadersLog(dir, 0);
    expect(Object.fromEntries(loaded.positions)).toEqual({ a: { cursor: "A1", updatedAt: 1 }, b: { cursor: "B2", updatedAt: 4 } });
    expect(loaded.damage).toMatch(/damaged bytes/);
  });

  it("compacts once it holds more than twice what is live, past 1 MiB, keeping the last of each", () => {
    const dir = tempDir();
    const log = new ReadersLog(dir, 0);
    const cursor = "C".repeat(1000);
    for (let i = 0; i < 2500; i++) log.put(`r${i % 3}`, { cursor, updatedAt: i });
    expect(statSync(join(dir, READERS_FILE)).size).toBeLessThan(1024 * 1024 + 2 * RECORD_BYTES_MAX);
    expect(Object.fromEntries([...new ReadersLog(dir, 0).positions].map(([r, p]) => [r, p.updatedAt]))).toEqual({ r0: 2499, r1: 2497, r2: 2498 });
  });
});

describe("reader positions of named timelines", () => {
  const signer = () => CursorSigner.open(tempDir(), { secret: "k".repeat(32), previousSecret: null, graceMs: 0 });

  it("reader ids follow the stream id rule", async () => {
    expect(() => checkReaderId("phone-1.a_b")).not.toThrow();
    for (const bad of ["", "-x", "a/b", "r".repeat(129)]) expect((await refusal(() => checkReaderId(bad))).code).toBe("invalid_reader");
  });

  it("a position is stored and read back, also by a reopened store", async () => {
    const dir = tempDir();
    const names = NamedTimelines.open(dir, 10);
    const { timeline } = await names.put("feed", ["a", "b"], 1000);
    const token = signer().encode(timeline.streams, { direction: "forward", seqs: [1, 2] });
    const readers = new ReaderPositions(names, 10, null);
    expect(await readers.get(timeline, "r1")).toBeNull();
    const put = await readers.put(timeline, "r1", token, 2000);
    expect(put).toEqual({ created: true, position: { timeline: "feed", reader: "r1", cursor: token, updated_at: 2000 } });
    expect((await readers.put(timeline, "r1", token, 3000)).created).toBe(false);
    const names2 = NamedTimelines.open(dir, 10);
    const again = new ReaderPositions(names2, 10, null);
    expect(await again.get(names2.get("feed")!, "r1")).toEqual({ timeline: "feed", reader: "r1", cursor: token, updated_at: 3000 });
  });

  it("timeline_readers_max: the last reader fits, one more is 409, an existing one still moves", async () => {
    const names = NamedTimelines.open(tempDir(), 10);
    const { timeline } = await names.put("feed", ["a"]);
    const readers = new ReaderPositions(names, 2, null);
    await readers.put(timeline, "r1", "AAAA");
    await readers.put(timeline, "r2", "AAAA");
    const e = await refusal(readers.put(timeline, "r3", "AAAA"));
    expect([e.status, e.code, e.extra.timeline_readers_max]).toEqual([409, "limit_reached", 2]);
    expect(await readers.get(timeline, "r3")).toBeNull();
    expect((await readers.put(timeline, "r1", "BBBB")).position.cursor).toBe("BBBB");
  });

  it("a change of the stream set leaves no position of the old set, also after a crash before they were forgotten", async () => {
    const dir = tempDir();
    const names = NamedTimelines.open(dir, 10);
    const first = (await names.put("feed", ["a"], 1000)).timeline;
    const readers = new ReaderPositions(names, 10, null);
    await readers.put(first, "r1", "AAAA", 1500);
    const second = (await names.put("feed", ["a", "b"], 2000)).timeline;
    // No forget(): as if the process died right after the new set was written.
    expect(await readers.get(second, "r1")).toBeNull();
    const names2 = NamedTimelines.open(dir, 10);
    const reopened = new ReaderPositions(names2, 10, null);
    const current = names2.get("feed")!;
    expect(current.streams).toEqual(second.streams);
    expect(await reopened.get(current, "r1")).toBeNull();
    expect((await reopened.put(current, "r1", "BBBB", 2500)).created).toBe(true);
  });

  it("a position for a timeline deleted or changed while it was being stored is refused", async () => {
    const names = NamedTimelines.open(tempDir(), 10);
    const first = (await names.put("feed", ["a"])).timeline;
    const readers = new ReaderPositions(names, 10, null);
    await names.put("feed", ["b"]);
    expect((await refusal(readers.put(first, "r1", "AAAA"))).code).toBe("invalid_cursor");
    await names.remove("feed");
    expect((await refusal(readers.put(first, "r1", "AAAA"))).code).toBe("timeline_not_found");
  });

  it("a deleted and re-created timeline starts without readers", async () => {
    const dir = tempDir();
    const names = NamedTimelines.open(dir, 10);
    const first = (await names.put("feed", ["a"], 1000)).timeline;
    const readers = new ReaderPositions(names, 10, null);
    await readers.put(first, "r1", "AAAA", 1100);
    await names.remove("feed");
    await readers.forget("feed");
    const second = (await names.put("feed", ["a"], 1200)).timeline;
    expect(await readers.get(second, "r1")).toBeNull();
    mkdirSync(names.dirOf("feed"), { recursive: true });
    expect(new ReadersLog(names.dirOf("feed"), 0).positions.size).toBe(0);
  });
});
