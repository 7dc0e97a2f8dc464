// The log of one stream: its segments, append, read, recovery and retention.
// Only the shard worker that owns the stream touches it (single writer).
import { fdatasync, fdatasyncSync, ftruncateSync, mkdirSync, openSync, closeSync, readSync, readdirSync, writeSync, fsyncSync } from "node:fs";
import { Segment } from "./segment.js";
import { scanSegment } from "./scan.js";
import { checkFrame, frameProblem, frameSeq, frameTs, u32, FRAME_SHORT, RECORD_BYTES_MIN, RECORD_HEADER_BYTES } from "./record.js";

export interface LogOptions {
  segmentBytesMax: number;
  indexIntervalBytes: number;
  /** Largest valid frame; anything claiming more is damage, not data. */
  frameBytesMax: number;
}

export interface RecoveryReport {
  segments: number;
  /** Bytes cut from the torn tail of the last segment. */
  truncatedBytes: number;
  rebuiltIndexes: number;
  /** Damage found in closed segments (kept, reported, never served). */
  corruptions: CorruptionInfo[];
  /** Closed segments whose index was trusted without reading the records. */
  unverified: Array<{ path: string; baseSeq: number; lastSeq: number }>;
}

export interface CorruptionInfo {
  segment: number;
  position: number;
  /** The seq that was expected at that position. */
  seq: number;
  reason: string;
}

