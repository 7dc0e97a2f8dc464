// The log of one stream: its segments, append, group commit (and the cut
// back after a failed fdatasync) and read. recovery.ts opens it and
// retention.ts picks the segments that age out; a segment, its sparse index
// and its file names have modules of their own. Only the shard worker that
// owns the stream touches it (single writer).
//
// Past ~450 lines: append, group commit with its failure handling (the cut
// back, the vouches of synchronous syncs), read, the timelines' horizon (uncommittedTs) and the
// clean stop's flush (of the active segment and those rolled without a sync) share the head,
// the commit point and the segments' open files, private to this class; taking
// one of them out would put a call or an object between them on per-batch
// paths, or make the commit point writable from outside.
import { fdatasync, fdatasyncSync, ftruncateSync, readSync, writeSync } from "node:fs";
import { Segment, syncDir, type SegmentOwner } from "./segment.js";
import { unboundedFiles, type OpenFiles } from "./open-files.js";
import { scanFrames } from "./scan.js";
import { checkFrame, frameProblem, frameSeq, frameTs, FRAME_SHORT, RECORD_HEADER_BYTES } from "./record.js";
import { u32 } from "../bytes.js";
import { CorruptRecordError, type CorruptionInfo } from "./damage.js";
import { firstSegment, recoverLog, type RecoveryReport } from "./recovery.js";
import { segmentsPastRetention } from "./retention.js";

// The shard takes these from the log, whose answers carry them.
export { CorruptRecordError, type CorruptionInfo } from "./damage.js";
export type { RecoveryReport } from "./recovery.js";

export interface LogOptions {
  segmentBytesMax: number;
  indexIntervalBytes: number;
  /** Largest valid frame; anything claiming more is damage, not data. */
  frameBytesMax: number;
  /** Told how long each fdatasync of a segment took (the shard's fsync histogram). */
  observeSyncSeconds?: (seconds: number) => void;
  /** The shard's open files (segments, checkpoint files, held.log); none given: never closed for want of room. */
  openFiles?: OpenFiles;
}

/**
 * A sync of this log failed and so did cutting the refused records back:
 * what the file holds past the last commit is unknown until a restart's
 * recovery reads it. Every append is refused until then.
 */
export class LogFailedError extends Error {
  readonly code = "EIO";
  constructor(
    readonly dir: string,
    cause: unknown,
  ) {
    super(`the log in ${dir} could not be synced or cut back (${(cause as Error)?.message ?? cause}); restart to recover it`);
  }
}

/** A contiguous run of stored frames: what a replay page or live batch sends. */
export interface FramePage {
  buf: Buffer;
  bytes: number;
  count: number;
  /** Seq to ask for next. */
  next: number;
  /** Set when the page stopped at damaged data. */
  corrupt?: CorruptionInfo;
}

/** One record header, read by uncommittedTs (a shard's logs are used by its one thread). */
const headerBuf = Buffer.allocUnsafe(RECORD_HEADER_BYTES);

export class StreamLog implements SegmentOwner {
  segments: Segment[] = [];
  headSeq = 0;
  lastTs = 0;
  /** Highest seq known to be durable at the stream's durability level. */
  committedSeq = 0;
  // Where committedSeq ends in the active segment, and its ingest_ts: what a
  // failed sync cuts back to. committedSeq never lies before the active
  // segment (a roll syncs what it closes), so one segment is ever cut.
  private committedBytes = 0;
  private committedTs = 0;
  private failed: LogFailedError | null = null;
  /** Cuts made by failed syncs: a sync that started before one commits nothing. */
  private cuts = 0;
  /** Synchronous syncs that committed records (rolls, before process appends): see startSync. */
  private vouches = 0;
  private syncing = false;
  private syncSeg: Segment | null = null;
  /** The one closed segment whose file is open for reading (bounded fds). */
  private reading: Segment | null = null;
  private syncWaiters: Array<{ seq: number; done: (err: Error | null) => void }> | null = null;
  /** Appended to the active segment since the last flush (flush() skips clean logs). */
  private unsynced = false;
  /** Segments rolled without an fdatasync (process durability) while holding records appended since the last flush: flush() syncs them too. */
  private rolledUnsynced: Segment[] = [];
  /** The segment flush() is syncing in the thread pool. */
  private flushSeg: Segment | null = null;

