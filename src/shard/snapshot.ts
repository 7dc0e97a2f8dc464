// Snapshots of a stream: the newest event of every key as of a seq S (the
// committed head when the snapshot is taken), in pages ascending by seq, for
// GET /v1/streams/{id}/snapshot and a consumer's `from=snapshot`
// (docs/consume.md). The key index of a stream is built on its first
// snapshot from the retained log and caught up from the log on each later
// one, so streams nobody snapshots cost nothing and the publish path is
// untouched; a restart rebuilds it the same way.
//
// In cluster mode the history is the archive below this node's copy
// (HistoryView): a new owner's copy starts after the last archived seq, so
// its first snapshot builds the index from the archive, waiting for each
// segment to be fetched (ArchiveMiss) between slices.
//
// A snapshot is a cut: the seqs of the keys' newest events at S, copied out
// of the index in one shard turn. Later pages name it by as_of_seq and read
// from it, so every page is as of the same S however the keys move on.
import { copyBytes, u32 } from "../bytes.js";
import { ApiError, asApiError } from "../errors.js";
import { logger } from "../logger.js";
import { CorruptRecordError } from "../log/log.js";
import { frameSeq, RECORD_HEADER_BYTES } from "../log/record.js";
import { intParam } from "../validate.js";
import { EVENTS_MESSAGE_TAIL, renderEvents } from "../wire/event-codec.js";
import { EventFields } from "../wire/event-layout.js";
import type { Config } from "../config.js";
import type { ShardBuffers } from "./buffers.js";
import { ArchiveMiss, ArchiveTries, type ReadLog } from "./history-view.js";
import { KeyIndex } from "./key-index.js";
import { ContentType, type Op, type RequestOf } from "./protocol.js";
import type { Stream } from "./stream.js";
import type { Outbox } from "./worker.js";

/**
 * Cuts a shard keeps for the pages after the first, most recently used
 * kept. A cut holds 8 bytes per key, so at the default snapshot_keys_max
 * (1,000,000) this bounds them to 64 MiB a shard.
 */
export const SNAPSHOT_CUTS_MAX = 8;
/** A cut nobody has read a page of for this long is dropped (its next page: 410 snapshot_expired). */
export const SNAPSHOT_CUT_IDLE_MS = 60_000;
/**
 * Cut seqs this close are read as one range of the log, the records between
 * them read and passed over: a few small records cost less than another
 * positioned read.
 */
const RUN_GAP_MAX = 16;
/**
 * Records read into a key index per shard turn (about 25 ms of work here):
 * the first snapshot of a long stream reads its whole retained log, and the
 * shard's other streams are served between the slices.
 */
const INDEX_EVENTS_PER_TURN = 50_000;
/** The head of a socket answer: u32 bytes of a JSON head, then the `events` message. */
export const SNAPSHOT_SOCKET_HEAD_BYTES = 4;
const SNAPSHOT_MESSAGE_HEAD = `{"type":"events","snapshot":true,"events":[`;

interface Cut {
  stream: Stream;
  asOf: number;
  seqs: Float64Array;
  usedMs: number;
}

/** An index given up past snapshot_keys_max, and the first_seq it saw (retention must move before another try). */
interface Overflow {
  firstSeq: number;
}

/** A page being gathered; kept across the fetches of archived segments it waits for (cluster mode). */
interface Gathering {
  /** The next index into the cut's seqs. */
  i: number;
  out: Buffer;
  bytes: number;
  offsets: number[];
}

interface PageAsked {
  reqId: number;
  socket: boolean;
  limit: number;
  after: number;
}

/** The JSON head of a socket answer (the `events` message follows it). */
export interface SnapshotSocketHead {
  as_of_seq: number;
  count: number;
  /** Pass as after_seq for the next page; null once the snapshot is all sent. */
  next_after_seq: number | null;
}

export class Snapshots {
  private readonly indexes = new WeakMap<Stream, KeyIndex | Overflow>();
  private readonly cuts: Cut[] = [];
  private readonly fields = new EventFields();
  /** The frames of one page gathered out of the log's pages (allocated on the first snapshot). */
  private frames: Buffer | null = null;

  constructor(
    private readonly config: Config,
    private readonly outbox: Outbox,
    private readonly buffers: ShardBuffers,
    /** The open stream of an id: a stream deleted while its index is read is not snapshotted. */
    private readonly current: (id: string) => Stream | undefined,
    /** The stream's history: its log on one node; in cluster mode the archive below this node's copy too. */
    private readonly logOf: (stream: Stream) => ReadLog,
  ) {}

