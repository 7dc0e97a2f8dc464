// History of any stream from the archive (DESIGN.md "Beyond one machine"): a
// shard worker thread's cache of archived segments, held whole, and the reads
// replay pages and consumers make of them, in the shape StreamLog.read gives.
//
// Archived bytes come from shared storage another node wrote and anything may
// have damaged, so nothing in them is taken on trust: a segment is checked
// frame by frame once, as it arrives (length, CRC, seq chain, ingest_ts
// order), and reads only ever follow the lengths that check accepted, from
// the sparse index it built. Every loop over the bytes accepts a frame or ends.
//
// What is archived never changes: a key names one epoch's copy of one
// segment, and the manifest commits a base seq once. So a cached segment is
// never stale; only a stream's range (its first and last archived seq) is
// read again after manifestTtlMs, as owners archive more and retention removes
// the oldest.
import { u32 } from "../bytes.js";
import { CorruptRecordError, type CorruptionInfo } from "../log/damage.js";
import type { FramePage } from "../log/log.js";
import { checkFrame, frameProblem, frameSeq, frameTs, RECORD_BYTES_MIN } from "../log/record.js";
import type { Archive, Manifest, SegmentEntry } from "./archive.js";

export interface ArchivedHistoryOptions {
  /** Bytes of archived segments one worker thread holds (LRU over whole segments; one larger than this is still held, alone). */
  cacheBytesMax: number;
  /** Largest valid frame; anything claiming more is damage, not data. */
  frameBytesMax: number;
  /** How long a stream's manifest entries are trusted before load() reads them again. */
  manifestTtlMs: number;
  /** Wall-clock ms; Date.now unless a test says otherwise. */
  now?: () => number;
}

/**
 * A sparse index point every this many frames: a seek walks at most 63 frame
 * headers (lengths the check accepted, no CRC again), and a point is found by
 * division, not a search. A point is 8 bytes per 64 frames of at least 32
 * bytes each: under 0.4% of what the segment itself holds.
 */
const INDEX_FRAMES = 64;

/**
 * Bytes checked before the check yields to the worker's event loop: about a
 * millisecond of CRC (measured 0.8-1.1 ms per MiB of 128-byte frames, 0.5
 * of 1 KiB ones). A 64 MiB segment checked in one go would hold the shard's
 * publishes up for 55-70 ms.
 */
const CHECK_SLICE_BYTES = 1024 * 1024;

/**
 * Stream states each load() looks at for one to drop (stale, nothing cached,
 * nothing in flight). A worker reads the history of any stream; without this
 * the map would keep every stream ever read until the thread ends.
 */
const SWEEP_STATES = 2;

/** A segment in the cache, checked. */
interface Cached {
  readonly state: StreamState;
  readonly key: string;
  readonly baseSeq: number;
  /** The manifest's last seq: seqs up to here are this segment's to answer, served or damaged. */
  readonly lastSeq: number;
  readonly bytes: Buffer;
  /** Position of the frame of seq baseSeq + i * INDEX_FRAMES. */
  readonly points: Float64Array;
  /** The last seq that passed the check: lastSeq unless damaged. */
  readonly checkedSeq: number;
  /** The first frame that failed the check (at seq checkedSeq + 1), or null. */
  readonly damage: CorruptionInfo | null;
}

class StreamState {
  firstSeq = 1;
  lastSeq = 0;
  /** When the range was asked for (-Infinity: never). */
  loadedMs = Number.NEGATIVE_INFINITY;
  /** Cached segments of the stream, by base seq. */
  readonly segments: Cached[] = [];
  refreshing: Promise<void> | null = null;
  /** Fetches in flight by key: loads of one segment wait for the same one. */
  readonly fetching = new Map<string, Promise<void>>();

  constructor(readonly name: string) {}

  /** The cached segment that answers for `seq`, or null. */
  holding(seq: number): Cached | null {
    const list = this.segments;
    let lo = 0;
    let hi = list.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (list[mid].baseSeq <= seq) lo = mid;
      else hi = mid - 1;
    }
    const s = list[lo];
    return s && s.baseSeq <= seq && seq <= s.lastSeq ? s : null;
  }
}