  readonly files: OpenFiles;

  constructor(
    readonly dir: string,
    private readonly opts: LogOptions,
  ) {
    this.files = opts.openFiles ?? unboundedFiles();
  }

  /**
   * Whether the open-file cache may close a segment now: not while an
   * fdatasync of it runs in the thread pool (the fd number could be reused
   * under it), nor while it holds fsync appends waiting for their sync (a
   * writeback error must reach the fd that syncs them, and the kernel may
   * forget it once no fd of the file is open).
   */
  mayClose(seg: Segment): boolean {
    return seg !== this.syncSeg && seg !== this.flushSeg && !(seg === this.active && this.committedSeq < this.headSeq);
  }

  get active(): Segment {
    return this.segments[this.segments.length - 1];
  }

  /** The oldest retained seq: the base of the first segment holding records (head + 1 if none). */
  get firstSeq(): number {
    // Usually the first segment; an empty one ahead of others is a closed
    // segment that recovery found emptied (damage), which holds nothing.
    for (const seg of this.segments) if (!seg.empty) return seg.baseSeq;
    return this.headSeq + 1;
  }

  get bytes(): number {
    let n = 0;
    for (const s of this.segments) n += s.size;
    return n;
  }

  // ---- recovery --------------------------------------------------------

  /**
   * Opens (or creates) the log and recovers it (recovery.ts): head_seq comes
   * from the last valid record, and a torn tail is cut back to the last
   * commit mark. `durable`: a new segment's directory entry is fsynced too.
   * `unmarkedLog`: the log was written before commit marks existed.
   */
  open(durable = false, unmarkedLog = false): RecoveryReport {
    const { segments, lastTs, report } = recoverLog(this.dir, this.opts, this, durable, unmarkedLog);
    this.segments = segments;
    this.headSeq = this.active.lastSeq;
    this.lastTs = lastTs;
    this.commitAll();
    return report;
  }

  /**
   * Starts the log of a new stream in a directory just made (nothing in it
   * to recover): no directory read, no scan, the first segment only. The
   * caller syncs the directory if it must (it has files of its own there).
   * `baseSeq`: the seq of its first record (a cluster node's copy of a
   * stream starts after what the archive holds).
   */
  create(baseSeq = 1): void {
    this.segments = firstSegment(this.dir, this.opts.indexIntervalBytes, this, false, baseSeq);
    this.headSeq = baseSeq - 1;
    this.commitAll();
  }

  /** The scrub read this closed segment through without finding damage. */
  markVerified(baseSeq: number): void {
    this.segments.find((s) => s.baseSeq === baseSeq)?.markVerified();
  }

  // ---- append ----------------------------------------------------------

  /**
   * Appends frames already stamped with seqs headSeq+1...; `frames` holds
   * `count` whole frames back to back, the last one with its batch's commit
   * mark. The batch lands whole in one segment or not at all: on a write
   * error the segment is cut back and rethrown, and after a crash recovery
   * cuts a batch whose last frame did not make it.
   */
  append(frames: Buffer, bytes: number, count: number, durable: boolean): void {
    if (this.failed) throw this.failed;
    this.checkBatch(frames, bytes, count);
    // Records of fsync appends still waiting for their sync are synced first:
    // this append commits everything below it, and nothing may be committed
    // (readable, answered) that a sync has not vouched for.
    if (!durable && this.committedSeq < this.headSeq) this.syncOutstanding();
    let seg = this.active;
    if (!seg.empty && seg.size + bytes > this.opts.segmentBytesMax) seg = this.roll(durable);
    const start = seg.size;
    const fd = seg.openFd();
    try {
      let off = 0;
      while (off < bytes) off += writeSync(fd, frames, off, bytes - off, start + off);
    } catch (err) {
      try {
        ftruncateSync(fd, start);
      } catch {
        // The torn bytes are cut by recovery if this fails too.
      }
      throw err;
    }
    let at = 0;
    for (let i = 0, seq = this.headSeq + 1; i < count; i++, seq++) {
      const frameBytes = frames.readUInt32LE(at);
      seg.noteRecord(seq, frameTs(frames, at), start + at, frameBytes);
      at += frameBytes;
    }
    this.headSeq = seg.lastSeq;
    this.lastTs = seg.lastTs;
    this.unsynced = true;
    if (!durable) this.commitAll();
  }