  read(stream: Stream, req: RequestOf<Op.Snapshot>): void {
    const q = new URLSearchParams(req.meta.query);
    const socket = req.meta.socket;
    const c = this.config;
    const limit = socket
      ? intParam(q, "limit", c.consume_page_events_max, 1, c.consume_page_events_max)
      : intParam(q, "limit", c.replay_page_events_default, 1, c.replay_page_events_max);
    const asOfParam = q.get("as_of_seq");
    const afterParam = q.get("after_seq");
    if (afterParam !== null && asOfParam === null) {
      throw new ApiError(400, "invalid_parameter", `"after_seq" continues a snapshot: give the "as_of_seq" of its first page too`, { parameter: "after_seq" });
    }
    const asOf = intParam(q, "as_of_seq", 0, 0);
    const after = intParam(q, "after_seq", 0, 0);
    this.dropIdle(Date.now());
    const page = { reqId: req.reqId, socket, limit, after };
    const fail = (err: unknown) => {
      const e = asApiError(err);
      if (e.status === 500 && !(err instanceof ApiError))
        logger().error({ kind: "internal", stream: stream.id, err }, `snapshot of ${stream.id}: ${(err as Error).stack}`);
      this.outbox.error(req.reqId, e);
    };
    if (asOfParam !== null) return this.answerWhenRead(stream, this.find(stream, asOf, Date.now()), page, fail);
    this.whenIndexed(stream, (index) => this.answerWhenRead(stream, this.take(stream, index, Date.now()), page, fail), fail, new ArchiveTries());
  }

  /** Answers a page of the cut; one that needs an archived segment first (cluster mode) goes on from where it was once it is fetched. */
  private answerWhenRead(stream: Stream, cut: Cut, p: PageAsked, fail: (err: unknown) => void): void {
    const g: Gathering = { i: 0, out: (this.frames ??= Buffer.allocUnsafe(this.buffers.page.length)), bytes: 0, offsets: [] };
    let tries: ArchiveTries | undefined;
    const attempt = (): void => {
      try {
        this.answer(stream, cut, p, g);
      } catch (err) {
        if (!(err instanceof ArchiveMiss)) return fail(err);
        // The shared buffer serves other requests meanwhile: what was gathered waits in one of its own.
        if (g.out === this.frames) {
          const own = Buffer.allocUnsafe(g.out.length);
          g.out.copy(own, 0, 0, g.bytes);
          g.out = own;
        }
        tries ??= new ArchiveTries();
        tries.wait(err, g.i, () => (this.current(stream.id) === stream ? attempt() : fail(streamGone(stream.id))), fail);
      }
    };
    attempt();
  }

  private answer(stream: Stream, cut: Cut, p: PageAsked, g: Gathering): void {
    const bytesMax = p.socket ? this.config.consume_page_bytes_max : this.config.replay_page_bytes_max;
    const log = this.logOf(stream);
    const page = this.gather(stream, log, cut, p.after, p.limit, bytesMax, g);
    const w = this.buffers.jsonPage;
    w.reset();
    w.ascii(p.socket ? SNAPSHOT_MESSAGE_HEAD : `{"stream":${stream.idJson()},"as_of_seq":${cut.asOf},"keys":${cut.seqs.length},"events":[`);
    const n = page.count === 0 ? 0 : renderEvents(w, this.buffers.renderer, page.buf, page.count, stream.idJson(), bytesMax);
    const last = n === 0 ? p.after : frameSeq(page.buf, page.offsets[n - 1]);
    const next = n > 0 && last < cut.seqs[cut.seqs.length - 1] ? last : null;
    if (!p.socket) {
      w.ascii(`],"next_after_seq":${next},"first_seq":${log.firstSeq},"head_seq":${log.committedSeq}}`);
      return this.outbox.reply({ reqId: p.reqId, status: 200, ct: ContentType.Json, body: w.view() });
    }
    w.ascii(EVENTS_MESSAGE_TAIL);
    const head = Buffer.from(JSON.stringify({ as_of_seq: cut.asOf, count: n, next_after_seq: next } satisfies SnapshotSocketHead));
    const msg = n === 0 ? null : w.view();
    const total = SNAPSHOT_SOCKET_HEAD_BYTES + head.length + (msg ? msg.byteLength : 0);
    this.outbox.replyWith(p.reqId, 200, ContentType.None, total, (data, at) => {
      new DataView(data.buffer, data.byteOffset, data.byteLength).setUint32(at, head.length, true);
      copyBytes(head, data, at + SNAPSHOT_SOCKET_HEAD_BYTES);
      if (msg) copyBytes(msg, data, at + SNAPSHOT_SOCKET_HEAD_BYTES + head.length);
    });
  }

