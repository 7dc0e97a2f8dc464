// One stream of a timeline read, as the shard walks it: from a boundary,
// forward (ascending seqs) or backward (descending), a chunk of the log at a
// time, read lazily so that a page over many streams reads little more of
// each than the page takes from it. Its current event is what the merge in
// timeline-read.ts compares and renders.
import { u32 } from "../bytes.js";
import { ApiError } from "../errors.js";
import { CorruptRecordError, type CorruptionInfo, type FramePage } from "../log/log.js";
import { frameSeq, frameTs } from "../log/record.js";
import { HEAD_BOUNDARY, TIME_CUT_BASE, type PageStream } from "../timeline/shard-page.js";
import { type ByteWriter, JsonRenderer } from "../wire/event-codec.js";
import type { Stream } from "./stream.js";

/**
 * Bytes of a stream's chunk: enough for a few hundred events of a few
 * hundred bytes; a shard keeps one per stream of its largest read
 * (timeline_streams_max of them at most, 4 MiB at the defaults).
 */
export const CHUNK_BYTES = 64 * 1024;
/** The type of a gap tombstone (ordered ingest), as bytes. */
const GAP_TYPE = Buffer.from("gap");

/** The last seq of a stream with an ingest_ts below `ts`, committed. */
function lastBefore(s: Stream, ts: number): number {
  return Math.min(s.log.committedSeq, s.log.seqAtTime(ts) - 1);
}

export class TimelineStream {
  private readonly chunk = Buffer.allocUnsafe(CHUNK_BYTES);
  private readonly renderer = new JsonRenderer();
  /** Where each frame of the chunk starts; walked up (forward) or down (backward). */
  private readonly offsets: number[] = [];
  private source!: Stream;
  index = 0;
  private backward = false;
  /** Forward: the next seq the log is read from. Backward: the seq below which the next window ends. */
  private next = 0;
  /** Forward: the last seq to read (the committed head). Backward: the first retained seq. */
  private end = 0;
  private pos = 0;
  private count = 0;
  /** Bytes of the chunk's frames. */
  private chunkBytes = 0;
  /** Events the next chunk asks for (doubled each time, up to the page's limit). */
  private want = 0;
  private limit = 0;
  /** The frame of the current event was too large for the chunk: it is read again when rendered. */
  private big = false;
  /** The current event, when `has`. */
  has = false;
  seq = 0;
  ts = 0;
  /** Its stream's id (the merge compares it: a reader is the EventKey of its current event). */
  stream = "";
  private idJson = "";

  /**
   * Places the reader at `boundary` (HEAD_BOUNDARY: the last event below
   * `horizon`; a cut in time: the last below that time, or below the
   * horizon if that is earlier) and loads its first event; returns what the front needs to
   * know of the stream. `page` is the shard's page buffer, where a frame too
   * large for the chunk is read.
   */
  start(s: Stream, index: number, boundary: number, backward: boolean, horizon: number, firstChunk: number, limit: number, page: Buffer): PageStream {
    this.source = s;
    this.stream = s.id;
    this.idJson = s.idJson();
    this.renderer.forStream(this.idJson);
    this.index = index;
    this.backward = backward;
    this.want = firstChunk;
    this.limit = limit;
    this.count = this.pos = 0;
    this.big = false;
    const log = s.log;
    const first = log.firstSeq;
    const b =
      boundary === HEAD_BOUNDARY ? lastBefore(s, horizon) : boundary >= TIME_CUT_BASE ? lastBefore(s, Math.min(horizon, boundary - TIME_CUT_BASE)) : boundary;
    // Forward past events retention removed: the page starts at first_seq, and says so.
    const gap = !backward && b < first - 1;
    const resolved = backward ? b : Math.max(b, first - 1);
    if (backward) {
      this.next = Math.min(b, log.committedSeq) + 1;
      this.end = first;
    } else {
      this.next = resolved + 1;
      this.end = log.committedSeq;
    }
    this.advance(page);
    return { index, gap, boundary: resolved, headSeq: log.committedSeq, firstSeq: first };
  }

