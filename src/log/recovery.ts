// Recovery of one stream's log at start (Kafka's log loading): which segments
// there are, which closed ones are taken on trust from their index, and where
// the active one's torn tail is cut. An explicit path with its own tests, not
// a side effect of opening files; each segment recovers itself through its
// own methods (resetForScan, noteRecord, cutTo), this module decides what is
// kept.
import { fdatasyncSync, mkdirSync, readSync, readdirSync, writeSync } from "node:fs";
import { Segment, syncDir, type SegmentOwner } from "./segment.js";
import { segmentBases } from "./file-names.js";
import { scanSegment, type ScanResult } from "./scan.js";
import { u32, writeU32 } from "../bytes.js";
import { crc32Range } from "../crc.js";
import type { CorruptionInfo } from "./damage.js";

export interface RecoveryReport {
  segments: number;
  /** Bytes cut from the torn tail of the last segment. */
  truncatedBytes: number;
  /** Whole records cut with them: the start of a batch whose append a crash interrupted. */
  uncommittedRecords: number;
  rebuiltIndexes: number;
  /** Damage found in closed segments (kept, reported, never served). */
  corruptions: CorruptionInfo[];
  /** Closed segments whose index was trusted without reading the records. */
  unverified: Array<{ path: string; baseSeq: number; lastSeq: number }>;
}

export interface RecoveredLog {
  /** Oldest first; the last one is the active segment, open for appends. */
  segments: Segment[];
  /** ingest_ts of the newest record (0 if none). */
  lastTs: number;
  report: RecoveryReport;
}

/**
 * Opens (or creates) the log in `dir`: closed segments load their index or
 * are rescanned; the last segment is always scanned, and a torn tail (short,
 * bad length, bad CRC, or broken seq chain) is cut. `durable`: the directory
 * entry of a new segment is fsynced too (a crash of the process alone cannot
 * lose it).
 *
 * The tail is cut back to the last record that carries its batch's commit
 * mark (see record.ts): records after it belong to a batch whose append a
 * crash interrupted, which nobody was told about. `unmarkedLog`: the log was
 * written before commit marks existed; its last record is taken as committed
 * and given the mark, so from now on the rule holds for it too.
 */
export function recoverLog(
  dir: string,
  opts: { indexIntervalBytes: number; frameBytesMax: number },
  owner: SegmentOwner,
  durable: boolean,
  unmarkedLog: boolean,
): RecoveredLog {
  mkdirSync(dir, { recursive: true });
  const report: RecoveryReport = { segments: 0, truncatedBytes: 0, uncommittedRecords: 0, rebuiltIndexes: 0, corruptions: [], unverified: [] };
  const bases = segmentBases(readdirSync(dir));
  if (bases.length === 0) {
    report.segments = 1;
    return { segments: firstSegment(dir, opts.indexIntervalBytes, owner, durable), lastTs: 0, report };
  }
  const segments: Segment[] = [];
  for (let i = 0; i < bases.length; i++) {
    const seg = new Segment(dir, bases[i], opts.indexIntervalBytes, false, owner);
    if (i < bases.length - 1) {
      seg.markClosed();
      if (seg.loadIndexFiles()) report.unverified.push({ path: seg.logPath, baseSeq: seg.baseSeq, lastSeq: seg.lastSeq });
      else {
        report.rebuiltIndexes++;
        const damage = rebuildClosed(seg, opts.frameBytesMax, bases[i + 1]);
        if (damage) report.corruptions.push(damage);
        else seg.writeIndexFiles();
      }
      seg.close(); // closed segments are opened lazily, one at a time, to read
    } else recoverActive(seg, opts.frameBytesMax, unmarkedLog, report);
    const prev = segments[segments.length - 1];
    if (prev && seg.baseSeq !== prev.lastSeq + 1 && report.corruptions.length === 0) {
      report.corruptions.push({
        segment: prev.baseSeq,
        position: prev.size,
        seq: prev.lastSeq + 1,
        reason: `segment ${seg.baseSeq} does not follow seq ${prev.lastSeq}`,
      });
    }
    segments.push(seg);
  }
  report.segments = segments.length;
  let lastTs = 0;
  for (let i = segments.length - 1; i >= 0 && lastTs === 0; i--) lastTs = segments[i].lastTs;
  return { segments, lastTs, report };
}

/**
 * The segments of a new log: one, empty, based at seq 1. `durable`: its
 * directory entry is fsynced (a power loss must not lose the file that
 * fsync appends are acknowledged from).
 */
export function firstSegment(dir: string, indexIntervalBytes: number, owner: SegmentOwner, durable: boolean, baseSeq = 1): Segment[] {
  const segments = [new Segment(dir, baseSeq, indexIntervalBytes, true, owner)]; // sized to fit
  if (durable) syncDir(dir);
  return segments;
}