  /**
   * Calls `then` with the stream's key index caught up to the committed
   * head, in the turn it got there (so a cut taken then is as of that head).
   * The log is read INDEX_EVENTS_PER_TURN records a turn, the shard serving
   * other requests in between, and for the fetch of an archived segment it
   * needs (cluster mode); `fail` gets 409 past snapshot_keys_max, 500 for
   * records the log could not give, 404 if the stream went meanwhile, 503
   * if the archive did not give what it needs.
   */
  private whenIndexed(stream: Stream, then: (index: KeyIndex) => void, fail: (err: unknown) => void, tries: ArchiveTries): void {
    let index: KeyIndex;
    try {
      if (this.current(stream.id) !== stream) throw streamGone(stream.id);
      index = this.indexOf(stream);
      if (!this.catchUp(stream, index, INDEX_EVENTS_PER_TURN)) {
        setImmediate(() => this.whenIndexed(stream, then, fail, tries));
        return;
      }
    } catch (err) {
      if (!(err instanceof ArchiveMiss)) return fail(err);
      const index = this.indexes.get(stream);
      return tries.wait(err, index instanceof KeyIndex ? index.indexedTo : 0, () => this.whenIndexed(stream, then, fail, tries), fail);
    }
    then(index);
  }

  /** The stream's key index as it stands (a new one on first use); 409 while given up past snapshot_keys_max. */
  private indexOf(stream: Stream): KeyIndex {
    const log = this.logOf(stream);
    const index = this.indexes.get(stream);
    if (index instanceof KeyIndex) return index;
    if (index !== undefined && index.firstSeq === log.firstSeq) throw keysExceeded(this.config.snapshot_keys_max);
    // New, or given up before retention moved: the retained log may hold few enough keys now.
    const fresh = new KeyIndex(this.config.snapshot_keys_max, log.firstSeq);
    this.indexes.set(stream, fresh);
    return fresh;
  }

  /** Reads up to `eventsMax` records of the log into the index; true once it has reached the committed head. */
  private catchUp(stream: Stream, index: KeyIndex, eventsMax: number): boolean {
    const log = this.logOf(stream);
    index.forgetBelow(log.firstSeq); // retention may have run since the last slice
    const page = this.buffers.page;
    let budget = eventsMax;
    while (index.indexedTo < log.committedSeq && budget > 0) {
      let read: ReturnType<typeof log.read> | null;
      try {
        read = log.read(index.indexedTo + 1, log.committedSeq, budget, this.config.replay_page_bytes_max, page);
      } catch (err) {
        if (!(err instanceof CorruptRecordError)) throw err;
        read = null; // damage at the first record
      }
      if (read === null || read.count === 0) {
        this.readPastDamage(stream, index);
        break;
      }
      let at = 0;
      for (let r = 0; r < read.count; r++) {
        this.note(stream, index, page, at);
        at += u32(page, at);
      }
      budget -= read.count;
    }
    if (index.indexedTo < log.committedSeq) return false;
    if (index.missingTo > 0) {
      throw new ApiError(
        500,
        "corrupt_record",
        `stream ${stream.id}: records up to seq ${index.missingTo} could not be read for the key index; a snapshot is served once retention has deleted them`,
        { seq: index.missingTo },
      );
    }
    return true;
  }

  /**
   * The rest of the log the way forEach reads it, from the next index point
   * past damage (rare: one pass, in this turn). In cluster mode the damage
   * may be in the archive: this node's copy is read from its first record,
   * and the seqs skipped before it are missing (KeyIndex.add).
   */
  private readPastDamage(stream: Stream, index: KeyIndex): void {
    const log = stream.log;
    log.forEach(index.indexedTo + 1, (buf, at) => this.note(stream, index, buf, at));
    // What it could not give is missing.
    index.skipTo(log.committedSeq);
  }

  private note(stream: Stream, index: KeyIndex, buf: Buffer, at: number): void {
    const f = this.fields.read(buf, at + RECORD_HEADER_BYTES);
    const key = f.keyAt < 0 ? null : buf.toString("utf8", f.keyAt, f.keyAt + f.keyLen);
    if (index.add(key, frameSeq(buf, at))) return;
    // Given up whole, memory and all: a partial index could only answer an incomplete snapshot.
    this.indexes.set(stream, { firstSeq: this.logOf(stream).firstSeq });
    throw keysExceeded(this.config.snapshot_keys_max);
  }

