// History of any stream from the archive (DESIGN.md "Beyond one machine"): a
// shard worker thread's cache of chunks of archived segments, and the reads
// replay pages and consumers make of them, in the shape StreamLog.read gives.
//
// A read of seq X fetches the chunk holding it (segment-chunks.ts: where
// chunks start is in the segment's manifest row), not the whole object; a
// segment archived without points, or whose points or chunk bytes disagree,
// is fetched whole instead, as before chunks.
//
// Archived bytes come from shared storage another node wrote and anything may
// have damaged, so nothing in them is taken on trust: a chunk is checked
// frame by frame once, as it arrives (length, CRC, seq chain, ingest_ts
// order), and reads only ever follow the lengths that check accepted, from
// the sparse index it built. Every loop over the bytes accepts a frame or ends.
//
// What is archived never changes: a key names one epoch's copy of one
// segment, and the manifest commits a base seq once. So a cached chunk or
// manifest row is never stale; only a stream's range (its first and last
// archived seq) is read again after manifestTtlMs, as owners archive more
// and retention removes the oldest.
import { u32 } from "../bytes.js";
import { CorruptRecordError, type CorruptionInfo } from "../log/damage.js";
import type { FramePage } from "../log/log.js";
import { frameSeq, RECORD_BYTES_MIN } from "../log/record.js";
import type { Archive, Manifest, SegmentEntry } from "./archive.js";
import { ChunkBuffers } from "./chunk-buffers.js";
import { checkChunk, chunkHolding, parsePoints, seekChunk, wholeSpan, type CheckedChunk, type ChunkPoints, type ChunkSpan } from "./segment-chunks.js";

export interface ArchivedHistoryOptions {
  /** Bytes of archived chunks one worker thread holds (LRU over chunks; one larger than this is still held, alone). */
  cacheBytesMax: number;
  /** Largest valid frame; anything claiming more is damage, not data. */
  frameBytesMax: number;
  /** How long a stream's manifest entries are trusted before load() reads them again. */
  manifestTtlMs: number;
  /** Wall-clock ms; Date.now unless a test says otherwise. */
  now?: () => number;
}

/**
 * Chunks fetched ahead of the one a reader is in. Two: a replay takes a
 * 4 MiB chunk in a few ms from a file archive, about the time its fetch and
 * check take, and an S3 GET takes tens of ms; with one ahead, a reader that
 * catches up waits out all of the fetch.
 */
const READ_AHEAD_CHUNKS = 2;

/** Manifest rows a stream keeps (with their points): the segments its readers are in, and the next, without a query per chunk. */
const ENTRIES_MAX = 8;

/**
 * Stream states each load() looks at for one to drop (stale, nothing cached,
 * nothing in flight). A worker reads the history of any stream; without this
 * the map would keep every stream ever read until the thread ends.
 */
const SWEEP_STATES = 2;

/** A manifest row, with its points checked (null: none, or not to be used: the object is read whole). */
interface Entry {
  readonly e: SegmentEntry;
  points: ChunkPoints | null;
}

/** A chunk in the cache, checked (or a whole segment: `index` -1). */
interface Cached extends CheckedChunk {
  readonly state: StreamState;
  readonly key: string;
  readonly index: number;
  /** The first seq of the chunk. */
  readonly firstSeq: number;
  /** Seqs up to here are this chunk's to answer, served or damaged. */
  readonly lastSeq: number;
  /** Where the chunk starts in its segment's object. */
  readonly start: number;
  readonly baseSeq: number;
  readonly bytes: Buffer;
  /** The buffer `bytes` is a view of, when it can hold another chunk once this one goes (null: a whole segment's, or an S3 answer's). */
  readonly block: Buffer | null;
}

