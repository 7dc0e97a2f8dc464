// Recovery keeps every acknowledged record and serves nothing else: a batch a
// crash interrupted is cut, records put after a closed segment's last commit
// mark or a missing segment are reported and never served, and the dedup
// rebuild (forEach) and seek by time see exactly what a reader can be served.
import { describe, it, expect, afterEach, beforeEach } from "vitest";
import fs, { appendFileSync, existsSync, openSync, closeSync, writeSync, readdirSync, rmSync, statSync } from "node:fs";
import { syncBuiltinESMExports } from "node:module";
import { join } from "node:path";
import { StreamLog, CorruptRecordError } from "../../src/log/log.js";
import { OpenFiles } from "../../src/log/open-files.js";
import { checkFrame, frameBytesFor, frameSeq, RECORD_HEADER_BYTES } from "../../src/log/record.js";
import { LOG_OPTS, appendN, frames, readAll, range, removeTempDirs, tempDir } from "../helpers/log-frames.js";

// The syncs are the real ones, counted (see log-durability.test.ts).
const syncs: string[] = [];
/** The files flush() synced in the thread pool, by path. */
const synced: string[] = [];
const real = { fsyncSync: fs.fsyncSync, fdatasyncSync: fs.fdatasyncSync, fdatasync: fs.fdatasync };
beforeEach(() => {
  syncs.length = synced.length = 0;
  fs.fsyncSync = (fd: number) => (syncs.push(`fsync ${statKind(fd)}`), real.fsyncSync(fd));
  fs.fdatasyncSync = (fd: number) => (syncs.push(`fdatasync ${statKind(fd)}`), real.fdatasyncSync(fd));
  fs.fdatasync = ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
    syncs.push(`fdatasync ${statKind(fd)}`);
    synced.push(fs.readlinkSync(`/proc/self/fd/${fd}`));
    real.fdatasync(fd, cb);
  }) as typeof fs.fdatasync;
  syncBuiltinESMExports();
});
afterEach(() => {
  Object.assign(fs, real);
  syncBuiltinESMExports();
  removeTempDirs();
});
const statKind = (fd: number) => (fs.fstatSync(fd).isDirectory() ? "dir" : "file");

const FB = frameBytesFor(100); // the helpers' default record: 128 bytes

function closedLog(n = 3000): string {
  const dir = tempDir();
  const log = new StreamLog(dir, LOG_OPTS);
  log.open();
  appendN(log, n);
  log.close();
  return dir;
}
const segmentFiles = (dir: string) =>
  readdirSync(dir)
    .filter((f) => f.endsWith(".log"))
    .sort();
const open = (dir: string, durable = false, unmarked = false) => {
  const log = new StreamLog(dir, LOG_OPTS);
  const report = log.open(durable, unmarked);
  return { log, report };
};