const noSegment = (seq: number) => new CorruptRecordError({ segment: -1, position: 0, seq, reason: "no archived segment holds this seq" });

export class ArchivedHistory {
  private readonly streams = new Map<string, StreamState>();
  /** Every cached segment, least recently read first (a Set keeps insertion order; a read moves its segments to the end). */
  private readonly lru = new Set<Cached>();
  private cachedBytes = 0;
  private readonly now: () => number;

  constructor(
    private readonly archive: Archive,
    private readonly manifest: Manifest,
    private readonly o: ArchivedHistoryOptions,
  ) {
    if (!Number.isSafeInteger(o.cacheBytesMax) || o.cacheBytesMax < 0) throw new Error(`cacheBytesMax must be a whole number of bytes, not ${o.cacheBytesMax}`);
    if (!Number.isSafeInteger(o.frameBytesMax) || o.frameBytesMax < RECORD_BYTES_MIN) {
      throw new Error(`frameBytesMax must be at least ${RECORD_BYTES_MIN} bytes, not ${o.frameBytesMax}`);
    }
    // A range trusted for 0 ms is stale at once: read() would answer null for ever.
    if (!Number.isSafeInteger(o.manifestTtlMs) || o.manifestTtlMs < 1) throw new Error(`manifestTtlMs must be a positive integer, not ${o.manifestTtlMs}`);
    this.now = o.now ?? Date.now;
  }

  /** Bytes of segments held now (at most cacheBytesMax, or one segment larger than it). */
  get bytes(): number {
    return this.cachedBytes;
  }

  range(stream: string): { firstSeq: number; lastSeq: number } | null {
    const st = this.streams.get(stream);
    return st && !this.stale(st) ? { firstSeq: st.firstSeq, lastSeq: st.lastSeq } : null;
  }

  /**
   * Reads the stream's range if stale, then fetches and checks the segment
   * holding `seq` if it is archived and not cached. Rejects with a
   * CorruptRecordError when the manifest has no segment for a seq inside the
   * range (a hole a read could only answer with null again), and with the
   * archive's error when the object cannot be read.
   */
  async load(stream: string, seq: number): Promise<void> {
    const st = this.stateOf(stream);
    if (this.stale(st)) await (st.refreshing ??= this.refresh(st).finally(() => (st.refreshing = null)));
    // Forgotten meanwhile: the caller's next read answers null and it loads again.
    if (this.streams.get(stream) !== st || seq < st.firstSeq || seq > st.lastSeq || st.holding(seq)) return;
    const [entry] = await this.manifest.segments(stream, seq, 1);
    if (this.streams.get(stream) !== st || st.holding(seq)) return;
    if (!entry || entry.baseSeq > seq) throw noSegment(seq);
    let fetch = st.fetching.get(entry.key);
    if (!fetch) {
      fetch = this.fetch(st, entry).finally(() => st.fetching.delete(entry.key));
      st.fetching.set(entry.key, fetch);
    }
    await fetch;
  }

  /**
   * Starts fetching the segment after the cached one holding `seq`, if the
   * archive has one and it is not cached: a reader going through the
   * stream then finds it there, its fetch and check done while it took the
   * pages before. Failures are the next load's to report.
   */
  readAhead(stream: string, seq: number): void {
    const st = this.streams.get(stream);
    const seg = st?.holding(seq);
    if (!st || !seg || seg.lastSeq >= st.lastSeq || st.holding(seg.lastSeq + 1)) return;
    this.load(stream, seg.lastSeq + 1).catch(() => undefined);
  }

