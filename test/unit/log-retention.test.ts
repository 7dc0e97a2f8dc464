// Retention deletes whole segments, oldest first, and never the data a
// reader is still promised: the active segment (the head) stays, and a
// segment with any unexpired record stays whole.
import { describe, it, expect, afterEach } from "vitest";
import { existsSync } from "node:fs";
import { StreamLog } from "../../src/log/log.js";
import { LOG_OPTS, appendN, readAll, range, removeTempDirs, tempDir } from "../helpers/log-frames.js";

afterEach(removeTempDirs);

/** A log of `n` records, record seq s stamped ts 1_000 + s - 1, over several segments. */
function logOf(n: number): StreamLog {
  const log = new StreamLog(tempDir(), LOG_OPTS);
  log.open();
  appendN(log, n);
  return log;
}

describe("byte retention", () => {
  it("never deletes the active segment, however small retention_bytes is", () => {
    const log = logOf(3000);
    const active = log.active;
    const removed = log.applyRetention(0, 1e15, 1, false);
    expect(removed).toBeGreaterThan(0);
    expect(log.segments).toEqual([active]);
    expect(existsSync(active.logPath)).toBe(true);
    expect(log.headSeq).toBe(3000);
    expect(readAll(log)).toEqual(range(active.baseSeq, 3000));
    appendN(log, 5);
    expect(readAll(log)).toEqual(range(active.baseSeq, 3005));
    log.close();
  });

  it("drops just enough of the oldest segments to fit, and nothing when the log fits exactly", () => {
    const log = logOf(3000);
    const sizes = log.segments.map((s) => s.size);
    const total = sizes.reduce((a, b) => a + b, 0);
    expect(log.applyRetention(0, 1e15, total, false)).toBe(0);
    expect(log.segments).toHaveLength(sizes.length);
    // One byte less: exactly the oldest segment goes.
    const oldest = log.segments[0];
    expect(log.applyRetention(0, 1e15, total - 1, false)).toBe(1);
    expect(existsSync(oldest.logPath)).toBe(false);
    expect(log.firstSeq).toBe(log.segments[0].baseSeq);
    // A bound between: the fewest oldest segments whose removal fits it.
    const bound = total - sizes[0] - sizes[1] - sizes[2] + 10;
    expect(log.applyRetention(0, 1e15, bound, false)).toBe(2);
    expect(log.bytes).toBeLessThanOrEqual(bound);
    expect(log.bytes + sizes[2]).toBeGreaterThan(bound);
    expect(readAll(log)).toEqual(range(log.firstSeq, 3000));
    log.close();
  });
});

describe("age retention", () => {
  it("deletes only whole segments whose newest record has expired", () => {
    const log = logOf(3000);
    const [s0, s1, s2] = log.segments;
    const cutoff = 1_000 + (s1.baseSeq + s1.lastSeq) / 2; // inside the second segment's records
    const removed = log.applyRetention(cutoff + 500, 500, null, false);
    expect(removed).toBe(1);
    expect(existsSync(s0.logPath)).toBe(false);
    // The second segment holds expired records, but also unexpired ones: kept whole.
    expect(log.segments[0]).toBe(s1);
    expect(log.firstSeq).toBe(s1.baseSeq);
    expect(readAll(log)).toEqual(range(s1.baseSeq, 3000));
    expect(log.segments[1]).toBe(s2);
    log.close();
  });

  it("keeps a segment whose newest record is exactly at the cutoff", () => {
    const log = logOf(3000);
    const s0 = log.segments[0];
    expect(log.applyRetention(s0.lastTs + 1_000, 1_000, null, false)).toBe(0);
    expect(log.applyRetention(s0.lastTs + 1_001, 1_000, null, false)).toBe(1);
    expect(log.firstSeq).toBe(s0.lastSeq + 1);
    log.close();
  });

  it("rolls and frees an idle active segment once all of it has expired, not before", () => {
    const log = logOf(100);
    expect(log.segments).toHaveLength(1);
    const only = log.active;
    // Its newest record is exactly at the cutoff: nothing expires.
    expect(log.applyRetention(only.lastTs + 1_000, 1_000, null, false)).toBe(0);
    expect(log.active).toBe(only);
    expect(log.applyRetention(only.lastTs + 1_001, 1_000, null, false)).toBe(1);
    expect(log.active).not.toBe(only);
    expect(existsSync(only.logPath)).toBe(false);
    expect([log.headSeq, log.firstSeq, log.active.baseSeq]).toEqual([100, 101, 101]);
    appendN(log, 3);
    expect(readAll(log)).toEqual([101, 102, 103]);
    log.close();
  });

  it("an empty log is left alone", () => {
    const log = new StreamLog(tempDir(), LOG_OPTS);
    log.open();
    const only = log.active;
    expect(log.applyRetention(1e12, 1_000, 0, false)).toBe(0);
    expect(log.segments).toEqual([only]);
    log.close();
  });
});

describe("retention and a sync in flight", () => {
  it("leaves a just-rolled segment an fdatasync still runs on for the next round", async () => {
    const log = new StreamLog(tempDir(), LOG_OPTS);
    log.open(true);
    appendN(log, 10, { durable: true });
    const synced = new Promise<Error | null>((resolve) => log.syncTo(log.headSeq, resolve));
    const rolled = log.active;
    log.roll(true);
    // Everything is past retention, but the rolled segment's sync has not come back yet.
    expect(log.applyRetention(Number.MAX_SAFE_INTEGER, 1, null, true)).toBe(0);
    expect(existsSync(rolled.logPath)).toBe(true);
    expect(await synced).toBeNull();
    expect(log.applyRetention(Number.MAX_SAFE_INTEGER, 1, null, true)).toBe(1);
    expect(existsSync(rolled.logPath)).toBe(false);
    expect(log.headSeq).toBe(10);
    log.close();
  });
});