describe("log recovery of the active segment", () => {
  it("a batch a crash cut short is removed whole: its whole records and its torn one", () => {
    const dir = closedLog(120);
    const last = join(dir, segmentFiles(dir).at(-1)!);
    const sizeBefore = statSync(last).size;
    // Two whole records of a batch of three, then half of the third: its mark never landed.
    const batch = frames(121, 3, 100, 9_000);
    appendFileSync(last, batch.buf.subarray(0, 2 * FB + 50));
    const { log, report } = open(dir);
    expect(report.uncommittedRecords).toBe(2);
    expect(report.truncatedBytes).toBe(2 * FB + 50);
    expect(statSync(last).size).toBe(sizeBefore);
    expect([log.headSeq, log.committedSeq]).toEqual([120, 120]);
    expect(log.lastTs).toBe(1_000 + 119);
    expect(readAll(log)).toEqual(range(1, 120));
    appendN(log, 2, { ts: 9_000 });
    expect(readAll(log)).toEqual(range(1, 122));
    log.close();
  });

  it("whole unmarked records at the end (a batch cut between two records) are removed too", () => {
    const dir = closedLog(120);
    const last = join(dir, segmentFiles(dir).at(-1)!);
    appendFileSync(last, frames(121, 4, 100, 9_000, false).buf);
    const { log, report } = open(dir);
    expect([report.uncommittedRecords, report.truncatedBytes, log.headSeq]).toEqual([4, 4 * FB, 120]);
    log.close();
  });

  it("records kept before a damaged commit mark stay at every later restart", () => {
    const dir = closedLog(100); // two batches: 1..50 and 51..100, each marked on its last record
    const last = join(dir, segmentFiles(dir).at(-1)!);
    const fd = openSync(last, "r+");
    writeSync(fd, Buffer.from([0xee]), 0, 1, 99 * FB + RECORD_HEADER_BYTES + 1); // record 100, the mark
    closeSync(fd);
    const first = open(dir);
    expect(first.log.headSeq).toBe(99);
    expect(first.report.uncommittedRecords).toBe(0);
    first.log.close();
    // The damage is cut now; 51..99 were acknowledged and served, and must not look like a torn batch.
    const second = open(dir);
    expect([second.log.headSeq, second.report.uncommittedRecords, second.report.truncatedBytes]).toEqual([99, 0, 0]);
    expect(readAll(second.log)).toEqual(range(1, 99));
    second.log.close();
  });

  it("a closed segment cut at a record boundary keeps every record before the cut, marked or not", () => {
    const dir = closedLog();
    const [first] = segmentFiles(dir);
    const a = open(dir).log;
    const s0 = { base: a.segments[0].baseSeq, last: a.segments[0].lastSeq };
    a.close();
    // Cut the first segment one record short of its end: that record's batch mark is gone.
    fs.truncateSync(join(dir, first), (s0.last - s0.base) * FB);
    const { log, report } = open(dir);
    expect(log.segments[0].lastSeq).toBe(s0.last - 1);
    expect(report.corruptions.length).toBeGreaterThan(0); // the gap to the next segment
    const out = Buffer.alloc(1 << 20);
    const page = log.read(1, s0.last - 1, 100_000, 1 << 20, out);
    expect([page.count, page.next]).toEqual([s0.last - 1, s0.last]);
    expect(() => log.read(s0.last, s0.last, 1, 1 << 20, out)).toThrow(CorruptRecordError);
    log.close();
  });

  it("stray files beside the segments are not segments", () => {
    const dir = closedLog(100);
    const [seg] = segmentFiles(dir);
    fs.writeFileSync(join(dir, `x${seg}`), "not a segment");
    fs.writeFileSync(join(dir, `${seg}.bak`), "not a segment");
    const { log, report } = open(dir);
    expect([report.segments, log.headSeq]).toEqual([1, 100]);
    log.close();
  });

  it("an emptied first segment holds nothing: first_seq is the next segment's base", () => {
    const dir = closedLog();
    const files = segmentFiles(dir);
    fs.truncateSync(join(dir, files[0]), 0);
    rmSync(join(dir, files[0].replace(".log", ".idx")));
    const { log } = open(dir);
    expect(log.segments[0].empty).toBe(true);
    expect(log.firstSeq).toBe(log.segments[1].baseSeq);
    log.close();
  });

  it("a rolled segment's file is closed at once (bounded fds)", () => {
    const log = new StreamLog(tempDir(), LOG_OPTS);
    log.open();
    appendN(log, 3000);
    expect(log.segments.length).toBeGreaterThan(3);
    expect(log.segments.slice(0, -1).every((s) => s.fd === -1)).toBe(true);
    log.close();
  });

  it("a log written before commit marks keeps every whole record and marks its last", () => {
    const dir = tempDir();
    const a = new StreamLog(dir, LOG_OPTS);
    a.open();
    for (let seq = 1; seq <= 30; seq += 10) {
      const f = frames(seq, 10, 100, 1_000 + seq, false);
      a.append(f.buf, f.bytes, 10, false);
    }
    a.close();
    const { log, report } = open(dir, false, true);
    expect([report.uncommittedRecords, report.truncatedBytes, log.headSeq]).toEqual([0, 0, 30]);
    log.close();
    // From now on it is an ordinary log: its last record carries the mark.
    const again = open(dir);
    expect([again.report.uncommittedRecords, again.log.headSeq]).toEqual([0, 30]);
    expect(readAll(again.log)).toEqual(range(1, 30));
    again.log.close();
  });

  it("a log written before commit marks whose last segment is empty opens with its head", () => {
    const dir = tempDir();
    const a = new StreamLog(dir, LOG_OPTS);
    a.open();
    appendN(a, 10);
    a.roll(false);
    a.close();
    const { log } = open(dir, false, true);
    expect([log.headSeq, log.active.empty]).toEqual([10, true]);
    log.close();
  });

  it("a segment fills up to segment_bytes_max exactly, and the next batch rolls", () => {
    const log = new StreamLog(tempDir(), { ...LOG_OPTS, segmentBytesMax: 10 * FB });
    log.open();
    appendN(log, 10, { batch: 5 });
    expect([log.segments.length, log.active.size]).toEqual([1, 10 * FB]);
    appendN(log, 1);
    expect(log.segments.length).toBe(2);
    log.close();
  });

  it("head_seq and last ts come from the newest record, also when the active segment is empty", () => {
    const dir = tempDir();
    const a = new StreamLog(dir, LOG_OPTS);
    a.open();
    appendN(a, 10, { ts: 5_000 });
    a.roll(false);
    a.close();
    const { log } = open(dir);
    expect([log.headSeq, log.lastTs, log.firstSeq, log.segments.length]).toEqual([10, 5_009, 1, 2]);
    appendN(log, 1, { ts: 6_000 });
    expect(readAll(log)).toEqual(range(1, 11));
    log.close();
  });
});