class StreamState {
  firstSeq = 1;
  lastSeq = 0;
  /** When the range was asked for (-Infinity: never). */
  loadedMs = Number.NEGATIVE_INFINITY;
  /** Cached chunks of the stream, by first seq. */
  readonly chunks: Cached[] = [];
  /** Manifest rows read, the one used last at the end. */
  readonly entries: Entry[] = [];
  refreshing: Promise<void> | null = null;
  /** Fetches in flight by key and chunk: loads of one chunk wait for the same one. */
  readonly fetching = new Map<string, Promise<void>>();
  /** Manifest rows being read, by the seq asked for. */
  readonly looking = new Map<number, Promise<Entry>>();

  constructor(readonly name: string) {}

  /** The cached chunk that answers for `seq`, or null. */
  holding(seq: number): Cached | null {
    const list = this.chunks;
    let lo = 0;
    let hi = list.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (list[mid].firstSeq <= seq) lo = mid;
      else hi = mid - 1;
    }
    const c = list[lo];
    return c && c.firstSeq <= seq && seq <= c.lastSeq ? c : null;
  }

  /** The manifest row read for the segment holding `seq`, or null. */
  entryHolding(seq: number): Entry | null {
    for (let i = this.entries.length - 1; i >= 0; i--) {
      const x = this.entries[i];
      if (x.e.baseSeq <= seq && seq <= x.e.lastSeq) return x;
    }
    return null;
  }

  remember(e: SegmentEntry): Entry {
    const known = this.entries.find((x) => x.e.key === e.key);
    if (known) return known;
    const x = { e, points: parsePoints(e.points, e) };
    if (this.entries.push(x) > ENTRIES_MAX) this.entries.shift();
    return x;
  }
}

const noSegment = (seq: number) => new CorruptRecordError({ segment: -1, position: 0, seq, reason: "no archived segment holds this seq" });

/** The part of an entry's object a read of `seq` fetches. */
const spanOf = (x: Entry, seq: number): ChunkSpan => (x.points ? chunkHolding(x.e, x.points, seq) : wholeSpan(x.e));

const fetchKey = (x: Entry, span: ChunkSpan) => `${x.e.key}#${span.index}`;

export class ArchivedHistory {
  private readonly streams = new Map<string, StreamState>();
  /** Every cached chunk, least recently read first (a Set keeps insertion order; a read moves its chunks to the end). */
  private readonly lru = new Set<Cached>();
  private cachedBytes = 0;
  /** Buffers of chunks that left the cache, for the next fetches to read into. */
  private readonly buffers = new ChunkBuffers();
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

  /** Bytes of chunks held now (at most cacheBytesMax, or one chunk larger than it). */
  get bytes(): number {
    return this.cachedBytes;
  }

  range(stream: string): { firstSeq: number; lastSeq: number } | null {
    const st = this.streams.get(stream);
    return st && !this.stale(st) ? { firstSeq: st.firstSeq, lastSeq: st.lastSeq } : null;
  }

  /**
   * Reads the stream's range if stale, then fetches and checks the chunk
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
    const x = st.entryHolding(seq) ?? (await this.lookUp(st, seq));
    if (this.streams.get(stream) !== st || st.holding(seq)) return;
    await this.fetchOnce(st, x, spanOf(x, seq));
  }

  /** The manifest row of the segment holding `seq`, read and kept (one look in flight per seq). */
  private lookUp(st: StreamState, seq: number): Promise<Entry> {
    let look = st.looking.get(seq);
    if (!look) {
      look = this.manifest
        .segments(st.name, seq, 1)
        .then(([e]) => {
          if (!e || e.baseSeq > seq) throw noSegment(seq);
          return st.remember(e);
        })
        .finally(() => st.looking.delete(seq));
      st.looking.set(seq, look);
    }
    return look;
  }