  /**
   * The invariants of a batch, checked before a byte of it is written (a
   * broken one stops the append; the log stays as it was): whole frames
   * within the frame bound — the publisher lets no larger one through, and
   * recovery and reads would take it for damage — stamped headSeq + 1
   * onwards, in one chain.
   */
  private checkBatch(frames: Buffer, bytes: number, count: number): void {
    let at = 0;
    let lastAt = 0;
    let largest = 0;
    for (let i = 0; i < count && at + 4 <= bytes; i++) {
      const frameBytes = frames.readUInt32LE(at);
      if (frameBytes > largest) largest = frameBytes;
      lastAt = at;
      at += frameBytes;
    }
    if (largest > this.opts.frameBytesMax) throw new Error(`log invariant: a ${largest}-byte frame, over frameBytesMax (${this.opts.frameBytesMax})`);
    if (at !== bytes || frameSeq(frames, 0) !== this.headSeq + 1 || frameSeq(frames, lastAt) !== this.headSeq + count) {
      throw new Error(
        `log invariant: ${count} frames (${at}/${bytes} bytes) stamped ${frameSeq(frames, 0)}..${frameSeq(frames, lastAt)}, head was ${this.headSeq}`,
      );
    }
  }

  /** Syncs the records of fsync appends that wait for their sync (they lie in the active segment), then commits them. */
  private syncOutstanding(): void {
    try {
      this.timedSync(this.active.openFd());
    } catch (err) {
      this.refuseUncommitted(err as Error);
      throw err;
    }
    this.vouches++;
    this.commitAll();
  }

  private commitAll(): void {
    this.committedSeq = this.headSeq;
    this.committedBytes = this.active.size;
    this.committedTs = this.lastTs;
  }

  /** Closes the active segment (persisting its index) and opens the next one. */
  roll(durable: boolean): Segment {
    const old = this.active;
    // Records still waiting for their sync are synced with the segment that
    // closes (even if this append is not durable), so what a failed sync
    // cuts back always lies in the active segment.
    const synced = durable || this.committedSeq < old.lastSeq;
    if (synced) {
      try {
        this.timedSync(old.openFd());
      } catch (err) {
        this.refuseUncommitted(err as Error);
        throw err;
      }
      this.vouches++;
      this.committedSeq = old.lastSeq;
      this.committedBytes = old.size; // the roll may still fail below, leaving `old` active
      this.committedTs = old.lastTs;
    }
    // Every file first, then the switch: when one cannot be made (no space,
    // no inodes) the roll throws with the old segment still open and active.
    // Closing it first left a closed active segment, fd -1: every later
    // append failed with 500 even after space returned.
    const next = new Segment(this.dir, old.lastSeq + 1, this.opts.indexIntervalBytes, true, this);
    try {
      old.writeIndexFiles();
    } catch (err) {
      try {
        next.remove();
      } catch {
        // Unlink does not need space; if it still fails, the next roll stops
        // at the leftover file (EEXIST) rather than write over it.
      }
      throw err;
    }
    old.markClosed();
    // Its records stay due for the clean stop's sync: closing the fd does not write them.
    if (this.unsynced && !synced) this.rolledUnsynced.push(old);
    this.unsynced = false;
    // An fdatasync may still be running on this fd in the thread pool; its
    // callback closes the file instead, so the fd number is never reused under it.
    if (this.syncSeg !== old) old.close();
    this.segments.push(next);
    this.committedBytes = 0;
    if (durable) syncDir(this.dir);
    return next;
  }

  /**
   * Group commit: calls `done` once every record up to `seq` is on disk. One
   * fdatasync covers every waiter that arrived before it started.
   */
  syncTo(seq: number, done: (err: Error | null) => void): void {
    if (seq <= this.committedSeq) return done(null);
    (this.syncWaiters ??= []).push({ seq, done });
    if (!this.syncing) this.startSync();
  }