describe("log recovery of closed segments", () => {
  it("whole records of a closed segment that reach the next segment's base are reported and never served", () => {
    const dir = closedLog();
    const [first] = segmentFiles(dir);
    const a = open(dir).log;
    const s0 = { base: a.segments[0].baseSeq, last: a.segments[0].lastSeq, size: a.segments[0].size };
    a.close();
    // A crafted copy of the next segment's first seq, put after the mark (and the index gone, so it is scanned).
    appendFileSync(join(dir, first), frames(s0.last + 1, 1, 100, 1_000 + s0.last, false).buf);
    rmSync(join(dir, first.replace(".log", ".idx")));
    const { log, report } = open(dir);
    expect(report.corruptions).toEqual([
      { segment: s0.base, position: s0.size, seq: s0.last + 1, reason: `1 records at or past the next segment's base seq ${s0.last + 1}` },
    ]);
    expect(report.rebuiltIndexes).toBe(1);
    expect(log.segments[0].lastSeq).toBe(s0.last);
    expect(readAll(log)).toEqual(range(1, 3000));
    // Its index is not written back as if all were well: the next start looks again.
    expect(existsSync(join(dir, first.replace(".log", ".idx")))).toBe(false);
    log.close();
  });

  it("a missing segment is reported as a gap, reading into it fails loudly, and reading past it works", () => {
    const dir = closedLog();
    const files = segmentFiles(dir);
    const a = open(dir).log;
    const [s0, s1, s2] = a.segments.map((s) => ({ base: s.baseSeq, last: s.lastSeq, size: s.size }));
    a.close();
    for (const ext of [".log", ".idx", ".tidx"]) rmSync(join(dir, files[1].replace(".log", ext)));
    const { log, report } = open(dir);
    expect(report.corruptions).toEqual([
      { segment: s0.base, position: s0.size, seq: s0.last + 1, reason: `segment ${s2.base} does not follow seq ${s0.last}` },
    ]);
    const out = Buffer.alloc(1 << 20);
    expect(() => log.read(s1.base, s1.last, 10, 1 << 20, out)).toThrow(CorruptRecordError);
    try {
      log.read(s1.base + 3, s1.last, 10, 1 << 20, out);
    } catch (err) {
      expect((err as CorruptRecordError).info).toEqual({ segment: -1, position: 0, seq: s1.base + 3, reason: "no segment holds this seq" });
    }
    const page = log.read(s0.last - 1, 3000, 10, 1 << 20, out);
    expect([page.count, page.next, page.corrupt?.seq]).toEqual([2, s0.last + 1, s1.base]);
    expect(log.read(s2.base, 3000, 5, 1 << 20, out).count).toBe(5);
    log.close();
  });

  it("damage in a closed segment is reported once, even with a gap after it", () => {
    const dir = closedLog();
    const files = segmentFiles(dir);
    const fd = openSync(join(dir, files[0]), "r+");
    writeSync(fd, Buffer.from([0xee]), 0, 1, 10 * FB + RECORD_HEADER_BYTES + 1);
    closeSync(fd);
    rmSync(join(dir, files[0].replace(".log", ".idx")));
    for (const ext of [".log", ".idx", ".tidx"]) rmSync(join(dir, files[2].replace(".log", ext)));
    const { log, report } = open(dir);
    expect(report.corruptions).toHaveLength(1);
    expect(report.corruptions[0]).toMatchObject({ segment: 1, position: 10 * FB, seq: 11, reason: "crc" });
    expect(log.segments[0].verified).toBe(false);
    log.close();
  });

  it("a scrubbed segment is marked verified; other segments are not", () => {
    const { log } = open(closedLog());
    expect(log.segments.slice(0, -1).every((s) => !s.verified)).toBe(true);
    log.markVerified(log.segments[1].baseSeq);
    log.markVerified(123_456_789);
    expect(log.segments.map((s) => s.verified).slice(0, 3)).toEqual([false, true, false]);
    expect(readAll(log)).toEqual(range(1, 3000));
    log.close();
  });
});