  /** Moves to the next event in the reader's direction (`has` false past the last). */
  advance(page: Buffer): void {
    this.pos++;
    if (this.pos >= this.count) this.refill(page);
    this.has = this.pos < this.count;
    if (!this.has) return;
    if (this.big) return; // seq and ts were set by refill
    const at = this.offsets[this.backward ? this.count - 1 - this.pos : this.pos];
    this.seq = frameSeq(this.chunk, at);
    this.ts = frameTs(this.chunk, at);
  }

  /** Renders the current event as JSON into `w`; true when it is a gap tombstone. */
  render(w: ByteWriter, page: Buffer): boolean {
    let buf: Buffer = this.chunk;
    let at = 0;
    if (this.big) buf = this.readOne(this.seq, page).buf;
    else at = this.offsets[this.backward ? this.count - 1 - this.pos : this.pos];
    this.renderer.forStream(this.idJson);
    this.renderer.event(w, buf, at);
    const f = this.renderer.fields;
    return f.typeLen === GAP_TYPE.length && buf.compare(GAP_TYPE, 0, GAP_TYPE.length, f.typeAt, f.typeAt + f.typeLen) === 0;
  }

  private refill(page: Buffer): void {
    this.pos = 0;
    this.count = 0;
    this.big = false;
    if (this.backward) this.refillBackward(page);
    else this.refillForward(page);
    this.want = Math.min(this.limit, this.want * 2);
  }

  private refillForward(page: Buffer): void {
    if (this.next > this.end) return;
    this.readChunk(this.next, this.end, this.want, page);
    this.next += this.count;
  }

  /**
   * The window [lo, hi] below the last one, read ascending and walked down.
   * When its frames do not all fit the chunk, the window shrinks to what the
   * part that fitted suggests (and by one at least), so it ends with the
   * newest events of the window in the chunk.
   */
  private refillBackward(page: Buffer): void {
    const hi = this.next - 1;
    if (hi < this.end) return;
    let n = Math.min(this.want, hi - this.end + 1);
    for (;;) {
      const lo = hi - n + 1;
      if (!this.readChunk(lo, hi, n, page)) {
        this.next = hi; // the one event read is hi's
        return;
      }
      if (this.count === n) {
        this.next = lo;
        return;
      }
      const perEvent = this.chunkBytes / this.count;
      n = Math.max(1, Math.min(n - 1, Math.floor((CHUNK_BYTES * 3) / 4 / perEvent)));
    }
  }

  /**
   * Reads up to `n` events from `from` (at most to `to`) into the chunk.
   * True with the chunk's frames indexed; false when a frame does not fit
   * the chunk: then the one event read is the first (forward) or the last
   * (backward) asked for, `big`: its frame is read again into the page
   * buffer when rendered.
   */
  private readChunk(from: number, to: number, n: number, page: Buffer): boolean {
    let p: FramePage;
    try {
      p = this.source.log.read(from, to, n, CHUNK_BYTES, this.chunk);
    } catch (err) {
      if (!(err instanceof CorruptRecordError)) throw err;
      // A frame larger than the chunk reads as "cannot be read": try the one
      // frame where the largest fits, which tells damage from size.
      const one = this.readOne(this.backward ? to : from, page);
      this.big = true;
      this.count = 1;
      this.seq = frameSeq(one.buf, 0);
      this.ts = frameTs(one.buf, 0);
      return false;
    }
    // A page that stopped at damage: the events after it are not served (as
    // replay's pages stop); the next read would start on it, which is a 500.
    if (p.corrupt && this.backward) throw corruptRecord(p.corrupt);
    this.count = p.count;
    this.chunkBytes = p.bytes;
    this.offsets.length = 0;
    let at = 0;
    for (let i = 0; i < p.count; i++) {
      this.offsets.push(at);
      at += u32(this.chunk, at);
    }
    return true;
  }

  private readOne(seq: number, page: Buffer): FramePage {
    try {
      return this.source.log.read(seq, seq, 1, page.length, page);
    } catch (err) {
      if (err instanceof CorruptRecordError) throw corruptRecord(err.info);
      throw err;
    }
  }
}

const corruptRecord = (info: CorruptionInfo) =>
  new ApiError(500, "corrupt_record", new CorruptRecordError(info).message, { seq: info.seq, segment: info.segment });