  private startSync(): void {
    this.syncing = true;
    const target = this.headSeq;
    const targetBytes = this.active.size;
    const targetTs = this.lastTs;
    const cuts = this.cuts;
    const vouches = this.vouches;
    const seg = (this.syncSeg = this.active);
    const startedMs = performance.now();
    fdatasync(seg.openFd(), (err) => {
      this.opts.observeSyncSeconds?.((performance.now() - startedMs) / 1000);
      this.syncing = false;
      this.syncSeg = null;
      if (seg.closed && this.reading !== seg) seg.close();
      if (err && vouches !== this.vouches) {
        // A synchronous sync of this file (a roll's, or before a process
        // append) succeeded while this one ran, and records it covered were
        // committed on its word: the kernel reports a writeback error to one
        // caller only, so that word may be wrong. What is on disk is unknown
        // until recovery reads it; refuse everything until a restart.
        this.failed = new LogFailedError(this.dir, err);
        const waiting = this.syncWaiters ?? [];
        this.syncWaiters = null;
        for (const w of waiting) w.done(err);
        return;
      }
      if (err) return this.refuseUncommitted(err);
      // A roll since the sync started commits past target itself; a cut
      // since then (a roll's sync failed) leaves nothing this one covered.
      if (target > this.committedSeq && cuts === this.cuts) {
        this.committedSeq = target;
        this.committedBytes = targetBytes;
        this.committedTs = targetTs;
      }
      const waiting = this.syncWaiters ?? [];
      this.syncWaiters = null;
      for (const w of waiting) {
        if (w.seq <= this.committedSeq) w.done(null);
        else (this.syncWaiters ??= []).push(w);
      }
      if (this.syncWaiters) this.startSync();
    });
  }

  /**
   * A sync failed: the records past the last commit were never acknowledged
   * and every publish waiting on them hears the error, so they are cut from
   * the file and the head, never to turn up later (a retry would append them
   * twice). After a failed fdatasync the kernel may have dropped those pages
   * and will not say so again: trusting a later sync would be trusting luck.
   * If the cut cannot be made durable either, the log refuses appends until
   * a restart's recovery has read the file again.
   */
  private refuseUncommitted(err: Error): void {
    if (this.headSeq > this.committedSeq) {
      this.cuts++;
      try {
        this.active.cutTo(this.committedBytes, this.committedSeq, this.committedTs);
        fdatasyncSync(this.active.openFd());
      } catch (cutErr) {
        this.failed = new LogFailedError(this.dir, cutErr);
      }
      this.headSeq = this.committedSeq;
      this.lastTs = this.committedTs;
    }
    const waiting = this.syncWaiters ?? [];
    this.syncWaiters = null;
    for (const w of waiting) w.done(w.seq <= this.committedSeq ? null : err);
  }

  // ---- read ------------------------------------------------------------

  private fdFor(seg: Segment): number {
    if (seg.fd < 0 && seg.closed) {
      if (this.reading && this.reading !== seg && this.reading.closed) this.reading.close();
      this.reading = seg;
    }
    return seg.openFd();
  }