describe("log reads of closed segments", () => {
  it("keeps at most one closed segment's file open while reading through them all", () => {
    const { log } = open(closedLog());
    const out = Buffer.alloc(1 << 20);
    for (let seq = 1; seq <= 3000; seq += 97) {
      expect(frameSeq(log.read(seq, seq, 1, 1 << 20, out).buf, 0)).toBe(seq);
      expect(log.segments.slice(0, -1).filter((s) => s.fd >= 0).length).toBeLessThanOrEqual(1);
    }
    log.close();
    expect(log.segments.every((s) => s.fd === -1)).toBe(true);
  });

  it("a record whose seq is not the one due is reported, not served as another", () => {
    const dir = closedLog(200);
    const path = join(dir, segmentFiles(dir)[0]);
    // Rewrite record 50 as a valid frame carrying seq 7 (CRC made right): the chain breaks there.
    const f = frames(7, 1, 100, 1_000 + 49);
    const fd = openSync(path, "r+");
    writeSync(fd, f.buf, 0, f.bytes, 49 * FB);
    closeSync(fd);
    const a = new StreamLog(dir, LOG_OPTS);
    a.open(); // the active segment: scanned, cut at the broken chain
    expect(a.headSeq).toBe(49);
    a.close();
  });
});

describe("log reads of a trusted segment", () => {
  it("a valid frame with the wrong seq in a segment trusted from its index is reported, not served as the seq asked for", () => {
    const dir = closedLog();
    const path = join(dir, segmentFiles(dir)[0]);
    const f = frames(7, 1, 100, 1_000 + 49); // same size as record 50, CRC right, seq 7
    const fd = openSync(path, "r+");
    writeSync(fd, f.buf, 0, f.bytes, 49 * FB);
    closeSync(fd);
    const { log, report } = open(dir);
    expect(report.rebuiltIndexes).toBe(0); // the index still matches: the records are taken on trust
    const out = Buffer.alloc(1 << 20);
    const page = log.read(40, 60, 100, 1 << 20, out);
    expect([page.count, page.corrupt]).toEqual([10, { segment: 1, position: 49 * FB, seq: 50, reason: "found seq 7" }]);
    expect(() => log.read(50, 60, 100, 1 << 20, out)).toThrow(CorruptRecordError);
    log.close();
  });

  it("a damaged record read from a trusted segment is reported at its position", () => {
    const dir = closedLog();
    const fd = openSync(join(dir, segmentFiles(dir)[0]), "r+");
    writeSync(fd, Buffer.from([0xee]), 0, 1, 69 * FB + RECORD_HEADER_BYTES + 1); // record 70
    closeSync(fd);
    const { log } = open(dir);
    const page = log.read(66, 80, 100, 1 << 20, Buffer.alloc(1 << 20));
    expect([page.count, page.corrupt]).toEqual([4, { segment: 1, position: 69 * FB, seq: 70, reason: "crc" }]);
    log.close();
  });

  it("a page fills its byte limit exactly, and a small buffer gets as many whole records as fit", () => {
    const { log } = open(closedLog());
    const exact = log.read(10, 3000, 100, 5 * FB, Buffer.alloc(1 << 20));
    expect([exact.count, exact.bytes]).toEqual([5, 5 * FB]);
    const small = log.read(1, 3000, 1000, 1 << 20, Buffer.alloc(8 * 1024));
    expect([small.count, small.next]).toEqual([64, 65]);
    log.close();
  });
});

