// The fsync durability level's promise at the log: an append is acknowledged
// (syncTo's callback) and served (read stops at committedSeq) only after an
// fdatasync that started after it was written, and one fdatasync serves every
// waiter it covers (group commit).
//
// The fdatasyncs are the real ones; they are only counted, by wrapping
// node:fs's export (syncBuiltinESMExports makes the log's import see it).
import { describe, it, expect, afterEach, beforeEach } from "vitest";
import fs, { closeSync, openSync } from "node:fs";
import { syncBuiltinESMExports } from "node:module";
import { StreamLog } from "../../src/log/log.js";
import { LOG_OPTS, appendN, frames, readAll, range, removeTempDirs, tempDir } from "../helpers/log-frames.js";
import { logPath } from "../../src/log/file-names.js";

type Event = string;
let events: Event[] = [];
const realFdatasync = fs.fdatasync;
const realFdatasyncSync = fs.fdatasyncSync;
// How many of the next syncs fail with EIO after doing the real one (a disk
// that lost the write says so only this way; it cannot be had on demand).
let failAsync = 0;
let failSync = 0;
const eio = () => Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO", errno: -5 });

beforeEach(() => {
  events = [];
  failAsync = failSync = 0;
  fs.fdatasync = ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
    events.push("fdatasync started");
    realFdatasync(fd, (err) => {
      if (!err && failAsync > 0 && failAsync--) err = eio();
      events.push(err ? `fdatasync failed ${err.code}` : "fdatasync done");
      cb(err);
    });
  }) as typeof fs.fdatasync;
  fs.fdatasyncSync = ((fd: number) => {
    realFdatasyncSync(fd);
    if (failSync > 0 && failSync--) throw eio();
  }) as typeof fs.fdatasyncSync;
  syncBuiltinESMExports();
});
afterEach(() => {
  fs.fdatasync = realFdatasync;
  fs.fdatasyncSync = realFdatasyncSync;
  syncBuiltinESMExports();
  removeTempDirs();
});

const waitFor = (log: StreamLog, seq: number) =>
  new Promise<Error | null>((resolve) =>
    log.syncTo(seq, (err) => {
      events.push(`done ${seq}`);
      resolve(err);
    }),
  );