  /**
   * Starts fetching the READ_AHEAD_CHUNKS chunks after the cached one holding
   * `seq`, those the archive has and the cache does not: a reader going
   * through the stream then finds them there, their fetch and check done
   * while it took the pages before. Not into room the chunk being read
   * needs: with a cache that holds less, a chunk fetched ahead would evict
   * it. Failures are the next load's to report. `looks`: rows it may read
   * from the manifest first, each then going on from where it stopped.
   */
  readAhead(stream: string, seq: number, looks = READ_AHEAD_CHUNKS): void {
    const st = this.streams.get(stream);
    const c = st?.holding(seq);
    if (!st || !c) return;
    let room = this.o.cacheBytesMax - c.bytes.length;
    let next = c.lastSeq + 1;
    for (let i = 0; i < READ_AHEAD_CHUNKS && next <= st.lastSeq; i++) {
      const cached = st.holding(next);
      if (cached) {
        room -= cached.bytes.length;
        next = cached.lastSeq + 1;
        continue;
      }
      const x = st.entryHolding(next);
      // Its row first: the size of its chunk is not known before.
      if (!x) {
        if (looks > 0)
          this.lookUp(st, next).then(
            () => this.readAhead(stream, seq, looks - 1),
            () => undefined,
          );
        return;
      }
      const span = spanOf(x, next);
      room -= Math.max(0, span.end - span.start);
      if (room < 0) return;
      this.fetchOnce(st, x, span).catch(() => undefined);
      next = span.lastSeq + 1;
    }
  }

  /**
   * Frames from `from` to min(to, the last archived seq), at most `eventsMax`
   * and about `bytesMax` bytes (the first frame always, if it fits `out`),
   * on into following chunks while they are cached. Null when the range is
   * stale or unknown or the chunk holding `from` is not cached: the caller
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
    let c = st.holding(from);
    if (!c) return null;
    this.touch(c);
    let seq = from;
    let count = 0;
    let len = 0;
    let pos = seekChunk(c, seq);
    let runFrom = pos;
    let corrupt: CorruptionInfo | undefined;
    let why = "record cannot be read";
    while (count < eventsMax && seq <= last) {
      if (seq > c.checkedSeq) {
        if (c.damage) {
          corrupt = c.damage;
          break;
        }
        // Undamaged, the chunk was checked to its last seq, so seq is past
        // it: the next one is another chunk, entered at the seq due (also
        // one that overlaps its neighbour in a bad manifest).
        const next = st.holding(seq);
        if (!next) break; // not cached: the page ends here, `next` says where to go on
        c.bytes.copy(out, len, runFrom, pos);
        len += pos - runFrom;
        c = next;
        this.touch(c);
        pos = runFrom = seekChunk(c, seq);
        continue;
      }
      const frameBytes = u32(c.bytes, pos);
      const pageBytes = len + (pos - runFrom) + frameBytes;
      if (pageBytes > out.length) {
        why = `a ${frameBytes}-byte record does not fit the ${out.length}-byte read buffer`;
        break;
      }
      if (count > 0 && pageBytes > bytesMax) break;
      // The check of the pair: what the index leads to is the frame it indexed.
      if (frameSeq(c.bytes, pos) !== seq)
        throw new Error(`archived history invariant: seq ${frameSeq(c.bytes, pos)} at ${pos} of ${c.key}#${c.index}, ${seq} due`);
      pos += frameBytes;
      seq++;
      count++;
    }
    c.bytes.copy(out, len, runFrom, pos);
    len += pos - runFrom;
    // A page never comes back empty while records are due: that would read
    // as "caught up" to a client and hide what follows (as in StreamLog.read).
    if (count === 0 && !corrupt) corrupt = { segment: c.baseSeq, position: c.start + pos, seq, reason: why };
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
    for (const c of [...st.chunks]) this.drop(c);
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
      if (!this.stale(st) || st.chunks.length > 0 || st.fetching.size > 0 || st.looking.size > 0 || st.refreshing) this.streams.set(st.name, st);
    }
  }

  private async refresh(st: StreamState): Promise<void> {
    // From when it was asked: the answer is no older than that.
    const askedMs = this.now();
    const [[first], last] = await Promise.all([this.manifest.segments(st.name, 0, 1), this.manifest.archivedThrough(st.name)]);
    // The archive went back, or its first segment is another object at the same base: the stream was deleted and made again.
    const known = st.entries.find((x) => x.e.baseSeq === first?.baseSeq);
    if (last < st.lastSeq || (first && first.baseSeq < st.firstSeq) || (known && known.e.key !== first?.key)) {
      for (const c of [...st.chunks]) this.drop(c);
      st.entries.length = 0;
    }
    st.firstSeq = first?.baseSeq ?? last + 1;
    st.lastSeq = last;
    st.loadedMs = askedMs;
    // Retention removed these: they answer nothing now.
    for (const c of [...st.chunks]) if (c.lastSeq < st.firstSeq) this.drop(c);
    for (let i = st.entries.length - 1; i >= 0; i--) if (st.entries[i].e.lastSeq < st.firstSeq) st.entries.splice(i, 1);
  }

  /** Fetches a span of an entry unless one fetch of it is in flight already. */
  private fetchOnce(st: StreamState, x: Entry, span: ChunkSpan): Promise<void> {
    const k = fetchKey(x, span);
    let fetch = st.fetching.get(k);
    if (!fetch) {
      fetch = this.fetch(st, x, span).finally(() => st.fetching.delete(k));
      st.fetching.set(k, fetch);
    }
    return fetch;
  }