describe("dedup rebuild and seek by time over the log", () => {
  it("forEach visits each committed record from a seq on, once, in order", () => {
    const { log } = open(closedLog());
    const seen = (from: number) => {
      const seqs: number[] = [];
      log.forEach(from, (buf, at) => {
        expect(checkFrame(buf, at, at + buf.readUInt32LE(at), LOG_OPTS.frameBytesMax)).toBeGreaterThan(0);
        seqs.push(frameSeq(buf, at));
      });
      return seqs;
    };
    expect(seen(1)).toEqual(range(1, 3000));
    expect(seen(0)).toEqual(range(1, 3000));
    expect(seen(1234)).toEqual(range(1234, 3000));
    expect(seen(3000)).toEqual([3000]);
    expect(seen(3001)).toEqual([]);
    log.close();
  });

  it("forEach stops at the committed seq of an fsync log", async () => {
    const log = new StreamLog(tempDir(), LOG_OPTS);
    log.open();
    appendN(log, 100, { durable: true });
    await new Promise<void>((r) => log.syncTo(100, () => r()));
    appendN(log, 20, { durable: true }); // not synced yet
    const seqs: number[] = [];
    log.forEach(1, (buf, at) => void seqs.push(frameSeq(buf, at)));
    expect(seqs).toEqual(range(1, 100));
    log.close();
  });

  it("forEach goes on past damage from the next index point, like a reader", () => {
    const dir = closedLog();
    const fd = openSync(join(dir, segmentFiles(dir)[0]), "r+");
    writeSync(fd, Buffer.from([0xee]), 0, 1, 99 * FB + RECORD_HEADER_BYTES + 1); // record 100
    closeSync(fd);
    const { log } = open(dir);
    const seqs: number[] = [];
    log.forEach(1, (buf, at) => void seqs.push(frameSeq(buf, at)));
    // Index points are 4 KiB apart (every 32 records): a read of 100..128 starts at the
    // point of 97 and meets the damage; from the point of 129 on, records are served.
    const out = Buffer.alloc(1 << 20);
    const servable = range(1, 3000).filter((s) => {
      try {
        return log.read(s, s, 1, 1 << 20, out).count === 1;
      } catch {
        return false;
      }
    });
    expect(seqs).toEqual(range(1, 99).concat(range(129, 3000)));
    expect(servable).toEqual(seqs);
    log.close();
  });

  it("seek by time answers the seq of damage met on the way, not a later record", () => {
    const dir = closedLog();
    const fd = openSync(join(dir, segmentFiles(dir)[0]), "r+");
    writeSync(fd, Buffer.from([0xee]), 0, 1, 99 * FB + RECORD_HEADER_BYTES + 1); // record 100 (ts 1_099)
    closeSync(fd);
    const { log } = open(dir);
    expect(log.seqAtTime(1_050)).toBe(51);
    expect(log.seqAtTime(1_099)).toBe(100);
    expect(log.seqAtTime(1_110)).toBe(100);
    expect(log.seqAtTime(1_000 + 2999)).toBe(3000);
    expect(log.seqAtTime(1_000 + 3000)).toBe(3001);
    log.close();
  });
});