/** What a rescan found beyond the records the segment now holds. */
interface Rescan {
  scan: ScanResult;
  /** ingest_ts of the last record that carries a commit mark (0 if none). */
  committedTs: number;
  /** File position of the last record kept (-1 if none). */
  lastFrameAt: number;
  /** Records found at or past `nextBase`: not this segment's own. */
  foreign: number;
}

/**
 * Rebuilds a segment's index by reading every record, checking CRC and the
 * seq chain; stops at the first bad record (and at the first one from
 * `nextBase` on). The segment then holds every valid record before that.
 */
function rescan(seg: Segment, frameBytesMax: number, nextBase = Number.MAX_SAFE_INTEGER): Rescan {
  seg.resetForScan();
  let committedTs = 0;
  let lastFrameAt = -1;
  let foreign = 0;
  const scan = scanSegment(seg.openFd(), seg.fileBytes(), seg.baseSeq, frameBytesMax, (seq, ts, pos, frameBytes, _buf, _at, endsBatch) => {
    if (seq >= nextBase) {
      foreign++;
      return true;
    }
    seg.noteRecord(seq, ts, pos, frameBytes);
    lastFrameAt = pos;
    if (endsBatch) committedTs = ts;
  });
  return { scan, committedTs, lastFrameAt, foreign };
}

/**
 * A closed segment whose index could not be trusted (`nextBase`: the next
 * segment's base seq). Records from nextBase on are not its own (they were
 * put there) and are not served; its records before that are kept, marked or
 * not, since a closed segment holds only batches appended whole. Nothing is
 * cut from the file: damage is reported and kept, never served.
 */
function rebuildClosed(seg: Segment, frameBytesMax: number, nextBase: number): CorruptionInfo | null {
  const { scan, foreign } = rescan(seg, frameBytesMax, nextBase);
  if (scan.damage) return { segment: seg.baseSeq, ...scan.damage };
  if (foreign > 0)
    return { segment: seg.baseSeq, position: seg.size, seq: seg.lastSeq + 1, reason: `${foreign} records at or past the next segment's base seq ${nextBase}` };
  seg.markVerified();
  return null;
}

/**
 * The last segment: everything that does not check out is cut, and a torn
 * batch goes back to the last commit mark. A log that predates marks keeps
 * every whole record.
 */
function recoverActive(seg: Segment, frameBytesMax: number, unmarkedLog: boolean, report: RecoveryReport): void {
  const fileBytes = seg.fileBytes();
  const { scan, committedTs, lastFrameAt } = rescan(seg, frameBytesMax);
  let keepBytes = seg.size;
  let keepSeq = seg.lastSeq;
  let keepTs = seg.lastTs;
  // The record that is given the mark now, if the kept records end without one.
  let markAt = unmarkedLog ? lastFrameAt : -1;
  if (!unmarkedLog && scan.committedSeq < seg.lastSeq) {
    // A crash leaves a batch's prefix: whole records, then the end of the
    // file or a short frame. A record that is there whole but fails its
    // checks is damage instead (a bit flip), and it may be the very record
    // that carried the mark: then the records before it are kept, and the
    // last of them is marked (they were acknowledged with their batch; once
    // the damage behind them is cut they would look torn at the next start).
    const torn = scan.damage === null || scan.damage.reason === "short";
    if (torn) {
      report.uncommittedRecords = seg.lastSeq - scan.committedSeq;
      keepBytes = scan.committedBytes;
      keepSeq = scan.committedSeq;
      keepTs = committedTs;
    } else markAt = lastFrameAt;
  }
  seg.markVerified(); // whatever did not check out is cut just below
  if (keepBytes < fileBytes) {
    seg.cutTo(keepBytes, keepSeq, keepTs);
    fdatasyncSync(seg.openFd());
    report.truncatedBytes = fileBytes - keepBytes;
  }
  if (markAt >= 0) {
    markCommitted(seg.openFd(), markAt, frameBytesMax);
    fdatasyncSync(seg.openFd());
  }
}

/** Gives the (valid) record at `pos` of a log written before commit marks its mark. */
function markCommitted(fd: number, pos: number, frameBytesMax: number): void {
  const head = Buffer.alloc(4);
  readSync(fd, head, 0, 4, pos);
  const frameBytes = u32(head, 0);
  if (frameBytes > frameBytesMax) throw new Error(`log invariant: record at ${pos} claims ${frameBytes} bytes`);
  const frame = Buffer.allocUnsafe(frameBytes);
  readSync(fd, frame, 0, frameBytes, pos);
  writeU32(frame, 4, ~crc32Range(frame, 8, frameBytes) >>> 0);
  writeSync(fd, frame, 4, 4, pos + 4);
}