  /**
   * Frames from `from` to min(to, the last archived seq), at most `eventsMax`
   * and about `bytesMax` bytes (the first frame always, if it fits `out`),
   * on into following segments while they are cached. Null when the range is
   * stale or unknown or the segment holding `from` is not cached: the caller
   * awaits load(stream, from) and asks again. Like StreamLog.read, a page
   * that reaches damage ends there with `corrupt` set, and a page that would
   * be empty because of it throws CorruptRecordError instead.
   */
  read(stream: string, from: number, to: number, eventsMax: number, bytesMax: number, out: Buffer): FramePage | null {
    const st = this.streams.get(stream);
    if (!st || this.stale(st)) return null;
    const last = Math.min(to, st.lastSeq);
    if (from > last) return { buf: out, bytes: 0, count: 0, next: from };
    if (from < st.firstSeq) throw noSegment(from);
    let seg = st.holding(from);
    if (!seg) return null;
    this.touch(seg);
    let seq = from;
    let count = 0;
    let len = 0;
    let pos = seek(seg, seq);
    let runFrom = pos;
    let corrupt: CorruptionInfo | undefined;
    let why = "record cannot be read";
    while (count < eventsMax && seq <= last) {
      if (seq > seg.checkedSeq) {
        if (seg.damage) {
          corrupt = seg.damage;
          break;
        }
        // Undamaged, the segment was checked to its last seq, so seq is past
        // it: the next one is another segment, entered at the seq due (also
        // one that overlaps its neighbour in a bad manifest).
        const next = st.holding(seq);
        if (!next) break; // not cached: the page ends here, `next` says where to go on
        seg.bytes.copy(out, len, runFrom, pos);
        len += pos - runFrom;
        seg = next;
        this.touch(seg);
        pos = runFrom = seek(seg, seq);
        continue;
      }
      const frameBytes = u32(seg.bytes, pos);
      const pageBytes = len + (pos - runFrom) + frameBytes;
      if (pageBytes > out.length) {
        why = `a ${frameBytes}-byte record does not fit the ${out.length}-byte read buffer`;
        break;
      }
      if (count > 0 && pageBytes > bytesMax) break;
      // The check of the pair: what the index leads to is the frame it indexed.
      if (frameSeq(seg.bytes, pos) !== seq) throw new Error(`archived history invariant: seq ${frameSeq(seg.bytes, pos)} at ${pos} of ${seg.key}, ${seq} due`);
      pos += frameBytes;
      seq++;
      count++;
    }
    seg.bytes.copy(out, len, runFrom, pos);
    len += pos - runFrom;
    // A page never comes back empty while records are due: that would read
    // as "caught up" to a client and hide what follows (as in StreamLog.read).
    if (count === 0 && !corrupt) corrupt = { segment: seg.baseSeq, position: pos, seq, reason: why };
    if (corrupt && count === 0) throw new CorruptRecordError(corrupt);
    return { buf: out, bytes: len, count, next: from + count, corrupt };
  }

  forget(stream: string): void {
    const st = this.streams.get(stream);
    if (!st) return;
    this.streams.delete(stream);
    // Fetches in flight find their state gone and keep nothing: a stream
    // deleted and made again starts at seq 1, and may be archived under the
    // same key (one epoch) with other bytes.
    for (const s of [...st.segments]) this.drop(s);
  }

  private stale(st: StreamState): boolean {
    return this.now() - st.loadedMs >= this.o.manifestTtlMs;
  }

  private stateOf(stream: string): StreamState {
    this.sweep();
    let st = this.streams.get(stream);
    if (!st) this.streams.set(stream, (st = new StreamState(stream)));
    return st;
  }

  /** Drops a stale stream state that holds nothing, from the oldest; a state that holds something goes to the back. */
  private sweep(): void {
    let looked = 0;
    for (const st of this.streams.values()) {
      if (looked++ === SWEEP_STATES) return;
      this.streams.delete(st.name);
      if (!this.stale(st) || st.segments.length > 0 || st.fetching.size > 0 || st.refreshing) this.streams.set(st.name, st);
    }
  }

