// The shard's open-file cache (src/log/open-files.ts): least recently used
// files are closed first, a file it closed is opened again on next use, and
// a segment under a running fdatasync is never closed.
import { afterEach, describe, expect, it } from "vitest";
import { readdirSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { OpenFiles, type CachedFile } from "../../src/log/open-files.js";
import { StreamLog } from "../../src/log/log.js";
import { CheckpointStore } from "../../src/consumer/checkpoints.js";
import { LOG_OPTS, appendN, readAll, range, removeTempDirs, tempDir } from "../helpers/log-frames.js";

afterEach(removeTempDirs);

/** A file that records when the cache closes it. */
function file(name: string, closedLog: string[], mayClose = () => true): CachedFile {
  return { mayClose, evict: () => closedLog.push(name) };
}

/** Opens a file the way the cache's owners do: room first, then open. */
function open(files: OpenFiles, f: CachedFile): void {
  files.makeRoom();
  files.opened(f);
}

/** File descriptors this process holds open on paths under `dir`. */
function fdsUnder(dir: string): number {
  let n = 0;
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      if (readlinkSync(join("/proc/self/fd", fd)).startsWith(dir)) n++;
    } catch {
      // the fd readdir itself used, closed by now
    }
  }
  return n;
}

describe("the open-file cache", () => {
  it("closes the least recently used file to open one more, and a use makes a file the newest", () => {
    const closed: string[] = [];
    const files = new OpenFiles(3);
    const [a, b, c, d, e] = ["a", "b", "c", "d", "e"].map((n) => file(n, closed));
    open(files, a);
    open(files, b);
    open(files, c);
    files.used(a); // now b is the oldest
    open(files, d);
    expect(closed).toEqual(["b"]);
    open(files, e);
    expect(closed).toEqual(["b", "c"]);
    expect(files.size).toBe(3);
    expect(files.evictions).toBe(2);
  });

  it("passes by a file that may not be closed, and holds more than its bound only while every file is such", () => {
    const closed: string[] = [];
    let busy = true;
    const files = new OpenFiles(2);
    const syncing = file("syncing", closed, () => !busy);
    const idle = file("idle", closed);
    open(files, syncing);
    open(files, idle);
    open(files, file("third", closed));
    expect(closed).toEqual(["idle"]);
    open(
      files,
      file("alsoBusy", closed, () => false),
    );
    expect(closed).toEqual(["idle", "third"]);
    open(files, file("fourth", closed));
    expect(files.size).toBe(3); // syncing and alsoBusy cannot be closed: over the bound by one
    busy = false;
    open(files, file("fifth", closed));
    expect(closed).toEqual(["idle", "third", "syncing", "fourth"]);
    expect(files.size).toBe(2);
  });

  it("forgets a file its owner closed", () => {
    const closed: string[] = [];
    const files = new OpenFiles(2);
    const a = file("a", closed);
    open(files, a);
    open(files, file("b", closed));
    files.closed(a);
    open(files, file("c", closed));
    expect(closed).toEqual([]);
    expect(files.size).toBe(2);
  });
});

describe("logs and checkpoint files sharing a small cache", () => {
  it("many logs append and read back everything with no more files open than the bound", () => {
    const root = tempDir();
    const files = new OpenFiles(4);
    const logs = range(1, 40).map((i) => new StreamLog(join(root, `s${i}`), { ...LOG_OPTS, segmentBytesMax: 4096, openFiles: files }));
    for (const log of logs) log.open();
    for (let round = 0; round < 3; round++) for (const log of logs) appendN(log, 25);
    expect(fdsUnder(root)).toBeLessThanOrEqual(4);
    for (const log of logs) expect(readAll(log, 1)).toEqual(range(1, 75));
    expect(fdsUnder(root)).toBeLessThanOrEqual(4);
    expect(files.evictions).toBeGreaterThan(0);
    for (const log of logs) log.close();
    expect(files.size).toBe(0);
    expect(fdsUnder(root)).toBe(0);
  });

  it("a log reopened after the cache closed its active segment recovers every record", async () => {
    const root = tempDir();
    const files = new OpenFiles(2);
    const logs = range(1, 5).map((i) => new StreamLog(join(root, `s${i}`), { ...LOG_OPTS, openFiles: files }));
    for (const log of logs) log.open();
    for (const log of logs) appendN(log, 10);
    for (const log of logs) await log.flush();
    for (const log of logs) log.close();
    const again = new StreamLog(join(root, "s1"), { ...LOG_OPTS, openFiles: files });
    again.open();
    expect(again.headSeq).toBe(10);
    expect(readAll(again, 1)).toEqual(range(1, 10));
    again.close();
  });

  it("a segment whose fdatasync is running stays open however many files are opened beside it", async () => {
    const root = tempDir();
    const files = new OpenFiles(2);
    const durable = new StreamLog(join(root, "fsync"), { ...LOG_OPTS, openFiles: files });
    durable.open();
    appendN(durable, 5, { durable: true });
    const acked = new Promise<Error | null>((resolve) => durable.syncTo(5, resolve));
    const seg = durable.active;
    const others = range(1, 6).map((i) => new StreamLog(join(root, `p${i}`), { ...LOG_OPTS, openFiles: files }));
    for (const log of others) {
      log.open();
      appendN(log, 3);
    }
    expect(seg.fd).toBeGreaterThanOrEqual(0);
    expect(await acked).toBeNull();
    expect(durable.committedSeq).toBe(5);
    for (const log of others) appendN(log, 3); // now it may go
    expect(seg.fd).toBe(-1);
    expect(readAll(durable, 1)).toEqual(range(1, 5));
    for (const log of [durable, ...others]) log.close();
  });

  it("a checkpoint file the cache closed is opened again without losing a record", () => {
    const root = tempDir();
    const files = new OpenFiles(1);
    const stores = range(1, 3).map((i) => {
      const log = new StreamLog(join(root, `s${i}`), { ...LOG_OPTS, openFiles: files });
      log.open();
      return { log, cp: new CheckpointStore(log.dir, files) };
    });
    for (let seq = 1; seq <= 4; seq++) for (const { cp } of stores) cp.set(`g${seq % 2}`, seq);
    expect(files.size).toBe(1);
    for (const { log, cp } of stores) {
      cp.close();
      log.close();
      const again = new CheckpointStore(log.dir, files);
      expect([again.get("g0")?.seq, again.get("g1")?.seq]).toEqual([4, 3]);
      again.close();
    }
  });
});