  private take(stream: Stream, index: KeyIndex, now: number): Cut {
    const cut = { stream, asOf: index.indexedTo, seqs: index.cut(), usedMs: now };
    const same = this.cuts.findIndex((c) => c.stream === stream && c.asOf === cut.asOf);
    if (same >= 0) this.cuts.splice(same, 1);
    this.cuts.push(cut);
    if (this.cuts.length > SNAPSHOT_CUTS_MAX) this.cuts.shift();
    return cut;
  }

  private find(stream: Stream, asOf: number, now: number): Cut {
    const i = this.cuts.findIndex((c) => c.stream === stream && c.asOf === asOf);
    if (i < 0) {
      throw new ApiError(410, "snapshot_expired", `no snapshot as of seq ${asOf} is held (idle past ${SNAPSHOT_CUT_IDLE_MS} ms, or evicted); take a new one`, {
        as_of_seq: asOf,
      });
    }
    const cut = this.cuts[i];
    cut.usedMs = now;
    this.cuts.splice(i, 1);
    this.cuts.push(cut);
    return cut;
  }

  private dropIdle(now: number): void {
    for (let i = this.cuts.length - 1; i >= 0; i--) if (now - this.cuts[i].usedMs > SNAPSHOT_CUT_IDLE_MS) this.cuts.splice(i, 1);
  }

  /**
   * The frames of the cut's seqs after `after`, up to `limit` events and
   * about `bytesMax` bytes, copied together into `g` (which an ArchiveMiss
   * leaves as far as it got). Seqs retention has deleted since the cut are
   * passed over: those keys' newest events are gone.
   */
  private gather(stream: Stream, log: ReadLog, cut: Cut, after: number, limit: number, bytesMax: number, g: Gathering) {
    const seqs = cut.seqs;
    const page = this.buffers.page;
    const { out, offsets } = g;
    let i = (g.i = Math.max(g.i, upperBound(seqs, Math.max(after, log.firstSeq - 1))));
    let bytes = g.bytes;
    while (i < seqs.length && offsets.length < limit && bytes < bytesMax) {
      let j = i;
      while (j + 1 < seqs.length && j + 1 - i < limit - offsets.length && seqs[j + 1] - seqs[j] <= RUN_GAP_MAX) j++;
      const from = seqs[i];
      const read = readLog(log, from, seqs[j], bytesMax - bytes, page);
      if (read.count === 0) {
        if (read.corrupt) throw new ApiError(500, "corrupt_record", `stream ${stream.id}: record ${read.corrupt.seq} is damaged`, { seq: read.corrupt.seq });
        // A retained, committed seq always reads: an empty page here would end the snapshot short without a word.
        throw new Error(`snapshot invariant: no record read at seq ${from} (first_seq ${log.firstSeq}, committed ${log.committedSeq})`);
      }
      let at = 0;
      for (let r = 0; r < read.count; r++) {
        const frameBytes = u32(page, at);
        if (i <= j && frameSeq(page, at) === seqs[i]) {
          copyBytes(page.subarray(at, at + frameBytes), out, bytes);
          offsets.push(bytes);
          bytes += frameBytes;
          i++;
        }
        at += frameBytes;
      }
      // A read cut short (its bytes) goes on from its next seq.
      while (i <= j && seqs[i] < read.next) i++;
      g.i = i;
      g.bytes = bytes;
    }
    return { buf: out, count: offsets.length, offsets };
  }
}

const streamGone = (id: string) => new ApiError(404, "stream_not_found", `stream "${id}" does not exist`, { stream: id });

function readLog(log: ReadLog, from: number, to: number, bytesMax: number, out: Buffer) {
  try {
    return log.read(from, to, to - from + 1, bytesMax, out);
  } catch (err) {
    if (err instanceof CorruptRecordError) throw new ApiError(500, "corrupt_record", err.message, { seq: err.info.seq, segment: err.info.segment });
    throw err;
  }
}

/** The index of the first value above `v` in ascending `a`. */
function upperBound(a: Float64Array, v: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid] <= v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

const keysExceeded = (max: number) =>
  new ApiError(
    409,
    "snapshot_keys_exceeded",
    `the stream holds more than snapshot_keys_max (${max}) keys; it cannot be snapshotted until retention drops some or the limit is raised`,
    { snapshot_keys_max: max },
  );