  private async refresh(st: StreamState): Promise<void> {
    // From when it was asked: the answer is no older than that.
    const askedMs = this.now();
    const [[first], last] = await Promise.all([this.manifest.segments(st.name, 0, 1), this.manifest.archivedThrough(st.name)]);
    st.firstSeq = first?.baseSeq ?? last + 1;
    st.lastSeq = last;
    st.loadedMs = askedMs;
    // Retention removed these: they answer nothing now.
    for (const s of [...st.segments]) if (s.lastSeq < st.firstSeq) this.drop(s);
  }

  private async fetch(st: StreamState, e: SegmentEntry): Promise<void> {
    // No more than the manifest says it holds, whatever the object's size is now.
    const bytes = await this.archive.get(e.key, { start: 0, end: e.bytes });
    const seg = await checkSegment(st, e, bytes, this.o.frameBytesMax);
    if (this.streams.get(st.name) !== st || st.holding(e.baseSeq)) return;
    this.insert(seg);
  }

  private insert(seg: Cached): void {
    // Oldest first, until it fits; one larger than the bound empties the cache and is held alone.
    for (const old of this.lru) {
      if (this.cachedBytes + seg.bytes.length <= this.o.cacheBytesMax) break;
      this.drop(old);
    }
    const list = seg.state.segments;
    let i = list.length;
    while (i > 0 && list[i - 1].baseSeq > seg.baseSeq) i--;
    list.splice(i, 0, seg);
    this.lru.add(seg);
    this.cachedBytes += seg.bytes.length;
  }

  private drop(seg: Cached): void {
    if (!this.lru.delete(seg)) return;
    this.cachedBytes -= seg.bytes.length;
    const list = seg.state.segments;
    list.splice(list.indexOf(seg), 1);
  }

  private touch(seg: Cached): void {
    this.lru.delete(seg);
    this.lru.add(seg);
  }
}

/** Position of the frame of `seq` (checked: baseSeq <= seq <= checkedSeq + 1): a point, then under INDEX_FRAMES accepted lengths. */
function seek(seg: Cached, seq: number): number {
  if (seq > seg.checkedSeq) return seg.damage?.position ?? seg.bytes.length;
  const i = Math.floor((seq - seg.baseSeq) / INDEX_FRAMES);
  let pos = seg.points[i];
  for (let s = seg.baseSeq + i * INDEX_FRAMES; s < seq; s++) pos += u32(seg.bytes, pos);
  return pos;
}

/**
 * Checks every frame of an archived segment, from its base seq to the
 * manifest's last, and builds its sparse index. Bounded: each pass accepts a
 * frame of at least RECORD_BYTES_MIN bytes that lies inside `bytes`, or ends
 * the check at the damage; bytes past the last seq are never read.
 */
async function checkSegment(state: StreamState, e: SegmentEntry, bytes: Buffer, frameBytesMax: number): Promise<Cached> {
  const points: number[] = [];
  let pos = 0;
  let seq = e.baseSeq;
  let prevTs = 0;
  let sliceEnd = CHECK_SLICE_BYTES;
  let damage: CorruptionInfo | null = null;
  while (seq <= e.lastSeq) {
    if (pos >= sliceEnd) {
      await new Promise((resolve) => setImmediate(resolve));
      sliceEnd = pos + CHECK_SLICE_BYTES;
    }
    const r = checkFrame(bytes, pos, bytes.length, frameBytesMax);
    const reason =
      r < 0
        ? frameProblem(r)
        : frameSeq(bytes, pos) !== seq
          ? `found seq ${frameSeq(bytes, pos)}`
          : frameTs(bytes, pos) < prevTs
            ? "ingest_ts went back"
            : null;
    if (reason !== null) {
      damage = { segment: e.baseSeq, position: pos, seq, reason };
      break;
    }
    if ((seq - e.baseSeq) % INDEX_FRAMES === 0) points.push(pos);
    prevTs = frameTs(bytes, pos);
    pos += r;
    seq++;
  }
  return { state, key: e.key, baseSeq: e.baseSeq, lastSeq: e.lastSeq, bytes, points: Float64Array.from(points), checkedSeq: seq - 1, damage };
}