  private async fetch(st: StreamState, x: Entry, span: ChunkSpan): Promise<void> {
    // A chunk reads into a buffer it may pass on (a whole segment's is its own).
    const into = span.index < 0 ? undefined : this.buffers.take(span.end - span.start);
    let bytes: Buffer;
    let checked: CheckedChunk;
    try {
      // No more than the row says the object holds, whatever its size is now.
      bytes = await this.archive.get(x.e.key, { start: span.start, end: span.end }, into);
      checked = await checkChunk(x.e.baseSeq, span, bytes, this.o.frameBytesMax);
    } catch (err) {
      if (into) this.buffers.give(into);
      throw err;
    }
    const kept = into && bytes.buffer === into.buffer ? into : null;
    // An archive that answered with its own buffer (S3) left `into` as it was.
    if (into && !kept) this.buffers.give(into);
    const unused = () => kept && this.buffers.give(kept);
    if (this.streams.get(st.name) !== st) return void unused();
    if (checked.damage && span.index >= 0) {
      // The bytes disagree with the points (damaged either): the whole
      // object, checked from its start, says what is served, as without points.
      unused();
      x.points = null;
      return this.fetchOnce(st, x, wholeSpan(x.e));
    }
    if (span.index < 0) {
      // Whole, it answers for every seq of the segment: chunks of it go.
      for (const c of [...st.chunks]) if (c.key === x.e.key) this.drop(c);
    } else if (st.holding(span.firstSeq)) return void unused();
    this.insert({
      block: kept,
      ...checked,
      state: st,
      key: x.e.key,
      index: span.index,
      firstSeq: span.firstSeq,
      lastSeq: span.lastSeq,
      start: span.start,
      baseSeq: x.e.baseSeq,
      bytes,
    });
  }

  private insert(c: Cached): void {
    // Oldest first, until it fits; one larger than the bound empties the cache and is held alone.
    for (const old of this.lru) {
      if (this.cachedBytes + c.bytes.length <= this.o.cacheBytesMax) break;
      this.drop(old);
    }
    const list = c.state.chunks;
    let i = list.length;
    while (i > 0 && list[i - 1].firstSeq > c.firstSeq) i--;
    list.splice(i, 0, c);
    this.lru.add(c);
    this.cachedBytes += c.bytes.length;
  }

  private drop(c: Cached): void {
    if (!this.lru.delete(c)) return;
    this.cachedBytes -= c.bytes.length;
    if (c.block) this.buffers.give(c.block);
    const list = c.state.chunks;
    list.splice(list.indexOf(c), 1);
  }

  private touch(c: Cached): void {
    this.lru.delete(c);
    this.lru.add(c);
  }
}