describe("fsync group commit", () => {
  it("an fsync append is neither acknowledged nor served before its fdatasync has returned", async () => {
    const log = new StreamLog(tempDir(), LOG_OPTS);
    log.open();
    appendN(log, 10, { durable: true });
    expect(log.headSeq).toBe(10);
    expect(log.committedSeq).toBe(0);
    const acked = waitFor(log, 10);
    // Synchronously after asking: not yet answered, not yet readable.
    expect(events).toEqual(["fdatasync started"]);
    expect(log.committedSeq).toBe(0);
    expect(readAll(log, 1)).toEqual([]);
    expect(await acked).toBeNull();
    expect(events).toEqual(["fdatasync started", "fdatasync done", "done 10"]);
    expect(log.committedSeq).toBe(10);
    expect(readAll(log, 1)).toEqual(range(1, 10));
    log.close();
  });

  it("one fdatasync answers every waiter it covers, and waiters that came during it get the next one", async () => {
    const log = new StreamLog(tempDir(), LOG_OPTS);
    log.open();
    appendN(log, 5, { durable: true });
    const first = [waitFor(log, 3), waitFor(log, 5)];
    // These arrive while the first fdatasync runs: it started before seqs 6..9 were written.
    appendN(log, 4, { durable: true });
    const second = [waitFor(log, 6), waitFor(log, 9)];
    expect(await Promise.all([...first, ...second])).toEqual([null, null, null, null]);
    expect(events).toEqual(["fdatasync started", "fdatasync done", "done 3", "done 5", "fdatasync started", "fdatasync done", "done 6", "done 9"]);
    expect(log.committedSeq).toBe(9);
    // Nothing is waiting now: no further fdatasync.
    await new Promise((r) => setTimeout(r, 20));
    expect(events.filter((e) => e === "fdatasync started")).toHaveLength(2);
    log.close();
  });

  it("tells the ingest_ts of the oldest record still waiting for its sync, and null once none waits", async () => {
    const log = new StreamLog(tempDir(), LOG_OPTS);
    log.open();
    expect(log.uncommittedTs()).toBeNull();
    appendN(log, 5, { durable: true }); // seq s has ingest_ts 1000 + s - 1
    expect(log.uncommittedTs()).toBe(1000);
    const first = waitFor(log, 5);
    appendN(log, 4, { durable: true }); // 6..9, after the first sync started
    await first;
    expect(log.committedSeq).toBe(5);
    expect(log.uncommittedTs()).toBe(1005);
    await waitFor(log, 9);
    expect(log.uncommittedTs()).toBeNull();
    appendN(log, 3, { durable: false });
    expect(log.uncommittedTs()).toBeNull();
    // Across a roll (64 KiB segments of 128-byte frames): the roll syncs what it closes, and the oldest waiting record is in the new segment.
    appendN(log, 600, { durable: true });
    expect(log.segments.length).toBe(2);
    expect(log.committedSeq).toBeGreaterThan(12);
    expect(log.uncommittedTs()).toBe(1000 + log.committedSeq);
    await waitFor(log, log.headSeq);
    expect(log.uncommittedTs()).toBeNull();
    log.close();
  });

  it("a seq already committed is answered at once, without an fdatasync", async () => {
    const log = new StreamLog(tempDir(), LOG_OPTS);
    log.open();
    appendN(log, 4, { durable: true });
    await waitFor(log, 4);
    events = [];
    let answered = false;
    log.syncTo(4, () => (answered = true));
    log.syncTo(2, () => (answered = answered && true));
    expect(answered).toBe(true);
    expect(events).toEqual([]);
    log.close();
  });

  it("a process-durability append is committed and served at once, and syncTo answers without an fdatasync", () => {
    const log = new StreamLog(tempDir(), LOG_OPTS);
    log.open();
    appendN(log, 7, { durable: false });
    expect(log.committedSeq).toBe(7);
    expect(readAll(log, 1)).toEqual(range(1, 7));
    let answered = false;
    log.syncTo(7, () => (answered = true));
    expect(answered).toBe(true);
    expect(events).toEqual([]);
    log.close();
  });

  it("a failed fdatasync fails its waiters and commits nothing", async () => {
    const log = new StreamLog(tempDir(), LOG_OPTS);
    log.open();
    appendN(log, 3, { durable: true });
    // A real failure: the segment's fd number now names /dev/null (the lowest
    // free number is the one just closed), which cannot be synced (EINVAL).
    const fd = log.active.fd;
    closeSync(fd);
    expect(openSync("/dev/null", "r")).toBe(fd);
    const err = await waitFor(log, 3);
    expect(err).not.toBeNull();
    expect(events).toEqual(["fdatasync started", "fdatasync failed EINVAL", "done 3"]);
    expect(log.committedSeq).toBe(0);
    expect(readAll(log, 1)).toEqual([]);
    log.close();
  });

  it("a segment rolled while its fdatasync runs is synced, then closed by that fdatasync's answer", async () => {
    const log = new StreamLog(tempDir(), { ...LOG_OPTS, segmentBytesMax: 4096 });
    log.open();
    appendN(log, 20, { durable: true, batch: 20 });
    const old = log.active;
    const acked = waitFor(log, 20);
    appendN(log, 20, { durable: true, batch: 20 }); // does not fit: rolls onto a new segment
    expect(log.segments).toHaveLength(2);
    expect(old.closed).toBe(true);
    expect(old.fd).toBeGreaterThanOrEqual(0); // still open under the running fdatasync
    expect(await acked).toBeNull();
    expect(old.fd).toBe(-1);
    expect(await waitFor(log, 40)).toBeNull();
    expect(readAll(log, 1)).toEqual(range(1, 40));
    log.close();
  });
});