export class CorruptRecordError extends Error {
  constructor(readonly info: CorruptionInfo) {
    super(`record ${info.seq} is damaged (${info.reason}) in segment ${info.segment} at byte ${info.position}`);
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

const SCRATCH_BYTES = 1 << 20;
/**
 * Read buffer of seqAtTime, shared by every log of the thread (reads are
 * synchronous): one per log cost 1 MiB of external memory per stream, which
 * at 10,000 streams kept the garbage collector busy for seconds.
 */
let scratch: Buffer | null = null;
const scratchBuffer = () => (scratch ??= Buffer.allocUnsafe(SCRATCH_BYTES));

export class StreamLog {
  segments: Segment[] = [];
  headSeq = 0;
  lastTs = 0;
  /** Highest seq known to be durable at the stream's durability level. */
  committedSeq = 0;
  private syncing = false;
  private syncSeg: Segment | null = null;
  /** The one closed segment whose file is open for reading (bounded fds). */
  private reading: Segment | null = null;
  private syncWaiters: Array<{ seq: number; done: (err: Error | null) => void }> | null = null;
  /** Appended since the last fdatasync of this log (flush() skips clean logs). */
  private unsynced = false;

  constructor(readonly dir: string, private readonly opts: LogOptions) {}

  get active(): Segment {
    return this.segments[this.segments.length - 1];
  }

  get firstSeq(): number {
    return this.segments[0].empty ? this.headSeq + 1 : this.segments[0].baseSeq;
  }

  get bytes(): number {
    let n = 0;
    for (const s of this.segments) n += s.size;
    return n;
  }

  // ---- recovery --------------------------------------------------------

  /**
   * Opens (or creates) the log: closed segments load their index or are
   * rescanned; the last segment is always scanned, and a torn tail (short,
   * bad length, bad CRC, or broken seq chain) is cut. head_seq comes from the
   * last valid record. `durable`: the directory entry of a new segment is
   * fsynced too (a crash of the process alone cannot lose it).
   */
  open(durable = false): RecoveryReport {
    mkdirSync(this.dir, { recursive: true });
    const report: RecoveryReport = { segments: 0, truncatedBytes: 0, rebuiltIndexes: 0, corruptions: [], unverified: [] };
    const bases = readdirSync(this.dir)
      .filter((f) => /^\d{20}\.log$/.test(f))
      .map((f) => Number(f.slice(0, 20)))
      .sort((a, b) => a - b);
    if (bases.length === 0) {
      this.segments = [new Segment(this.dir, 1, this.opts.indexIntervalBytes, true)]; // sized to fit
      if (durable) this.syncDir();
      report.segments = 1;
      return report;
    }
    for (let i = 0; i < bases.length; i++) {
      const seg = new Segment(this.dir, bases[i], this.opts.indexIntervalBytes, false);
      const last = i === bases.length - 1;
      if (!last) {
        seg.closed = true;
        if (seg.loadIndexFiles()) report.unverified.push({ path: seg.logPath, baseSeq: seg.baseSeq, lastSeq: seg.lastSeq });
        else {
          report.rebuiltIndexes++;
          const damage = this.scan(seg);
          if (damage) report.corruptions.push(damage);
          else seg.writeIndexFiles();
        }
        seg.close(); // closed segments are opened lazily, one at a time, to read
      } else {
        const fileBytes = seg.fileBytes();
        this.scan(seg);
        seg.verified = true; // whatever did not check out is cut just below
        if (seg.size < fileBytes) {
          ftruncateSync(seg.fd, seg.size);
          fdatasyncSync(seg.fd);
          report.truncatedBytes = fileBytes - seg.size;
        }
      }
      const prev = this.segments[this.segments.length - 1];
      if (prev && seg.baseSeq !== prev.lastSeq + 1 && report.corruptions.length === 0) {
        report.corruptions.push({ segment: prev.baseSeq, position: prev.size, seq: prev.lastSeq + 1, reason: `segment ${seg.baseSeq} does not follow seq ${prev.lastSeq}` });
      }
      this.segments.push(seg);
    }
    report.segments = this.segments.length;
    const a = this.active;
    this.headSeq = a.lastSeq;
    this.committedSeq = this.headSeq;
    for (let i = this.segments.length - 1; i >= 0 && this.lastTs === 0; i--) this.lastTs = this.segments[i].lastTs;
    return report;
  }

  /**
   * Rebuilds a segment's index by reading every record, checking CRC and the
   * seq chain. Stops at the first bad record and returns what it found there.
   */
  private scan(seg: Segment): CorruptionInfo | null {
    seg.truncateIndex(0);
    seg.lastSeq = seg.baseSeq - 1;
    seg.size = 0;
    const r = scanSegment(seg.fd, seg.fileBytes(), seg.baseSeq, this.opts.frameBytesMax, (seq, ts, pos, frameBytes) =>
      seg.noteRecord(seq, ts, pos, frameBytes),
    );
    seg.verified = r.damage === null;
    return r.damage ? { segment: seg.baseSeq, ...r.damage } : null;
  }

  /** The scrub read this closed segment through without finding damage. */
  markVerified(baseSeq: number): void {
    const seg = this.segments.find((s) => s.baseSeq === baseSeq);
    if (seg) seg.verified = true;
  }

  // ---- append ----------------------------------------------------------

  /**
   * Appends frames already stamped with seqs headSeq+1...; `frames` holds
   * `count` whole frames back to back. The batch lands whole in one segment
   * or not at all: on a write error the segment is cut back and rethrown.
   */
  append(frames: Buffer, bytes: number, count: number, durable: boolean): void {
    let seg = this.active;
    if (!seg.empty && seg.size + bytes > this.opts.segmentBytesMax) seg = this.roll(durable);
    const start = seg.size;
    try {
      let off = 0;
      while (off < bytes) off += writeSync(seg.fd, frames, off, bytes - off, start + off);
    } catch (err) {
      try {
        ftruncateSync(seg.fd, start);
      } catch {
        // The torn bytes are cut by recovery if this fails too.
      }
      throw err;
    }
    let at = 0;
    let lastAt = 0;
    for (let i = 0, seq = this.headSeq + 1; i < count; i++, seq++) {
      const frameBytes = frames.readUInt32LE(at);
      seg.noteRecord(seq, frameTs(frames, at), start + at, frameBytes);
      lastAt = at;
      at += frameBytes;
    }
    // The seq chain must hold across the batch: first and last frame as stamped.
    if (at !== bytes || frameSeq(frames, 0) !== this.headSeq + 1 || frameSeq(frames, lastAt) !== this.headSeq + count) {
      throw new Error(`log invariant: ${count} frames (${at}/${bytes} bytes) stamped ${frameSeq(frames, 0)}..${frameSeq(frames, lastAt)}, head was ${this.headSeq}`);
    }
    this.headSeq = seg.lastSeq;
    this.lastTs = seg.lastTs;
    this.unsynced = true;
    if (!durable) this.committedSeq = this.headSeq;
  }

  /** Closes the active segment (persisting its index) and opens the next one. */
  roll(durable: boolean): Segment {
    const old = this.active;
    if (durable) fdatasyncSync(old.fd);
    old.writeIndexFiles();
    old.closed = true;
    // An fdatasync may still be running on this fd in the thread pool; its
    // callback closes the file instead, so the fd number is never reused under it.
    if (this.syncSeg !== old) old.close();
    const next = new Segment(this.dir, old.lastSeq + 1, this.opts.indexIntervalBytes, true);
    this.segments.push(next);
    if (durable) this.syncDir();
    return next;
  }

  private syncDir(): void {
    const fd = openSync(this.dir, "r");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
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
    const seg = (this.syncSeg = this.active);
    fdatasync(seg.fd, (err) => {
      this.syncing = false;
      this.syncSeg = null;
      if (seg.closed && this.reading !== seg) seg.close();
      if (!err && target > this.committedSeq) this.committedSeq = target;
      const waiting = this.syncWaiters ?? [];
      this.syncWaiters = null;
      for (const w of waiting) {
        if (err) w.done(err);
        else if (w.seq <= this.committedSeq) w.done(null);
        else (this.syncWaiters ??= []).push(w);
      }
      if (this.syncWaiters) this.startSync();
    });
  }

  // ---- read ------------------------------------------------------------

  private fdFor(seg: Segment): number {
    if (seg.fd >= 0) return seg.fd;
    if (this.reading && this.reading !== seg && this.reading.closed) this.reading.close();
    this.reading = seg;
    return seg.reopen();
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
          if (frameBytes !== FRAME_SHORT) corrupt = { segment: seg.baseSeq, position: pos + (p - len), seq, reason: frameProblem(frameBytes) };
          // A frame larger than this read: the next read takes all of it.
          else if (end - p >= 4) nextFrameBytes = u32(out, p) + this.opts.indexIntervalBytes;
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
    if (corrupt && count === 0) throw new CorruptRecordError(corrupt);
    return { buf: out, bytes: len, count, next: from + count, corrupt };
  }

  /** Seq of the first record with ingest_ts >= ts (headSeq + 1 if none). */
  seqAtTime(ts: number): number {
    for (const seg of this.segments) {
      if (seg.empty || seg.lastTs < ts) continue;
      const start = seg.seekTime(ts);
      let pos = start.pos;
      const buf = scratchBuffer();
      while (pos < seg.size) {
        const got = readSync(this.fdFor(seg), buf, 0, Math.min(buf.length, seg.size - pos), pos);
        let p = 0;
        while (p + RECORD_HEADER_BYTES <= got) {
          const frameBytes = buf.readUInt32LE(p);
          if (frameBytes < RECORD_BYTES_MIN) return seg.lastSeq + 1;
          if (frameTs(buf, p) >= ts) return frameSeq(buf, p);
          if (p + frameBytes > got) break;
          p += frameBytes;
        }
        if (p === 0) break;
        pos += p;
      }
    }
    return this.headSeq + 1;
  }

  /** Calls `fn(buf, at)` for each record from `from` on (dedup rebuild). */
  forEach(from: number, fn: (buf: Buffer, at: number) => void): void {
    const page = Buffer.allocUnsafe(4 << 20);
    let seq = Math.max(from, this.firstSeq);
    while (seq <= this.headSeq) {
      const r = this.read(seq, this.headSeq, 100_000, page.length - this.opts.frameBytesMax, page);
      let at = 0;
      for (let i = 0; i < r.count; i++) {
        fn(r.buf, at);
        at += r.buf.readUInt32LE(at);
      }
      if (r.count === 0 || r.corrupt) break;
      seq = r.next;
    }
  }

  // ---- retention -------------------------------------------------------

  /**
   * Deletes whole segments that are past `retentionMs` (by their newest
   * record) or that push the log over `retentionBytes`, oldest first. The
   * active segment is rolled first when everything in it has expired, so an
   * idle stream frees its disk too. Returns the number of segments removed.
   */
  applyRetention(nowMs: number, retentionMs: number, retentionBytes: number | null, durable: boolean): number {
    const cutoff = nowMs - retentionMs;
    let removed = 0;
    if (!this.active.empty && this.active.lastTs < cutoff) this.roll(durable);
    while (this.segments.length > 1 && (this.segments[0].empty || this.segments[0].lastTs < cutoff)) {
      this.segments.shift()!.remove();
      removed++;
    }
    if (retentionBytes !== null) {
      let total = this.bytes;
      while (this.segments.length > 1 && total > retentionBytes) {
        const s = this.segments.shift()!;
        total -= s.size;
        s.remove();
        removed++;
      }
    }
    return removed;
  }

  close(): void {
    for (const s of this.segments) s.close();
  }

  /**
   * Flushes the active segment if anything was appended since its last sync
   * (a clean stop then survives power loss too); the index is rebuilt.
   */
  flush(): void {
    if (!this.unsynced) return;
    fdatasyncSync(this.active.fd);
    this.unsynced = false;
  }
}