  private segmentFor(seq: number): Segment | null {
    let lo = 0;
    let hi = this.segments.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.segments[mid].baseSeq <= seq) lo = mid;
      else hi = mid - 1;
    }
    const s = this.segments[lo];
    return s && seq >= s.baseSeq && seq <= s.lastSeq ? s : null;
  }

  /**
   * Reads whole frames from `from` up to `to` (inclusive, capped at the
   * committed seq), at most `eventsMax` frames and about `bytesMax` bytes
   * (the first frame is always included). Every frame's CRC and seq are checked
   * before it is handed out; the page stops at the first damaged one.
   */
  read(from: number, to: number, eventsMax: number, bytesMax: number, out: Buffer): FramePage {
    const last = Math.min(to, this.committedSeq);
    let seq = from;
    let len = 0;
    let count = 0;
    let full = false;
    let corrupt: CorruptionInfo | undefined;
    let seg: Segment | null = null;
    let pos = 0;
    let nextFrameBytes = 0;
    let retried = false;
    const frameBytesMax = this.opts.frameBytesMax;
    while (!full && !corrupt && count < eventsMax && seq <= last) {
      if (!seg || seq > seg.lastSeq) {
        seg = this.segmentFor(seq);
        if (!seg) {
          corrupt = { segment: -1, position: 0, seq, reason: "no segment holds this seq" };
          break;
        }
        pos = seg.seekSeq(seq).pos;
      }
      // Read about what the page still needs (average frame size of this
      // segment), not the whole buffer: a short read simply loops.
      const avgFrameBytes = Math.ceil(seg.size / Math.max(1, seg.records));
      const estimate = (Math.min(eventsMax - count, last - seq + 1) + 1) * avgFrameBytes + this.opts.indexIntervalBytes;
      const want = Math.min(seg.size - pos, out.length - len, Math.max(estimate, nextFrameBytes));
      if (want <= 0) break;
      const got = readSync(this.fdFor(seg), out, len, want, pos);
      const end = len + got;
      let p = len;
      let keepFrom = -1;
      while (p < end && count < eventsMax && seq <= last) {
        const frameBytes = checkFrame(out, p, end, frameBytesMax, !seg.verified);
        if (frameBytes < 0) {
          const at = pos + (p - len);
          if (frameBytes !== FRAME_SHORT) corrupt = { segment: seg.baseSeq, position: at, seq, reason: frameProblem(frameBytes) };
          else if (end - p >= 4) {
            // A frame larger than this read: the next read takes all of it,
            // unless it claims to run past the segment's end (damage).
            const claimed = u32(out, p);
            if (at + claimed > seg.size) corrupt = { segment: seg.baseSeq, position: at, seq, reason: "length runs past the end of the segment" };
            else nextFrameBytes = claimed + this.opts.indexIntervalBytes;
          }
          break;
        }
        const s = frameSeq(out, p);
        if (keepFrom === -1 && s < seq) {
          p += frameBytes; // between the index point and the wanted seq
          continue;
        }
        if (s !== seq) {
          corrupt = { segment: seg.baseSeq, position: pos + (p - len), seq, reason: `found seq ${s}` };
          break;
        }
        const kept = keepFrom === -1 ? 0 : p - keepFrom;
        if (count > 0 && len + kept + frameBytes > bytesMax) {
          full = true;
          break;
        }
        if (keepFrom === -1) keepFrom = p;
        p += frameBytes;
        count++;
        seq++;
      }
      const consumed = p - len;
      if (keepFrom !== -1) {
        out.copyWithin(len, keepFrom, p);
        len += p - keepFrom;
      }
      if (consumed === 0) {
        // Read once more, with room for the whole frame; if that cannot help
        // (the frame does not fit in what is left of `out`), the page ends.
        if (nextFrameBytes <= got || retried) break;
        retried = true;
        continue;
      }
      retried = false;
      nextFrameBytes = 0;
      pos += consumed;
    }
    // A page never comes back empty while records are due: that would read
    // as "caught up" to a client and hide what follows.
    if (count === 0 && !corrupt && !full && from <= last) corrupt = { segment: seg?.baseSeq ?? -1, position: pos, seq: from, reason: "record cannot be read" };
    if (corrupt && count === 0) throw new CorruptRecordError(corrupt);
    return { buf: out, bytes: len, count, next: from + count, corrupt };
  }

  /**
   * The ingest_ts of the oldest record appended but not committed yet (an
   * fsync batch waiting for its sync), or null when every record is
   * committed. Records are appended in ingest_ts order, so every record this
   * log will still commit has an ingest_ts at least this large: a timeline
   * read shows nothing at or past it, which an event committed later could
   * otherwise precede. Those records lie in the active segment from where
   * the committed ones end (see committedBytes).
   */
  uncommittedTs(): number | null {
    if (this.committedSeq === this.headSeq) return null;
    const got = readSync(this.active.openFd(), headerBuf, 0, RECORD_HEADER_BYTES, this.committedBytes);
    if (got !== RECORD_HEADER_BYTES || frameSeq(headerBuf, 0) !== this.committedSeq + 1) {
      throw new Error(`log invariant: the record after committed seq ${this.committedSeq} is not at byte ${this.committedBytes} of the active segment`);
    }
    return frameTs(headerBuf, 0);
  }

  /**
   * Seq of the first record with ingest_ts >= ts (headSeq + 1 if none). A
   * damaged record on the way answers its own seq: a reader starting there
   * is told about the damage rather than moved past it.
   */
  seqAtTime(ts: number): number {
    for (const seg of this.segments) {
      if (seg.empty || seg.lastTs < ts) continue;
      const start = seg.seekTime(ts);
      let found = -1;
      const r = scanFrames(this.fdFor(seg), start.pos, seg.size, start.seq, this.opts.frameBytesMax, (seq, recordTs) => {
        if (recordTs < ts) return false;
        found = seq;
        return true;
      });
      if (found >= 0) return found;
      if (r.damage) return r.damage.seq;
    }
    return this.headSeq + 1;
  }

  /**
   * Calls `fn(buf, at)` for each committed record from `from` on (dedup
   * rebuild), whatever its size; stops at damage.
   */
  forEach(from: number, fn: (buf: Buffer, at: number) => void): void {
    const last = this.committedSeq;
    const begin = Math.max(from, this.firstSeq);
    // Past damage, on from the next index point: the records a reader can
    // still be served (read() seeks the same points) are the ones visited.
    for (const seg of this.segments) {
      if (seg.empty || seg.lastSeq < begin || seg.baseSeq > last) continue;
      let start: { seq: number; pos: number } | null = seg.seekSeq(Math.max(begin, seg.baseSeq));
      while (start) {
        const r = scanFrames(
          this.fdFor(seg),
          start.pos,
          seg.size,
          start.seq,
          this.opts.frameBytesMax,
          (s, _ts, _pos, _fb, buf, at) => {
            if (s >= begin && s <= last) fn(buf, at);
            return s >= last;
          },
          !seg.verified,
        );
        start = r.damage ? seg.pointAfter(r.damage.position) : null;
      }
    }
  }

  // ---- retention -------------------------------------------------------

  /**
   * Deletes whole segments that are past `retentionMs` (by their newest
   * record) or that push the log over `retentionBytes`, oldest first. The
   * active segment is rolled first when everything in it has expired, so an
   * idle stream frees its disk too. Returns the number of segments removed.
   */
  applyRetention(nowMs: number, retentionMs: number, retentionBytes: number | null, durable: boolean, keepFromSeq = Number.POSITIVE_INFINITY): number {
    const cutoff = nowMs - retentionMs;
    if (!this.active.empty && this.active.lastTs < cutoff) this.roll(durable);
    let past = segmentsPastRetention(this.segments, cutoff, retentionBytes);
    // Cluster mode: a segment not yet in the archive stays until it is.
    while (past > 0 && this.segments[past - 1].lastSeq >= keepFromSeq) past--;
    // A segment an fdatasync still runs on (one just rolled) waits for the next
    // round: closing its fd now could hand that fd number to another file
    // before the thread pool gets to the sync.
    const syncing = this.syncSeg === null ? -1 : this.segments.indexOf(this.syncSeg);
    if (syncing >= 0 && syncing < past) past = syncing;
    for (let i = 0; i < past; i++) {
      const seg = this.segments.shift() as Segment;
      seg.remove();
      // Gone from disk: nothing left to sync.
      if (this.rolledUnsynced.includes(seg)) this.rolledUnsynced = this.rolledUnsynced.filter((s) => s !== seg);
    }
    return past;
  }

  private timedSync(fd: number): void {
    const startedMs = performance.now();
    fdatasyncSync(fd);
    this.opts.observeSyncSeconds?.((performance.now() - startedMs) / 1000);
  }

  close(): void {
    for (const s of this.segments) s.close();
  }

  /**
   * Syncs every segment holding records appended since the last flush: the
   * active one, and those rolled without a sync (process durability), also
   * when the open-file cache closed their fd since (the pages stay dirty in
   * the kernel; an fd opened again syncs them). A clean stop then survives
   * power loss too; the index is rebuilt. One fdatasync at a time for this
   * log, in the thread pool, so that a shard keeps many logs' syncs in flight.
   */
  async flush(): Promise<void> {
    const due = this.unsynced ? [...this.rolledUnsynced, this.active] : this.rolledUnsynced;
    for (const seg of due) {
      this.flushSeg = seg;
      try {
        const fd = seg.openFd();
        await new Promise<void>((resolve, reject) => fdatasync(fd, (err) => (err ? reject(err) : resolve())));
      } finally {
        this.flushSeg = null;
      }
      if (seg.closed && this.reading !== seg) seg.close();
    }
    this.rolledUnsynced = [];
    this.unsynced = false;
  }
}