describe("log syncs", () => {
  it("a durable log fsyncs its directory for each new segment and syncs a segment before rolling past it", () => {
    const log = new StreamLog(tempDir(), LOG_OPTS);
    log.open(true);
    expect(syncs).toEqual(["fsync dir"]);
    syncs.length = 0;
    appendN(log, 600, { durable: true, batch: 100 }); // 64 KiB segments of 128-byte records: one roll
    expect(log.segments).toHaveLength(2);
    expect(syncs).toEqual(["fdatasync file", "fsync dir"]);
    log.close();
  });

  it("a process-durability log never syncs on its own", () => {
    const log = new StreamLog(tempDir(), LOG_OPTS);
    log.open(false);
    appendN(log, 600, { batch: 100 });
    expect(log.segments).toHaveLength(2);
    expect(syncs).toEqual([]);
    log.close();
  });

  it("flush syncs a log with appends since its last sync, once", async () => {
    const log = new StreamLog(tempDir(), LOG_OPTS);
    log.open();
    await log.flush();
    expect(syncs).toEqual([]);
    appendN(log, 5);
    await log.flush();
    await log.flush();
    expect(syncs).toEqual(["fdatasync file"]);
    log.close();
  });

  it("flush syncs the segments a process-durability log rolled without a sync, also once the open-file cache closed them, but not those retention removed", async () => {
    const dir = tempDir();
    const files = new OpenFiles(1); // every other file opened closes the last one
    const log = new StreamLog(dir, { ...LOG_OPTS, openFiles: files });
    log.open(false);
    appendN(log, 1600, { batch: 100 }); // 128-byte records, 64 KiB segments: 4 segments
    expect(log.segments).toHaveLength(4);
    expect(syncs).toEqual([]);
    const other = new StreamLog(tempDir(), { ...LOG_OPTS, openFiles: files });
    other.open(false); // takes the one open file: the active segment is closed, not synced
    expect(log.active.fd).toBe(-1);
    expect(log.applyRetention(Date.now(), Number.MAX_SAFE_INTEGER, 3 * LOG_OPTS.segmentBytesMax, false)).toBe(1);
    await log.flush();
    expect(synced).toEqual(log.segments.map((s) => s.logPath));
    synced.length = 0;
    await log.flush();
    expect(synced).toEqual([]);
    log.close();
    other.close();
  });

  it("an append stamped with the wrong seqs is refused and moves nothing", () => {
    const log = new StreamLog(tempDir(), LOG_OPTS);
    log.open();
    appendN(log, 5);
    const wrongFirst = frames(7, 3, 100, 2_000);
    expect(() => log.append(wrongFirst.buf, wrongFirst.bytes, 3, false)).toThrow(/log invariant/);
    const wrongCount = frames(6, 3, 100, 2_000);
    expect(() => log.append(wrongCount.buf, wrongCount.bytes, 2, false)).toThrow(/log invariant/);
    const gap = Buffer.concat([frames(6, 1, 100, 2_000).buf, frames(8, 1, 100, 2_001).buf]);
    expect(() => log.append(gap, gap.length, 2, false)).toThrow(/log invariant/);
    const firstOnly = Buffer.concat([frames(7, 1, 100, 2_000).buf, frames(7, 1, 100, 2_001).buf]); // last seq as due, first not
    expect(() => log.append(firstOnly, firstOnly.length, 2, false)).toThrow(/log invariant/);
    expect(log.headSeq).toBe(5);
  });
});