describe("a failed fdatasync (EIO) refuses what it covered, and nothing of it turns up later", () => {
  const fileBytes = (log: StreamLog) => fs.fstatSync(log.active.fd).size;

  it("cuts the records it covered from the file and the head; the next publish takes their seqs", async () => {
    const dir = tempDir();
    const log = new StreamLog(dir, LOG_OPTS);
    log.open();
    appendN(log, 10, { durable: true });
    expect(await waitFor(log, 10)).toBeNull();
    const committedBytes = fileBytes(log);
    appendN(log, 5, { durable: true });
    failAsync = 1;
    const refused = waitFor(log, 15);
    appendN(log, 3, { durable: true }); // arrives during the failing sync: refused with it
    const alsoRefused = waitFor(log, 18);
    expect((await refused)?.message).toMatch(/EIO/);
    expect((await alsoRefused)?.message).toMatch(/EIO/);
    expect([log.headSeq, log.committedSeq, fileBytes(log)]).toEqual([10, 10, committedBytes]);
    expect(readAll(log, 1)).toEqual(range(1, 10));
    // A later sync that succeeds must not bring them back: the next seqs are 11.. again.
    appendN(log, 4, { durable: true, ts: 5_000 });
    expect(await waitFor(log, 14)).toBeNull();
    expect(readAll(log, 1)).toEqual(range(1, 14));
    log.close();
    const again = new StreamLog(dir, LOG_OPTS);
    const report = again.open();
    expect([again.headSeq, report.truncatedBytes, report.uncommittedRecords]).toEqual([14, 0, 0]);
    expect(readAll(again, 1)).toEqual(range(1, 14));
    again.close();
  });

  it("a sync failing at a segment roll refuses the records it closes, and the segment stays active", async () => {
    const log = new StreamLog(tempDir(), { ...LOG_OPTS, segmentBytesMax: 4096 });
    log.open();
    appendN(log, 10, { durable: true, batch: 10 });
    expect(await waitFor(log, 10)).toBeNull();
    appendN(log, 10, { durable: true, batch: 10 }); // 11..20: not synced yet
    const pending = waitFor(log, 20);
    failSync = 1;
    // This batch does not fit: the roll syncs the segment first, and that fails.
    expect(() => appendN(log, 20, { durable: true, batch: 20 })).toThrow(/EIO/);
    expect(log.segments).toHaveLength(1);
    expect([log.headSeq, log.committedSeq]).toEqual([10, 10]);
    // The sync already running for 11..20 cannot vouch for them now.
    expect((await pending)?.message).toMatch(/EIO/);
    expect(readAll(log, 1)).toEqual(range(1, 10));
    appendN(log, 20, { durable: true, batch: 20 });
    expect(await waitFor(log, 30)).toBeNull();
    expect(readAll(log, 1)).toEqual(range(1, 30));
    log.close();
  });

  it("when the cut cannot be synced either, appends are refused until a restart recovers the log", async () => {
    const dir = tempDir();
    const log = new StreamLog(dir, LOG_OPTS);
    log.open();
    appendN(log, 4, { durable: true });
    expect(await waitFor(log, 4)).toBeNull();
    appendN(log, 4, { durable: true });
    failAsync = 1;
    failSync = 1; // the sync after the cut
    expect((await waitFor(log, 8))?.message).toMatch(/EIO/);
    expect(() => appendN(log, 1, { durable: true })).toThrow(/restart to recover/);
    expect(() => appendN(log, 1, { durable: false })).toThrow(expect.objectContaining({ code: "EIO" }));
    expect(readAll(log, 1)).toEqual(range(1, 4));
    log.close();
    const again = new StreamLog(dir, LOG_OPTS);
    again.open();
    expect(again.headSeq).toBe(4);
    appendN(again, 2, { durable: true });
    expect(await waitFor(again, 6)).toBeNull();
    again.close();
  });

  it("a roll whose sync succeeded and whose next segment could not be made keeps what that sync vouched for when a later sync fails", async () => {
    const dir = tempDir();
    const log = new StreamLog(dir, { ...LOG_OPTS, segmentBytesMax: 4096 });
    log.open();
    appendN(log, 10, { durable: true, batch: 10 });
    expect(await waitFor(log, 10)).toBeNull();
    appendN(log, 10, { durable: true, batch: 10 }); // 11..20
    const acked = waitFor(log, 20);
    // The next segment's file is in the way: the roll syncs 11..20, then cannot create it.
    const blocker = logPath(dir, 21);
    fs.writeFileSync(blocker, "");
    expect(() => appendN(log, 20, { durable: true, batch: 20 })).toThrow(/EEXIST/);
    expect(await acked).toBeNull(); // synced by the roll: acknowledged, so it must stay
    fs.rmSync(blocker);
    appendN(log, 1, { durable: true, bodyBytes: 10 }); // 21 fits in the old segment still
    failAsync = 1;
    expect((await waitFor(log, 21))?.message).toMatch(/EIO/);
    expect(readAll(log, 1)).toEqual(range(1, 20));
    log.close();
    const again = new StreamLog(dir, { ...LOG_OPTS, segmentBytesMax: 4096 });
    again.open();
    expect(again.headSeq).toBe(20);
    again.close();
  });

  it("a process append after fsync appends syncs them first; if their own sync then fails, nobody is told they are safe and the log refuses appends", async () => {
    const log = new StreamLog(tempDir(), LOG_OPTS);
    log.open();
    appendN(log, 5, { durable: true });
    const pending = waitFor(log, 5); // its fdatasync is running
    failAsync = 1;
    events = [];
    appendN(log, 1, { durable: false }); // the durability was changed to process meanwhile
    expect(log.committedSeq).toBe(6);
    // The running sync fails after the synchronous one said all was well: which is right is unknown.
    expect((await pending)?.message).toMatch(/EIO/);
    expect(() => appendN(log, 1, { durable: false })).toThrow(/restart to recover/);
    log.close();
  });

  it("a batch that breaks the log's invariants is refused before a byte of it is written", () => {
    const fileBytes = (l: StreamLog) => fs.fstatSync(l.active.fd).size;
    const log = new StreamLog(tempDir(), LOG_OPTS);
    log.open();
    appendN(log, 3);
    const bytesBefore = fileBytes(log);
    const f = frames(10, 2, 50, 5_000); // stamped 10..11, head is 3
    expect(() => log.append(f.buf, f.bytes, 2, false)).toThrow(/log invariant/);
    expect([fileBytes(log), log.headSeq]).toEqual([bytesBefore, 3]);
    appendN(log, 2);
    expect(readAll(log, 1)).toEqual(range(1, 5));
    log.close();
  });
});
